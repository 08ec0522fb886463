//! DMA for the swap disk: every buffer the virtio-blk device touches is
//! mapped, for exactly as long as it is shared, in the disk's own VT-d
//! domain (IOVA = physical address). Nothing else of RAM is reachable by
//! the device: a buffer that is not shared faults in the IOMMU.
//!
//! ```text
//!  dma_alloc (virtqueue rings) ─► fresh frame, mapped until dma_dealloc
//!  share(buffer)               ─► its pages mapped (read-only if the device
//!                                 only reads), IOVA = physical address
//!  unshare(buffer)             ─► unmapped + IOTLB flush: the device cannot
//!                                 reach the frame any more
//! ```
//!
//! `virtio-drivers` calls the [`Hal`] without a receiver, so the domain
//! lives in a static ([`DMA`]). Lock order: the disk, then [`DMA`], then
//! the IOMMU. Buffers must lie in the direct map (frames): the swap path
//! only shares page frames and the disk's control frame.

use crate::mm::direct;
use crate::mm::frames::{self, Frame, FrameFlags};
use crate::platform::{KernelIommu, KernelTableMemory};
use core::ptr::NonNull;
use core::sync::atomic::AtomicBool;
use devices::vtd::{Domain, Iova, Perm};
use spin::Mutex;
use virtio_drivers::{BufferDirection, Hal, PhysAddr as VirtioAddr};
use x86_64::structures::paging::PhysFrame;
use x86_64::{PhysAddr, VirtAddr};

/// The disk's translation domain and the IOMMU that walks it.
pub(super) struct DiskDma {
    pub domain: Domain<KernelTableMemory>,
    pub iommu: &'static crate::sync::RankedMutex<KernelIommu>,
    /// Pages mapped for good (rings, the control frame): never unmapped by `unshare`.
    pub permanent: [Option<PhysAddr>; 10],
}

pub(super) static DMA: Mutex<Option<DiskDma>> = Mutex::new(None);

/// Test hook: the next transfer runs with its buffer out of the domain, so
/// the device's access to it faults in the IOMMU.
pub(super) static SKIP_NEXT_SHARE: AtomicBool = AtomicBool::new(false);

/// The `virtio-drivers` HAL of the swap disk.
pub struct DiskHal;

fn pages_of(buffer: NonNull<[u8]>) -> Option<(PhysAddr, u64)> {
    let start = buffer.as_ptr() as *mut u8 as u64;
    let len = buffer.len() as u64;
    let first = direct::virt_to_phys(VirtAddr::new(start))?;
    let last = direct::virt_to_phys(VirtAddr::new(start.checked_add(len.max(1) - 1)?))?;
    // The direct map is linear: the buffer is physically contiguous.
    let base = first.align_down(4096u64);
    let pages = (last.as_u64() - base.as_u64()) / 4096 + 1;
    Some((base, pages))
}

fn map(dma: &mut DiskDma, base: PhysAddr, pages: u64, perm: Perm) -> bool {
    for i in 0..pages {
        let pa = base + i * 4096;
        match dma.domain.map(Iova::new(pa.as_u64()), pa, perm) {
            Ok(token) => {
                let iommu = dma.iommu;
                if iommu.lock().flush(&mut dma.domain, token).is_err() {
                    return false;
                }
            }
            Err(_) => return false,
        }
    }
    true
}

fn unmap(dma: &mut DiskDma, base: PhysAddr, pages: u64) {
    if let Ok(token) = dma.domain.unmap(Iova::new(base.as_u64()), pages) {
        let iommu = dma.iommu;
        if let Err(e) = iommu.lock().flush(&mut dma.domain, token) {
            log::error!("swap disk: IOTLB flush failed: {e}");
        }
    }
}

fn perm_of(direction: BufferDirection) -> Perm {
    match direction {
        BufferDirection::DriverToDevice => Perm::ReadOnly,
        BufferDirection::DeviceToDriver | BufferDirection::Both => Perm::ReadWrite,
    }
}

