//! Devices and mirrors.
//!
//! # Why each mirror has its own table
//!
//! (The seed patchset's answer.) Two devices mirroring the same address
//! may hold different things for it: one may have write access while the
//! other reads, one may hold the page exclusively (atomic access) while the
//! other must not touch it, and each reaches memory through its own DMA
//! addresses. One shared table could express none of that. So every
//! (device, address space) pair has a [`Mirror`] with its own page table —
//! and for an IOMMU-backed device that table *is* the device's table (the
//! VT-d second-level format), so mirroring costs no second copy.
//!
//! # The driver's update callback
//!
//! [`DeviceDriver::update`] is called with the event, the range and the
//! mask after HMM has rewritten the mirror's entries (`new = old & mask`):
//!
//! | event                          | driver action |
//! |--------------------------------|---------------|
//! | FORK, ISDIRTY, WRITE_PROTECT   | remove write permission from device PTEs (an IOMMU device: flush the IOTLB for the range); dirty state was reported by HMM before the entries changed |
//! | MIGRATE                        | make device PTEs invalid (flush); dirty reported; the range stays valid — new pages will back it and the device faults them in |
//! | MUNMAP                         | the same, and the driver may free its resources for the range |
//! | EXCLUSIVE                      | another device takes exclusive access: make device PTEs invalid (flush); the owner's own mirror is not called |
//! | RELEASE                        | the mirror is going away: drop everything for it (always called, even for a mirror with no user entries) |
//! | DEVICE_RFAULT, DEVICE_WFAULT   | read the mirror entries and write them to the device (an IOMMU device walks the mirror table itself: flush only if `replaced`, i.e. an existing entry was upgraded) |
//!
//! When `update` returns, the device holds no translation of the range it
//! could use without faulting again; only then does HMM free table nodes
//! and the kernel reuse frames.
//!
//! # Dropping a mirror's table
//!
//! The table is the device's own (its IOMMU walks it), so freeing it while
//! the device could still walk it would be a use-after-free by hardware.
//! A mirror's table is freed only against a [`Detached`] token, which only
//! the driver hands out ([`DeviceDriver::detach`], an `unsafe` promise):
//! without it the nodes are leaked, never freed early.

use crate::event::{Event, PteMask};
use crate::pt::{EntryLayout, Leaf, PageTable, TableMemory};
use crate::VaRange;
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use crate::mm::{DeviceFaultError, FaultOutcome};
use core::mem::ManuallyDrop;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use spin::Mutex;
use x86_64::VirtAddr;

/// Identifies a registered device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceId(pub u32);

/// Identifies a mirror.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MirrorId(pub u32);

static NEXT: AtomicU32 = AtomicU32::new(1);

/// What an update changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Update {
    pub mirror: MirrorId,
    pub event: Event,
    pub range: VaRange,
    pub mask: PteMask,
    /// Entries that were valid before were changed (an IOMMU must flush).
    pub replaced: bool,
}

/// The driver's word that a device can no longer reach a mirror's table:
/// no context entry points at it and no cached translation or
/// paging-structure entry of it survives. The mirror's table is freed only
/// against this token.
#[derive(Debug)]
pub struct Detached {
    mirror: MirrorId,
}

impl Detached {
    /// # Safety
    /// The device of `mirror` can no longer reach that mirror's table (it
    /// was never attached to it, or it was detached and its caches flushed).
    pub unsafe fn new(mirror: MirrorId) -> Detached {
        Detached { mirror }
    }

    pub fn mirror(&self) -> MirrorId {
        self.mirror
    }
}

/// The device driver's side of HMM.
pub trait DeviceDriver: Send + Sync {
    /// See the module docs for the event → action table.
    fn update(&self, update: &Update);
    /// The mirror's table is about to be freed: make sure the device can no
    /// longer reach it (detach it if it still is attached) and say so.
    /// `None`: the driver cannot vouch for it — the table is leaked, never
    /// freed under a device that may still walk it.
    fn detach(&self, mirror: MirrorId) -> Option<Detached>;
}

