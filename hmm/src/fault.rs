//! Device faults and exclusive access: the two ways entries enter a mirror.
//! Reached only through [`Mirror::fault`] / [`Mirror::take_exclusive`], so
//! a mirror is always faulted under its own address space's counts.
//!
//! # An honest fault (Linux's `hmm_range_fault` with a request mask)
//!
//! ```text
//!  one space.fault_round, in it:
//!  want   = the pages the device touched          → faulted in (as fault_in(va, write))
//!                                                   (CPU semantics: demand-zero,
//!                                                   swap-in, COW break), entries get
//!                                                   the device's access; a write fault
//!                                                   marks exactly these dirty
//!  window = want widened to the aligned prefault window, within the mapping
//!  the rest of the window                          → as walk(va): mirrored only if
//!                                                   present, with at most the CPU's
//!                                                   access (read-only while COW-shared),
//!                                                   never dirty; nothing on the CPU side
//!                                                   changes
//! ```
//!
//! `PrefaultPolicy::Populate` additionally read-faults absent neighbours.
//! `also` (a job's extent, [`Mirror::fault_with`]): its resident pages
//! are mirrored in the same round like neighbours.
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
//! # One round
//!
//! ```text
//!  reader, seq = register(round.bounds())      one interval per round: one lock,
//!                                               nothing allocated (a slot)
//!  space.fault_round(want, window, also, sink)  the CPU side: one lock, one VMA
//!                                               lookup, one walk per leaf table
//!    sink(batch of ≤ 64 pages)                  commit: lock table; alive? seq
//!                                               unchanged? write entries through
//!                                               one cursor; driver.update
//!  a batch saw a bump → the round stops; begin again (retry)
//! ```
//!
//! # Commit
//!
//! Under the mirror's table lock, only while the mirror is alive and its
//! interval unchanged, through one `pt::Cursor` (a root walk per 2 MiB
//! leaf node, not per page). Batches come from a fixed stack buffer in the
//! space (`cpu::RoundBatch`): no heap allocation per fault. The sink runs
//! under the kernel's address-space lock and takes the mirror's table lock
//! inside it — the order invalidations use. A round over more than one
//! batch commits batch by batch: a retry after some batches keeps their
//! entries (valid: each was committed under an unchanged count). If writing
//! an entry fails midway (no table memory), the driver still hears about
//! the entries already written before the error is returned (an IOMMU may
//! cache the read-only entries upgraded).

use crate::cpu::{CpuFaultError, FaultRound, MirroredSpace, RoundPage};
use crate::event::Event;
use crate::mirror::{Mirror, Update};
use crate::mm::{DeviceFaultError, DeviceFaultKind, FaultOutcome, Mm, PrefaultPolicy, MAX_FAULT_PAGES};
use crate::pt::{EntryLayout, Leaf, TableMemory};
use crate::VaRange;
use core::sync::atomic::Ordering;

const MAX_RETRIES: u64 = 64;

/// A retry was needed (the caller loops).
struct Retry;

/// What a round did: entries written (new or changed) and pages the CPU
/// side handed over.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RoundDone {
    pub written: u64,
    pub handed: u64,
    pub retries: u64,
}

