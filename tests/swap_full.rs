//! Swap full (64 MiB of RAM, a 32 MiB swap disk): touching more memory than
//! RAM and swap hold gives a clean out-of-memory error; the data written
//! before is intact; after the processes exit, free frames and swap slots
//! are exactly at their baseline.
#![no_std]
#![no_main]

use kernel::aspace::swap::SWAP;
use hmm::VaRange;
use kernel::aspace::{AccessFailure, AddressSpace, Prot};
use kernel::mm::{frames, heap};
use kernel::println;

kernel::entry!(main);

fn main(_: &'static kernel::BootInfo) -> ! {
    kernel::testing::run("swap_full", kernel::tests![swap_full_is_a_clean_error, a_device_fault_protects_its_prefault_block, reclaim_is_global]);
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
        let free_at_oom = frames::stats().free;
        println!("figure: swap full: {free_at_oom} frames left to the kernel at the error");
        assert!(free_at_oom >= kernel::aspace::USER_FLOOR - 4, "user memory left the kernel its reserve");
        // The kernel can still allocate (the heap may grow into the reserve).
        let v: alloc::vec::Vec<u8> = alloc::vec![1; 256 << 10];
        drop(v);
        assert_eq!(err.addr, ra.start() + touched * 4096, "at the page that did not fit");
        assert!(s.slots_in_use + 64 >= s.capacity, "swap was (nearly) full when memory ran out");
        let st = a.stats();
        println!("figure: swap full: {} swap-outs under {} notifications", st.swap_outs, st.notifications);
        assert!(st.notifications * 8 < st.swap_outs, "reclaim evicts in batches, one notification each");
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

/// Hoard frames until the next fault must reclaim.
fn hoard_until_reclaim() -> alloc::vec::Vec<frames::Frame> {
    let mut hoard = alloc::vec::Vec::new();
    while frames::stats().free >= kernel::aspace::RECLAIM_LOW {
        hoard.push(frames::alloc().unwrap());
    }
    hoard
}

/// A device fault (HMM resolves a prefault window page by page) must not
/// have reclaim evict the other pages of its window meanwhile: `fault_in`
/// protects the aligned 2 MiB block around the fault.
fn a_device_fault_protects_its_prefault_block() {
    let a = AddressSpace::new().unwrap();
    let r = a.mmap(Some(0x4000_0000), 4 << 20, Prot::READ | Prot::WRITE, true).unwrap();
    a.copy_to_user(r.start(), &alloc::vec![3u8; 4 << 20]).unwrap();
    a.harvest(r); // every page cold: all are candidates
    let block = VaRange::new(r.start(), r.start() + (2 << 20)).unwrap();
    a.swap_out(VaRange::page_of(r.start() + 4096).unwrap());
    let hoard = hoard_until_reclaim();
    let outs = a.stats().swap_outs;
    // The device faults page 1 (swapped): frames are low, reclaim runs.
    a.fault_in(r.start() + 4096, false).unwrap();
    assert!(a.stats().swap_outs > outs, "the fault reclaimed");
    for va in block.page_addrs() {
        assert!(a.walk(va).is_some(), "page {va:#x} of the faulting block was evicted");
    }
    assert!(a.walk(r.start() + (2 << 20)).is_none(), "reclaim took pages outside the block instead");
    drop(hoard);
}

/// One process's fault reclaims another's cold pages.
fn reclaim_is_global() {
    let cold = AddressSpace::new().unwrap();
    let rc = cold.mmap(None, 256 * 4096, Prot::READ | Prot::WRITE, false).unwrap();
    cold.copy_to_user(rc.start(), &alloc::vec![5u8; 256 * 4096]).unwrap();
    cold.harvest(rc);
    let hot = AddressSpace::new().unwrap();
    let rh = hot.mmap(None, 2 * 4096, Prot::READ | Prot::WRITE, false).unwrap();
    hot.copy_to_user(rh.start(), &[1]).unwrap();
    let hoard = hoard_until_reclaim();
    hot.copy_to_user(rh.start() + 4096, &[2]).unwrap();
    assert!(cold.stats().swap_outs > 0, "the other process's cold pages were reclaimed");
    assert_eq!(hot.stats().swap_outs, 0);
    drop(hoard);
    let mut b = [0u8; 1];
    cold.copy_from_user(rc.start() + 200 * 4096, &mut b).unwrap();
    assert_eq!(b, [5]);
}

extern crate alloc;
