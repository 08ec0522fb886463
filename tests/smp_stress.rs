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

/// Operations per worker thread by default: 2 processes x 2 threads x
/// 25,000. The kernel command line's `stress_ops=N` sets another count
/// (the test harness runs a shorter one; see the README for the full run).
const OPS_PER_THREAD: u64 = 25_000;
const PROCESSES: u64 = 2;
const THREADS: u64 = 2;
/// The kernel's swap-out and migration come every CHURN_MS..2*CHURN_MS of
/// virtual time: as often as a device transfer takes (edu: 100 ms), so a
/// job's faulted-in pages can last until its replay. (Every 1–5 ms, a
/// device read starved: each replay found its page swapped out again and
/// the job ended with "invalidations kept racing the fault".)
const CHURN_MS: u64 = 100;
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
        kernel::sched::sleep_ms(CHURN_MS + rng.below(CHURN_MS));
    }
    assert_eq!(proc::wait_exit(warm).expect("warm-up exits").status, 0, "the warm-up run");
    // And the kernel heap, which only grows: map 8 MiB of it now so the
    // run fits in what is mapped and every frame can be counted exactly.
    drop(alloc::vec![0u8; 8 << 20]);
    let before = kernel::mm::frames::stats().free;
    let heap_before = kernel::mm::heap::mapped();
    let heap_used_before = kernel::mm::heap::usage().0;
    let ops: u64 = kernel::cmdline::get(kernel::boot_info().cmdline(), "stress_ops").and_then(|v| v.parse().ok()).unwrap_or(OPS_PER_THREAD);
    kernel::println!("  {PROCESSES} processes x {THREADS} threads x {ops} operations on {} CPUs", kernel::cpus::online().len());
    let pids: Vec<proc::Pid> = (0..PROCESSES)
        .map(|i| proc::spawn("stress", format!("{THREADS} {ops} {} {}", i % 2, 7 + i).as_bytes()).expect("spawn stress"))
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
        kernel::sched::sleep_ms(CHURN_MS + rng.below(CHURN_MS));
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
    // Every exit gives its task's 64 KiB kernel stack back (an `Arc<Task>`
    // left on an exit path's stack once kept each one: hundreds of exits,
    // tens of MiB). An idle CPU frees the last task that died on it only
    // at its next switch, so up to one stack per CPU may still be held.
    let heap_used = kernel::mm::heap::usage().0;
    let allowed = kernel::cpus::online().len() * 64 * 1024;
    assert!(heap_used < heap_used_before + allowed, "the kernel heap holds {} bytes more than before the run", heap_used - heap_used_before);
    assert_eq!(kernel::mm::heap::mapped(), heap_before, "the run fitted in the heap mapped beforehand");
    let after = kernel::mm::frames::stats().free;
    assert_eq!(after, before, "every frame came back ({} missing)", before as i64 - after as i64);
}

/// Swap out 1–8 random pages of one of the workers' areas and migrate
/// one page: (pages swapped, pages migrated). Random and small, so a
/// device job (100 ms of virtual time per transfer) is not starved of its
/// pages.
fn churn(space: &kernel::aspace::AddressSpace, rng: &mut Rng) -> (usize, usize) {
    let n = 1 + rng.below(8);
    let first = area_page(rng, 16 - n + 1);
    let swapped = hmm::VaRange::new(first, first + n * 4096).map_or(0, |r| space.swap_out(r));
    (swapped, space.migrate(area_page(rng, 16)).is_ok() as usize)
}

/// A page of a worker's area (`stress.rs`: thread t's 4 areas of 16 pages
/// at 0x4000_0000 + t MiB + a * 128 KiB), among its first `within` pages.
fn area_page(rng: &mut Rng, within: u64) -> u64 {
    let (thread, area) = (rng.below(THREADS), rng.below(4));
    WORK.0 + thread * 0x10_0000 + area * 0x2_0000 + rng.below(within.max(1)) * 4096
}
