//! The semantics of Linux's `tools/testing/selftests/mm/hmm-tests.c`,
//! written anew for hmmos: a process hands an accelerator its own
//! pointers (through the `test_hmm`-like device interface) and checks what
//! the device saw and did, and what happened to the mirror when the CPU
//! side changed. One TAP line per case; the exit status is the number of
//! failed cases (100 if fewer than 30 passed).
//!
//! Left out, as `# SKIP` lines, with the reason: the cases that need
//! device-private memory (migrate*), shared or file mappings, hugetlbfs and
//! transparent huge pages, the device-file mmap (mixedmap) and GUP.
#![no_std]
#![no_main]

use abi::{DEV_READ, DEV_WRITE, MAP_FIXED, PROT_READ, PROT_WRITE, SNAP_DIRTY, SNAP_READ, SNAP_WRITE};
use user::{println, Buf, Device, Errno};

mod exclusive;
mod two_devices;

use exclusive::*;
use two_devices::*;

user::entry!(main);

pub(crate) const PAGE: u64 = 4096;
pub(crate) type R = Result<(), &'static str>;

pub(crate) fn ensure(c: bool, why: &'static str) -> R {
    if c {
        Ok(())
    } else {
        Err(why)
    }
}

pub(crate) fn dev(i: u64) -> Result<Device, &'static str> {
    Device::open(i, DEV_READ | DEV_WRITE).map_err(|_| "dev_open failed")
}

pub(crate) fn rw(len: u64) -> Result<Buf, &'static str> {
    Buf::rw(len).map_err(|_| "mmap failed")
}

pub(crate) fn pattern(b: &mut Buf, seed: u64) {
    for (i, x) in b.bytes_mut().iter_mut().enumerate() {
        *x = (i as u64).wrapping_mul(31).wrapping_add(seed) as u8;
    }
}

pub(crate) fn has_pattern(b: &[u8], seed: u64) -> bool {
    b.iter().enumerate().all(|(i, &x)| x == (i as u64).wrapping_mul(31).wrapping_add(seed) as u8)
}

