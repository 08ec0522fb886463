//! Resolving a fault: demand-zero, swap-in, COW break — or a typed error.
//! Both CPU faults (from the user-access routines) and device faults (from
//! HMM) come here.

use super::pte::{self, Pte};
use super::swap::SWAP;
use super::{leaf_flags, page, AddressSpace, Change, ChangeKind, Inner, Prot, Released};
use crate::mm::direct;
use crate::mm::frames::{self, Frame, FrameFlags};
use core::fmt;
use x86_64::structures::paging::{PageTableFlags as F, PhysFrame};

/// Below this many free frames, a fault reclaims before allocating.
const RECLAIM_LOW: usize = 8;
/// Frames one reclaim pass tries to free.
const RECLAIM_BATCH: usize = 16;

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
    /// No frame to resolve the fault.
    OutOfMemory,
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

impl AddressSpace {
    /// Resolve a fault at `addr` for `access`, with CPU semantics.
    pub fn handle_fault(&self, addr: u64, access: Access) -> Result<CpuPte, AccessError> {
        let mut inner = self.lock();
        inner.resolve(self.id, addr, access)
    }

    /// Make `addr` resident with at least the permission `write` asks for
    /// (HMM's device faults): a write breaks COW first, a swapped page is
    /// swapped in.
    pub fn fault_in(&self, addr: u64, write: bool) -> Result<CpuPte, AccessError> {
        self.handle_fault(addr, if write { Access::Write } else { Access::Read })
    }

    /// The resident page at `addr`, if any (no fault is taken).
    pub fn walk(&self, addr: u64) -> Option<CpuPte> {
        let mut inner = self.lock();
        inner.walk(addr)
    }

    /// Record that `addr` was written behind the CPU's back (by a device):
    /// sets the PTE's dirty bit, so swap-out rewrites the slot.
    pub fn set_dirty(&self, addr: u64) {
        let mut inner = self.lock();
        if let Ok(Some(e)) = inner.tables().entry(addr & !0xfff, false) {
            if let Pte::Present { frame, flags } = Pte::decode(e) {
                pte::set_present(e, frame, flags | F::DIRTY);
            }
        }
        if let Some(slot) = inner.swap_cache.remove(&(addr & !0xfff)) {
            SWAP.release(slot);
        }
    }
}

impl Inner {
    pub(super) fn walk(&mut self, addr: u64) -> Option<CpuPte> {
        let e = self.tables().entry(addr & !0xfff, false).ok()??;
        match Pte::decode(e) {
            Pte::Present { frame, flags } => Some(CpuPte {
                frame,
                writable: flags.contains(F::WRITABLE),
                dirty: flags.contains(F::DIRTY),
                accessed: flags.contains(F::ACCESSED),
            }),
            _ => None,
        }
    }

    pub(super) fn resolve(&mut self, id: super::AspaceId, addr: u64, access: Access) -> Result<CpuPte, AccessError> {
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
        if write {
            if let Some(i) = self.exclusive.iter().position(|r| r.contains(va)) {
                // A device holds this page exclusively: the CPU's write
                // revokes that first (the device's entries go away).
                let r = self.exclusive.swap_remove(i);
                self.change(id, Change { range: r, kind: ChangeKind::Revoke }, |_, _, _| {});
            }
        }
        if frames::stats().free < RECLAIM_LOW {
            // Frames run low: reclaim by the clock policy (never this page)
            // before taking one — the rare path, so the extra walk is fine.
            let needs_frame = match self.tables().entry(va, false).ok().flatten().map(|e| Pte::decode(e)) {
                None | Some(Pte::None) | Some(Pte::Swapped { .. }) => true,
                Some(Pte::Present { flags, .. }) => write && !flags.contains(F::WRITABLE),
            };
            if needs_frame {
                let freed = self.reclaim(id, RECLAIM_BATCH, Some(va));
                log::debug!("frames low: reclaimed {freed} from address space {}", id.0);
            }
        }
        let e = self.tables().entry(va, true).map_err(|_| err(AccessFailure::OutOfMemory))?.expect("created");
        match Pte::decode(e) {
            Pte::None => {
                let f = frames::alloc_zeroed().map_err(|_| err(AccessFailure::OutOfMemory))?;
                f.set_flags(FrameFlags::USER);
                let filled = self.fill_from_source(va, &f); // a program's image (see `source`)
                let e = self.tables().entry(va, false).ok().flatten().expect("created above");
                pte::set_present(e, f.into_raw(), leaf_flags(vma.prot, true));
                if !filled {
                    self.stats.demand_zero += 1;
                }
            }
            Pte::Swapped { slot } => {
                let f = frames::alloc().map_err(|_| err(AccessFailure::OutOfMemory))?;
                f.set_flags(FrameFlags::USER);
                let mut buf = alloc::boxed::Box::new([0u8; 4096]);
                SWAP.read(slot, &mut buf);
                // SAFETY: the frame was just allocated and is ours.
                unsafe { direct::write_frame(f.frame(), 0, &buf[..]) };
                pte::set_present(e, f.into_raw(), leaf_flags(vma.prot, true));
                // The slot still holds exactly this page: keep it while clean.
                self.swap_cache.insert(va, slot);
                self.stats.swap_ins += 1;
            }
            Pte::Present { frame, flags } if write && !flags.contains(F::WRITABLE) => {
                if frames::refcount(frame) == 1 {
                    // Nobody shares it any more: reuse, no copy, nothing to notify.
                    pte::set_present(e, frame, flags | F::WRITABLE);
                    self.stats.cow_reuses += 1;
                    if self.active() {
                        x86_64::instructions::tlb::flush(page(va).start_address());
                    }
                } else {
                    let copy = frames::alloc().map_err(|_| err(AccessFailure::OutOfMemory))?;
                    copy.set_flags(FrameFlags::USER);
                    let range = hmm::VaRange::page_of(va).expect("user page");
                    self.change(id, Change { range, kind: ChangeKind::CowBreak }, |inner, tlb, released| {
                        // Copy inside the change: no device can write the
                        // shared frame any more.
                        // SAFETY: `copy` is new and ours; `frame` is allocated (we hold a reference).
                        unsafe { direct::copy_frame(copy.frame(), frame) };
                        let e = inner.tables().entry(va, false).ok().flatten().expect("still mapped");
                        pte::set_present(e, copy.into_raw(), (flags & !(F::ACCESSED | F::DIRTY)) | F::WRITABLE);
                        tlb.add(page(va));
                        // SAFETY: the entry held one reference to the old frame.
                        released.push(Released::Frame(unsafe { Frame::from_raw(frame) }));
                    });
                    self.stats.cow_copies += 1;
                }
            }
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
