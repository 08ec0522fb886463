//! Every integration test kernel (the binaries of `tests/`), booted in QEMU.
//!
//! Each kernel is built for `x86_64-unknown-none`, booted on the same machine
//! `cargo run` uses, and judged by its exit status: it passes only if it
//! wrote the success code. A failing or hung kernel (killed after the
//! timeout) fails this test, and its serial output is shown.
//!
//! `cargo test -- NAME` runs only the kernels whose name contains NAME.
//! Most kernels boot with the launcher's default 2 CPUs; the ones listed
//! in [`cpu_counts`] boot once per count, reported as `NAME@N`, and those
//! in [`mttcg_counts`] under multi-threaded TCG, as `NAME@N/mttcg`.
//! Two kernels run at a time (one QEMU per core).
//!
//! The `harness_*` kernels check this harness itself: each must FAIL in a
//! specific way (a panic, a CPU exception, a hang killed by the timeout, a
//! triple fault), and passes only if it is judged exactly so — with its
//! backtrace symbolized down to the function that failed.
//!
//! Prerequisites (QEMU, the kernel target) are checked once, before any
//! build: a missing QEMU is one line with the install command.

use launcher::{build_kernels, prereq, run, Accel, KernelImage, Machine, Outcome, Profile, Verdict};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(120);

/// How a kernel is expected to end.
enum Expect {
    Success,
    /// Fails with this verdict, and its output contains every one of these texts.
    Failure(fn(&Verdict) -> bool, &'static [&'static str]),
    /// Hangs and is killed after this timeout.
    Hang(Duration),
}

fn expectation(name: &str) -> Expect {
    match name {
        // The panic's location, and the backtrace symbolized down to the
        // function that panicked (frame pointers + the launcher's addr2line).
        "harness_panic" => Expect::Failure(|v| matches!(v, Verdict::Panic(_)), &["PANIC at tests/harness_panic.rs:11", "backtrace (most recent call first):", "harness_panic::main at tests/harness_panic.rs:11"]),
        "harness_trap" => Expect::Failure(
            |v| matches!(v, Verdict::Trap(t) if t.contains("page fault") && t.contains("CR2 0x5ead00000000")),
            &["#0 0x", " (RIP)  ", "harness_trap::read_unmapped at tests/harness_trap.rs:14"],
        ),
        "harness_triple_fault" => Expect::Failure(|v| *v == Verdict::TripleFault, &[]),
        // Locks are ranked (kernel/src/sync.rs): a reversed pair panics, naming both.
        "lock_order_reversed" => Expect::Failure(|v| matches!(v, Verdict::Panic(_)), &["lock order violated: taking the device (rank 3) lock while holding the IOMMU (rank 4) lock"]),
        "harness_hang" => Expect::Hang(Duration::from_secs(3)),
        _ => Expect::Success,
    }
}

/// The machine a kernel needs, if not the common one: the memory-pressure
/// kernels run in a small guest (so touching 4x its RAM stays fast) with
/// a swap disk sized for what they check.
fn machine_for(name: &str, common: &Machine) -> Machine {
    match name {
        "swap_pressure" => Machine { memory_mib: 64, disk_mib: 512, ..common.clone() },
        "swap_full" => Machine { memory_mib: 64, disk_mib: 32, ..common.clone() },
        // A tenth of the full 100,000 operations keeps `cargo test` within
        // minutes; the full run is in the README (`--cmdline` omitted).
        "smp_stress" => Machine { cmdline: "stress_ops=2500".into(), ..common.clone() },
        _ => common.clone(),
    }
}

/// The processor counts a kernel is booted with (each a separate run).
fn cpu_counts(name: &str) -> &'static [u8] {
    match name {
        // user_sched at 2 CPUs caught a vCPU starved by TCG's round-robin
        // under icount (see `sched::preempt_point`).
        "smp_boot" | "interrupts" | "lock_order_reversed" | "tlb_shootdown" | "user_sched" | "halted_clock" => &[1, 2, 4],
        // The races it exists for need CPUs: 4 (issue 16).
        "smp_stress" => &[4],
        "sched_races" => &[],
        _ => &[launcher::DEFAULT_CPUS],
    }
}

