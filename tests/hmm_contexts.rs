//! Many processes per accelerator, on the real device path: each context
//! its own mirror and VT-d domain, read-only or read-write bindings, the
//! device's context entry switched between jobs, fair queueing, snapshots,
//! and one fault round for a job over present pages.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use hmm::{CpuPageState, DeviceFaultKind, MirrorAccess, VaRange};
use kernel::aspace::{AddressSpace, Prot};
use kernel::hmmdev::{accels, Job, JobError, JobOutput, ProcessHmm, UserSpan};

kernel::entry!(main);

fn main(_: &'static kernel::BootInfo) -> ! {
    kernel::testing::run(
        "hmm_contexts",
        kernel::tests![
            parent_and_child_each_see_their_own_memory,
            a_context_switch_never_uses_the_other_contexts_translations,
            removing_one_context_leaves_the_others_working,
            the_queue_is_fair_between_contexts,
            a_job_over_present_pages_faults_once,
            snapshots_fault_nothing,
        ],
    );
}

const PAGE: u64 = 4096;
const BASE: u64 = 0x2000_0000;

struct Proc {
    aspace: Arc<AddressSpace>,
    hmm: ProcessHmm,
}

fn process() -> Proc {
    let aspace = AddressSpace::new().unwrap();
    let hmm = ProcessHmm::attach(&aspace);
    Proc { aspace, hmm }
}

fn fork(p: &Proc) -> Proc {
    let aspace = p.aspace.fork().unwrap();
    let hmm = ProcessHmm::attach(&aspace);
    Proc { aspace, hmm }
}

fn rw() -> Prot {
    Prot::READ | Prot::WRITE
}

fn cpu_read(p: &Proc, addr: u64, n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    p.aspace.copy_from_user(addr, &mut b).unwrap();
    b
}

fn parent_and_child_each_see_their_own_memory() {
    let parent = process();
    parent.aspace.mmap(Some(BASE), 4 * PAGE, rw(), true).unwrap();
    parent.aspace.copy_to_user(BASE, &[0x41; 4 * PAGE as usize]).unwrap();
    let child = fork(&parent);
    child.aspace.copy_to_user(BASE, &[0x42; PAGE as usize]).unwrap(); // page 0 is the child's own now
    let mut acc = accels().unwrap()[0].lock();
    let pc = acc.add_context(&parent.hmm, MirrorAccess::ReadWrite).unwrap();
    let cc = acc.add_context(&child.hmm, MirrorAccess::ReadOnly).unwrap();
    let child_domain = acc.binding().unwrap().domain;
    acc.select(pc).unwrap();
    assert_ne!(acc.binding().unwrap().domain, child_domain, "each context has its own domain");

    acc.select(cc).unwrap();
    assert_eq!(acc.read(BASE, 4).unwrap(), [0x42; 4], "the child's context reads the child's page");
    assert_eq!(acc.read(BASE + PAGE, 4).unwrap(), [0x41; 4], "and the page it still shares");
    let e = acc.write(BASE + PAGE, b"child").unwrap_err();
    assert!(matches!(e, JobError::Fault { kind: DeviceFaultKind::ReadOnly, .. }), "a read-only context cannot write: {e}");
    assert!(acc.exclusive(BASE, PAGE).is_err(), "nor take exclusive access");
    let ro = acc.binding().unwrap();
    assert!(ro.mirror.entries(VaRange::new(BASE, BASE + 4 * PAGE).unwrap()).iter().all(|(_, l)| !l.write), "no entry of a read-only context is writable");

    acc.select(pc).unwrap();
    assert_eq!(acc.read(BASE, 4).unwrap(), [0x41; 4], "the parent's context reads the parent's page");
    acc.write(BASE + PAGE, b"parent").unwrap();
    drop(acc);
    assert_eq!(cpu_read(&parent, BASE + PAGE, 6), b"parent");
    assert_eq!(cpu_read(&child, BASE + PAGE, 6), [0x41; 6], "the child's copy-on-write page is untouched");
    assert_eq!(cpu_read(&child, BASE, 4), [0x42; 4]);
    accels().unwrap()[0].lock().unbind();
}

