//! Device registers: physical MMIO ranges mapped uncached into the MMIO
//! window. Mappings are permanent (devices live as long as the kernel); the
//! window is handed out with a bump pointer.

use super::{frames::OutOfFrames, kpt, MMIO_BASE, MMIO_SIZE};
use core::sync::atomic::{AtomicU64, Ordering};
use x86_64::structures::paging::{Page, PageTableFlags as F, PhysFrame};
use x86_64::{PhysAddr, VirtAddr};

static NEXT: AtomicU64 = AtomicU64::new(MMIO_BASE);

/// Map `len` bytes of device memory at `phys`, uncached; returns the
/// virtual address of `phys` itself.
pub fn map(phys: PhysAddr, len: u64) -> Result<VirtAddr, OutOfFrames> {
    let first = phys.align_down(4096u64);
    let pages = (phys.as_u64() + len - first.as_u64()).div_ceil(4096);
    let base = NEXT.fetch_add(pages * 4096 + 4096, Ordering::SeqCst); // + a gap page
    assert!(base + pages * 4096 <= MMIO_BASE + MMIO_SIZE, "MMIO window exhausted");
    for i in 0..pages {
        let page = Page::containing_address(VirtAddr::new(base + i * 4096));
        let frame = PhysFrame::containing_address(first + i * 4096);
        // SAFETY: the window page is fresh (bump-allocated) and `frame` is
        // device memory, not RAM that Rust code owns.
        match unsafe { kpt::map(page, frame, F::PRESENT | F::WRITABLE | F::NO_EXECUTE | F::NO_CACHE | F::WRITE_THROUGH) } {
            Ok(flush) => flush.flush(),
            Err(x86_64::structures::paging::mapper::MapToError::FrameAllocationFailed) => return Err(OutOfFrames),
            Err(e) => panic!("MMIO mapping at {:#x}: {e:?}", base + i * 4096),
        }
    }
    Ok(VirtAddr::new(base + (phys - first)))
}
