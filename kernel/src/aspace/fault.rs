//! Resolving a fault: demand-zero, swap-in, COW break — or a typed error.
//! Both CPU faults (from the user-access routines) and device faults (from
//! HMM) come here.

use super::pte::Pte;
use super::swap::SWAP;
use super::{leaf_flags, page, AddressSpace, Change, ChangeKind, Inner, Prot};
use crate::mm::direct;
use crate::mm::frames::{self, FrameFlags};
use super::layout::CpuLayout;
use core::fmt;
use core::sync::atomic::Ordering;
use hmm::pt::EntryLayout;
use x86_64::structures::paging::{PageTableFlags as F, PhysFrame};

/// Below this many free frames, a fault reclaims before allocating (the
/// rest is the reserve that swap-out itself may need: slot-map frames, the
/// disk's IOMMU table nodes, page tables).
pub const RECLAIM_LOW: usize = 48;
/// When reclaim frees nothing (swap full) and fewer frames than this are
/// free, a fault fails with OutOfMemory: user memory does not take the
/// kernel's last frames.
pub const USER_FLOOR: usize = 24;
/// Frames one reclaim tries to free (one batch: one notification).
const RECLAIM_WANT: usize = super::clock::BATCH;
/// What a device fault protects from reclaim: the aligned block around it,
/// which holds any HMM prefault window (aligned, at most 512 pages).
pub const PROTECT_BLOCK: u64 = 2 << 20;

/// The kind of access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    Exec,
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Access::Read => "read",
            Access::Write => "write",
            Access::Exec => "execute",
        })
    }
}

/// Why an access failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessFailure {
    /// No area contains the address.
    NoVma,
    /// The area does not allow this access.
    Protection,
    /// No frame to resolve the fault (and reclaim freed none).
    OutOfMemory,
    /// The page could not be read back from swap.
    SwapIo,
}

/// A failed access, reported for the process: where and what.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessError {
    pub addr: u64,
    pub access: Access,
    pub reason: AccessFailure,
}

impl fmt::Display for AccessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match self.reason {
            AccessFailure::NoVma => "no mapping there",
            AccessFailure::Protection => "not permitted by the mapping's protection",
            AccessFailure::OutOfMemory => "out of memory",
            AccessFailure::SwapIo => "the page could not be read back from swap",
        };
        write!(f, "{} at {:#x}: {why}", self.access, self.addr)
    }
}

/// A resident page as the CPU maps it (what HMM mirrors).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuPte {
    pub frame: PhysFrame,
    pub writable: bool,
    pub dirty: bool,
    pub accessed: bool,
}

impl CpuPte {
    /// A present entry's frame and flags, as the fault path reports them.
    pub(crate) fn of(frame: PhysFrame, flags: F) -> CpuPte {
        CpuPte { frame, writable: flags.contains(F::WRITABLE), dirty: flags.contains(F::DIRTY), accessed: flags.contains(F::ACCESSED) }
    }
}

impl AddressSpace {
    /// Resolve a fault at `addr` for `access`, with CPU semantics.
    /// If frames run low, reclaim never takes this very page.
    pub fn handle_fault(&self, addr: u64, access: Access) -> Result<CpuPte, AccessError> {
        let mut inner = self.lock();
        inner.resolve(self.id, addr, access, hmm::VaRange::page_of(addr & !0xfff).ok())
    }

    /// Make `addr` resident with at least the permission `write` asks for
    /// (HMM's device faults): a write breaks COW first, a swapped page is
    /// swapped in. HMM resolves a whole prefault window page by page, and
    /// its fault is retried if any page of the window changes meanwhile: so
    /// reclaim here never takes a page of the aligned [`PROTECT_BLOCK`]
    /// around `addr`, which holds any window (aligned, ≤ 512 pages).
    pub fn fault_in(&self, addr: u64, write: bool) -> Result<CpuPte, AccessError> {
        let block = addr & !(PROTECT_BLOCK - 1);
        let protect = hmm::VaRange::new(block, block.saturating_add(PROTECT_BLOCK)).ok();
        let mut inner = self.lock();
        inner.resolve(self.id, addr, if write { Access::Write } else { Access::Read }, protect)
    }

