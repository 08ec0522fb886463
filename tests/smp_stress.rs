//! The stress test of issue 16: two processes, two worker threads each,
//! on both accelerators, run 100,000 random operations (CPU writes and
//! reads, munmap, mprotect, fork, device reads, writes, fills, copies and
//! exclusive access) — see `kernel/user/src/bin/stress.rs` for the
//! oracle. Meanwhile this kernel thread swaps their pages out and migrates
//! them. With more CPUs the threads run at the same time, so device faults
//! resolve while other CPUs unmap, protect, fork and swap next to them.
//!
//! Passes when both processes end with status 0 — 0 lost writes, 0 stale
//! device reads (a frame reused while a TLB or the IOTLB still reached it
//! shows up as one of these), 0 failed operations — and every frame comes
//! back. Prints the fault retries the races caused.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::vec::Vec;
use kernel::proc;
use test_kernels::Rng;

kernel::entry!(main);

fn main(_: &'static kernel::BootInfo) -> ! {
    kernel::testing::run("smp_stress", kernel::tests![hundred_thousand_operations]);
}

/// Operations per worker thread: 2 processes x 2 threads x 25,000.
const OPS_PER_THREAD: u64 = 25_000;
const PROCESSES: u64 = 2;
const THREADS: u64 = 2;
/// The workers' pages (as `stress.rs` lays them out): 0x4000_0000 + 1 MiB per thread.
const WORK: (u64, u64) = (0x4000_0000, 0x4000_0000 + THREADS * 0x10_0000);

fn hundred_thousand_operations() {
    let accs = kernel::hmmdev::accels().expect("accelerators");
    // Warm up: the first bind of each accelerator allocates VT-d context
    // tables that stay.
    for a in ["0", "1"] {
        let _ = proc::wait_exit(proc::spawn("devjob", a.as_bytes()).expect("warm-up"));
    }
    // And everything else allocated once, on first use (the swap disk's
    // queue and bounce pages, swap bookkeeping): a short run of the same
    // program, swapping and migrating as below.
    let mut rng = Rng::new(0x5eed_0016);
    let warm = proc::spawn("stress", b"1 200 0 99").expect("warm-up");
    while let Some(space) = proc::aspace_of(warm) {
        churn(&space, &mut rng);
        kernel::sched::sleep_ms(1 + rng.below(5));
    }
    assert_eq!(proc::wait_exit(warm).expect("warm-up exits").status, 0, "the warm-up run");
    // And the kernel heap, which only grows: map 8 MiB of it now so the
    // run fits in what is mapped and every frame can be counted exactly.
    drop(alloc::vec![0u8; 8 << 20]);
    let before = kernel::mm::frames::stats().free;
    let heap_before = kernel::mm::heap::mapped();
    let heap_used_before = kernel::mm::heap::usage().0;
    let pids: Vec<proc::Pid> = (0..PROCESSES)
        .map(|i| proc::spawn("stress", format!("{THREADS} {OPS_PER_THREAD} {} {}", i % 2, 7 + i).as_bytes()).expect("spawn stress"))
        .collect();
    // The kernel's own share of the races: swap-out and migration of the
    // workers' pages while they run.
    let (mut swapped, mut migrated, mut rounds) = (0usize, 0usize, 0u64);
    // Fault retries per (accelerator, context), as last seen: a context's
    // counters go when its process exits.
    let mut retries: Vec<(usize, u32, u64)> = Vec::new();
    loop {
        let live: Vec<_> = pids.iter().filter_map(|&p| proc::aspace_of(p)).collect();
        if live.is_empty() {
            break;
        }
        for space in &live {
            let (s, m) = churn(space, &mut rng);
            swapped += s;
            migrated += m;
        }
        rounds += 1;
        for (i, a) in accs.iter().enumerate() {
            for c in a.lock().contexts() {
                let seen = c.mm.stats().retries;
                match retries.iter_mut().find(|(ai, id, _)| *ai == i && *id == c.id.0) {
                    Some(r) => r.2 = seen,
                    None => retries.push((i, c.id.0, seen)),
                }
            }
        }
        kernel::sched::sleep_ms(1 + rng.below(5));
    }
    let retries: u64 = retries.iter().map(|r| r.2).sum();
    let mut failed = 0;
    for pid in pids {
        let info = proc::wait_exit(pid).expect("exits");
        kernel::println!("  stress pid {pid} exited with status {}", info.status);
        if info.status != 0 || info.report.is_some() {
            failed += 1;
        }
    }
    kernel::println!(
        "smp_stress: {} CPUs; kernel side: {swapped} pages swapped out, {migrated} migrated in {rounds} rounds; {retries} device-fault retries caused by concurrent invalidations",
        kernel::cpus::online().len()
    );
    assert_eq!(failed, 0, "every stress process kept every byte right");
    for a in accs {
        a.lock().unbind();
    }
    kernel::println!("  heap used/mapped {:?} {} (before: {heap_used_before} used, {heap_before} mapped)", kernel::mm::heap::usage(), kernel::mm::heap::mapped());
    assert_eq!(kernel::mm::heap::mapped(), heap_before, "the run fitted in the heap mapped beforehand");
    let after = kernel::mm::frames::stats().free;
    assert_eq!(after, before, "every frame came back ({} missing)", before as i64 - after as i64);
}

/// Swap out 1–8 random pages of the workers' areas and migrate one:
/// (pages swapped, pages migrated). Random and small, so a device job
/// (100 ms of virtual time per transfer) is not starved of its pages.
fn churn(space: &kernel::aspace::AddressSpace, rng: &mut Rng) -> (usize, usize) {
    let first = WORK.0 + rng.below((WORK.1 - WORK.0) / 4096 - 8) * 4096;
    let swapped = hmm::VaRange::new(first, first + (1 + rng.below(8)) * 4096).map_or(0, |r| space.swap_out(r));
    let page = WORK.0 + rng.below((WORK.1 - WORK.0) / 4096) * 4096;
    (swapped, space.migrate(page).is_ok() as usize)
}
