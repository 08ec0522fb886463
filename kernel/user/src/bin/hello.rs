//! The smallest program: print, getpid, a demand-zero page, exit 0.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};
use user::{println, Buf};

user::entry!(main);

/// Lives in .data (a non-zero initial value): the first write to it is a
/// fault on an image-backed, writable page.
static COUNTER: AtomicU64 = AtomicU64::new(41);

fn main(args: &[u8]) -> i32 {
    let pid = user::getpid();
    println!("hello from ring 3: pid {pid}, args \"{}\"", core::str::from_utf8(args).unwrap_or("?"));
    // .data is writable and starts with its initial value.
    let v = COUNTER.fetch_add(1, Ordering::Relaxed) + 1;
    let mut b = Buf::rw(8192).expect("mmap");
    b.bytes_mut()[5000] = 7;
    println!("data {v}, mmap at {:#x}, byte {}", b.addr, b.bytes()[5000]);
    if v == 42 && b.bytes()[5000] == 7 && b.bytes()[0] == 0 { 0 } else { 1 }
}
