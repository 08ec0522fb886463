//! Everything at once: two hmm-tests, the fuzzer, device jobs, CPU hogs,
//! threads and the swapper share the CPU and both accelerators. The kernel
//! must survive and every process must end. (Two programs on one
//! accelerator take turns binding it — each bind replaces the other's
//! mirror — so hmm-tests' mirror-state cases may fail here; their data
//! cases may not, and nothing may crash.) Then all memory comes back.
#![no_std]
#![no_main]

extern crate alloc;

use kernel::proc;

kernel::entry!(main);

fn main(_: &'static kernel::BootInfo) -> ! {
    kernel::testing::run("user_stress", kernel::tests![everything_at_once]);
}

fn everything_at_once() {
    kernel::hmmdev::accels().expect("accelerators");
    // Warm up: the first bind of each accelerator allocates VT-d context
    // tables that stay.
    for a in ["0", "1"] {
        let _ = proc::wait_exit(proc::spawn("devjob", a.as_bytes()).expect("warm-up"));
    }
    for a in kernel::hmmdev::accels().expect("accels") {
        a.lock().unbind();
    }
    let before = kernel::mm::frames::stats().free;
    let heap_before = kernel::mm::heap::mapped();
    let jobs: &[(&str, &str)] = &[
        ("hmm-tests", ""),
        ("hmm-tests", ""),
        ("fuzz", "800"),
        ("devjob", "0"),
        ("devjob", "1"),
        ("spin", "10"),
        ("threads", "share"),
        ("syscalls", ""),
        ("ticker", "4"),
    ];
    let pids: alloc::vec::Vec<_> = jobs.iter().map(|(p, a)| (*p, proc::spawn(p, a.as_bytes()).expect("spawn"))).collect();
    for (name, pid) in pids {
        let info = proc::wait_exit(pid).expect("exits");
        kernel::println!("  {name} (pid {pid}) exited with status {}", info.status);
        assert!(info.report.is_none(), "{name} was not killed by the kernel: {info:?}");
        if name != "hmm-tests" {
            assert_eq!(info.status, 0, "{name}");
        }
    }
    let c = kernel::sched::cpu();
    let switches = c.switches.load(core::sync::atomic::Ordering::Relaxed);
    kernel::println!("  {switches} context switches, {} timer preemptions", c.preemptions.load(core::sync::atomic::Ordering::Relaxed));
    // Contenders for an accelerator sleep until its lock is released; when
    // they yielded to each other instead, this run took 2.8 M switches.
    assert!(switches < 1_000_000, "no ping-pong between lock contenders ({switches} switches)");
    // Unbind the accelerators (a binding keeps a dead process's mirror
    // tables until the next bind) and count frames.
    for a in kernel::hmmdev::accels().expect("accels") {
        a.lock().unbind();
    }
    let after = kernel::mm::frames::stats().free;
    // The kernel heap never shrinks: a growth during the run (its peak
    // depends on how the processes interleave) keeps its frames, plus at
    // most one page-table page per 2 MiB mapped. Every other frame is back.
    let grown = kernel::mm::heap::mapped() - heap_before;
    let heap_frames = (grown / 4096) as usize;
    let missing = before.saturating_sub(after);
    assert!(after <= before && (heap_frames..=heap_frames + grown.div_ceil(2 << 20) as usize).contains(&missing), "every frame came back ({} missing; the heap grew by {heap_frames} pages)", before as i64 - after as i64);
}
