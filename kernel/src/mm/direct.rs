//! The direct map: all RAM at `phys + offset`. This module is the one place
//! that turns a physical address into a pointer.
//!
//! During early boot the offset is 0 (the boot identity map); once the
//! kernel's own page table is loaded it is [`super::DIRECT_MAP_BASE`].

use core::sync::atomic::{AtomicU64, Ordering};
use x86_64::structures::paging::PhysFrame;
use x86_64::{PhysAddr, VirtAddr};

static OFFSET: AtomicU64 = AtomicU64::new(0);

/// Switch from the identity map to the direct map (called once, by
/// `kpt::build_and_switch`, right after loading the new page table).
pub(super) fn set_offset(offset: u64) {
    OFFSET.store(offset, Ordering::SeqCst);
}

/// The current direct-map offset.
pub fn offset() -> VirtAddr {
    VirtAddr::new(OFFSET.load(Ordering::Relaxed))
}

/// The virtual address of physical `addr` in the direct map.
pub fn phys_to_virt(addr: PhysAddr) -> VirtAddr {
    VirtAddr::new(addr.as_u64() + OFFSET.load(Ordering::Relaxed))
}

/// The physical address behind a direct-map address, if it is one.
pub fn virt_to_phys(addr: VirtAddr) -> Option<PhysAddr> {
    let off = OFFSET.load(Ordering::Relaxed);
    (off != 0 && addr.as_u64() >= off && addr.as_u64() < off + super::DIRECT_MAP_MAX).then(|| PhysAddr::new(addr.as_u64() - off))
}

fn frame_ptr(frame: PhysFrame) -> *mut u8 {
    phys_to_virt(frame.start_address()).as_mut_ptr()
}

// The functions below copy with raw pointers, never through references:
// a frame may be shared (COW) or written by a device at any time, so no
// Rust reference to its contents may exist.

/// Fill `frame` with zeros.
///
/// # Safety
/// The caller owns `frame` (allocated, not shared with anything that
/// expects its old contents).
pub unsafe fn zero_frame(frame: PhysFrame) {
    // SAFETY: the direct map covers every RAM frame; the caller owns it.
    unsafe { core::ptr::write_bytes(frame_ptr(frame), 0, 4096) }
}

/// Copy a whole frame.
///
/// # Safety
/// `dst` is owned by the caller; `src` is allocated RAM; they differ.
pub unsafe fn copy_frame(dst: PhysFrame, src: PhysFrame) {
    // SAFETY: both are RAM frames in the direct map; distinct frames do not overlap.
    unsafe { core::ptr::copy_nonoverlapping(frame_ptr(src), frame_ptr(dst), 4096) }
}

/// Read `buf.len()` bytes at `offset` in `frame`.
///
/// # Panics
/// If the range leaves the frame.
pub fn read_frame(frame: PhysFrame, offset: usize, buf: &mut [u8]) {
    assert!(offset + buf.len() <= 4096, "read past the end of a frame");
    // SAFETY: in bounds of an allocated RAM frame in the direct map; a byte
    // copy from RAM has no side effects whatever the frame's state.
    unsafe { core::ptr::copy_nonoverlapping(frame_ptr(frame).add(offset), buf.as_mut_ptr(), buf.len()) }
}

/// Write `data` at `offset` in `frame`.
///
/// # Safety
/// The caller owns the bytes being written (no one relies on their old value).
pub unsafe fn write_frame(frame: PhysFrame, offset: usize, data: &[u8]) {
    assert!(offset + data.len() <= 4096, "write past the end of a frame");
    // SAFETY: in bounds of a RAM frame in the direct map; ownership per caller.
    unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), frame_ptr(frame).add(offset), data.len()) }
}

/// Read physical memory that is not (necessarily) a whole allocated frame:
/// firmware tables, the boot hand-off.
///
/// # Safety
/// `[addr, addr + buf.len())` must be mapped (direct map, or identity map
/// during early boot) and be plain memory (no device registers).
pub unsafe fn read_phys(addr: PhysAddr, buf: &mut [u8]) {
    // SAFETY: forwarded to the caller.
    unsafe { core::ptr::copy_nonoverlapping(phys_to_virt(addr).as_ptr::<u8>(), buf.as_mut_ptr(), buf.len()) }
}