impl<L, M, S> Mm<L, M, S>
where
    L: EntryLayout + Send + Sync + 'static,
    M: TableMemory + Send + Sync + 'static,
    S: MirroredSpace + 'static,
{
    /// See the module docs.
    pub(crate) fn fault_mirror(&self, m: &Mirror<L, M>, addr: u64, pages: u64, write: bool, also: Option<VaRange>) -> Result<FaultOutcome, DeviceFaultError> {
        let err = |kind| DeviceFaultError { addr, write, kind };
        if pages > MAX_FAULT_PAGES || also.is_some_and(|a| a.pages() > MAX_FAULT_PAGES) {
            return Err(err(DeviceFaultKind::BadRange));
        }
        let want = VaRange::pages_from(addr & !0xfff, pages.max(1)).map_err(|_| err(DeviceFaultKind::BadRange))?;
        if write && m.read_only() {
            return Err(err(DeviceFaultKind::ReadOnly));
        }
        self.stats.faults.fetch_add(1, Ordering::Relaxed);
        let window = self.prefault();
        // The policy matters only for neighbours (its lock is skipped without).
        let populate = window > 1 && self.prefault_policy() == PrefaultPolicy::Populate;
        let done = self.round(m, &FaultRound { want, write, window, populate, also }, addr)?;
        Ok(FaultOutcome { pages: done.written, retries: done.retries })
    }

    /// One fault round (see the module docs), retried while invalidations
    /// race it. `addr` names the fault in errors other than a page's own.
    pub(crate) fn round(&self, m: &Mirror<L, M>, round: &FaultRound, addr: u64) -> Result<RoundDone, DeviceFaultError> {
        let write = round.write;
        let err = |kind| DeviceFaultError { addr, write, kind };
        let space = self.space.upgrade().ok_or(err(DeviceFaultKind::Released))?;
        let event = if write { Event::DeviceWfault } else { Event::DeviceRfault };
        let (reader, mut seq) = self.intervals.register(m.id(), m.device(), round.bounds()).map_err(|_| err(DeviceFaultKind::TooManyRetries))?;
        let mut done = RoundDone::default();
        loop {
            if !m.is_alive() {
                return Err(err(DeviceFaultKind::Released));
            }
            log::debug!("fault.round va={addr:#x} want={:?} window={} round={}", round.want, round.window, done.retries + 1);
            let mut stop: Option<Result<Retry, DeviceFaultKind>> = None;
            let (mut written, mut handed) = (0, 0);
            space
                .fault_round(round, &mut |pages| {
                    handed += pages.len() as u64;
                    match self.commit(m, pages.iter().map(|p| (p.va, leaf_of(p, write))), &reader, seq, event) {
                        Ok(n) => {
                            written += n;
                            true
                        }
                        Err(e) => {
                            stop = Some(e);
                            false
                        }
                    }
                })
                .map_err(|(va, e)| DeviceFaultError { addr: va, write, kind: DeviceFaultKind::Cpu(e) })?;
            done.written += written;
            match stop {
                None => return Ok(RoundDone { handed, ..done }),
                Some(Ok(Retry)) => {
                    done.retries += 1;
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    if done.retries > MAX_RETRIES {
                        return Err(err(DeviceFaultKind::TooManyRetries));
                    }
                    // Wait out the overlapping invalidation before any work.
                    seq = reader.begin().map_err(|_| err(DeviceFaultKind::TooManyRetries))?;
                }
                Some(Err(kind)) => return Err(err(kind)),
            }
        }
    }

    /// Write `leaves` into `m` — under its table lock, only if it is alive
    /// and `reader` still has count `seq` — and tell the driver (about the
    /// hull of the pages), also about a partial commit. Returns how many
    /// entries were written (new or changed).
    fn commit(&self, m: &Mirror<L, M>, leaves: impl Iterator<Item = (u64, Leaf)>, reader: &crate::interval::Reader<'_>, seq: u64, event: Event) -> Result<u64, Result<Retry, DeviceFaultKind>> {
        let mut t = m.table.lock();
        if !m.alive.load(Ordering::Acquire) {
            return Err(Err(DeviceFaultKind::Released));
        }
        if reader.changed(seq) {
            return Err(Ok(Retry));
        }
        let (mut replaced, mut written, mut failed) = (false, 0u64, false);
        let (mut lo, mut hi) = (u64::MAX, 0);
        // One cursor: a walk from the root only when the leaves leave the
        // current 2 MiB leaf node; get + set are then one entry each.
        let mut cursor = t.cursor();
        for (va, leaf) in leaves {
            lo = lo.min(va);
            hi = hi.max(va);
            // The same frame keeps what the entry had (an upgrade never
            // drops write, dirty or exclusive); a new frame replaces it.
            let merged = cursor.merge(va, |old| match old {
                Some(old) if old.addr == leaf.addr => Leaf { write: leaf.write | old.write, dirty: leaf.dirty | old.dirty, exclusive: leaf.exclusive | old.exclusive, ..leaf },
                _ => leaf,
            });
            match merged {
                Ok((old, true)) => {
                    replaced |= old.is_some();
                    written += 1;
                    log::trace!("mirror.set va={va:#x} pa={:#x} write={}", leaf.addr.as_u64(), leaf.write);
                }
                Ok((_, false)) => {}
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        self.stats.pages_mirrored.fetch_add(written, Ordering::Relaxed);
        if written > 0 || (!failed && lo <= hi) {
            if let Ok(range) = VaRange::new(lo, hi + crate::PAGE) {
                m.device.driver.update(&Update { mirror: m.id(), event, range, mask: event.mask(), replaced });
            }
        }
        if failed {
            return Err(Err(DeviceFaultKind::NoTableMemory));
        }
        Ok(written)
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
        let (reader, mut seq) = self.intervals.register(m.id(), m.device(), range).map_err(|_| err(DeviceFaultKind::TooManyRetries))?;
        let mut retries = 0;
        loop {
            if !m.is_alive() {
                return Err(err(DeviceFaultKind::Released));
            }
            let pages = space.make_exclusive(range, m.device()).map_err(|e| err(DeviceFaultKind::Cpu(e)))?;
            if pages.len() as u64 != range.pages() {
                return Err(err(DeviceFaultKind::Cpu(CpuFaultError::NoVma)));
            }
            let leaves = range.page_addrs().zip(pages).map(|(va, p)| (va, Leaf { addr: p.frame, write: true, dirty: true, exclusive: true }));
            match self.commit(m, leaves, &reader, seq, Event::DeviceWfault) {
                Ok(_) => return Ok(()),
                Err(Ok(Retry)) => {
                    retries += 1;
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    if retries > MAX_RETRIES {
                        return Err(err(DeviceFaultKind::TooManyRetries));
                    }
                    seq = reader.begin().map_err(|_| err(DeviceFaultKind::TooManyRetries))?;
                }
                Err(Err(kind)) => return Err(err(kind)),
            }
        }
    }
}

/// The mirror entry for a page a round handed over: a wanted page gets
/// the device's access (a write marks it dirty); a neighbour at most the
/// CPU's, never dirty.
fn leaf_of(p: &RoundPage, write: bool) -> Leaf {
    let w = write && p.page.writable;
    Leaf { addr: p.page.frame, write: w, dirty: w && p.wanted, exclusive: false }
}
