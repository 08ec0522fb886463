//! The interrupt vector allocator: vectors 0x30..=0xef are handed out to
//! devices (0x20..0x2f stay unused: the masked PICs' range; 0xf0..0xff are
//! the kernel's: timer 0xfe, spurious 0xff). A [`Vector`] owns its number
//! and gives it back on drop.

use core::sync::atomic::{AtomicU64, Ordering};

const FIRST: u8 = 0x30;
const LAST: u8 = 0xef;

/// One bit per vector 0..=255, set = taken.
static USED: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

/// Every device vector is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoVectorLeft;

impl core::fmt::Display for NoVectorLeft {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "no free interrupt vector ({FIRST:#x}..={LAST:#x} all taken)")
    }
}

/// An allocated vector, routed to the counting handler while it lives.
#[derive(Debug)]
pub struct Vector(u8);

impl Vector {
    /// Take a free vector.
    pub fn alloc() -> Result<Vector, NoVectorLeft> {
        for v in FIRST..=LAST {
            if v == crate::arch::idt::SYSCALL_VECTOR {
                continue; // the system-call gate, never a device's
            }
            let (w, bit) = ((v / 64) as usize, 1u64 << (v % 64));
            if USED[w].fetch_or(bit, Ordering::SeqCst) & bit == 0 {
                crate::arch::trap::set_interrupt_handler(v, super::on_vector);
                return Ok(Vector(v));
            }
        }
        Err(NoVectorLeft)
    }

    pub fn number(&self) -> u8 {
        self.0
    }

    /// How many times it has fired.
    pub fn count(&self) -> u64 {
        super::count(self.0)
    }
}

impl Drop for Vector {
    fn drop(&mut self) {
        crate::arch::trap::clear_interrupt_handler(self.0);
        USED[(self.0 / 64) as usize].fetch_and(!(1u64 << (self.0 % 64)), Ordering::SeqCst);
    }
}
