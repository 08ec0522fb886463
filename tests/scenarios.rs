//! The HMM scenarios, end to end on the real (emulated) devices: an edu
//! accelerator works on process virtual addresses through VT-d, under every
//! CPU-side event. Each is its own test kernel (`tests/hmm_*.rs`).
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use hmm::{DeviceFaultKind, VaRange};
use kernel::aspace::{AddressSpace, Prot};
use kernel::hmmdev::{accels, JobError, ProcessHmm};

struct Proc {
    aspace: Arc<AddressSpace>,
    hmm: ProcessHmm,
}

fn process() -> Proc {
    let aspace = AddressSpace::new().unwrap();
    let hmm = ProcessHmm::attach(&aspace);
    Proc { aspace, hmm }
}

fn bind(i: usize, p: &Proc) {
    accels().unwrap()[i].lock().bind(&p.hmm).unwrap();
}

fn pattern(seed: u8, n: usize) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

fn cpu_read(p: &Proc, addr: u64, n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    p.aspace.copy_from_user(addr, &mut b).unwrap();
    b
}

fn rw() -> Prot {
    Prot::READ | Prot::WRITE
}

pub fn device_reads_cpu_written_data() {
    let p = process();
    bind(0, &p);
    let r = p.aspace.mmap(None, 3 * 4096, rw(), false).unwrap();
    let data = pattern(1, 3 * 4096 - 100);
    p.aspace.copy_to_user(r.start() + 50, &data).unwrap();
    let mut a = accels().unwrap()[0].lock();
    let before = a.stats;
    let got = a.read(r.start() + 50, data.len() as u64).unwrap();
    assert_eq!(got, data, "byte for byte");
    assert!(a.stats.faults_resolved > before.faults_resolved, "the first touch was a device fault");
    // Read again: mirrored now, no fault.
    let faults = a.stats.faults_resolved;
    assert_eq!(a.read(r.start() + 50, 100).unwrap(), &data[..100]);
    assert_eq!(a.stats.faults_resolved, faults, "no fault once mirrored");
    // The same through the device's queue: in order, one result each, a
    // failing job does not stop the next.
    use kernel::hmmdev::{Job, JobOutput};
    let j1 = a.submit(Job::Copy { dst: r.start() + 8192, src: r.start() + 50, len: 10 }).unwrap();
    let j2 = a.submit(Job::Read { src: 0x7000_0000_0000, len: 4 }).unwrap();
    let j3 = a.submit(Job::Read { src: r.start() + 8192, len: 10 }).unwrap();
    assert_eq!(a.queued(), 3);
    let done = a.run_queue();
    assert_eq!(done.iter().map(|(id, _, _)| *id).collect::<Vec<_>>(), [j1, j2, j3]);
    assert_eq!(done[0].2, Ok(JobOutput::Done));
    assert!(done[1].2.is_err(), "an unmapped address fails that job only");
    assert_eq!(done[2].2, Ok(JobOutput::Data(data[..10].to_vec())));
    assert_eq!(a.queued(), 0);
    a.unbind();
}

pub fn device_writes_cpu_reads_and_pages_are_dirty() {
    let p = process();
    bind(0, &p);
    let r = p.aspace.mmap(None, 2 * 4096, rw(), false).unwrap();
    let data = pattern(2, 6000);
    // Read first: the IOTLB then caches read-only translations, and QEMU
    // drops a write through them without a fault record — the job engine
    // must still notice and fault the pages in for write.
    assert_eq!(accels().unwrap()[0].lock().read(r.start(), 16).unwrap(), [0u8; 16]);
    accels().unwrap()[0].lock().write(r.start() + 10, &data).unwrap();
    assert!(accels().unwrap()[0].lock().stats.silent_faults > 0, "the silent drop was noticed");
    assert_eq!(cpu_read(&p, r.start() + 10, 6000), data);
    // Dirty: the CPU's dirty state knows both pages were written (the
    // device's dirty marks are reported when HMM drops write access).
    let bits = p.aspace.harvest(r);
    assert_eq!(bits.len(), 2);
    assert!(bits.iter().all(|b| b.dirty), "device-written pages are dirty: {bits:?}");
    accels().unwrap()[0].lock().unbind();
}

