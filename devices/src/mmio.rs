//! Device registers. [`MmioRegion`] is the one place in this crate that
//! touches hardware memory; every driver talks to registers through the
//! [`Registers`] trait, so the host tests can put a fake device behind it.

use core::ptr::{read_volatile, write_volatile};

/// 16-, 32- and 64-bit register access at byte offsets.
pub trait Registers {
    fn read16(&self, offset: usize) -> u16;
    fn write16(&self, offset: usize, value: u16);
    fn read32(&self, offset: usize) -> u32;
    fn write32(&self, offset: usize, value: u32);
    fn read64(&self, offset: usize) -> u64;
    fn write64(&self, offset: usize, value: u64);
}

/// A mapped, uncached MMIO range.
#[derive(Debug)]
pub struct MmioRegion {
    base: *mut u8,
    len: usize,
}

// SAFETY: the region is device memory with no thread affinity; accesses are
// single volatile loads/stores.
unsafe impl Send for MmioRegion {}
// SAFETY: as above; concurrent register accesses are the device's business.
unsafe impl Sync for MmioRegion {}

impl MmioRegion {
    /// # Safety
    /// `[base, base + len)` must map device registers (uncached) for as long
    /// as the region lives, and nothing else may treat it as memory.
    pub unsafe fn new(base: *mut u8, len: usize) -> Self {
        MmioRegion { base, len }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn at<T>(&self, offset: usize) -> *mut T {
        assert!(offset.is_multiple_of(core::mem::size_of::<T>()) && offset + core::mem::size_of::<T>() <= self.len, "register offset {offset:#x} outside a {:#x}-byte region", self.len);
        // SAFETY: in bounds, checked just above.
        unsafe { self.base.add(offset) as *mut T }
    }
}

impl Registers for MmioRegion {
    fn read16(&self, offset: usize) -> u16 {
        // SAFETY: an aligned, in-bounds register of a live mapping (see `new`).
        unsafe { read_volatile(self.at(offset)) }
    }
    fn write16(&self, offset: usize, value: u16) {
        // SAFETY: as in read16.
        unsafe { write_volatile(self.at(offset), value) }
    }
    fn read32(&self, offset: usize) -> u32 {
        // SAFETY: an aligned, in-bounds register of a live mapping (see `new`).
        unsafe { read_volatile(self.at(offset)) }
    }
    fn write32(&self, offset: usize, value: u32) {
        // SAFETY: as in read32.
        unsafe { write_volatile(self.at(offset), value) }
    }
    fn read64(&self, offset: usize) -> u64 {
        // SAFETY: as in read32.
        unsafe { read_volatile(self.at(offset)) }
    }
    fn write64(&self, offset: usize, value: u64) {
        // SAFETY: as in read32.
        unsafe { write_volatile(self.at(offset), value) }
    }
}

// Drivers take their registers by value; a shared reference works too.
impl<R: Registers + ?Sized> Registers for &R {
    fn read16(&self, o: usize) -> u16 {
        (**self).read16(o)
    }
    fn write16(&self, o: usize, v: u16) {
        (**self).write16(o, v)
    }
    fn read32(&self, o: usize) -> u32 {
        (**self).read32(o)
    }
    fn write32(&self, o: usize, v: u32) {
        (**self).write32(o, v)
    }
    fn read64(&self, o: usize) -> u64 {
        (**self).read64(o)
    }
    fn write64(&self, o: usize, v: u64) {
        (**self).write64(o, v)
    }
}

/// A fake register file for host tests: plain memory plus an optional
/// hook that models the device's reaction to writes.
#[cfg(test)]
pub(crate) mod fake {
    use super::Registers;
    use core::cell::RefCell;
    use std::vec::Vec;
    extern crate std;

    /// Models the device's reaction to a write: (registers, offset, value).
    pub type WriteHook = std::boxed::Box<dyn FnMut(&mut Vec<u8>, usize, u64)>;

    pub struct FakeRegs {
        pub mem: RefCell<Vec<u8>>,
        pub on_write: RefCell<Option<WriteHook>>,
        pub writes: RefCell<Vec<(usize, u64)>>,
    }

    impl FakeRegs {
        pub fn new(len: usize) -> Self {
            FakeRegs { mem: RefCell::new(std::vec![0; len]), on_write: RefCell::new(None), writes: RefCell::new(Vec::new()) }
        }
        pub fn set64(&self, off: usize, v: u64) {
            self.mem.borrow_mut()[off..off + 8].copy_from_slice(&v.to_le_bytes());
        }
        pub fn set32(&self, off: usize, v: u32) {
            self.mem.borrow_mut()[off..off + 4].copy_from_slice(&v.to_le_bytes());
        }
        fn written(&self, off: usize, v: u64) {
            self.writes.borrow_mut().push((off, v));
            if let Some(h) = self.on_write.borrow_mut().as_mut() {
                h(&mut self.mem.borrow_mut(), off, v);
            }
        }
    }

    impl Registers for FakeRegs {
        fn read16(&self, off: usize) -> u16 {
            u16::from_le_bytes(self.mem.borrow()[off..off + 2].try_into().unwrap())
        }
        fn write16(&self, off: usize, v: u16) {
            self.mem.borrow_mut()[off..off + 2].copy_from_slice(&v.to_le_bytes());
            self.written(off, v as u64);
        }
        fn read32(&self, off: usize) -> u32 {
            u32::from_le_bytes(self.mem.borrow()[off..off + 4].try_into().unwrap())
        }
        fn write32(&self, off: usize, v: u32) {
            self.set32(off, v);
            self.written(off, v as u64);
        }
        fn read64(&self, off: usize) -> u64 {
            u64::from_le_bytes(self.mem.borrow()[off..off + 8].try_into().unwrap())
        }
        fn write64(&self, off: usize, v: u64) {
            self.set64(off, v);
            self.written(off, v);
        }
    }
}
