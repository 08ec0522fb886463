//! Dirty/accessed harvesting, swap-out and reclaim, migration.

use super::pte::{self, Pte};
use super::swap::SWAP;
use super::{page, AddressSpace, Change, ChangeKind, Inner, Released};
use crate::mm::direct;
use crate::mm::frames::{self, Frame, FrameFlags};
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
        let mut out = Vec::new();
        inner.change(self.id, Change { range, kind: ChangeKind::DirtyClear }, |inner, tlb, released| {
            inner.tables().for_each(range.start(), range.end(), &mut |va, e| {
                if let Pte::Present { frame, flags } = Pte::decode(e) {
                    out.push(PageBits { addr: va, accessed: flags.contains(F::ACCESSED), dirty: flags.contains(F::DIRTY) });
                    if flags.intersects(F::ACCESSED | F::DIRTY) {
                        pte::set_present(e, frame, flags & !(F::ACCESSED | F::DIRTY));
                        tlb.add(page(va));
                    }
                }
            });
            for b in out.iter().filter(|b| b.dirty) {
                if let Some(slot) = inner.swap_cache.remove(&b.addr) {
                    released.push(Released::Slot(slot));
                }
            }
        });
        out
    }

    /// Swap out every resident page in `range`: its contents go to a swap
    /// slot (rewritten only if dirty or not cached), the frame reference is
    /// dropped. Returns how many pages left memory.
    pub fn swap_out(&self, range: VaRange) -> usize {
        self.lock().swap_out(self.id, range)
    }

    /// Free up to `n` frames by the clock policy (see [`Inner::reclaim`]).
    pub fn reclaim(&self, n: usize) -> usize {
        self.lock().reclaim(self.id, n, None)
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
        let old = match inner.tables().entry(va, false).ok().flatten().map(|e| Pte::decode(e)) {
            Some(Pte::Present { frame, .. }) => frame,
            _ => return Err(MigrateError::NotResident(addr)),
        };
        let new = frames::alloc().map_err(|_| MigrateError::NoMemory)?;
        new.set_flags(FrameFlags::USER);
        let new_frame = new.frame();
        let range = VaRange::page_of(va).expect("user page");
        inner.change(self.id, Change { range, kind: ChangeKind::Migrate }, |inner, tlb, released| {
            // Only now — no device can write the old frame any more, and a
            // listener may have just marked the page dirty — read the entry
            // and copy.
            let e = inner.tables().entry(va, false).ok().flatten().expect("resident");
            let Pte::Present { flags, .. } = Pte::decode(e) else { unreachable!("resident") };
            // SAFETY: `new` is ours; `old` is live (the entry holds a reference).
            unsafe { direct::copy_frame(new.frame(), old) };
            pte::set_present(e, new.into_raw(), flags);
            tlb.add(page(va));
            // SAFETY: the entry held one reference to the old frame.
            released.push(Released::Frame(unsafe { Frame::from_raw(old) }));
        });
        inner.stats.migrations += 1;
        Ok((old, new_frame))
    }
}

impl Inner {
    pub(super) fn swap_out(&mut self, id: super::AspaceId, range: VaRange) -> usize {
        self.revoke_exclusive(id, range); // a device's exclusive access ends first
        let mut count = 0;
        self.change(id, Change { range, kind: ChangeKind::SwapOut }, |inner, tlb, released| {
            let mut pages = Vec::new();
            inner.tables().for_each(range.start(), range.end(), &mut |va, e| {
                if let Pte::Present { frame, flags } = Pte::decode(e) {
                    pages.push((va, frame, flags));
                }
            });
            for (va, frame, flags) in pages {
                let cached = inner.swap_cache.remove(&va);
                let slot = match cached {
                    Some(slot) if !flags.contains(F::DIRTY) => {
                        inner.stats.swap_cache_hits += 1;
                        slot
                    }
                    other => {
                        if let Some(stale) = other {
                            released.push(Released::Slot(stale));
                        }
                        let mut buf = alloc::boxed::Box::new([0u8; 4096]);
                        direct::read_frame(frame, 0, &mut buf[..]);
                        SWAP.write_new(&buf)
                    }
                };
                let e = inner.tables().entry(va, false).ok().flatten().expect("resident");
                pte::set_swapped(e, slot);
                tlb.add(page(va));
                // SAFETY: the entry held one reference.
                released.push(Released::Frame(unsafe { Frame::from_raw(frame) }));
                inner.stats.swap_outs += 1;
                count += 1;
            }
        });
        count
    }

    /// The clock policy: sweep resident pages from where the last sweep
    /// stopped; a page with its accessed bit set gets a second chance (the
    /// bit is cleared), one without is swapped out. At most two sweeps;
    /// `keep` is never evicted (the page being faulted). Returns frames freed.
    pub(super) fn reclaim(&mut self, id: super::AspaceId, n: usize, keep: Option<u64>) -> usize {
        let mut freed = 0;
        for _pass in 0..2 {
            let mut resident = Vec::new();
            self.tables().for_each(0, crate::mm::USER_END, &mut |va, e| {
                if let Pte::Present { flags, .. } = Pte::decode(e) {
                    resident.push((va, flags.contains(F::ACCESSED)));
                }
            });
            let start = resident.iter().position(|(va, _)| *va >= self.clock_hand).unwrap_or(0);
            let order: Vec<_> = resident[start..].iter().chain(&resident[..start]).copied().collect();
            for (va, accessed) in order {
                if freed == n {
                    return freed;
                }
                if Some(va) == keep {
                    continue;
                }
                if accessed {
                    self.clear_accessed(va);
                } else {
                    freed += self.swap_out(id, VaRange::page_of(va).expect("user page"));
                }
                self.clock_hand = va + 4096;
            }
        }
        freed
    }

    /// Clear the accessed bit of the resident page at `va` (second chance).
    fn clear_accessed(&mut self, va: u64) {
        let active = self.active();
        if let Ok(Some(e)) = self.tables().entry(va, false) {
            if let Pte::Present { frame, flags } = Pte::decode(e) {
                pte::set_present(e, frame, flags & !F::ACCESSED);
                if active {
                    x86_64::instructions::tlb::flush(page(va).start_address());
                }
            }
        }
    }
}
