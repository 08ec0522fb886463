//! HMM's state for one address space: its mirrors, the per-interval
//! sequence counts, invalidation. Device faults and exclusive access are in
//! [`crate::fault`].
//!
//! # Lock order
//!
//! ```text
//!  address-space lock (kernel)  →  Mm::mirrors  →  Mirror::table  →  (driver: IOMMU)
//!  Mm::intervals is a leaf lock (nothing is taken under it); a mirror's owner
//!  (its Mm) is set once at creation and read without a lock
//! ```
//!
//! Invalidations arrive with the address-space lock held (from the kernel's
//! notifier) and take the others. The fault path holds no HMM lock when it
//! calls into the address space; the space hands pages to its commit under
//! its own lock, and the commit takes `Mirror::table` (then the driver's) —
//! the same order, never reversed.
//!
//! # The retry protocol (Linux's `mmu_interval_read_begin` / `read_retry`)
//!
//! Per interval (see the `interval` module): a fault registers its window;
//! an invalidation bumps the count of every overlapping interval before it
//! touches any mirror table; the fault waits for overlapping invalidations
//! in progress before doing any work, and commits only if its count is
//! unchanged *while it holds the mirror's table lock* (and the mirror is
//! alive: release clears `alive` under the same lock). Either the fault
//! commits first (and the invalidation then removes the entries) or it
//! sees the bump and retries. So no entry survives an invalidation that
//! has returned, and no entry is built from a translation the CPU side has
//! since changed.

use crate::cpu::{CpuFaultError, MirroredSpace};
use crate::event::Event;
use crate::interval::Intervals;
use crate::mirror::{Device, DeviceId, Mirror, MirrorControl, MirrorId, MirrorOwner};
use crate::pt::{EntryLayout, OutOfTableMemory, PageTable, TableMemory};
use crate::VaRange;
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};
use spin::Mutex;

/// Counters.
#[derive(Debug, Default)]
pub struct Stats {
    pub faults: AtomicU64,
    pub retries: AtomicU64,
    pub invalidations: AtomicU64,
    pub driver_updates: AtomicU64,
    pub pages_mirrored: AtomicU64,
    pub pages_invalidated: AtomicU64,
}

/// A snapshot of [`Stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub faults: u64,
    pub retries: u64,
    pub invalidations: u64,
    pub driver_updates: u64,
    pub pages_mirrored: u64,
    pub pages_invalidated: u64,
}

/// A device fault that could not be resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceFaultError {
    pub addr: u64,
    pub write: bool,
    pub kind: DeviceFaultKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceFaultKind {
    /// The CPU side refused (no mapping, protection, memory).
    Cpu(CpuFaultError),
    /// The mirror was released (device unregistered or process exited).
    Released,
    /// Invalidations kept racing the fault (or one in progress did not end).
    TooManyRetries,
    NoTableMemory,
    /// More pages than one fault may cover ([`MAX_FAULT_PAGES`]), or a
    /// range that is not a user range.
    BadRange,
    /// A write (or exclusive access) through a read-only mirror.
    ReadOnly,
}

impl fmt::Display for DeviceFaultError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let access = if self.write { "write" } else { "read" };
        match self.kind {
            DeviceFaultKind::Cpu(e) => write!(f, "device {access} at {:#x}: {e}", self.addr),
            DeviceFaultKind::Released => write!(f, "device {access} at {:#x}: the mirror was released", self.addr),
            DeviceFaultKind::TooManyRetries => write!(f, "device {access} at {:#x}: invalidations kept racing the fault", self.addr),
            DeviceFaultKind::NoTableMemory => write!(f, "device {access} at {:#x}: no memory for the mirror table", self.addr),
            DeviceFaultKind::BadRange => write!(f, "device {access} at {:#x}: not a user range of at most {MAX_FAULT_PAGES} pages", self.addr),
            DeviceFaultKind::ReadOnly => write!(f, "device {access} at {:#x}: the device's binding is read-only", self.addr),
        }
    }
}

/// What a resolved fault did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultOutcome {
    /// Entries written into the mirror (new or changed; the faulting
    /// pages and prefaulted neighbours).
    pub pages: u64,
    pub retries: u64,
}

