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
//! One [`Cpu`] per processor, each with its own run queue under a
//! [`RankedMutex`] of rank `RunQueue` — the innermost lock, always taken
//! with interrupts off, never two at once. A task is in exactly one place:
//! one CPU's `current`, `ready`, `waiting` or `dead` (or in the hands of a
//! CPU moving it between two of those). Each CPU also has an idle task
//! (the boot CPU: a kernel task; an AP: the thread it started on), which is
//! in no queue and runs when nothing is ready: it halts until an interrupt.
//!
//! # Placement
//! [`spawn_user`]/[`spawn_kernel`] put a task on the least loaded online
//! CPU (ready tasks + a running non-idle task; ties round-robin), or on the
//! CPU it is pinned to, and kick that CPU. A CPU that finds its own ready queue empty
//! steals the first unpinned ready task of another *busy* CPU before
//! idling (an idle CPU was kicked and runs its queue itself).
//! A woken or due task goes to the ready queue of the CPU it waited on.
//!
//! # The context-switch invariants
//! 1. A switch happens only inside [`reschedule`], with interrupts off and
//!    the run-queue lock released. The task being left may already sit in a
//!    ready queue (put back, or woken while its CPU looked for work to
//!    steal) with its `on_cpu` flag still set: the switch clears it only
//!    after the stack pointer has left the task's stack (see `switch.rs`).
//!    Its own CPU never picks it from there but itself (no switch); a
//!    stealer skips it until the flag is clear. Waiting for the flag instead
//!    deadlocked: two CPUs, each leaving a task the other had stolen (found
//!    by `sched_races` under MTTCG). So a picked task is never on a CPU
//!    (asserted), and the picker sets `on_cpu` before switching in.
//! 2. Kernel code is not preempted: the timer preempts a task only when it
//!    interrupted ring 3 ([`preempt_point`] from the user-trap path). Kernel
//!    code gives the CPU up only by sleeping or yielding, possibly holding
//!    locks — so a task's held-lock counts ([`crate::sync`]) are saved and
//!    restored with its registers (the live counts are per CPU), and a
//!    contended lock yields.
//! 3. Switching saves the callee-saved registers and RSP on the old task's
//!    kernel stack, its CR3 and lock counts in its [`Task`]; it loads the
//!    next task's CR3 (if different) and points *this CPU's* TSS `rsp0` at
//!    the top of the next task's kernel stack, where the CPU pushes the next
//!    trap from ring 3.
//! 4. A dead task's stack is freed only after the switch away from it, by
//!    the same CPU (`dead` is drained at its next `reschedule`).
//!
//! # No lost wake-ups
//! - [`block`]: the caller registers itself (e.g. in a process's waiter
//!   list) and calls `block` with interrupts off, so it stays `current` on
//!   its CPU until `reschedule` parks it under that CPU's run-queue lock.
//!   [`wake`] looks for the task under each CPU's lock in turn: parked
//!   `Blocked` → ready, and the CPU is kicked (IPI) out of `hlt`; still
//!   `current` → its `wake_pending` flag is set, and `reschedule` (under
//!   the same lock) turns the block into a yield. Spurious returns are
//!   possible: every caller re-checks its condition in a loop.
//! - Interrupt waits and lock contention: compared against the global
//!   interrupt epoch; see `irq` for the IPI that reaches waiters on other
//!   CPUs (the CPU joins `irq`'s waiter set before its last epoch check).
//!   A lock release kicks the CPUs in `LOCK_WAITERS` the same way (see
//!   `on_released`).
//! - Idle: the idle task checks for ready work (its own queue, due
//!   waiters, stealable tasks) with interrupts off, then `sti; hlt`. Whoever
//!   makes a task ready on another CPU kicks that CPU; an IPI that arrives
//!   between the check and the `hlt` is taken right after `sti`. A CPU
//!   never halts while its own queue holds a runnable task; ready tasks of
//!   other CPUs are found at the latest at its next tick.

pub mod halted;
mod place;
mod switch;
mod task;

pub use task::{Task, TaskId, TaskState};
use place::{place, steal, stealable};

use crate::arch::trap_entry::TrapFrame;
use crate::cpus::{self, CpuId};
use crate::irq;
use crate::sync::{LockRank, RankedMutex};
use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
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
    /// The idle task looks for work (it is in no queue).
    Idle,
}

impl Park {
    /// Waits that the next interrupt (on any CPU) may end.
    fn wants_irq(self) -> bool {
        matches!(self, Park::Irq(_) | Park::Lock(..))
    }
}

