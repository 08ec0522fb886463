//! What HMM needs from the CPU side: the address-space trait the kernel
//! implements.

use crate::mirror::DeviceId;
use crate::VaRange;
use alloc::vec::Vec;
use core::fmt;
use core::mem::MaybeUninit;
use x86_64::PhysAddr;

/// A resident CPU page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuPage {
    pub frame: PhysAddr,
    pub writable: bool,
}

/// Why the CPU side refused to make a page accessible.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuFaultError {
    /// No mapping at the address.
    NoVma,
    /// The mapping does not allow the access (e.g. a write to read-only memory).
    Protection,
    OutOfMemory,
}

impl fmt::Display for CpuFaultError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NoVma => "no mapping",
            Self::Protection => "not permitted by the mapping",
            Self::OutOfMemory => "out of memory",
        })
    }
}

/// One device-fault round's request to the CPU side (see
/// [`MirroredSpace::fault_round`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultRound {
    /// Faulted in with CPU semantics, each page with the device's access
    /// (may be empty: then only `also` is looked at).
    pub want: VaRange,
    pub write: bool,
    /// Prefault window in pages (1 = none): the naturally aligned block of
    /// this many pages around `want`, within `want`'s mapping
    /// ([`prefault_window`]). Its other pages are neighbours.
    pub window: u64,
    /// Neighbours that are not resident are read-faulted in
    /// (`PrefaultPolicy::Populate`) instead of skipped.
    pub populate: bool,
    /// Resident pages of this range outside the window are handed over too
    /// (a job's extent): never faulted, whatever their mapping.
    pub also: Option<VaRange>,
}

impl FaultRound {
    /// Every page the round may hand over, whatever the mappings: what the
    /// round's interval must cover (the unclipped aligned window, `want`,
    /// `also`).
    pub fn bounds(&self) -> VaRange {
        let mut r = self.want;
        if !self.want.is_empty() && self.window > 1 {
            let n = self.window.saturating_mul(crate::PAGE);
            let start = self.want.start() / n * n;
            let end = self.want.end().checked_next_multiple_of(n).unwrap_or(crate::USER_END).min(crate::USER_END);
            r = VaRange::new(start, end).unwrap_or(self.want);
        }
        match self.also {
            Some(a) if !a.is_empty() && r.is_empty() => a,
            Some(a) if !a.is_empty() => VaRange::new(r.start().min(a.start()), r.end().max(a.end())).unwrap_or(r),
            _ => r,
        }
    }
}

/// A page handed over by a fault round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoundPage {
    pub va: u64,
    pub page: CpuPage,
    /// One of the round's `want` pages (faulted in with the device's
    /// access), not a neighbour.
    pub wanted: bool,
}

/// Pages a fault round hands over at a time ([`RoundBatch`]): a fixed
/// stack buffer, so no round allocates.
pub const ROUND_BATCH: usize = 64;

/// The aligned window of `pages` pages around `want`, within `extent` (the
/// mapping around `want`'s start), never smaller than `want`.
#[inline]
pub fn prefault_window(want: VaRange, pages: u64, extent: Option<VaRange>) -> VaRange {
    let n = pages.max(1).saturating_mul(crate::PAGE);
    let Some(extent) = extent.filter(|_| n > crate::PAGE) else { return want };
    let start = (want.start() / n * n).max(extent.start()).min(want.start());
    let end = want.end().checked_next_multiple_of(n).unwrap_or(u64::MAX).min(extent.end()).max(want.end());
    VaRange::new(start, end).unwrap_or(want)
}

/// Where a [`MirroredSpace::fault_round`] implementation gathers pages: a
/// fixed buffer of [`ROUND_BATCH`], handed to the round's sink whenever it
/// fills and at the end. Once the sink says stop, pushes return false.
pub struct RoundBatch<'a> {
    buf: [MaybeUninit<RoundPage>; ROUND_BATCH],
    len: usize,
    sink: &'a mut dyn FnMut(&[RoundPage]) -> bool,
    stopped: bool,
}

impl<'a> RoundBatch<'a> {
    pub fn new(sink: &'a mut dyn FnMut(&[RoundPage]) -> bool) -> Self {
        RoundBatch { buf: [const { MaybeUninit::uninit() }; ROUND_BATCH], len: 0, sink, stopped: false }
    }

    /// Add a page; false if the sink stopped the round (stop then).
    #[inline]
    pub fn push(&mut self, va: u64, page: CpuPage, wanted: bool) -> bool {
        if self.stopped {
            return false;
        }
        self.buf[self.len].write(RoundPage { va, page, wanted });
        self.len += 1;
        if self.len == ROUND_BATCH {
            self.flush();
        }
        !self.stopped
    }

    #[inline]
    fn flush(&mut self) {
        if self.len > 0 && !self.stopped {
            // SAFETY: `push` wrote `buf[..len]`, each exactly once since the
            // last flush; `RoundPage` is `Copy` (nothing to drop).
            let pages = unsafe { &*(&raw const self.buf[..self.len] as *const [RoundPage]) };
            self.stopped = !(self.sink)(pages);
        }
        self.len = 0;
    }

    /// Hand over what is left; false if the sink stopped the round. (By
    /// reference: moving the 2 KiB buffer would cost a copy of it.)
    pub fn finish(&mut self) -> bool {
        self.flush();
        !self.stopped
    }
}

