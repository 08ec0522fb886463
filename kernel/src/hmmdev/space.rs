//! The kernel's address spaces as HMM sees them, and the notifier hook.
//!
//! | kernel change (`ChangeKind`)   | HMM event       | device entries |
//! |--------------------------------|-----------------|----------------|
//! | Unmap                          | MUNMAP          | invalid        |
//! | Protect                        | WRITE_PROTECT   | read-only      |
//! | ProtectNone (PROT_NONE)        | NO_ACCESS       | invalid (pages kept; faults refused until access returns) |
//! | CowWriteProtect (fork)         | FORK            | read-only      |
//! | CowBreak, SwapOut, Migrate     | MIGRATE         | invalid (refault finds the new frame) |
//! | DirtyClear                     | ISDIRTY         | read-only, dirty reported |
//! | Exclusive { owner }            | EXCLUSIVE       | invalid, except the owner's (not notified) |
//! | Revoke (CPU access, fork, swap-out, migration of an exclusive page) | MIGRATE | invalid, the owner's too |
//! | Exit                           | RELEASE         | all gone, mirrors dead |

use crate::aspace::{self, AccessFailure, AddressSpace, AspaceId, Change, ChangeKind, Listener};
use crate::platform::KernelTableMemory;
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use devices::vtd::VtdLayout;
use hmm::{CpuFaultError, CpuPage, DeviceId, Event, MirroredSpace, VaRange};
use x86_64::PhysAddr;

/// HMM state of one process: mirrors with VT-d layout tables.
pub type KernelMm = hmm::Mm<VtdLayout, KernelTableMemory, KernelSpace>;
/// One device's mirror of a process.
pub type KernelMirror = hmm::Mirror<VtdLayout, KernelTableMemory>;

/// An address space, seen from HMM: the kernel's [`AddressSpace`] itself,
/// held weakly by `hmm::Mm` (HMM never keeps a process alive). One `Weak`
/// upgrade per fault round, not two (a wrapper holding another `Weak`).
pub type KernelSpace = AddressSpace;

fn cpu_error(e: aspace::AccessError) -> CpuFaultError {
    match e.reason {
        AccessFailure::NoVma => CpuFaultError::NoVma,
        AccessFailure::Protection => CpuFaultError::Protection,
        // HMM has no I/O error kind: a page that cannot come back from swap
        // is memory the fault cannot have.
        AccessFailure::OutOfMemory | AccessFailure::SwapIo => CpuFaultError::OutOfMemory,
    }
}

impl MirroredSpace for AddressSpace {
    // Each method forwards to the inherent one of the same name (inherent
    // methods win in `AddressSpace::name` paths), converting the page type.
    fn walk(&self, va: u64) -> Option<CpuPage> {
        let p = AddressSpace::walk(self, va)?;
        Some(CpuPage { frame: p.frame.start_address(), writable: p.writable })
    }

    fn fault_in(&self, va: u64, write: bool) -> Result<CpuPage, CpuFaultError> {
        let p = AddressSpace::fault_in(self, va, write).map_err(cpu_error)?;
        Ok(CpuPage { frame: PhysAddr::new(p.frame.start_address().as_u64()), writable: p.writable })
    }

    fn fault_round(&self, round: &hmm::FaultRound, sink: &mut dyn FnMut(&[hmm::RoundPage]) -> bool) -> Result<(), (u64, CpuFaultError)> {
        AddressSpace::fault_round(self, round, sink).map_err(|e| (e.addr & !0xfff, cpu_error(e)))
    }

    fn set_dirty(&self, va: u64) {
        AddressSpace::set_dirty(self, va);
    }

    fn walk_range(&self, range: VaRange, f: &mut dyn FnMut(u64, CpuPage)) {
        AddressSpace::walk_range(self, range, &mut |va, p| f(va, CpuPage { frame: PhysAddr::new(p.frame.start_address().as_u64()), writable: p.writable }));
    }

    fn page_states(&self, range: VaRange, f: &mut dyn FnMut(u64, hmm::CpuPageState)) {
        AddressSpace::page_states(self, range, &mut |va, s| f(va, to_hmm(s)));
    }

