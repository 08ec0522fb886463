//! User processes: programs in ring 3, each in its own address space.
//!
//! ```text
//!   spawn("hmm-tests")                          ring 3
//!    ├─ AddressSpace::new + ELF segments ─► [text r-x][rodata r--][data rw-] ... [guard gap][stack rw-]
//!    ├─ ProcessHmm::attach (devices may mirror it)        │ int 0x80 / #PF / IRQ
//!    └─ sched::spawn_user(TrapFrame → entry, user stack)   ▼
//!                                              user_trap(frame)  (on the task's kernel stack)
//!                                               ├─ 0x80  → syscall::dispatch (rax ← result)
//!                                               ├─ #PF   → AddressSpace::handle_fault, or a segfault report
//!                                               ├─ IRQ   → its handler, then sched::preempt_point
//!                                               └─ other exception → the process ends with a report
//! ```
//!
//! A process has one or more tasks (threads share its address space). It
//! ends when a task calls `exit`, on a fault it may not take, or on `kill`:
//! the process is marked exiting and every task blocked in `wait` is woken;
//! every task of it stops at its next return towards ring 3 (a sleeper when
//! its sleep ends, a device waiter when its DMA completes); the last one out releases
//! the address space (with the kernel's page table loaded, so the process's
//! tables are not in CR3) and wakes the waiters. The entry stays as a zombie
//! with its exit status and report until its parent (or the kernel, for
//! `run`) reaps it.
//!
//! # Limits (nothing grows with a user number)
//! [`MAX_PROCS`] processes, [`MAX_THREADS`] tasks each, [`MAX_FDS`] device
//! contexts, 256 areas, [`MAX_ARGS`] argument bytes; a kernel stack of 64
//! KiB per task from the kernel heap.
//!
//! # Locks
//! The process table (`PROCS`, rank `Process`) is a leaf except for the run
//! queue: it is never held across address-space or device work — what a
//! system call needs (the `Arc<ProcCore>`, a device context) is copied out
//! and the lock dropped first.

mod dev;
mod elf;
pub mod programs;
mod syscall;

use crate::arch::trap;
use crate::arch::trap_entry::TrapFrame;
use crate::aspace::{Access, AddressSpace};
use crate::hmmdev::ProcessHmm;
use crate::sched::{self, TaskId};
use crate::sync::{LockRank, RankedMutex};
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use spin::Lazy;
use x86_64::instructions::interrupts;
use x86_64::registers::control::Cr2;
use x86_64::structures::idt::PageFaultErrorCode;
use x86_64::structures::paging::PhysFrame;
use x86_64::PhysAddr;

pub use elf::LoadError;

/// A process id.
pub type Pid = u32;

/// The top of every process's stack; its area is `STACK_SIZE` below, and
/// `GUARD_GAP` below that is kept free (a fault there is a stack overflow).
pub const STACK_TOP: u64 = 0x7fff_f000_0000;
pub const STACK_SIZE: u64 = 256 * 1024;
pub const GUARD_GAP: u64 = 1 << 20;
/// Live processes at most (fork and spawn fail with EAGAIN beyond).
pub const MAX_PROCS: usize = 64;
/// Tasks per process at most.
pub const MAX_THREADS: usize = 8;
/// Argument bytes at most.
pub const MAX_ARGS: usize = 256;
/// Device contexts per process.
pub const MAX_FDS: usize = 8;

/// What every task of a process shares, immutable once made.
pub struct ProcCore {
    pub pid: Pid,
    pub name: String,
    pub aspace: Arc<AddressSpace>,
    pub hmm: ProcessHmm,
    /// The program image its text and data are paged in from.
    pub image: Arc<elf::ImageSource>,
}

/// How a process ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExitInfo {
    pub status: i32,
    /// Why the kernel ended it (a segfault, an exception), if it did.
    pub report: Option<String>,
}

#[derive(Clone, Debug)]
enum State {
    Live,
    /// Exit decided; tasks are leaving.
    Exiting(ExitInfo),
    Zombie(ExitInfo),
}

struct Entry {
    core: Option<Arc<ProcCore>>,
    name: String,
    /// None: the kernel started it (`run`) and reaps it with [`wait_exit`].
    parent: Option<Pid>,
    /// Its parent exited first: reaped at its own exit.
    orphan: bool,
    state: State,
    tasks: Vec<TaskId>,
    fds: [Option<dev::DevCtx>; MAX_FDS],
    /// The last user page fault resolved: (address, RIP, times in a row).
    last_fault: (u64, u64, u32),
}

struct Table {
    procs: BTreeMap<Pid, Entry>,
    next_pid: Pid,
    /// Tasks blocked in `wait` (each re-checks when woken).
    waiters: Vec<TaskId>,
}

