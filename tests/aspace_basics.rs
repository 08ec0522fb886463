//! Address spaces: demand paging through real CPU accesses, munmap
//! splitting areas, mprotect reporting a bad write with address and access,
//! errors instead of crashes, and teardown that leaks no frame.
#![no_std]
#![no_main]

extern crate alloc;
use alloc::vec;
use kernel::aspace::{Access, AccessError, AccessFailure, AddressSpace, AspaceError, MmapError, Prot, RangeError};
use hmm::VaRange;
use kernel::mm::frames;
use kernel::{tests, BootInfo};

kernel::entry!(main);

fn main(_: &'static BootInfo) -> ! {
    kernel::testing::run(
        "aspace_basics",
        tests![demand_paging_zero_fills_on_first_touch, out_of_frames_is_an_error, munmap_splits_an_area, bulk_munmap_returns_every_frame, mprotect_read_only_reports_writes, bad_accesses_are_errors, mmap_placement_and_errors, teardown_leaks_nothing, several_address_spaces_are_independent],
    );
}

const MB: u64 = 1 << 20;

fn demand_paging_zero_fills_on_first_touch() {
    let a = AddressSpace::new().unwrap();
    let r = a.mmap(None, 64 * 4096, Prot::READ | Prot::WRITE, false).unwrap();
    assert_eq!(a.walk(r.start()), None, "nothing resident before the first touch");
    let free = frames::stats().free;
    let mut buf = [0xffu8; 100];
    a.copy_from_user(r.start() + 10, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0), "zero-filled");
    assert_eq!((a.stats().demand_zero, a.stats().zero_page_maps), (0, 1), "a read maps the shared zero page");
    assert_eq!(frames::stats().free, free - 3, "no data frame: only the page-table pages under it");
    assert!(frames::is_zero_frame(a.walk(r.start()).unwrap().frame) && !a.walk(r.start()).unwrap().writable, "read-only, the zero frame");
    a.copy_to_user(r.start() + 4090, b"hello world").unwrap(); // crosses into page 2
    assert_eq!(a.stats().demand_zero, 1, "page 2: a write to a never-touched page");
    assert_eq!(a.stats().cow_copies, 1, "page 1: the zero page is copied on the first write");
    assert!(!frames::is_zero_frame(a.walk(r.start()).unwrap().frame), "page 1 has a private frame now");
    let mut back = [0u8; 11];
    a.copy_from_user(r.start() + 4090, &mut back).unwrap();
    assert_eq!(&back, b"hello world");
    assert!(a.walk(r.start() + 4096).unwrap().dirty, "the CPU's write set the dirty bit");
}

fn munmap_splits_an_area() {
    let a = AddressSpace::new().unwrap();
    let r = a.mmap(Some(0x4000_0000), 16 * 4096, Prot::READ | Prot::WRITE, true).unwrap();
    a.copy_to_user(r.start(), &vec![1u8; 16 * 4096]).unwrap();
    let free = frames::stats().free;
    a.munmap(r.start() + 4 * 4096, 4 * 4096).unwrap();
    let v = a.vmas();
    assert_eq!(v.len(), 2, "one area became two");
    assert_eq!((v[0].range.start(), v[0].range.end()), (r.start(), r.start() + 4 * 4096));
    assert_eq!((v[1].range.start(), v[1].range.end()), (r.start() + 8 * 4096, r.end()));
    assert_eq!(frames::stats().free, free + 4, "the four frames came back");
    let err = a.copy_from_user(r.start() + 5 * 4096, &mut [0u8; 1]).unwrap_err();
    assert_eq!(err, AccessError { addr: r.start() + 5 * 4096, access: Access::Read, reason: AccessFailure::NoVma });
    let mut b = [0u8; 1];
    a.copy_from_user(r.start() + 8 * 4096, &mut b).unwrap();
    assert_eq!(b[0], 1, "the rest kept its data");
    assert_eq!(a.munmap(r.start() + 1, 4096), Err(RangeError::BadRange(hmm::BadRange { start: r.start() + 1, end: r.start() + 4097 })));
}

fn mprotect_read_only_reports_writes() {
    let a = AddressSpace::new().unwrap();
    let r = a.mmap(None, 8 * 4096, Prot::READ | Prot::WRITE, false).unwrap();
    a.copy_to_user(r.start(), &[7u8; 8 * 4096]).unwrap();
    a.mprotect(r.start() + 2 * 4096, 2 * 4096, Prot::READ).unwrap();
    assert_eq!(a.vmas().len(), 3, "split into rw | r | rw");
    let target = r.start() + 2 * 4096 + 5;
    let err = a.copy_to_user(target, &[1]).unwrap_err();
    assert_eq!(err, AccessError { addr: target, access: Access::Write, reason: AccessFailure::Protection });
    let mut b = [0u8; 1];
    a.copy_from_user(target, &mut b).unwrap();
    assert_eq!(b[0], 7, "reads still work, data unchanged");
    a.mprotect(r.start() + 2 * 4096, 2 * 4096, Prot::READ | Prot::WRITE).unwrap();
    assert_eq!(a.vmas().len(), 1, "merged back");
    a.copy_to_user(target, &[1]).unwrap();
    assert_eq!(a.mprotect(r.end(), 4096, Prot::READ), Err(RangeError::NotMapped));
}

