//! The driver against a fake VT-d: commands complete at once, GCMD bits
//! show up in GSTS, like QEMU's model.
extern crate std;
use super::*;
use crate::mmio::fake::FakeRegs;
use hmm::pt::HeapMemory;
use std::vec::Vec;

const QEMU_CAP: u64 = 0x00d2_008c_222f_0606;
const QEMU_ECAP: u64 = 0xf0_0f4a;

fn fake() -> FakeRegs {
    let r = FakeRegs::new(0x1000);
    r.set32(VER, 0x10);
    r.set64(CAP, QEMU_CAP);
    r.set64(ECAP, QEMU_ECAP);
    *r.on_write.borrow_mut() = Some(std::boxed::Box::new(|mem: &mut Vec<u8>, off: usize, v: u64| {
        let put32 = |mem: &mut Vec<u8>, o: usize, x: u32| mem[o..o + 4].copy_from_slice(&x.to_le_bytes());
        match off {
            GCMD => put32(mem, GSTS, v as u32), // status follows the command
            CCMD => mem[CCMD + 7] &= 0x7f,      // ICC clears: done
            0xf8 => mem[0xf8 + 7] &= 0x7f,      // IVT clears: done
            _ => {}
        }
    }));
    r
}

fn iotlb_writes(r: &FakeRegs) -> Vec<(usize, u64)> {
    r.writes.borrow().iter().copied().filter(|(o, _)| *o == 0xf0 || *o == 0xf8).collect()
}

#[test]
fn enable_sets_root_and_translation() {
    let mem = HeapMemory::new();
    let mut iommu = Iommu::new(fake(), &mem).unwrap();
    iommu.enable().unwrap();
    assert!(iommu.enabled());
    assert_eq!(iommu.regs.read64(RTADDR), iommu.root.as_u64());
    assert_eq!(iommu.version(), (1, 0));
}

#[test]
fn attach_writes_the_context_entry_and_reattach_flushes() {
    let mem = HeapMemory::new();
    let mut iommu = Iommu::new(fake(), &mem).unwrap();
    iommu.enable().unwrap();
    let mut dom = iommu.new_domain(&mem).unwrap();
    let dev = Bdf::new(0, 1, 0);
    iommu.attach(dev, dom.id(), dom.root()).unwrap();
    let ctx = iommu.context[0].unwrap();
    let e = &iommu.entries(ctx)[2 * 8..2 * 8 + 2];
    assert_eq!(e[0].load(Ordering::Relaxed), dom.root().as_u64() | 1);
    assert_eq!(e[1].load(Ordering::Relaxed), 2 | (dom.id().0 as u64) << 8);
    let before = iommu.stats().context_invalidations;
    iommu.attach(dev, dom.id(), dom.root()).unwrap();
    assert_eq!(iommu.stats().context_invalidations, before + 1, "a changed present entry is invalidated");
    iommu.detach(dev).unwrap();
    assert_eq!(iommu.detach(dev), Err(IommuError::NotAttached(dev)));
    let t = dom.unmap(Iova::new(0), 1).unwrap();
    iommu.flush(&mut dom, t).unwrap();
}

#[test]
fn domain_ids_are_unique_and_reusable() {
    let mem = HeapMemory::new();
    let mut iommu = Iommu::new(fake(), &mem).unwrap();
    let a = iommu.alloc_domain_id().unwrap();
    let b = iommu.alloc_domain_id().unwrap();
    assert_ne!(a, b);
    assert_ne!(a.0, 0, "id 0 is reserved");
    iommu.free_domain_id(a);
    assert_eq!(iommu.alloc_domain_id().unwrap(), a);
}

