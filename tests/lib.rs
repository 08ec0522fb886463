//! Shared helpers for the integration test kernels. Each kernel is one
//! binary in this directory (listed in Cargo.toml), booted by
//! `boot/launcher/tests/kernels.rs`.
#![no_std]

extern crate alloc;

pub mod rules;
pub mod scenarios;

/// A small deterministic pseudo-random generator (xorshift64*), so stress
/// tests are repeatable.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// The highest-numbered online CPU (the boot CPU on one CPU).
pub fn last_cpu() -> kernel::cpus::CpuId {
    kernel::cpus::online().iter().last().expect("the boot CPU")
}

/// Sleep until `done()`, or panic after about `limit_ms` of virtual time,
/// listing every task and its state (a lost wake-up shows as a task left
/// blocked for good).
pub fn wait_for(what: &str, limit_ms: u64, done: impl Fn() -> bool) {
    let t0 = kernel::sched::ticks();
    while !done() {
        if kernel::sched::ticks() - t0 >= limit_ms / 10 {
            for t in kernel::sched::tasks() {
                kernel::println!("  task {} {:?} {:?} last on {}", t.id, t.name, t.state(), t.last_cpu());
            }
            panic!("{what}: not done after {limit_ms} ms");
        }
        kernel::sched::sleep_ms(1);
    }
}
