//! fork: the child gets a copy-on-write copy.
//!
//! Every present page is shared (frame reference count + 1) and mapped
//! read-only on *both* sides; the parent's writable pages lose write access
//! under a `CowWriteProtect` notification (one per writable area), so a
//! device mirroring the parent stops writing the now-shared frame. The
//! first write on either side copies (or, if the count fell back to 1,
//! just re-enables write). Swapped pages share their slot.

use super::pte::Pte;
use super::swap::SWAP;
use super::{page, uncache, AddressSpace, Change, ChangeKind, ForkError, Prot};
use crate::mm::frames::Frame;
use alloc::sync::Arc;
use alloc::vec::Vec;
use x86_64::structures::paging::PageTableFlags as F;

impl AddressSpace {
    /// A copy-on-write child. Entries are installed in the child as the
    /// parent's are walked (no list: nothing allocates under the lock but
    /// the child's page tables); out of frames, the child is dropped, which
    /// releases whatever it already shares.
    pub fn fork(&self) -> Result<Arc<AddressSpace>, ForkError> {
        let child = AddressSpace::new()?;
        let mut parent = self.lock();
        let mut vmas = Vec::new();
        vmas.try_reserve_exact(parent.vmas.iter().count()).map_err(|_| ForkError::NoMemory)?;
        vmas.extend(parent.vmas.iter());
        // The child's area tree is built with infallible inserts: make sure
        // the heap has room first (a clean error, not the allocator's panic).
        if !crate::mm::heap::has_room(super::VMA_BOOKKEEPING.saturating_mul(vmas.len() as u64 + 1)) {
            return Err(ForkError::NoMemory);
        }
        // Exclusive access by a device ends before the pages are shared.
        for v in &vmas {
            parent.revoke_exclusive(self.id, v.range);
        }
        {
            let mut c = child.lock();
            for v in &vmas {
                c.vmas.insert(*v);
            }
        }
        for v in vmas {
            let body = |inner: &mut super::Inner, tlb: &mut crate::mm::tlb::TlbFlush| -> Result<(), ForkError> {
                let mut c = child.lock();
                let mut failed = false;
                inner.tables().for_each_while(v.range.start(), v.range.end(), &mut |va, e| {
                    let target = match c.tables().entry(va, true) {
                        Ok(t) => t.expect("created"),
                        Err(_) => {
                            failed = true;
                            return false;
                        }
                    };
                    match e.get() {
                        Pte::Present { frame, .. } => {
                            // Write-protect atomically; decide with the flags
                            // as they were at that instant (Dirty included).
                            let flags = e.clear_flags(F::WRITABLE);
                            if flags.contains(F::WRITABLE) {
                                tlb.add(page(va));
                            }
                            if flags.contains(F::DIRTY) {
                                // The child's copy of the entry is clean: a
                                // cached slot would pass for this page's contents.
                                uncache(frame);
                            }
                            // SAFETY: the entry holds a reference, so the frame is live.
                            let shared = unsafe { Frame::share_raw(frame) };
                            // The child is not loaded anywhere: its entries are
                            // new (none → present), nothing cached to flush.
                            let _ = target.exchange(Pte::Present { frame: shared.into_raw(), flags: flags & !(F::WRITABLE | F::DIRTY | F::ACCESSED) });
                        }
                        Pte::Swapped { slot } => {
                            if SWAP.share(slot).is_err() {
                                failed = true;
                                return false;
                            }
                            let _ = target.exchange(Pte::Swapped { slot });
                        }
                        Pte::Dying { .. } => unreachable!("dying entries exist only inside munmap"),
                        // Exclusive entries were revoked above, under this lock.
                        Pte::None | Pte::Exclusive { .. } => {}
                    }
                    true
                });
                if failed {
                    Err(ForkError::NoMemory)
                } else {
                    Ok(())
                }
            };
            if v.prot.contains(Prot::WRITE) {
                parent.change(self.id, Change { range: v.range, kind: ChangeKind::CowWriteProtect }, |inner, tlb, _| body(inner, tlb))?;
            } else {
                let mut tlb = crate::mm::tlb::TlbFlush::new();
                let r = body(&mut parent, &mut tlb);
                debug_assert!(tlb.is_empty(), "read-only areas: no entry lost write access");
                let _ = parent.flush(tlb); // empty: no shootdown
                r?;
            }
        }
        Ok(child)
    }
}
