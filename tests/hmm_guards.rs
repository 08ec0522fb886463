//! Guards that a plausible one-line mistake would break, each checked on
//! the real path (CPU page tables, edu DMA through VT-d):
//!
//! | guard | the mistake it catches |
//! |---|---|
//! | `user_access_stays_in_the_user_half` | dropping the user-half bound in copy_to/from_user (the kernel then reads and writes its own memory for a process) |
//! | `device_fill_across_a_page_lands_every_byte` | letting one transfer cross a page (the permission check covers one entry; QEMU drops writes through a cached read-only entry silently) |
//! | `munmap_gives_swap_slots_back` | leaking the swap slots of swapped-out or swap-cached pages on munmap |
//! | `prefault_stays_inside_the_mapping` | a prefault window that starts before the mapping |
//! | `munmap_flush_covers_every_page` | an off-by-one address mask in the page-selective IOTLB invalidation: a device write after munmap would land in the frame's next owner |
#![no_std]
#![no_main]

extern crate alloc;

use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use kernel::aspace::{swap::SWAP, AddressSpace, Prot};
use kernel::hmmdev::{accels, ProcessHmm};
use kernel::mm::{direct, frames};

kernel::entry!(main);

fn main(_: &'static kernel::BootInfo) -> ! {
    kernel::testing::run(
        "hmm_guards",
        kernel::tests![
            user_access_stays_in_the_user_half,
            device_fill_across_a_page_lands_every_byte,
            munmap_gives_swap_slots_back,
            prefault_stays_inside_the_mapping,
            munmap_flush_covers_every_page,
        ],
    );
}

const PAGE: u64 = 4096;

struct Proc {
    aspace: Arc<AddressSpace>,
    hmm: ProcessHmm,
}

fn process() -> Proc {
    let aspace = AddressSpace::new().unwrap();
    let hmm = ProcessHmm::attach(&aspace);
    Proc { aspace, hmm }
}

fn rw() -> Prot {
    Prot::READ | Prot::WRITE
}

fn pattern(seed: u8, n: usize) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed)).collect()
}

fn cpu_read(p: &Proc, addr: u64, n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    p.aspace.copy_from_user(addr, &mut b).unwrap();
    b
}

/// The frame a user page is mapped to, from the CPU walk (None if not present).
fn frame_of(p: &Proc, va: u64) -> Option<u64> {
    let levels = p.aspace.walk_levels(va);
    let (level, _, raw) = *levels.last()?;
    (level == 1 && raw & 1 == 1).then_some(raw & 0x000f_ffff_ffff_f000)
}

fn user_access_stays_in_the_user_half() {
    let p = process();
    let r = p.aspace.mmap(None, PAGE, rw(), false).unwrap();
    let canary = frames::alloc_zeroed().unwrap();
    let bytes = pattern(0x3c, 64);
    // SAFETY: the frame is ours.
    unsafe { direct::write_frame(canary.frame(), 0, &bytes) };
    let kva = kernel::mm::DIRECT_MAP_BASE + canary.start_address().as_u64();
    let mut buf = [0u8; 64];
    assert!(p.aspace.copy_from_user(kva, &mut buf).is_err(), "a process read of kernel memory is refused");
    assert!(buf.iter().all(|&b| b == 0), "and nothing was copied");
    assert!(p.aspace.copy_to_user(kva, &[0xee; 64]).is_err(), "a process write to kernel memory is refused");
    let mut now = [0u8; 64];
    direct::read_frame(canary.frame(), 0, &mut now);
    assert_eq!(&now[..], &bytes[..], "kernel memory untouched");
    // Ranges that leave the user half or wrap.
    assert!(p.aspace.copy_from_user((1 << 47) - 8, &mut buf[..16]).is_err(), "crossing 2^47");
    assert!(p.aspace.copy_to_user(u64::MAX - 4, &[1; 16]).is_err(), "wrapping");
    assert!(p.aspace.copy_to_user(r.start(), &[7; 16]).is_ok(), "the process's own page works");
}

