//! What the CPU side holds at one page, read without changing anything:
//! the source of HMM snapshots (`hmm::Mirror::snapshot`) and of the
//! console's `snapshot` command.

use super::pte::Pte;
use super::{AddressSpace, CpuPte, Inner};
use x86_64::structures::paging::PageTableFlags as F;

/// One page's state on the CPU side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageState {
    /// No mapping.
    Hole,
    /// Mapped with no access (PROT_NONE).
    NoAccess,
    /// Mapped, nothing there yet.
    Absent,
    /// The shared zero frame (read-only).
    Zero(CpuPte),
    Present(CpuPte),
    Swapped,
    /// Held exclusively by the device with this id.
    Exclusive(u32),
}

impl AddressSpace {
    /// Every accessible resident page of `range`, in address order, under
    /// one lock and one page-table walk per leaf table (what `walk` does per
    /// page). A pure read, like `walk`. `f` runs under the address-space
    /// lock: it must not call back into this address space.
    pub fn walk_range(&self, range: hmm::VaRange, f: &mut dyn FnMut(u64, CpuPte)) {
        let mut inner = self.lock();
        inner.tables().for_each(range.start(), range.end(), &mut |va, e| {
            if let Pte::Present { frame, flags } = e.get() {
                if flags.contains(F::USER_ACCESSIBLE) {
                    f(va, CpuPte::of(frame, flags));
                }
            }
        });
    }

    /// [`AddressSpace::page_state`] for every page of `range`, in address
    /// order, under one lock and one walk per leaf table. `f` runs under the
    /// address-space lock: it must not call back into this address space.
    pub fn page_states(&self, range: hmm::VaRange, f: &mut dyn FnMut(u64, PageState)) {
        let mut inner = self.lock();
        let Inner { tables, vmas, .. } = &mut *inner;
        let Some(tables) = tables.as_mut() else { return };
        let empty = |va: u64| match vmas.find(va) {
            None => PageState::Hole,
            Some(v) if v.prot.is_empty() => PageState::NoAccess,
            Some(_) => PageState::Absent,
        };
        let mut at = range.start();
        tables.for_each(range.start(), range.end(), &mut |va, e| {
            while at < va {
                f(at, empty(at));
                at += 4096;
            }
            f(va, match vmas.find(va) {
                None => PageState::Hole,
                Some(v) if v.prot.is_empty() => PageState::NoAccess,
                Some(_) => state_of(e),
            });
            at = va + 4096;
        });
        while at < range.end() {
            f(at, empty(at));
            at += 4096;
        }
    }

    /// The CPU's state of the page at `addr` (a pure read: nothing is
    /// faulted, allocated, swapped in or marked accessed).
    pub fn page_state(&self, addr: u64) -> PageState {
        if addr >= crate::mm::USER_END {
            return PageState::Hole;
        }
        let mut inner = self.lock();
        let Some(vma) = inner.vmas.find(addr) else { return PageState::Hole };
        if vma.prot.is_empty() {
            return PageState::NoAccess;
        }
        let Ok(Some(e)) = inner.tables().entry(addr & !0xfff, false) else { return PageState::Absent };
        state_of(e)
    }
}

/// The state a leaf entry of an accessible area stands for.
fn state_of(e: super::pte::Entry<'_>) -> PageState {
    match e.get() {
        // Dying entries exist only inside a locked munmap.
        Pte::None | Pte::Dying { .. } => PageState::Absent,
        Pte::Swapped { .. } => PageState::Swapped,
        Pte::Exclusive { owner, .. } => PageState::Exclusive(owner),
        Pte::Present { frame, flags } => {
            let p = CpuPte::of(frame, flags);
            if crate::mm::frames::is_zero_frame(frame) { PageState::Zero(p) } else { PageState::Present(p) }
        }
    }
}
