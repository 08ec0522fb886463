//! The user-side library of hmmos programs: the entry point, the system
//! calls (`int 0x80`, see the `abi` crate), printing, and mapped buffers.
//!
//! A program is `#![no_std] #![no_main]` and names its main function with
//! [`entry!`]: `fn main(args: &[u8]) -> i32`; the return value is the exit
//! status.
#![no_std]

pub use abi::{DevOp, DevStats, Errno, Sys};

use core::fmt::{self, Write};

core::arch::global_asm!(
    r#"
    .pushsection .text._start, "ax"
    .global _start
_start:
    and $-16, %rsp
    call user_start
    ud2
    .popsection
"#,
    options(att_syntax)
);

extern "Rust" {
    fn user_main(args: &[u8]) -> i32;
}

#[no_mangle]
extern "C" fn user_start(args: *const u8, len: usize) -> ! {
    // SAFETY: the kernel put `len` argument bytes at `args`, on our stack.
    let args = unsafe { core::slice::from_raw_parts(args, len) };
    // SAFETY: defined by the program's `entry!`.
    let status = unsafe { user_main(args) };
    exit(status)
}

/// Name the program's main function: `entry!(main)`.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        #[no_mangle]
        fn user_main(args: &[u8]) -> i32 {
            let f: fn(&[u8]) -> i32 = $main;
            f(args)
        }
    };
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    println!("user panic: {}", info.message());
    exit(101)
}

// ---- system calls -----------------------------------------------------------

/// Raw system call with six arguments.
#[inline(always)]
pub fn syscall6(n: u64, a: u64, b: u64, c: u64, d: u64, e: u64, f: u64) -> i64 {
    let ret: i64;
    // SAFETY: `int 0x80` enters the kernel, which preserves every register
    // but rax; it never touches our memory except through the arguments
    // it checks.
    unsafe {
        core::arch::asm!("int 0x80", inlateout("rax") n as i64 => ret, in("rdi") a, in("rsi") b, in("rdx") c, in("r10") d, in("r8") e, in("r9") f, options(nostack));
    }
    ret
}

/// A system call by number.
pub fn sys(n: Sys, a: u64, b: u64, c: u64, d: u64, e: u64, f: u64) -> i64 {
    syscall6(n as u64, a, b, c, d, e, f)
}

/// A result as `Result`: negative values are errors.
pub fn check(r: i64) -> Result<u64, Errno> {
    if r >= 0 {
        Ok(r as u64)
    } else {
        Err(Errno::from_i64(-r).unwrap_or(Errno::ENOSYS))
    }
}

pub fn exit(status: i32) -> ! {
    sys(Sys::Exit, status as i64 as u64, 0, 0, 0, 0, 0);
    // SAFETY: unreachable: exit does not return; `ud2` ends us if it did.
    unsafe { core::arch::asm!("ud2", options(noreturn)) }
}

pub fn write(bytes: &[u8]) -> Result<u64, Errno> {
    check(sys(Sys::Write, bytes.as_ptr() as u64, bytes.len() as u64, 0, 0, 0, 0))
}

pub fn getpid() -> u64 {
    sys(Sys::GetPid, 0, 0, 0, 0, 0, 0) as u64
}

/// `Ok(0)` in the child, `Ok(child pid)` in the parent.
pub fn fork() -> Result<u64, Errno> {
    check(sys(Sys::Fork, 0, 0, 0, 0, 0, 0))
}

/// Reap a child (`pid` or any with -1): `(pid, status)`.
pub fn wait(pid: i64) -> Result<(u64, i32), Errno> {
    let mut status: i32 = 0;
    let p = check(sys(Sys::Wait, pid as u64, &mut status as *mut i32 as u64, 0, 0, 0, 0))?;
    Ok((p, status))
}

pub fn mmap(hint: u64, len: u64, prot: u64, flags: u64) -> Result<u64, Errno> {
    check(sys(Sys::Mmap, hint, len, prot, flags, 0, 0))
}

pub fn munmap(addr: u64, len: u64) -> Result<u64, Errno> {
    check(sys(Sys::Munmap, addr, len, 0, 0, 0, 0))
}

pub fn mprotect(addr: u64, len: u64, prot: u64) -> Result<u64, Errno> {
    check(sys(Sys::Mprotect, addr, len, prot, 0, 0, 0))
}

pub fn yield_now() {
    sys(Sys::Yield, 0, 0, 0, 0, 0, 0);
}

pub fn sleep_ms(ms: u64) {
    sys(Sys::Sleep, ms, 0, 0, 0, 0, 0);
}

pub fn ticks() -> u64 {
    sys(Sys::Ticks, 0, 0, 0, 0, 0, 0) as u64
}

/// Start a thread at `entry(arg)` on the stack ending at `stack_top`.
pub fn thread(entry: extern "C" fn(u64) -> !, stack_top: u64, arg: u64) -> Result<u64, Errno> {
    check(sys(Sys::Thread, entry as usize as u64, stack_top, arg, 0, 0, 0))
}

/// End the calling thread only.
pub fn thread_exit() -> ! {
    sys(Sys::ThreadExit, 0, 0, 0, 0, 0, 0);
    // SAFETY: unreachable: thread_exit does not return.
    unsafe { core::arch::asm!("ud2", options(noreturn)) }
}

