//! The edu accelerator as an HMM device: its IOMMU domain *is* its
//! mirror's page table (IOVA == process virtual address), so the update
//! callback has one job — make the IOTLB forget what HMM just changed.

use crate::platform;
use core::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use devices::vtd::DomainId;
use hmm::{DeviceDriver, Event, Update};

/// The driver of one edu.
pub struct EduMirrorDriver {
    /// The domain id of the mirror currently attached (0 = none).
    domain: AtomicU16,
    /// IOTLB invalidation commands issued for HMM updates.
    pub iotlb_commands: AtomicU64,
    /// Updates received, and those that needed a flush.
    pub updates: AtomicU64,
    pub flushes: AtomicU64,
}

impl EduMirrorDriver {
    pub fn new() -> Self {
        EduMirrorDriver { domain: AtomicU16::new(0), iotlb_commands: AtomicU64::new(0), updates: AtomicU64::new(0), flushes: AtomicU64::new(0) }
    }

    pub(super) fn set_domain(&self, d: Option<DomainId>) {
        self.domain.store(d.map_or(0, |d| d.0), Ordering::SeqCst);
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
        log::debug!("mirror.update did={did} event={} range={:#x}..{:#x} replaced={} flush={}", u.event, u.range.start(), u.range.end(), u.replaced, did != 0 && needs_flush);
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
}