    /// One HMM fault round's CPU side (`hmm::MirroredSpace::fault_round`):
    /// under one lock and one VMA lookup, the `want` pages resolved —
    /// a page already present with the access asked for is taken as it is
    /// (what [`AddressSpace::fault_in`] would find), anything else goes
    /// through the full fault path — then the window's neighbours and the
    /// resident pages of `also`, read by `hmm::pt`'s walker over the CPU
    /// tables (one descent per leaf table). Pages go to `sink` in batches
    /// from a stack buffer: nothing is allocated. `sink` runs under the
    /// address-space lock (it takes mirror locks: the notifier's order).
    /// Reclaim spares the aligned [`PROTECT_BLOCK`] around `want`, as for
    /// `fault_in`.
    pub fn fault_round(&self, round: &hmm::FaultRound, sink: &mut dyn FnMut(&[hmm::RoundPage]) -> bool) -> Result<(), AccessError> {
        let want = round.want;
        let block = want.start() & !(PROTECT_BLOCK - 1);
        let protect = hmm::VaRange::new(block, block.saturating_add(PROTECT_BLOCK)).ok();
        let (access, need) = if round.write { (Access::Write, Prot::WRITE) } else { (Access::Read, Prot::READ) };
        let mut inner = self.lock();
        let mut batch = hmm::RoundBatch::new(sink);
        let mut window = want;
        if !want.is_empty() {
            let vma = inner.vmas.find(want.start());
            // Pages of the VMA that allows the access may be taken as they
            // are; the rest go through `resolve` (which looks again).
            let fast = vma.filter(|v| v.prot.contains(need)).map_or(want.start()..want.start(), |v| v.range.start()..v.range.end());
            let view = self.view(&mut inner);
            // Per 2 MiB block one walk to its leaf table, then a tight loop
            // over its entries while pages are present with the access
            // asked for (and inside the VMA that allows it). A page that is
            // not goes through `resolve` alone; the next page walks again
            // (resolve may make the leaf table or change any entry; nodes
            // stay: freed only on drop).
            let mut va = want.start();
            while va < want.end() {
                if fast.contains(&va) {
                    if let Some(node) = view.leaf_node(va) {
                        let stop = want.end().min(fast.end).min((va | (hmm::pt::span(2) - 1)) + 1);
                        let first = hmm::pt::index(va, 1);
                        for e in &node[first..first + ((stop - va) / 4096) as usize] {
                            let Some(l) = CpuLayout::decode_leaf(e.load(Ordering::Acquire)).filter(|l| l.write || !round.write) else { break };
                            if !batch.push(va, hmm::CpuPage { frame: l.addr, writable: l.write }, true) {
                                return Ok(());
                            }
                            va += 4096;
                        }
                        if va == stop {
                            continue;
                        }
                    }
                }
                let p = cpu_page(inner.resolve(self.id, va, access, protect)?);
                if !batch.push(va, p, true) {
                    return Ok(());
                }
                va += 4096;
            }
            if round.window > 1 {
                window = hmm::cpu::prefault_window(want, round.window, vma.map(|v| v.range));
            }
            // (No neighbours — prefault off — is the common case: skip the
            // range arithmetic.)
            for r in (window != want).then(|| hmm::cpu::outside(window, want)).into_iter().flatten() {
                if round.populate {
                    for va in r.page_addrs() {
                        let p = match self.view(&mut inner).get(va) {
                            Some(l) => Some(hmm::CpuPage { frame: l.addr, writable: l.write }),
                            None => inner.resolve(self.id, va, Access::Read, protect).ok().map(cpu_page),
                        };
                        if let Some(p) = p {
                            if !batch.push(va, p, false) {
                                return Ok(());
                            }
                        }
                    }
                } else if !push_resident(&self.view(&mut inner), r, &mut batch) {
                    return Ok(());
                }
            }
        }
        if let Some(also) = round.also {
            for r in hmm::cpu::outside(also, window) {
                if !push_resident(&self.view(&mut inner), r, &mut batch) {
                    return Ok(());
                }
            }
        }
        batch.finish();
        Ok(())
    }

    /// The resident page at `addr`, if any (no fault is taken).
    pub fn walk(&self, addr: u64) -> Option<CpuPte> {
        let mut inner = self.lock();
        inner.walk(addr)
    }

    /// Record that `addr` was written behind the CPU's back (by a device):
    /// sets the PTE's dirty bit, so swap-out rewrites the slot.
    pub fn set_dirty(&self, addr: u64) {
        self.lock().mark_dirty(addr & !0xfff);
    }
}

/// A resolved page as HMM names it.
fn cpu_page(p: CpuPte) -> hmm::CpuPage {
    hmm::CpuPage { frame: p.frame.start_address(), writable: p.writable }
}

