//! What happened on the CPU side, and what it means for device entries.

use core::fmt;

/// The event an update callback receives (the seed patchset's list, plus
/// exclusive access and teardown).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    /// The address space was forked: its pages became copy-on-write.
    Fork,
    /// The CPU collects dirty state (and will track new writes).
    IsDirty,
    /// Write permission is being removed.
    WriteProtect,
    /// The pages move to other frames (migration, COW break, swap-out).
    Migrate,
    /// The range is unmapped.
    Munmap,
    /// The CPU mapping lost all access (`mprotect(PROT_NONE)`): the pages
    /// stay, but no device may touch them until access returns.
    NoAccess,
    /// A device takes exclusive (atomic) access: the CPU entry becomes a
    /// non-present exclusive entry and every other device loses the page
    /// (the owner's own mirror is not notified: `MMU_NOTIFY_EXCLUSIVE`).
    Exclusive,
    /// A device read fault populated entries.
    DeviceRfault,
    /// A device write fault populated entries.
    DeviceWfault,
    /// The mirror is torn down (device unregistered, mirror dropped, or
    /// the address space exited).
    Release,
}

/// How an event rewrites entries: `new = old & mask`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PteMask {
    /// Keep the entry valid (else it is cleared).
    pub valid: bool,
    /// Keep write permission.
    pub write: bool,
}

impl PteMask {
    pub const KEEP: PteMask = PteMask { valid: true, write: true };
    pub const READ_ONLY: PteMask = PteMask { valid: true, write: false };
    pub const INVALID: PteMask = PteMask { valid: false, write: false };
}

impl Event {
    /// The mask the event applies to mirror entries.
    pub fn mask(self) -> PteMask {
        match self {
            Event::Fork | Event::IsDirty | Event::WriteProtect => PteMask::READ_ONLY,
            Event::Migrate | Event::Munmap | Event::NoAccess | Event::Exclusive | Event::Release => PteMask::INVALID,
            Event::DeviceRfault | Event::DeviceWfault => PteMask::KEEP,
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Event::Fork => "FORK",
            Event::IsDirty => "ISDIRTY",
            Event::WriteProtect => "WRITE_PROTECT",
            Event::Migrate => "MIGRATE",
            Event::Munmap => "MUNMAP",
            Event::NoAccess => "NO_ACCESS",
            Event::Exclusive => "EXCLUSIVE",
            Event::DeviceRfault => "DEVICE_RFAULT",
            Event::DeviceWfault => "DEVICE_WFAULT",
            Event::Release => "RELEASE",
        })
    }
}
