//! Heap stress: thousands of allocations of mixed sizes and alignments,
//! freed in random order, contents checked; usage returns to where it was;
//! an impossible request is an error, not a crash.
#![no_std]
#![no_main]

extern crate alloc;
use alloc::boxed::Box;
use alloc::vec::Vec;
use kernel::mm::heap;
use kernel::{tests, BootInfo};
use test_kernels::Rng;

kernel::entry!(main);

fn main(_: &'static BootInfo) -> ! {
    kernel::testing::run("heap", tests![random_alloc_free_keeps_contents, aligned_allocations, oversized_request_is_an_error, the_heap_grows_from_frames]);
}

fn random_alloc_free_keeps_contents() {
    let (used_before, _) = heap::usage();
    let mut rng = Rng::new(42);
    let mut live: Vec<(u8, Vec<u8>)> = Vec::new();
    for round in 0..20_000u32 {
        if live.len() < 512 && (rng.below(3) != 0 || live.is_empty()) {
            let len = match rng.below(10) {
                0 => rng.below(64 * 1024) as usize,
                _ => rng.below(512) as usize + 1,
            };
            let tag = (round % 251) as u8;
            live.push((tag, alloc::vec![tag; len]));
        } else {
            let i = rng.below(live.len() as u64) as usize;
            let (tag, v) = live.swap_remove(i);
            assert!(v.iter().all(|&b| b == tag), "heap block corrupted");
        }
    }
    for (tag, v) in live.drain(..) {
        assert!(v.iter().all(|&b| b == tag), "heap block corrupted");
    }
    drop(live);
    assert_eq!(heap::usage().0, used_before, "everything freed");
}

fn aligned_allocations() {
    #[repr(align(4096))]
    struct Page([u8; 4096]);
    let pages: Vec<Box<Page>> = (0..64).map(|i| Box::new(Page([i as u8; 4096]))).collect();
    for (i, p) in pages.iter().enumerate() {
        assert_eq!(&**p as *const Page as usize % 4096, 0, "alignment honoured");
        assert!(p.0.iter().all(|&b| b == i as u8));
    }
}

fn oversized_request_is_an_error() {
    let mut v: Vec<u8> = Vec::new();
    assert!(v.try_reserve(kernel::mm::HEAP_SIZE as usize * 2).is_err(), "more than the heap holds is refused");
    assert!(v.try_reserve(4096).is_ok(), "and the heap still works");
}

fn the_heap_grows_from_frames() {
    let mapped = heap::mapped();
    let free = kernel::mm::frames::stats().free;
    let big: Vec<u8> = alloc::vec![7u8; 8 << 20];
    assert!(heap::mapped() >= mapped + (6 << 20), "an allocation larger than the mapped heap grows it");
    assert!(kernel::mm::frames::stats().free + (6 << 20) / 4096 <= free, "with frames from the frame allocator");
    assert!(big.iter().all(|&b| b == 7));
    let mut v: Vec<u8> = Vec::new();
    let frames_left = kernel::mm::frames::stats().free as usize * 4096;
    assert!(v.try_reserve(frames_left + (1 << 20)).is_err(), "growth beyond the free frames is refused");
    assert!(kernel::mm::frames::stats().free * 4096 + (1 << 20) >= frames_left, "and takes (almost) nothing");
}