struct RunQueue {
    current: Option<Arc<Task>>,
    idle: Option<Arc<Task>>,
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
    /// Tasks this CPU took from other CPUs' ready queues.
    pub steals: AtomicU64,
    /// Times its idle task halted / looked for work and found some.
    pub idle_halts: AtomicU64,
    pub idle_wakeups: AtomicU64,
    /// `ready.len()`, readable without the lock (placement, stealing).
    nr_ready: AtomicUsize,
    /// Whether it runs a task other than its idle task.
    busy: AtomicBool,
}

static CPUS: Lazy<[Cpu; MAX_CPUS]> = Lazy::new(|| {
    core::array::from_fn(|_| Cpu {
        rq: RankedMutex::new(LockRank::RunQueue, RunQueue { current: None, idle: None, ready: VecDeque::new(), waiting: Vec::new(), dead: Vec::new(), slice_start: 0 }),
        switches: AtomicU64::new(0),
        preemptions: AtomicU64::new(0),
        steals: AtomicU64::new(0),
        idle_halts: AtomicU64::new(0),
        idle_wakeups: AtomicU64::new(0),
        nr_ready: AtomicUsize::new(0),
        busy: AtomicBool::new(false),
    })
});

static STARTED: AtomicBool = AtomicBool::new(false);
/// The kernel page table (CR3 of tasks without a process).
static KERNEL_CR3: Once<u64> = Once::new();

/// The running CPU's scheduling state. (The task may move to another CPU
/// whenever it sleeps or yields.)
pub fn cpu() -> &'static Cpu {
    of(cpus::this_cpu())
}

/// CPU `c`'s scheduling state.
pub fn of(c: CpuId) -> &'static Cpu {
    &CPUS[c.index()]
}

/// Counters summed over every CPU: (switches, preemptions, steals).
pub fn totals() -> (u64, u64, u64) {
    CPUS.iter().fold((0, 0, 0), |(s, p, t), c| {
        (s + c.switches.load(Ordering::Relaxed), p + c.preemptions.load(Ordering::Relaxed), t + c.steals.load(Ordering::Relaxed))
    })
}

/// Ticks since the scheduler started (the boot CPU's timer).
pub fn ticks() -> u64 {
    irq::ticks()
}

/// Whether [`init`] ran.
pub fn started() -> bool {
    STARTED.load(Ordering::SeqCst)
}

/// Make the running kernel thread task 0 ("kernel") on the boot CPU, start
/// the periodic tick and take over device waits and lock contention; the
/// other CPUs join (see [`run_ap`]). Idempotent.
pub fn init() {
    if STARTED.load(Ordering::SeqCst) {
        return;
    }
    KERNEL_CR3.call_once(|| Cr3::read().0.start_address().as_u64());
    let boot = Task::boot();
    let idle = Task::new_kernel("idle/cpu0".into(), |_| idle_loop(), 0, Some(CpuId::BOOT)).expect("a stack for the boot CPU's idle task");
    interrupts::without_interrupts(|| {
        let c = of(CpuId::BOOT);
        let mut rq = c.rq.lock();
        rq.current = Some(boot);
        rq.idle = Some(idle);
        c.busy.store(true, Ordering::SeqCst);
    });
    irq::set_wait_hook(wait_hook);
    crate::sync::set_contended_hook(on_contended);
    crate::sync::set_released_hook(on_released);
    STARTED.store(true, Ordering::SeqCst);
    irq::lapic().start_periodic_us(TICK_US);
    for c in cpus::online().without(CpuId::BOOT).iter() {
        irq::kick(c); // out of their wait in `run_ap`
    }
    log::info!("scheduler: task 0 is the kernel thread; tick {} ms, slice {} tick(s); {} CPU(s)", TICK_US / 1000, SLICE_TICKS, cpus::online().len());
}

/// An application processor, once started (interrupts off): wait for the
/// scheduler, then become this CPU's idle task and schedule.
pub fn run_ap(me: CpuId) -> ! {
    while !started() {
        interrupts::enable_and_hlt(); // [`init`] kicks us
        interrupts::disable();
    }
    let idle = Task::ap_idle(me);
    {
        let mut rq = of(me).rq.lock();
        rq.current = Some(idle.clone());
        rq.idle = Some(idle);
    }
    irq::lapic().start_periodic_us(TICK_US);
    idle_loop()
}

/// The idle task: look for work with interrupts off, halt if there is none.
fn idle_loop() -> ! {
    loop {
        interrupts::disable();
        let me = cpus::this_cpu();
        let work = {
            let mut rq = of(me).rq.lock();
            rq.wake_due(me);
            !rq.ready.is_empty()
        };
        if work || stealable(me).is_some() {
            of(me).idle_wakeups.fetch_add(1, Ordering::Relaxed);
            reschedule(Park::Idle);
        } else {
            of(me).idle_halts.fetch_add(1, Ordering::Relaxed);
            halted::halting(me);
            interrupts::enable_and_hlt();
            halted::running(me);
        }
    }
}

