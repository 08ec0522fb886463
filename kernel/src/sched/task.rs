//! A task: a kernel stack, the context saved while it is switched out, and
//! (for a process's task) the pid it runs for.
//!
//! `on_cpu` is true from the moment a CPU decides to switch to the task
//! until that CPU has left the task's stack (cleared by `switch_stacks`
//! after the stack pointer moved): no other CPU takes the task before it
//! is clear (like Linux's `p->on_cpu`; see the scheduler's invariant 1).
//!
//! A kernel task's stack is built the same way, with `kernel_task_start`
//! (see `switch.rs`) as the return address and the function and argument
//! in the saved r12/r13.
//!
//! A new user task's stack is built so that the first switch to it
//! "returns" into `trap_return`, which restores the `TrapFrame` above and
//! `iretq`s to ring 3:
//!
//! ```text
//!  top ─►  TrapFrame (rip, cs=0x33, rflags IF, rsp, ss=0x2b, registers)
//!          return address = trap_return
//!  rsp ─►  r15 r14 r13 r12 rbx rbp = 0     (popped by `switch_to`)
//!          ...
//!  bottom  canary word (checked at every switch)
//! ```

use super::switch::SwitchFrame;
use crate::arch::trap_entry::{trap_return_addr, TrapFrame};
use crate::cpus::CpuId;
use crate::sync::{HeldRanks, RANKS};
use alloc::alloc::{alloc, dealloc, Layout};
use alloc::string::String;
use alloc::sync::Arc;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};

/// A task's id (0 = the kernel thread).
pub type TaskId = u32;

/// Bytes of kernel stack per task.
pub const KSTACK_SIZE: usize = 64 * 1024;
const CANARY: u64 = 0x5a5a_c0de_57ac_4b1d;

/// What a task is doing (for `ps`; the run queue is the truth).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum TaskState {
    Ready = 0,
    Running = 1,
    Sleeping = 2,
    /// Waiting for an interrupt: a device job's DMA, or a lock's holder.
    WaitDevice = 3,
    /// Waiting to be woken (a child's exit).
    Blocked = 4,
    Dead = 5,
    /// Waiting for a lock another task holds.
    WaitLock = 6,
}

impl TaskState {
    pub fn name(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Running => "running",
            Self::Sleeping => "sleeping",
            Self::WaitDevice => "waiting (device)",
            Self::Blocked => "blocked (wait)",
            Self::Dead => "dead",
            Self::WaitLock => "waiting (lock)",
        }
    }
}

/// No kernel memory for a task's stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoStack;

/// Saved while switched out; touched only by `switch_to` with interrupts
/// off: by the CPU leaving the task (save), then by the CPU entering it
/// (restore) once `on_cpu` is false.
pub(super) struct Context {
    pub rsp: u64,
    pub cr3: u64,
    pub held: HeldRanks,
}

struct KStack {
    base: *mut u8,
}

// SAFETY: the stack memory is owned by its task; only the CPU running the
// task (or freeing it after it died) touches it.
unsafe impl Send for KStack {}
unsafe impl Sync for KStack {}

impl KStack {
    fn layout() -> Layout {
        Layout::from_size_align(KSTACK_SIZE, 4096).expect("constant layout")
    }
    fn new() -> Result<KStack, NoStack> {
        // SAFETY: the layout has a non-zero size.
        let base = unsafe { alloc(Self::layout()) };
        if base.is_null() {
            return Err(NoStack);
        }
        // SAFETY: `base` is a fresh allocation of KSTACK_SIZE bytes, 4 KiB aligned.
        unsafe { base.cast::<u64>().write(CANARY) };
        Ok(KStack { base })
    }
    fn top(&self) -> u64 {
        self.base as u64 + KSTACK_SIZE as u64
    }
    fn canary_intact(&self) -> bool {
        // SAFETY: the first word of our own allocation.
        unsafe { self.base.cast::<u64>().read_volatile() == CANARY }
    }
}

impl Drop for KStack {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with the same layout; the task is dead
        // and switched away from (sched invariant 4).
        unsafe { dealloc(self.base, Self::layout()) };
    }
}

/// A schedulable thread of execution.
pub struct Task {
    pub id: TaskId,
    pub name: String,
    /// The process it runs for (None: a kernel task).
    pub pid: Option<u32>,
    /// The only CPU it may run on (idle tasks, tests), or None: any.
    pub pinned: Option<CpuId>,
    state: AtomicU8,
    /// A CPU runs on its stack (see the module docs).
    pub(super) on_cpu: AtomicBool,
    /// A `wake` came while it was not blocked yet: its next block returns at once.
    pub(super) wake_pending: AtomicBool,
    /// The CPU it last ran on.
    last_cpu: AtomicU8,
    stack: Option<KStack>,
    ctx: UnsafeCell<Context>,
}

// SAFETY: `ctx` is accessed only by `switch_to` with interrupts off, by one
// CPU at a time: the one leaving the task, then — after `on_cpu` turned
// false, an acquire/release pair — the one entering it (sched invariant 1);
// everything else is immutable or atomic.
unsafe impl Sync for Task {}
unsafe impl Send for Task {}

