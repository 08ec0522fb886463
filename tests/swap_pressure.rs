//! Memory pressure figures, in a small guest (64 MiB of RAM; the launcher
//! gives this kernel a 512 MiB swap disk):
//!
//! * a process touching 4× the guest's RAM completes through swap, every
//!   byte verified after;
//! * munmap of 1,000,000 pages in one call, the heap not growing;
//! * device jobs during heavy swapping: a device read of swapped-out pages
//!   swaps them in; a device write to them lands and survives the next
//!   swap-out.
//!
//! Each prints its figures (`figure:` lines).
#![no_std]
#![no_main]

extern crate alloc;

use alloc::sync::Arc;
use alloc::vec::Vec;
use hmm::VaRange;
use kernel::aspace::swap::SWAP;
use kernel::aspace::{AddressSpace, Prot};
use kernel::hmmdev::{accels, ProcessHmm};
use kernel::mm::{frames, heap};
use kernel::println;

kernel::entry!(main);

fn main(_: &'static kernel::BootInfo) -> ! {
    kernel::testing::run("swap_pressure", kernel::tests![four_times_ram_through_swap, munmap_a_million_pages, device_jobs_during_heavy_swapping]);
}

fn rw() -> Prot {
    Prot::READ | Prot::WRITE
}

/// Page `page`'s contents: every 8-byte word depends on the page and its
/// position, so a page that came back in the wrong place, or a word that
/// did not come back, is caught by comparing all 4096 bytes.
fn fill_page(buf: &mut [u8; 4096], seed: u64, page: u64) {
    let x = page.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seed;
    for (i, w) in buf.chunks_exact_mut(8).enumerate() {
        w.copy_from_slice(&(x ^ (i as u64).wrapping_mul(0x0101_0101_0101_0101)).to_le_bytes());
    }
}

/// Guest RAM in bytes, as the frame allocator manages it.
fn ram() -> u64 {
    frames::stats().managed as u64 * 4096
}

fn four_times_ram_through_swap() {
    SWAP.init();
    let a = AddressSpace::new().unwrap();
    let guest_ram = 64u64 << 20;
    assert!(ram() <= guest_ram, "this kernel is meant for a 64 MiB guest");
    let len = 4 * guest_ram;
    let pages = len / 4096;
    let r = a.mmap(None, len, rw(), false).unwrap();
    let heap_before = heap::mapped();
    let sw0 = SWAP.stats();
    let t0 = kernel::cycles::now();
    let mut buf = [0u8; 4096];
    for p in 0..pages {
        fill_page(&mut buf, 1, p);
        a.copy_to_user(r.start() + p * 4096, &buf).unwrap_or_else(|e| panic!("writing page {p}: {e}"));
    }
    let t1 = kernel::cycles::now();
    let mut got = [0u8; 4096];
    for p in 0..pages {
        fill_page(&mut buf, 1, p);
        a.copy_from_user(r.start() + p * 4096, &mut got).unwrap_or_else(|e| panic!("reading page {p}: {e}"));
        assert!(got == buf, "page {p} differs after its trip through swap");
    }
    let t2 = kernel::cycles::now();
    let s = a.stats();
    let sw = SWAP.stats();
    println!();
    println!("figure: 4x RAM: {} MiB touched in a {} MiB guest ({} MiB managed), {} pages, every byte verified", len >> 20, guest_ram >> 20, ram() >> 20, pages);
    println!("figure: 4x RAM: {} swap-outs, {} swap-ins, {} swap-cache hits, {} disk writes, {} disk reads", s.swap_outs, s.swap_ins, s.swap_cache_hits, sw.writes - sw0.writes, sw.reads - sw0.reads);
    println!("figure: 4x RAM: {} notifications for {} swap-outs (batches of up to {})", s.notifications, s.swap_outs, kernel::aspace::RELEASE_MAX);
    println!("figure: 4x RAM: write pass {} Mcycles, verify pass {} Mcycles (guest TSC)", (t1 - t0) / 1_000_000, (t2 - t1) / 1_000_000);
    println!("figure: 4x RAM: heap mapped {} KiB before, {} KiB after; slot-map frames {}", heap_before >> 10, heap::mapped() >> 10, sw.map_frames);
    assert!(s.swap_outs >= pages - ram() / 4096, "most pages went through swap");
    assert!(s.notifications * 8 < s.swap_outs, "eviction is batched: far fewer notifications than pages");
    assert!(heap::mapped() <= heap_before + (256 << 10), "the heap does not grow with swapped memory");
    drop(a);
    assert_eq!(SWAP.stats().slots_in_use, 0, "exit frees every slot");
}

