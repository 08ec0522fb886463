//! How long every online CPU was halted at once, for the throughput
//! benchmark (`bench/throughput.rs`).
//!
//! Under TCG with `-icount shift=0,sleep=off` the virtual clock (and the
//! TSC, PIT and LAPIC timer, which all run on it) advances by one
//! nanosecond per instruction executed by *any* CPU, and jumps to the next
//! timer deadline when *all* CPUs are halted (QEMU's icount warp). So over
//! an interval, `TSC elapsed − time all CPUs were halted` is the number of
//! instructions all CPUs executed — the only way to tell the two apart:
//! the guest has no clock that runs on one without the other.
//!
//! Protocol: the idle loop calls [`halting`] with interrupts off just
//! before its `sti; hlt`; the first interrupt the CPU takes calls
//! [`woke`] (from the trap dispatcher, before the handler). Both update
//! the set of halted CPUs under one spin lock (interrupts are off in both,
//! and it is held for a few instructions): when the set becomes every
//! online CPU the time is noted, when it stops being so the interval is
//! added to the total. Counted as halted by mistake: the few instructions
//! between `halting` and `hlt`, and the trap entry before `woke`. Halts
//! outside the idle loop (before the scheduler starts, or a bench holder
//! task's `hlt`) are not seen: the interval then counts as busy.

use crate::cpus::{self, CpuId, MAX_CPUS};
use core::sync::atomic::{AtomicBool, Ordering};
use spin::Mutex;

struct State {
    halted: u64,
    /// TSC when `halted` became every online CPU.
    since: u64,
    /// TSC cycles during which every online CPU was halted.
    total: u64,
}

static STATE: Mutex<State> = Mutex::new(State { halted: 0, since: 0, total: 0 });
/// Whether each CPU is inside `halting` .. `woke` (read without the lock
/// on every interrupt).
static HALTED: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

/// `me` is about to `hlt` in its idle loop (interrupts off).
pub(super) fn halting(me: CpuId) {
    HALTED[me.index()].store(true, Ordering::SeqCst);
    let mut s = STATE.lock();
    s.halted |= 1 << me.index();
    if s.halted == cpus::online().bits() {
        s.since = crate::cycles::now();
    }
}

/// An interrupt arrived on this CPU (interrupts off): if it ended an idle
/// `hlt`, the CPU is no longer halted.
pub fn woke() {
    let me = cpus::this_cpu();
    if !HALTED[me.index()].load(Ordering::SeqCst) {
        return;
    }
    HALTED[me.index()].store(false, Ordering::SeqCst);
    let mut s = STATE.lock();
    if s.halted == cpus::online().bits() {
        let now = crate::cycles::now();
        s.total += now.wrapping_sub(s.since);
    }
    s.halted &= !(1 << me.index());
}

/// TSC cycles during which every online CPU was halted in its idle loop,
/// since boot (an interval still running is not included).
pub fn all_halted_cycles() -> u64 {
    x86_64::instructions::interrupts::without_interrupts(|| STATE.lock().total)
}
