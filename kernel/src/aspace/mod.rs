//! Process address spaces on real x86-64 page tables.
//!
//! An [`AddressSpace`] owns a PML4 (user half its own, kernel half shared),
//! a set of [`Vma`]s, and the frames and swap slots its entries reference.
//! Dropping it is process exit: listeners hear `Exit`, then every frame,
//! swap slot and page-table page is released.
//!
//! # The fault path
//!
//! ```text
//!  kernel code: aspace.copy_to_user(va, bytes)
//!    └─ load this PML4 into CR3 ─► rep movsb (listed in the exception table)
//!         #PF ─► trap handler: extable fixup, nothing else ─► copy returns (CR2, error)
//!    └─ aspace.handle_fault(CR2, access)        ← safe Rust, address space in hand
//!         outside every VMA / against its prot ─► Err(AccessError { addr, access, reason })
//!         exclusive ─► a device's exclusive access is revoked first (any
//!                      access; see [`exclusive`]), then as below
//!         none      ─► demand-zero: fresh zeroed frame
//!         swapped   ─► swap-in: frame filled from the slot (slot kept while clean)
//!         read-only + write in a writable VMA ─► COW break: copy, or reuse if
//!                                                 the frame's refcount is 1
//!          (frames low? first the global clock reclaims a batch — see
//!          [`clock`] — never the pages of this fault's prefault window;
//!          only if that frees nothing: Err(OutOfMemory))
//!    └─ retry the rest of the copy
//! ```
//!
//! HMM's device faults enter at [`AddressSpace::fault_round`]: a page
//! present with the access asked for is taken as it is, anything else goes
//! through the same code (`Inner::resolve`).
//!
//! # Locking
//! One spin lock per address space around its tables, VMAs and listeners.
//! Listeners run under it (see [`notify`] for their contract). Frames and
//! swap slots that a change frees are released only after the change's
//! `invalidate_end`, still under the lock. Order: an address space, then
//! the clock's registry, then other address spaces (only `try_lock`), then
//! the swap store, the disk, the IOMMU.
//!
//! # Memory
//! Nothing here grows with user memory on the heap: the swap cache is a
//! field of each frame's metadata, swap slot counts live in frames, and
//! changes release through fixed buffers or the page table itself.
//!
//! # TLB
//! A change produces a [`TlbFlush`] token, carried out on every CPU that
//! may cache this address space (see `mm::shootdown`) before the change's
//! `invalidate_end`; what the change took out of the entries waits in a
//! [`DeferredFrees`] that only that flush's proof releases (see
//! [`deferred`] for the event → action table, IOTLB included). Entries
//! are only changed atomically (see [`pte`]): a present entry is taken
//! away by one exchange whose returned value — not an earlier read —
//! decides what happens to the page.

mod clock;
mod deferred;
mod exclusive;
mod fault;
mod fork;
mod layout;
pub mod notify;
mod ops;
mod source;
mod pte;
mod unmap;
pub mod state;
pub mod swap;
mod uaccess;
pub use uaccess::Loaded;
pub mod vma;

pub use fault::{Access, AccessError, AccessFailure, CpuPte, RECLAIM_LOW, USER_FLOOR};
pub use notify::{AspaceId, Change, ChangeKind, Listener, ListenerId};
pub use ops::{MigrateError, PageBits};
pub use source::PageSource;
pub use vma::{Prot, Vma};

use crate::mm::frames::{Frame, OutOfFrames};
use crate::mm::tlb::{Flushed, TlbFlush};
pub(crate) use deferred::DeferredFrees;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicU32, Ordering};
use hmm::{BadRange, VaRange, PAGE};
use notify::Listeners;
use pte::{Pte, UserTables};
use crate::sync::{LockRank, RankedGuard, RankedMutex};
use vma::Vmas;
use x86_64::registers::control::Cr3;
use x86_64::structures::paging::{Page, PageTableFlags as F, PhysFrame};
use x86_64::VirtAddr;

