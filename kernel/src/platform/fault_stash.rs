//! IOMMU fault records that one device's transfer drained but another
//! device owns.
//!
//! The IOMMU has one fault record (NFR = 1) shared by every device, and a
//! transfer reads and clears it when it completes. With more than one CPU,
//! two transfers (accel0 and accel1, or an accelerator and the disk) finish
//! at the same time and the first to look drains both devices' records. A
//! record for another source is put here instead of being dropped, and
//! every transfer claims its own source's record from here as well as from
//! the hardware — otherwise the other transfer would see no fault and
//! report success for a DMA that read zeros.
//!
//! Lost records (the IOMMU sets its overflow flag when a fault comes while
//! the record is full — "primary fault overflow") are announced the same
//! way: whoever drains the flag bumps [`overflows`], and a transfer that
//! saw it move while it ran cannot prove it was clean.
//!
//! Bounded: at most [`SLOTS`] records wait (the oldest is dropped, with a
//! warning, if more come). Locking: one spin lock, a leaf taken with no
//! other lock held and never in an interrupt handler.

use devices::pci::Bdf;
use devices::vtd::FaultRecord;
use core::sync::atomic::{AtomicU64, Ordering};
use spin::Mutex;

static OVERFLOWS: AtomicU64 = AtomicU64::new(0);

/// How many drains found the overflow flag set (records were lost).
pub fn overflows() -> u64 {
    OVERFLOWS.load(Ordering::SeqCst)
}

/// A drain found the overflow flag set.
pub fn note_overflow() {
    OVERFLOWS.fetch_add(1, Ordering::SeqCst);
}

/// Records that can wait for their owner.
pub const SLOTS: usize = 8;

static STASH: Mutex<([Option<FaultRecord>; SLOTS], usize)> = Mutex::new(([None; SLOTS], 0));

/// Keep `rec` for its source's next check.
pub fn stash(rec: FaultRecord) {
    let mut s = STASH.lock();
    let (slots, next) = &mut *s;
    if let Some(free) = slots.iter_mut().find(|r| r.is_none()) {
        *free = Some(rec);
        return;
    }
    let at = *next % SLOTS;
    log::warn!("IOMMU fault stash full: dropping {}", slots[at].map(|r| alloc::format!("{r}")).unwrap_or_default());
    slots[at] = Some(rec);
    *next = next.wrapping_add(1);
}

/// Take every stashed record of `source`; the first is returned.
pub fn claim(source: Bdf) -> Option<FaultRecord> {
    let mut s = STASH.lock();
    let mut first = None;
    for slot in s.0.iter_mut() {
        if slot.is_some_and(|r| r.source == source) {
            let r = slot.take();
            first = first.or(r);
        }
    }
    first
}
