//! The x86-64 leaf entry as an `hmm::pt` layout: the CPU's page tables are
//! read by the same walker as mirror and VT-d tables (`hmm::pt::View`).
//!
//! ```text
//!  63  62..52  51 ........ 12  11..9   8  7  6  5  4  3  2  1  0
//!  NX  ign     address         sw      G  PS D  A  .  .  U  W  P
//! ```
//!
//! A leaf decodes only if it is what a device may mirror: present *and*
//! user-accessible (a PROT_NONE page is present but supervisor-only;
//! swapped, exclusive and dying entries are not present). Non-leaf user
//! entries are P|W|U; permission is decided at the leaf. Bit 10 (software)
//! carries `exclusive` for the round trip only: present entries never set it.

use hmm::pt::{EntryLayout, Leaf};
use x86_64::PhysAddr;

const P: u64 = 1 << 0;
const W: u64 = 1 << 1;
const U: u64 = 1 << 2;
const D: u64 = 1 << 6;
const EXCLUSIVE: u64 = 1 << 10;
const ADDR: u64 = 0x000f_ffff_ffff_f000;

/// The x86-64 4 KiB page-table entry, as HMM reads it.
pub struct CpuLayout;

impl EntryLayout for CpuLayout {
    const NAME: &'static str = "x86-64";

    fn encode_leaf(l: Leaf) -> u64 {
        P | U | if l.write { W } else { 0 } | if l.dirty { D } else { 0 } | if l.exclusive { EXCLUSIVE } else { 0 } | (l.addr.as_u64() & ADDR)
    }

    fn decode_leaf(raw: u64) -> Option<Leaf> {
        (raw & (P | U) == P | U).then(|| Leaf { addr: PhysAddr::new(raw & ADDR), write: raw & W != 0, dirty: raw & D != 0, exclusive: raw & EXCLUSIVE != 0 })
    }

    fn encode_table(t: PhysAddr) -> u64 {
        P | W | U | (t.as_u64() & ADDR)
    }

    fn decode_table(raw: u64) -> Option<PhysAddr> {
        (raw & P != 0).then(|| PhysAddr::new(raw & ADDR))
    }
}
