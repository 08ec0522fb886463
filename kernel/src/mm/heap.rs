//! The kernel heap: [`super::HEAP_SIZE`] bytes at [`super::HEAP_BASE`],
//! mapped at boot with frames from the frame allocator, managed by
//! `linked_list_allocator`. Allocation failure panics with the size asked
//! for (Rust's default for `no_std`), which the panic handler reports.

use super::frames;
use super::{kpt, HEAP_BASE, HEAP_SIZE};
use linked_list_allocator::LockedHeap;
use x86_64::structures::paging::{Page, PageTableFlags as F};
use x86_64::VirtAddr;

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

/// Map the heap region and hand it to the allocator.
pub fn init() -> Result<(), frames::OutOfFrames> {
    for i in 0..HEAP_SIZE / 4096 {
        let page = Page::containing_address(VirtAddr::new(HEAP_BASE + i * 4096));
        let frame = frames::alloc()?.into_raw(); // owned by the heap forever
        // SAFETY: the heap region is reserved for exactly this and unused;
        // each page gets a fresh frame nobody else references.
        unsafe { kpt::map(page, frame, F::PRESENT | F::WRITABLE | F::NO_EXECUTE) }.expect("heap mapping").flush();
    }
    // SAFETY: the range was just mapped, RW, and is used by nothing else.
    unsafe { HEAP.lock().init(HEAP_BASE as *mut u8, HEAP_SIZE as usize) };
    Ok(())
}

/// (used, free) bytes of the heap.
pub fn usage() -> (usize, usize) {
    let h = HEAP.lock();
    (h.used(), h.free())
}
