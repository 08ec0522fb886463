//! Fault records sorted by requester, so concurrent transfers on different
//! devices each get their own fault.
//!
//! The IOMMU has one set of fault records for every device behind it.
//! While one device's transfer waits for its interrupt, another device's
//! transfer may fault; whoever reads the records next reads both. Reading
//! a record clears it, so a record meant for another device must not be
//! dropped: the reader *parks* it here and the owner claims it after its
//! own transfer — otherwise that transfer would look clean and its job
//! would succeed with data the device never moved.
//!
//! ```text
//!  hardware records ──drain──► parked [(source, record)]  (fixed, 16)
//!                               │
//!  device D's transfer ends ──► claim(D): D's first parked record ─► Fault
//!                               else lost-generation moved since D last
//!                               looked ─► Lost (cannot prove clean)
//!                               else ─► Clean
//! ```
//!
//! Records are lost when the hardware's records overflow or the parking
//! space is full: both bump one generation, and every device's next claim
//! reports `Lost` once — a conservative answer (the caller treats it as a
//! fault and retries), never a false "clean".

use super::FaultRecord;
use crate::pci::Bdf;

/// Records waiting for their device (a transfer stops at its first fault,
/// so a few per device at most).
const PARKED: usize = 16;
/// Devices whose last-seen loss generation is remembered.
const SOURCES: usize = 16;

/// What a device's finished transfer learns from the fault records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultClaim {
    /// No fault was recorded for this device.
    Clean,
    /// The first fault recorded for this device.
    Fault(FaultRecord),
    /// Records were lost since this device last looked: its transfer may
    /// have faulted unseen.
    Lost,
}

#[derive(Debug, Default)]
pub(super) struct Mailbox {
    parked: [Option<FaultRecord>; PARKED],
    /// Bumped whenever records were lost (hardware overflow, parking full).
    lost: u64,
    /// Per device: the loss generation it last saw.
    seen: [Option<(Bdf, u64)>; SOURCES],
}

impl Mailbox {
    /// Keep `rec` for its device.
    pub(super) fn park(&mut self, rec: FaultRecord) {
        match self.parked.iter_mut().find(|p| p.is_none()) {
            Some(slot) => *slot = Some(rec),
            None => self.lost += 1,
        }
    }

    /// The hardware dropped records.
    pub(super) fn overflowed(&mut self) {
        self.lost += 1;
    }

    /// Take every record parked for `source`: (the first one, how many).
    pub(super) fn take(&mut self, source: Bdf) -> (Option<FaultRecord>, usize) {
        let (mut first, mut n) = (None, 0);
        for slot in self.parked.iter_mut() {
            if slot.is_some_and(|r| r.source == source) {
                let r = slot.take();
                first = first.or(r);
                n += 1;
            }
        }
        (first, n)
    }

    /// Whether records were lost since `source` last asked (and note that it asked now).
    pub(super) fn lost_since_last(&mut self, source: Bdf) -> bool {
        let now = self.lost;
        if let Some((_, seen)) = self.seen.iter_mut().flatten().find(|(s, _)| *s == source) {
            let lost = *seen != now;
            *seen = now;
            return lost;
        }
        match self.seen.iter_mut().find(|s| s.is_none()) {
            Some(slot) => {
                // First time: losses before it had a transfer are not its own.
                *slot = Some((source, now));
                false
            }
            // Too many devices to remember: never claim clean after a loss.
            None => now != 0,
        }
    }

    /// Whether nothing is parked (the common case).
    pub(super) fn is_empty(&self) -> bool {
        self.parked.iter().all(Option::is_none)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vtd::Access;

    fn rec(dev: u8, addr: u64) -> FaultRecord {
        FaultRecord { addr, access: Access::Read, reason: 6, source: Bdf::new(0, dev, 0) }
    }

    #[test]
    fn each_device_claims_only_its_own_records() {
        let mut m = Mailbox::default();
        m.park(rec(1, 0x1000));
        m.park(rec(2, 0x2000));
        m.park(rec(1, 0x3000));
        assert_eq!(m.take(Bdf::new(0, 2, 0)), (Some(rec(2, 0x2000)), 1));
        assert_eq!(m.take(Bdf::new(0, 2, 0)), (None, 0));
        assert_eq!(m.take(Bdf::new(0, 1, 0)), (Some(rec(1, 0x1000)), 2), "the first fault of the transfer");
        assert!(m.is_empty());
    }

    #[test]
    fn a_loss_is_reported_once_to_every_device() {
        let mut m = Mailbox::default();
        let (a, b) = (Bdf::new(0, 1, 0), Bdf::new(0, 2, 0));
        assert!(!m.lost_since_last(a) && !m.lost_since_last(b));
        m.overflowed();
        assert!(m.lost_since_last(a) && m.lost_since_last(b));
        assert!(!m.lost_since_last(a) && !m.lost_since_last(b));
        for k in 0..PARKED as u64 + 1 {
            m.park(rec(3, k * 0x1000));
        }
        assert!(m.lost_since_last(a), "parking full loses a record");
    }
}
