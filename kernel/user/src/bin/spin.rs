//! CPU-bound: counts for a while without any system call (so only the
//! timer can take the CPU away), then prints how far it got. Argument: the
//! number of iterations in millions (default 20).
#![no_std]
#![no_main]

use user::println;

user::entry!(main);

fn main(args: &[u8]) -> i32 {
    let millions = user::parse_u64(args).unwrap_or(20);
    let start = user::ticks();
    let mut x: u64 = user::getpid();
    for i in 0..millions * 1_000_000 {
        // Opaque to the optimiser: a real loop.
        x = core::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
    }
    println!("spin pid {} done: {} ticks, x={:#x}", user::getpid(), user::ticks() - start, x & 0xffff);
    0
}