/// Two processes map the same address to different frames. The device's
/// requester id is the same for both contexts, and QEMU keys IOTLB entries
/// by requester id and page: without the flush on a switch the second
/// context would read through the first one's cached translation.
fn a_context_switch_never_uses_the_other_contexts_translations() {
    let a = process();
    let b = process();
    for (p, byte) in [(&a, 0xaau8), (&b, 0xbb)] {
        p.aspace.mmap(Some(BASE), 2 * PAGE, rw(), true).unwrap();
        p.aspace.copy_to_user(BASE, &[byte; 2 * PAGE as usize]).unwrap();
    }
    let mut acc = accels().unwrap()[1].lock();
    let ca = acc.add_context(&a.hmm, MirrorAccess::ReadWrite).unwrap();
    let cb = acc.add_context(&b.hmm, MirrorAccess::ReadWrite).unwrap();
    let switches = acc.stats.context_switches;
    for round in 0..4 {
        acc.select(ca).unwrap();
        assert_eq!(acc.read(BASE, 8).unwrap(), [0xaa; 8], "round {round}: context A reads A's page");
        acc.write(BASE + PAGE, &[round as u8; 8]).unwrap();
        acc.select(cb).unwrap();
        assert_eq!(acc.read(BASE, 8).unwrap(), [0xbb; 8], "round {round}: context B reads B's page, not A's cached one");
        assert_eq!(acc.read(BASE + PAGE, 8).unwrap(), [0xbb; 8], "round {round}: A's device write did not reach B");
    }
    assert_eq!(acc.stats.context_switches - switches, 8, "one switch per change of context, none in between");
    drop(acc);
    assert_eq!(cpu_read(&a, BASE + PAGE, 8), [3; 8]);
    assert_eq!(cpu_read(&b, BASE + PAGE, 8), [0xbb; 8]);
    accels().unwrap()[1].lock().unbind();
}

fn removing_one_context_leaves_the_others_working() {
    let ps: Vec<Proc> = (0..3).map(|_| process()).collect();
    let mut acc = accels().unwrap()[0].lock();
    let mut ids = Vec::new();
    for (k, p) in ps.iter().enumerate() {
        p.aspace.mmap(Some(BASE), PAGE, rw(), true).unwrap();
        p.aspace.copy_to_user(BASE, &[k as u8 + 1; 16]).unwrap();
        ids.push(acc.add_context(&p.hmm, MirrorAccess::ReadWrite).unwrap());
    }
    assert!(acc.add_context(&ps[0].hmm, MirrorAccess::ReadOnly).is_err(), "one context per process per accelerator");
    acc.select(ids[1]).unwrap();
    acc.read(BASE, 1).unwrap(); // context 1 is the attached one
    acc.remove_context(ids[1]).unwrap();
    assert_eq!(acc.contexts().len(), 2);
    for (k, id) in [(0usize, ids[0]), (2, ids[2])] {
        acc.select(id).unwrap();
        assert_eq!(acc.read(BASE, 16).unwrap(), [k as u8 + 1; 16], "context of process {k} still works");
    }
    assert!(acc.select(ids[1]).is_err(), "the removed context is gone");
    assert_eq!(acc.driver().late_detaches.load(core::sync::atomic::Ordering::Relaxed), 0, "removal detached before the mirror was released");
    acc.unbind();
}

fn the_queue_is_fair_between_contexts() {
    let a = process();
    let b = process();
    for p in [&a, &b] {
        p.aspace.mmap(Some(BASE), PAGE, rw(), true).unwrap();
    }
    let mut acc = accels().unwrap()[0].lock();
    let ca = acc.add_context(&a.hmm, MirrorAccess::ReadWrite).unwrap();
    let cb = acc.add_context(&b.hmm, MirrorAccess::ReadWrite).unwrap();
    acc.select(ca).unwrap();
    for k in 0..4u8 {
        acc.submit(Job::Write { dst: BASE + k as u64, data: vec![0xa0 + k] }).unwrap();
    }
    acc.select(cb).unwrap();
    for k in 0..2u8 {
        acc.submit(Job::Write { dst: BASE + k as u64, data: vec![0xb0 + k] }).unwrap();
    }
    let done = acc.run_queue();
    let order: Vec<_> = done.iter().map(|(_, c, _)| *c).collect();
    assert_eq!(order, [ca, cb, ca, cb, ca, ca], "contexts take turns");
    assert!(done.iter().all(|(_, _, r)| *r == Ok(JobOutput::Done)));
    drop(acc);
    assert_eq!(cpu_read(&a, BASE, 4), [0xa0, 0xa1, 0xa2, 0xa3]);
    assert_eq!(cpu_read(&b, BASE, 2), [0xb0, 0xb1]);
    accels().unwrap()[0].lock().unbind();
}