/// Heap an area change may need (a few B-tree nodes for splits and
/// merges): checked before the change, so a full heap is a clean error.
const VMA_BOOKKEEPING: u64 = 4096;

/// Where `mmap` without a usable hint starts looking.
pub const MMAP_BASE: u64 = 0x1000_0000;

/// Counters (for tests and the console).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AspaceStats {
    pub demand_zero: u64,
    /// Reads of never-written pages answered with the shared zero frame.
    pub zero_page_maps: u64,
    pub cow_copies: u64,
    pub cow_reuses: u64,
    pub swap_ins: u64,
    pub swap_outs: u64,
    pub swap_cache_hits: u64,
    pub migrations: u64,
    pub notifications: u64,
    /// New pages whose contents came from the page source (see `source`).
    pub source_fills: u64,
}

/// Most pages one change releases through its buffer (a reclaim batch;
/// single-page changes use one or two entries).
pub const RELEASE_MAX: usize = 64;

/// Drop a user page's frame reference; with the last one, the frame's
/// swap-cache slot (if any) goes too.
pub(crate) fn release_user_frame(f: Frame) {
    if f.refcount() == 1 {
        uncache(f.frame());
    }
    drop(f);
}

/// Forget the swap-cache slot of `frame`: its contents changed (or it dies).
pub(crate) fn uncache(frame: PhysFrame) {
    if let Some(slot) = crate::mm::frames::set_swap_slot(frame, None) {
        swap::SWAP.release(slot);
    }
}

pub(crate) struct Inner {
    tables: Option<UserTables>,
    vmas: Vmas,
    listeners: Listeners,
    /// Where the global clock continues in this address space.
    clock_hand: u64,
    stats: AspaceStats,
    /// Initial contents of new pages (a program's image), if any.
    source: Option<Arc<dyn PageSource>>,
}

/// A process address space.
pub struct AddressSpace {
    id: AspaceId,
    inner: RankedMutex<Inner>,
}

static NEXT_ID: AtomicU32 = AtomicU32::new(1);

// ---- errors ----------------------------------------------------------------

/// `mmap` failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmapError {
    BadRange(BadRange),
    ZeroLength,
    /// A fixed mapping would overlap an existing one (use `replace`).
    Overlap,
    /// No gap large enough.
    NoSpace,
    /// No kernel memory left for the area's bookkeeping.
    NoMemory,
}

/// `munmap` / `mprotect` on a bad range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeError {
    BadRange(BadRange),
    /// Part of the range is not mapped (mprotect requires all of it).
    NotMapped,
    /// `munmap` of length 0.
    ZeroLength,
    /// No kernel memory left for the areas' bookkeeping (a split).
    NoMemory,

}

/// `fork` failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForkError {
    NoMemory,
}

/// Any address-space error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AspaceError {
    Mmap(MmapError),
    Range(RangeError),
    Fork(ForkError),
    Access(AccessError),
    Migrate(MigrateError),
    NoMemory,
}

impl From<MmapError> for AspaceError {
    fn from(e: MmapError) -> Self {
        Self::Mmap(e)
    }
}
impl From<RangeError> for AspaceError {
    fn from(e: RangeError) -> Self {
        Self::Range(e)
    }
}
impl From<ForkError> for AspaceError {
    fn from(e: ForkError) -> Self {
        Self::Fork(e)
    }
}
impl From<AccessError> for AspaceError {
    fn from(e: AccessError) -> Self {
        Self::Access(e)
    }
}
impl From<MigrateError> for AspaceError {
    fn from(e: MigrateError) -> Self {
        Self::Migrate(e)
    }
}
impl From<OutOfFrames> for AspaceError {
    fn from(_: OutOfFrames) -> Self {
        Self::NoMemory
    }
}
impl From<OutOfFrames> for ForkError {
    fn from(_: OutOfFrames) -> Self {
        Self::NoMemory
    }
}