#[test]
fn unmap_of_aligned_range_is_one_page_selective_command() {
    let mem = HeapMemory::new();
    let mut iommu = Iommu::new(fake(), &mem).unwrap();
    iommu.enable().unwrap();
    let mut dom = iommu.new_domain(&mem).unwrap();
    let base = 0x1_0000_0000u64;
    let mut t = IotlbFlush::new();
    for i in 0..16 {
        t.merge(dom.map(Iova::new(base + i * 4096), PhysAddr::new(0x20_0000 + i * 4096), Perm::ReadWrite).unwrap());
    }
    iommu.regs.writes.borrow_mut().clear();
    let report = iommu.flush(&mut dom, t).unwrap();
    assert_eq!(report, FlushReport::default(), "new mappings need no flush (CM = 0)");
    assert!(iotlb_writes(&iommu.regs).is_empty());

    let t = dom.unmap(Iova::new(base), 16).unwrap();
    let report = iommu.flush(&mut dom, t).unwrap();
    assert_eq!(report.page_commands, 1);
    let w = iotlb_writes(&iommu.regs);
    assert_eq!(w[0], (0xf0, base | 4), "IVA = address | AM 4 (16 pages)");
    assert_eq!(w[1].1 >> 60 & 3, 3, "page-selective granularity");
    assert_eq!((w[1].1 >> 32) as u16, dom.id().0);
    assert_eq!(dom.pages(), 0);
    assert_eq!(mem.live(), 2, "the IOMMU root table and the domain's root: emptied nodes were freed after the flush");
}

#[test]
fn protect_and_translate() {
    let mem = HeapMemory::new();
    let mut iommu = Iommu::new(fake(), &mem).unwrap();
    let mut dom = iommu.new_domain(&mem).unwrap();
    let t = dom.map(Iova::new(0x5000), PhysAddr::new(0x9000), Perm::ReadWrite).unwrap();
    iommu.flush(&mut dom, t).unwrap();
    let t = dom.protect(Iova::new(0x5000), 1, Perm::ReadOnly).unwrap();
    assert_eq!(t.ranges(), [(0x5000, 0x6000)]);
    iommu.flush(&mut dom, t).unwrap();
    let leaf = dom.translate(Iova::new(0x5123)).unwrap();
    assert_eq!((leaf.addr.as_u64(), leaf.write), (0x9000, false));
    assert_eq!(dom.map(Iova::new(0x5001), PhysAddr::new(0), Perm::ReadOnly).unwrap_err(), MapError::BadIova(0x5001));
    assert_eq!(dom.map(Iova::new(1 << 47), PhysAddr::new(0), Perm::ReadOnly).unwrap_err(), MapError::BadIova(1 << 47));
}

#[test]
fn faults_are_read_cleared_and_overflow_reported() {
    let mem = HeapMemory::new();
    let mut iommu = Iommu::new(fake(), &mem).unwrap();
    let (ours, other) = (Bdf::new(0, 1, 0), Bdf::new(0, 2, 0));
    assert_eq!(iommu.claim_fault(ours), FaultClaim::Clean);
    assert_eq!(iommu.claim_fault(other), FaultClaim::Clean);
    iommu.regs.set64(0x220, 0xdead_b000);
    iommu.regs.set64(0x228, 1 << 63 | 1 << 62 | 6 << 32 | 0x08);
    iommu.regs.set32(FSTS, FSTS_PPF | FSTS_PFO);
    assert!(iommu.fault_pending());
    // The other device's transfer ends first: the record is not its own,
    // but records were lost, so it cannot be called clean.
    assert_eq!(iommu.claim_fault(other), FaultClaim::Lost);
    {
        let w = iommu.regs.writes.borrow();
        assert!(w.contains(&(0x228, 1 << 63)), "F cleared by writing 1");
        assert!(w.contains(&(FSTS, FSTS_CLEAR as u64)));
    }
    iommu.regs.set32(FSTS, 0);
    iommu.regs.set64(0x228, 0);
    // The record was parked for its device, which claims it later.
    assert_eq!(iommu.claim_fault(ours), FaultClaim::Fault(FaultRecord { addr: 0xdead_b000, access: Access::Read, reason: 6, source: ours }));
    assert_eq!(iommu.claim_fault(ours), FaultClaim::Clean);
    assert_eq!(iommu.claim_fault(other), FaultClaim::Clean);
}
