//! What HMM needs from the CPU side: the address-space trait the kernel
//! implements.

use crate::mirror::DeviceId;
use crate::VaRange;
use alloc::vec::Vec;
use core::fmt;
use x86_64::PhysAddr;

/// A resident CPU page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuPage {
    pub frame: PhysAddr,
    pub writable: bool,
}

/// Why the CPU side refused to make a page accessible.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuFaultError {
    /// No mapping at the address.
    NoVma,
    /// The mapping does not allow the access (e.g. a write to read-only memory).
    Protection,
    OutOfMemory,
}

impl fmt::Display for CpuFaultError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NoVma => "no mapping",
            Self::Protection => "not permitted by the mapping",
            Self::OutOfMemory => "out of memory",
        })
    }
}

/// The mirrored address space (implemented by the kernel).
///
/// Calls come from device-fault context with no HMM lock held; the
/// implementation takes its own lock and may send invalidations to HMM
/// from inside (a write fault breaking COW does) — the retry protocol
/// exists for exactly that.
pub trait MirroredSpace: Send + Sync {
    /// The page at `va` if resident, as the CPU maps it — a pure read: no
    /// fault is taken, nothing is allocated, swapped in, COW-broken or
    /// marked dirty or accessed. A page held exclusively by a device (its
    /// CPU entry is non-present) is not resident here.
    fn walk(&self, va: u64) -> Option<CpuPage>;
    /// [`MirroredSpace::walk`] over a range: hands `f` each resident page
    /// of `range`, in address order. The default walks page by page; an
    /// implementation should take its lock once and walk once per leaf
    /// table (the prefault window's neighbours go through here).
    fn walk_range(&self, range: VaRange, f: &mut dyn FnMut(u64, CpuPage)) {
        for va in range.page_addrs() {
            if let Some(p) = self.walk(va) {
                f(va, p);
            }
        }
    }
    /// Make `va` resident with CPU semantics: `write` breaks COW first, a
    /// swapped page comes back, and the result grants write only if the
    /// CPU mapping does.
    fn fault_in(&self, va: u64, write: bool) -> Result<CpuPage, CpuFaultError>;
    /// A device wrote the page: mark it dirty on the CPU side.
    fn set_dirty(&self, va: u64);
    /// The mapping (VMA) around `va`, for prefault.
    fn extent(&self, va: u64) -> Option<VaRange>;
    /// `make_device_exclusive`: fault every page of `range` in for write
    /// (CPU semantics; a page already held by `owner` stays as it is), then
    /// — inside one `Event::Exclusive` notification naming `owner` — replace
    /// each CPU entry by a non-present entry naming `owner`. Returns the
    /// pages, in order. Any later CPU access to one of them (read or write)
    /// revokes the device's access first (an invalidation of the page) and
    /// restores the entry; so do fork, swap-out and migration.
    fn make_exclusive(&self, range: VaRange, owner: DeviceId) -> Result<Vec<CpuPage>, CpuFaultError>;
    /// What the CPU holds at `va`, read without changing anything (for
    /// snapshots). The default knows only resident pages and mappings; a
    /// kernel reports swapped, zero-page, no-access and exclusive pages too.
    /// [`MirroredSpace::page_state`] for every page of `range`, in order.
    /// The default asks page by page; an implementation should take its
    /// lock once and walk once per leaf table. `f` may run under that
    /// lock: it must not call back into the space.
    fn page_states(&self, range: VaRange, f: &mut dyn FnMut(u64, crate::snapshot::CpuPageState)) {
        for va in range.page_addrs() {
            f(va, self.page_state(va));
        }
    }
    fn page_state(&self, va: u64) -> crate::snapshot::CpuPageState {
        use crate::snapshot::CpuPageState;
        match self.walk(va) {
            Some(p) => CpuPageState::Present(p),
            None if self.extent(va).is_some() => CpuPageState::Absent,
            None => CpuPageState::Hole,
        }
    }
}
