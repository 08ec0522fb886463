//! Device registers: physical MMIO ranges mapped uncached into the MMIO
//! window. Mappings are permanent (devices live as long as the kernel); the
//! window is handed out with a bump pointer, one unmapped gap page between
//! mappings so a runaway access faults instead of hitting the next device.
//!
//! Large, 2 MiB-aligned ranges (PCI ECAM is 256 MiB) are mapped with 2 MiB
//! pages: 128 entries instead of 65,536.

use super::{frames::OutOfFrames, kpt, MMIO_BASE, MMIO_SIZE};
use core::sync::atomic::{AtomicU64, Ordering};
use x86_64::structures::paging::mapper::{MapToError, MapperFlush};
use x86_64::structures::paging::{Page, PageSize, PageTableFlags as F, PhysFrame, Size2MiB, Size4KiB};
use x86_64::{PhysAddr, VirtAddr};

static NEXT: AtomicU64 = AtomicU64::new(MMIO_BASE);

const FLAGS: F = F::PRESENT.union(F::WRITABLE).union(F::NO_EXECUTE).union(F::NO_CACHE).union(F::WRITE_THROUGH);

/// Map `len` bytes of device memory at `phys`, uncached; returns the
/// virtual address of `phys` itself.
pub fn map(phys: PhysAddr, len: u64) -> Result<VirtAddr, OutOfFrames> {
    let huge = phys.is_aligned(Size2MiB::SIZE) && len >= Size2MiB::SIZE && len.is_multiple_of(Size2MiB::SIZE);
    let page = if huge { Size2MiB::SIZE } else { Size4KiB::SIZE };
    let first = phys.align_down(page);
    let span = (phys.as_u64() + len - first.as_u64()).next_multiple_of(page);
    // Reserve [gap page][mapping], aligned for the page size.
    let base = loop {
        let cur = NEXT.load(Ordering::SeqCst);
        let base = (cur + Size4KiB::SIZE).next_multiple_of(page);
        if NEXT.compare_exchange(cur, base + span, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
            break base;
        }
    };
    assert!(base + span <= MMIO_BASE + MMIO_SIZE, "MMIO window exhausted");
    let mut off = 0;
    while off < span {
        let (virt, frame) = (VirtAddr::new(base + off), first + off);
        // SAFETY: the window range is fresh (bump-allocated, never mapped)
        // and `frame` is device memory, not RAM that Rust code owns.
        let result = unsafe {
            if huge {
                settle(kpt::map_huge(Page::containing_address(virt), PhysFrame::containing_address(frame), FLAGS), virt)
            } else {
                settle(kpt::map(Page::containing_address(virt), PhysFrame::containing_address(frame), FLAGS), virt)
            }
        };
        result?;
        off += page;
    }
    Ok(VirtAddr::new(base + (phys - first)))
}

/// Flush a new mapping, or turn its failure into ours. Anything but running
/// out of frames is a kernel bug (the window range was fresh).
fn settle<S: PageSize + core::fmt::Debug>(r: Result<MapperFlush<S>, MapToError<S>>, virt: VirtAddr) -> Result<(), OutOfFrames> {
    match r {
        Ok(flush) => {
            flush.flush();
            Ok(())
        }
        Err(MapToError::FrameAllocationFailed) => Err(OutOfFrames),
        Err(e) => panic!("MMIO mapping at {:#x}: {e:?}", virt.as_u64()),
    }
}
