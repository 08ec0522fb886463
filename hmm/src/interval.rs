//! Sequence counts per interval (Linux's `mmu_interval_notifier`).
//!
//! A device fault (or an exclusive-access request) registers the range it
//! works on — its *interval* — for as long as it runs. Each interval has
//! its own sequence count, bumped only by invalidations that overlap it:
//! an invalidation elsewhere in the address space (reclaim of an unrelated
//! page, a munmap of another area) never makes the fault retry.
//!
//! ```text
//!  fault                                        invalidation of R
//!  ─────                                        ─────────────────
//!  reader = register(window)                    start: lock; push R to `active`;
//!  seq = reader.begin()  ◄─ waits while an             bump every overlapping interval
//!        overlapping invalidation is active            (not the owner's, for EXCLUSIVE)
//!  ...CPU-side work, no HMM lock...             apply to mirrors (each under its table lock)
//!  lock mirror table                            end: lock; pop R from `active`
//!  reader.changed(seq)? → retry
//!  commit, unlock
//! ```
//!
//! The bump happens before the invalidation touches any mirror table and
//! the fault compares under the table lock, so either the commit precedes
//! the invalidation's table update (which then removes the entries) or the
//! fault sees the bump. `begin` waits (bounded) while an overlapping
//! invalidation is between start and end: the CPU-side translations of
//! the range are then in flux, and work done on them would be thrown away.
//!
//! Slots: an address space has [`SLOTS`] interval slots (faults in flight
//! at once; a fault holds one for its whole round). Registering takes the
//! lock once and also waits out overlapping invalidations (`begin`);
//! each slot's count is an atomic, so the commit's check takes no lock.
//! Nothing is allocated. With every slot taken, a fault waits for one
//! (bounded, like `begin`).
//!
//! Lock: `Intervals::state` is a leaf lock (nothing is taken under it).

use crate::mirror::{DeviceId, MirrorId};
use crate::VaRange;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use spin::Mutex;

/// How long `begin` waits for an overlapping invalidation to end (or
/// `register` for a free slot) before giving up (an invalidation can only
/// be "in progress" for a fault on another CPU, or for a fault started from
/// inside that invalidation, which would wait forever).
const WAIT_SPINS: u64 = 1 << 26;

/// Faults (and exclusive requests) in flight at once per address space.
pub(crate) const SLOTS: usize = u16::BITS as usize; // one bit each in `State::used`

#[derive(Clone, Copy, Debug)]
struct Interval {
    mirror: MirrorId,
    device: DeviceId,
    range: VaRange,
}

struct State {
    slots: [Option<Interval>; SLOTS],
    /// Bit i: `slots[i]` is taken (finding a free slot is one instruction).
    used: u16,
    /// Invalidations between start and end (a multiset).
    active: Vec<VaRange>,
}

impl Default for State {
    /// Room for the usual nesting up front: the invalidation path (under
    /// the kernel's address-space lock) then pushes without allocating.
    fn default() -> Self {
        State { slots: [None; SLOTS], used: 0, active: Vec::with_capacity(4) }
    }
}

/// The intervals of one address space.
#[derive(Default)]
pub(crate) struct Intervals {
    state: Mutex<State>,
    /// Per slot: its sequence count (bumped under `state`, read without it).
    seqs: [AtomicU64; SLOTS],
}

/// An overlapping invalidation did not end in time (or no slot came free).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StillInvalidating;

impl Intervals {
    /// Register `range` for a fault of `mirror` (of `device`) and begin
    /// (`mmu_interval_read_begin`): one lock when nothing overlapping is in
    /// progress. Returns the reader and its count.
    pub fn register(&self, mirror: MirrorId, device: DeviceId, range: VaRange) -> Result<(Reader<'_>, u64), StillInvalidating> {
        self.register_within(mirror, device, range, WAIT_SPINS)
    }

    fn register_within(&self, mirror: MirrorId, device: DeviceId, range: VaRange, spins: u64) -> Result<(Reader<'_>, u64), StillInvalidating> {
        for _ in 0..spins {
            {
                let mut s = self.state.lock();
                if s.used != u16::MAX {
                    let slot = s.used.trailing_ones() as usize;
                    s.used |= 1 << slot;
                    s.slots[slot] = Some(Interval { mirror, device, range });
                    let busy = s.active.iter().any(|r| r.overlaps(&range));
                    let seq = self.seqs[slot].load(Ordering::Acquire);
                    drop(s);
                    let reader = Reader { owner: self, slot, range };
                    let seq = if busy { reader.begin()? } else { seq };
                    return Ok((reader, seq));
                }
            }
            core::hint::spin_loop();
        }
        Err(StillInvalidating)
    }