/// Every resident, user-accessible page of `r` into `batch` (one walk);
/// false if the batch's sink stopped the round. By `fold`, the walker's
/// tight loop per leaf table (`all` would resume its state machine per
/// page); after a stop the rest is only walked, not pushed (a stop is a
/// retry: rare).
fn push_resident(view: &CpuView<'_>, r: hmm::VaRange, batch: &mut hmm::RoundBatch<'_>) -> bool {
    view.iter(r).fold(true, |go, (va, l)| go && batch.push(va.as_u64(), hmm::CpuPage { frame: l.addr, writable: l.write }, false))
}

/// The CPU tables as `hmm::pt`'s walker reads them.
pub(super) type CpuView<'a> = hmm::pt::View<'a, CpuLayout, crate::platform::KernelTableMemory>;

impl AddressSpace {
    /// A read-only walker over this address space's tables, for as long as
    /// the address space is borrowed (`inner`: its locked state).
    fn view(&self, inner: &mut Inner) -> CpuView<'_> {
        let root = inner.tables().pml4().start_address();
        // SAFETY: user table nodes are freed only when the tables are
        // destroyed, in the address space's `Drop` — which the `&self`
        // borrow this view carries excludes — so every node reachable from
        // the PML4 stays allocated for `'_`; leaf entries change by single
        // stores or atomic read-modify-writes (pte.rs), under the lock, and
        // the MMU sets Accessed/Dirty atomically.
        unsafe { hmm::pt::View::new(&crate::platform::KernelTableMemory, root) }
    }
}

impl Inner {

    pub(super) fn walk(&mut self, addr: u64) -> Option<CpuPte> {
        let e = self.tables().entry(addr & !0xfff, false).ok()??;
        match e.get() {
            // A PROT_NONE page (present, supervisor-only) is not accessible.
            Pte::Present { frame, flags } if flags.contains(F::USER_ACCESSIBLE) => Some(CpuPte::of(frame, flags)),
            _ => None,
        }
    }

