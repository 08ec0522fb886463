//! System calls: `int 0x80`, number in RAX, arguments in RDI, RSI, RDX,
//! R10, R8, R9, the result (or `-errno`) back in RAX (see the `abi` crate).
//!
//! Every argument is hostile until checked: lengths and addresses with
//! checked arithmetic, user memory only through `copy_to_user` /
//! `copy_from_user` (which resolve faults and refuse what the process may
//! not touch), and nothing allocated in proportion to a user number — a
//! console write goes through a fixed buffer, a device job in fixed pieces.

use super::{dev, ExitInfo, ProcCore, PROCS, MAX_THREADS};
use crate::arch::trap_entry::TrapFrame;
use crate::aspace::{AccessError, MmapError, Prot, RangeError};
use crate::sched;
use abi::{Errno, Sys, MAP_FIXED, PROT_EXEC, PROT_READ, PROT_WRITE};
use alloc::sync::Arc;
use x86_64::instructions::interrupts;

/// A system call's result.
pub(super) type SysResult = Result<u64, Errno>;

/// Bytes one `write` takes (a longer one is a partial write).
const WRITE_MAX: u64 = 4096;
/// Areas per process at most (each costs kernel memory).
const MAX_AREAS: usize = 256;
/// The longest mapping one `mmap` makes.
const MMAP_MAX: u64 = 1 << 36;
/// The longest sleep.
const SLEEP_MAX_MS: u64 = 60_000;

impl From<AccessError> for Errno {
    fn from(e: AccessError) -> Errno {
        match e.reason {
            crate::aspace::AccessFailure::OutOfMemory => Errno::ENOMEM,
            _ => Errno::EFAULT,
        }
    }
}

impl From<MmapError> for Errno {
    fn from(e: MmapError) -> Errno {
        match e {
            MmapError::Overlap => Errno::EEXIST,
            MmapError::NoSpace | MmapError::NoMemory => Errno::ENOMEM,
            MmapError::BadRange(_) | MmapError::ZeroLength => Errno::EINVAL,
        }
    }
}

impl From<RangeError> for Errno {
    fn from(e: RangeError) -> Errno {
        match e {
            RangeError::NotMapped | RangeError::NoMemory => Errno::ENOMEM,
            RangeError::BadRange(_) | RangeError::ZeroLength => Errno::EINVAL,
        }
    }
}

/// Run the system call in `frame` (from `user_trap`).
pub(super) fn dispatch(frame: &mut TrapFrame) {
    // A system call may sleep (device jobs, wait, sleep): take interrupts.
    interrupts::enable();
    let args = [frame.rdi, frame.rsi, frame.rdx, frame.r10, frame.r8, frame.r9];
    let result = match Sys::from_u64(frame.rax) {
        None => Err(Errno::ENOSYS),
        // Exit never returns: no `Arc<ProcCore>` may be held on this stack
        // (it would keep the address space alive forever).
        Some(Sys::Exit) => super::exit_current(ExitInfo { status: args[0] as i32, report: None }),
        Some(Sys::ThreadExit) => {
            let (pid, task) = super::current_ids();
            super::leave(pid.expect("a user task"), task)
        }
        Some(Sys::Fork) => fork(frame),
        Some(call) => match super::current_core() {
            Some(core) => run(call, &core, args),
            None => Err(Errno::ESRCH), // being torn down: the trap exit ends the task
        },
    };
    frame.rax = match result {
        Ok(v) => v,
        Err(e) => (-(e as i64)) as u64,
    };
}

fn run(call: Sys, core: &Arc<ProcCore>, a: [u64; 6]) -> SysResult {
    match call {
        Sys::Exit | Sys::Fork | Sys::ThreadExit => unreachable!("handled by dispatch"),
        Sys::Write => write(core, a[0], a[1]),
        Sys::GetPid => Ok(core.pid as u64),
        Sys::Wait => wait(core, a[0] as i64, a[1]),
        Sys::Mmap => mmap(core, a[0], a[1], a[2], a[3]),
        Sys::Munmap => {
            page_aligned(a[0])?;
            core.aspace.munmap(a[0], a[1])?;
            Ok(0)
        }
        Sys::Mprotect => {
            page_aligned(a[0])?;
            core.aspace.mprotect(a[0], a[1], prot(a[2])?)?;
            Ok(0)
        }
        Sys::Yield => {
            sched::yield_now();
            Ok(0)
        }
        Sys::Sleep => {
            if a[0] > SLEEP_MAX_MS {
                return Err(Errno::EINVAL);
            }
            sched::sleep_ms(a[0]);
            Ok(0)
        }
        Sys::Ticks => Ok(sched::ticks()),
        Sys::DevOpen => dev::open(core, a[0], a[1]),
        Sys::DevClose => dev::close(core, a[0]),
        Sys::DevJob => dev::job(core, a),
        Sys::Thread => thread(core, a[0], a[1], a[2]),
    }
}

fn page_aligned(addr: u64) -> Result<(), Errno> {
    if addr.is_multiple_of(4096) {
        Ok(())
    } else {
        Err(Errno::EINVAL)
    }
}

/// Protection bits → `Prot` (PROT_NONE is not supported: EINVAL).
fn prot(bits: u64) -> Result<Prot, Errno> {
    if bits & !(PROT_READ | PROT_WRITE | PROT_EXEC) != 0 || bits == 0 {
        return Err(Errno::EINVAL);
    }
    let mut p = Prot::READ; // x86 cannot map write- or execute-only
    if bits & PROT_WRITE != 0 {
        p |= Prot::WRITE;
    }
    if bits & PROT_EXEC != 0 {
        p |= Prot::EXEC;
    }
    Ok(p)
}