fn ok<T>(r: Result<T, Errno>, why: &'static str) -> Result<T, &'static str> {
    r.map_err(|_| why)
}

fn is_err<T>(r: Result<T, Errno>, e: Errno) -> bool {
    matches!(r, Err(x) if x == e)
}

// ---- one device ---------------------------------------------------------------

fn open_close() -> R {
    let d = dev(0)?;
    let fd = d.fd();
    drop(d);
    ensure(user::check(user::sys(user::Sys::DevClose, fd, 0, 0, 0, 0, 0)) == Err(Errno::EBADF), "closed twice")
}

fn open_errors() -> R {
    ensure(is_err(Device::open(1000, DEV_READ), Errno::ENODEV), "no such device")?;
    ensure(is_err(Device::open(0, 0), Errno::EINVAL), "no permissions")?;
    ensure(is_err(Device::open(0, 0x10), Errno::EINVAL), "unknown permissions")
}

fn anon_read() -> R {
    let d = dev(0)?;
    let mut b = rw(16 * PAGE)?;
    pattern(&mut b, 1);
    let mut out = rw(16 * PAGE)?;
    ok(d.read(b.addr, out.bytes_mut()), "device read")?;
    ensure(out.bytes() == b.bytes(), "device read what the CPU wrote")
}

fn anon_read_unaligned() -> R {
    let d = dev(0)?;
    let mut b = rw(4 * PAGE)?;
    pattern(&mut b, 2);
    let mut out = [0u8; 5000];
    ok(d.read(b.addr + 3000, &mut out), "device read")?;
    ensure(out[..] == b.bytes()[3000..8000], "bytes across a page boundary")
}

fn anon_read_zero() -> R {
    let d = dev(0)?;
    let b = rw(8 * PAGE)?; // never touched by the CPU
    let mut out = [0xffu8; 4096];
    ok(d.read(b.addr + 2 * PAGE, &mut out), "device read")?;
    ensure(out.iter().all(|&x| x == 0), "untouched anonymous memory reads as zeros")
}

fn anon_read_unmapped() -> R {
    let d = dev(0)?;
    let b = rw(2 * PAGE)?;
    let addr = b.addr;
    drop(b);
    let mut out = [0u8; 64];
    ensure(is_err(d.read(addr, &mut out), Errno::EFAULT), "EFAULT for an unmapped range")
}

fn anon_read_multiple() -> R {
    let d = dev(0)?;
    let mut b = rw(4 * PAGE)?;
    let mut out = rw(4 * PAGE)?;
    for round in 0..4 {
        pattern(&mut b, 10 + round);
        ok(d.read(b.addr, out.bytes_mut()), "device read")?;
        ensure(has_pattern(out.bytes(), 10 + round), "each round sees the CPU's latest bytes")?;
    }
    Ok(())
}

fn anon_write() -> R {
    let d = dev(0)?;
    let b = rw(16 * PAGE)?;
    let mut src = rw(16 * PAGE)?;
    pattern(&mut src, 3);
    ok(d.write(b.addr, src.bytes()), "device write")?;
    ensure(b.bytes() == src.bytes(), "the CPU sees the device's bytes")
}

fn anon_write_unaligned() -> R {
    let d = dev(0)?;
    let b = rw(4 * PAGE)?;
    let data = [0x5au8; 6000];
    ok(d.write(b.addr + 100, &data), "device write")?;
    let s = b.bytes();
    ensure(s[..100].iter().all(|&x| x == 0) && s[100..6100].iter().all(|&x| x == 0x5a) && s[6100..].iter().all(|&x| x == 0), "exactly the bytes written")
}

fn anon_write_prot() -> R {
    let d = dev(0)?;
    let b = Buf::new(2 * PAGE, PROT_READ).map_err(|_| "mmap")?;
    let mut out = [0u8; 16];
    ok(d.read(b.addr, &mut out), "the device may read a read-only mapping")?;
    ensure(is_err(d.write(b.addr, &[1, 2, 3]), Errno::EPERM), "EPERM writing a read-only mapping")?;
    ensure(b.bytes().iter().all(|&x| x == 0), "nothing was written")?;
    ok(user::mprotect(b.addr, 2 * PAGE, PROT_READ | PROT_WRITE), "mprotect")?;
    ok(d.write(b.addr, &[1, 2, 3]), "after mprotect the write succeeds")?;
    ensure(b.bytes()[..3] == [1, 2, 3], "and lands")
}

fn anon_write_child() -> R {
    let mut b = rw(4 * PAGE)?;
    pattern(&mut b, 4);
    match user::fork() {
        Ok(0) => {
            // The child writes its copy through its own context.
            let ok = (|| -> R {
                let d = dev(0)?;
                ok(d.fill(b.addr, 4 * PAGE, 0xcc), "child fill")?;
                ensure(b.bytes().iter().all(|&x| x == 0xcc), "child sees its device's bytes")
            })();
            user::exit(if ok.is_ok() { 0 } else { 1 })
        }
        Ok(child) => {
            let r = ok(user::wait(child as i64), "wait")?;
            ensure(r.1 == 0, "the child's device write worked")?;
            ensure(has_pattern(b.bytes(), 4), "the parent's copy is untouched (COW)")?;
            let d = dev(0)?;
            let mut out = rw(4 * PAGE)?;
            ok(d.read(b.addr, out.bytes_mut()), "parent device read")?;
            ensure(has_pattern(out.bytes(), 4), "and the parent's device sees the parent's bytes")
        }
        Err(_) => Err("fork"),
    }
}

fn anon_write_large() -> R {
    // 2 MiB aligned, 1 MiB long: Linux's THP case without huge pages.
    let d = dev(0)?;
    let at = 0x6000_0000u64;
    ok(user::mmap(at, 1 << 20, PROT_READ | PROT_WRITE, MAP_FIXED), "fixed mmap")?;
    ok(d.fill(at, 1 << 20, 0x77), "device fill")?;
    // SAFETY: mapped just above.
    let s = unsafe { core::slice::from_raw_parts(at as *const u8, 1 << 20) };
    let good = s.iter().all(|&x| x == 0x77);
    ok(user::munmap(at, 1 << 20), "munmap")?;
    ensure(good, "every byte of the large range")
}

fn anon_teardown() -> R {
    // A thread unmaps the buffer while the device reads it: the read either
    // completes or fails with EFAULT — never anything else, never a crash.
    extern "C" fn unmapper(a: u64) -> ! {
        user::sleep_ms(1);
        let _ = user::munmap(a, 16 * PAGE);
        user::thread_exit()
    }
    let d = dev(0)?;
    let mut b = rw(16 * PAGE)?;
    pattern(&mut b, 5);
    let stack = rw(16 * PAGE)?;
    ok(user::thread(unmapper, stack.addr + 16 * PAGE, b.addr), "thread")?;
    let mut out = rw(16 * PAGE)?;
    let r = d.read(b.addr, out.bytes_mut());
    user::sleep_ms(5);
    core::mem::forget(b); // already unmapped by the thread
    match r {
        Ok(_) => ensure(has_pattern(out.bytes(), 5), "a completed read has the right bytes"),
        Err(Errno::EFAULT) => Ok(()),
        Err(_) => Err("unexpected error"),
    }
}

/// A one-page mapping of its own at a fixed address (no neighbour to
/// merge with, so the device's prefault window stays inside it).
pub(crate) fn lone_page(slot: u64, prot: u64) -> Result<u64, &'static str> {
    let at = 0x5000_0000 + slot * 0x10_0000;
    let _ = user::munmap(at, PAGE);
    user::mmap(at, PAGE, prot, MAP_FIXED).map_err(|_| "fixed mmap")
}