    pub(super) fn resolve(&mut self, id: super::AspaceId, addr: u64, access: Access, protect: Option<hmm::VaRange>) -> Result<CpuPte, AccessError> {
        let err = |reason| AccessError { addr, access, reason };
        let vma = self.vmas.find(addr).ok_or(err(AccessFailure::NoVma))?;
        let need = match access {
            Access::Read => Prot::READ,
            Access::Write => Prot::WRITE,
            Access::Exec => Prot::EXEC,
        };
        if !vma.prot.contains(need) {
            return Err(err(AccessFailure::Protection));
        }
        let va = addr & !0xfff;
        let write = access == Access::Write;
        // A device holds the page exclusively: any access revokes that
        // first (every device's entry goes) and restores the entry.
        if let Some(Pte::Exclusive { .. }) = self.tables().entry(va, false).ok().flatten().map(|e| e.get()) {
            self.revoke_exclusive(id, hmm::VaRange::page_of(va).expect("user page"));
        }
        if frames::stats().free < RECLAIM_LOW {
            // Frames run low: reclaim by the clock policy (never this page)
            // before taking one — the rare path, so the extra walk is fine.
            let needs_frame = match self.tables().entry(va, false).ok().flatten().map(|e| e.get()) {
                None | Some(Pte::None) | Some(Pte::Swapped { .. }) | Some(Pte::Dying { .. }) => true,
                Some(Pte::Present { flags, .. }) => write && !flags.contains(F::WRITABLE),
                Some(Pte::Exclusive { .. }) => false,
            };
            if needs_frame {
                let freed = super::clock::reclaim(id, self, RECLAIM_WANT, protect);
                log::debug!("frames low: reclaimed {freed} (fault in address space {})", id.0);
                if freed == 0 && frames::stats().free < USER_FLOOR {
                    // Nothing could be reclaimed (swap full), and the last
                    // frames are the kernel's (heap growth, the swap path
                    // itself): user memory stops here, cleanly.
                    return Err(err(AccessFailure::OutOfMemory));
                }
            }
        }
        let has_source = self.source.is_some();
        let e = self.tables().entry(va, true).map_err(|_| err(AccessFailure::OutOfMemory))?.expect("created");
        // Entries become present from non-present ones here by exchange (no
        // MMU writes a non-present entry; we hold the lock): nothing cached.
        match e.get() {
            // (An address space with a page source — a program image — takes
            // the path below: its first read must see the image, not zeros.)
            Pte::None if !write && !has_source => {
                // A read of never-written memory: the shared zero frame,
                // read-only; the first write copies it (it is never the only
                // reference, so the COW path below always copies).
                let z = frames::zero_frame().map_err(|_| err(AccessFailure::OutOfMemory))?;
                let z = z.into_raw();
                let _ = e.exchange(Pte::Present { frame: z, flags: leaf_flags(vma.prot, false) });
                log::trace!("cpu.pte va={va:#x} pa={:#x} why=zero-page", z.start_address().as_u64());
                self.stats.zero_page_maps += 1;
            }
            Pte::None => {
                let f = frames::alloc_zeroed().map_err(|_| err(AccessFailure::OutOfMemory))?;
                f.set_flags(FrameFlags::USER);
                let filled = self.fill_from_source(va, &f); // a program's image (see `source`)
                let e = self.tables().entry(va, false).ok().flatten().expect("created above");
                let f = f.into_raw();
                let _ = e.exchange(Pte::Present { frame: f, flags: leaf_flags(vma.prot, true) });
                let pa = f.start_address().as_u64();
                if filled {
                    log::trace!("cpu.pte va={va:#x} pa={pa:#x} why=image");
                } else {
                    log::trace!("cpu.pte va={va:#x} pa={pa:#x} why=demand-zero");
                    self.stats.demand_zero += 1;
                }
            }
            Pte::Swapped { slot } => {
                let f = frames::alloc().map_err(|_| err(AccessFailure::OutOfMemory))?;
                f.set_flags(FrameFlags::USER);
                if let Err(e) = SWAP.read(slot, f.frame()) {
                    log::warn!("swap-in of {va:#x} from slot {slot} failed: {e}");
                    return Err(err(AccessFailure::SwapIo));
                }
                // The entry's slot reference moves to the swap cache: the
                // slot still holds exactly this page, kept while it is clean.
                let prev = frames::set_swap_slot(f.frame(), Some(slot));
                debug_assert!(prev.is_none());
                let e = self.tables().entry(va, false).ok().flatten().expect("still there");
                let f = f.into_raw();
                let _ = e.exchange(Pte::Present { frame: f, flags: leaf_flags(vma.prot, true) });
                log::debug!("swap.in va={va:#x} slot={slot} pa={:#x}", f.start_address().as_u64());
                self.stats.swap_ins += 1;
            }
            Pte::Dying { .. } => unreachable!("dying entries exist only inside munmap"),
            Pte::Present { frame, flags } if write && !flags.contains(F::WRITABLE) => {
                if frames::refcount(frame) == 1 {
                    // Nobody shares it any more: reuse, no copy, nothing to notify.
                    // Adding a permission: a stale read-only translation
                    // elsewhere only faults once more (then flushes below).
                    e.set_flags(F::WRITABLE);
                    log::trace!("cpu.pte va={va:#x} pa={:#x} why=cow-reuse", frame.start_address().as_u64());
                    self.stats.cow_reuses += 1;
                    if self.active() {
                        x86_64::instructions::tlb::flush(page(va).start_address());
                    }
                } else {
                    let copy = frames::alloc().map_err(|_| err(AccessFailure::OutOfMemory))?;
                    copy.set_flags(FrameFlags::USER);
                    let range = hmm::VaRange::page_of(va).expect("user page");
                    self.change(id, Change { range, kind: ChangeKind::CowBreak }, |inner, tlb, frees| {
                        // Copy inside the change: no device can write the
                        // shared frame any more, and no CPU can (it is
                        // read-only in every entry that maps it).
                        // SAFETY: `copy` is new and ours; `frame` is allocated (we hold a reference).
                        unsafe { direct::copy_frame(copy.frame(), frame) };
                        let e = inner.tables().entry(va, false).ok().flatten().expect("still mapped");
                        let old = e.exchange(Pte::Present { frame: copy.into_raw(), flags: (flags & !(F::ACCESSED | F::DIRTY)) | F::WRITABLE });
                        debug_assert!(matches!(old, Pte::Present { frame: f, .. } if f == frame));
                        tlb.add(page(va));
                        // SAFETY: the entry held one reference to the old frame.
                        unsafe { frees.frame(frame) };
                    });
                    log::debug!("cow.break va={va:#x} old={:#x}", frame.start_address().as_u64());
                    self.stats.cow_copies += 1;
                }
            }
            // Revoked above; only a stale view could get here.
            Pte::Exclusive { .. } => return Err(err(AccessFailure::OutOfMemory)),
            Pte::Present { .. } => {
                // Already resolved (e.g. a stale TLB entry): make sure the CPU sees it.
                if self.active() {
                    x86_64::instructions::tlb::flush(page(va).start_address());
                }
            }
        }
        Ok(self.walk(va).expect("resident after resolving"))
    }
}