fn device_fill_across_a_page_lands_every_byte() {
    let p = process();
    // Prefault off: each page is resolved on its own (a prefault window
    // could otherwise upgrade page 2 while resolving page 1 and hide the bug).
    p.hmm.mm.set_prefault(1);
    accels().unwrap()[0].lock().bind(&p.hmm).unwrap();
    let r = p.aspace.mmap(None, 2 * PAGE, rw(), false).unwrap();
    let before = pattern(0x10, 2 * PAGE as usize);
    p.aspace.copy_to_user(r.start(), &before).unwrap();
    let caspace = p.aspace.fork().unwrap();
    let child = Proc { hmm: ProcessHmm::attach(&caspace), aspace: caspace };
    // Both pages are copy-on-write now. The device reads page 2, so the
    // IOTLB holds a read-only translation there: QEMU drops a device write
    // through it without any fault record.
    let mut acc = accels().unwrap()[0].lock();
    assert_eq!(acc.read(r.start() + PAGE, 8).unwrap(), &before[PAGE as usize..PAGE as usize + 8]);
    // A fill from the middle of page 1 into page 2.
    let (at, len) = (r.start() + 3000, 4000u64);
    acc.fill(at, len, 0xab).unwrap();
    drop(acc);
    let now = cpu_read(&p, r.start(), 2 * PAGE as usize);
    for (i, &b) in now.iter().enumerate() {
        let a = r.start() + i as u64;
        let want = if (at..at + len).contains(&a) { 0xab } else { before[i] };
        assert_eq!(b, want, "byte {a:#x} after a device fill across the page boundary");
    }
    assert_eq!(cpu_read(&child, r.start(), 2 * PAGE as usize), before, "the child still sees the old bytes");
    accels().unwrap()[0].lock().unbind();
}

fn munmap_gives_swap_slots_back() {
    let base = SWAP.stats().slots_in_use;
    let p = process();
    let r = p.aspace.mmap(None, 8 * PAGE, rw(), false).unwrap();
    p.aspace.copy_to_user(r.start(), &pattern(1, 8 * PAGE as usize)).unwrap();
    assert_eq!(p.aspace.swap_out(r), 8);
    assert_eq!(SWAP.stats().slots_in_use, base + 8, "8 slots hold the pages");
    // Two pages come back in (their slots stay as swap cache), then all go.
    let _ = cpu_read(&p, r.start(), 2 * PAGE as usize);
    assert_eq!(SWAP.stats().slots_in_use, base + 8, "swap-cached pages keep their slots");
    p.aspace.munmap(r.start(), 8 * PAGE).unwrap();
    assert_eq!(SWAP.stats().slots_in_use, base, "munmap gave back every slot: swapped and swap-cached");
}

