//! The swap disk: virtio-blk over PCI, its DMA translated by VT-d in a
//! kernel domain of its own.
//!
//! * a page written to the disk reads back identical (both directions are
//!   real device DMA through the domain);
//! * when the domain lacks the buffer's page, the disk's DMA faults in VT-d
//!   (a fault record with the disk's requester id), the transfer fails with
//!   an error, and after the reset the disk works again;
//! * the capacity is the launcher's disk size.
#![no_std]
#![no_main]

use kernel::mm::direct;
use kernel::mm::frames;
use kernel::platform::disk::{self, DiskError};

kernel::entry!(main);

fn main(_: &'static kernel::BootInfo) -> ! {
    kernel::testing::run("swap_disk", kernel::tests![a_page_round_trips_through_the_disk, many_pages_in_flight_land_in_their_places, the_disks_dma_faults_without_a_mapping, capacity_is_the_disk_size]);
}

fn fill(f: x86_64::structures::paging::PhysFrame, seed: u8) {
    let mut buf = [0u8; 4096];
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31).wrapping_add(seed);
    }
    // SAFETY: the frame is the test's own.
    unsafe { direct::write_frame(f, 0, &buf) };
}

fn a_page_round_trips_through_the_disk() {
    let d = disk::disk().expect("swap disk");
    let mut d = d.lock();
    let src = frames::alloc_zeroed().unwrap();
    let dst = frames::alloc_zeroed().unwrap();
    fill(src.frame(), 7);
    let before = d.stats();
    d.write_page(3, src.frame()).expect("write");
    d.read_page(3, dst.frame()).expect("read");
    let (mut a, mut b) = ([0u8; 4096], [0u8; 4096]);
    direct::read_frame(src.frame(), 0, &mut a);
    direct::read_frame(dst.frame(), 0, &mut b);
    assert!(a == b, "the page read back differs from the page written");
    assert_eq!(d.stats().writes, before.writes + 1);
    assert_eq!(d.stats().reads, before.reads + 1);
    // A page never written reads as zeros (the sparse image).
    d.read_page(1000, dst.frame()).expect("read");
    direct::read_frame(dst.frame(), 0, &mut b);
    assert!(b.iter().all(|&x| x == 0));
}

fn many_pages_in_flight_land_in_their_places() {
    let d = disk::disk().expect("swap disk");
    let mut d = d.lock();
    let srcs: alloc::vec::Vec<_> = (0..12u8).map(|i| {
        let f = frames::alloc_zeroed().unwrap();
        fill(f.frame(), 40 + i);
        f
    }).collect();
    // Scattered disk pages, several requests in flight per group.
    let items: alloc::vec::Vec<_> = srcs.iter().enumerate().map(|(i, f)| (2000 + 37 * i as u64, f.frame())).collect();
    let before = d.stats().writes;
    d.write_pages(&items).expect("batched write");
    assert_eq!(d.stats().writes, before + 12);
    let dst = frames::alloc_zeroed().unwrap();
    for (page, f) in &items {
        d.read_page(*page, dst.frame()).expect("read");
        let (mut a, mut b) = ([0u8; 4096], [0u8; 4096]);
        direct::read_frame(*f, 0, &mut a);
        direct::read_frame(dst.frame(), 0, &mut b);
        assert!(a == b, "disk page {page} holds another page's data");
    }
}

fn the_disks_dma_faults_without_a_mapping() {
    let p = kernel::platform::init().expect("platform");
    let d = disk::disk().expect("swap disk");
    let mut d = d.lock();
    let bdf = d.bdf();
    let f = frames::alloc_zeroed().unwrap();
    fill(f.frame(), 9);
    let _ = p.iommu.lock().discard_faults(bdf);
    d.omit_next_buffer_mapping();
    let r = d.write_page(5, f.frame());
    kernel::println!("  disk DMA without a mapping: {r:?}");
    let Err(DiskError::DmaFault(rec)) = r else { panic!("a transfer whose buffer the domain lacks must fail with a DMA fault, got {r:?}") };
    assert_eq!(rec.source, bdf, "the fault is the disk's");
    assert_eq!(rec.addr, d.bounce_frame().start_address().as_u64(), "the fault names the unmapped page");
    // The same transfer with the mapping works.
    let g = frames::alloc_zeroed().unwrap();
    d.write_page(5, f.frame()).expect("write after reset");
    d.read_page(5, g.frame()).expect("read after reset");
    let (mut a, mut b) = ([0u8; 4096], [0u8; 4096]);
    direct::read_frame(f.frame(), 0, &mut a);
    direct::read_frame(g.frame(), 0, &mut b);
    assert!(a == b);
}

fn capacity_is_the_disk_size() {
    let mut d = disk::disk().expect("swap disk").lock();
    let pages = d.pages();
    kernel::println!("  swap disk: {} pages ({} MiB)", d.pages(), d.pages() / 256);
    assert_eq!(d.pages(), 4096 * 256, "the launcher's default disk is 4 GiB");
    assert_eq!(d.read_page(pages, frames::alloc().unwrap().frame()), Err(DiskError::OutOfRange(pages)));
}

extern crate alloc;