static NEXT_ID: AtomicU32 = AtomicU32::new(1);

impl Task {
    /// The boot thread, already running on the boot stack.
    pub(super) fn boot() -> Arc<Task> {
        Self::running_here(0, "kernel".into(), None)
    }

    /// The thread an application processor started on, as its idle task.
    pub(super) fn ap_idle(cpu: CpuId) -> Arc<Task> {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        Self::running_here(id, alloc::format!("idle/{cpu}"), Some(cpu))
    }

    /// A task for the code already running on this CPU's boot stack.
    fn running_here(id: TaskId, name: String, pinned: Option<CpuId>) -> Arc<Task> {
        Arc::new(Task {
            id,
            name,
            pid: None,
            pinned,
            state: AtomicU8::new(TaskState::Running as u8),
            on_cpu: AtomicBool::new(true),
            wake_pending: AtomicBool::new(false),
            last_cpu: AtomicU8::new(crate::cpus::this_cpu().index() as u8),
            stack: None,
            ctx: UnsafeCell::new(Context { rsp: 0, cr3: super::kernel_cr3(), held: [0; RANKS] }),
        })
    }

    /// A kernel task that runs `f(arg)` in ring 0 (interrupts on), then exits.
    pub(super) fn new_kernel(name: String, f: fn(u64), arg: u64, pinned: Option<CpuId>) -> Result<Arc<Task>, NoStack> {
        let stack = KStack::new()?;
        // After `ret` into kernel_task_start, RSP = top - 16: 16-byte
        // aligned before its `call`, as the ABI wants.
        let ret_at = stack.top() - 24;
        let sw_at = ret_at - core::mem::size_of::<SwitchFrame>() as u64;
        let frame = SwitchFrame::entry(f as usize as u64, arg);
        // SAFETY: both lie inside the fresh stack, above its canary, aligned.
        unsafe {
            (ret_at as *mut u64).write(super::switch::kernel_task_start_addr());
            (sw_at as *mut SwitchFrame).write(frame);
        }
        Ok(Self::prepared(name, None, pinned, super::kernel_cr3(), stack, sw_at))
    }

    fn prepared(name: String, pid: Option<u32>, pinned: Option<CpuId>, cr3: u64, stack: KStack, rsp: u64) -> Arc<Task> {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        Arc::new(Task {
            id,
            name,
            pid,
            pinned,
            state: AtomicU8::new(TaskState::Ready as u8),
            on_cpu: AtomicBool::new(false),
            wake_pending: AtomicBool::new(false),
            last_cpu: AtomicU8::new(0),
            stack: Some(stack),
            ctx: UnsafeCell::new(Context { rsp, cr3, held: [0; RANKS] }),
        })
    }

    /// A task that enters ring 3 with `frame` on its first switch-in.
    pub(super) fn new_user(name: String, pid: u32, cr3: u64, frame: &TrapFrame) -> Result<Arc<Task>, NoStack> {
        let stack = KStack::new()?;
        let top = stack.top();
        let tf_at = top - core::mem::size_of::<TrapFrame>() as u64;
        let ret_at = tf_at - 8;
        let sw_at = ret_at - core::mem::size_of::<SwitchFrame>() as u64;
        // SAFETY: all three lie inside the fresh stack, above its canary,
        // suitably aligned (TrapFrame is 22 words, the stack top 4 KiB aligned).
        unsafe {
            (tf_at as *mut TrapFrame).write(frame.clone());
            (ret_at as *mut u64).write(trap_return_addr());
            (sw_at as *mut SwitchFrame).write(SwitchFrame::default());
        }
        Ok(Self::prepared(name, Some(pid), None, cr3, stack, sw_at))
    }

    /// The CPU it last ran on (or runs on).
    pub fn last_cpu(&self) -> CpuId {
        CpuId::new(self.last_cpu.load(Ordering::Relaxed) as usize).unwrap_or(CpuId::BOOT)
    }

    pub(super) fn set_last_cpu(&self, cpu: CpuId) {
        self.last_cpu.store(cpu.index() as u8, Ordering::Relaxed);
    }

    pub fn state(&self) -> TaskState {
        match self.state.load(Ordering::Relaxed) {
            0 => TaskState::Ready,
            1 => TaskState::Running,
            2 => TaskState::Sleeping,
            3 => TaskState::WaitDevice,
            4 => TaskState::Blocked,
            6 => TaskState::WaitLock,
            _ => TaskState::Dead,
        }
    }

    pub(super) fn set_state(&self, s: TaskState) {
        self.state.store(s as u8, Ordering::Relaxed);
    }

    /// The top of its kernel stack (TSS rsp0 while it runs); None for the
    /// boot thread, which never runs ring-3 code.
    pub(super) fn kstack_top(&self) -> Option<u64> {
        self.stack.as_ref().map(KStack::top)
    }

    /// False if the stack's bottom word was overwritten (an overflow).
    pub(super) fn stack_intact(&self) -> bool {
        self.stack.as_ref().is_none_or(KStack::canary_intact)
    }

    /// The saved context (see `Context`).
    pub(super) fn ctx(&self) -> *mut Context {
        self.ctx.get()
    }
}
