//! Device-fault throughput with 1, 2 and 4 CPUs (`cargo run -- --bench`).
//!
//! For k = 1, 2, 4: k worker tasks pinned on CPUs 0..k, each with its own
//! process, address space and context (mirror) on accelerator `i % 2`
//! (workers i and i + 2 share one), run a fixed number of 1-byte device
//! reads over fresh resident pages — with prefault off every read faults
//! (edu DMA → VT-d fault record → HMM → replay); with the default prefault
//! one fault mirrors a window. The "HMM alone" rows have the workers call
//! `Mirror::fault` (the fault round the device path runs) on their own
//! mirrors directly, no DMA: what SMP costs the resolution without the
//! 100 ms device.
//!
//! # What the clock can show
//! Under `-icount shift=0,sleep=off` QEMU runs the vCPUs in turns on one
//! host thread and the virtual clock — TSC, LAPIC timer and PIT alike —
//! advances one nanosecond per instruction of *any* CPU, and warps to the
//! next timer deadline when every CPU is halted. So more CPUs cannot run
//! more instructions per virtual second: the figures at k CPUs show what
//! SMP *costs* (IPIs, shootdowns, lock hand-offs, wake-ups across CPUs),
//! never a parallel speed-up. Busy instructions are `elapsed TSC − time
//! every CPU was halted` (`sched::halted`); the idle machine's own share
//! (every CPU's 100 Hz tick) is measured first and shown per fault.
//! edu completes a DMA 100 ms of virtual time after it starts, and a job
//! holds its accelerator, so the device rows are bounded by two
//! accelerators × 10 DMAs per virtual second, whatever k.
//!
//! Under `--accel mttcg` (no icount: the virtual clock is the host's, the
//! TSC the host's counter, calibrated here against the LAPIC tick) the
//! CPUs run in parallel on host threads, and the HMM-alone rows show real
//! scaling or contention in wall time; instruction counts are then not
//! exact and are not printed.
//!
//! # Protocol
//! The coordinator (the bench's task on CPU 0) spawns the workers; each
//! sets up (outside the measurement), counts itself ready and blocks until
//! [`PHASE`] reaches 1. The coordinator takes the start snapshot, raises
//! the phase and wakes them; the last worker to finish takes the end
//! snapshot and wakes the coordinator; phase 2 lets the workers tear down.
//! A worker that fails still counts itself ready and done, so nobody
//! waits for it forever.

use crate::aspace::Prot;
use crate::cpus::{self, CpuId};
use crate::hmmdev::accels;
use crate::mm::shootdown;
use crate::sched::{self, TaskId};
use crate::world::Process;
use crate::{cycles, irq, println};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use hmm::VaRange;
use spin::Mutex;
use x86_64::instructions::interrupts;

const WORKERS: [usize; 3] = [1, 2, 4];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `jobs` 1-byte device reads, one per page, with this prefault.
    Device { prefault: u64, jobs: u64 },
    /// `rounds` × (`pages` 1-page `Mirror::fault`s, then one invalidation
    /// of the whole range).
    Hmm { pages: u64, rounds: u64 },
}

#[derive(Clone, Copy, Default)]
struct Tally {
    jobs: u64,
    faults: u64,
    pages: u64,
    retries: u64,
    context_switches: u64,
    failed: Option<&'static str>,
}

#[derive(Clone, Copy, Default)]
struct Snap {
    tsc: u64,
    halted: u64,
    resched_ipis: u64,
    shootdown_ipis: u64,
    ticks: u64,
    switches: u64,
}

impl Snap {
    fn now() -> Snap {
        Snap {
            tsc: cycles::now(),
            halted: sched::halted::all_halted_cycles(),
            resched_ipis: irq::ipi_counts().0,
            shootdown_ipis: shootdown::stats().ipis,
            ticks: cpus::online().iter().map(irq::cpu_ticks).sum(),
            switches: sched::totals().0,
        }
    }
}

static PLAN: Mutex<Option<(Kind, usize)>> = Mutex::new(None);
static PHASE: AtomicU64 = AtomicU64::new(0);
static READY: AtomicUsize = AtomicUsize::new(0);
static DONE: AtomicUsize = AtomicUsize::new(0);
static ALIVE: AtomicUsize = AtomicUsize::new(0);
static COORDINATOR: Mutex<Option<TaskId>> = Mutex::new(None);
static END: Mutex<Option<Snap>> = Mutex::new(None);
static TALLY: Mutex<Vec<Tally>> = Mutex::new(Vec::new());