impl fmt::Display for AspaceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Mmap(MmapError::BadRange(r)) | Self::Range(RangeError::BadRange(r)) => write!(f, "{r}"),
            Self::Mmap(MmapError::ZeroLength) => f.write_str("mmap of length 0"),
            Self::Mmap(MmapError::Overlap) => f.write_str("the fixed range overlaps an existing mapping"),
            Self::Mmap(MmapError::NoSpace) => f.write_str("no free range of that size"),
            Self::Mmap(MmapError::NoMemory) | Self::Range(RangeError::NoMemory) => f.write_str("out of kernel memory for the areas"),
            Self::Range(RangeError::NotMapped) => f.write_str("part of the range is not mapped"),
            Self::Range(RangeError::ZeroLength) => f.write_str("munmap of length 0"),
            Self::Fork(ForkError::NoMemory) | Self::NoMemory => f.write_str("out of memory"),
            Self::Access(e) => write!(f, "{e}"),
            Self::Migrate(e) => write!(f, "{e}"),
        }
    }
}

// ---- the address space -------------------------------------------------------

impl Inner {
    fn tables(&mut self) -> &mut UserTables {
        self.tables.as_mut().expect("address space is live")
    }

    fn active(&mut self) -> bool {
        Cr3::read().0 == self.tables().pml4()
    }

    /// The notification bracket around a change of `range`: start, the
    /// change (which records pages to flush and what it took out of the
    /// entries), TLB flush on every CPU caching this space, end, then the
    /// deferred frees.
    fn change<R>(&mut self, id: AspaceId, change: Change, f: impl FnOnce(&mut Inner, &mut TlbFlush, &mut DeferredFrees) -> R) -> R {
        // Listeners are moved out for the call (no allocation) so their
        // dirty reports can mark this address space's entries at once.
        let listeners = core::mem::take(&mut self.listeners);
        listeners.start(id, &change, &mut |va| self.mark_dirty(va));
        self.listeners = listeners;
        self.stats.notifications += 1;
        let mut tlb = TlbFlush::new();
        let mut frees = DeferredFrees::new();
        let r = f(self, &mut tlb, &mut frees);
        let flushed = self.flush(tlb);
        self.listeners.end(id, &change);
        frees.free(flushed, self.tables.as_mut().expect("address space is live"));
        r
    }

    /// Flush `tlb` from every CPU that may cache this address space.
    fn flush(&mut self, tlb: TlbFlush) -> Flushed {
        tlb.flush(self.tables().pml4())
    }
}

fn page(va: u64) -> Page {
    Page::containing_address(VirtAddr::new(va))
}

/// Leaf flags for a page of `vma`.
pub(crate) fn leaf_flags(prot: Prot, writable: bool) -> F {
    if prot.is_empty() {
        // PROT_NONE: kept present for its frame, unreachable from user mode.
        return F::PRESENT | F::NO_EXECUTE;
    }
    let mut f = F::PRESENT | F::USER_ACCESSIBLE;
    if writable && prot.contains(Prot::WRITE) {
        f |= F::WRITABLE;
    }
    if !prot.contains(Prot::EXEC) {
        f |= F::NO_EXECUTE;
    }
    f
}

impl AddressSpace {
    /// An empty address space.
    pub fn new() -> Result<Arc<AddressSpace>, OutOfFrames> {
        let tables = UserTables::new()?;
        let a = Arc::new(AddressSpace {
            id: AspaceId(NEXT_ID.fetch_add(1, Ordering::Relaxed)),
            inner: RankedMutex::new(LockRank::AddressSpace, Inner { tables: Some(tables), vmas: Vmas::default(), listeners: Listeners::default(), clock_hand: 0, stats: AspaceStats::default(), source: None }),
        });
        clock::register(&a)?;
        Ok(a)
    }

    pub fn id(&self) -> AspaceId {
        self.id
    }

