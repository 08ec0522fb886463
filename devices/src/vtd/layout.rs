//! The VT-d second-level entry, as an `hmm::pt` layout: the IOMMU walks
//! the mirror's own table.
//!
//! ```text
//!  63  62  61..54  53  52  51..48  47 ........ 12  11..2  1  0
//!  ign TM  ign     EXC DIRTY rsvd  address         0      W  R
//! ```
//!
//! Bits 52-61 and 63 are ignored by the hardware (QEMU 7.2's
//! `VTD_SL_IGN_COM`), so HMM keeps its software state there: 52 = dirty
//! (the device may have written), 53 = exclusive. Reserved bits are never
//! set: 62 (TM, without device-TLB support), 11 in a 4 KiB leaf, 7 and 11
//! at level 4, anything above the address width. A non-leaf entry is
//! R|W|address: permission is decided at the leaf.

use hmm::pt::{EntryLayout, Leaf};
use x86_64::PhysAddr;

const R: u64 = 1 << 0;
const W: u64 = 1 << 1;
const DIRTY: u64 = 1 << 52;
const EXCLUSIVE: u64 = 1 << 53;
const ADDR: u64 = 0x0000_ffff_ffff_f000;

/// The VT-d second-level page-table entry format.
pub struct VtdLayout;

impl EntryLayout for VtdLayout {
    const NAME: &'static str = "VT-d second level";

    #[inline]
    fn encode_leaf(l: Leaf) -> u64 {
        R | if l.write { W } else { 0 } | if l.dirty { DIRTY } else { 0 } | if l.exclusive { EXCLUSIVE } else { 0 } | (l.addr.as_u64() & ADDR)
    }

    #[inline]
    fn decode_leaf(raw: u64) -> Option<Leaf> {
        (raw & R != 0).then(|| Leaf { addr: PhysAddr::new(raw & ADDR), write: raw & W != 0, dirty: raw & DIRTY != 0, exclusive: raw & EXCLUSIVE != 0 })
    }

    #[inline]
    fn encode_table(t: PhysAddr) -> u64 {
        R | W | (t.as_u64() & ADDR)
    }

    #[inline]
    fn decode_table(raw: u64) -> Option<PhysAddr> {
        (raw & R != 0).then(|| PhysAddr::new(raw & ADDR))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trips_and_sets_no_reserved_bit(frame in 0u64..(1 << 36), w: bool, d: bool, x: bool) {
            let leaf = Leaf { addr: PhysAddr::new(frame << 12), write: w, dirty: d, exclusive: x };
            let raw = VtdLayout::encode_leaf(leaf);
            prop_assert_eq!(VtdLayout::decode_leaf(raw), Some(leaf));
            // Reserved for a 4 KiB leaf in a 48-bit table: 11, 7 (PS), 62, 48-51.
            prop_assert_eq!(raw & (1 << 11 | 1 << 7 | 1 << 62 | 0xf << 48), 0);
            let t = VtdLayout::encode_table(leaf.addr);
            prop_assert_eq!(VtdLayout::decode_table(t), Some(leaf.addr));
            prop_assert_eq!(t & !(ADDR | R | W), 0);
        }
    }

    #[test]
    fn zero_is_not_present() {
        assert_eq!(VtdLayout::decode_leaf(0), None);
        assert_eq!(VtdLayout::decode_table(0), None);
    }
}
