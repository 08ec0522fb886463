//! How an entry of a mirror's page table is laid out in its 64 bits.
//!
//! The table is a plain 4-level radix tree of 512 `u64` entries per 4 KiB
//! node — the geometry both the x86-64 MMU and VT-d second-level tables
//! use. Only the bits differ, so the layout is a trait: with the VT-d
//! layout (in `devices`), the IOMMU walks the mirror's own table and no
//! second copy exists; [`SoftLayout`] serves devices with a format of their
//! own (they read mirror entries and write their own tables).

use x86_64::PhysAddr;

/// One mapped page as HMM sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leaf {
    /// The frame (or DMA address) the device reaches.
    pub addr: PhysAddr,
    /// The device may write (a valid entry may always read).
    pub write: bool,
    /// The device wrote (or may have written) the page since the CPU last
    /// collected dirty state.
    pub dirty: bool,
    /// The device holds exclusive (atomic) access: the CPU may not write.
    pub exclusive: bool,
}

impl Leaf {
    pub fn read_only(addr: PhysAddr) -> Leaf {
        Leaf { addr, write: false, dirty: false, exclusive: false }
    }
    pub fn writable(addr: PhysAddr) -> Leaf {
        Leaf { addr, write: true, dirty: false, exclusive: false }
    }
}

/// An entry format. Encodings must round-trip: `decode_leaf(encode_leaf(l)) == Some(l)`
/// for page-aligned addresses below 2^48, and 0 must mean "not present".
///
/// Bits [`COUNT_SHIFT`]`..+10` of a *table* (non-leaf) entry belong to the
/// page table: it keeps there the number of live entries of the child node
/// (0..=512). `decode_table` must ignore them and the hardware walking the
/// table must too (VT-d and x86-64 ignore bits 52-61 of non-leaf entries).
pub trait EntryLayout {
    /// A human name for diagnostics ("VT-d second level", "software").
    const NAME: &'static str;
    fn encode_leaf(leaf: Leaf) -> u64;
    /// `None` if the entry is not a valid leaf.
    fn decode_leaf(raw: u64) -> Option<Leaf>;
    /// An entry pointing at a lower-level table.
    fn encode_table(table: PhysAddr) -> u64;
    /// The lower-level table an entry points at, if present.
    fn decode_table(raw: u64) -> Option<PhysAddr>;
}

/// Where a table entry keeps its child's live-entry count (10 bits).
pub const COUNT_SHIFT: u32 = 52;
/// The count bits of a table entry.
pub const COUNT_MASK: u64 = 0x3ff << COUNT_SHIFT;

/// A software layout: bit 0 valid, 1 write, 2 dirty, 3 exclusive, 12..52 address.
pub struct SoftLayout;

const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

impl EntryLayout for SoftLayout {
    const NAME: &'static str = "software";
    #[inline]
    fn encode_leaf(l: Leaf) -> u64 {
        1 | (l.write as u64) << 1 | (l.dirty as u64) << 2 | (l.exclusive as u64) << 3 | (l.addr.as_u64() & ADDR_MASK)
    }
    #[inline]
    fn decode_leaf(raw: u64) -> Option<Leaf> {
        (raw & 1 != 0).then(|| Leaf {
            addr: PhysAddr::new(raw & ADDR_MASK),
            write: raw & 2 != 0,
            dirty: raw & 4 != 0,
            exclusive: raw & 8 != 0,
        })
    }
    #[inline]
    fn encode_table(t: PhysAddr) -> u64 {
        1 | (t.as_u64() & ADDR_MASK)
    }
    #[inline]
    fn decode_table(raw: u64) -> Option<PhysAddr> {
        (raw & 1 != 0).then(|| PhysAddr::new(raw & ADDR_MASK))
    }
}