pub fn munmap_then_device_access_fails_cleanly() {
    let p = process();
    bind(0, &p);
    let r = p.aspace.mmap(None, 4 * 4096, rw(), false).unwrap();
    p.aspace.copy_to_user(r.start(), &[7u8; 4 * 4096]).unwrap();
    let mut a = accels().unwrap()[0].lock();
    assert_eq!(a.read(r.start() + 4096, 16).unwrap(), [7u8; 16]);
    p.aspace.munmap(r.start() + 4096, 4096).unwrap();
    let err = a.read(r.start() + 4096 + 8, 16).unwrap_err();
    assert_eq!(err, JobError::Fault { addr: r.start() + 4096, write: false, kind: DeviceFaultKind::Cpu(hmm::CpuFaultError::NoVma) });
    kernel::println!("({err})");
    assert_eq!(a.read(r.start(), 16).unwrap(), [7u8; 16], "the device and kernel keep working");
    a.unbind();
}

pub fn mprotect_read_only_blocks_device_writes_not_reads() {
    let p = process();
    bind(0, &p);
    let r = p.aspace.mmap(None, 4096, rw(), false).unwrap();
    let mut a = accels().unwrap()[0].lock();
    a.write(r.start(), b"before").unwrap();
    p.aspace.mprotect(r.start(), 4096, Prot::READ).unwrap();
    let err = a.write(r.start(), b"after!").unwrap_err();
    assert!(matches!(err, JobError::Fault { write: true, kind: DeviceFaultKind::Cpu(hmm::CpuFaultError::Protection), .. }), "{err}");
    assert_eq!(a.read(r.start(), 6).unwrap(), b"before", "reads still work; nothing was written");
    a.unbind();
}

pub fn fork_then_parent_write_device_sees_new_data() {
    let parent = process();
    bind(0, &parent);
    let r = parent.aspace.mmap(None, 4096, rw(), false).unwrap();
    parent.aspace.copy_to_user(r.start(), b"old data").unwrap();
    let mut a = accels().unwrap()[0].lock();
    assert_eq!(a.read(r.start(), 8).unwrap(), b"old data");
    let old_frame = parent.aspace.walk(r.start()).unwrap().frame;
    let child = parent.aspace.fork().unwrap();
    parent.aspace.copy_to_user(r.start(), b"NEW DATA").unwrap(); // COW break in the parent
    let new_frame = parent.aspace.walk(r.start()).unwrap().frame;
    assert_ne!(old_frame, new_frame);
    assert_eq!(a.read(r.start(), 8).unwrap(), b"NEW DATA", "the parent's mirror follows the COW break");
    let entry = a.binding().unwrap().mirror.get(r.start()).unwrap();
    assert_eq!(entry.addr, new_frame.start_address(), "never the stale frame");
    let mut b = [0u8; 8];
    child.copy_from_user(r.start(), &mut b).unwrap();
    assert_eq!(&b, b"old data", "the child keeps the old");
    a.unbind();
}

pub fn migration_device_never_sees_the_old_frame() {
    let p = process();
    bind(0, &p);
    let r = p.aspace.mmap(None, 4096, rw(), false).unwrap();
    let data = pattern(3, 4096);
    p.aspace.copy_to_user(r.start(), &data).unwrap();
    let mut a = accels().unwrap()[0].lock();
    assert_eq!(a.read(r.start(), 4096).unwrap(), data);
    let (old, new) = p.aspace.migrate(r.start()).unwrap();
    assert!(a.binding().unwrap().mirror.get(r.start()).is_none(), "the mirror entry went with the old frame");
    assert_eq!(a.read(r.start(), 4096).unwrap(), data, "same data after migration");
    assert_eq!(a.binding().unwrap().mirror.get(r.start()).unwrap().addr, new.start_address());
    assert_ne!(old, new);
    // A CPU write now must be what the device sees (it reads the new frame).
    p.aspace.copy_to_user(r.start(), b"fresh").unwrap();
    assert_eq!(a.read(r.start(), 5).unwrap(), b"fresh");
    // A device write, then migration: the dirtiness HMM reports during the
    // invalidation survives into the new entry.
    p.aspace.harvest(r); // clean
    a.write(r.start() + 8, b"dev").unwrap();
    p.aspace.migrate(r.start()).unwrap();
    assert!(p.aspace.walk(r.start()).unwrap().dirty, "the device's write left the migrated page dirty");
    assert_eq!(cpu_read(&p, r.start() + 8, 3), b"dev");
    a.unbind();
}