static PROCS: Lazy<RankedMutex<Table>> = Lazy::new(|| RankedMutex::new(LockRank::Process, Table { procs: BTreeMap::new(), next_pid: 0, waiters: Vec::new() }));

/// Why a process could not be started.
#[derive(Debug)]
pub enum SpawnError {
    NoSuchProgram,
    ArgsTooLong,
    TooManyProcesses,
    NoMemory,
    Load(LoadError),
}

impl From<LoadError> for SpawnError {
    fn from(e: LoadError) -> Self {
        SpawnError::Load(e)
    }
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoSuchProgram => write!(f, "no such program (there are: {})", programs::names().join(", ")),
            Self::ArgsTooLong => write!(f, "arguments longer than {MAX_ARGS} bytes"),
            Self::TooManyProcesses => write!(f, "{MAX_PROCS} processes are running already"),
            Self::NoMemory => f.write_str("out of memory"),
            Self::Load(e) => write!(f, "{e}"),
        }
    }
}

/// Install the ring-3 trap path and start the scheduler (idempotent).
pub fn init() {
    sched::init();
    trap::set_user_trap_hook(user_trap);
}

fn alloc_pid(t: &mut Table) -> Pid {
    loop {
        t.next_pid = t.next_pid.checked_add(1).unwrap_or(1);
        if !t.procs.contains_key(&t.next_pid) {
            return t.next_pid;
        }
    }
}

fn live_count(t: &Table) -> usize {
    t.procs.values().filter(|e| !matches!(e.state, State::Zombie(_))).count()
}

/// Start `program` with `args`; the kernel is its parent (reap it with
/// [`wait_exit`]).
pub fn spawn(program: &str, args: &[u8]) -> Result<Pid, SpawnError> {
    let image = programs::find(program).ok_or(SpawnError::NoSuchProgram)?;
    spawn_image(program, image, args)
}

/// Start an ELF image (a test may hand a malformed one).
pub fn spawn_image(name: &str, image: &'static [u8], args: &[u8]) -> Result<Pid, SpawnError> {
    init();
    if args.len() > MAX_ARGS {
        return Err(SpawnError::ArgsTooLong);
    }
    if live_count(&PROCS.lock()) >= MAX_PROCS {
        return Err(SpawnError::TooManyProcesses);
    }
    let aspace = AddressSpace::new().map_err(|_| SpawnError::NoMemory)?;
    let (entry, source) = elf::load(&aspace, image)?;
    source.attach(&aspace);
    let stack_lo = STACK_TOP - STACK_SIZE;
    aspace.mmap(Some(stack_lo), STACK_SIZE, crate::aspace::Prot::READ | crate::aspace::Prot::WRITE, true).map_err(|_| SpawnError::NoMemory)?;
    // The argument bytes sit at the top of the stack, 16-byte aligned below.
    let args_at = STACK_TOP - (args.len() as u64).next_multiple_of(16).max(16);
    aspace.copy_to_user(args_at, args).map_err(|_| SpawnError::NoMemory)?;
    let hmm = ProcessHmm::attach(&aspace);
    let (code, data) = crate::arch::gdt::user_selectors();
    let frame = TrapFrame { rip: entry, cs: code as u64, rflags: 0x202, rsp: args_at - 8, ss: data as u64, rdi: args_at, rsi: args.len() as u64, ..TrapFrame::default() };
    start(name.into(), aspace, hmm, source, None, &frame)
}

/// Register a process and queue its first task.
fn start(name: String, aspace: Arc<AddressSpace>, hmm: ProcessHmm, image: Arc<elf::ImageSource>, parent: Option<Pid>, frame: &TrapFrame) -> Result<Pid, SpawnError> {
    let cr3 = aspace.pml4().start_address().as_u64();
    let mut t = PROCS.lock();
    if live_count(&t) >= MAX_PROCS {
        return Err(SpawnError::TooManyProcesses);
    }
    let pid = alloc_pid(&mut t);
    let core = Arc::new(ProcCore { pid, name: name.clone(), aspace, hmm, image });
    let task = match sched::spawn_user(name.clone(), pid, cr3, frame) {
        Ok(task) => task,
        Err(_) => {
            drop(t);
            drop(core);
            return Err(SpawnError::NoMemory);
        }
    };
    t.procs.insert(pid, Entry { core: Some(core), name, parent, orphan: false, state: State::Live, tasks: alloc::vec![task.id], fds: Default::default(), last_fault: (0, 0, 0) });
    Ok(pid)
}

/// The process of the running task.
pub(crate) fn current_core() -> Option<Arc<ProcCore>> {
    let pid = sched::current().pid?;
    PROCS.lock().procs.get(&pid).and_then(|e| e.core.clone())
}

