//! The edu accelerator as an HMM device: each of its contexts (one per bound
//! process) has a mirror whose table *is* that context's VT-d domain (IOVA
//! == process virtual address), so the update callback has one job — make
//! the IOTLB forget what HMM just changed, in that context's domain.
//!
//! The driver owns the mirror → domain-id map of its device, and knows which
//! context the device's context entry points at (`attached`). `detach` is
//! where it vouches (with `hmm::Detached`) that the device can no longer
//! walk a mirror's table, so HMM may free it: if the context entry still
//! points at that mirror, it is removed (context cache and IOTLB
//! invalidated) first; the domain id is given back exactly once — here, or
//! by `HmmAccel` through [`EduMirrorDriver::take`], whichever comes first.
//!
//! Locks: `state` is taken alone or before the IOMMU lock.

use crate::platform;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use devices::pci::Bdf;
use devices::vtd::DomainId;
use hmm::{Detached, DeviceDriver, Event, MirrorId, Update};
use spin::Mutex;

#[derive(Default)]
struct State {
    /// Each live context's mirror and its domain id.
    domains: Vec<(MirrorId, DomainId)>,
    /// The mirror the device's context entry points at.
    attached: Option<MirrorId>,
}

/// The driver of one edu.
pub struct EduMirrorDriver {
    bdf: Bdf,
    state: Mutex<State>,
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
    pub fn new(bdf: Bdf) -> Self {
        EduMirrorDriver { bdf, state: Mutex::new(State::default()), late_detaches: AtomicU64::new(0), iotlb_commands: AtomicU64::new(0), updates: AtomicU64::new(0), flushes: AtomicU64::new(0) }
    }

    /// A new context: `mirror`'s table is domain `did`.
    pub(super) fn add(&self, mirror: MirrorId, did: DomainId) {
        self.state.lock().domains.push((mirror, did));
    }

    /// Forget a context; returns its domain id and whether the device's
    /// context entry points at it (the caller detaches and frees), or
    /// `None` if `detach` already did.
    pub(super) fn take(&self, mirror: MirrorId) -> Option<(DomainId, bool)> {
        let mut s = self.state.lock();
        let i = s.domains.iter().position(|(m, _)| *m == mirror)?;
        let (_, did) = s.domains.swap_remove(i);
        let attached = s.attached == Some(mirror);
        if attached {
            s.attached = None;
        }
        Some((did, attached))
    }

    /// The device's context entry now points at `mirror`'s table.
    pub(super) fn set_attached(&self, mirror: Option<MirrorId>) {
        self.state.lock().attached = mirror;
    }

    /// The mirror the device's context entry points at.
    pub fn attached(&self) -> Option<MirrorId> {
        self.state.lock().attached
    }

    /// The domain id of `mirror`'s context.
    pub fn domain_of(&self, mirror: MirrorId) -> Option<DomainId> {
        self.state.lock().domains.iter().find(|(m, _)| *m == mirror).map(|(_, d)| *d)
    }
}

impl DeviceDriver for EduMirrorDriver {
    /// Event → action (see `hmm::mirror` for the full table): the entries
    /// were already rewritten in the table the IOMMU walks, so for every
    /// event that changed a valid entry — FORK, ISDIRTY, WRITE_PROTECT,
    /// MIGRATE, MUNMAP, RELEASE, or a fault that upgraded an entry — the
    /// IOTLB is invalidated for exactly the range, in that mirror's domain,
    /// before returning. A fault that only added entries needs nothing
    /// (CAP.CM = 0).
    fn update(&self, u: &Update) {
        self.updates.fetch_add(1, Ordering::Relaxed);
        let needs_flush = u.replaced || !matches!(u.event, Event::DeviceRfault | Event::DeviceWfault);
        if !needs_flush && log::max_level() < log::LevelFilter::Debug {
            return; // a fault that only added entries: nothing to look up
        }
        let did = self.domain_of(u.mirror);
        log::debug!("mirror.update did={} event={} range={:#x}..{:#x} replaced={} flush={}", did.map_or(0, |d| d.0), u.event, u.range.start(), u.range.end(), u.replaced, did.is_some() && needs_flush);
        let Some(did) = did else { return };
        if !needs_flush {
            return;
        }
        let Ok(p) = platform::init() else { return };
        match p.iommu.lock().invalidate_ranges(did, &[(u.range.start(), u.range.end())]) {
            Ok(r) => {
                self.flushes.fetch_add(1, Ordering::Relaxed);
                self.iotlb_commands.fetch_add(r.page_commands as u64 + r.domain_wide as u64, Ordering::Relaxed);
            }
            Err(e) => panic!("IOTLB invalidation failed: {e}: a device could keep a stale translation"),
        }
    }

    fn detach(&self, mirror: MirrorId) -> Option<Detached> {
        if let Some((did, attached)) = self.take(mirror) {
            self.late_detaches.fetch_add(1, Ordering::Relaxed);
            if let Ok(p) = platform::init() {
                let mut iommu = p.iommu.lock();
                if attached {
                    if let Err(e) = iommu.detach(self.bdf) {
                        // Without the detach the table cannot be vouched
                        // for: HMM then keeps (leaks) it rather than free it.
                        log::error!("detaching {} from mirror {mirror:?} failed: {e}: its table is kept", self.bdf);
                        return None;
                    }
                } else {
                    // Not in the context entry, but its translations may
                    // still be cached: drop them before the table goes.
                    let _ = iommu.invalidate_domain(did);
                }
                iommu.free_domain_id(did);
            }
        }
        // SAFETY: the device's context entry does not point at this
        // mirror's table: it never did, unbind removed it, or it was just
        // removed above — each with the context cache and IOTLB invalidated
        // (`Iommu::detach`, `Iommu::invalidate_domain`).
        Some(unsafe { Detached::new(mirror) })
    }
}
