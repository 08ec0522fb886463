//! Dirty/accessed harvesting, swap-out of a range (in batches; reclaim by
//! the global clock is in [`super::clock`]), migration.

use super::clock::BATCH;
use super::pte::Pte;
use super::swap::SwapError;
use super::{page, uncache, AddressSpace, Change, ChangeKind};
use crate::mm::direct;
use crate::mm::frames::{self, FrameFlags};
use alloc::vec::Vec;
use core::fmt;
use hmm::VaRange;
use x86_64::structures::paging::{PageTableFlags as F, PhysFrame};

/// Hardware bits of one page, as harvested.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageBits {
    pub addr: u64,
    pub accessed: bool,
    pub dirty: bool,
}

/// Migration failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MigrateError {
    /// Nothing resident at that address.
    NotResident(u64),
    NoMemory,
}

impl fmt::Display for MigrateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotResident(a) => write!(f, "no resident page at {a:#x} to migrate"),
            Self::NoMemory => f.write_str("no frame to migrate to"),
        }
    }
}

impl AddressSpace {
    /// Collect the accessed and dirty bits of resident pages in `range` and
    /// clear them (a `DirtyClear` change, TLB flushed). A page found dirty
    /// loses its swap-cache slot: the slot's copy is stale.
    pub fn harvest(&self, range: VaRange) -> Vec<PageBits> {
        let mut inner = self.lock();
        // The result is sized before the change: nothing allocates inside
        // the invalidation bracket (no page appears meanwhile: we hold the lock).
        let mut resident = 0;
        inner.tables().for_each(range.start(), range.end(), &mut |_, e| resident += matches!(e.get(), Pte::Present { .. }) as usize);
        let mut out = Vec::with_capacity(resident);
        inner.change(self.id, Change { range, kind: ChangeKind::DirtyClear }, |inner, tlb, _| {
            inner.tables().for_each(range.start(), range.end(), &mut |va, e| {
                if let Pte::Present { frame, .. } = e.get() {
                    // Read and clear in one atomic step: a bit the MMU sets
                    // meanwhile is either reported now or kept for next time.
                    let flags = e.clear_flags(F::ACCESSED | F::DIRTY);
                    out.push(PageBits { addr: va, accessed: flags.contains(F::ACCESSED), dirty: flags.contains(F::DIRTY) });
                    if flags.intersects(F::ACCESSED | F::DIRTY) {
                        tlb.add(page(va));
                    }
                    if flags.contains(F::DIRTY) {
                        // The dirty bit is gone: the cached slot must not pass for clean.
                        uncache(frame);
                    }
                }
            });
        });
        out
    }

    /// Swap out every resident page in `range`, in batches of up to
    /// [`BATCH`] pages, one notification each: contents go to a swap slot
    /// (rewritten only if dirty or not cached), frames are freed. Returns
    /// how many pages left memory; stops at the first error (swap full).
    pub fn swap_out(&self, range: VaRange) -> usize {
        self.try_swap_out(range).0
    }

    /// [`AddressSpace::swap_out`], with the error that stopped it.
    pub fn try_swap_out(&self, range: VaRange) -> (usize, Option<SwapError>) {
        let mut inner = self.lock();
        inner.revoke_exclusive(self.id, range); // a device's exclusive access ends first
        let mut total = 0;
        let mut from = range.start();
        while from < range.end() {
            let mut vas = [0u64; BATCH];
            let mut n = 0;
            let mut next = range.end();
            inner.tables().for_each_while(from, range.end(), &mut |va, e| {
                if let Pte::Present { .. } = e.get() {
                    if n == BATCH {
                        next = va;
                        return false;
                    }
                    vas[n] = va;
                    n += 1;
                }
                true
            });
            let (k, err) = inner.evict_batch(self.id, &vas[..n]);
            total += k;
            if err.is_some() {
                return (total, err);
            }
            from = next;
        }
        (total, None)
    }

    /// Free up to `n` frames by the global clock (see [`super::clock`]).
    pub fn reclaim(&self, n: usize) -> usize {
        let mut inner = self.lock();
        super::clock::reclaim(self.id, &mut inner, n, None)
    }

    /// Move the page at `addr` to another frame: contents copied, entry
    /// updated, TLB flushed, old frame reference dropped — a `Migrate`
    /// change. Returns (old, new) frames.
    pub fn migrate(&self, addr: u64) -> Result<(PhysFrame, PhysFrame), MigrateError> {
        let va = addr & !0xfff;
        if addr >= crate::mm::USER_END {
            return Err(MigrateError::NotResident(addr));
        }
        let mut inner = self.lock();
        if let Ok(r) = VaRange::page_of(va) {
            inner.revoke_exclusive(self.id, r); // a device's exclusive access ends first
        }
        let old = match inner.tables().entry(va, false).ok().flatten().map(|e| e.get()) {
            Some(Pte::Present { frame, .. }) => frame,
            _ => return Err(MigrateError::NotResident(addr)),
        };
        let new = frames::alloc().map_err(|_| MigrateError::NoMemory)?;
        new.set_flags(FrameFlags::USER);
        let new_frame = new.frame();
        let range = VaRange::page_of(va).expect("user page");
        inner.change(self.id, Change { range, kind: ChangeKind::Migrate }, |inner, tlb, frees| {
            // No device can write the old frame any more (listeners ran).
            // Take the page from every CPU (exchange, then flush) before
            // copying: a CPU writing through its TLB meanwhile would
            // otherwise write the old frame after the copy — a lost write.
            let e = inner.tables().entry(va, false).ok().flatten().expect("resident");
            let Pte::Present { flags, .. } = e.exchange(Pte::Dying { frame: old }) else { unreachable!("resident") };
            tlb.add(page(va));
            let _flushed = inner.flush(core::mem::take(tlb));
            // SAFETY: `new` is ours; `old` is live (the dying entry holds a
            // reference) and nobody can write it now.
            unsafe { direct::copy_frame(new.frame(), old) };
            let e = inner.tables().entry(va, false).ok().flatten().expect("resident");
            // Non-present → present: nothing cached to flush. The flags
            // (Dirty included) are those the exchange returned.
            let _ = e.exchange(Pte::Present { frame: new.into_raw(), flags });
            // SAFETY: the entry held one reference to the old frame.
            unsafe { frees.frame(old) };
        });
        inner.stats.migrations += 1;
        Ok((old, new_frame))
    }
}


