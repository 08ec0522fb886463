//! The scheduler: tasks with their own kernel stacks, per-CPU run queues,
//! preemption by the local APIC timer, and sleeping — on time, on the next
//! interrupt (a device job waiting for its DMA), or until woken.
//!
//! ```text
//!                 ┌──────────── timer tick, from ring 3, slice used ───────────┐
//!                 ▼                                                            │
//!   spawn ──► Ready ──pick──► Running ──yield──► Ready                         │
//!                 ▲              │  ├─sleep(ms)────► Sleeping(until tick) ──┐  │
//!                 │              │  ├─wait for irq─► WaitIrq(epoch) ────────┤  │
//!                 │              │  ├─lock taken───► WaitLock(epoch, releases)┤  │
//!                 │              │  ├─block────────► Blocked ── wake(id) ───┤  │
//!                 │              │  └─exit─────────► Dead (stack freed later)│  │
//!                 └──────────────┴──────────── due / woken ◄────────────────┘──┘
//! ```
//!
//! # Data layout
//! One [`Cpu`] per processor (an array with one entry today; issue 16 adds
//! more), each with its own run queue under a [`RankedMutex`] of rank
//! `RunQueue` — the innermost lock, always taken with interrupts off. A
//! task is in exactly one place: its CPU's `current`, `ready`, `waiting`
//! or `dead`.
//!
//! # The context-switch invariants
//! 1. A switch happens only inside [`reschedule`], with interrupts off and
//!    the run-queue lock *released* (single CPU: nothing else can touch the
//!    queue until interrupts are on again).
//! 2. Kernel code is not preempted: the timer preempts a task only when it
//!    interrupted ring 3 ([`preempt_point`] from the user-trap path). Kernel
//!    code gives the CPU up only by sleeping or yielding, possibly holding
//!    locks — so a task's held-lock counts ([`crate::sync`]) are saved and
//!    restored with its registers, and a contended lock yields.
//! 3. Switching saves the callee-saved registers and RSP on the old task's
//!    kernel stack, its CR3 and lock counts in its [`Task`]; it loads the
//!    next task's CR3 (if different) and points the TSS's `rsp0` at the top
//!    of the next task's kernel stack, where the CPU pushes the next trap
//!    from ring 3.
//! 4. A dead task's stack is freed only by another task, after the switch
//!    away from it (`dead` is drained at the next `reschedule`).
//! 5. No lost wake-ups: a task checks its condition and parks with
//!    interrupts off; interrupts only count, and `WaitIrq` compares the
//!    interrupt epoch it saw before checking.

//!
//! # For more CPUs (issue 16)
//! What is per-CPU already: the [`Cpu`] record (run queue, counters, kernel
//! CR3). What is still global and must move into it: the TSS (its `rsp0`),
//! the held-lock counts of `sync`, and [`cpu`] (which returns entry 0).
//! Switching must then keep the run-queue lock across the stack switch (or
//! mark the old task "switching out") so another CPU cannot pick it up
//! while its registers are still being saved, and `wake` must be able to
//! kick a remote CPU out of `hlt` with an IPI.

mod switch;
mod task;

pub use task::{Task, TaskId, TaskState};

use crate::arch::trap_entry::TrapFrame;
use crate::irq;
use crate::sync::{LockRank, RankedMutex};
use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use spin::{Lazy, Once};
use x86_64::instructions::interrupts;
use x86_64::registers::control::Cr3;

pub use crate::cpus::MAX_CPUS;
/// The scheduler tick (virtual time).
pub const TICK_US: u64 = 10_000;
/// Ticks a task may run in ring 3 before the timer preempts it.
pub const SLICE_TICKS: u64 = 1;

/// A contended lock's release counter, as a parked task names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LockCounter(*const AtomicU64);

// SAFETY: it points into a `RankedMutex` that outlives the park (see
// `wake_due`); only atomics are read through it.
unsafe impl Send for LockCounter {}

/// Why the running task gives up the CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Park {
    /// Still runnable: to the back of the ready queue.
    Ready,
    /// Until the tick count reaches this.
    Sleep(u64),
    /// Until any interrupt after this epoch.
    Irq(u64),
    /// Until the contended lock is released or an interrupt arrives:
    /// (interrupt epoch seen, the lock's release counter, its value seen).
    Lock(u64, LockCounter, u64),
    /// Until [`wake`].
    Blocked,
    /// For good.
    Exit,
}

struct RunQueue {
    current: Option<Arc<Task>>,
    ready: VecDeque<Arc<Task>>,
    waiting: Vec<(Arc<Task>, Park)>,
    dead: Vec<Arc<Task>>,
    /// Tick at which `current` was last switched in.
    slice_start: u64,
}