pub fn swapped_page_comes_back_on_a_device_fault() {
    let p = process();
    bind(0, &p);
    let r = p.aspace.mmap(None, 2 * 4096, rw(), false).unwrap();
    let data = pattern(4, 2 * 4096);
    p.aspace.copy_to_user(r.start(), &data).unwrap();
    let mut a = accels().unwrap()[0].lock();
    assert_eq!(a.read(r.start(), 100).unwrap(), &data[..100]);
    assert_eq!(p.aspace.swap_out(r), 2);
    assert!(a.binding().unwrap().mirror.get(r.start()).is_none(), "swap-out invalidated the device");
    let swap_ins = p.aspace.stats().swap_ins;
    assert_eq!(a.read(r.start(), 2 * 4096).unwrap(), data, "identical after the device fault swapped it in");
    assert!(p.aspace.stats().swap_ins > swap_ins, "the device fault swapped the pages in");
    a.unbind();
}

pub fn two_devices_different_permissions() {
    let p = process();
    bind(0, &p);
    bind(1, &p);
    let r = p.aspace.mmap(None, 4096, rw(), false).unwrap();
    let (mut a0, mut a1) = (accels().unwrap()[0].lock(), accels().unwrap()[1].lock());
    a0.write(r.start(), b"from accel0").unwrap();
    assert_eq!(a1.read(r.start(), 11).unwrap(), b"from accel0", "both mirror the same page");
    let e0 = a0.binding().unwrap().mirror.get(r.start()).unwrap();
    let e1 = a1.binding().unwrap().mirror.get(r.start()).unwrap();
    assert_eq!(e0.addr, e1.addr);
    assert!(e0.write && !e1.write, "accel0 holds write, accel1 read-only");
    a0.unbind();
    a1.unbind();
}

pub fn exclusive_access_revoked_by_cpu_write() {
    let p = process();
    bind(0, &p);
    bind(1, &p);
    let r = p.aspace.mmap(None, 4096, rw(), false).unwrap();
    let (mut a0, mut a1) = (accels().unwrap()[0].lock(), accels().unwrap()[1].lock());
    assert_eq!(a1.read(r.start(), 4).unwrap(), [0; 4]);
    let m0 = a0.binding().unwrap().mirror.clone();
    m0.take_exclusive(VaRange::page_of(r.start()).unwrap()).unwrap();
    assert!(m0.get(r.start()).unwrap().exclusive);
    assert!(p.aspace.walk(r.start()).is_none(), "the CPU lost access: its entry is non-present");
    assert_eq!(p.aspace.exclusive_owner(r.start()), Some(m0.device().0), "and names the device");
    assert!(a1.binding().unwrap().mirror.get(r.start()).is_none(), "the other device lost the page");
    a0.write(r.start(), b"atomic").unwrap();
    // The CPU writes: exclusivity is revoked first.
    p.aspace.copy_to_user(r.start() + 100, b"cpu").unwrap();
    assert!(m0.get(r.start()).is_none(), "the device's exclusive entry is gone");
    assert_eq!(cpu_read(&p, r.start(), 6), b"atomic");
    assert_eq!(a0.read(r.start() + 100, 3).unwrap(), b"cpu", "and the device faults back in, seeing the CPU's write");
    a0.unbind();
    a1.unbind();
}

pub fn exit_tears_mirrors_down() {
    let p = process();
    bind(0, &p);
    let r = p.aspace.mmap(None, 4096, rw(), false).unwrap();
    let mut a = accels().unwrap()[0].lock();
    a.write(r.start(), b"bye").unwrap();
    let mirror = a.binding().unwrap().mirror.clone();
    let Proc { aspace, hmm } = p;
    drop(aspace); // exit: RELEASE to every mirror
    assert!(!mirror.is_alive());
    assert_eq!(mirror.size().0, 1, "only the kernel's bounce page is left in the table");
    let err = a.read(r.start(), 3).unwrap_err();
    assert!(matches!(err, JobError::Fault { kind: DeviceFaultKind::Released, .. }), "{err}");
    drop(hmm);
    a.unbind();
}

pub fn no_reach_into_kernel_or_other_processes() {
    let (p, other) = (process(), process());
    bind(0, &p);
    let secret = other.aspace.mmap(Some(0x3000_0000), 4096, rw(), true).unwrap();
    other.aspace.copy_to_user(secret.start(), b"secret").unwrap();
    let mut a = accels().unwrap()[0].lock();
    let err = a.read(secret.start(), 6).unwrap_err();
    assert!(matches!(err, JobError::Fault { kind: DeviceFaultKind::Cpu(hmm::CpuFaultError::NoVma), .. }), "another process's memory: {err}");
    // Kernel memory by physical address (a frame of the kernel image) and
    // by kernel virtual address are equally out of reach.
    let (img, _) = kernel::mm::kpt::kernel_image_phys();
    assert!(a.read(img.as_u64(), 16).is_err());
    assert!(a.read(0xffff_8000_0000_0000, 16).is_err(), "not a device address at all: refused");
    a.unbind();
}