fn munmap_a_million_pages() {
    const PAGES: u64 = 1_000_000;
    let a = AddressSpace::new().unwrap();
    // HMM listens, and a device mirrors part of the range: the notifier
    // path runs in full.
    let hmm = ProcessHmm::attach(&a);
    let mut acc = accels().unwrap()[1].lock();
    acc.bind(&hmm).unwrap();
    let r = a.mmap(None, PAGES * 4096, rw(), false).unwrap();
    // Resident and swapped pages spread over the whole range.
    let mut touched = 0;
    for p in (0..PAGES).step_by(997) {
        a.copy_to_user(r.start() + p * 4096, &p.to_le_bytes()).unwrap();
        touched += 1;
    }
    let mirrored = r.start() + (PAGES - 997) * 4096;
    assert_eq!(acc.read(mirrored, 8).unwrap().len(), 8, "the device mirrors a page of the range");
    let allocs = heap::allocations();
    let swapped = a.swap_out(VaRange::new(r.start(), r.start() + (PAGES / 2) * 4096).unwrap());
    assert_eq!(heap::allocations(), allocs, "swap-out allocates nothing (notifier, HMM, batches)");
    let free_before = frames::stats().free;
    let heap_used = heap::usage().0;
    let heap_mapped = heap::mapped();
    let slots = SWAP.stats().slots_in_use;
    let allocs = heap::allocations();
    let (cycles, res) = kernel::cycles::measure(|| a.munmap(r.start(), PAGES * 4096));
    res.unwrap();
    let munmap_allocs = heap::allocations() - allocs;
    acc.unbind();
    println!();
    println!("figure: munmap of {PAGES} pages in one call: {touched} touched ({swapped} swapped out), {} Mcycles, {munmap_allocs} heap allocations, heap used {} -> {} bytes", cycles / 1_000_000, heap_used, heap::usage().0);
    // What remains is per call, not per page: the VMA split, and HMM's
    // mirror update (its list of retired table nodes, the IOTLB plan).
    assert!(munmap_allocs <= 8, "munmap of {PAGES} pages made {munmap_allocs} heap allocations");
    assert!(a.vmas().is_empty());
    assert_eq!(SWAP.stats().slots_in_use, slots - swapped as u64, "the swapped pages' slots were freed");
    assert!(frames::stats().free >= free_before + (touched - swapped), "the resident pages' frames were freed");
    assert_eq!(heap::mapped(), heap_mapped, "munmap needed no heap");
    assert_eq!(heap::usage().0, heap_used, "munmap keeps no list on the heap");
}

fn device_jobs_during_heavy_swapping() {
    let a: Arc<AddressSpace> = AddressSpace::new().unwrap();
    let hmm = ProcessHmm::attach(&a);
    let mut acc = accels().unwrap()[0].lock();
    acc.bind(&hmm).unwrap();
    // A working set of 2x RAM, so everything keeps swapping.
    let len = 2 * ram();
    let pages = len / 4096;
    let r = a.mmap(None, len, rw(), false).unwrap();
    let mut buf = [0u8; 4096];
    for p in 0..pages {
        fill_page(&mut buf, 2, p);
        a.copy_to_user(r.start() + p * 4096, &buf).unwrap();
    }
    let before = a.stats();
    let mut checked = 0;
    let mut written = Vec::new();
    for (k, p) in (0..pages).step_by((pages / 12) as usize).enumerate() {
        let va = r.start() + p * 4096;
        // Make sure the page is out: the device read must swap it in.
        a.swap_out(VaRange::page_of(va).unwrap());
        assert!(a.walk(va).is_none());
        let got = acc.read(va, 256).unwrap_or_else(|e| panic!("device read of swapped-out page {p}: {e}"));
        fill_page(&mut buf, 2, p);
        assert_eq!(&got[..], &buf[..256], "the device read the page's data (page {p})");
        checked += 1;
        // A device write to a swapped-out page lands, and survives the next swap-out.
        if k % 2 == 0 {
            a.swap_out(VaRange::page_of(va).unwrap());
            let msg = alloc::format!("device wrote page {p}");
            acc.write(va + 100, msg.as_bytes()).unwrap_or_else(|e| panic!("device write to page {p}: {e}"));
            written.push((va, msg));
            a.swap_out(VaRange::page_of(va).unwrap());
        }
        // Heavy swapping in between: touch 8 MiB of other pages.
        for q in (0..pages).skip(p as usize % 7).step_by(3).take(2048) {
            let mut b = [0u8; 8];
            a.copy_from_user(r.start() + q * 4096, &mut b).unwrap();
        }
    }
    for (va, msg) in &written {
        let mut got = alloc::vec![0u8; msg.len()];
        a.copy_from_user(va + 100, &mut got).unwrap();
        assert_eq!(&got[..], msg.as_bytes(), "the device's write survived swap-out");
        let got = acc.read(*va + 100, msg.len() as u64).unwrap();
        assert_eq!(&got[..], msg.as_bytes());
    }
    let s = a.stats();
    println!();
    println!(
        "figure: device jobs while swapping: {checked} device reads of swapped-out pages, {} device writes survived swap-out; {} swap-ins, {} swap-outs meanwhile",
        written.len(),
        s.swap_ins - before.swap_ins,
        s.swap_outs - before.swap_outs
    );
    acc.unbind();
}