/// The most pages one fault or exclusive request may cover (its work is
/// proportional to it).
pub const MAX_FAULT_PAGES: u64 = 4096;

/// What prefault does with the neighbours of a faulting page.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PrefaultPolicy {
    /// Mirror what the CPU already maps, with at most the CPU's access;
    /// never allocate, COW-break, swap in or dirty (the default, like
    /// Linux's `hmm_range_fault` for pages not asked for).
    #[default]
    Mirror,
    /// Also read-fault absent neighbours in (demand-zero, swap-in) — a
    /// populating prefetch like UVM's; still never COW-breaks or dirties.
    Populate,
}
/// How many pages a device fault populates by default: the faulting page's
/// naturally aligned window of this many pages, within the mapping (Linux's
/// HMM leaves this to the driver; `Mm::set_prefault` changes it, 1 = off).
/// The demo, the benchmarks, the tests and the README all speak of this one
/// number.
pub const DEFAULT_PREFAULT_PAGES: u64 = 16;


/// HMM for one address space, for mirrors with entry layout `L`.
pub struct Mm<L: EntryLayout, M: TableMemory, S: MirroredSpace> {
    pub(crate) space: Weak<S>,
    pub(crate) intervals: Intervals,
    mirrors: Mutex<Vec<Arc<Mirror<L, M>>>>,
    /// Prefault window in pages (1 = only the faulting pages).
    prefault: AtomicU64,
    /// 0 = `Mirror`, 1 = `Populate`.
    policy: core::sync::atomic::AtomicU8,
    pub(crate) stats: Stats,
}

