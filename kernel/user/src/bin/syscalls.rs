//! Every system call once, its good and its bad arguments: prints one line
//! per check and exits with the number of failed checks.
#![no_std]
#![no_main]

use abi::{Errno, MAP_FIXED, PROT_READ, PROT_WRITE};
use user::{println, Buf};

user::entry!(main);

#[repr(C, align(4096))]
struct Page([u8; 4096]);

/// A page of .rodata this program unmaps and maps again as fresh memory.
static SPARE: Page = Page([0x5a; 4096]);

struct T {
    n: u32,
    failed: u32,
}

impl T {
    fn check(&mut self, what: &str, ok: bool) {
        self.n += 1;
        if !ok {
            self.failed += 1;
        }
        println!("{} {} - {what}", if ok { "ok" } else { "not ok" }, self.n);
    }
}

fn err(r: Result<u64, Errno>) -> Option<Errno> {
    r.err()
}

fn main(_: &[u8]) -> i32 {
    let mut t = T { n: 0, failed: 0 };
    let me = user::getpid();
    t.check("getpid is positive", me > 0);

    // write
    t.check("write returns the byte count", user::write(b"syscalls: write works\n") == Ok(22));
    t.check("write from an unmapped pointer is EFAULT", err(user::check(user::sys(user::Sys::Write, 0x10, 5, 0, 0, 0, 0))) == Some(Errno::EFAULT));
    t.check("write from a kernel pointer is EFAULT", err(user::check(user::sys(user::Sys::Write, 0xffff_8000_0000_0000, 5, 0, 0, 0, 0))) == Some(Errno::EFAULT));
    t.check("write with a wrapping length is EFAULT", err(user::check(user::sys(user::Sys::Write, 0x400000, u64::MAX, 0, 0, 0, 0))).is_some());

    // mmap / munmap / mprotect
    t.check("mmap of length 0 is EINVAL", err(user::mmap(0, 0, PROT_READ, 0)) == Some(Errno::EINVAL));
    t.check("mmap with unknown prot bits is EINVAL", err(user::mmap(0, 4096, 0x80, 0)) == Some(Errno::EINVAL));
    t.check("mmap with unknown flags is EINVAL", err(user::mmap(0, 4096, PROT_READ, 0x4000)) == Some(Errno::EINVAL));
    t.check("mmap of 2^63 bytes is EINVAL", err(user::mmap(0, 1 << 63, PROT_READ, 0)) == Some(Errno::EINVAL));
    t.check("fixed mmap at an unaligned address is EINVAL", err(user::mmap(0x2000_0001, 4096, PROT_READ, MAP_FIXED)) == Some(Errno::EINVAL));
    t.check("fixed mmap in the kernel half is EINVAL", err(user::mmap(0xffff_8000_0000_0000, 4096, PROT_READ, MAP_FIXED)) == Some(Errno::EINVAL));
    let fixed = user::mmap(0x3000_0000, 8192, PROT_READ | PROT_WRITE, MAP_FIXED);
    t.check("fixed mmap at a free address", fixed == Ok(0x3000_0000));
    t.check("fixed mmap over it is EEXIST", err(user::mmap(0x3000_0000, 4096, PROT_READ, MAP_FIXED)) == Some(Errno::EEXIST));
    // SAFETY: mapped just above.
    unsafe { core::ptr::write_volatile(0x3000_1000 as *mut u64, 0xfeed) };
    t.check("demand-zero then written", unsafe { core::ptr::read_volatile(0x3000_1000 as *const u64) } == 0xfeed && unsafe { core::ptr::read_volatile(0x3000_0000 as *const u64) } == 0);
    t.check("munmap of an unaligned address is EINVAL", err(user::munmap(0x3000_0001, 4096)) == Some(Errno::EINVAL));
    t.check("munmap of length 0 is EINVAL", err(user::munmap(0x3000_0000, 0)) == Some(Errno::EINVAL));
    t.check("munmap of a wrapping range is EINVAL", err(user::munmap(0x3000_0000, u64::MAX - 4095)) == Some(Errno::EINVAL));
    t.check("mprotect of an unmapped range is ENOMEM", err(user::mprotect(0x5000_0000, 4096, PROT_READ)) == Some(Errno::ENOMEM));
    t.check("mprotect to PROT_NONE is EINVAL", err(user::mprotect(0x3000_0000, 4096, 0)) == Some(Errno::EINVAL));
    t.check("mprotect to read-only", user::mprotect(0x3000_0000, 8192, PROT_READ) == Ok(0));
    t.check("the data survived mprotect", unsafe { core::ptr::read_volatile(0x3000_1000 as *const u64) } == 0xfeed);
    t.check("munmap", user::munmap(0x3000_0000, 8192) == Ok(0));
    t.check("munmap of nothing mapped succeeds", user::munmap(0x3000_0000, 8192) == Ok(0));

    // An unmapped page of the image is no longer the image's: mapped again,
    // it is zero-filled memory.
    // (black_box: the compiler must not fold reads of the constant static.)
    let spare = core::hint::black_box(core::ptr::addr_of!(SPARE) as u64);
    t.check("munmap a page of our own .rodata", user::munmap(spare, 4096) == Ok(0));
    t.check("map fresh memory in its place", user::mmap(spare, 4096, PROT_READ | PROT_WRITE, MAP_FIXED) == Ok(spare));
    // SAFETY: mapped just above (the static is not read through its name).
    let zeros = (0..4096).all(|i| unsafe { core::ptr::read_volatile((spare + i) as *const u8) } == 0);
    t.check("it reads as zeros, not the image's bytes", zeros);

    // fork, COW, wait
    let mut b = Buf::rw(3 * 4096).expect("mmap");
    b.bytes_mut().fill(b'A');
    match user::fork() {
        Ok(0) => {
            // The child: its own copy.
            b.bytes_mut().fill(b'B');
            let ok = b.bytes().iter().all(|&c| c == b'B');
            user::exit(if ok { 42 } else { 1 });
        }
        Ok(child) => {
            let r = user::wait(child as i64);
            t.check("wait returns the child and its status", r == Ok((child, 42)));
            t.check("the parent's copy is untouched by the child's writes (COW)", b.bytes().iter().all(|&c| c == b'A'));
        }
        Err(e) => t.check(if e == Errno::EAGAIN { "fork: EAGAIN" } else { "fork" }, false),
    }
    t.check("wait with no children is ECHILD", user::wait(-1).err() == Some(Errno::ECHILD));
    t.check("wait for pid 0 is EINVAL", user::wait(0).err() == Some(Errno::EINVAL));
    t.check("wait for a pid that is not a child is ECHILD", user::wait(1).err() == Some(Errno::ECHILD) || me == 1);
    // A child that faults: its status says so; the parent carries on.
    match user::fork() {
        Ok(0) => {
            // SAFETY: deliberately invalid.
            unsafe { core::ptr::write_volatile(0x8 as *mut u8, 1) };
            user::exit(0);
        }
        Ok(child) => t.check("a child's segfault is status -11", user::wait(child as i64) == Ok((child, -11))),
        Err(_) => t.check("fork", false),
    }
    // Status pointer checked.
    match user::fork() {
        Ok(0) => user::exit(3),
        Ok(child) => {
            let r = user::check(user::sys(user::Sys::Wait, child, 0xffff_8000_0000_1000, 0, 0, 0, 0));
            t.check("wait with a kernel status pointer is EFAULT", r.err() == Some(Errno::EFAULT));
        }
        Err(_) => t.check("fork", false),
    }

    // yield, sleep, ticks
    user::yield_now();
    let t0 = user::ticks();
    user::sleep_ms(50);
    let slept = user::ticks() - t0;
    t.check("sleep(50 ms) lasts at least 5 ticks", slept >= 5);
    t.check("sleep of more than a minute is EINVAL", user::check(user::sys(user::Sys::Sleep, 1 << 40, 0, 0, 0, 0, 0)).err() == Some(Errno::EINVAL));

    // unknown numbers, devices
    t.check("an unknown system call is ENOSYS", user::check(user::syscall6(999, 1, 2, 3, 4, 5, 6)).err() == Some(Errno::ENOSYS));
    t.check("u64::MAX as a number is ENOSYS", user::check(user::syscall6(u64::MAX, 0, 0, 0, 0, 0, 0)).err() == Some(Errno::ENOSYS));
    t.check("dev_open of a missing accelerator is ENODEV", user::Device::open(99, 3).err() == Some(Errno::ENODEV));
    t.check("dev_open with bad permissions is EINVAL", user::Device::open(0, 8).err() == Some(Errno::EINVAL));
    t.check("dev_job on a bad descriptor is EBADF", user::check(user::sys(user::Sys::DevJob, 7, 1, 0x400000, 0, 1, 0)).err() == Some(Errno::EBADF));
    t.check("dev_close of a bad descriptor is EBADF", user::check(user::sys(user::Sys::DevClose, u64::MAX, 0, 0, 0, 0, 0)).err() == Some(Errno::EBADF));

    println!("syscalls: {} checks, {} failed", t.n, t.failed);
    t.failed as i32
}