fn prefault_stays_inside_the_mapping() {
    let p = process();
    accels().unwrap()[0].lock().bind(&p.hmm).unwrap();
    p.hmm.mm.set_prefault(16);
    // Neighbours right below the mapping M, inside M's 16-page prefault
    // window (M starts 6 pages into it): N1 read-only with data, N2
    // read-write and never touched (no frames). A fault in M must change
    // neither: no frame for N2, nothing writable of N1.
    let window = 0x3000_0000u64;
    let n1 = hmm::VaRange::new(window, window + 3 * PAGE).unwrap();
    let n2 = hmm::VaRange::new(window + 3 * PAGE, window + 6 * PAGE).unwrap();
    let m = hmm::VaRange::new(window + 6 * PAGE, window + 16 * PAGE).unwrap();
    p.aspace.mmap(Some(n1.start()), 3 * PAGE, rw(), true).unwrap();
    p.aspace.copy_to_user(n1.start(), &pattern(0x44, 3 * PAGE as usize)).unwrap();
    p.aspace.mprotect(n1.start(), 3 * PAGE, Prot::READ).unwrap();
    p.aspace.mmap(Some(n2.start()), 3 * PAGE, rw() | Prot::EXEC, true).unwrap(); // another protection: a separate area
    p.aspace.mmap(Some(m.start()), 10 * PAGE, rw(), true).unwrap();
    let mut acc = accels().unwrap()[0].lock();
    acc.write(m.start(), b"device").expect("a device write to the mapping's first page works");
    let b = acc.binding().unwrap();
    for (va, leaf) in b.mirror.entries(n1) {
        assert!(!leaf.write, "page {va:#x} of the read-only neighbour is mirrored writable");
    }
    assert!(b.mirror.entries(n2).is_empty(), "the untouched neighbour is not mirrored");
    for va in n2.page_addrs() {
        assert_eq!(frame_of(&p, va), None, "the untouched neighbour's page {va:#x} got a frame from a fault in another mapping");
    }
    assert!(acc.write(n1.start() + 2 * PAGE, b"nope").is_err(), "the device cannot write the read-only neighbour");
    drop(acc);
    assert_eq!(cpu_read(&p, n1.start(), 3 * PAGE as usize), pattern(0x44, 3 * PAGE as usize), "the neighbour is unchanged");
    assert_eq!(cpu_read(&p, m.start(), 6), b"device");
    accels().unwrap()[0].lock().unbind();
}

fn munmap_flush_covers_every_page() {
    let p = process();
    let q = process();
    accels().unwrap()[0].lock().bind(&p.hmm).unwrap();
    // 2 pages at a 2-page-aligned address: one invalidation with mask 1.
    let r = p.aspace.mmap(Some(0x4000_0000), 2 * PAGE, rw(), true).unwrap();
    p.aspace.copy_to_user(r.start(), &pattern(5, 2 * PAGE as usize)).unwrap();
    let old: Vec<u64> = r.page_addrs().map(|va| frame_of(&p, va).unwrap()).collect();
    {
        // The device writes both pages: the IOTLB now caches both, writable.
        let mut acc = accels().unwrap()[0].lock();
        acc.write(r.start(), b"p0").unwrap();
        acc.write(r.start() + PAGE, b"p1").unwrap();
    }
    // The other process's page tables for its area exist before the munmap
    // (so the freed frames become its data pages, not its tables).
    let qr = q.aspace.mmap(Some(0x6000_0000), 256 * PAGE, rw(), true).unwrap();
    q.aspace.copy_to_user(qr.start(), &pattern(0x99, PAGE as usize)).unwrap();
    p.aspace.munmap(r.start(), 2 * PAGE).unwrap();
    // It takes frames until it owns both old frames (the allocator hands
    // out recently freed frames first).
    let mut reused = 0;
    for va in qr.page_addrs().skip(1) {
        q.aspace.copy_to_user(va, &pattern(0x99, PAGE as usize)).unwrap();
        if old.contains(&frame_of(&q, va).unwrap()) {
            reused += 1;
        }
        if reused == 2 {
            break;
        }
    }
    assert_eq!(reused, 2, "both old frames went to the other process (the test needs that)");
    // The device, still bound to P, writes the old addresses.
    let mut acc = accels().unwrap()[0].lock();
    assert!(acc.write(r.start(), &[0xee; 64]).is_err(), "a device write after munmap faults (page 1)");
    assert!(acc.write(r.start() + PAGE, &[0xee; 64]).is_err(), "a device write after munmap faults (page 2)");
    drop(acc);
    for va in qr.page_addrs() {
        let Some(f) = frame_of(&q, va) else { continue };
        if old.contains(&f) {
            assert_eq!(cpu_read(&q, va, PAGE as usize), pattern(0x99, PAGE as usize), "the new owner's bytes at {va:#x} are intact");
        }
    }
    accels().unwrap()[0].lock().unbind();
}
