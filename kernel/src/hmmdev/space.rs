//! The kernel's address spaces as HMM sees them, and the notifier hook.
//!
//! | kernel change (`ChangeKind`)   | HMM event       | device entries |
//! |--------------------------------|-----------------|----------------|
//! | Unmap                          | MUNMAP          | invalid        |
//! | Protect                        | WRITE_PROTECT   | read-only      |
//! | CowWriteProtect (fork)         | FORK            | read-only      |
//! | CowBreak, SwapOut, Migrate     | MIGRATE         | invalid (refault finds the new frame) |
//! | DirtyClear                     | ISDIRTY         | read-only, dirty reported |
//! | Exclusive                      | WRITE_PROTECT   | read-only, except the exclusive holder's |
//! | Revoke (CPU write)             | MIGRATE         | invalid, the holder's too |
//! | Exit                           | RELEASE         | all gone, mirrors dead |

use crate::aspace::{self, AccessFailure, AddressSpace, AspaceId, Change, ChangeKind, Listener};
use crate::platform::KernelTableMemory;
use alloc::sync::{Arc, Weak};
use devices::vtd::VtdLayout;
use hmm::{CpuFaultError, CpuPage, Event, MirroredSpace, VaRange};
use x86_64::PhysAddr;

/// HMM state of one process: mirrors with VT-d layout tables.
pub type KernelMm = hmm::Mm<VtdLayout, KernelTableMemory, KernelSpace>;
/// One device's mirror of a process.
pub type KernelMirror = hmm::Mirror<VtdLayout, KernelTableMemory>;

/// An address space, seen from HMM (weakly: HMM never keeps a process alive).
pub struct KernelSpace {
    aspace: Weak<AddressSpace>,
}

fn cpu_error(e: aspace::AccessError) -> CpuFaultError {
    match e.reason {
        AccessFailure::NoVma => CpuFaultError::NoVma,
        AccessFailure::Protection => CpuFaultError::Protection,
        // HMM has no I/O error kind: a page that cannot come back from swap
        // is memory the fault cannot have.
        AccessFailure::OutOfMemory | AccessFailure::SwapIo => CpuFaultError::OutOfMemory,
    }
}

impl MirroredSpace for KernelSpace {
    fn walk(&self, va: u64) -> Option<CpuPage> {
        let p = self.aspace.upgrade()?.walk(va)?;
        Some(CpuPage { frame: p.frame.start_address(), writable: p.writable })
    }

    fn fault_in(&self, va: u64, write: bool) -> Result<CpuPage, CpuFaultError> {
        let a = self.aspace.upgrade().ok_or(CpuFaultError::NoVma)?;
        let p = a.fault_in(va, write).map_err(cpu_error)?;
        Ok(CpuPage { frame: PhysAddr::new(p.frame.start_address().as_u64()), writable: p.writable })
    }

    fn set_dirty(&self, va: u64) {
        if let Some(a) = self.aspace.upgrade() {
            a.set_dirty(va);
        }
    }

    fn extent(&self, va: u64) -> Option<VaRange> {
        Some(self.aspace.upgrade()?.vma_at(va)?.range)
    }

    fn protect_for_exclusive(&self, range: VaRange) {
        if let Some(a) = self.aspace.upgrade() {
            a.write_protect_for_exclusive(range);
        }
    }
}

/// The HMM event a kernel change means, and whether exclusive entries stay.
pub fn event_of(kind: ChangeKind) -> (Event, bool) {
    match kind {
        ChangeKind::Unmap => (Event::Munmap, false),
        ChangeKind::Protect => (Event::WriteProtect, false),
        ChangeKind::CowWriteProtect => (Event::Fork, false),
        ChangeKind::CowBreak | ChangeKind::SwapOut | ChangeKind::Migrate | ChangeKind::Revoke => (Event::Migrate, false),
        ChangeKind::DirtyClear => (Event::IsDirty, false),
        ChangeKind::Exclusive => (Event::WriteProtect, true),
        ChangeKind::Exit => (Event::Release, false),
    }
}

/// Forwards an address space's changes to its HMM state.
struct HmmListener {
    mm: Arc<KernelMm>,
}

impl Listener for HmmListener {
    fn invalidate_start(&self, _: AspaceId, c: &Change, dirty: &mut dyn FnMut(u64)) {
        let (event, keep_exclusive) = event_of(c.kind);
        self.mm.invalidate_start_with(c.range, event, keep_exclusive, dirty);
    }
    fn invalidate_end(&self, _: AspaceId, c: &Change) {
        self.mm.invalidate_end(c.range, event_of(c.kind).0);
    }
}

/// HMM attached to one process.
pub struct ProcessHmm {
    pub mm: Arc<KernelMm>,
    // Keeps the `Weak` inside `mm` valid for as long as HMM is attached.
    _space: Arc<KernelSpace>,
    aspace: Weak<AddressSpace>,
    listener: aspace::ListenerId,
}

impl ProcessHmm {
    /// Start mirroring support for `a`: HMM hears every change from now on.
    pub fn attach(a: &Arc<AddressSpace>) -> ProcessHmm {
        let space = Arc::new(KernelSpace { aspace: Arc::downgrade(a) });
        let mm = KernelMm::new(Arc::downgrade(&space));
        let listener = a.register_listener(Arc::new(HmmListener { mm: mm.clone() }));
        ProcessHmm { mm, _space: space, aspace: Arc::downgrade(a), listener }
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
