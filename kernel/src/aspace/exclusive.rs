//! Device-exclusive entries (Linux's `make_device_exclusive`): a device
//! takes exclusive (atomic) access to pages, and the CPU loses access to
//! them — their entries become non-present entries naming the device.
//!
//! ```text
//!  make_exclusive(range, owner):
//!    lock
//!    each page: resolve for write (COW break, swap-in, demand-zero; a page
//!               another device holds is revoked) — unless owner holds it
//!    one Exclusive{owner} change over the range:   ← other devices drop the
//!        Present{frame, flags} → Exclusive{frame, owner, dirty}    pages; the owner's
//!                                                     mirror is exempt
//!    unlock → HMM writes the owner's entries (if its interval is unchanged)
//!
//!  any CPU access to an exclusive page (read, write, exec — through
//!  `resolve`), fork, swap-out, migration:
//!    one Revoke change over the exclusive pages of the range   ← every device
//!        Exclusive{frame, dirty} → Present{frame, VMA flags | dirty}  drops them
//! ```
//!
//! munmap and exit release an exclusive entry's frame like a present one
//! (their own notification already removes every device's entry). Reclaim's
//! clock passes exclusive pages by (the device holds them); swapping a range
//! out explicitly revokes first. The state lives only in the entry: nothing
//! else to keep in sync, nothing to leak.

use super::fault::{Access, AccessError, AccessFailure, CpuPte};
use super::pte::{Entry, Pte, MAX_EXCLUSIVE_OWNER};
use super::{leaf_flags, page, AddressSpace, AspaceId, Change, ChangeKind, Inner};
use crate::mm::frames;
use alloc::vec::Vec;
use hmm::VaRange;
use x86_64::structures::paging::{PageTableFlags as F, PhysFrame};

impl AddressSpace {
    /// Give device `owner` exclusive access to `range` (see the module
    /// docs). Returns the pages, in order.
    pub fn make_exclusive(&self, range: VaRange, owner: u32) -> Result<Vec<CpuPte>, AccessError> {
        let err = |addr, reason| AccessError { addr, access: Access::Write, reason };
        if owner > MAX_EXCLUSIVE_OWNER {
            return Err(err(range.start(), AccessFailure::Protection));
        }
        let mut inner = self.lock();
        for va in range.page_addrs() {
            if inner.exclusive_owner(va) != Some(owner) {
                inner.resolve(self.id, va, Access::Write, None)?;
            }
        }
        // Reclaim while resolving a later page may have evicted an earlier one.
        let mut found = Vec::new();
        for va in range.page_addrs() {
            match inner.tables().entry(va, false).ok().flatten().map(|e| e.get()) {
                Some(Pte::Present { frame, flags }) if flags.contains(F::WRITABLE) => found.push((va, frame, flags.contains(F::DIRTY))),
                Some(Pte::Exclusive { frame, owner: o, dirty }) if o == owner => found.push((va, frame, dirty)),
                _ => return Err(err(va, AccessFailure::OutOfMemory)),
            }
        }
        inner.change(self.id, Change { range, kind: ChangeKind::Exclusive { owner } }, |inner, tlb, _| {
            for &(va, frame, _) in &found {
                let e = inner.tables().entry(va, false).ok().flatten().expect("resident");
                // One exchange: the Dirty bit it returns includes what the
                // listeners just reported and any CPU write up to now. (A
                // CPU with the page cached writable can still write until
                // the flush: such a write finds D already set, so it is
                // counted here too.)
                let old = e.exchange(Pte::Exclusive { frame, owner, dirty: false });
                let dirty = match old {
                    Pte::Present { flags, .. } => flags.contains(F::DIRTY),
                    Pte::Exclusive { dirty, .. } => dirty,
                    _ => false,
                };
                if dirty {
                    let _ = e.exchange(Pte::Exclusive { frame, owner, dirty });
                }
                if let Pte::Present { .. } = old {
                    tlb.add(page(va));
                }
            }
        });
        Ok(found.into_iter().map(|(_, frame, dirty)| CpuPte { frame, writable: true, dirty, accessed: true }).collect())
    }

    /// The device holding `addr` exclusively, if any.
    pub fn exclusive_owner(&self, addr: u64) -> Option<u32> {
        self.lock().exclusive_owner(addr & !0xfff)
    }
}

impl Inner {
    pub(super) fn exclusive_owner(&mut self, va: u64) -> Option<u32> {
        match self.tables().entry(va, false).ok()??.get() {
            Pte::Exclusive { owner, .. } => Some(owner),
            _ => None,
        }
    }

    /// Revoke every device-exclusive entry in `range` (one `Revoke` change
    /// per run of consecutive exclusive pages) and restore CPU access.
    /// Returns how many.
    pub(super) fn revoke_exclusive(&mut self, id: AspaceId, range: VaRange) -> usize {
        let mut runs: Vec<(u64, u64)> = Vec::new();
        self.tables().for_each(range.start(), range.end(), &mut |va, e| {
            if let Pte::Exclusive { .. } = e.get() {
                match runs.last_mut() {
                    Some((_, end)) if *end == va => *end += 4096,
                    _ => runs.push((va, va + 4096)),
                }
            }
        });
        let mut count = 0;
        for (start, end) in runs {
            let run = VaRange::new(start, end).expect("user pages");
            self.revoke_run(id, run);
            count += run.pages() as usize;
        }
        count
    }

    fn revoke_run(&mut self, id: AspaceId, run: VaRange) {
        self.change(id, Change { range: run, kind: ChangeKind::Revoke }, |inner, _tlb, _| {
            for va in run.page_addrs() {
                let prot = inner.vmas.find(va).map(|v| v.prot);
                let e = inner.tables().entry(va, false).ok().flatten().expect("held");
                // Read the entry now: a device's dirtiness was just reported.
                if let Pte::Exclusive { frame, dirty, .. } = e.get() {
                    restore(e, frame, prot, dirty);
                }
            }
            // Non-present → present: no TLB entry to flush.
        });
    }
}

/// The present entry an exclusive one stood for: the area's protection,
/// writable if the frame is not shared (it was made private when taken).
fn restore(e: Entry<'_>, frame: PhysFrame, prot: Option<super::Prot>, dirty: bool) {
    let prot = prot.unwrap_or(super::Prot::READ);
    let mut flags = leaf_flags(prot, frames::refcount(frame) == 1) | F::ACCESSED;
    if dirty {
        flags |= F::DIRTY;
    }
    // Non-present → present: no MMU writes the old word, nothing cached.
    let _ = e.exchange(Pte::Present { frame, flags });
}
