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
//! | RELEASE                        | the mirror is going away: drop everything for it |
//! | DEVICE_RFAULT, DEVICE_WFAULT   | read the mirror entries and write them to the device (an IOMMU device walks the mirror table itself: flush only if `replaced`, i.e. an existing entry was upgraded) |
//!
//! When `update` returns, the device holds no translation of the range it
//! could use without faulting again; only then does HMM free table nodes
//! and the kernel reuse frames.

use crate::event::{Event, PteMask};
use crate::pt::{EntryLayout, Leaf, PageTable, TableMemory};
use crate::VaRange;
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
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

/// The device driver's side of HMM.
pub trait DeviceDriver: Send + Sync {
    /// See the module docs for the event → action table.
    fn update(&self, update: &Update);
}

/// A device registered with HMM.
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
    /// released — the driver hears RELEASE once per mirror with entries.
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

/// One device's mirror of one address space.
pub struct Mirror<L: EntryLayout, M: TableMemory> {
    id: MirrorId,
    pub(crate) device: Arc<Device>,
    pub(crate) table: Mutex<PageTable<L, M>>,
    pub(crate) alive: AtomicBool,
    /// Detaches it from its address space's mirror list.
    pub(crate) owner: Mutex<Option<Weak<dyn crate::mm::MirrorList>>>,
}

impl<L: EntryLayout, M: TableMemory> Mirror<L, M> {
    pub(crate) fn new(device: Arc<Device>, table: PageTable<L, M>) -> Self {
        Mirror { id: MirrorId(NEXT.fetch_add(1, Ordering::Relaxed)), device, table: Mutex::new(table), alive: AtomicBool::new(true), owner: Mutex::new(None) }
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
        self.range_dirty(VaRange::page_of(va).expect("user page")) > 0
    }

    /// `hmm_mirror_range_dirty`: the device wrote (writable) pages in `range`.
    /// Returns how many entries were marked.
    pub fn range_dirty(&self, range: VaRange) -> usize {
        let mut t = self.table.lock();
        let up = t.update(range, |_, l| Some(if l.write { Leaf { dirty: true, ..l } } else { l }));
        t.release(up.retired);
        up.changed
    }

    /// Apply `mask` to `range`, collect dirty pages, tell the driver.
    /// `skip_exclusive`: leave exclusive entries alone (their owner keeps
    /// them while others are write-protected). Returns how many entries were
    /// cleared, or `None` if nothing changed (the driver was not called).
    pub(crate) fn invalidate(&self, event: Event, range: VaRange, skip_exclusive: bool, dirty: &mut dyn FnMut(u64)) -> Option<usize> {
        let mask = event.mask();
        let mut t = self.table.lock();
        let up = t.update(range, |va, l| {
            if skip_exclusive && l.exclusive {
                return Some(l);
            }
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
}

impl<L: EntryLayout, M: TableMemory> Mirror<L, M> {
    /// Drop every entry (RELEASE), report what the device dirtied to the
    /// address space, and leave the address space's mirror list.
    fn release_once(&self) {
        if !self.alive.swap(false, Ordering::AcqRel) {
            return;
        }
        let owner = self.owner.lock().take().and_then(|w| w.upgrade());
        let all = VaRange::new(0, crate::USER_END).expect("user range");
        let mut dirty = Vec::new();
        self.invalidate(Event::Release, all, false, &mut |va| dirty.push(va));
        if let Some(o) = owner {
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
    /// The owner frees on drop: a mirror dropped while live is released
    /// (the driver hears RELEASE) before its table is freed.
    fn drop(&mut self) {
        self.release_once();
    }
}

/// A virtual address helper for tests and drivers.
pub fn va(addr: u64) -> VirtAddr {
    VirtAddr::new(addr)
}