/// The kernel page table's frame address (CR3 for kernel-only tasks).
pub fn kernel_cr3() -> u64 {
    *KERNEL_CR3.get().expect("sched::init")
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
    place(t.clone());
    Ok(t)
}

/// Queue a kernel task running `f(arg)` (interrupts on; it exits when `f`
/// returns), on CPU `pinned` only, or anywhere.
pub fn spawn_kernel(name: String, f: fn(u64), arg: u64, pinned: Option<CpuId>) -> Result<Arc<Task>, task::NoStack> {
    if !started() {
        init();
    }
    let t = Task::new_kernel(name, f, arg, pinned)?;
    place(t.clone());
    Ok(t)
}

/// Every task, for `ps` (idle tasks left out).
pub fn tasks() -> Vec<Arc<Task>> {
    interrupts::without_interrupts(|| {
        let mut all = Vec::new();
        for c in cpus::online().iter() {
            let rq = of(c).rq.lock();
            let idle = rq.idle.clone();
            let not_idle = |t: &&Arc<Task>| idle.as_ref().is_none_or(|i| !Arc::ptr_eq(i, t));
            all.extend(rq.current.iter().filter(not_idle).chain(rq.ready.iter()).chain(rq.waiting.iter().map(|(t, _)| t)).cloned());
        }
        all
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

/// Park the running task until [`wake`]. The caller registered itself
/// where its waker looks and checked its condition with interrupts off
/// (they stay off until the switch). May return spuriously: re-check.
pub fn block() {
    reschedule(Park::Blocked);
}

/// Wake task `id`: make it ready if it is blocked, or make its next
/// [`block`] return at once if it is still running towards it. False if
/// it is neither (already woken, or gone).
pub fn wake(id: TaskId) -> bool {
    interrupts::without_interrupts(|| {
        for c in cpus::online().iter() {
            let mut rq = of(c).rq.lock();
            if let Some(i) = rq.waiting.iter().position(|(t, p)| t.id == id && *p == Park::Blocked) {
                let (t, _) = rq.waiting.swap_remove(i);
                rq.push_ready(c, t);
                drop(rq);
                irq::kick(c);
                return true;
            }
            if let Some(t) = rq.current.as_ref().filter(|t| t.id == id) {
                t.wake_pending.store(true, Ordering::SeqCst);
                return true;
            }
        }
        false
    })
}

/// End the running task; its stack is freed after the switch away.
pub fn exit_current() -> ! {
    reschedule(Park::Exit);
    unreachable!("a dead task was scheduled again")
}

/// Called on the way back to ring 3 after an interrupt: switch if the
/// running task's slice is used up and another task is ready.
///
/// It starts with `pause`: under TCG with icount (one host thread runs
/// every vCPU in turn) a vCPU that stays in ring 3 kept that thread —
/// another vCPU sat with a RESCHEDULE IPI in service and ran not one
/// instruction for 200+ ticks (`user_sched` at 2 CPUs, any shift but 0).
/// `pause` ends TCG's block and hands the thread on. (In every timer
/// handler instead, it made some kernel-only ping-pongs take 20 s of wall
/// time for 30 ms of virtual time.) On hardware: a few cycles per tick.
pub fn preempt_point() {
    core::hint::spin_loop();
    let due = interrupts::without_interrupts(|| {
        let me = cpus::this_cpu();
        let mut rq = of(me).rq.lock();
        rq.wake_due(me); // sleepers whose time came, waiters whose interrupt came
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
fn on_contended(releases: &AtomicU64, seen: u64) {
    if !started() || !interrupts::are_enabled() {
        core::hint::spin_loop();
        return;
    }
    reschedule(Park::Lock(irq::epoch(), LockCounter(releases), seen));
}

/// CPUs with a task parked on a contended lock.
static LOCK_WAITERS: cpus::AtomicCpuSet = cpus::AtomicCpuSet::new();

/// The release hook: kick the other CPUs with lock waiters. A waiter's CPU
/// joins the set before it compares the release counter (in `wake_due`);
/// the release counts before it reads the set (both SeqCst): one of the
/// two sees the other.
fn on_released() {
    let waiters = LOCK_WAITERS.load();
    if waiters.is_empty() {
        return;
    }
    for c in waiters.without(cpus::this_cpu()).iter() {
        irq::kick(c);
    }
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
    fn push_ready(&mut self, here: CpuId, t: Arc<Task>) {
        t.set_state(TaskState::Ready);
        self.ready.push_back(t);
        of(here).nr_ready.store(self.ready.len(), Ordering::SeqCst);
    }

    fn pop_ready(&mut self, here: CpuId) -> Option<Arc<Task>> {
        let t = self.ready.pop_front();
        of(here).nr_ready.store(self.ready.len(), Ordering::SeqCst);
        t
    }

    /// Move every waiting task whose condition holds to `ready`; leave
    /// `irq`'s waiter set if no interrupt waiter is left.
    fn wake_due(&mut self, here: CpuId) {
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
                self.push_ready(here, t);
            } else {
                i += 1;
            }
        }
        if !self.waiting.iter().any(|(_, p)| p.wants_irq()) {
            irq::set_irq_waiter(here, false);
        }
        if !self.waiting.iter().any(|(_, p)| matches!(p, Park::Lock(..))) {
            LOCK_WAITERS.remove(here);
        }
    }
}

/// Park the running task as `park` and run the next ready one — its own
/// CPU's, else one stolen from another CPU, else this CPU's idle task.
/// Returns when this task runs again (never for `Exit`). Interrupts are
/// restored to what they were.
fn reschedule(park: Park) {
    let were_on = interrupts::are_enabled();
    interrupts::disable();
    let here = cpus::this_cpu();
    let c = of(here);
    let mut rq = c.rq.lock();
    let dead = core::mem::take(&mut rq.dead);
    let me = rq.current.take().expect("a current task");
    let idle = rq.idle.clone().expect("this CPU's idle task");
    let park = if park == Park::Blocked && me.wake_pending.swap(false, Ordering::SeqCst) { Park::Ready } else { park };
    if park.wants_irq() {
        irq::set_irq_waiter(here, true); // before the epoch check in wake_due: see `irq`
    }
    if matches!(park, Park::Lock(..)) {
        LOCK_WAITERS.insert(here); // before the counter check in wake_due: see `on_released`
    }
    if !Arc::ptr_eq(&me, &idle) {
        me.set_state(match park {
            Park::Ready | Park::Idle => TaskState::Ready,
            Park::Sleep(_) => TaskState::Sleeping,
            Park::Irq(_) => TaskState::WaitDevice,
            Park::Lock(..) => TaskState::WaitLock,
            Park::Blocked => TaskState::Blocked,
            Park::Exit => TaskState::Dead,
        });
        match park {
            Park::Ready | Park::Idle => rq.push_ready(here, me.clone()),
            Park::Exit => rq.dead.push(me.clone()),
            p => rq.waiting.push((me.clone(), p)),
        }
    }
    rq.wake_due(here);
    let next = match rq.pop_ready(here) {
        Some(n) => n,
        None => {
            drop(rq);
            let stolen = steal(here);
            rq = c.rq.lock();
            match stolen.or_else(|| rq.pop_ready(here)) {
                Some(n) => n,
                None => idle.clone(),
            }
        }
    };
    next.set_state(TaskState::Running);
    next.set_last_cpu(here);
    c.busy.store(!Arc::ptr_eq(&next, &idle), Ordering::SeqCst);
    rq.current = Some(next.clone());
    rq.slice_start = ticks();
    drop(rq);
    drop(dead); // other tasks' stacks: we are not on any of them
    if !Arc::ptr_eq(&me, &next) {
        c.switches.fetch_add(1, Ordering::Relaxed);
        // Its registers are saved (invariant 1): loading them is safe.
        assert!(!next.on_cpu.load(Ordering::Acquire), "task {} picked while a CPU is still leaving it", next.id);
        next.on_cpu.store(true, Ordering::Relaxed);
        let (me_ptr, next_ptr) = (Arc::as_ptr(&me), Arc::as_ptr(&next));
        if park == Park::Exit {
            // This frame never resumes: its references would never be
            // dropped. `dead` and `current` keep both tasks alive.
            drop(me);
            drop(next);
            // SAFETY: as below; `me` lives in this CPU's `dead` until its
            // next `reschedule`, which runs after this switch; `next` in
            // `current`.
            unsafe { switch::switch_to(&*me_ptr, &*next_ptr) };
            unreachable!("a dead task was switched back to");
        }
        // SAFETY: interrupts are off and the run queue is unlocked
        // (invariant 1); `me` is the task running on this stack and `next`
        // a task switched out earlier (its registers saved: `on_cpu` is
        // false, asserted above) or new; both stay alive: `me` through this frame's
        // Arc until it returns, `next` through `current`.
        unsafe { switch::switch_to(&*me_ptr, &*next_ptr) };
    } else if park == Park::Ready {
        // Nothing else to run: a caller polling with `yield_now` spins. Say
        // so (`pause`; TCG hands its thread to the next vCPU on it).
        core::hint::spin_loop();
    }
    drop(me);
    drop(next);
    if were_on {
        interrupts::enable();
    }
}