/// The mirrored address space (implemented by the kernel).
///
/// Calls come from device-fault context with no HMM lock held; the
/// implementation takes its own lock and may send invalidations to HMM
/// from inside (a write fault breaking COW does) — the retry protocol
/// exists for exactly that.
pub trait MirroredSpace: Send + Sync {
    /// The page at `va` if resident, as the CPU maps it — a pure read: no
    /// fault is taken, nothing is allocated, swapped in, COW-broken or
    /// marked dirty or accessed. A page held exclusively by a device (its
    /// CPU entry is non-present) is not resident here.
    fn walk(&self, va: u64) -> Option<CpuPage>;
    /// [`MirroredSpace::walk`] over a range: hands `f` each resident page
    /// of `range`, in address order. The default walks page by page; an
    /// implementation should take its lock once and walk once per leaf
    /// table (the prefault window's neighbours go through here).
    fn walk_range(&self, range: VaRange, f: &mut dyn FnMut(u64, CpuPage)) {
        for va in range.page_addrs() {
            if let Some(p) = self.walk(va) {
                f(va, p);
            }
        }
    }
    /// Make `va` resident with CPU semantics: `write` breaks COW first, a
    /// swapped page comes back, and the result grants write only if the
    /// CPU mapping does.
    fn fault_in(&self, va: u64, write: bool) -> Result<CpuPage, CpuFaultError>;
    /// One device-fault round's CPU side: the `want` pages faulted in
    /// (CPU semantics, the device's access), then the window's neighbours
    /// (resident ones as the CPU maps them, or read-faulted with
    /// `populate`), then resident pages of `also` outside the window —
    /// handed to `sink` in batches of at most [`ROUND_BATCH`] (use a
    /// [`RoundBatch`]). `sink` returning false ends the round early (its
    /// commit must be retried). An error names the `want` page that failed.
    ///
    /// `sink` may run under the implementation's lock (the kernel's
    /// address-space lock) and take the mirror's table lock — the order
    /// invalidations use; it must not call back into the space. An
    /// implementation should take its lock and look the mapping up once,
    /// and walk its tables once per leaf table; the default does it page
    /// by page with the methods above.
    fn fault_round(&self, round: &FaultRound, sink: &mut dyn FnMut(&[RoundPage]) -> bool) -> Result<(), (u64, CpuFaultError)> {
        let mut batch = RoundBatch::new(sink);
        let mut window = round.want;
        if !round.want.is_empty() {
            for va in round.want.page_addrs() {
                let p = self.fault_in(va, round.write).map_err(|e| (va, e))?;
                if !batch.push(va, p, true) {
                    return Ok(());
                }
            }
            window = prefault_window(round.want, round.window, if round.window > 1 { self.extent(round.want.start()) } else { None });
            for r in [VaRange::new(window.start(), round.want.start()), VaRange::new(round.want.end(), window.end())].into_iter().flatten() {
                if round.populate {
                    for va in r.page_addrs() {
                        if let Some(p) = self.walk(va).or_else(|| self.fault_in(va, false).ok()) {
                            batch.push(va, p, false);
                        }
                    }
                } else {
                    self.walk_range(r, &mut |va, p| {
                        batch.push(va, p, false);
                    });
                }
            }
        }
        if let Some(also) = round.also {
            for r in outside(also, window) {
                self.walk_range(r, &mut |va, p| {
                    batch.push(va, p, false);
                });
            }
        }
        batch.finish();
        Ok(())
    }
    /// A device wrote the page: mark it dirty on the CPU side.
    fn set_dirty(&self, va: u64);
    /// The mapping (VMA) around `va`, for prefault.
    fn extent(&self, va: u64) -> Option<VaRange>;
    /// `make_device_exclusive`: fault every page of `range` in for write
    /// (CPU semantics; a page already held by `owner` stays as it is), then
    /// — inside one `Event::Exclusive` notification naming `owner` — replace
    /// each CPU entry by a non-present entry naming `owner`. Returns the
    /// pages, in order. Any later CPU access to one of them (read or write)
    /// revokes the device's access first (an invalidation of the page) and
    /// restores the entry; so do fork, swap-out and migration.
    fn make_exclusive(&self, range: VaRange, owner: DeviceId) -> Result<Vec<CpuPage>, CpuFaultError>;
    /// What the CPU holds at `va`, read without changing anything (for
    /// snapshots). The default knows only resident pages and mappings; a
    /// kernel reports swapped, zero-page, no-access and exclusive pages too.
    /// [`MirroredSpace::page_state`] for every page of `range`, in order.
    /// The default asks page by page; an implementation should take its
    /// lock once and walk once per leaf table. `f` may run under that
    /// lock: it must not call back into the space.
    fn page_states(&self, range: VaRange, f: &mut dyn FnMut(u64, crate::snapshot::CpuPageState)) {
        for va in range.page_addrs() {
            f(va, self.page_state(va));
        }
    }
    fn page_state(&self, va: u64) -> crate::snapshot::CpuPageState {
        use crate::snapshot::CpuPageState;
        match self.walk(va) {
            Some(p) => CpuPageState::Present(p),
            None if self.extent(va).is_some() => CpuPageState::Absent,
            None => CpuPageState::Hole,
        }
    }
}

/// The parts of `r` below and above `hole` (empty `hole`: all of `r`).
#[inline]
pub fn outside(r: VaRange, hole: VaRange) -> impl Iterator<Item = VaRange> {
    let (below, above) = if hole.is_empty() {
        (Some(r), None)
    } else {
        (VaRange::new(r.start(), hole.start().min(r.end())).ok(), VaRange::new(hole.end().max(r.start()), r.end()).ok())
    };
    below.into_iter().chain(above).filter(|x| !x.is_empty())
}