fn anon_snapshot() -> R {
    let d = dev(0)?;
    let none = lone_page(0, PROT_READ | PROT_WRITE)?;
    let read = lone_page(1, PROT_READ | PROT_WRITE)?;
    let written = lone_page(2, PROT_READ | PROT_WRITE)?;
    let ro = lone_page(3, PROT_READ)?;
    // SAFETY: our own mapping.
    unsafe { core::ptr::write_volatile(read as *mut u8, 1) };
    let mut x = [0u8; 1];
    ok(d.read(read, &mut x), "device read")?;
    ok(d.write(written, &[9]), "device write")?;
    ok(d.read(ro, &mut x), "device read of the read-only page")?;
    let mut snap = [0xffu8; 1];
    let mut at = |addr| -> Result<u8, &'static str> {
        ok(d.snapshot(addr, &mut snap), "snapshot")?;
        Ok(snap[0])
    };
    let (s_none, s_read, s_written, s_ro) = (at(none)?, at(read)?, at(written)?, at(ro)?);
    for a in [none, read, written, ro] {
        let _ = user::munmap(a, PAGE);
    }
    ensure(s_none == 0, "an untouched page is not mirrored")?;
    ensure(s_read & SNAP_READ != 0, "a page the device read is mirrored")?;
    ensure(s_written & (SNAP_WRITE | SNAP_DIRTY) == SNAP_WRITE | SNAP_DIRTY, "a page the device wrote is writable and dirty")?;
    ensure(s_ro & SNAP_READ != 0 && s_ro & SNAP_WRITE == 0, "a read-only page is mirrored read-only")
}

fn snapshot_after_munmap() -> R {
    let d = dev(0)?;
    let b = rw(2 * PAGE)?;
    ok(d.fill(b.addr, 2 * PAGE, 1), "fill")?;
    let addr = b.addr;
    drop(b);
    let mut snap = [0xffu8; 2];
    // The range is unmapped now; the mirror must be empty there.
    ok(d.snapshot(addr, &mut snap), "snapshot")?;
    ensure(snap == [0, 0], "munmap invalidated the device's entries")
}

fn munmap_invalidates() -> R {
    let d = dev(0)?;
    let b = rw(PAGE)?;
    let mut x = [0u8; 8];
    ok(d.read(b.addr, &mut x), "read")?;
    let addr = b.addr;
    drop(b);
    ensure(is_err(d.read(addr, &mut x), Errno::EFAULT), "the device cannot reach an unmapped page")
}

fn mprotect_invalidates() -> R {
    let d = dev(0)?;
    let b = rw(PAGE)?;
    ok(d.write(b.addr, &[7]), "write")?;
    ok(user::mprotect(b.addr, PAGE, PROT_READ), "mprotect")?;
    ensure(is_err(d.write(b.addr, &[8]), Errno::EPERM), "write refused after mprotect")?;
    let mut snap = [0u8; 1];
    ok(d.snapshot(b.addr, &mut snap), "snapshot")?;
    ensure(snap[0] & SNAP_WRITE == 0 && b.bytes()[0] == 7, "the mirror lost write permission")
}

