//! Snapshots (Linux `hmm_range_fault` without a fault request, as
//! `lib/test_hmm.c`'s SNAPSHOT uses it) and the batched "mirror what the
//! CPU already has" used to resolve a whole job's range in one fault round.
//!
//! ```text
//!  snapshot(range):        for each page: the CPU's state (space.page_state)
//!                          + this mirror's entry — nothing faulted, allocated,
//!                          swapped in or marked; no lock held across pages
//!  mirror_present(range):  a fault round (see `fault`) with nothing wanted:
//!                          the pages the CPU maps, access ≤ the CPU's and
//!                          ≤ the mirror's, committed under the table lock if
//!                          alive and the interval unchanged, else retried
//! ```

use crate::cpu::{CpuPage, FaultRound, MirroredSpace};
use crate::mirror::Mirror;
use crate::mm::{DeviceFaultError, DeviceFaultKind, Mm, MAX_FAULT_PAGES};
use crate::pt::{EntryLayout, Leaf, TableMemory};
use crate::{DeviceId, VaRange};

/// What the CPU side holds at one page, read without changing anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuPageState {
    /// No mapping (no VMA).
    Hole,
    /// Mapped with no access at all (PROT_NONE): a device is refused too.
    NoAccess,
    /// Mapped, never touched: nothing allocated yet.
    Absent,
    /// The shared zero frame, read-only (never-written anonymous memory).
    Zero(CpuPage),
    /// A resident page.
    Present(CpuPage),
    /// Swapped out.
    Swapped,
    /// Held exclusively by a device (the CPU entry names it).
    Exclusive(DeviceId),
}

/// One page of a snapshot: what the device would see if it touched it now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageView {
    pub va: u64,
    pub cpu: CpuPageState,
    /// The mirror's entry now (what the device's IOMMU would translate).
    pub mirrored: Option<Leaf>,
}

impl PageView {
    /// One character per page, as the console prints it:
    /// `-` hole, `n` no access, `.` absent, `0` zero page, `r`/`w` present
    /// (read-only / writable on the CPU), `s` swapped out, `x` exclusive to
    /// a device; upper case when this mirror holds the page right now.
    pub fn symbol(&self) -> char {
        let c = match self.cpu {
            CpuPageState::Hole => '-',
            CpuPageState::NoAccess => 'n',
            CpuPageState::Absent => '.',
            CpuPageState::Zero(_) => '0',
            CpuPageState::Present(p) if p.writable => 'w',
            CpuPageState::Present(_) => 'r',
            CpuPageState::Swapped => 's',
            CpuPageState::Exclusive(_) => 'x',
        };
        if self.mirrored.is_some() { c.to_ascii_uppercase() } else { c }
    }
}

impl<L, M, S> Mm<L, M, S>
where
    L: EntryLayout + Send + Sync + 'static,
    M: TableMemory + Send + Sync + 'static,
    S: MirroredSpace + 'static,
{
    pub(crate) fn snapshot_mirror(&self, m: &Mirror<L, M>, range: VaRange, f: &mut dyn FnMut(PageView)) -> Result<(), DeviceFaultKind> {
        if range.pages() > MAX_FAULT_PAGES {
            return Err(DeviceFaultKind::BadRange);
        }
        let space = self.space.upgrade().ok_or(DeviceFaultKind::Released)?;
        // One walk of each table: the mirror's entries (address order), then
        // the CPU's states, merged.
        let entries = m.entries(range);
        let mut next = entries.iter().peekable();
        space.page_states(range, &mut |va, cpu| f(PageView { va, cpu, mirrored: next.next_if(|(v, _)| *v == va).map(|(_, l)| *l) }));
        Ok(())
    }

    pub(crate) fn mirror_present_in(&self, m: &Mirror<L, M>, range: VaRange, write: bool) -> Result<u64, DeviceFaultError> {
        if range.pages() > MAX_FAULT_PAGES {
            return Err(DeviceFaultError { addr: range.start(), write, kind: DeviceFaultKind::BadRange });
        }
        // A round with nothing wanted: only what the CPU already maps.
        let want = VaRange::new(range.start(), range.start()).expect("empty range at a page");
        let round = FaultRound { want, write: write && !m.read_only(), window: 1, populate: false, also: Some(range) };
        Ok(self.round(m, &round, range.start())?.handed)
    }
}

impl<L: EntryLayout, M: TableMemory> Mirror<L, M> {
    /// A snapshot of `range` as this mirror's device would see it, page by
    /// page, without faulting anything (`hmm_range_fault` without a fault
    /// request).
    pub fn snapshot(&self, range: VaRange, f: &mut dyn FnMut(PageView)) -> Result<(), DeviceFaultKind> {
        match self.owner() {
            Some(o) => o.snapshot(self, range, f),
            None => Err(DeviceFaultKind::Released),
        }
    }

    /// Mirror every page of `range` the CPU already maps (nothing faulted
    /// in on the CPU side), with at most the CPU's access and `write`, in
    /// one commit. Returns how many pages were mirrored. A device fault
    /// handler calls it for the rest of a job's range, so one fault round
    /// covers what the CPU already has.
    pub fn mirror_present(&self, range: VaRange, write: bool) -> Result<u64, DeviceFaultError> {
        match self.owner() {
            Some(o) => o.mirror_present(self, range, write),
            None => Err(DeviceFaultError { addr: range.start(), write, kind: DeviceFaultKind::Released }),
        }
    }
}
