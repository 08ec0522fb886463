//! The kernel heap: a virtual region of [`super::HEAP_SIZE`] bytes at
//! [`super::HEAP_BASE`], of which only [`HEAP_INITIAL`] is mapped at boot.
//! It grows from the frame allocator when an allocation does not fit
//! (frames mapped at the end, handed to `linked_list_allocator`), so heap
//! use and user memory draw on the same pool. Frames the heap took stay
//! with it.
//!
//! An allocation the heap cannot satisfy even after growing (the region is
//! exhausted, or no frame is left) returns null: `try_reserve` and friends
//! report that as an error; infallible allocations panic with the size
//! asked for (Rust's default for `no_std`), which the panic handler reports.
//!
//! Locking: one spin lock; growth happens under it (the frame allocator and
//! the kernel page table take their own locks after it). Interrupt handlers
//! must not allocate.

use super::frames;
use super::{kpt, HEAP_BASE, HEAP_SIZE};
use core::alloc::{GlobalAlloc, Layout};
use core::ptr::{null_mut, NonNull};
use linked_list_allocator::Heap;
use spin::Mutex;
use x86_64::structures::paging::{Page, PageTableFlags as F};
use x86_64::VirtAddr;

/// Bytes mapped at boot.
pub const HEAP_INITIAL: u64 = 2 << 20;
/// The heap grows by at least this much at a time.
const GROW_STEP: u64 = 256 << 10;
/// Growth never leaves fewer free frames than this: the heap may dip into
/// the frames user memory leaves to the kernel (`aspace`'s USER_FLOOR), but
/// not take the very last ones.
const FRAME_RESERVE: usize = 8;

struct GrowingHeap {
    inner: Mutex<State>,
}

struct State {
    heap: Heap,
    /// Allocations made so far (tests prove paths allocation-free with it).
    allocations: u64,
    /// Bytes mapped from HEAP_BASE.
    mapped: u64,
}

#[global_allocator]
static HEAP: GrowingHeap = GrowingHeap { inner: Mutex::new(State { heap: Heap::empty(), allocations: 0, mapped: 0 }) };

/// Map `bytes` more (page-rounded) at the end of the mapped part; returns
/// how many bytes were mapped (fewer if frames or the region ran out).
fn map_more(mapped: u64, bytes: u64) -> u64 {
    let want = bytes.next_multiple_of(4096);
    let frames_free = frames::stats().free;
    if want > HEAP_SIZE - mapped || (want / 4096) as usize + FRAME_RESERVE > frames_free {
        return 0; // would not fit, or would eat the last frames: refuse outright
    }
    let mut done = 0;
    while done < want {
        let Ok(frame) = frames::alloc() else { break };
        let page = Page::containing_address(VirtAddr::new(HEAP_BASE + mapped + done));
        // SAFETY: the heap region past `mapped` is reserved for the heap and
        // unmapped; the frame is fresh and owned by the heap from now on.
        match unsafe { kpt::map(page, frame.frame(), F::PRESENT | F::WRITABLE | F::NO_EXECUTE) } {
            Ok(flush) => {
                flush.flush();
                let _ = frame.into_raw(); // owned by the heap forever
            }
            Err(_) => break, // no frame for a page table: `frame` is dropped (freed)
        }
        done += 4096;
    }
    done
}

// SAFETY: every block comes from `linked_list_allocator` over memory this
// module mapped and nothing else uses; growth only appends mapped memory.
unsafe impl GlobalAlloc for GrowingHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let mut s = self.inner.lock();
        s.allocations += 1;
        loop {
            if let Ok(p) = s.heap.allocate_first_fit(layout) {
                return p.as_ptr();
            }
            let need = (layout.size() as u64).saturating_add(layout.align() as u64).saturating_add(64).max(GROW_STEP);
            let got = map_more(s.mapped, need);
            if got == 0 {
                return null_mut();
            }
            s.mapped += got;
            // SAFETY: `got` bytes right after the heap's end were just mapped.
            unsafe { s.heap.extend(got as usize) };
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` with this layout (GlobalAlloc's contract).
        unsafe { self.inner.lock().heap.deallocate(NonNull::new_unchecked(ptr), layout) }
    }
}

/// Map the first part of the heap and hand it to the allocator.
pub fn init() -> Result<(), frames::OutOfFrames> {
    let got = map_more(0, HEAP_INITIAL);
    if got == 0 {
        return Err(frames::OutOfFrames);
    }
    if got < HEAP_INITIAL {
        return Err(frames::OutOfFrames);
    }
    let mut s = HEAP.inner.lock();
    s.mapped = got;
    // SAFETY: the range was just mapped, RW, and is used by nothing else.
    unsafe { s.heap.init(HEAP_BASE as *mut u8, got as usize) };
    Ok(())
}

/// (used, free) bytes of the mapped heap.
pub fn usage() -> (usize, usize) {
    let s = HEAP.inner.lock();
    (s.heap.used(), s.heap.free())
}

/// Whether an allocation of `bytes` should succeed now: that much is free
/// in the heap, or the heap may still grow by a step from the frame
/// allocator. Code about to make an allocation it cannot make fallible (a
/// `BTreeMap` insert) asks first and turns "no" into a clean out-of-memory
/// error instead of the allocator's panic.
pub fn has_room(bytes: u64) -> bool {
    let s = HEAP.inner.lock();
    if s.heap.free() as u64 >= bytes.saturating_mul(2) {
        return true;
    }
    let step = bytes.max(GROW_STEP).next_multiple_of(4096);
    HEAP_SIZE - s.mapped >= step && frames::stats().free >= (step / 4096) as usize + FRAME_RESERVE
}

/// Bytes of the heap region mapped so far (it only grows).
pub fn mapped() -> u64 {
    HEAP.inner.lock().mapped
}

/// Allocations made since boot (successful or not).
pub fn allocations() -> u64 {
    HEAP.inner.lock().allocations
}