/// The processor counts a kernel is booted with under multi-threaded TCG
/// (`--accel mttcg`, reported as `NAME@N/mttcg`): the kernels whose races
/// need CPUs that really run at once. Under icount the vCPUs take turns and
/// `sched_races`' windows (tens of instructions) are almost never open.
fn mttcg_counts(name: &str) -> &'static [u8] {
    match name {
        "sched_races" | "smp_boot" => &[4],
        _ => &[],
    }
}

/// Whether `outcome` is what `expect` says.
fn judged_right(expect: &Expect, o: &Outcome) -> bool {
    match expect {
        Expect::Success => o.success(),
        Expect::Failure(verdict, texts) => verdict(&o.kind) && o.exit_code() != 0 && texts.iter().all(|t| o.output.contains(t)),
        Expect::Hang(_) => matches!(o.kind, Verdict::TimedOut(_)) && o.exit_code() == launcher::status::TIMEOUT,
    }
}

fn main() -> ExitCode {
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let start = Instant::now();
    // Once, before building anything.
    if let Err(e) = prereq::qemu() {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    if let Err(e) = prereq::ensure_kernel_target(&launcher::workspace_root(), &mut |s| eprintln!("note: {s}")) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let images = match build_kernels("test-kernels", None, Profile::Dev) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let images: Vec<KernelImage> =
        images.into_iter().filter(|k| filters.is_empty() || filters.iter().any(|f| k.name.contains(f.as_str()))).collect();
    println!("\nrunning {} test kernels", images.len());
    let machine = Machine { accel: Accel::Tcg { icount_shift: None }, ..Machine::default() };
    let runs: Vec<(KernelImage, u8, bool)> = images
        .into_iter()
        .flat_map(|k| {
            let icount = cpu_counts(&k.name).iter().map(|&n| (n, false));
            let mttcg = mttcg_counts(&k.name).iter().map(|&n| (n, true));
            icount.chain(mttcg).map(move |(n, m)| (k.clone(), n, m)).collect::<Vec<_>>()
        })
        .collect();
    let queue = Arc::new(Mutex::new(runs.into_iter()));
    let results = Arc::new(Mutex::new(Vec::<(String, Result<(bool, Outcome), String>)>::new()));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (queue, results, machine) = (queue.clone(), results.clone(), machine.clone());
            std::thread::spawn(move || loop {
                let Some((k, cpus, mttcg)) = queue.lock().unwrap().next() else { break };
                let expect = expectation(&k.name);
                let label = match (mttcg, cpu_counts(&k.name).len()) {
                    (true, _) => format!("{}@{cpus}/mttcg", k.name),
                    (false, n) if n > 1 => format!("{}@{cpus}", k.name),
                    _ => k.name.clone(),
                };
                let timeout = match expect {
                    Expect::Hang(t) => t,
                    // Swapping 4x the guest's RAM to disk takes a minute or two.
                    _ if k.name.starts_with("swap_") => TIMEOUT * 3,
                    // 10,000 operations, half of them device jobs.
                    _ if k.name == "smp_stress" => TIMEOUT * 5,
                    _ => TIMEOUT,
                };
                let mut m = Machine { cpus, ..machine_for(&k.name, &machine) };
                if mttcg {
                    m.accel = Accel::Mttcg;
                }
                let outcome = run(&k.path, &m, true, Some(timeout)).map_err(|e| e.to_string());
                let ok = matches!(&outcome, Ok(o) if judged_right(&expect, o));
                match &outcome {
                    Ok(o) if ok => println!("test {label} ... ok ({:.2} s; {})", o.wall.as_secs_f64(), o.verdict()),
                    _ => println!("test {label} ... FAILED"),
                }
                results.lock().unwrap().push((label, outcome.map(|o| (ok, o))));
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker thread");
    }
    let results = std::mem::take(&mut *results.lock().unwrap());
    let failed: Vec<_> = results.iter().filter(|(_, o)| !matches!(o, Ok((true, _)))).collect();
    for (name, outcome) in &failed {
        println!("\n---- {name} ----");
        match outcome {
            Ok((_, o)) => println!("{}\n{}", o.output, o.verdict()),
            Err(e) => println!("{e}"),
        }
    }
    let passed = results.len() - failed.len();
    let verdict = if failed.is_empty() { "ok" } else { "FAILED" };
    println!(
        "\ntest result: {verdict}. {passed} passed; {} failed; 0 ignored; 0 measured; 0 filtered out; finished in {:.2}s\n",
        failed.len(),
        start.elapsed().as_secs_f64()
    );
    if failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