/// Wait until process `pid` (a child of the kernel) has exited, and reap it.
pub fn wait_exit(pid: Pid) -> Option<ExitInfo> {
    loop {
        let were_on = interrupts::are_enabled();
        interrupts::disable();
        let mut t = PROCS.lock();
        match t.procs.get(&pid).map(|e| e.state.clone()) {
            None => {
                drop(t);
                if were_on {
                    interrupts::enable();
                }
                return None;
            }
            Some(State::Zombie(info)) => {
                t.procs.remove(&pid);
                drop(t);
                if were_on {
                    interrupts::enable();
                }
                return Some(info);
            }
            Some(_) => {
                let me = sched::current().id;
                t.waiters.push(me);
                drop(t);
                sched::block(); // interrupts stay off until the switch: no lost wake-up
                if were_on {
                    interrupts::enable();
                }
            }
        }
    }
}

/// The address space of a live process (tests and the console look inside).
pub fn aspace_of(pid: Pid) -> Option<Arc<AddressSpace>> {
    PROCS.lock().procs.get(&pid).and_then(|e| e.core.as_ref()).map(|c| c.aspace.clone())
}

/// Whether `pid` was started by the kernel (so [`wait_exit`] reaps it).
pub fn is_kernel_child(pid: Pid) -> bool {
    PROCS.lock().procs.get(&pid).is_some_and(|e| e.parent.is_none() && !e.orphan)
}

/// `ps`: (pid, name, state of the process, its tasks' states).
pub fn list() -> Vec<(Pid, String, String)> {
    let tasks = sched::tasks();
    let t = PROCS.lock();
    t.procs
        .iter()
        .map(|(pid, e)| {
            let state = match &e.state {
                State::Zombie(i) => alloc::format!("exited ({})", i.status),
                State::Exiting(_) => "exiting".into(),
                State::Live => {
                    let s: Vec<&str> = e.tasks.iter().filter_map(|id| tasks.iter().find(|t| t.id == *id)).map(|t| t.state().name()).collect();
                    s.join(", ")
                }
            };
            (*pid, e.name.clone(), state)
        })
        .collect()
}

/// Ask process `pid` to end (at its tasks' next return to ring 3).
pub fn kill(pid: Pid) -> bool {
    set_exiting(pid, ExitInfo { status: -9, report: Some("killed".into()) })
}

/// Mark `pid` as ending (the first decision stands) and wake every task
/// blocked in `wait`, so its other threads notice and leave.
fn set_exiting(pid: Pid, info: ExitInfo) -> bool {
    let waiters = {
        let mut t = PROCS.lock();
        match t.procs.get_mut(&pid) {
            Some(e) if matches!(e.state, State::Live) => e.state = State::Exiting(info),
            _ => return false,
        }
        core::mem::take(&mut t.waiters)
    };
    for w in waiters {
        sched::wake(w); // each re-checks (and re-registers if still waiting)
    }
    true
}

/// Whether `pid` is ending (its tasks leave at their next return to ring 3).
pub(crate) fn is_exiting(pid: Pid) -> bool {
    matches!(PROCS.lock().procs.get(&pid).map(|e| &e.state), Some(State::Exiting(_)))
}

/// End the running task's process with `info` (the first exit decides).
pub(crate) fn exit_current(info: ExitInfo) -> ! {
    let (pid, task) = current_ids();
    set_exiting(pid.expect("a user task"), info);
    leave(pid.expect("a user task"), task)
}

/// The running task's process and id — without keeping an `Arc<Task>` on
/// this stack: the paths that use them end in [`leave`], which never
/// returns, so an `Arc` held here would keep the task (and its 64 KiB
/// kernel stack) alive forever. (Found by `smp_stress`'s heap check:
/// every exit leaked one stack.)
pub(crate) fn current_ids() -> (Option<Pid>, TaskId) {
    let me = sched::current();
    (me.pid, me.id)
}

