//! Table memory for IOMMU and HMM tables: frames from the frame allocator,
//! written through the direct map. A table frame is flagged PAGE_TABLE and
//! owned by the table until it is freed.

use crate::mm::direct;
use crate::mm::frames::{self, Frame, FrameFlags};
use core::ptr::NonNull;
use hmm::pt::{Node, TableMemory};
use x86_64::structures::paging::PhysFrame;
use x86_64::PhysAddr;

/// Frames for page-table nodes.
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelTableMemory;

// SAFETY: `alloc_zeroed` hands out each frame once, zeroed and 4 KiB
// aligned; the direct map covers every RAM frame for as long as it lives.
unsafe impl TableMemory for KernelTableMemory {
    fn alloc_table(&self) -> Option<PhysAddr> {
        let f = frames::alloc_zeroed().ok()?;
        f.set_flags(FrameFlags::PAGE_TABLE);
        Some(f.into_raw().start_address())
    }

    unsafe fn free_table(&self, table: PhysAddr) {
        // SAFETY: `table` came from `alloc_table`, whose reference moved
        // into the table; per the caller's contract nothing uses it now.
        drop(unsafe { Frame::from_raw(PhysFrame::containing_address(table)) });
    }

    fn table(&self, table: PhysAddr) -> NonNull<Node> {
        NonNull::new(direct::phys_to_virt(table).as_mut_ptr()).expect("direct-map address is not null")
    }
}