/// A registered device.
pub struct Device {
    id: DeviceId,
    pub(crate) driver: Arc<dyn DeviceDriver>,
    /// Its mirrors, to tear down on unregister.
    pub(crate) mirrors: Mutex<Vec<Weak<dyn MirrorControl>>>,
}

impl Device {
    /// Register a device (`hmm_device_register`).
    pub fn register(driver: Arc<dyn DeviceDriver>) -> Arc<Device> {
        Arc::new(Device { id: DeviceId(NEXT.fetch_add(1, Ordering::Relaxed)), driver, mirrors: Mutex::new(Vec::new()) })
    }

    pub fn id(&self) -> DeviceId {
        self.id
    }

    /// Unregister (`hmm_device_unregister`): every mirror of this device is
    /// released — the driver hears RELEASE once per mirror.
    pub fn unregister(&self) {
        let mirrors: Vec<_> = core::mem::take(&mut *self.mirrors.lock());
        for m in mirrors.iter().filter_map(|w| w.upgrade()) {
            m.release();
        }
    }
}

/// Teardown, type-erased (a device's mirrors may have different layouts).
pub(crate) trait MirrorControl: Send + Sync {
    fn release(&self);
}

/// A mirror's way back to the address space (`Mm`) that created it: the
/// only way to fault into a mirror, so a fault always runs under its own
/// address space's sequence counts.
pub(crate) trait MirrorOwner<L: EntryLayout, M: TableMemory>: Send + Sync {
    /// The mirror was released: leave the list, report what the device dirtied.
    fn detach(&self, id: MirrorId, dirty: &[u64]);
    /// Faults in flight on the mirror must not commit.
    fn released(&self, id: MirrorId);
    fn fault(&self, m: &Mirror<L, M>, addr: u64, pages: u64, write: bool, also: Option<VaRange>) -> Result<FaultOutcome, DeviceFaultError>;
    fn take_exclusive(&self, m: &Mirror<L, M>, range: VaRange) -> Result<(), DeviceFaultError>;
    fn snapshot(&self, m: &Mirror<L, M>, range: VaRange, f: &mut dyn FnMut(crate::snapshot::PageView)) -> Result<(), crate::mm::DeviceFaultKind>;
    fn mirror_present(&self, m: &Mirror<L, M>, range: VaRange, write: bool) -> Result<u64, DeviceFaultError>;
}

/// One device's mirror of one address space.
pub struct Mirror<L: EntryLayout, M: TableMemory> {
    id: MirrorId,
    pub(crate) device: Arc<Device>,
    /// Freed only in `Drop`, against the driver's [`Detached`].
    pub(crate) table: Mutex<ManuallyDrop<PageTable<L, M>>>,
    /// Written under the table lock: a commit that holds the lock and sees
    /// `true` finishes before the release clears the table.
    pub(crate) alive: AtomicBool,
    /// The address space that created it (set once: a fault reads it
    /// without a lock; after release a fault finds `alive` false).
    pub(crate) owner: Weak<dyn MirrorOwner<L, M>>,
    /// The most this mirror ever grants, whatever the CPU allows.
    access: MirrorAccess,
}

/// What a mirror may ever grant its device (a binding's permission): never
/// more than the CPU's, and never write for a read-only binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MirrorAccess {
    ReadOnly,
    ReadWrite,
}

impl<L: EntryLayout, M: TableMemory> Mirror<L, M> {
    pub(crate) fn new(device: Arc<Device>, table: PageTable<L, M>, access: MirrorAccess, owner: Weak<dyn MirrorOwner<L, M>>) -> Self {
        Mirror { id: MirrorId(NEXT.fetch_add(1, Ordering::Relaxed)), device, table: Mutex::new(ManuallyDrop::new(table)), alive: AtomicBool::new(true), owner, access }
    }

