//! The bootstrap frame source: a bump pointer over one usable region, used
//! only until the bitmap allocator exists (for the kernel page table's own
//! pages and the allocator's metadata). Everything it handed out is then
//! marked used in the bitmap, so nothing is ever handed out twice.

use pvh::{BootInfo, MemoryKind};
use x86_64::structures::paging::{FrameAllocator, PhysFrame, Size4KiB};
use x86_64::PhysAddr;

/// Early frames must be reachable through the boot identity map (1 GiB).
const IDENTITY_LIMIT: u64 = 1 << 30;

pub struct EarlyFrames {
    start: u64,
    next: u64,
    end: u64,
}

impl EarlyFrames {
    /// Take the largest usable stretch above `after` (the kernel image's end)
    /// and below 1 GiB.
    pub fn new(info: &BootInfo, after: PhysAddr) -> Option<Self> {
        info.memory_map()
            .iter()
            .filter(|r| r.kind == MemoryKind::Usable)
            .map(|r| {
                let start = r.start.as_u64().max(after.as_u64()).max(1 << 20).next_multiple_of(4096);
                let end = r.end().min(IDENTITY_LIMIT) & !0xfff;
                (start, end)
            })
            .filter(|(s, e)| s < e)
            .max_by_key(|(s, e)| e - s)
            .map(|(start, end)| EarlyFrames { start, next: start, end })
    }

    /// `count` physically contiguous zeroed frames.
    pub fn alloc_contiguous(&mut self, count: u64) -> Option<PhysAddr> {
        let bytes = count * 4096;
        if self.end - self.next < bytes {
            return None;
        }
        let at = self.next;
        self.next += bytes;
        for i in 0..count {
            // SAFETY: just taken from free RAM below the identity limit; nothing else uses it.
            unsafe { super::direct::zero_frame(PhysFrame::containing_address(PhysAddr::new(at + i * 4096))) };
        }
        Some(PhysAddr::new(at))
    }

    /// The physical range handed out so far: `[start, end)`.
    pub fn used(&self) -> (PhysAddr, PhysAddr) {
        (PhysAddr::new(self.start), PhysAddr::new(self.next))
    }
}

// SAFETY: each frame is handed out once (the bump pointer only grows) and is
// free RAM per the memory map, zeroed.
unsafe impl FrameAllocator<Size4KiB> for EarlyFrames {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        self.alloc_contiguous(1).map(PhysFrame::containing_address)
    }
}
