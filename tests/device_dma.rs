//! The device path end to end: PCI finds both edus with BARs and MSI, the
//! edu self-tests pass, DMA moves bytes exactly through translated
//! mappings, and every wrong access comes back as a recorded IOMMU fault.
#![no_std]
#![no_main]

extern crate alloc;
use alloc::vec;
use alloc::vec::Vec;
use devices::edu::{DmaRequest, DmaRequestError, Direction};
use devices::vtd::{Access, Domain, Iova, Perm};
use kernel::mm::{direct, frames};
use kernel::platform::{self, DmaError, KernelTableMemory, Platform};
use kernel::{tests, BootInfo};
use test_kernels::Rng;

kernel::entry!(main);

fn main(_: &'static BootInfo) -> ! {
    kernel::testing::run(
        "device_dma",
        tests![
            both_edus_found_with_bars_and_msi,
            edu_identifies_computes_and_is_alive,
            invalid_requests_are_refused_and_qemu_keeps_running,
            dma_moves_bytes_exactly_through_translation,
            unmapped_iova_is_a_read_fault_at_that_page,
            write_to_read_only_mapping_faults_and_leaves_memory,
            remapped_page_is_used_only_after_invalidation,
            two_devices_two_domains_same_iova,
            kernel_memory_is_unreachable,
        ],
    );
}

fn platform() -> &'static Platform {
    platform::init().expect("device bring-up")
}

/// A domain for accel `i`, attached.
fn domain_for(i: usize) -> Domain<KernelTableMemory> {
    let p = platform();
    let bdf = p.accels[i].lock().bdf(); // device before IOMMU: the lock order
    let mut iommu = p.iommu.lock();
    let dom = iommu.new_domain(KernelTableMemory).unwrap();
    iommu.attach(bdf, dom.id(), dom.root()).unwrap();
    dom
}

fn map(dom: &mut Domain<KernelTableMemory>, iova: u64, frame: &frames::Frame, perm: Perm) {
    let t = dom.map(Iova::new(iova), frame.start_address(), perm).unwrap();
    platform().iommu.lock().flush(dom, t).unwrap();
}

fn dma(i: usize, dir: Direction, iova: u64, count: u16) -> Result<(), DmaError> {
    let p = platform();
    let req = DmaRequest::new(dir, Iova::new(iova), 0, count)?;
    p.accels[i].lock().dma(&p.iommu, &req)
}

fn fill(f: &frames::Frame, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let data: Vec<u8> = (0..4096).map(|_| rng.next_u64() as u8).collect();
    // SAFETY: the frame belongs to this test.
    unsafe { direct::write_frame(f.frame(), 0, &data) };
    data
}

fn contents(f: &frames::Frame) -> Vec<u8> {
    let mut b = vec![0u8; 4096];
    direct::read_frame(f.frame(), 0, &mut b);
    b
}

fn both_edus_found_with_bars_and_msi() {
    let p = platform();
    let edus: Vec<_> = p.pci.iter().filter(|d| d.vendor == 0x1234 && d.device == 0x11e8).collect();
    assert_eq!(edus.len(), 2, "two edu devices");
    assert_eq!(p.accels.len(), 2);
    for d in edus {
        let bar = d.bars[0].expect("BAR0");
        assert!(bar.base >= platform::PCI_WINDOW.0 && bar.base + bar.size <= platform::PCI_WINDOW.1, "BAR0 assigned in the window: {d}");
        assert_eq!(bar.size, 1 << 20);
        assert!(d.msi.is_some(), "MSI capability");
        let cmd = p.ecam.command(d.bdf);
        assert_eq!(cmd & 0b110, 0b110, "memory decoding and bus mastering on for {}", d.bdf);
    }
    assert_eq!(p.dmar.units[0].register_base, 0xfed9_0000);
    assert!(p.iommu.lock().enabled(), "translation on");
}

fn edu_identifies_computes_and_is_alive() {
    for a in &platform().accels {
        let a = a.lock();
        assert_eq!(a.edu().id(), devices::edu::ID);
        a.edu().check_alive(0xdead_beef).unwrap();
        assert_eq!(a.edu().factorial(10).unwrap(), 3_628_800);
        assert_eq!(a.edu().factorial(1).unwrap(), 1);
    }
}