/// Block until `cond` holds; the waker sets it, then `sched::wake`s us.
fn block_until(cond: impl Fn() -> bool) {
    loop {
        interrupts::disable();
        if cond() {
            break;
        }
        sched::block();
    }
    interrupts::enable();
}

/// Poll (outside the measurements) until `cond` holds or `ticks` pass.
fn poll_until(ticks: u64, cond: impl Fn() -> bool) -> bool {
    let t0 = sched::ticks();
    while !cond() {
        if sched::ticks() - t0 > ticks {
            return false;
        }
        sched::sleep_ms(1);
    }
    true
}

/// One worker's process, range and context.
struct Setup {
    p: Process,
    range: VaRange,
    accel: usize,
    ctx: crate::hmmdev::ContextId,
}

fn setup(i: usize, kind: Kind) -> Result<Setup, &'static str> {
    let accs = accels()?;
    let p = Process::new().map_err(|_| "out of frames")?;
    let (pages, prefault) = match kind {
        Kind::Device { prefault, jobs } => (jobs, prefault),
        Kind::Hmm { pages, .. } => (pages, 1),
    };
    p.hmm.mm.set_prefault(prefault);
    let range = p.aspace.mmap(None, pages * 4096, Prot::READ | Prot::WRITE, false).map_err(|_| "mmap")?;
    for va in range.page_addrs() {
        p.aspace.copy_to_user(va, &[1u8]).map_err(|_| "CPU touch")?;
    }
    let accel = i % accs.len();
    let ctx = accs[accel].lock().add_context(&p.hmm, hmm::MirrorAccess::ReadWrite).map_err(|_| "add context")?;
    Ok(Setup { p, range, accel, ctx })
}

fn measured(s: &Setup, kind: Kind) -> Tally {
    let mut t = Tally::default();
    let accs = match accels() {
        Ok(a) => a,
        Err(e) => return Tally { failed: Some(e), ..t },
    };
    let retries0 = s.p.hmm.mm.stats().retries;
    match kind {
        Kind::Device { .. } => {
            for va in s.range.page_addrs() {
                let mut acc = accs[s.accel].lock();
                if acc.select(s.ctx).is_err() {
                    t.failed = Some("select");
                    break;
                }
                let before = acc.stats;
                if acc.read(va, 1).is_err() {
                    t.failed = Some("device read");
                    break;
                }
                let after = acc.stats;
                t.jobs += 1;
                t.faults += after.faults_resolved - before.faults_resolved;
                t.pages += after.pages_populated - before.pages_populated;
                t.context_switches += after.context_switches - before.context_switches;
            }
        }
        Kind::Hmm { rounds, .. } => {
            let mirror = {
                let acc = accs[s.accel].lock();
                acc.contexts().iter().find(|c| c.id == s.ctx).map(|c| c.mirror.clone())
            };
            let Some(mirror) = mirror else {
                return Tally { failed: Some("context gone"), ..t };
            };
            'rounds: for _ in 0..rounds {
                for va in s.range.page_addrs() {
                    match mirror.fault(va, 1, false) {
                        Ok(out) => {
                            t.faults += 1;
                            t.pages += out.pages;
                        }
                        Err(_) => {
                            t.failed = Some("fault");
                            break 'rounds;
                        }
                    }
                }
                // Gone again from the mirror (not from the CPU): the next
                // round faults every page anew.
                s.p.hmm.mm.invalidate_start_with(s.range, hmm::Event::Migrate, None, &mut |_| {});
                s.p.hmm.mm.invalidate_end(s.range, hmm::Event::Migrate);
            }
        }
    }
    t.retries = s.p.hmm.mm.stats().retries - retries0;
    t
}

fn finish_one() {
    let k = PLAN.lock().map_or(0, |(_, k)| k);
    if DONE.fetch_add(1, Ordering::SeqCst) + 1 == k {
        *END.lock() = Some(Snap::now());
        let coordinator = *COORDINATOR.lock();
        if let Some(id) = coordinator {
            sched::wake(id);
        }
    }
}

fn worker(i: u64) {
    let Some((kind, _)) = *PLAN.lock() else { return };
    let s = setup(i as usize, kind);
    READY.fetch_add(1, Ordering::SeqCst);
    block_until(|| PHASE.load(Ordering::SeqCst) >= 1);
    let t = match &s {
        // Phase 2 at once: the coordinator gave up waiting for the others.
        _ if PHASE.load(Ordering::SeqCst) >= 2 => Tally { failed: Some("abandoned"), ..Tally::default() },
        Ok(s) => measured(s, kind),
        Err(e) => Tally { failed: Some(e), ..Tally::default() },
    };
    TALLY.lock().push(t);
    finish_one();
    block_until(|| PHASE.load(Ordering::SeqCst) >= 2);
    if let (Ok(s), Ok(accs)) = (s, accels()) {
        let _ = accs[s.accel].lock().remove_context(s.ctx);
        drop(s.p);
    }
    ALIVE.fetch_sub(1, Ordering::SeqCst);
}