fn device_copy() -> R {
    let d = dev(0)?;
    let mut a = rw(3 * PAGE)?;
    let b = rw(3 * PAGE)?;
    pattern(&mut a, 6);
    ok(d.copy(b.addr + 10, a.addr + 20, 3 * PAGE - 30), "copy")?;
    ensure(b.bytes()[10..3 * PAGE as usize - 20] == a.bytes()[20..3 * PAGE as usize - 10], "copied bytes")
}

fn device_copy_unmapped() -> R {
    let d = dev(0)?;
    let b = rw(PAGE)?;
    ensure(is_err(d.copy(b.addr, 0x7000_0000_0000, 64), Errno::EFAULT), "EFAULT from an unmapped source")
}

fn device_fill() -> R {
    let d = dev(0)?;
    let b = rw(5 * PAGE)?;
    ok(d.fill(b.addr + 1, 5 * PAGE - 2, 0xab), "fill")?;
    let s = b.bytes();
    ensure(s[0] == 0 && s[s.len() - 1] == 0 && s[1..s.len() - 1].iter().all(|&x| x == 0xab), "filled exactly")
}

fn fill_readonly() -> R {
    let d = dev(0)?;
    let b = Buf::new(PAGE, PROT_READ).map_err(|_| "mmap")?;
    ensure(is_err(d.fill(b.addr, PAGE, 1), Errno::EPERM), "EPERM")
}

fn cpu_write_after_device_write() -> R {
    let d = dev(0)?;
    let mut b = rw(2 * PAGE)?;
    ok(d.fill(b.addr, 2 * PAGE, 0x11), "fill")?;
    b.bytes_mut()[4100] = 0x22;
    let mut out = [0u8; 8];
    ok(d.read(b.addr + 4096, &mut out), "read")?;
    ensure(out == [0x11, 0x11, 0x11, 0x11, 0x22, 0x11, 0x11, 0x11], "the device sees the CPU's later write")
}

fn device_faults_counted() -> R {
    let d = dev(0)?;
    let b = rw(8 * PAGE)?;
    let before = ok(d.stats(), "stats")?;
    let mut x = [0u8; 1];
    for p in 0..8 {
        ok(d.read(b.addr + p * PAGE, &mut x), "read")?;
    }
    let after = ok(d.stats(), "stats")?;
    ensure(after.faults_resolved > before.faults_resolved && after.pages_populated >= before.pages_populated + 8 && after.jobs >= before.jobs + 8, "device faults resolved and pages populated")
}

fn read_only_context() -> R {
    let d = Device::open(0, DEV_READ).map_err(|_| "open")?;
    let b = rw(PAGE)?;
    let mut x = [0u8; 4];
    ok(d.read(b.addr, &mut x), "a read-only context reads")?;
    ensure(is_err(d.write(b.addr, &[1]), Errno::EPERM) && is_err(d.fill(b.addr, 4, 1), Errno::EPERM) && is_err(d.exclusive(b.addr, PAGE), Errno::EPERM), "but may not write")
}

fn bad_arguments() -> R {
    let d = dev(0)?;
    let b = rw(PAGE)?;
    let mut x = [0u8; 4];
    ensure(is_err(d.job(abi::DevOp::Read, b.addr, x.as_mut_ptr() as u64, 0, 0), Errno::EINVAL), "length 0")?;
    ensure(is_err(d.job(abi::DevOp::Read, b.addr, x.as_mut_ptr() as u64, 1 << 40, 0), Errno::EINVAL), "too long")?;
    ensure(is_err(d.fill(u64::MAX - 10, 100, 0), Errno::EINVAL), "wrapping range")?;
    ensure(is_err(d.fill(0xffff_8000_0000_0000, 100, 0), Errno::EINVAL), "kernel address")?;
    ensure(is_err(d.job(abi::DevOp::Fill, b.addr, 0, 16, 256), Errno::EINVAL), "fill byte above 255")?;
    ensure(is_err(d.exclusive(b.addr + 1, u64::MAX), Errno::EINVAL), "exclusive of a wrapping length (found by the fuzzer)")?;
    ensure(user::check(user::sys(user::Sys::DevJob, d.fd(), 99, b.addr, 0, 1, 0)) == Err(Errno::EINVAL), "unknown op")?;
    ensure(is_err(d.job(abi::DevOp::Snapshot, b.addr + 1, x.as_mut_ptr() as u64, PAGE, 0), Errno::EINVAL), "unaligned snapshot")?;
    ensure(is_err(d.job(abi::DevOp::Stats, 0, x.as_mut_ptr() as u64, 3, 0), Errno::EINVAL), "stats of the wrong size")
}