    pub(crate) fn lock(&self) -> RankedGuard<'_, Inner> {
        self.inner.lock()
    }

    /// The PML4 frame (for CR3 and diagnostics).
    pub fn pml4(&self) -> PhysFrame {
        self.lock().tables().pml4()
    }

    pub fn stats(&self) -> AspaceStats {
        self.lock().stats
    }

    /// The CPUs that may cache this address space's translations now
    /// (those with it loaded; see `mm::shootdown`).
    pub fn cpus_loaded(&self) -> crate::cpus::CpuSet {
        crate::mm::shootdown::cpus_caching(self.pml4())
    }

    /// Page-table frames in use (PML4 included).
    pub fn table_frames(&self) -> usize {
        self.lock().tables().table_frames
    }

    /// The page-table entries a CPU walk of `addr` meets: (level 4..1,
    /// index, raw entry).
    pub fn walk_levels(&self, addr: u64) -> Vec<(u8, usize, u64)> {
        self.lock().tables().levels(addr)
    }

    /// The areas, in order.
    pub fn vmas(&self) -> Vec<Vma> {
        self.lock().vmas.iter().collect()
    }

    /// The area containing `addr`.
    pub fn vma_at(&self, addr: u64) -> Option<Vma> {
        self.lock().vmas.find(addr)
    }

    /// Register a listener for changes.
    pub fn register_listener(&self, l: Arc<dyn Listener>) -> ListenerId {
        self.lock().listeners.add(l)
    }

    /// Remove a listener; false if it was not registered.
    pub fn unregister_listener(&self, id: ListenerId) -> bool {
        self.lock().listeners.remove(id)
    }

    /// Map `len` bytes of zero-filled anonymous memory. `at`: with `fixed`
    /// the exact address (refused if it overlaps anything), otherwise a
    /// hint used if free. Returns the range.
    pub fn mmap(&self, at: Option<u64>, len: u64, prot: Prot, fixed: bool) -> Result<VaRange, MmapError> {
        if len == 0 {
            return Err(MmapError::ZeroLength);
        }
        let len = len.checked_next_multiple_of(PAGE).ok_or(MmapError::NoSpace)?;
        if !crate::mm::heap::has_room(VMA_BOOKKEEPING) {
            return Err(MmapError::NoMemory);
        }
        let mut inner = self.lock();
        let want = match at {
            Some(a) => Some(VaRange::new(a, a.saturating_add(len)).map_err(MmapError::BadRange)?),
            None if fixed => return Err(MmapError::BadRange(BadRange { start: 0, end: len })),
            None => None,
        };
        let range = match want {
            Some(r) if r.start() >= crate::mm::USER_MIN && !inner.vmas.overlaps(r) => r,
            Some(_) if fixed => return Err(MmapError::Overlap),
            _ => Self::find_gap(&inner.vmas, at.unwrap_or(MMAP_BASE).max(MMAP_BASE), len).ok_or(MmapError::NoSpace)?,
        };
        inner.vmas.insert(Vma { range, prot });
        Ok(range)
    }

    fn find_gap(vmas: &Vmas, from: u64, len: u64) -> Option<VaRange> {
        let mut at = from.checked_next_multiple_of(PAGE)?;
        for v in vmas.iter() {
            if v.range.end() <= at {
                continue;
            }
            if v.range.start() >= at.checked_add(len)? {
                break;
            }
            at = v.range.end();
        }
        VaRange::new(at, at.checked_add(len)?).ok()
    }

    /// Unmap any page-aligned range (parts not mapped are ignored). Length
    /// 0 is an error, as in POSIX.
    pub fn munmap(&self, start: u64, len: u64) -> Result<(), RangeError> {
        if len == 0 {
            return Err(RangeError::ZeroLength);
        }
        let r = VaRange::new(start, start.saturating_add(len)).map_err(RangeError::BadRange)?;
        if !crate::mm::heap::has_room(VMA_BOOKKEEPING) {
            return Err(RangeError::NoMemory); // a split inserts an area
        }
        let mut inner = self.lock();
        if !inner.vmas.overlaps(r) {
            return Ok(());
        }
        // A small unmap frees through the change's fixed buffer (one walk);
        // a bulk one keeps its work list in the table (dying entries, reaped
        // by the deferred frees after the flush), and so do swapped entries.
        inner.change(self.id, Change { range: r, kind: ChangeKind::Unmap }, |inner, tlb, frees| {
            let reap = if r.pages() <= RELEASE_MAX as u64 {
                inner.drop_entries(r, tlb, frees)
            } else {
                inner.kill_entries(r, tlb);
                true
            };
            if reap {
                frees.dying(r); // released after the flush
            }
        });
        // After the invalidation bracket: the VMA bookkeeping may allocate.
        inner.vmas.remove(r);
        Ok(())
    }

    /// Change the protection of a fully mapped range. Write permission is
    /// never *added* to entries here: the next write fault adds it (so COW
    /// pages stay protected).
    pub fn mprotect(&self, start: u64, len: u64, prot: Prot) -> Result<(), RangeError> {
        let r = VaRange::new(start, start.saturating_add(len)).map_err(RangeError::BadRange)?;
        if r.is_empty() {
            return Ok(()); // POSIX: changing nothing succeeds
        }
        if !crate::mm::heap::has_room(VMA_BOOKKEEPING) {
            return Err(RangeError::NoMemory); // splits insert areas
        }
        let mut inner = self.lock();
        if !inner.vmas.covers(r) {
            return Err(RangeError::NotMapped);
        }
        // Every device loses the range if no access is left (its pages stay).
        let kind = if prot.is_empty() { ChangeKind::ProtectNone } else { ChangeKind::Protect };
        inner.change(self.id, Change { range: r, kind }, |inner, tlb, _| {
            inner.vmas.protect(r, prot);
            inner.tables().for_each(r.start(), r.end(), &mut |va, e| {
                if let Pte::Present { .. } = e.get() {
                    let new_flags = |flags: F| {
                        let keep_w = flags.contains(F::WRITABLE) && prot.contains(Prot::WRITE);
                        (flags & (F::ACCESSED | F::DIRTY)) | leaf_flags(prot, keep_w)
                    };
                    let old = e.update_flags(new_flags);
                    if new_flags(old) != old {
                        tlb.add(page(va));
                    }
                }
            });
        });
        Ok(())
    }
}