/// One processor's scheduling state.
pub struct Cpu {
    rq: RankedMutex<RunQueue>,
    /// Context switches on this CPU.
    pub switches: AtomicU64,
    /// Preemptions by the timer on this CPU.
    pub preemptions: AtomicU64,
    /// The kernel page table (CR3 of tasks without a process).
    kernel_cr3: Once<u64>,
}

static CPUS: Lazy<[Cpu; MAX_CPUS]> = Lazy::new(|| {
    core::array::from_fn(|_| Cpu {
        rq: RankedMutex::new(LockRank::RunQueue, RunQueue { current: None, ready: VecDeque::new(), waiting: Vec::new(), dead: Vec::new(), slice_start: 0 }),
        switches: AtomicU64::new(0),
        preemptions: AtomicU64::new(0),
        kernel_cr3: Once::new(),
    })
});

static STARTED: AtomicBool = AtomicBool::new(false);

/// This CPU's scheduling state.
pub fn cpu() -> &'static Cpu {
    &CPUS[crate::cpus::this_cpu().index()]
}

/// Ticks since the scheduler started.
pub fn ticks() -> u64 {
    irq::count(irq::TIMER_VECTOR)
}

/// Whether [`init`] ran.
pub fn started() -> bool {
    STARTED.load(Ordering::SeqCst)
}

/// Make the running kernel thread task 0 ("kernel"), start the periodic
/// tick and take over device waits and lock contention. Idempotent.
pub fn init() {
    if STARTED.swap(true, Ordering::SeqCst) {
        return;
    }
    let c = cpu();
    c.kernel_cr3.call_once(|| Cr3::read().0.start_address().as_u64());
    let boot = Task::boot();
    boot.set_state(TaskState::Running);
    interrupts::without_interrupts(|| {
        c.rq.lock().current = Some(boot);
    });
    irq::set_wait_hook(wait_hook);
    crate::sync::set_contended_hook(on_contended);
    irq::lapic().start_periodic_us(TICK_US);
    log::info!("scheduler: task 0 is the kernel thread; tick {} ms, slice {} tick(s)", TICK_US / 1000, SLICE_TICKS);
}

/// The kernel page table's frame address (CR3 for kernel-only tasks).
pub fn kernel_cr3() -> u64 {
    *cpu().kernel_cr3.get().expect("sched::init")
}

/// The running task.
pub fn current() -> Arc<Task> {
    interrupts::without_interrupts(|| cpu().rq.lock().current.clone()).expect("a current task")
}

/// The running task, if the scheduler runs.
pub fn try_current() -> Option<Arc<Task>> {
    if !started() {
        return None;
    }
    interrupts::without_interrupts(|| cpu().rq.lock().current.clone())
}

/// Queue a new task that starts in ring 3 with `frame` (its registers,
/// RIP, RSP) on a fresh kernel stack.
pub fn spawn_user(name: String, pid: u32, cr3: u64, frame: &TrapFrame) -> Result<Arc<Task>, task::NoStack> {
    let t = Task::new_user(name, pid, cr3, frame)?;
    t.set_state(TaskState::Ready);
    interrupts::without_interrupts(|| cpu().rq.lock().ready.push_back(t.clone()));
    Ok(t)
}

/// Every task, for `ps`: (task, where it is).
pub fn tasks() -> Vec<Arc<Task>> {
    interrupts::without_interrupts(|| {
        let rq = cpu().rq.lock();
        rq.current.iter().chain(rq.ready.iter()).chain(rq.waiting.iter().map(|(t, _)| t)).cloned().collect()
    })
}

/// Give the CPU to the next ready task (if any).
pub fn yield_now() {
    reschedule(Park::Ready);
}

/// Sleep for at least `ms` milliseconds of (virtual) time.
pub fn sleep_ms(ms: u64) {
    let ticks_needed = ms.saturating_mul(1000).div_ceil(TICK_US).max(1);
    reschedule(Park::Sleep(ticks().saturating_add(ticks_needed)));
}

/// Park the running task until [`wake`]. The caller checked its condition
/// with interrupts off (they stay off until the switch).
pub fn block() {
    reschedule(Park::Blocked);
}

/// Make a blocked task ready. False if it was not blocked.
pub fn wake(id: TaskId) -> bool {
    interrupts::without_interrupts(|| {
        let mut rq = cpu().rq.lock();
        let Some(i) = rq.waiting.iter().position(|(t, p)| t.id == id && *p == Park::Blocked) else { return false };
        let (t, _) = rq.waiting.swap_remove(i);
        t.set_state(TaskState::Ready);
        rq.ready.push_back(t);
        true
    })
}

/// End the running task; its stack is freed after the switch away.
pub fn exit_current() -> ! {
    reschedule(Park::Exit);
    unreachable!("a dead task was scheduled again")
}

