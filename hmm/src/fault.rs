//! Device faults and exclusive access: the two ways entries enter a mirror.
//! Reached only through [`Mirror::fault`] / [`Mirror::take_exclusive`], so
//! a mirror is always faulted under its own address space's counts.
//!
//! # An honest fault (Linux's `hmm_range_fault` with a request mask)
//!
//! ```text
//!  want   = the pages the device touched          → space.fault_in(va, write)
//!                                                   (CPU semantics: demand-zero,
//!                                                   swap-in, COW break), entries get
//!                                                   the device's access; a write fault
//!                                                   marks exactly these dirty
//!  window = want widened to the aligned prefault window, within the mapping
//!  the rest of the window                          → space.walk(va): mirrored only if
//!                                                   present, with at most the CPU's
//!                                                   access (read-only while COW-shared),
//!                                                   never dirty; nothing on the CPU side
//!                                                   changes
//! ```
//!
//! `PrefaultPolicy::Populate` additionally read-faults absent neighbours.
//!
//! # Exclusive access (`make_device_exclusive`)
//!
//! ```text
//!  register interval; seq = begin()
//!  space.make_exclusive(range, owner):   fault in for write, then in ONE
//!      EXCLUSIVE notification (other devices drop the pages; the owner's
//!      mirror and intervals are exempt) the CPU entries become
//!      non-present "exclusive to owner" entries         ← CPU loses access first
//!  lock table; alive? seq unchanged? else retry
//!  write the owner's entries (write, exclusive); driver.update
//! ```
//!
//! # Commit
//!
//! Under the mirror's table lock, only while the mirror is alive and its
//! interval unchanged, through one `pt::Cursor` (a root walk per 2 MiB
//! leaf node, not per page); the leaves were gathered before the lock on
//! the stack (windows up to 64 pages: no heap allocation per fault). If writing an entry fails midway (no table memory),
//! the driver still hears about the entries already written before the
//! error is returned (an IOMMU may cache the read-only entries upgraded).

use crate::cpu::{CpuFaultError, CpuPage, MirroredSpace};
use crate::event::Event;
use crate::mirror::{va as vaddr, Mirror, Update};
use crate::mm::{DeviceFaultError, DeviceFaultKind, FaultOutcome, Mm, PrefaultPolicy, MAX_FAULT_PAGES};
use crate::pt::{EntryLayout, Leaf, TableMemory};
use crate::VaRange;
use alloc::vec::Vec;
use core::mem::MaybeUninit;
use core::sync::atomic::Ordering;

const MAX_RETRIES: u64 = 64;
/// Fault windows up to this many pages gather their leaves on the stack.
const INLINE: usize = 64;

/// A retry was needed (the caller loops).
struct Retry;

