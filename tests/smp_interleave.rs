//! How much do the CPUs really interleave? (Issue 16: a stress test that
//! cannot interleave proves nothing.) One task pinned to each CPU enters a
//! short critical region ROUNDS times and counts how often another CPU was
//! inside it at that moment, and how often a spin lock it wanted was held
//! by another CPU. Prints the figures; checks only that every task
//! finished and the lock-protected counter is exact.
//!
//! Compare: `cargo run -- --kernel target/kernel/x86_64-unknown-none/debug/smp_interleave --smp 2`
//! (TCG with icount: vCPUs take turns on one host thread) and the same
//! with `--accel mttcg` (one host thread per vCPU, no icount).
#![no_std]
#![no_main]

extern crate alloc;

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use kernel::cpus;
use kernel::sched;

kernel::entry!(main);

const ROUNDS: u64 = 100_000;
static INSIDE: AtomicU32 = AtomicU32::new(0);
static OVERLAPS: AtomicU64 = AtomicU64::new(0);
static CONTENDED: AtomicU64 = AtomicU64::new(0);
static DONE: AtomicU32 = AtomicU32::new(0);
static COUNTER: spin::Mutex<u64> = spin::Mutex::new(0);

fn hammer(_: u64) {
    for _ in 0..ROUNDS {
        if INSIDE.fetch_add(1, Ordering::SeqCst) > 0 {
            OVERLAPS.fetch_add(1, Ordering::Relaxed);
        }
        let mut x = 0u64;
        for i in 0..20 {
            x = core::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        core::hint::black_box(x);
        INSIDE.fetch_sub(1, Ordering::SeqCst);
        let mut g = loop {
            if let Some(g) = COUNTER.try_lock() {
                break g;
            }
            CONTENDED.fetch_add(1, Ordering::Relaxed);
            while COUNTER.is_locked() {
                core::hint::spin_loop();
            }
        };
        *g += 1;
    }
    DONE.fetch_add(1, Ordering::SeqCst);
}

fn main(_: &'static kernel::BootInfo) -> ! {
    kernel::testing::run("smp_interleave", kernel::tests![interleaving]);
}

fn interleaving() {
    sched::init();
    let online = cpus::online();
    let (t0, c0) = (sched::ticks(), kernel::cycles::now());
    for c in online.iter() {
        sched::spawn_kernel(alloc::format!("hammer/{c}"), hammer, 0, Some(c)).expect("spawn");
    }
    while DONE.load(Ordering::SeqCst) < online.len() as u32 {
        sched::sleep_ms(10);
    }
    let (ticks, cycles) = (sched::ticks() - t0, kernel::cycles::now().wrapping_sub(c0));
    let entries = ROUNDS * online.len() as u64;
    kernel::println!(
        "\n  {} CPUs, {entries} region entries: {} found another CPU inside ({} per 100k); {} lock attempts found it held by another CPU; {ticks} ticks, {cycles} TSC cycles",
        online.len(),
        OVERLAPS.load(Ordering::SeqCst),
        OVERLAPS.load(Ordering::SeqCst) * 100_000 / entries,
        CONTENDED.load(Ordering::SeqCst)
    );
    assert_eq!(*COUNTER.lock(), entries, "the lock kept the counter exact");
}