fn bad_accesses_are_errors() {
    let a = AddressSpace::new().unwrap();
    let err = a.copy_from_user(0x1234_5000, &mut [0u8; 4]).unwrap_err();
    assert_eq!(err.reason, AccessFailure::NoVma);
    let err = a.copy_to_user(0x7fff_ffff_fff0, &[0u8; 32]).unwrap_err();
    assert_eq!(err.reason, AccessFailure::NoVma, "running off the user half is an error, not a crash");
    let r = a.mmap(None, 4096, Prot::READ, false).unwrap();
    assert_eq!(a.handle_fault(r.start(), Access::Exec).unwrap_err().reason, AccessFailure::Protection);
}

fn mmap_placement_and_errors() {
    let a = AddressSpace::new().unwrap();
    assert_eq!(a.mmap(None, 0, Prot::READ, false), Err(MmapError::ZeroLength));
    let r1 = a.mmap(Some(0x5000_0000), 4096, Prot::READ, true).unwrap();
    assert_eq!(r1.start(), 0x5000_0000);
    assert_eq!(a.mmap(Some(0x5000_0000), 4096, Prot::READ, true), Err(MmapError::Overlap));
    let r2 = a.mmap(Some(0x5000_0000), 4096, Prot::READ, false).unwrap();
    assert_ne!(r2.start(), 0x5000_0000, "a taken hint is moved");
    let r3 = a.mmap(None, 10 * MB + 1, Prot::READ, false).unwrap();
    assert_eq!(r3.pages(), 10 * 256 + 1, "length rounded up to pages");
    assert!(matches!(a.mmap(Some(0x1001), 4096, Prot::READ, true), Err(MmapError::BadRange(_))));
    let _: AspaceError = MmapError::Overlap.into();
}

fn teardown_leaks_nothing() {
    let before = frames::stats();
    {
        let a = AddressSpace::new().unwrap();
        let b = AddressSpace::new().unwrap();
        for (i, s) in [&a, &b].into_iter().enumerate() {
            let r = s.mmap(None, 300 * 4096, Prot::READ | Prot::WRITE, false).unwrap();
            s.copy_to_user(r.start(), &vec![i as u8; 300 * 4096]).unwrap();
            let far = s.mmap(Some(0x7000_0000_0000), 4096, Prot::READ | Prot::WRITE, true).unwrap();
            s.copy_to_user(far.start(), &[1]).unwrap();
        }
        let child = a.fork().unwrap();
        child.copy_to_user(0x1000_0000, &[9; 4096]).unwrap();
        a.swap_out(hmm::VaRange::pages_from(0x1000_0000, 100).unwrap());
        assert!(frames::stats().free < before.free);
    }
    assert_eq!(frames::stats(), before, "every frame and page-table page came back");
    assert_eq!(kernel::aspace::swap::SWAP.stats().slots_in_use, 0, "and every swap slot");
}

fn several_address_spaces_are_independent() {
    let a = AddressSpace::new().unwrap();
    let b = AddressSpace::new().unwrap();
    let ra = a.mmap(Some(0x6000_0000), 4096, Prot::READ | Prot::WRITE, true).unwrap();
    let rb = b.mmap(Some(0x6000_0000), 4096, Prot::READ | Prot::WRITE, true).unwrap();
    a.copy_to_user(ra.start(), b"AAAA").unwrap();
    b.copy_to_user(rb.start(), b"BBBB").unwrap();
    let (mut x, mut y) = ([0u8; 4], [0u8; 4]);
    a.copy_from_user(ra.start(), &mut x).unwrap();
    b.copy_from_user(rb.start(), &mut y).unwrap();
    assert_eq!((&x, &y), (b"AAAA", b"BBBB"));
    assert_ne!(a.walk(ra.start()).unwrap().frame, b.walk(rb.start()).unwrap().frame);
}

