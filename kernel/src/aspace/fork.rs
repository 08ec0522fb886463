//! fork: the child gets a copy-on-write copy.
//!
//! Every present page is shared (frame reference count + 1) and mapped
//! read-only on *both* sides; the parent's writable pages lose write access
//! under a `CowWriteProtect` notification (one per writable area), so a
//! device mirroring the parent stops writing the now-shared frame. The
//! first write on either side copies (or, if the count fell back to 1,
//! just re-enables write). Swapped pages share their slot.

use super::pte::{self, Pte};
use super::swap::SWAP;
use super::{page, AddressSpace, Change, ChangeKind, ForkError, Prot};
use crate::mm::frames::Frame;
use alloc::sync::Arc;
use alloc::vec::Vec;
use x86_64::structures::paging::PageTableFlags as F;

impl AddressSpace {
    /// A copy-on-write child.
    pub fn fork(&self) -> Result<Arc<AddressSpace>, ForkError> {
        let child = AddressSpace::new()?;
        let mut parent = self.lock();
        let vmas: Vec<_> = parent.vmas.iter().collect();
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
                let mut entries = Vec::new();
                inner.tables().for_each(v.range.start(), v.range.end(), &mut |va, e| {
                    match Pte::decode(e) {
                        Pte::Present { frame, flags } => {
                            if flags.contains(F::WRITABLE) {
                                pte::set_present(e, frame, flags & !F::WRITABLE);
                                tlb.add(page(va));
                            }
                            // SAFETY: the entry holds a reference, so the frame is live.
                            let shared = unsafe { Frame::share_raw(frame) };
                            entries.push((va, Pte::Present { frame: shared.into_raw(), flags: flags & !(F::WRITABLE | F::DIRTY | F::ACCESSED) }));
                        }
                        Pte::Swapped { slot } => {
                            SWAP.share(slot);
                            entries.push((va, Pte::Swapped { slot }));
                        }
                        // Exclusive entries were revoked above, under this lock.
                        Pte::None | Pte::Exclusive { .. } => {}
                    }
                });
                let mut c = child.lock();
                let mut entries = entries.into_iter();
                while let Some((va, p)) = entries.next() {
                    let e = match c.tables().entry(va, true) {
                        Ok(e) => e.expect("created"),
                        Err(_) => {
                            // Out of frames for the child's tables: give back
                            // the references taken for entries not installed.
                            for (_, p) in core::iter::once((va, p)).chain(entries) {
                                match p {
                                    // SAFETY: the reference taken by `share_raw` above.
                                    Pte::Present { frame, .. } => drop(unsafe { Frame::from_raw(frame) }),
                                    Pte::Swapped { slot } => SWAP.release(slot),
                                    Pte::None | Pte::Exclusive { .. } => {}
                                }
                            }
                            return Err(ForkError::NoMemory);
                        }
                    };
                    match p {
                        Pte::Present { frame, flags } => pte::set_present(e, frame, flags),
                        Pte::Swapped { slot } => pte::set_swapped(e, slot),
                        Pte::None | Pte::Exclusive { .. } => {}
                    }
                }
                Ok(())
            };
            if v.prot.contains(Prot::WRITE) {
                parent.change(self.id, Change { range: v.range, kind: ChangeKind::CowWriteProtect }, |inner, tlb, _| body(inner, tlb))?;
            } else {
                let mut tlb = crate::mm::tlb::TlbFlush::new();
                body(&mut parent, &mut tlb)?;
                tlb.discard_inactive(); // read-only areas: no entry changed
            }
        }
        Ok(child)
    }
}
