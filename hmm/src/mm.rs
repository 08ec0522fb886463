//! HMM's state for one address space: its mirrors, the invalidation
//! sequence count, device faults.
//!
//! # Lock order
//!
//! ```text
//!  address-space lock (kernel)  →  Mm::mirrors  →  Mirror::table
//! ```
//!
//! Invalidations arrive with the address-space lock held (from the kernel's
//! notifier) and take the other two. The fault path takes no HMM lock while
//! it calls into the address space, and takes `Mirror::table` alone to
//! commit — so the order is never reversed.
//!
//! # The retry protocol (Linux's `mmu_interval_read_begin` / `read_retry`)
//!
//! ```text
//!  device fault                                invalidation (CPU side)
//!  ────────────                                ───────────────────────
//!  seq0 = read_begin()                         seq += 1   (start: odd)
//!  for each page: space.fault_in()  ◄── may     for each mirror: lock table,
//!     (no HMM lock held)                trigger     apply mask, driver.update
//!  lock mirror table                            (IOTLB flushed), unlock
//!  if seq != seq0: unlock, retry ──────────────seq += 1   (end: even)
//!  populate entries, unlock
//! ```
//!
//! An invalidation that overlaps the fault bumps `seq` before it touches
//! any mirror; the fault commits only if `seq` is unchanged *while it holds
//! the mirror lock*, and an invalidation needs that lock to apply. Either
//! the fault commits first (and the invalidation then removes the entries)
//! or it sees the bump and retries. So no entry survives an invalidation
//! that has returned, and no entry is built from a translation the CPU side
//! has since changed.

use crate::cpu::{CpuFaultError, MirroredSpace};
use crate::event::Event;
use crate::mirror::{Device, Mirror, MirrorControl, MirrorId, Update};
use crate::pt::{EntryLayout, Leaf, OutOfTableMemory, PageTable, TableMemory};
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
    /// Invalidations kept racing the fault.
    TooManyRetries,
    NoTableMemory,
}

impl fmt::Display for DeviceFaultError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let access = if self.write { "write" } else { "read" };
        match self.kind {
            DeviceFaultKind::Cpu(e) => write!(f, "device {access} at {:#x}: {e}", self.addr),
            DeviceFaultKind::Released => write!(f, "device {access} at {:#x}: the mirror was released", self.addr),
            DeviceFaultKind::TooManyRetries => write!(f, "device {access} at {:#x}: invalidations kept racing the fault", self.addr),
            DeviceFaultKind::NoTableMemory => write!(f, "device {access} at {:#x}: no memory for the mirror table", self.addr),
        }
    }
}

/// What a resolved fault did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultOutcome {
    /// Pages written into the mirror (the faulting ones and prefaulted ones).
    pub pages: u64,
    pub retries: u64,
}

const MAX_RETRIES: u64 = 64;

/// The mirrors' way back to their address space.
pub(crate) trait MirrorList: Send + Sync {
    fn detach(&self, id: MirrorId, dirty: &[u64]);
}

/// HMM for one address space, for mirrors with entry layout `L`.
pub struct Mm<L: EntryLayout, M: TableMemory, S: MirroredSpace> {
    space: Weak<S>,
    seq: AtomicU64,
    mirrors: Mutex<Vec<Arc<Mirror<L, M>>>>,
    /// Prefault window in pages (1 = only the faulting pages).
    prefault: AtomicU64,
    stats: Stats,
}