impl<L, M, S> Mm<L, M, S>
where
    L: EntryLayout + Send + Sync + 'static,
    M: TableMemory + Send + Sync + 'static,
    S: MirroredSpace + 'static,
{
    pub fn new(space: Weak<S>) -> Arc<Self> {
        Arc::new(Mm { space, intervals: Intervals::default(), mirrors: Mutex::new(Vec::new()), prefault: AtomicU64::new(DEFAULT_PREFAULT_PAGES), policy: core::sync::atomic::AtomicU8::new(0), stats: Stats::default() })
    }

    /// Mirror this address space into `device`, with a table on `mem`.
    pub fn mirror(self: &Arc<Self>, device: &Arc<Device>, mem: M) -> Result<Arc<Mirror<L, M>>, OutOfTableMemory> {
        self.mirror_with(device, mem, crate::mirror::MirrorAccess::ReadWrite)
    }

    /// A mirror that never grants more than `access` (a read-only binding:
    /// device writes fail, entries are never writable).
    pub fn mirror_with(self: &Arc<Self>, device: &Arc<Device>, mem: M, access: crate::mirror::MirrorAccess) -> Result<Arc<Mirror<L, M>>, OutOfTableMemory> {
        let me: Arc<dyn MirrorOwner<L, M>> = self.clone();
        let m = Arc::new(Mirror::new(device.clone(), PageTable::new(mem)?, access, Arc::downgrade(&me)));
        let ctl: Arc<dyn MirrorControl> = m.clone();
        device.mirrors.lock().push(Arc::downgrade(&ctl));
        self.mirrors.lock().push(m.clone());
        Ok(m)
    }

    /// Stop mirroring (`hmm_mirror_unregister`): RELEASE, dirty reported.
    pub fn unmirror(&self, m: &Arc<Mirror<L, M>>) {
        MirrorControl::release(&**m);
    }

    /// The live mirrors.
    pub fn mirrors(&self) -> Vec<Arc<Mirror<L, M>>> {
        self.mirrors.lock().clone()
    }

    /// Prefault window, in pages (1 disables prefault).
    pub fn set_prefault(&self, pages: u64) {
        self.prefault.store(pages.clamp(1, MAX_FAULT_PAGES), Ordering::Relaxed);
    }

    pub fn prefault(&self) -> u64 {
        self.prefault.load(Ordering::Relaxed)
    }

    pub fn set_prefault_policy(&self, p: PrefaultPolicy) {
        self.policy.store(matches!(p, PrefaultPolicy::Populate) as u8, Ordering::Relaxed);
    }

    pub fn prefault_policy(&self) -> PrefaultPolicy {
        if self.policy.load(Ordering::Relaxed) == 1 { PrefaultPolicy::Populate } else { PrefaultPolicy::Mirror }
    }

    pub fn stats(&self) -> StatsSnapshot {
        let s = &self.stats;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            faults: l(&s.faults),
            retries: l(&s.retries),
            invalidations: l(&s.invalidations),
            driver_updates: l(&s.driver_updates),
            pages_mirrored: l(&s.pages_mirrored),
            pages_invalidated: l(&s.pages_invalidated),
        }
    }

    /// The CPU side is about to change `range`. Rewrites every mirror's
    /// entries per `event` and has each driver flush. Returns the pages the
    /// devices dirtied, which the caller (holding its own lock) marks dirty
    /// before the change. `owner`: for `Event::Exclusive`, the device
    /// taking exclusive access — its mirrors and its faults in flight are
    /// left alone (`MMU_NOTIFY_EXCLUSIVE` with an owner).
    pub fn invalidate_start(&self, range: VaRange, event: Event, owner: Option<DeviceId>) -> Vec<u64> {
        let mut dirty = Vec::new();
        self.invalidate_start_with(range, event, owner, &mut |va| dirty.push(va));
        dirty
    }

    /// [`Mm::invalidate_start`] reporting device-dirty pages to `dirty`
    /// instead of collecting them: nothing is allocated for them (the
    /// kernel calls this under its address-space lock).
    pub fn invalidate_start_with(&self, range: VaRange, event: Event, owner: Option<DeviceId>, dirty: &mut dyn FnMut(u64)) {
        let owner = owner.filter(|_| event == Event::Exclusive);
        self.intervals.start(range, owner);
        self.stats.invalidations.fetch_add(1, Ordering::Relaxed);
        if event == Event::Release {
            // The address space is going away: every mirror dies with it.
            let all = core::mem::take(&mut *self.mirrors.lock());
            for m in all {
                if m.release_table(dirty) {
                    self.stats.driver_updates.fetch_add(1, Ordering::Relaxed);
                }
                self.intervals.release(m.id());
            }
            return;
        }
        let mirrors = self.mirrors.lock();
        for m in mirrors.iter().filter(|m| Some(m.device()) != owner) {
            if let Some(cleared) = m.invalidate(event, range, dirty) {
                self.stats.driver_updates.fetch_add(1, Ordering::Relaxed);
                self.stats.pages_invalidated.fetch_add(cleared as u64, Ordering::Relaxed);
            }
        }
    }

    /// The change is complete.
    pub fn invalidate_end(&self, range: VaRange, _event: Event) {
        self.intervals.end(range);
    }
}

impl<L, M, S> MirrorOwner<L, M> for Mm<L, M, S>
where
    L: EntryLayout + Send + Sync + 'static,
    M: TableMemory + Send + Sync + 'static,
    S: MirroredSpace + 'static,
{
    fn detach(&self, id: MirrorId, dirty: &[u64]) {
        self.mirrors.lock().retain(|m| m.id() != id);
        if let Some(space) = self.space.upgrade() {
            for &va in dirty {
                space.set_dirty(va);
            }
        }
    }

    fn released(&self, id: MirrorId) {
        self.intervals.release(id);
    }

    fn fault(&self, m: &Mirror<L, M>, addr: u64, pages: u64, write: bool, also: Option<VaRange>) -> Result<FaultOutcome, DeviceFaultError> {
        self.fault_mirror(m, addr, pages, write, also)
    }

    fn take_exclusive(&self, m: &Mirror<L, M>, range: VaRange) -> Result<(), DeviceFaultError> {
        self.exclusive(m, range)
    }

    fn snapshot(&self, m: &Mirror<L, M>, range: VaRange, f: &mut dyn FnMut(crate::snapshot::PageView)) -> Result<(), DeviceFaultKind> {
        self.snapshot_mirror(m, range, f)
    }

    fn mirror_present(&self, m: &Mirror<L, M>, range: VaRange, write: bool) -> Result<u64, DeviceFaultError> {
        self.mirror_present_in(m, range, write)
    }
}