impl<L, M, S> Mm<L, M, S>
where
    L: EntryLayout + Send + Sync + 'static,
    M: TableMemory + Send + Sync + 'static,
    S: MirroredSpace + 'static,
{
    /// See the module docs.
    pub(crate) fn fault_mirror(&self, m: &Mirror<L, M>, addr: u64, pages: u64, write: bool) -> Result<FaultOutcome, DeviceFaultError> {
        let err = |kind| DeviceFaultError { addr, write, kind };
        if pages > MAX_FAULT_PAGES {
            return Err(err(DeviceFaultKind::BadRange));
        }
        let want = VaRange::pages_from(addr & !0xfff, pages.max(1)).map_err(|_| err(DeviceFaultKind::BadRange))?;
        if write && m.read_only() {
            return Err(err(DeviceFaultKind::ReadOnly));
        }
        self.stats.faults.fetch_add(1, Ordering::Relaxed);
        let space = self.space.upgrade().ok_or(err(DeviceFaultKind::Released))?;
        let window = self.window(&*space, want);
        // The policy matters only for neighbours (its lock is skipped without).
        let policy = if window == want { PrefaultPolicy::Mirror } else { self.prefault_policy() };
        let reader = self.intervals.register(m.id(), m.device(), window);
        let mut retries = 0;
        loop {
            // Wait out an overlapping invalidation before any work.
            let seq = reader.begin().map_err(|_| err(DeviceFaultKind::TooManyRetries))?;
            if !m.is_alive() {
                return Err(err(DeviceFaultKind::Released));
            }
            log::debug!("fault.round va={addr:#x} window={:#x}..{:#x} round={}", window.start(), window.end(), retries + 1);
            // The leaves are gathered before the table lock (fault_in may
            // invalidate): on the stack for windows up to INLINE pages.
            let mut inline = [const { MaybeUninit::<(u64, Leaf)>::uninit() }; INLINE];
            let mut heap = Vec::new();
            let buf: &mut [MaybeUninit<(u64, Leaf)>] = if window.pages() as usize <= INLINE {
                &mut inline[..window.pages() as usize]
            } else {
                heap.resize(window.pages() as usize, MaybeUninit::uninit());
                &mut heap
            };
            let mut len = 0;
            let mut push = |va: u64, leaf: Leaf| {
                buf[len].write((va, leaf));
                len += 1;
            };
            // In address order: neighbours below, the wanted pages, neighbours above.
            let neighbours = |r: Result<VaRange, _>, push: &mut dyn FnMut(u64, Leaf)| {
                let Ok(r) = r else { return };
                if r.is_empty() {
                    return;
                }
                let leaf = |p: CpuPage| Leaf { addr: p.frame, write: write && p.writable, dirty: false, exclusive: false };
                match policy {
                    PrefaultPolicy::Mirror => space.walk_range(r, &mut |va, p| push(va, leaf(p))),
                    PrefaultPolicy::Populate => {
                        for va in r.page_addrs() {
                            if let Some(p) = space.walk(va).or_else(|| space.fault_in(va, false).ok()) {
                                push(va, leaf(p));
                            }
                        }
                    }
                }
            };
            neighbours(VaRange::new(window.start(), want.start()), &mut push);
            for va in want.page_addrs() {
                let p = space.fault_in(va, write).map_err(|e| DeviceFaultError { addr: va, write, kind: DeviceFaultKind::Cpu(e) })?;
                let w = write && p.writable;
                push(va, Leaf { addr: p.frame, write: w, dirty: w, exclusive: false });
            }
            neighbours(VaRange::new(want.end(), window.end()), &mut push);
            // SAFETY: `push` wrote `buf[..len]`, in order, each exactly once.
            let leaves = unsafe { &*(&raw const buf[..len] as *const [(u64, Leaf)]) };
            match self.commit(m, window, leaves, &reader, seq, if write { Event::DeviceWfault } else { Event::DeviceRfault }) {
                Ok(written) => return Ok(FaultOutcome { pages: written, retries }),
                Err(Ok(Retry)) => {
                    retries += 1;
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    if retries > MAX_RETRIES {
                        return Err(err(DeviceFaultKind::TooManyRetries));
                    }
                }
                Err(Err(kind)) => return Err(err(kind)),
            }
        }
    }

    /// Write `leaves` into `m` — under its table lock, only if it is alive
    /// and `reader` still has count `seq` — and tell the driver, also about
    /// a partial commit.
    pub(crate) fn commit_leaves(&self, m: &Mirror<L, M>, range: VaRange, leaves: &[(u64, Leaf)], reader: &crate::interval::Reader<'_>, seq: u64, event: Event) -> Result<(), Result<(), DeviceFaultKind>> {
        self.commit(m, range, leaves, reader, seq, event).map(|_| ()).map_err(|e| e.map(|Retry| ()))
    }

    /// Returns how many entries were written (new or changed).
    fn commit(&self, m: &Mirror<L, M>, range: VaRange, leaves: &[(u64, Leaf)], reader: &crate::interval::Reader<'_>, seq: u64, event: Event) -> Result<u64, Result<Retry, DeviceFaultKind>> {
        let mut t = m.table.lock();
        if !m.alive.load(Ordering::Acquire) {
            return Err(Err(DeviceFaultKind::Released));
        }
        if reader.changed(seq) {
            return Err(Ok(Retry));
        }
        let (mut replaced, mut written, mut failed) = (false, 0u64, false);
        // One cursor: a walk from the root only when the leaves leave the
        // current 2 MiB leaf node; get + set are then one entry each.
        let mut cursor = t.cursor();
        for &(va, mut leaf) in leaves {
            let at = vaddr(va);
            if let Some(old) = cursor.get(at) {
                if old.addr == leaf.addr {
                    leaf.write |= old.write;
                    leaf.dirty |= old.dirty;
                    leaf.exclusive |= old.exclusive;
                    if old == leaf {
                        continue;
                    }
                }
                replaced = true;
            }
            log::trace!("mirror.set va={va:#x} pa={:#x} write={}", leaf.addr.as_u64(), leaf.write);
            if cursor.set(at, leaf).is_err() {
                failed = true;
                break;
            }
            written += 1;
        }
        self.stats.pages_mirrored.fetch_add(written, Ordering::Relaxed);
        if written > 0 || !failed {
            m.device.driver.update(&Update { mirror: m.id(), event, range, mask: event.mask(), replaced });
        }
        if failed {
            return Err(Err(DeviceFaultKind::NoTableMemory));
        }
        Ok(written)
    }

    /// The pages to fault: `want`, widened to the aligned prefault window
    /// around it, within the mapping.
    fn window(&self, space: &S, want: VaRange) -> VaRange {
        let n = self.prefault().max(1) * crate::PAGE;
        if n == crate::PAGE {
            return want; // no prefault: no VMA lookup
        }
        let Some(extent) = space.extent(want.start()) else { return want };
        let start = (want.start() / n * n).max(extent.start()).min(want.start());
        let end = want.end().next_multiple_of(n).min(extent.end()).max(want.end());
        VaRange::new(start, end).unwrap_or(want)
    }

    /// See the module docs.
    pub(crate) fn exclusive(&self, m: &Mirror<L, M>, range: VaRange) -> Result<(), DeviceFaultError> {
        let err = |kind| DeviceFaultError { addr: range.start(), write: true, kind };
        if range.is_empty() || range.pages() > MAX_FAULT_PAGES {
            return Err(err(DeviceFaultKind::BadRange));
        }
        if m.read_only() {
            return Err(err(DeviceFaultKind::ReadOnly));
        }
        let space = self.space.upgrade().ok_or(err(DeviceFaultKind::Released))?;
        let reader = self.intervals.register(m.id(), m.device(), range);
        let mut retries = 0;
        loop {
            let seq = reader.begin().map_err(|_| err(DeviceFaultKind::TooManyRetries))?;
            if !m.is_alive() {
                return Err(err(DeviceFaultKind::Released));
            }
            let pages = space.make_exclusive(range, m.device()).map_err(|e| err(DeviceFaultKind::Cpu(e)))?;
            if pages.len() as u64 != range.pages() {
                return Err(err(DeviceFaultKind::Cpu(CpuFaultError::NoVma)));
            }
            let leaves: Vec<_> = range.page_addrs().zip(pages).map(|(va, p)| (va, Leaf { addr: p.frame, write: true, dirty: true, exclusive: true })).collect();
            match self.commit(m, range, &leaves, &reader, seq, Event::DeviceWfault) {
                Ok(_) => return Ok(()),
                Err(Ok(Retry)) => {
                    retries += 1;
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    if retries > MAX_RETRIES {
                        return Err(err(DeviceFaultKind::TooManyRetries));
                    }
                }
                Err(Err(kind)) => return Err(err(kind)),
            }
        }
    }
}