impl<L, M, S> Mm<L, M, S>
where
    L: EntryLayout + Send + Sync + 'static,
    M: TableMemory + Send + Sync + 'static,
    S: MirroredSpace + 'static,
{
    pub fn new(space: Weak<S>) -> Arc<Self> {
        Arc::new(Mm { space, seq: AtomicU64::new(0), mirrors: Mutex::new(Vec::new()), prefault: AtomicU64::new(16), stats: Stats::default() })
    }

    /// Mirror this address space into `device`, with a table on `mem`.
    pub fn mirror(self: &Arc<Self>, device: &Arc<Device>, mem: M) -> Result<Arc<Mirror<L, M>>, OutOfTableMemory> {
        let m = Arc::new(Mirror::new(device.clone(), PageTable::new(mem)?));
        let me: Arc<dyn MirrorList> = self.clone();
        *m.owner.lock() = Some(Arc::downgrade(&me));
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
        self.prefault.store(pages.max(1), Ordering::Relaxed);
    }

    pub fn prefault(&self) -> u64 {
        self.prefault.load(Ordering::Relaxed)
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
    /// before the change. With `keep_exclusive`, entries a device holds
    /// exclusively are left alone (it is their owner taking exclusivity).
    pub fn invalidate_start(&self, range: VaRange, event: Event, keep_exclusive: bool) -> Vec<u64> {
        let mut dirty = Vec::new();
        self.invalidate_start_with(range, event, keep_exclusive, &mut |va| dirty.push(va));
        dirty
    }

    /// [`Mm::invalidate_start`] reporting device-dirty pages to `dirty`
    /// instead of collecting them: nothing is allocated for them (the
    /// kernel calls this under its address-space lock).
    pub fn invalidate_start_with(&self, range: VaRange, event: Event, keep_exclusive: bool, dirty: &mut dyn FnMut(u64)) {
        self.seq.fetch_add(1, Ordering::AcqRel);
        self.stats.invalidations.fetch_add(1, Ordering::Relaxed);
        let mirrors = self.mirrors.lock();
        for m in mirrors.iter() {
            if let Some(cleared) = m.invalidate(event, range, keep_exclusive, dirty) {
                self.stats.driver_updates.fetch_add(1, Ordering::Relaxed);
                self.stats.pages_invalidated.fetch_add(cleared as u64, Ordering::Relaxed);
            }
        }
        if event == Event::Release {
            // The address space is going away: every mirror dies with it.
            drop(mirrors);
            for m in core::mem::take(&mut *self.mirrors.lock()) {
                m.alive.store(false, Ordering::Release);
                m.owner.lock().take();
            }
        }
    }

    /// The change is complete.
    pub fn invalidate_end(&self, _range: VaRange, _event: Event) {
        self.seq.fetch_add(1, Ordering::AcqRel);
    }

    fn space(&self) -> Result<Arc<S>, DeviceFaultKind> {
        self.space.upgrade().ok_or(DeviceFaultKind::Released)
    }

    /// Resolve a device fault on `pages` pages from `addr` (`hmm_mirror_fault`):
    /// fault the pages in on the CPU side with CPU semantics, and populate
    /// the mirror — plus neighbouring pages of the same mapping, up to the
    /// prefault window — with permissions never above the CPU's.
    pub fn fault(&self, m: &Mirror<L, M>, addr: u64, pages: u64, write: bool) -> Result<FaultOutcome, DeviceFaultError> {
        let err = |kind| DeviceFaultError { addr, write, kind };
        let want = VaRange::pages_from(addr & !0xfff, pages.max(1)).map_err(|_| err(DeviceFaultKind::Cpu(CpuFaultError::NoVma)))?;
        self.stats.faults.fetch_add(1, Ordering::Relaxed);
        let space = self.space().map_err(err)?;
        let window = self.window(&*space, want);
        let mut retries = 0;
        loop {
            if !m.is_alive() {
                return Err(err(DeviceFaultKind::Released));
            }
            let seq = self.seq.load(Ordering::Acquire);
            let mut leaves = Vec::with_capacity(window.pages() as usize);
            for va in window.page_addrs() {
                let needed = want.contains(va);
                match space.fault_in(va, write) {
                    Ok(p) => leaves.push((va, Leaf { addr: p.frame, write: write && p.writable, dirty: write && p.writable, exclusive: false })),
                    Err(e) if needed => return Err(DeviceFaultError { addr: va, write, kind: DeviceFaultKind::Cpu(e) }),
                    Err(_) => {} // a prefault neighbour that cannot be had: skip it
                }
            }
            let mut t = m.table.lock();
            if self.seq.load(Ordering::Acquire) != seq || seq % 2 == 1 {
                drop(t);
                retries += 1;
                self.stats.retries.fetch_add(1, Ordering::Relaxed);
                if retries > MAX_RETRIES {
                    return Err(err(DeviceFaultKind::TooManyRetries));
                }
                continue;
            }
            let mut replaced = false;
            for (va, mut leaf) in leaves.iter().copied() {
                let at = crate::mirror::va(va);
                if let Some(old) = t.get(at) {
                    if old.addr == leaf.addr {
                        leaf.write |= old.write;
                        leaf.dirty |= old.dirty;
                        leaf.exclusive = old.exclusive;
                        if old == leaf {
                            continue;
                        }
                    }
                    replaced = true;
                }
                t.set(at, leaf).map_err(|_| err(DeviceFaultKind::NoTableMemory))?;
            }
            self.stats.pages_mirrored.fetch_add(leaves.len() as u64, Ordering::Relaxed);
            let event = if write { Event::DeviceWfault } else { Event::DeviceRfault };
            m.device.driver.update(&Update { mirror: m.id(), event, range: window, mask: event.mask(), replaced });
            return Ok(FaultOutcome { pages: leaves.len() as u64, retries });
        }
    }

    /// The pages to fault: `want`, widened to the aligned prefault window
    /// around it, within the mapping.
    fn window(&self, space: &S, want: VaRange) -> VaRange {
        let n = self.prefault().max(1) * crate::PAGE;
        let Some(extent) = space.extent(want.start()) else { return want };
        let start = (want.start() / n * n).max(extent.start());
        let end = want.end().next_multiple_of(n).min(extent.end()).max(want.end());
        VaRange::new(start, end).unwrap_or(want)
    }

    /// Give `m`'s device exclusive (atomic) access to `range`: the pages are
    /// faulted in for write, the CPU loses write access (other mirrors are
    /// write-protected through the resulting invalidation), and `m`'s
    /// entries are marked exclusive. A later CPU write revokes it.
    pub fn take_exclusive(&self, m: &Mirror<L, M>, range: VaRange) -> Result<(), DeviceFaultError> {
        self.fault(m, range.start(), range.pages(), true)?;
        {
            let mut t = m.table.lock();
            let up = t.update(range, |_, l| Some(Leaf { exclusive: true, ..l }));
            t.release(up.retired);
        }
        let space = self.space().map_err(|kind| DeviceFaultError { addr: range.start(), write: true, kind })?;
        space.protect_for_exclusive(range);
        Ok(())
    }
}

impl<L, M, S> MirrorList for Mm<L, M, S>
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
}
