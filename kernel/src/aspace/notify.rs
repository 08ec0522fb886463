//! The one notifier path: every change to a process's translations is
//! announced to the listeners of that address space.
//!
//! # The contract (Linux `mmu_notifier` semantics)
//!
//! ```text
//!  lock address space
//!    invalidate_start(range, kind)   ← before any PTE of the range changes
//!    change PTEs; flush the TLB of every CPU that may cache them (one shootdown round)
//!    invalidate_end(range, kind)     ← translations are final
//!    release old frames / swap slots ← only now may they be reused
//!  unlock
//! ```
//!
//! * One notification per contiguous changed range, not per page; reclaim
//!   evicts a batch of pages under one notification covering the batch.
//! * Nothing on this path allocates: listeners report device-dirty pages
//!   through a callback, and a change keeps what it releases in a fixed
//!   buffer (or, for a bulk unmap, in the page table itself).
//! * Listeners run with the address-space lock held. They must not call
//!   back into the same address space (it would deadlock); they may take
//!   their own locks (HMM takes its mirror locks), and must not sleep.
//! * After `invalidate_start` returns, a listener holds no translation of
//!   the range that it will use again without re-faulting: a device mirror
//!   drops its entries and flushes its IOTLB *inside* the callback. So when
//!   the kernel frees a frame after `end`, no device can still reach it.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use hmm::VaRange;

/// What kind of change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    /// munmap: the range is gone.
    Unmap,
    /// mprotect: permissions reduced (or changed).
    Protect,
    /// mprotect to no access at all (PROT_NONE): the pages stay, nobody —
    /// CPU in user mode, kernel on the process's behalf, device — may touch them.
    ProtectNone,
    /// fork: the parent's writable pages become read-only, shared.
    CowWriteProtect,
    /// A write to a shared page: the page gets a private copy.
    CowBreak,
    /// Pages were written to swap and their frames reclaimed.
    SwapOut,
    /// Pages moved to other frames.
    Migrate,
    /// Dirty bits were collected and cleared (write access removed for
    /// tracking).
    DirtyClear,
    /// A device (`owner`, its HMM device id) takes exclusive access: the
    /// CPU entries become non-present entries naming it.
    Exclusive { owner: u32 },
    /// A CPU access (or fork, swap-out, migration) revokes a device's
    /// exclusive access: every device drops the pages, CPU entries return.
    Revoke,
    /// The address space is being destroyed.
    Exit,
}

impl fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// One notification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change {
    pub range: VaRange,
    pub kind: ChangeKind,
}

/// Identifies an address space to its listeners.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AspaceId(pub u32);

/// Something that mirrors translations and must hear about changes.
pub trait Listener: Send + Sync {
    /// Before the change. Pages the listener's device wrote (and so are
    /// dirty, though the CPU's dirty bit does not know it) are reported to
    /// `dirty`, one call per page; the address space marks them before
    /// changing anything.
    fn invalidate_start(&self, aspace: AspaceId, change: &Change, dirty: &mut dyn FnMut(u64));
    fn invalidate_end(&self, aspace: AspaceId, change: &Change);
}

/// A registration, for unregistering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenerId(pub u32);

/// The listeners of one address space.
#[derive(Default)]
pub(super) struct Listeners {
    next: u32,
    list: Vec<(ListenerId, Arc<dyn Listener>)>,
}

impl Listeners {
    pub fn add(&mut self, l: Arc<dyn Listener>) -> ListenerId {
        self.next += 1;
        let id = ListenerId(self.next);
        self.list.push((id, l));
        id
    }

    pub fn remove(&mut self, id: ListenerId) -> bool {
        let before = self.list.len();
        self.list.retain(|(i, _)| *i != id);
        self.list.len() != before
    }

    /// Pages listeners report dirty go to `dirty`.
    pub fn start(&self, aspace: AspaceId, change: &Change, dirty: &mut dyn FnMut(u64)) {
        for (_, l) in &self.list {
            l.invalidate_start(aspace, change, dirty);
        }
    }

    pub fn end(&self, aspace: AspaceId, change: &Change) {
        for (_, l) in &self.list {
            l.invalidate_end(aspace, change);
        }
    }
}