/// A bulk munmap (more than `RELEASE_MAX` pages: dying entries, reaped
/// after the flush, frames freed in batches) over two leaf nodes and two
/// areas, with device-exclusive, swapped and swap-cached pages in it,
/// gives back every frame and swap slot and no more — the pages on both
/// sides of the range stay, with their data, and so do their areas.
fn bulk_munmap_returns_every_frame() {
    let swap = &kernel::aspace::swap::SWAP;
    swap.init();
    let slots = swap.stats().slots_in_use;
    let a = AddressSpace::new().unwrap();
    let pages = 3 * kernel::aspace::RELEASE_MAX as u64;
    // 2 MiB-aligned base: pages [500, 500 + pages) cross into a second leaf node.
    let r = a.mmap(Some(0x6000_0000), (pages + 1000) * 4096, Prot::READ | Prot::WRITE, true).unwrap();
    for i in 0..pages + 1000 {
        a.copy_to_user(r.start() + i * 4096, &[(i % 251) as u8]).unwrap();
    }
    let page = |i: u64, n: u64| VaRange::pages_from(r.start() + i * 4096, n).unwrap();
    a.mprotect(r.start() + 500 * 4096, 5 * 4096, Prot::READ).unwrap(); // a second area
    a.make_exclusive(page(507, 3), 1).unwrap();
    assert_eq!(a.swap_out(page(520, 4)), 4);
    a.copy_from_user(r.start() + 520 * 4096, &mut [0u8; 1]).unwrap(); // back in, slot kept as swap cache
    a.copy_from_user(r.start() + 521 * 4096, &mut [0u8; 1]).unwrap();
    let (free, map_frames) = (frames::stats().free, swap.stats().map_frames);
    a.munmap(r.start() + 500 * 4096, pages * 4096).unwrap();
    // The swap store keeps its slot counts in frames: one may go with the slots.
    let map_freed = (map_frames - swap.stats().map_frames) as usize;
    assert_eq!(frames::stats().free, free + pages as usize - 2 + map_freed, "every frame of the range came back (exclusive ones too; 2 pages were on swap), and only those");
    assert_eq!(swap.stats().slots_in_use, slots, "every swap slot came back (swapped entries and swap-cache copies)");
    let v = a.vmas();
    assert_eq!(v.iter().map(|v| (v.range.start(), v.range.end())).collect::<alloc::vec::Vec<_>>(), [(r.start(), r.start() + 500 * 4096), (r.start() + (500 + pages) * 4096, r.end())], "both areas were cut");
    for i in [0, 499, 500 + pages, pages + 999] {
        let mut b = [0u8; 1];
        a.copy_from_user(r.start() + i * 4096, &mut b).unwrap();
        assert_eq!(b[0], (i % 251) as u8, "page {i} beside the range kept its data");
    }
    for i in [500, 507, 511, 512, 520, 523, 500 + pages - 1] {
        assert!(a.walk(r.start() + i * 4096).is_none() && a.copy_from_user(r.start() + i * 4096, &mut [0u8; 1]).is_err(), "page {i} is gone");
    }
}

fn out_of_frames_is_an_error() {
    kernel::aspace::swap::SWAP.init(); // the swap disk is up before frames run out
    let a = AddressSpace::new().unwrap();
    let r = a.mmap(None, 8 * 4096, Prot::READ | Prot::WRITE, false).unwrap();
    a.copy_to_user(r.start(), &[1]).unwrap(); // page 0 resident, page tables exist
    let empty = AddressSpace::new().unwrap();
    let er = empty.mmap(None, 4096, Prot::READ | Prot::WRITE, false).unwrap();
    let mut hoard = alloc::vec::Vec::new();
    while let Ok(f) = frames::alloc() {
        hoard.push(f);
    }
    // Frames ran out: the fault reclaims by the clock policy (page 0 is the
    // victim, swapped out) and goes on.
    a.copy_to_user(r.start() + 4096, &[2]).unwrap();
    assert!(a.walk(r.start()).is_none(), "page 0 was reclaimed");
    assert_eq!(a.stats().swap_outs, 1);
    // The clock is global: another process's fault takes a's page 1, but
    // its page tables need more frames than that: a clean error, not a crash.
    let err = empty.copy_to_user(er.start(), &[2]).unwrap_err();
    assert_eq!(err, AccessError { addr: er.start(), access: Access::Write, reason: AccessFailure::OutOfMemory });
    assert!(a.walk(r.start() + 4096).is_none(), "the global clock took a's page for another process");
    assert!(matches!(a.fork(), Err(kernel::aspace::ForkError::NoMemory)));
    // Fork failing half-way (frames for the child's PML4 but not its
    // tables) must give back every reference it took.
    // With nothing to reclaim, user memory leaves the kernel its last
    // frames: give back enough for a fault.
    for _ in 0..kernel::aspace::USER_FLOOR {
        drop(hoard.pop());
    }
    a.copy_to_user(r.start() + 4096, &[2]).unwrap(); // swapped back in
    let second = a.walk(r.start() + 4096).unwrap().frame;
    while frames::stats().free > 2 {
        hoard.push(frames::alloc().unwrap());
    }
    let free = frames::stats().free;
    assert!(matches!(a.fork(), Err(kernel::aspace::ForkError::NoMemory)));
    assert_eq!(frames::stats().free, free, "a failed fork leaks nothing");
    assert_eq!(frames::refcount(second), 1, "and leaves no extra reference");
    drop(hoard);
    let mut b = [0u8; 2];
    a.copy_from_user(r.start() + 4095, &mut b).unwrap();
    assert_eq!(b, [0, 2]);
    a.copy_from_user(r.start(), &mut b[..1]).unwrap();
    assert_eq!(b[0], 1, "the reclaimed page comes back: nothing lost");
}
