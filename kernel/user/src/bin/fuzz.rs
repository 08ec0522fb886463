//! System-call fuzzer: children make thousands of calls with random
//! numbers and hostile arguments (0, -1, kernel addresses, wrapping
//! lengths, the program's own text and stack). A child may well kill
//! itself (munmap of its own stack is legal); the kernel must not panic,
//! and every call must return. Argument: calls per child (default 2000).
#![no_std]
#![no_main]

use user::{println, Rng};

user::entry!(main);

const CHILDREN: u64 = 4;

fn pick(r: &mut Rng, stack: u64) -> u64 {
    const V: [u64; 16] = [
        0, 1, 4096, 4095, u64::MAX, u64::MAX - 4095, 1 << 47, (1 << 47) - 4096, 0xffff_8000_0000_0000, 0xffff_ffff_8000_0000,
        0x400000, 0x1000_0000, 0x7fff_ffff_f000, 1 << 40, 0x8000_0000_0000_0000, 64,
    ];
    match r.next() % 4 {
        0 => V[(r.next() % 16) as usize],
        1 => r.next(),
        2 => stack.wrapping_add(r.next() % 8192).wrapping_sub(4096),
        _ => r.next() % 0x2000_0000,
    }
}

fn child(seed: u64, calls: u64) -> ! {
    let mut r = Rng(seed | 1);
    let marker = 0u64;
    let stack = &marker as *const u64 as u64;
    // Descriptor 0: a context on accel0 (if there is one).
    let dev = user::Device::open(0, abi::DEV_READ | abi::DEV_WRITE);
    core::mem::forget(dev);
    for _ in 0..calls {
        let n = r.next() % 17; // 0..=16: every call and a few unknown numbers
        if n == 0 || n == 3 || n == 14 || n == 15 {
            continue; // exit, fork and threads are exercised elsewhere
        }
        let mut a: [u64; 6] = core::array::from_fn(|_| pick(&mut r, stack));
        match n {
            9 => a[0] %= 20,               // sleep: short naps only
            1 => a[1] %= 16,               // write: keep the console readable
            4 => a[0] = u64::MAX,          // wait(-1): this child has no children
            12 if r.next().is_multiple_of(2) => {   // device jobs on the open context
                a[0] = 0;
                a[1] = r.next() % 10;
            }
            _ => {}
        }
        let ret = user::syscall6(n, a[0], a[1], a[2], a[3], a[4], a[5]);
        if ret < 0 && user::Errno::from_i64(-ret).is_none() {
            println!("fuzz: call {n} returned the unknown error {ret}");
            user::exit(7);
        }
    }
    user::exit(0)
}

fn main(args: &[u8]) -> i32 {
    let calls = user::parse_u64(args).unwrap_or(2000);
    let mut kids = 0;
    for i in 0..CHILDREN {
        match user::fork() {
            Ok(0) => child(0x9e37_79b9_7f4a_7c15 ^ (i * 0x1234_5678_9abc), calls),
            Ok(_) => kids += 1,
            Err(e) => println!("fuzz: fork failed: {}", e.name()),
        }
    }
    let (mut clean, mut died, mut bad) = (0, 0, 0);
    for _ in 0..kids {
        match user::wait(-1) {
            Ok((_, 0)) => clean += 1,
            Ok((_, 7)) => bad += 1,
            Ok((_, _)) => died += 1,
            Err(_) => bad += 1,
        }
    }
    println!("fuzz: {kids} children x {calls} calls: {clean} finished, {died} ended by their own hostile calls, {bad} saw a bad return");
    if bad == 0 && kids == CHILDREN { 0 } else { 1 }
}