// SAFETY: `dma_alloc` returns fresh zeroed frames (only single pages: the
// frame allocator has no contiguous runs; larger requests fail cleanly with
// address 0), reachable through the direct map until `dma_dealloc`; `share`
// returns the IOVA at which exactly the buffer's pages are mapped.
unsafe impl Hal for DiskHal {
    fn dma_alloc(pages: usize, direction: BufferDirection) -> (VirtioAddr, NonNull<u8>) {
        let fail = (0, NonNull::dangling());
        if pages != 1 {
            return fail;
        }
        let Ok(f) = frames::alloc_zeroed() else { return fail };
        f.set_flags(FrameFlags::PAGE_TABLE);
        let pa = f.start_address();
        let mut guard = DMA.lock();
        let Some(dma) = guard.as_mut() else { return fail };
        if !map(dma, pa, 1, perm_of(direction)) {
            return fail;
        }
        if let Some(slot) = dma.permanent.iter_mut().find(|s| s.is_none()) {
            *slot = Some(pa);
        }
        let va = direct::phys_to_virt(f.into_raw().start_address());
        (pa.as_u64(), NonNull::new(va.as_mut_ptr()).expect("direct map is not null"))
    }

    unsafe fn dma_dealloc(paddr: VirtioAddr, _vaddr: NonNull<u8>, pages: usize) -> i32 {
        let pa = PhysAddr::new(paddr);
        if let Some(dma) = DMA.lock().as_mut() {
            unmap(dma, pa, pages as u64);
            if let Some(slot) = dma.permanent.iter_mut().find(|s| **s == Some(pa)) {
                *slot = None;
            }
        }
        // SAFETY: the frame came from `dma_alloc`, whose reference moved into
        // the returned pointer; it is unmapped from the device now.
        drop(unsafe { Frame::from_raw(PhysFrame::containing_address(pa)) });
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: VirtioAddr, size: usize) -> NonNull<u8> {
        let va = crate::mm::mmio::map(PhysAddr::new(paddr), size as u64).expect("MMIO window for the swap disk's BAR");
        NonNull::new(va.as_mut_ptr()).expect("MMIO mapping is not null")
    }

    unsafe fn share(buffer: NonNull<[u8]>, direction: BufferDirection) -> VirtioAddr {
        let Some((base, pages)) = pages_of(buffer) else {
            // Not in the direct map: hand the device an address nothing maps.
            log::error!("swap disk: a buffer outside the direct map was shared");
            return 0;
        };
        let offset = buffer.as_ptr() as *mut u8 as u64 & 0xfff;
        let mut guard = DMA.lock();
        let Some(dma) = guard.as_mut() else { return 0 };
        if dma.permanent.contains(&Some(base)) {
            return base.as_u64() + offset;
        }
        if !map(dma, base, pages, perm_of(direction)) {
            log::error!("swap disk: no IOMMU table memory to share a buffer");
        }
        base.as_u64() + offset
    }

    unsafe fn unshare(paddr: VirtioAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {
        let base = PhysAddr::new(paddr).align_down(4096u64);
        let pages = (_buffer.len() as u64 + (paddr & 0xfff)).div_ceil(4096);
        let mut guard = DMA.lock();
        let Some(dma) = guard.as_mut() else { return };
        if dma.permanent.contains(&Some(base)) {
            return;
        }
        unmap(dma, base, pages);
    }
}

/// Map the control frame for good.
pub(super) fn map_permanent(frame: PhysFrame) -> bool {
    let mut guard = DMA.lock();
    let Some(dma) = guard.as_mut() else { return false };
    let Some(slot) = dma.permanent.iter_mut().position(|s| s.is_none()) else { return false };
    if !map(dma, frame.start_address(), 1, Perm::ReadWrite) {
        return false;
    }
    dma.permanent[slot] = Some(frame.start_address());
    true
}

/// Take a permanent page out of the domain for a while (test hook; see
/// [`SKIP_NEXT_SHARE`]): it stays listed as permanent, so `share` of it
/// maps nothing and the device's access faults until [`remap_permanent`].
pub(super) fn unmap_permanent(frame: PhysFrame) {
    if let Some(dma) = DMA.lock().as_mut() {
        unmap(dma, frame.start_address(), 1);
    }
}

/// Undo [`unmap_permanent`].
pub(super) fn remap_permanent(frame: PhysFrame) {
    if let Some(dma) = DMA.lock().as_mut() {
        if !map(dma, frame.start_address(), 1, Perm::ReadWrite) {
            log::error!("swap disk: could not map its bounce page again");
        }
    }
}
