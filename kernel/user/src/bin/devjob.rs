//! The device works on this process's own memory: fill a buffer with a
//! pattern on the CPU, have accelerator N (argument, default 0) read it,
//! copy it and write it back, and check every byte. Exits 0 if all held.
#![no_std]
#![no_main]

use abi::{DEV_READ, DEV_WRITE};
use user::{println, Buf, Device};

user::entry!(main);

fn main(args: &[u8]) -> i32 {
    let accel = user::parse_u64(args).unwrap_or(0);
    let dev = match Device::open(accel, DEV_READ | DEV_WRITE) {
        Ok(d) => d,
        Err(e) => {
            println!("devjob: open accel{accel}: {}", e.name());
            return 1;
        }
    };
    let pid = user::getpid();
    let len = 16 * 4096u64;
    let mut src = Buf::rw(len).expect("mmap");
    let dst = Buf::rw(len).expect("mmap");
    for (i, b) in src.bytes_mut().iter_mut().enumerate() {
        *b = (i as u64 * 7 + pid) as u8;
    }
    if let Err(e) = dev.copy(dst.addr, src.addr, len) {
        println!("devjob: copy: {}", e.name());
        return 1;
    }
    let mut check = [0u8; 4096];
    let mut ok = dst.bytes() == src.bytes();
    if dev.read(dst.at(4096), &mut check).is_err() || check[..] != src.bytes()[4096..8192] {
        ok = false;
    }
    println!("devjob pid {pid}: accel{accel} copied {len} bytes of this process's memory: {}", if ok { "every byte right" } else { "WRONG" });
    if ok { 0 } else { 1 }
}