/// The running task leaves its process; the last one out releases it.
fn leave(pid: Pid, task: TaskId) -> ! {
    // Releasing may wait for an accelerator another task holds: that needs
    // interrupts (the contention hook sleeps only with them on).
    interrupts::enable();
    // Off this process's page table before leaving its task list: once the
    // last task is out, the tables are freed, and no CPU may still have
    // them loaded (see mm::shootdown).
    let kernel = PhysFrame::containing_address(PhysAddr::new(sched::kernel_cr3()));
    // SAFETY: the kernel's own table maps all kernel code, data and stacks.
    unsafe { crate::mm::shootdown::load_root(kernel) };
    let last = {
        let mut t = PROCS.lock();
        let e = t.procs.get_mut(&pid).expect("our process");
        e.tasks.retain(|&id| id != task);
        if e.tasks.is_empty() {
            let info = match &e.state {
                State::Exiting(i) => i.clone(),
                _ => ExitInfo { status: 0, report: None },
            };
            e.state = State::Zombie(info);
            let fds = core::mem::take(&mut e.fds);
            Some((e.core.take(), fds))
        } else {
            None
        }
    };
    if let Some((core, fds)) = last {
        if let Some(core) = core {
            dev::release(&core, &fds);
            drop(core); // the address space: listeners hear Exit, memory freed
        }
        let mut t = PROCS.lock();
        // Orphans: their children are reaped by nobody, so reap at exit.
        let orphans: Vec<Pid> = t.procs.iter().filter(|(_, e)| e.parent == Some(pid)).map(|(p, _)| *p).collect();
        for o in orphans {
            let zombie = matches!(t.procs.get(&o).map(|e| &e.state), Some(State::Zombie(_)));
            if zombie {
                t.procs.remove(&o);
            } else if let Some(e) = t.procs.get_mut(&o) {
                e.parent = None;
                e.orphan = true;
            }
        }
        if t.procs.get(&pid).is_some_and(|e| e.orphan) {
            t.procs.remove(&pid); // nobody will reap it
        }
        let waiters = core::mem::take(&mut t.waiters);
        drop(t);
        for w in waiters {
            sched::wake(w);
        }
    }
    sched::exit_current()
}

/// Every trap from ring 3.
fn user_trap(frame: &mut TrapFrame) {
    match frame.vector {
        v if v == crate::arch::idt::SYSCALL_VECTOR as u64 => syscall::dispatch(frame),
        14 => page_fault(frame),
        v if v >= 32 => {
            trap::dispatch_interrupt(v as u8);
            sched::preempt_point();
        }
        v => {
            let report = alloc::format!("{} (vector {v}, error code {:#x}) at RIP {:#x}", trap::exception_name(v), frame.error_code, frame.rip);
            kill_current(report);
        }
    }
    interrupts::disable();
    // On the way back to ring 3: has the process been told to end?
    let (pid, task) = current_ids();
    if let Some(pid) = pid {
        if is_exiting(pid) {
            leave(pid, task);
        }
    }
}

/// End the current process because of what it did.
fn kill_current(report: String) -> ! {
    {
        // Scoped: nothing owned may stay on this stack (see `current_ids`).
        let pid = current_ids().0.unwrap_or(0);
        let name = PROCS.lock().procs.get(&pid).map(|e| e.name.clone()).unwrap_or_default();
        crate::println!("[pid {pid} ({name})] {report}");
    }
    exit_current(ExitInfo { status: -11, report: Some(report) })
}

/// A page fault from ring 3: resolved like any other fault, or the end of
/// the process.
fn page_fault(frame: &mut TrapFrame) {
    let addr = Cr2::read_raw();
    let code = PageFaultErrorCode::from_bits_truncate(frame.error_code);
    let access = if code.contains(PageFaultErrorCode::INSTRUCTION_FETCH) {
        Access::Exec
    } else if code.contains(PageFaultErrorCode::CAUSED_BY_WRITE) {
        Access::Write
    } else {
        Access::Read
    };
    interrupts::enable();
    let Some(core) = current_core() else { kill_current("fault in a process being torn down".into()) };
    if code.contains(PageFaultErrorCode::MALFORMED_TABLE) {
        kill_current(alloc::format!("segfault: {access} at {addr:#x}: reserved bit set in a page-table entry (RIP {:#x})", frame.rip));
    }
    let result = core.aspace.handle_fault(addr, access);
    let pid = core.pid;
    // Nothing of the process may stay referenced from this stack if it ends here.
    drop(core);
    match result {
        Ok(_) => {
            // Resolved — unless the same access keeps faulting (a fault the
            // tables cannot express): then it is the process's end, not a loop.
            let mut t = PROCS.lock();
            if let Some(e) = t.procs.get_mut(&pid) {
                let (a, rip, n) = e.last_fault;
                e.last_fault = if (a, rip) == (addr, frame.rip) { (a, rip, n + 1) } else { (addr, frame.rip, 1) };
                if e.last_fault.2 > 4 {
                    drop(t);
                    kill_current(alloc::format!("segfault: {access} at {addr:#x}: resolved but refused again (RIP {:#x})", frame.rip));
                }
            }
        }
        Err(e) => {
            let stack_lo = STACK_TOP - STACK_SIZE;
            let why = if e.reason == crate::aspace::AccessFailure::NoVma && addr < stack_lo && addr >= stack_lo - GUARD_GAP {
                alloc::format!("{e} (stack overflow into the guard gap)")
            } else {
                alloc::format!("{e}")
            };
            kill_current(alloc::format!("segfault: {why} (RIP {:#x})", frame.rip));
        }
    }
}
