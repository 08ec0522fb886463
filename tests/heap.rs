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
    kernel::testing::run("heap", tests![random_alloc_free_keeps_contents, aligned_allocations, oversized_request_is_an_error, the_heap_grows_from_frames, area_changes_fail_cleanly_when_the_heap_is_full]);
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

/// With every frame taken and the heap full, changes of an address
/// space's areas (which need heap for their tree) fail with a clean
/// out-of-memory error instead of the allocator's panic, and work again
/// once memory is back.
fn area_changes_fail_cleanly_when_the_heap_is_full() {
    use kernel::aspace::{AddressSpace, AspaceError, MmapError, Prot, RangeError};
    use kernel::mm::frames;
    let a = AddressSpace::new().unwrap();
    let rw = Prot::READ | Prot::WRITE;
    a.mmap(Some(0x1000_0000), 16 * 4096, rw, true).unwrap();
    let mut hoard: alloc::vec::Vec<frames::Frame> = alloc::vec::Vec::new();
    while let Ok(f) = frames::alloc() {
        if hoard.try_reserve(1).is_err() {
            break;
        }
        hoard.push(f);
    }
    let mut fill: alloc::vec::Vec<alloc::vec::Vec<u8>> = alloc::vec::Vec::new();
    for size in [16384usize, 1024, 64] {
        loop {
            let mut v = alloc::vec::Vec::new();
            if v.try_reserve_exact(size).is_err() || fill.try_reserve(1).is_err() {
                break;
            }
            fill.push(v);
        }
    }
    let mmap = a.mmap(Some(0x2000_0000), 4096, rw, true);
    let split = a.munmap(0x1000_4000, 4096);
    let protect = a.mprotect(0x1000_8000, 4096, Prot::READ);
    let forked = a.fork().err();
    drop(fill);
    drop(hoard);
    assert_eq!(mmap, Err(MmapError::NoMemory), "mmap with a full heap");
    assert_eq!(split, Err(RangeError::NoMemory), "a munmap that splits an area");
    assert_eq!(protect, Err(RangeError::NoMemory), "an mprotect that splits an area");
    assert!(forked.is_some(), "fork");
    assert_eq!(alloc::format!("{}", AspaceError::from(MmapError::NoMemory)), "out of kernel memory for the areas");
    // Memory back: the same changes work.
    a.mmap(Some(0x2000_0000), 4096, rw, true).unwrap();
    a.munmap(0x1000_4000, 4096).unwrap();
    a.mprotect(0x1000_8000, 4096, Prot::READ).unwrap();
}
