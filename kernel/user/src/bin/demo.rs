//! The demo's ring-3 chapter: fill a buffer on the CPU, hand its address
//! to accelerator 0, and find the device's result in our own memory.
#![no_std]
#![no_main]

use abi::{DEV_READ, DEV_WRITE};
use user::{println, Buf, Device};

user::entry!(main);

fn main(_: &[u8]) -> i32 {
    let len = 8 * 4096u64;
    let mut buf = match Buf::rw(2 * len) {
        Ok(b) => b,
        Err(e) => {
            println!("    demo: mmap: {}", e.name());
            return 1;
        }
    };
    let text = b"the device wrote this line into ring-3 memory. ";
    for (i, b) in buf.bytes_mut()[..len as usize].iter_mut().enumerate() {
        *b = text[i % text.len()];
    }
    println!("    [ring 3, pid {}] filled {len} bytes at {:#x}; asking accel0 to copy them to {:#x}", user::getpid(), buf.addr, buf.at(len));
    let dev = match Device::open(0, DEV_READ | DEV_WRITE) {
        Ok(d) => d,
        Err(e) => {
            println!("    demo: dev_open: {}", e.name());
            return 1;
        }
    };
    let before = dev.stats().unwrap_or_default();
    if let Err(e) = dev.copy(buf.at(len), buf.addr, len) {
        println!("    demo: device copy failed: {}", e.name());
        return 1;
    }
    let after = dev.stats().unwrap_or_default();
    let result = &buf.bytes()[len as usize..];
    println!("    [ring 3] the device's result, read by the CPU at {:#x}: \"{}\"", buf.at(len), core::str::from_utf8(&result[..text.len() - 1]).unwrap_or("?"));
    println!(
        "    [ring 3] {} DMA transfers; {} device faults resolved while this process slept in its job ({} pages populated)",
        after.transfers - before.transfers,
        after.faults_resolved - before.faults_resolved,
        after.pages_populated - before.pages_populated
    );
    if result == &buf.bytes()[..len as usize] { 0 } else { 1 }
}