fn write(core: &ProcCore, buf: u64, len: u64) -> SysResult {
    // The whole range must be a user range (as Linux's access_ok); then
    // at most WRITE_MAX bytes of it are written.
    if buf.checked_add(len).is_none_or(|end| end > crate::mm::USER_END) {
        return Err(Errno::EFAULT);
    }
    let n = len.min(WRITE_MAX);
    let mut bytes = [0u8; WRITE_MAX as usize];
    core.aspace.copy_from_user(buf, &mut bytes[..n as usize])?;
    // Control characters other than newline and tab are shown as '?'.
    let mut text = alloc::string::String::new();
    for c in alloc::string::String::from_utf8_lossy(&bytes[..n as usize]).chars() {
        text.push(if c.is_control() && c != '\n' && c != '\t' { '?' } else { c });
    }
    crate::print!("{text}");
    Ok(n)
}

fn mmap(core: &ProcCore, hint: u64, len: u64, prot_bits: u64, flags: u64) -> SysResult {
    if flags & !MAP_FIXED != 0 || len == 0 || len > MMAP_MAX {
        return Err(Errno::EINVAL);
    }
    let p = prot(prot_bits)?;
    let fixed = flags & MAP_FIXED != 0;
    if fixed {
        page_aligned(hint)?;
    }
    if core.aspace.vmas().len() >= MAX_AREAS {
        return Err(Errno::ENOMEM);
    }
    let at = if hint == 0 && !fixed { None } else { Some(hint & !0xfff) };
    let r = core.aspace.mmap(at, len, p, fixed)?;
    Ok(r.start())
}

/// Copy the process; the child returns 0 from the same call.
fn fork(frame: &TrapFrame) -> SysResult {
    let core = super::current_core().ok_or(Errno::ESRCH)?;
    let child_space = core.aspace.fork().map_err(|_| Errno::ENOMEM)?;
    // The child pages its image in on its own (what it unmaps is its business).
    let image = core.image.duplicate();
    image.attach(&child_space);
    let hmm = crate::hmmdev::ProcessHmm::attach(&child_space);
    let mut child_frame = frame.clone();
    child_frame.rax = 0;
    super::start(core.name.clone(), child_space, hmm, image, Some(core.pid), &child_frame).map_err(|e| match e {
        super::SpawnError::TooManyProcesses => Errno::EAGAIN,
        _ => Errno::ENOMEM,
    })
    .map(|pid| pid as u64)
}

/// Reap a child: `pid` (> 0) or any (-1); its status to `status_ptr` if not 0.
fn wait(core: &ProcCore, pid: i64, status_ptr: u64) -> SysResult {
    if pid == 0 || pid < -1 || pid > u32::MAX as i64 {
        return Err(Errno::EINVAL);
    }
    loop {
        if super::is_exiting(core.pid) {
            return Err(Errno::ESRCH); // another thread ended the process: leave
        }
        interrupts::disable();
        let mut t = PROCS.lock();
        let mine = |p: &u32, e: &super::Entry| e.parent == Some(core.pid) && (pid == -1 || *p as i64 == pid);
        if !t.procs.iter().any(|(p, e)| mine(p, e)) {
            drop(t);
            interrupts::enable();
            return Err(Errno::ECHILD);
        }
        let done = t.procs.iter().find(|(p, e)| mine(p, e) && matches!(e.state, super::State::Zombie(_))).map(|(p, _)| *p);
        if let Some(child) = done {
            let e = t.procs.remove(&child).expect("found above");
            drop(t);
            interrupts::enable();
            let status = match e.state {
                super::State::Zombie(i) => i.status,
                _ => unreachable!("a zombie"),
            };
            if status_ptr != 0 {
                core.aspace.copy_to_user(status_ptr, &status.to_le_bytes())?;
            }
            return Ok(child as u64);
        }
        t.waiters.push(sched::current().id);
        drop(t);
        sched::block(); // interrupts off since the check: no lost wake-up
        interrupts::enable();
    }
}

/// A new task in this process at `entry(arg)` with stack `stack_top`.
fn thread(core: &Arc<ProcCore>, entry: u64, stack_top: u64, arg: u64) -> SysResult {
    if entry >= crate::mm::USER_END || !(4096..crate::mm::USER_END).contains(&stack_top) {
        return Err(Errno::EINVAL);
    }
    let (code, data) = crate::arch::gdt::user_selectors();
    let frame = TrapFrame { rip: entry, cs: code as u64, rflags: 0x202, rsp: (stack_top & !0xf) - 8, ss: data as u64, rdi: arg, ..TrapFrame::default() };
    let cr3 = core.aspace.pml4().start_address().as_u64(); // before the table lock (rank order)
    let mut t = PROCS.lock();
    let e = t.procs.get_mut(&core.pid).ok_or(Errno::ESRCH)?;
    if e.tasks.len() >= MAX_THREADS {
        return Err(Errno::EAGAIN);
    }
    let task = sched::spawn_user(alloc::format!("{}/t", core.name), core.pid, cr3, &frame).map_err(|_| Errno::ENOMEM)?;
    e.tasks.push(task.id);
    Ok(task.id as u64)
}