fn a_job_over_present_pages_faults_once() {
    let p = process();
    let pages = 1024;
    p.aspace.mmap(Some(BASE), pages * PAGE, rw(), true).unwrap();
    for k in 0..pages {
        p.aspace.copy_to_user(BASE + k * PAGE, &k.to_le_bytes()).unwrap();
    }
    let mut acc = accels().unwrap()[0].lock();
    acc.bind(&p.hmm).unwrap();
    let before = acc.stats;
    let mut seen = Vec::new();
    let mut at = 0u64;
    acc.read_with(UserSpan::new(BASE, pages * PAGE).unwrap(), |bytes| {
        if at.is_multiple_of(PAGE) {
            seen.push(u64::from_le_bytes(bytes[..8].try_into().unwrap()));
        }
        at += bytes.len() as u64;
    })
    .unwrap();
    assert_eq!(seen, (0..pages).collect::<Vec<_>>(), "every page's own bytes");
    assert_eq!(acc.stats.fault_rounds() - before.fault_rounds(), 1, "a device read of {pages} present pages costs one fault round");
    acc.unbind();
}

fn snapshots_fault_nothing() {
    let p = process();
    // 0: hole | 1..3 mapped rw: 1 present, 2 absent | 3 swapped | 4 read-only present | 5 exclusive
    p.aspace.mmap(Some(BASE + PAGE), 3 * PAGE, rw(), true).unwrap();
    p.aspace.mmap(Some(BASE + 4 * PAGE), 2 * PAGE, rw() | Prot::EXEC, true).unwrap();
    p.aspace.copy_to_user(BASE + PAGE, b"x").unwrap();
    p.aspace.copy_to_user(BASE + 3 * PAGE, b"x").unwrap();
    p.aspace.copy_to_user(BASE + 4 * PAGE, b"x").unwrap();
    p.aspace.copy_to_user(BASE + 5 * PAGE, b"x").unwrap();
    p.aspace.swap_out(VaRange::page_of(BASE + 3 * PAGE).unwrap());
    p.aspace.mprotect(BASE + 4 * PAGE, PAGE, Prot::READ).unwrap();
    let mut acc = accels().unwrap()[0].lock();
    acc.bind(&p.hmm).unwrap();
    acc.exclusive(BASE + 5 * PAGE, PAGE).unwrap();
    let frames_before = kernel::mm::frames::stats().free;
    let stats_before = p.aspace.stats();
    let mut got = Vec::new();
    let r = VaRange::new(BASE, BASE + 6 * PAGE).unwrap();
    acc.binding().unwrap().mirror.snapshot(r, &mut |v| got.push(v)).unwrap();
    let kinds: Vec<_> = got.iter().map(|v| match v.cpu {
        CpuPageState::Hole => "hole",
        CpuPageState::Absent => "absent",
        CpuPageState::Present(c) if c.writable => "write",
        CpuPageState::Present(_) => "read",
        CpuPageState::Swapped => "swapped",
        CpuPageState::Exclusive(_) => "exclusive",
        CpuPageState::NoAccess => "none",
        CpuPageState::Zero(_) => "zero",
    }).collect();
    assert_eq!(kinds, ["hole", "write", "absent", "swapped", "read", "exclusive"]);
    assert!(got[5].mirrored.is_some_and(|l| l.exclusive), "the device's own exclusive entry");
    let line: alloc::string::String = got.iter().map(|v| v.symbol()).collect();
    assert_eq!(line, "-w.srX");
    assert_eq!(kernel::mm::frames::stats().free, frames_before, "a snapshot allocates nothing");
    assert_eq!(p.aspace.stats(), stats_before, "nor faults, swaps in or breaks anything");
    acc.unbind();
}