    /// The most this mirror grants.
    pub fn access(&self) -> MirrorAccess {
        self.access
    }

    /// Whether the device may only read through this mirror.
    pub fn read_only(&self) -> bool {
        self.access == MirrorAccess::ReadOnly
    }

    pub fn id(&self) -> MirrorId {
        self.id
    }

    pub fn device(&self) -> DeviceId {
        self.device.id()
    }

    /// Whether the mirror still mirrors (not released).
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    pub(crate) fn owner(&self) -> Option<Arc<dyn MirrorOwner<L, M>>> {
        // A released mirror has no owner to ask (as when it was cleared).
        if self.is_alive() { self.owner.upgrade() } else { None }
    }

    /// Resolve a device fault on `pages` pages from `addr`
    /// (`hmm_mirror_fault`), in this mirror's own address space: the pages
    /// are faulted in with CPU semantics and the device's access;
    /// neighbours up to the prefault window are mirrored from what the CPU
    /// already maps (see `Mm`). Fails with `Released` once released.
    pub fn fault(&self, addr: u64, pages: u64, write: bool) -> Result<FaultOutcome, DeviceFaultError> {
        self.fault_with(addr, pages, write, None)
    }

    /// [`Mirror::fault`], also mirroring — in the same round, under the
    /// same interval — every page of `also` the CPU already maps (nothing
    /// faulted in there; at most the CPU's access; at most
    /// `MAX_FAULT_PAGES`): a driver that knows the extent of the job that
    /// faulted resolves it in one round.
    pub fn fault_with(&self, addr: u64, pages: u64, write: bool, also: Option<VaRange>) -> Result<FaultOutcome, DeviceFaultError> {
        match self.owner() {
            Some(o) => o.fault(self, addr, pages, write, also),
            None => Err(DeviceFaultError { addr, write, kind: crate::mm::DeviceFaultKind::Released }),
        }
    }

    /// Give this mirror's device exclusive (atomic) access to `range`
    /// (`make_device_exclusive`): the CPU loses access first, then the
    /// device's entries are written. Any CPU access revokes it.
    pub fn take_exclusive(&self, range: VaRange) -> Result<(), DeviceFaultError> {
        match self.owner() {
            Some(o) => o.take_exclusive(self, range),
            None => Err(DeviceFaultError { addr: range.start(), write: true, kind: crate::mm::DeviceFaultKind::Released }),
        }
    }

    /// The table root (an IOMMU context entry points here).
    pub fn root(&self) -> x86_64::PhysAddr {
        self.table.lock().root()
    }

    /// The entry for page `va`.
    pub fn get(&self, va: u64) -> Option<Leaf> {
        let r = VaRange::page_of(va).ok()?;
        self.table.lock().get(r.start_addr())
    }

    /// Every entry in `range` (for snapshots and software devices).
    pub fn entries(&self, range: VaRange) -> Vec<(u64, Leaf)> {
        self.table.lock().iter(range).map(|(v, l)| (v.as_u64(), l)).collect()
    }

    /// Entries and table nodes (for statistics).
    pub fn size(&self) -> (usize, usize) {
        let t = self.table.lock();
        (t.leaves(), t.nodes())
    }

    /// Map a kernel-owned page for the device at `iova`, above the user
    /// half (`USER_END..2^48`): e.g. a bounce buffer. Invalidations cover
    /// user ranges only, so they never touch it; it goes with the table.
    pub fn map_private(&self, iova: u64, frame: x86_64::PhysAddr, write: bool) -> Result<(), crate::pt::OutOfTableMemory> {
        assert!((crate::USER_END..crate::pt::VA_END).contains(&iova) && iova.is_multiple_of(4096), "private device pages live above the user half");
        self.table.lock().set_iova(iova, Leaf { addr: frame, write, dirty: false, exclusive: false }).map(|_| ())
    }