impl Inner {
    /// Set the dirty bit of a resident page a device wrote (also of one it
    /// holds exclusively); its swap-cache copy is stale from now on.
    pub(crate) fn mark_dirty(&mut self, va: u64) {
        if let Ok(Some(e)) = self.tables().entry(va & !0xfff, false) {
            match e.get() {
                Pte::Present { frame, .. } => {
                    e.set_flags(F::DIRTY);
                    uncache(frame);
                }
                Pte::Exclusive { frame, owner, .. } => {
                    // Not present: no MMU writes it; we hold the lock.
                    let _ = e.exchange(Pte::Exclusive { frame, owner, dirty: true });
                    uncache(frame);
                }
                _ => {}
            }
        }
    }
}

impl Drop for AddressSpace {
    /// Process exit: listeners hear `Exit` for the whole user range (after
    /// which no device reaches any of its pages), then everything is
    /// released as the tables are torn down — no list is built.
    fn drop(&mut self) {
        let id = self.id;
        let inner = self.inner.get_mut();
        let all = VaRange::new(0, hmm::USER_END).expect("the user range");
        let change = Change { range: all, kind: ChangeKind::Exit };
        inner.listeners.start(id, &change, &mut |_| {}); // dirty reports are moot: everything goes
        let tables = inner.tables.take().expect("live");
        // Without PCID a CPU that loaded another root caches nothing of this
        // one: so none may have it loaded now (then no flush is needed).
        let loaded = crate::mm::shootdown::cpus_caching(tables.pml4());
        assert!(loaded.is_empty(), "an address space is dropped while loaded in CR3 on {loaded:?}");
        inner.listeners.end(id, &change);
        tables.destroy(&mut |_, e| match e.get() {
            // SAFETY: a present, exclusive or dying user entry holds one frame reference.
            Pte::Present { frame, .. } | Pte::Exclusive { frame, .. } | Pte::Dying { frame } => release_user_frame(unsafe { Frame::from_raw(frame) }),
            Pte::Swapped { slot } => swap::SWAP.release(slot),
            Pte::None => {}
        });
    }
}
