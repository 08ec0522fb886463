//! The edu accelerator as an HMM device: its IOMMU domain *is* its
//! mirror's page table (IOVA == process virtual address), so the update
//! callback has one job — make the IOTLB forget what HMM just changed.
//!
//! `detach` is where the driver vouches (with `hmm::Detached`) that the
//! device can no longer walk a mirror's table, so HMM may free it: if the
//! device's context entry still points at that mirror, it is removed (and
//! the context cache and IOTLB invalidated) first.
//!
//! Locks: `attached` is taken alone or before the IOMMU lock.

use crate::platform;
use core::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use devices::pci::Bdf;
use devices::vtd::DomainId;
use hmm::{Detached, DeviceDriver, Event, MirrorId, Update};
use spin::Mutex;

/// The driver of one edu.
pub struct EduMirrorDriver {
    /// The domain id of the mirror currently attached (0 = none).
    domain: AtomicU16,
    /// The mirror the device's context entry points at, and the device.
    attached: Mutex<Option<(MirrorId, Bdf)>>,
    /// Mirrors whose table was freed while the device still pointed at it
    /// (detached here first): should stay 0 — unbind detaches before.
    pub late_detaches: AtomicU64,
    /// IOTLB invalidation commands issued for HMM updates.
    pub iotlb_commands: AtomicU64,
    /// Updates received, and those that needed a flush.
    pub updates: AtomicU64,
    pub flushes: AtomicU64,
}

impl EduMirrorDriver {
    pub fn new() -> Self {
        EduMirrorDriver { domain: AtomicU16::new(0), attached: Mutex::new(None), late_detaches: AtomicU64::new(0), iotlb_commands: AtomicU64::new(0), updates: AtomicU64::new(0), flushes: AtomicU64::new(0) }
    }

    pub(super) fn set_domain(&self, d: Option<DomainId>) {
        self.domain.store(d.map_or(0, |d| d.0), Ordering::SeqCst);
        if d.is_none() {
            *self.attached.lock() = None;
        }
    }

    /// The device's context entry now points at `mirror`'s table.
    pub(super) fn set_attached(&self, mirror: MirrorId, bdf: Bdf) {
        *self.attached.lock() = Some((mirror, bdf));
    }
}

impl Default for EduMirrorDriver {
    fn default() -> Self {
        Self::new()
    }
}

impl DeviceDriver for EduMirrorDriver {
    /// Event → action (see `hmm::mirror` for the full table): the entries
    /// were already rewritten in the table the IOMMU walks, so for every
    /// event that changed a valid entry — FORK, ISDIRTY, WRITE_PROTECT,
    /// MIGRATE, MUNMAP, RELEASE, or a fault that upgraded an entry — the
    /// IOTLB is invalidated for exactly the range (page-selective with
    /// address masks, domain-wide beyond the threshold) before returning.
    /// A fault that only added entries needs nothing (CAP.CM = 0).
    fn update(&self, u: &Update) {
        self.updates.fetch_add(1, Ordering::Relaxed);
        let did = self.domain.load(Ordering::SeqCst);
        let needs_flush = u.replaced || !matches!(u.event, Event::DeviceRfault | Event::DeviceWfault);
        if did == 0 || !needs_flush {
            return;
        }
        let Ok(p) = platform::init() else { return };
        match p.iommu.lock().invalidate_ranges(DomainId(did), &[(u.range.start(), u.range.end())]) {
            Ok(r) => {
                self.flushes.fetch_add(1, Ordering::Relaxed);
                self.iotlb_commands.fetch_add(r.page_commands as u64 + r.domain_wide as u64, Ordering::Relaxed);
            }
            Err(e) => panic!("IOTLB invalidation failed: {e}: a device could keep a stale translation"),
        }
    }

    fn detach(&self, mirror: MirrorId) -> Option<Detached> {
        let mut attached = self.attached.lock();
        if let Some((_, bdf)) = attached.take_if(|(m, _)| *m == mirror) {
            self.late_detaches.fetch_add(1, Ordering::Relaxed);
            let did = self.domain.swap(0, Ordering::SeqCst);
            let p = platform::init().ok()?;
            let mut iommu = p.iommu.lock();
            if let Err(e) = iommu.detach(bdf) {
                log::error!("detaching {bdf:?} from mirror {mirror:?} failed: {e}: its table is kept");
                return None;
            }
            if did != 0 {
                iommu.free_domain_id(DomainId(did));
            }
        }
        // SAFETY: the device's context entry does not point at this
        // mirror's table: it never did, unbind removed it, or it was just
        // removed above — each with the context cache and IOTLB invalidated
        // (`Iommu::detach`).
        Some(unsafe { Detached::new(mirror) })
    }
}