    /// `hmm_pte_set_dirty`: the device wrote page `va`.
    pub fn set_dirty(&self, va: u64) -> bool {
        VaRange::page_of(va).is_ok_and(|r| self.range_dirty(r) > 0)
    }

    /// `hmm_mirror_range_dirty`: the device wrote (writable) pages in `range`.
    /// Returns how many entries were marked.
    pub fn range_dirty(&self, range: VaRange) -> usize {
        let mut t = self.table.lock();
        let up = t.update(range, |_, l| Some(if l.write { Leaf { dirty: true, ..l } } else { l }));
        t.release(up.retired);
        up.changed
    }

    /// Apply `event`'s mask to `range`, collect dirty pages, tell the
    /// driver. Returns how many entries were cleared, or `None` if nothing
    /// changed (the driver was not called).
    pub(crate) fn invalidate(&self, event: Event, range: VaRange, dirty: &mut dyn FnMut(u64)) -> Option<usize> {
        let mask = event.mask();
        let mut t = self.table.lock();
        let up = t.update(range, |va, l| {
            let loses_write = l.write && !(mask.valid && mask.write);
            if l.dirty && loses_write {
                dirty(va.as_u64());
            }
            if !mask.valid {
                return None;
            }
            Some(Leaf { write: l.write && mask.write, dirty: l.dirty && !loses_write, exclusive: l.exclusive && mask.write, ..l })
        });
        if up.changed == 0 && up.retired.is_empty() {
            return None;
        }
        // The driver flushes the device's view; only then are nodes freed.
        self.device.driver.update(&Update { mirror: self.id, event, range, mask, replaced: up.changed > 0 });
        t.release(up.retired);
        Some(up.cleared)
    }

    /// RELEASE, table part: under the table lock, mark the mirror dead,
    /// clear every user entry (dirty ones reported to `dirty`) and tell the
    /// driver — always, even if the table held only private entries.
    /// Returns false if it was already released.
    pub(crate) fn release_table(&self, dirty: &mut dyn FnMut(u64)) -> bool {
        let mut t = self.table.lock();
        if !self.alive.swap(false, Ordering::AcqRel) {
            return false;
        }
        let all = VaRange::new(0, crate::USER_END).expect("user range");
        let up = t.update(all, |va, l| {
            if l.dirty {
                dirty(va.as_u64());
            }
            None
        });
        let event = Event::Release;
        self.device.driver.update(&Update { mirror: self.id, event, range: all, mask: event.mask(), replaced: up.changed > 0 });
        t.release(up.retired);
        true
    }

    /// Release and leave the address space (reporting dirty pages to it).
    fn release_once(&self) {
        let mut dirty = Vec::new();
        if !self.release_table(&mut |va| dirty.push(va)) {
            return;
        }
        // Once: only the call that cleared `alive` gets here.
        if let Some(o) = self.owner.upgrade() {
            o.released(self.id);
            o.detach(self.id, &dirty);
        }
    }
}

impl<L: EntryLayout + Send + Sync, M: TableMemory + Send + Sync> MirrorControl for Mirror<L, M> {
    fn release(&self) {
        self.release_once();
    }
}

impl<L: EntryLayout, M: TableMemory> Drop for Mirror<L, M> {
    /// A mirror dropped while live is released first (the driver hears
    /// RELEASE); then the driver must say the device is detached before
    /// the table is freed. A token for another mirror leaks the table.
    fn drop(&mut self) {
        self.release_once();
        match self.device.driver.detach(self.id) {
            Some(proof) if proof.mirror == self.id => {
                // SAFETY: dropped once, here; the driver vouched (`Detached`)
                // that no device reaches the table any more.
                unsafe { ManuallyDrop::drop(self.table.get_mut()) };
            }
            other => log::error!("mirror {:?}: the driver did not vouch for its detachment ({other:?}); its table is leaked, not freed", self.id),
        }
    }
}

/// A virtual address helper for tests and drivers.
pub fn va(addr: u64) -> VirtAddr {
    VirtAddr::new(addr)
}