    fn page_state(&self, va: u64) -> hmm::CpuPageState {
        to_hmm(AddressSpace::page_state(self, va))
    }

    fn extent(&self, va: u64) -> Option<VaRange> {
        Some(self.vma_at(va)?.range)
    }

    fn make_exclusive(&self, range: VaRange, owner: DeviceId) -> Result<Vec<CpuPage>, CpuFaultError> {
        let pages = AddressSpace::make_exclusive(self, range, owner.0).map_err(cpu_error)?;
        Ok(pages.into_iter().map(|p| CpuPage { frame: p.frame.start_address(), writable: true }).collect())
    }
}

/// The HMM event a kernel change means, and the device exempt from it
/// (the owner taking exclusive access).
pub fn event_of(kind: ChangeKind) -> (Event, Option<DeviceId>) {
    match kind {
        ChangeKind::Unmap => (Event::Munmap, None),
        ChangeKind::Protect => (Event::WriteProtect, None),
        ChangeKind::ProtectNone => (Event::NoAccess, None),
        ChangeKind::CowWriteProtect => (Event::Fork, None),
        ChangeKind::CowBreak | ChangeKind::SwapOut | ChangeKind::Migrate | ChangeKind::Revoke => (Event::Migrate, None),
        ChangeKind::DirtyClear => (Event::IsDirty, None),
        ChangeKind::Exclusive { owner } => (Event::Exclusive, Some(DeviceId(owner))),
        ChangeKind::Exit => (Event::Release, None),
    }
}

/// A CPU page state as HMM's snapshots name it.
fn to_hmm(s: aspace::state::PageState) -> hmm::CpuPageState {
    use aspace::state::PageState as S;
    use hmm::CpuPageState as H;
    let page = |p: aspace::CpuPte| CpuPage { frame: PhysAddr::new(p.frame.start_address().as_u64()), writable: p.writable };
    match s {
        S::Hole => H::Hole,
        S::NoAccess => H::NoAccess,
        S::Absent => H::Absent,
        S::Zero(p) => H::Zero(page(p)),
        S::Present(p) => H::Present(page(p)),
        S::Swapped => H::Swapped,
        S::Exclusive(owner) => H::Exclusive(DeviceId(owner)),
    }
}

/// Forwards an address space's changes to its HMM state.
struct HmmListener {
    mm: Arc<KernelMm>,
}

impl Listener for HmmListener {
    fn invalidate_start(&self, _: AspaceId, c: &Change, dirty: &mut dyn FnMut(u64)) {
        let (event, owner) = event_of(c.kind);
        log::debug!("inval kind={} event={event} range={:#x}..{:#x} mask={}", c.kind, c.range.start(), c.range.end(), match event.mask() { m if m.valid && m.write => "keep", m if m.valid => "read-only", _ => "invalid" });
        self.mm.invalidate_start_with(c.range, event, owner, dirty);
    }
    fn invalidate_end(&self, _: AspaceId, c: &Change) {
        self.mm.invalidate_end(c.range, event_of(c.kind).0);
    }
}

/// HMM attached to one process.
pub struct ProcessHmm {
    pub mm: Arc<KernelMm>,
    aspace: Weak<AddressSpace>,
    listener: aspace::ListenerId,
}

impl ProcessHmm {
    /// Start mirroring support for `a`: HMM hears every change from now on.
    pub fn attach(a: &Arc<AddressSpace>) -> ProcessHmm {
        let mm = KernelMm::new(Arc::downgrade(a));
        let listener = a.register_listener(Arc::new(HmmListener { mm: mm.clone() }));
        ProcessHmm { mm, aspace: Arc::downgrade(a), listener }
    }
}

impl Drop for ProcessHmm {
    fn drop(&mut self) {
        for m in self.mm.mirrors() {
            self.mm.unmirror(&m);
        }
        if let Some(a) = self.aspace.upgrade() {
            a.unregister_listener(self.listener);
        }
    }
}
