//! Costs seen from ring 3, in TSC cycles (with `--icount-shift 0` the TSC
//! counts instructions, so the figures repeat run to run):
//! a system call round trip, a context switch, a demand-zero fault, a COW
//! fault. `cargo run --release -- --icount-shift 0 --run ubench`
#![no_std]
#![no_main]

use user::{println, Buf};

user::entry!(main);

fn tsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: rdtsc reads the time-stamp counter; CR4.TSD is clear.
    unsafe { core::arch::asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    ((hi as u64) << 32) | lo as u64
}

const N: u64 = 2000;
const PAGES: u64 = 256;

fn main(_: &[u8]) -> i32 {
    let t = tsc();
    for _ in 0..N {
        core::hint::black_box(user::getpid());
    }
    let syscall = (tsc() - t) / N;

    let mut b = Buf::rw(PAGES * 4096).expect("mmap");
    let t = tsc();
    for p in 0..PAGES as usize {
        b.bytes_mut()[p * 4096] = 1;
    }
    let demand_zero = (tsc() - t) / PAGES;

    let child = match user::fork() {
        Ok(0) => {
            for _ in 0..N {
                user::yield_now();
            }
            user::exit(0)
        }
        Ok(c) => c,
        Err(_) => return 1,
    };
    let t = tsc();
    for p in 0..PAGES as usize {
        b.bytes_mut()[p * 4096] = 2;
    }
    let cow = (tsc() - t) / PAGES;
    let t = tsc();
    for _ in 0..N {
        user::yield_now();
    }
    // Each yield switches to the child and back: two switches, two calls.
    let switch = (tsc() - t) / (2 * N);
    let _ = user::wait(child as i64);
    println!("ubench (TSC cycles; with --icount-shift 0 these are instructions):");
    println!("  system call round trip (getpid)      {syscall:>8}");
    println!("  yield to another process and back/2  {switch:>8}   (a system call + a context switch)");
    println!("  demand-zero page fault from ring 3   {demand_zero:>8}");
    println!("  COW page fault from ring 3 (copy)    {cow:>8}");
    0
}
