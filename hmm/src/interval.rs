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
//! Lock: `Intervals::state` is a leaf lock (nothing is taken under it).

use crate::mirror::{DeviceId, MirrorId};
use crate::VaRange;
use alloc::vec::Vec;
use spin::Mutex;

/// How long `begin` waits for an overlapping invalidation to end before
/// giving up (an invalidation can only be "in progress" for a fault on
/// another CPU, or for a fault started from inside that invalidation,
/// which would wait forever).
const WAIT_SPINS: u64 = 1 << 26;

#[derive(Clone, Copy, Debug)]
struct Interval {
    id: u64,
    mirror: MirrorId,
    device: DeviceId,
    range: VaRange,
    seq: u64,
}

struct State {
    next: u64,
    readers: Vec<Interval>,
    /// Invalidations between start and end (a multiset).
    active: Vec<VaRange>,
}

impl Default for State {
    /// Room for the usual nesting up front: the invalidation path (under
    /// the kernel's address-space lock) then pushes without allocating.
    fn default() -> Self {
        State { next: 0, readers: Vec::with_capacity(4), active: Vec::with_capacity(4) }
    }
}

/// The intervals of one address space.
#[derive(Default)]
pub(crate) struct Intervals {
    state: Mutex<State>,
}

/// An overlapping invalidation did not end in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StillInvalidating;

impl Intervals {
    /// Register `range` for a fault of `mirror` (of `device`).
    pub fn register(&self, mirror: MirrorId, device: DeviceId, range: VaRange) -> Reader<'_> {
        let mut s = self.state.lock();
        s.next += 1;
        let id = s.next;
        s.readers.push(Interval { id, mirror, device, range, seq: 0 });
        Reader { owner: self, id, range }
    }

    /// An invalidation of `range` starts: bump every overlapping interval
    /// except those of `exempt` (the device taking exclusive access).
    pub fn start(&self, range: VaRange, exempt: Option<DeviceId>) {
        let mut s = self.state.lock();
        s.active.push(range);
        for r in s.readers.iter_mut() {
            if r.range.overlaps(&range) && Some(r.device) != exempt {
                r.seq += 1;
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
        let mut s = self.state.lock();
        for r in s.readers.iter_mut().filter(|r| r.mirror == mirror) {
            r.seq += 1;
        }
    }

    fn seq(&self, id: u64) -> u64 {
        self.state.lock().readers.iter().find(|r| r.id == id).map_or(u64::MAX, |r| r.seq)
    }
}

/// A registered interval; unregistered when dropped.
pub(crate) struct Reader<'a> {
    owner: &'a Intervals,
    id: u64,
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
                    return Ok(s.readers.iter().find(|r| r.id == self.id).map_or(u64::MAX, |r| r.seq));
                }
            }
            core::hint::spin_loop();
        }
        Err(StillInvalidating)
    }

    /// `mmu_interval_read_retry`: whether an overlapping invalidation (or
    /// the mirror's release) started since `begin` returned `seq`.
    pub fn changed(&self, seq: u64) -> bool {
        self.owner.seq(self.id) != seq
    }
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        let mut s = self.owner.state.lock();
        if let Some(i) = s.readers.iter().position(|r| r.id == self.id) {
            s.readers.swap_remove(i);
        }
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
        let reader = iv.register(MirrorId(1), DeviceId(1), r(16, 32));
        let seq = reader.begin().unwrap();
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
        let reader = iv.register(MirrorId(1), DeviceId(1), r(0, 4));
        iv.start(r(100, 101), None);
        assert!(reader.begin().is_ok(), "a disjoint invalidation in progress does not block");
        iv.start(r(2, 3), None);
        // Nested in the same thread it can never end: begin gives up.
        assert_eq!(reader.begin_within(1000), Err(StillInvalidating));
        iv.end(r(2, 3));
        assert!(reader.begin().is_ok());
        drop(reader);
        assert!(iv.state.lock().readers.is_empty(), "unregistered on drop");
    }
}