/// The figures of one row.
struct Row {
    tally: Tally,
    /// TSC cycles from the start to the last worker's end.
    elapsed: u64,
    halted: u64,
    resched_ipis: u64,
    shootdown_ipis: u64,
    ticks: u64,
    /// Task switches on all CPUs (each a wake-up or a park).
    switches: u64,
}

fn run_row(kind: Kind, k: usize) -> Result<Row, &'static str> {
    let online: Vec<CpuId> = cpus::online().iter().collect();
    if online.len() < k {
        return Err("not enough CPUs");
    }
    *PLAN.lock() = Some((kind, k));
    PHASE.store(0, Ordering::SeqCst);
    READY.store(0, Ordering::SeqCst);
    DONE.store(0, Ordering::SeqCst);
    ALIVE.store(k, Ordering::SeqCst);
    *END.lock() = None;
    TALLY.lock().clear();
    *COORDINATOR.lock() = Some(sched::current().id);
    let mut tasks: Vec<Arc<sched::Task>> = Vec::new();
    for (i, &c) in online.iter().take(k).enumerate() {
        match sched::spawn_kernel(alloc::format!("tput{i}"), worker, i as u64, Some(c)) {
            Ok(t) => tasks.push(t),
            Err(_) => {
                ALIVE.fetch_sub(1, Ordering::SeqCst);
                DONE.fetch_add(1, Ordering::SeqCst);
                READY.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
    let wake_all = |phase: u64| {
        PHASE.store(phase, Ordering::SeqCst);
        for t in &tasks {
            sched::wake(t.id);
        }
    };
    if !poll_until(6_000, || READY.load(Ordering::SeqCst) == k) {
        // Those that started tear down without measuring.
        wake_all(2);
        poll_until(6_000, || ALIVE.load(Ordering::SeqCst) == 0);
        *COORDINATOR.lock() = None;
        return Err("workers did not start");
    }
    let start = Snap::now();
    wake_all(1);
    block_until(|| DONE.load(Ordering::SeqCst) == k);
    let end = END.lock().take().unwrap_or_else(Snap::now);
    wake_all(2);
    let torn_down = poll_until(6_000, || ALIVE.load(Ordering::SeqCst) == 0);
    *COORDINATOR.lock() = None;
    let mut tally = Tally::default();
    for t in TALLY.lock().iter() {
        tally.jobs += t.jobs;
        tally.faults += t.faults;
        tally.pages += t.pages;
        tally.retries += t.retries;
        tally.context_switches += t.context_switches;
        tally.failed = tally.failed.or(t.failed);
    }
    if let Some(e) = tally.failed {
        return Err(e);
    }
    if !torn_down {
        return Err("workers did not finish");
    }
    Ok(Row {
        tally,
        elapsed: end.tsc - start.tsc,
        halted: end.halted - start.halted,
        resched_ipis: end.resched_ipis - start.resched_ipis,
        shootdown_ipis: end.shootdown_ipis - start.shootdown_ipis,
        ticks: end.ticks - start.ticks,
        switches: end.switches - start.switches,
    })
}

/// `n / d` with two decimals.
fn ratio(n: u64, d: u64) -> alloc::string::String {
    if d == 0 {
        return "-".into();
    }
    let h = n.saturating_mul(100) / d;
    alloc::format!("{}.{:02}", h / 100, h % 100)
}

/// A rate: two decimals below 100, else whole with thousands separators.
fn rate(n: u64, per: u64, d: u64) -> alloc::string::String {
    let x = n.saturating_mul(per) / d.max(1);
    if x >= 100 { super::thousands(x) } else { ratio(n.saturating_mul(per), d) }
}

/// Idle machine: (TSC cycles per second, busy TSC cycles per second), from
/// 1 s of sleep measured against the boot CPU's LAPIC tick.
fn calibrate() -> (u64, u64) {
    sched::sleep_ms(10); // start on a tick
    let t0 = sched::ticks();
    let s0 = Snap::now();
    sched::sleep_ms(1_000);
    let s1 = Snap::now();
    let ticks = (sched::ticks() - t0).max(1);
    let us = ticks * sched::TICK_US;
    let hz = (s1.tsc - s0.tsc) * 1_000_000 / us;
    let busy = (s1.tsc - s0.tsc).saturating_sub(s1.halted - s0.halted) * 1_000_000 / us;
    (hz, busy)
}

pub(super) fn run() -> bool {
    sched::init();
    let exact = cycles::icount_shift() == Some(0);
    let ncpu = cpus::online().len();
    let (hz, idle_busy) = calibrate();
    println!("\ndevice-fault throughput at 1, 2 and 4 CPUs (workers pinned on CPUs 0..k, worker i on accelerator i mod 2, own process each):");
    if exact {
        println!("  icount shift=0: the TSC, the LAPIC timer and the PIT all run on QEMU's one virtual clock, which advances 1 ns per instruction of any CPU");
        println!("  and warps to the next timer when every CPU halts (TSC: {} MHz against the tick). So these figures show what SMP costs, not a speed-up.", hz / 1_000_000);
        println!("  idle machine ({ncpu} CPUs, 100 Hz ticks each): {} busy instructions per virtual second", super::thousands(idle_busy));
    } else {
        println!("  no exact icount: the TSC counts host time ({} MHz, calibrated against 100 LAPIC ticks); figures below are wall-clock, instruction counts are not exact", hz / 1_000_000);
    }
    let (jobs, prefault_jobs, rounds) = if exact { (32, 64, 4) } else { (8, 16, 256) };
    let mut rows: Vec<(&str, Kind, usize, Row)> = Vec::new();
    let mut ok = true;
    let kinds = [
        ("device, prefault off", Kind::Device { prefault: 1, jobs }),
        ("device, prefault 16", Kind::Device { prefault: hmm::DEFAULT_PREFAULT_PAGES, jobs: prefault_jobs }),
        ("HMM alone", Kind::Hmm { pages: 512, rounds }),
    ];
    for (name, kind) in kinds {
        for k in WORKERS {
            if k > ncpu {
                continue;
            }
            match run_row(kind, k) {
                Ok(r) => {
                    println!(
                        "  {name}, {k} CPU(s): {} jobs, {} faults, {} pages, {} context switches, {} TSC cycles ({} all halted), {} timer ticks and {} task switches on all CPUs, {} + {} IPIs, {} retries",
                        r.tally.jobs, r.tally.faults, r.tally.pages, r.tally.context_switches, r.elapsed, r.halted, r.ticks, r.switches, r.resched_ipis, r.shootdown_ipis, r.tally.retries
                    );
                    rows.push((name, kind, k, r));
                }
                Err(e) => {
                    println!("  {name}, {k} CPU(s): failed: {e}");
                    ok = false;
                }
            }
        }
    }
    let ms = |cycles: u64| cycles.saturating_mul(1_000) / hz.max(1);
    println!("\n<!-- readme-throughput:begin -->");
    let clock = if exact { "virtual" } else { "wall" };
    println!("| path | CPUs | jobs | faults | pages mirrored | {clock} ms | of it all CPUs halted | faults / {clock} s | pages / {clock} s | busy instructions / fault | of it idle ticks | task switches / fault | IPIs / fault (resched + shootdown) | retries |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|");
    for (name, kind, k, r) in &rows {
        let t = &r.tally;
        let busy = r.elapsed.saturating_sub(r.halted);
        let idle = idle_busy.saturating_mul(r.elapsed) / hz.max(1);
        let jobs = if matches!(kind, Kind::Device { .. }) { super::thousands(t.jobs) } else { "-".into() };
        let (per_fault, idle_per_fault) = if exact { (super::thousands(busy / t.faults.max(1)), super::thousands(idle / t.faults.max(1))) } else { ("n/a".into(), "n/a".into()) };
        println!(
            "| {name} | {k} | {jobs} | {} | {} | {} | {} | {} | {} | {per_fault} | {idle_per_fault} | {} | {} ({} + {}) | {} |",
            super::thousands(t.faults),
            super::thousands(t.pages),
            super::thousands(ms(r.elapsed)),
            super::thousands(ms(r.halted)),
            rate(t.faults, hz, r.elapsed),
            rate(t.pages, hz, r.elapsed),
            ratio(r.switches, t.faults),
            ratio(r.resched_ipis + r.shootdown_ipis, t.faults),
            ratio(r.resched_ipis, t.faults),
            ratio(r.shootdown_ipis, t.faults),
            t.retries
        );
    }
    println!("<!-- readme-throughput:end -->");
    ok
}