fn invalid_requests_are_refused_and_qemu_keeps_running() {
    assert_eq!(DmaRequest::new(Direction::ToDevice, Iova::new(0x1000), 0, 0), Err(DmaRequestError::ZeroCount));
    assert_eq!(DmaRequest::new(Direction::ToDevice, Iova::new(0x1000), 0, 4096), Err(DmaRequestError::OutsideBuffer { offset: 0, count: 4096 }));
    assert_eq!(DmaRequest::new(Direction::ToRam, Iova::new(0x1000), 4000, 200), Err(DmaRequestError::OutsideBuffer { offset: 4000, count: 200 }));
    assert!(matches!(dma(0, Direction::ToDevice, 0x1000, 0), Err(DmaError::Request(DmaRequestError::ZeroCount))));
    // QEMU is still here, and the device still works:
    let mut dom = domain_for(0);
    let f = frames::alloc_zeroed().unwrap();
    map(&mut dom, 0x1000, &f, Perm::ReadWrite);
    dma(0, Direction::ToDevice, 0x1000, 4095).expect("a valid transfer after refused ones");
    teardown(dom, 0);
}

fn teardown(mut dom: Domain<KernelTableMemory>, i: usize) {
    let p = platform();
    let bdf = p.accels[i].lock().bdf();
    let mut iommu = p.iommu.lock();
    iommu.detach(bdf).unwrap();
    let t = dom.unmap(Iova::new(0), 1 << 35).unwrap();
    iommu.flush(&mut dom, t).unwrap();
    iommu.free_domain_id(dom.id());
}

fn dma_moves_bytes_exactly_through_translation() {
    let mut dom = domain_for(0);
    let iova_src = 0x7_0000_0000u64; // above 4 GiB, in the user range
    let iova_dst = 0x7_0000_1000u64;
    let src = frames::alloc().unwrap();
    let dst = frames::alloc().unwrap();
    map(&mut dom, iova_src, &src, Perm::ReadOnly);
    map(&mut dom, iova_dst, &dst, Perm::ReadWrite);
    for (n, &count) in [1u16, 7, 100, 2048, 4095].iter().enumerate() {
        let data = fill(&src, n as u64 + 1);
        let before = fill(&dst, 1000 + n as u64);
        dma(0, Direction::ToDevice, iova_src, count).unwrap();
        dma(0, Direction::ToRam, iova_dst, count).unwrap();
        let after = contents(&dst);
        assert_eq!(&after[..count as usize], &data[..count as usize], "{count} bytes arrived exactly");
        assert_eq!(&after[count as usize..], &before[count as usize..], "nothing past {count} bytes touched");
    }
    teardown(dom, 0);
}

fn unmapped_iova_is_a_read_fault_at_that_page() {
    let dom = domain_for(0);
    let iova = 0x5_1234_5000u64;
    let events = platform().fault_vector.count();
    match dma(0, Direction::ToDevice, iova + 0x10, 64) {
        Err(DmaError::Fault(r)) => {
            assert_eq!(r.addr, iova, "the fault names the page");
            assert_eq!(r.access, Access::Read);
            assert_eq!(r.source, platform().accels[0].lock().bdf());
            kernel::println!("({r})");
        }
        other => panic!("expected a read fault, got {other:?}"),
    }
    assert!(platform().fault_vector.count() > events, "the fault event MSI arrived");
    assert!(!platform().iommu.lock().fault_pending(), "the record was cleared");
    teardown(dom, 0);
}

fn write_to_read_only_mapping_faults_and_leaves_memory() {
    let mut dom = domain_for(0);
    let (src, ro) = (frames::alloc().unwrap(), frames::alloc().unwrap());
    map(&mut dom, 0x10_0000, &src, Perm::ReadOnly);
    map(&mut dom, 0x20_0000, &ro, Perm::ReadOnly);
    fill(&src, 5);
    let before = fill(&ro, 6);
    dma(0, Direction::ToDevice, 0x10_0000, 512).unwrap();
    match dma(0, Direction::ToRam, 0x20_0000, 512) {
        Err(DmaError::Fault(r)) => {
            assert_eq!((r.addr, r.access), (0x20_0000, Access::Write));
            assert_eq!(r.reason, 5);
        }
        other => panic!("expected a write fault, got {other:?}"),
    }
    assert_eq!(contents(&ro), before, "read-only memory untouched");
    teardown(dom, 0);
}

