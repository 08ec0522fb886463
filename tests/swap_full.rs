//! Swap full (64 MiB of RAM, a 32 MiB swap disk): touching more memory than
//! RAM and swap hold gives a clean out-of-memory error; the data written
//! before is intact; after the processes exit, free frames and swap slots
//! are exactly at their baseline.
#![no_std]
#![no_main]

use kernel::aspace::swap::SWAP;
use kernel::aspace::{AccessFailure, AddressSpace, Prot};
use kernel::mm::{frames, heap};
use kernel::println;

kernel::entry!(main);

fn main(_: &'static kernel::BootInfo) -> ! {
    kernel::testing::run("swap_full", kernel::tests![swap_full_is_a_clean_error]);
}

fn fill_page(buf: &mut [u8; 4096], page: u64) {
    let x = page.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5eed;
    for (i, w) in buf.chunks_exact_mut(8).enumerate() {
        w.copy_from_slice(&(x ^ (i as u64).wrapping_mul(0x0101_0101_0101_0101)).to_le_bytes());
    }
}

fn swap_full_is_a_clean_error() {
    let rw = Prot::READ | Prot::WRITE;
    let sw = SWAP.init();
    assert_eq!(sw.capacity, 32 * 256, "this kernel is meant for a 32 MiB swap disk");
    // Warm-up: the heap and the swap store's reserve reach their steady size.
    {
        let w = AddressSpace::new().unwrap();
        let r = w.mmap(None, 64 * 4096, rw, false).unwrap();
        w.copy_to_user(r.start(), &[1u8; 64 * 4096]).unwrap();
        w.swap_out(r);
    }
    let base_frames = frames::stats().free;
    let base_slots = SWAP.stats().slots_in_use;
    let base_heap = heap::mapped();
    assert_eq!(base_slots, 0);
    {
        // B holds 4 MiB, to be given back after A hits the wall.
        let b = AddressSpace::new().unwrap();
        let rb = b.mmap(None, 4 << 20, rw, false).unwrap();
        let mut buf = [0u8; 4096];
        for p in 0..1024 {
            fill_page(&mut buf, 1_000_000 + p);
            b.copy_to_user(rb.start() + p * 4096, &buf).unwrap();
        }
        let a = AddressSpace::new().unwrap();
        let limit = (frames::stats().managed as u64 + sw.capacity) * 2; // far more than fits
        let ra = a.mmap(None, limit * 4096, rw, false).unwrap();
        let mut touched = 0;
        let err = loop {
            fill_page(&mut buf, touched);
            match a.copy_to_user(ra.start() + touched * 4096, &buf) {
                Ok(()) => touched += 1,
                Err(e) => break e,
            }
            assert!(touched < limit, "memory never ran out");
        };
        let s = SWAP.stats();
        println!();
        println!("figure: swap full: {touched} pages ({} MiB) written, then `{err}`; {} of {} slots in use", touched >> 8, s.slots_in_use, s.capacity);
        assert_eq!(err.reason, AccessFailure::OutOfMemory, "a clean out-of-memory error");
        assert_eq!(err.addr, ra.start() + touched * 4096, "at the page that did not fit");
        assert!(s.slots_in_use + 64 >= s.capacity, "swap was (nearly) full when memory ran out");
        // B exits: A's earlier data can come back, all of it.
        drop(b);
        let mut got = [0u8; 4096];
        for p in 0..touched {
            fill_page(&mut buf, p);
            a.copy_from_user(ra.start() + p * 4096, &mut got).unwrap_or_else(|e| panic!("reading page {p} back: {e}"));
            assert!(got == buf, "page {p} was corrupted");
        }
        println!("figure: swap full: all {touched} earlier pages verified after the error");
    }
    let f = frames::stats().free;
    let s = SWAP.stats().slots_in_use;
    println!("figure: swap full: after exit, free frames {f} (baseline {base_frames}), swap slots in use {s} (baseline {base_slots})");
    assert_eq!(heap::mapped(), base_heap, "the heap did not grow");
    assert_eq!(f, base_frames, "every frame came back");
    assert_eq!(s, base_slots, "every swap slot came back");
}