/// Called on the way back to ring 3 after an interrupt: switch if the
/// running task's slice is used up and another task is ready.
pub fn preempt_point() {
    let due = interrupts::without_interrupts(|| {
        let mut rq = cpu().rq.lock();
        rq.wake_due(); // sleepers whose time came, waiters whose interrupt came
        !rq.ready.is_empty() && ticks().wrapping_sub(rq.slice_start) >= SLICE_TICKS
    });
    if due {
        cpu().preemptions.fetch_add(1, Ordering::Relaxed);
        reschedule(Park::Ready);
    }
}

/// The contention hook: a lock is held by a task that is not running.
/// With interrupts on, sleep until a lock is released or an interrupt
/// comes (the holder, asleep in a device wait, needs one), so contenders
/// never spin against each other.
fn on_contended(releases: &AtomicU64) {
    if !started() || !interrupts::are_enabled() {
        core::hint::spin_loop();
        return;
    }
    // Seen before parking: a release in between makes the park due at once.
    reschedule(Park::Lock(irq::epoch(), LockCounter(releases), releases.load(Ordering::SeqCst)));
}

/// `irq::wait_until` once the scheduler runs: sleep until the next
/// interrupt and check again, while other tasks run.
fn wait_hook(timeout_us: u64, done: &mut dyn FnMut() -> bool) -> Result<(), irq::TimedOut> {
    let deadline = ticks().saturating_add(timeout_us.div_ceil(TICK_US) + 1);
    let result = loop {
        interrupts::disable();
        let epoch = irq::epoch();
        if done() {
            break Ok(());
        }
        if ticks() >= deadline {
            break Err(irq::TimedOut { waited_us: timeout_us });
        }
        reschedule(Park::Irq(epoch));
    };
    interrupts::enable();
    result
}

impl RunQueue {
    /// Move every waiting task whose condition holds to `ready`.
    fn wake_due(&mut self) {
        let (now, epoch) = (ticks(), irq::epoch());
        let mut i = 0;
        while i < self.waiting.len() {
            let due = match self.waiting[i].1 {
                Park::Sleep(until) => now >= until,
                Park::Irq(seen) => epoch != seen,
                // SAFETY: the parked task is inside `RankedMutex::lock` of the
                // mutex that owns this counter: the mutex outlives the park.
                Park::Lock(seen, counter, was) => epoch != seen || unsafe { (*counter.0).load(Ordering::SeqCst) } != was,
                _ => false,
            };
            if due {
                let (t, _) = self.waiting.swap_remove(i);
                t.set_state(TaskState::Ready);
                self.ready.push_back(t);
            } else {
                i += 1;
            }
        }
    }
}

/// Park the running task as `park` and run the next ready one — or, if
/// none is ready, halt until an interrupt makes one ready. Returns when
/// this task runs again (never for `Exit`). Interrupts are restored to what
/// they were.
fn reschedule(park: Park) {
    let were_on = interrupts::are_enabled();
    interrupts::disable();
    let c = cpu();
    let mut rq = c.rq.lock();
    let dead = core::mem::take(&mut rq.dead);
    let me = rq.current.take().expect("a current task");
    me.set_state(match park {
        Park::Ready => TaskState::Ready,
        Park::Sleep(_) => TaskState::Sleeping,
        Park::Irq(_) => TaskState::WaitDevice,
        Park::Lock(..) => TaskState::WaitLock,
        Park::Blocked => TaskState::Blocked,
        Park::Exit => TaskState::Dead,
    });
    rq.wake_due();
    match park {
        Park::Ready => rq.ready.push_back(me.clone()),
        Park::Exit => rq.dead.push(me.clone()),
        p => rq.waiting.push((me.clone(), p)),
    }
    let next = loop {
        if let Some(n) = rq.ready.pop_front() {
            break n;
        }
        // Nobody is ready: idle on this stack until an interrupt changes that.
        drop(rq);
        interrupts::enable_and_hlt();
        interrupts::disable();
        rq = c.rq.lock();
        rq.wake_due();
    };
    next.set_state(TaskState::Running);
    rq.current = Some(next.clone());
    rq.slice_start = ticks();
    drop(rq);
    drop(dead); // other tasks' stacks: we are not on any of them
    if !Arc::ptr_eq(&me, &next) {
        c.switches.fetch_add(1, Ordering::Relaxed);
        // SAFETY: interrupts are off and the run queue is unlocked
        // (invariant 1); `me` is the task running on this stack and `next`
        // a task switched out earlier (or new, its stack prepared by
        // `Task::new_user`); both stay alive: `me` through this frame's
        // Arc until it returns (a dead `me` is kept in `dead`), `next`
        // through `current`.
        unsafe { switch::switch_to(&me, &next) };
    }
    drop(me);
    drop(next);
    if were_on {
        interrupts::enable();
    }
}
