//! PROT_NONE and the shared zero page, on the real device path.
//!
//! * `mprotect(PROT_NONE)`: every device loses the pages (NO_ACCESS
//!   invalidation), device jobs and the kernel's user accesses are refused
//!   with a clean error, the data stays, and `mprotect` back restores both.
//! * Reads of never-written memory map one shared zero frame read-only, on
//!   the CPU and in the device's mirror; the first write (CPU or device)
//!   gets a private frame; nothing ever writes the zero frame.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use hmm::{CpuPageState, VaRange};
use kernel::aspace::{AccessFailure, AddressSpace, Prot};
use kernel::hmmdev::{accels, JobError, ProcessHmm, UserSpan};
use kernel::mm::{direct, frames};

kernel::entry!(main);

fn main(_: &'static kernel::BootInfo) -> ! {
    kernel::testing::run(
        "hmm_noaccess_zero",
        kernel::tests![prot_none_refuses_everyone_and_keeps_the_data, prot_none_neighbours_are_not_prefaulted, reads_of_fresh_memory_share_the_zero_frame, the_zero_frame_is_never_written],
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

fn zero_frame() -> x86_64::structures::paging::PhysFrame {
    frames::zero_frame().unwrap().frame()
}

fn prot_none_refuses_everyone_and_keeps_the_data() {
    let p = process();
    let r = p.aspace.mmap(Some(0x3000_0000), 4 * PAGE, rw(), true).unwrap();
    let data: Vec<u8> = (0..4 * PAGE as usize).map(|i| i as u8 ^ 0x5a).collect();
    p.aspace.copy_to_user(r.start(), &data).unwrap();
    let mut acc = accels().unwrap()[0].lock();
    acc.bind(&p.hmm).unwrap();
    assert_eq!(acc.read(r.start(), 16).unwrap(), &data[..16]);
    assert!(!acc.binding().unwrap().mirror.entries(r).is_empty());

    p.aspace.mprotect(r.start(), 4 * PAGE, Prot::empty()).unwrap();
    assert!(acc.binding().unwrap().mirror.entries(r).is_empty(), "NO_ACCESS cleared every device entry");
    let Err(e) = acc.read(r.start(), 16) else { panic!("a device read of a PROT_NONE page succeeded") };
    assert!(matches!(e, JobError::Fault { kind: hmm::DeviceFaultKind::Cpu(hmm::CpuFaultError::Protection), .. }), "a device read is refused: {e}");
    assert!(acc.write(r.start() + PAGE, b"no").is_err(), "and a device write");
    let mut buf = [0u8; 16];
    let ce = p.aspace.copy_from_user(r.start() + 8, &mut buf).unwrap_err();
    assert_eq!(ce.reason, AccessFailure::Protection, "the kernel reading for the process is refused too");
    assert!(p.aspace.copy_to_user(r.start(), b"no").is_err());
    let mut states = Vec::new();
    acc.binding().unwrap().mirror.snapshot(r, &mut |v| states.push(v.cpu)).unwrap();
    assert!(states.iter().all(|s| *s == CpuPageState::NoAccess), "a snapshot says no access: {states:?}");

    p.aspace.mprotect(r.start(), 4 * PAGE, rw()).unwrap();
    let mut back = vec![0u8; 4 * PAGE as usize];
    p.aspace.copy_from_user(r.start(), &mut back).unwrap();
    assert!(back == data, "the data survived PROT_NONE");
    assert_eq!(acc.read(r.start() + 3 * PAGE, 16).unwrap(), &data[3 * PAGE as usize..3 * PAGE as usize + 16], "the device reads again");
    acc.write(r.start(), b"yes").unwrap();
    drop(acc);
    let mut b = [0u8; 3];
    p.aspace.copy_from_user(r.start(), &mut b).unwrap();
    assert_eq!(&b, b"yes");
    accels().unwrap()[0].lock().unbind();
}

/// A device fault must not mirror a PROT_NONE page along with its
/// neighbours: the fault round mirrors the rest of the job's range from the
/// CPU's entries, and a PROT_NONE page is present there (for its frame)
/// but not accessible.
fn prot_none_neighbours_are_not_prefaulted() {
    let p = process();
    p.hmm.mm.set_prefault(16);
    let r = p.aspace.mmap(Some(0x3100_0000), 16 * PAGE, rw(), true).unwrap();
    for va in r.page_addrs() {
        p.aspace.copy_to_user(va, &[1]).unwrap();
    }
    p.aspace.mprotect(r.start() + 5 * PAGE, PAGE, Prot::empty()).unwrap();
    let mut acc = accels().unwrap()[0].lock();
    acc.bind(&p.hmm).unwrap();
    let Err(e) = acc.read(r.start(), 16 * PAGE) else { panic!("a read across a PROT_NONE page succeeded") };
    assert!(matches!(e, JobError::Fault { addr, .. } if addr == r.start() + 5 * PAGE), "the job stops at the PROT_NONE page: {e}");
    let m = &acc.binding().unwrap().mirror;
    assert!(m.get(r.start() + 4 * PAGE).is_some() && m.get(r.start() + 6 * PAGE).is_some(), "the job's accessible pages were mirrored in its fault round");
    assert!(m.get(r.start() + 5 * PAGE).is_none(), "the PROT_NONE page was not");
    acc.unbind();
}

fn reads_of_fresh_memory_share_the_zero_frame() {
    let p = process();
    let pages = 64;
    let r = p.aspace.mmap(Some(0x3200_0000), pages * PAGE, rw(), true).unwrap();
    let mut acc = accels().unwrap()[1].lock();
    acc.bind(&p.hmm).unwrap();
    let before = p.aspace.stats();
    let mut all_zero = true;
    acc.read_with(UserSpan::new(r.start(), pages * PAGE).unwrap(), |b| all_zero &= b.iter().all(|&x| x == 0)).unwrap();
    assert!(all_zero, "fresh memory reads as zeros");
    let after = p.aspace.stats();
    assert_eq!(after.demand_zero, before.demand_zero, "no frame allocated for reads");
    assert!(after.zero_page_maps > before.zero_page_maps);
    let zero = zero_frame();
    let entries = acc.binding().unwrap().mirror.entries(r);
    assert!(!entries.is_empty() && entries.iter().all(|(_, l)| l.addr == zero.start_address() && !l.write), "the device maps the zero frame, read-only");
    let mut states = Vec::new();
    acc.binding().unwrap().mirror.snapshot(VaRange::new(r.start(), r.start() + 4 * PAGE).unwrap(), &mut |v| states.push(v.symbol())).unwrap();
    assert_eq!(states, ['0'; 4].map(|c| c.to_ascii_uppercase()), "a snapshot shows zero pages, mirrored");

    // The first write, by the device: a private frame, the rest untouched.
    acc.write(r.start() + 7 * PAGE, b"dev").unwrap();
    let l = acc.binding().unwrap().mirror.get(r.start() + 7 * PAGE).unwrap();
    assert!(l.addr != zero.start_address() && l.write, "the written page got its own frame");
    assert!(acc.binding().unwrap().mirror.get(r.start() + 8 * PAGE).is_none_or(|l| l.addr == zero.start_address()));
    drop(acc);
    // ... and by the CPU.
    p.aspace.copy_to_user(r.start() + 9 * PAGE, b"cpu").unwrap();
    assert_ne!(p.aspace.walk(r.start() + 9 * PAGE).unwrap().frame, zero);
    let mut b = [0u8; 3];
    p.aspace.copy_from_user(r.start() + 7 * PAGE, &mut b).unwrap();
    assert_eq!(&b, b"dev");
    assert_eq!(p.aspace.walk(r.start() + 8 * PAGE).unwrap().frame, zero, "other pages still share it");
    accels().unwrap()[1].lock().unbind();
}

fn the_zero_frame_is_never_written() {
    let mut now = vec![0u8; PAGE as usize];
    direct::read_frame(zero_frame(), 0, &mut now);
    assert!(now.iter().all(|&b| b == 0), "the zero frame still holds zeros");
    assert!(frames::refcount(zero_frame()) >= 1, "and is never freed (the kernel keeps a reference)");
}