    /// An invalidation of `range` starts: bump every overlapping interval
    /// except those of `exempt` (the device taking exclusive access).
    pub fn start(&self, range: VaRange, exempt: Option<DeviceId>) {
        let mut s = self.state.lock();
        s.active.push(range);
        if s.used == 0 {
            return; // no fault in flight
        }
        for (i, r) in s.slots.iter().enumerate() {
            if r.is_some_and(|r| r.range.overlaps(&range) && Some(r.device) != exempt) {
                self.seqs[i].fetch_add(1, Ordering::Release);
            }
        }
    }

    /// The invalidation of `range` ended.
    pub fn end(&self, range: VaRange) {
        let mut s = self.state.lock();
        if let Some(i) = s.active.iter().position(|r| *r == range) {
            s.active.swap_remove(i);
        }
    }

    /// `mirror` was released: its faults in flight must not commit.
    pub fn release(&self, mirror: MirrorId) {
        let s = self.state.lock();
        for (i, r) in s.slots.iter().enumerate() {
            if r.is_some_and(|r| r.mirror == mirror) {
                self.seqs[i].fetch_add(1, Ordering::Release);
            }
        }
    }
}

/// A registered interval (a slot); unregistered when dropped.
pub(crate) struct Reader<'a> {
    owner: &'a Intervals,
    slot: usize,
    range: VaRange,
}

impl Reader<'_> {
    /// `mmu_interval_read_begin`: wait until no overlapping invalidation is
    /// in progress, then return the interval's count.
    pub fn begin(&self) -> Result<u64, StillInvalidating> {
        self.begin_within(WAIT_SPINS)
    }

    fn begin_within(&self, spins: u64) -> Result<u64, StillInvalidating> {
        for _ in 0..spins {
            {
                let s = self.owner.state.lock();
                if !s.active.iter().any(|r| r.overlaps(&self.range)) {
                    return Ok(self.owner.seqs[self.slot].load(Ordering::Acquire));
                }
            }
            core::hint::spin_loop();
        }
        Err(StillInvalidating)
    }

    /// `mmu_interval_read_retry`: whether an overlapping invalidation (or
    /// the mirror's release) started since `begin` returned `seq`. No lock:
    /// the caller holds the mirror's table lock, which an invalidation
    /// takes only after bumping (so a bump before it is seen here).
    pub fn changed(&self, seq: u64) -> bool {
        self.owner.seqs[self.slot].load(Ordering::Acquire) != seq
    }
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        let mut s = self.owner.state.lock();
        s.slots[self.slot] = None;
        s.used &= !(1 << self.slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(a: u64, b: u64) -> VaRange {
        VaRange::new(a * 4096, b * 4096).unwrap()
    }

    #[test]
    fn only_overlapping_invalidations_bump() {
        let iv = Intervals::default();
        let (reader, seq) = iv.register(MirrorId(1), DeviceId(1), r(16, 32)).unwrap();
        iv.start(r(0, 16), None);
        iv.end(r(0, 16));
        assert!(!reader.changed(seq), "an invalidation next to the interval does not touch it");
        iv.start(r(31, 40), None);
        iv.end(r(31, 40));
        assert!(reader.changed(seq), "an overlapping one does");
        let seq = reader.begin().unwrap();
        iv.start(r(20, 21), Some(DeviceId(1)));
        iv.end(r(20, 21));
        assert!(!reader.changed(seq), "the exempt owner's intervals are not bumped");
        iv.release(MirrorId(2));
        assert!(!reader.changed(seq), "another mirror's release");
        iv.release(MirrorId(1));
        assert!(reader.changed(seq), "its own mirror's release");
    }

    #[test]
    fn begin_refuses_while_an_overlapping_invalidation_runs() {
        let iv = Intervals::default();
        let (reader, _) = iv.register(MirrorId(1), DeviceId(1), r(0, 4)).unwrap();
        iv.start(r(100, 101), None);
        assert!(reader.begin().is_ok(), "a disjoint invalidation in progress does not block");
        iv.start(r(2, 3), None);
        // Nested in the same thread it can never end: begin gives up.
        assert_eq!(reader.begin_within(1000), Err(StillInvalidating));
        iv.end(r(2, 3));
        assert!(reader.begin().is_ok());
        drop(reader);
        assert!(iv.state.lock().slots.iter().all(Option::is_none) && iv.state.lock().used == 0, "unregistered on drop");
    }

    #[test]
    fn a_fault_waits_for_a_free_slot() {
        let iv = Intervals::default();
        let mut held: Vec<_> = (0..SLOTS).map(|i| iv.register(MirrorId(1), DeviceId(1), r(i as u64, i as u64 + 1)).unwrap().0).collect();
        assert!(iv.register_within(MirrorId(1), DeviceId(1), r(0, 1), 1000).is_err(), "every slot taken: no registration");
        held.pop();
        let (reader, seq) = iv.register_within(MirrorId(1), DeviceId(1), r(40, 41), 1000).unwrap();
        iv.start(r(40, 41), None);
        iv.end(r(40, 41));
        assert!(reader.changed(seq), "a reused slot counts for its new interval");
        assert!(!held[0].changed(0), "and not for the others");
    }
}