// ---- the device interface ----------------------------------------------------

/// An open context on an accelerator (closed on drop).
pub struct Device {
    fd: u64,
}

impl Device {
    pub fn open(accel: u64, perms: u64) -> Result<Device, Errno> {
        check(sys(Sys::DevOpen, accel, perms, 0, 0, 0, 0)).map(|fd| Device { fd })
    }
    pub fn fd(&self) -> u64 {
        self.fd
    }
    pub fn job(&self, op: DevOp, addr: u64, buf: u64, len: u64, arg: u64) -> Result<u64, Errno> {
        check(sys(Sys::DevJob, self.fd, op as u64, addr, buf, len, arg))
    }
    /// The device reads `out.len()` bytes at `addr` into `out`.
    pub fn read(&self, addr: u64, out: &mut [u8]) -> Result<u64, Errno> {
        self.job(DevOp::Read, addr, out.as_mut_ptr() as u64, out.len() as u64, 0)
    }
    /// The device writes `data` at `addr`.
    pub fn write(&self, addr: u64, data: &[u8]) -> Result<u64, Errno> {
        self.job(DevOp::Write, addr, data.as_ptr() as u64, data.len() as u64, 0)
    }
    pub fn copy(&self, dst: u64, src: u64, len: u64) -> Result<u64, Errno> {
        self.job(DevOp::Copy, dst, src, len, 0)
    }
    pub fn fill(&self, addr: u64, len: u64, byte: u8) -> Result<u64, Errno> {
        self.job(DevOp::Fill, addr, 0, len, byte as u64)
    }
    pub fn exclusive(&self, addr: u64, len: u64) -> Result<u64, Errno> {
        self.job(DevOp::Exclusive, addr, 0, len, 0)
    }
    pub fn check_exclusive(&self, addr: u64, len: u64) -> Result<u64, Errno> {
        self.job(DevOp::CheckExclusive, addr, 0, len, 0)
    }
    /// One byte per page of `[addr, addr + 4096 * out.len())`.
    pub fn snapshot(&self, addr: u64, out: &mut [u8]) -> Result<u64, Errno> {
        self.job(DevOp::Snapshot, addr, out.as_mut_ptr() as u64, out.len() as u64 * 4096, 0)
    }
    pub fn stats(&self) -> Result<DevStats, Errno> {
        let mut s = DevStats::default();
        self.job(DevOp::Stats, 0, &mut s as *mut DevStats as u64, core::mem::size_of::<DevStats>() as u64, 0)?;
        Ok(s)
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        sys(Sys::DevClose, self.fd, 0, 0, 0, 0, 0);
    }
}

// ---- mapped buffers ----------------------------------------------------------

/// Anonymous memory from `mmap`, unmapped on drop.
pub struct Buf {
    pub addr: u64,
    pub len: u64,
}

impl Buf {
    pub fn new(len: u64, prot: u64) -> Result<Buf, Errno> {
        Ok(Buf { addr: mmap(0, len, prot, 0)?, len })
    }
    pub fn rw(len: u64) -> Result<Buf, Errno> {
        Buf::new(len, abi::PROT_READ | abi::PROT_WRITE)
    }
    /// The bytes (the mapping must be readable to touch them).
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: our own mapping of `len` bytes, alive until drop.
        unsafe { core::slice::from_raw_parts(self.addr as *const u8, self.len as usize) }
    }
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above; `&mut self` makes it unique.
        unsafe { core::slice::from_raw_parts_mut(self.addr as *mut u8, self.len as usize) }
    }
    pub fn at(&self, off: u64) -> u64 {
        self.addr + off
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        let _ = munmap(self.addr, self.len);
    }
}

// ---- printing ----------------------------------------------------------------

/// Formats into a line buffer, written with one `write` call per flush.
pub struct Out {
    buf: [u8; 512],
    len: usize,
}

impl Out {
    pub const fn new() -> Out {
        Out { buf: [0; 512], len: 0 }
    }
    pub fn flush(&mut self) {
        if self.len > 0 {
            let _ = write(&self.buf[..self.len]);
            self.len = 0;
        }
    }
}

impl Default for Out {
    fn default() -> Self {
        Out::new()
    }
}

impl Write for Out {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len == self.buf.len() {
                self.flush();
            }
            self.buf[self.len] = b;
            self.len += 1;
        }
        Ok(())
    }
}

pub fn print_fmt(args: fmt::Arguments<'_>) {
    let mut o = Out::new();
    let _ = o.write_fmt(args);
    o.flush();
}

#[macro_export]
macro_rules! print {
    ($($t:tt)*) => { $crate::print_fmt(format_args!($($t)*)) };
}

#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($t:tt)*) => { $crate::print_fmt(format_args!("{}\n", format_args!($($t)*))) };
}

/// A small xorshift generator (for fuzzing and patterns).
pub struct Rng(pub u64);

impl Rng {
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Parse a decimal number from argument bytes.
pub fn parse_u64(s: &[u8]) -> Option<u64> {
    let mut n: u64 = 0;
    if s.is_empty() {
        return None;
    }
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add((c - b'0') as u64)?;
    }
    Some(n)
}