fn remapped_page_is_used_only_after_invalidation() {
    let mut dom = domain_for(0);
    let (a, b, out) = (frames::alloc().unwrap(), frames::alloc().unwrap(), frames::alloc().unwrap());
    let da = fill(&a, 11);
    let db = fill(&b, 12);
    map(&mut dom, 0x30_0000, &a, Perm::ReadOnly);
    map(&mut dom, 0x40_0000, &out, Perm::ReadWrite);
    let copy = || {
        dma(0, Direction::ToDevice, 0x30_0000, 256).unwrap();
        dma(0, Direction::ToRam, 0x40_0000, 256).unwrap();
        contents(&out)[..256].to_vec()
    };
    assert_eq!(copy(), &da[..256], "the device reads A (and caches the translation)");
    // Point the IOVA at B without telling the IOTLB.
    let stale = dom.map(Iova::new(0x30_0000), b.start_address(), Perm::ReadOnly).unwrap();
    assert_eq!(copy(), &da[..256], "before invalidation the IOMMU still uses A");
    platform().iommu.lock().flush(&mut dom, stale).unwrap();
    assert_eq!(copy(), &db[..256], "after invalidation it uses B");
    teardown(dom, 0);
}

fn two_devices_two_domains_same_iova() {
    let (mut d0, mut d1) = (domain_for(0), domain_for(1));
    assert_ne!(d0.id(), d1.id());
    let (a, b, out0, out1) = (frames::alloc().unwrap(), frames::alloc().unwrap(), frames::alloc().unwrap(), frames::alloc().unwrap());
    let (da, db) = (fill(&a, 21), fill(&b, 22));
    let iova = 0x1_0000_0000u64;
    map(&mut d0, iova, &a, Perm::ReadOnly);
    map(&mut d1, iova, &b, Perm::ReadOnly);
    map(&mut d0, iova + 0x1000, &out0, Perm::ReadWrite);
    map(&mut d1, iova + 0x1000, &out1, Perm::ReadWrite);
    for i in 0..2 {
        dma(i, Direction::ToDevice, iova, 300).unwrap();
        dma(i, Direction::ToRam, iova + 0x1000, 300).unwrap();
    }
    assert_eq!(&contents(&out0)[..300], &da[..300], "accel0 sees its domain's page");
    assert_eq!(&contents(&out1)[..300], &db[..300], "accel1 sees its own");
    teardown(d0, 0);
    teardown(d1, 1);
}

fn kernel_memory_is_unreachable() {
    // A device attached to a domain that maps nothing but one buffer tries
    // to read kernel memory by physical address (as if identity-mapped).
    let mut dom = domain_for(0);
    let buf = frames::alloc().unwrap();
    // The buffer's IOVA is far from any physical address of this machine.
    map(&mut dom, 0x6000_0000_0000, &buf, Perm::ReadWrite);
    let secret = frames::alloc().unwrap();
    fill(&secret, 99);
    let before = fill(&buf, 98);
    let phys = secret.start_address().as_u64();
    assert!(matches!(dma(0, Direction::ToDevice, phys, 64), Err(DmaError::Fault(r)) if r.access == Access::Read && r.addr == phys));
    // The kernel image's physical pages are unreachable too.
    let (img, _) = kernel::mm::kpt::kernel_image_phys();
    assert!(matches!(dma(0, Direction::ToDevice, img.as_u64(), 64), Err(DmaError::Fault(_))));
    // A detached device reaches nothing at all (no context entry).
    teardown(dom, 0);
    assert!(matches!(dma(0, Direction::ToRam, 0x6000_0000_0000, 64), Err(DmaError::Fault(_))));
    assert_eq!(contents(&buf), before, "nothing leaked in or out");
}