fn read_into_bad_buffer() -> R {
    let d = dev(0)?;
    let b = rw(PAGE)?;
    let ro = Buf::new(PAGE, PROT_READ).map_err(|_| "mmap")?;
    ensure(is_err(d.job(abi::DevOp::Read, b.addr, ro.addr, 16, 0), Errno::EFAULT), "EFAULT into a read-only buffer")?;
    ensure(is_err(d.job(abi::DevOp::Read, b.addr, 0xffff_8000_0000_0000, 16, 0), Errno::EFAULT), "EFAULT into the kernel")?;
    ensure(is_err(d.job(abi::DevOp::Write, b.addr, 0x10, 16, 0), Errno::EFAULT), "EFAULT from an unmapped buffer")
}

fn swap_in_by_device() -> R {
    // The device reaches pages the CPU wrote, after mprotect churn: the
    // mirror is rebuilt from the CPU's tables each time.
    let d = dev(0)?;
    let mut b = rw(4 * PAGE)?;
    pattern(&mut b, 9);
    for _ in 0..3 {
        ok(user::mprotect(b.addr, 4 * PAGE, PROT_READ), "mprotect ro")?;
        ok(user::mprotect(b.addr, 4 * PAGE, PROT_READ | PROT_WRITE), "mprotect rw")?;
    }
    let mut out = rw(4 * PAGE)?;
    ok(d.read(b.addr, out.bytes_mut()), "read")?;
    ensure(has_pattern(out.bytes(), 9), "data intact through protection changes")
}

#[repr(C, align(4096))]
struct Page([u8; 4096]);

const fn blob_byte(i: usize) -> u8 {
    (i * 13 + 5) as u8
}

const fn make_blob() -> [u8; 4096] {
    let mut a = [0u8; 4096];
    let mut i = 0;
    while i < 4096 {
        a[i] = blob_byte(i);
        i += 1;
    }
    a
}

/// A page of .rodata the CPU never touches before the device does.
static BLOB: Page = Page(make_blob());

fn image_page_first_touched_by_device() -> R {
    // The device's fault is the page's first: HMM resolves it through the
    // same fault path, which fills it from the program's image.
    let d = dev(0)?;
    let mut out = rw(PAGE)?;
    ok(d.read(core::ptr::addr_of!(BLOB) as u64, out.bytes_mut()), "device read of .rodata")?;
    ensure(out.bytes().iter().enumerate().all(|(i, &x)| x == blob_byte(i)), "the device saw the image's bytes, not zeros")
}

// ---- processes and devices ------------------------------------------------------

fn child_exits_with_open_context() -> R {
    match user::fork() {
        Ok(0) => {
            if let (Ok(d), Ok(b)) = (dev(0), Buf::rw(PAGE)) {
                let _ = d.fill(b.addr, PAGE, 1);
                core::mem::forget(d); // exit with the context open
            }
            user::exit(0)
        }
        Ok(child) => {
            ok(user::wait(child as i64), "wait")?;
            let d = dev(0)?;
            let b = rw(PAGE)?;
            ok(d.fill(b.addr, PAGE, 2), "the device works after the child's exit")?;
            ensure(b.bytes().iter().all(|&x| x == 2), "bytes")
        }
        Err(_) => Err("fork"),
    }
}

fn device_job_while_sibling_runs() -> R {
    // A child spins on the CPU while the parent's device job sleeps.
    match user::fork() {
        Ok(0) => {
            let mut x = 0u64;
            for i in 0..2_000_000u64 {
                x = core::hint::black_box(x ^ i);
            }
            core::hint::black_box(x);
            user::exit(0)
        }
        Ok(child) => {
            let d = dev(0)?;
            let mut b = rw(8 * PAGE)?;
            pattern(&mut b, 12);
            let mut out = rw(8 * PAGE)?;
            ok(d.read(b.addr, out.bytes_mut()), "read")?;
            ok(user::wait(child as i64), "wait")?;
            ensure(has_pattern(out.bytes(), 12), "bytes")
        }
        Err(_) => Err("fork"),
    }
}

