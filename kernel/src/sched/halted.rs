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
//! before its `sti; hlt`, and [`running`] when the `hlt` returned (after
//! the interrupt's handler). Both update the set of halted CPUs under one
//! spin lock, taken only with interrupts off and for a few instructions:
//! when the set becomes every online CPU the time is noted, and the first
//! CPU to run again adds the interval to the total. Counted as halted by
//! mistake: the few instructions between `halting` and `hlt`, and the
//! interrupt that ends the interval (entry, handler, exit: a few hundred
//! instructions per interval). Not hooked into the interrupt entry on
//! purpose: that moved the shootdown IPI handler by a few instructions and
//! `tlb_shootdown` at 4 CPUs then lost a write in 6 of 50 runs (0 of 30
//! without; see the branch's report). Halts outside the idle loop (before
//! the scheduler starts, or a bench holder task's `hlt`) are not seen: the
//! interval then counts as busy.

use crate::cpus::{self, CpuId};
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
/// Every online CPU is halted and the interval since `since` is open.
static ALL: AtomicBool = AtomicBool::new(false);

/// `me` is about to `hlt` in its idle loop (interrupts off).
pub(super) fn halting(me: CpuId) {
    let mut s = STATE.lock();
    s.halted |= 1 << me.index();
    if s.halted == cpus::online().bits() {
        s.since = crate::cycles::now();
        ALL.store(true, Ordering::SeqCst);
    }
}

/// `me` runs again (interrupts off): it left the set, and an open interval
/// ends now.
fn stop(s: &mut State, me: CpuId) {
    if ALL.swap(false, Ordering::SeqCst) {
        s.total += crate::cycles::now().wrapping_sub(s.since);
    }
    s.halted &= !(1 << me.index());
}

/// `me`'s idle `hlt` returned.
pub(super) fn running(me: CpuId) {
    x86_64::instructions::interrupts::without_interrupts(|| stop(&mut STATE.lock(), me));
}

/// TSC cycles during which every online CPU was halted in its idle loop,
/// since boot (an interval still open is not included).
pub fn all_halted_cycles() -> u64 {
    x86_64::instructions::interrupts::without_interrupts(|| STATE.lock().total)
}