/// A named case.
type Case = (&'static str, fn() -> R);

const CASES: &[Case] = &[
    ("hmm.open_close", open_close),
    ("hmm.open_errors", open_errors),
    ("hmm.anon_read", anon_read),
    ("hmm.anon_read_unaligned", anon_read_unaligned),
    ("hmm.anon_read_zero", anon_read_zero),
    ("hmm.anon_read_prot_unmapped", anon_read_unmapped),
    ("hmm.anon_read_multiple", anon_read_multiple),
    ("hmm.anon_write", anon_write),
    ("hmm.anon_write_unaligned", anon_write_unaligned),
    ("hmm.anon_write_prot", anon_write_prot),
    ("hmm.anon_write_child", anon_write_child),
    ("hmm.anon_write_large", anon_write_large),
    ("hmm.anon_teardown", anon_teardown),
    ("hmm.anon_snapshot", anon_snapshot),
    ("hmm.snapshot_after_munmap", snapshot_after_munmap),
    ("hmm.munmap_invalidates", munmap_invalidates),
    ("hmm.mprotect_invalidates", mprotect_invalidates),
    ("hmm.device_copy", device_copy),
    ("hmm.device_copy_unmapped", device_copy_unmapped),
    ("hmm.device_fill", device_fill),
    ("hmm.fill_readonly", fill_readonly),
    ("hmm.exclusive", exclusive),
    ("hmm.exclusive_cpu_write_revokes", exclusive_cpu_write_revokes),
    ("hmm.exclusive_mprotect", exclusive_mprotect),
    ("hmm.exclusive_cow", exclusive_cow),
    ("hmm.check_exclusive_never_taken", check_exclusive_never_taken),
    ("hmm.cpu_write_after_device_write", cpu_write_after_device_write),
    ("hmm.device_faults_counted", device_faults_counted),
    ("hmm.read_only_context", read_only_context),
    ("hmm.bad_arguments", bad_arguments),
    ("hmm.read_into_bad_buffer", read_into_bad_buffer),
    ("hmm.protection_churn", swap_in_by_device),
    ("hmm.child_exits_with_open_context", child_exits_with_open_context),
    ("hmm.device_job_while_sibling_runs", device_job_while_sibling_runs),
    ("hmm.image_page_first_touched_by_device", image_page_first_touched_by_device),
    ("hmm2.double_map", two_devices_double_map),
    ("hmm2.write_then_read", two_devices_write_then_read),
    ("hmm2.snapshot", two_devices_snapshot),
    ("hmm2.exclusive_moves", two_devices_exclusive),
];

const SKIPPED: &[(&str, &str)] = &[
    ("hmm.anon_write_child_shared", "no MAP_SHARED mappings"),
    ("hmm.anon_write_huge / anon_read_huge", "no transparent huge pages (anon_write_large covers the range)"),
    ("hmm.anon_read_hugetlbfs / anon_write_hugetlbfs", "no hugetlbfs"),
    ("hmm.file_read / file_write", "no files"),
    ("hmm.migrate / migrate_fault / migrate_release / migrate_shared / migrate_multiple", "device-private memory waits for accelerator-local memory"),
    ("hmm.mixedmap", "no device-file mmap"),
    ("hmm.compound", "no compound pages"),
    ("hmm.hmm_gup_test / hmm_cow_in_device", "no GUP, no device-private pages"),
    ("hmm2.migrate_mixed", "device-private memory"),
];

fn main(args: &[u8]) -> i32 {
    let only = core::str::from_utf8(args).unwrap_or("");
    println!("TAP version 13");
    let selected = CASES.iter().filter(|(n, _)| only.is_empty() || n.contains(only));
    println!("1..{}", selected.clone().count() + if only.is_empty() { SKIPPED.len() } else { 0 });
    let (mut n, mut passed, mut failed) = (0, 0, 0);
    for (name, case) in selected {
        n += 1;
        match case() {
            Ok(()) => {
                passed += 1;
                println!("ok {n} - {name}");
            }
            Err(why) => {
                failed += 1;
                println!("not ok {n} - {name} # {why}");
            }
        }
    }
    if only.is_empty() {
        for (name, why) in SKIPPED {
            n += 1;
            println!("ok {n} - {name} # SKIP {why}");
        }
    }
    println!("# hmm-tests: {passed} passed, {failed} failed, {} skipped", if only.is_empty() { SKIPPED.len() } else { 0 });
    if failed > 0 {
        failed
    } else if only.is_empty() && passed < 30 {
        100
    } else {
        0
    }
}
