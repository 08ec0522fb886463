//! In-guest benchmarks (`cargo run -- --bench`): device-fault resolution,
//! population and invalidation costs on the real device path, for 1, 16,
//! 512 and 4096-page ranges, prefault on and off, and the IOTLB
//! invalidation commands a munmap issues.
//!
//! The launcher boots this with `-icount shift=0`, so the guest TSC counts
//! instructions: the figures are instruction counts and repeat run to run.
//!
//! Besides the per-size table, [`whole_fault`] splits the cost of a 1-byte
//! device read that faults into its parts: the whole read that faults, the
//! same read once the page is mirrored (no fault), their difference (what a
//! fault adds), and of that the HMM resolution (`Mirror::fault`, as the job
//! code times it) vs the device/interrupt work (the failed DMA, its fault
//! record, the replay). The last block prints the issue-13 target figures
//! as a Markdown table between `readme-guest` markers, which
//! `scripts/bench-readme.sh` pastes into the README.

mod throughput;
mod tlb;

use crate::aspace::Prot;
use crate::cycles;
use crate::hmmdev::accels;
use crate::println;
use crate::platform::WAIT_CYCLES;
use crate::world::Process;
use core::sync::atomic::Ordering;
use hmm::VaRange;

const SIZES: [u64; 4] = [1, 16, 512, 4096];

struct Row {
    pages: u64,
    prefault: u64,
    faults: u64,
    fault_cycles: u64,
    populated: u64,
    munmap_cycles: u64,
    iotlb_commands: u64,
}

fn one(pages: u64, prefault: u64, slot: u64) -> Result<Row, &'static str> {
    one_with(pages, prefault, slot, true, hmm::PrefaultPolicy::Mirror)
}

/// `resident`: the CPU touched every page first; `policy`: what prefault
/// does with neighbours the CPU does not map.
fn one_with(pages: u64, prefault: u64, slot: u64, resident: bool, policy: hmm::PrefaultPolicy) -> Result<Row, &'static str> {
    let accs = accels()?;
    let p = Process::new().map_err(|_| "out of frames")?;
    p.hmm.mm.set_prefault(prefault);
    p.hmm.mm.set_prefault_policy(policy);
    // Naturally aligned for its size, so munmap can be one invalidation.
    let base = 0x100_0000_0000 + slot * 0x10_0000_0000;
    let r = p.aspace.mmap(Some(base), pages * 4096, Prot::READ | Prot::WRITE, true).map_err(|_| "mmap")?;
    // Resident on the CPU side first: we measure HMM, not demand-zero.
    if resident {
        touch(&p, r)?;
    }
    let mut acc = accs[0].lock();
    acc.bind(&p.hmm).map_err(|_| "bind")?;
    let before = acc.stats;
    for i in 0..pages {
        acc.read(r.start() + i * 4096, 1).map_err(|_| "device read")?;
    }
    let after = acc.stats;
    let cmds_before = acc.driver().iotlb_commands.load(Ordering::Relaxed);
    let (munmap_cycles, res) = cycles::measure(|| p.aspace.munmap(r.start(), pages * 4096));
    res.map_err(|_| "munmap")?;
    let iotlb_commands = acc.driver().iotlb_commands.load(Ordering::Relaxed) - cmds_before;
    acc.unbind();
    Ok(Row {
        pages,
        prefault,
        faults: after.faults_resolved - before.faults_resolved,
        fault_cycles: after.fault_cycles - before.fault_cycles,
        populated: after.pages_populated - before.pages_populated,
        munmap_cycles,
        iotlb_commands,
    })
}

/// Make every page of `r` resident (a CPU write per page).
fn touch(p: &Process, r: VaRange) -> Result<(), &'static str> {
    for va in r.page_addrs() {
        p.aspace.copy_to_user(va, &[1u8]).map_err(|_| "CPU touch")?;
    }
    Ok(())
}

/// Populate cost alone: one HMM fault over a whole resident range.
fn populate(pages: u64) -> Result<u64, &'static str> {
    let accs = accels()?;
    let p = Process::new().map_err(|_| "out of frames")?;
    p.hmm.mm.set_prefault(1);
    let r = p.aspace.mmap(None, pages * 4096, Prot::READ | Prot::WRITE, false).map_err(|_| "mmap")?;
    touch(&p, r)?;
    let mut acc = accs[1].lock();
    acc.bind(&p.hmm).map_err(|_| "bind")?;
    let b = acc.binding().ok_or("bind")?;
    let (c, res) = cycles::measure(|| b.mirror.fault(r.start(), pages, false));
    res.map_err(|_| "fault")?;
    // And the invalidation of exactly those pages (HMM + IOTLB only).
    let (ci, _) = cycles::measure(|| {
        let dirty = b.mm.invalidate_start(VaRange::pages_from(r.start(), pages).unwrap(), hmm::Event::Migrate, None);
        b.mm.invalidate_end(VaRange::pages_from(r.start(), pages).unwrap(), hmm::Event::Migrate);
        dirty
    });
    acc.unbind();
    println!("  {:>5} pages: populate {:>6} cycles/page, invalidate {:>6} cycles/page (one HMM fault / invalidation over the range)", pages, c / pages, ci / pages);
    Ok(c / pages)
}

/// Cycles of `f` minus the halted completion waits inside it: under icount,
/// the instructions the CPU ran (see `platform::accel::WAIT_CYCLES`).
fn busy<R>(f: impl FnOnce() -> R) -> (u64, R) {
    let w = WAIT_CYCLES.load(Ordering::Relaxed);
    let (c, r) = cycles::measure(f);
    (c - (WAIT_CYCLES.load(Ordering::Relaxed) - w), r)
}

/// Parts of a 1-byte device read that faults, averaged over `pages` pages
/// of a resident range (prefault off): (faulting read, non-faulting read,
/// HMM resolution, first fault's HMM resolution).
fn whole_fault(pages: u64, slot: u64) -> Result<(u64, u64, u64, u64), &'static str> {
    let accs = accels()?;
    let p = Process::new().map_err(|_| "out of frames")?;
    p.hmm.mm.set_prefault(1);
    let base = 0x100_0000_0000 + slot * 0x10_0000_0000;
    let r = p.aspace.mmap(Some(base), pages * 4096, Prot::READ | Prot::WRITE, true).map_err(|_| "mmap")?;
    touch(&p, r)?;
    let mut acc = accs[0].lock();
    acc.bind(&p.hmm).map_err(|_| "bind")?;
    let (mut faulting, mut clean, mut hmm, mut first) = (0, 0, 0, 0);
    for (i, va) in r.page_addrs().enumerate() {
        let before = acc.stats.fault_cycles;
        let (c, res) = busy(|| acc.read(va, 1));
        res.map_err(|_| "device read")?;
        let h = acc.stats.fault_cycles - before;
        if i == 0 {
            first = h;
        }
        faulting += c;
        hmm += h;
        let (c, res) = busy(|| acc.read(va, 1));
        res.map_err(|_| "device read")?;
        if acc.stats.fault_cycles != before + h {
            return Err("the second read faulted");
        }
        clean += c;
    }
    // `Mirror::fault` called directly (no job bookkeeping), the table path
    // present: every other page invalidated, then faulted again.
    let b = acc.binding().ok_or("bind")?;
    let odd: alloc::vec::Vec<u64> = r.page_addrs().skip(1).step_by(2).collect();
    for &va in &odd {
        let pg = VaRange::page_of(va).map_err(|_| "range")?;
        let _ = b.mm.invalidate_start(pg, hmm::Event::Migrate, None);
        b.mm.invalidate_end(pg, hmm::Event::Migrate);
    }
    let mut direct = 0;
    let st0 = b.mm.stats();
    for &va in &odd {
        let (c, res) = cycles::measure(|| b.mirror.fault(va, 1, false));
        res.map_err(|_| "fault")?;
        direct += c;
    }
    let st1 = b.mm.stats();
    let (get, _) = cycles::measure(|| b.mirror.get(odd[0]));
    let (inv, _) = cycles::measure(|| {
        let pg = VaRange::page_of(odd[0]).expect("page");
        let d = b.mm.invalidate_start(pg, hmm::Event::Migrate, None);
        b.mm.invalidate_end(pg, hmm::Event::Migrate);
        d
    });
    println!(
        "  Mirror::fault called directly on a resident page (table path present): {} instructions ({} faults, {} retries, {} pages mirrored); Mirror::get {get}; a 1-page HMM invalidation with its IOTLB flush {inv}",
        direct / odd.len() as u64,
        st1.faults - st0.faults,
        st1.retries - st0.retries,
        st1.pages_mirrored - st0.pages_mirrored
    );
    // A 16-page prefault window once the table path exists (the table row
    // above builds it: three 4 KiB nodes zeroed in its first fault).
    p.hmm.mm.set_prefault(hmm::DEFAULT_PREFAULT_PAGES);
    let win = VaRange::pages_from(r.start() + 16 * 4096, 16).map_err(|_| "range")?;
    let _ = b.mm.invalidate_start(win, hmm::Event::Migrate, None);
    b.mm.invalidate_end(win, hmm::Event::Migrate);
    let (c, res) = cycles::measure(|| b.mirror.fault(win.start(), 1, false));
    let n = res.map_err(|_| "fault")?.pages;
    p.hmm.mm.set_prefault(1);
    println!("  a 16-page prefault window with the table path present: {} instructions per page ({n} pages mirrored in one fault)", c / n.max(1));
    // The CPU side of a fault, alone: what `MirroredSpace::fault_in` and
    // `walk` cost on a resident page (the kernel's address-space code).
    let va = r.start() + 4096;
    let (fi, _) = cycles::measure(|| p.aspace.fault_in(va, false));
    let (wk, _) = cycles::measure(|| p.aspace.walk(va));
    let (ext, _) = cycles::measure(|| p.aspace.vma_at(va));
    println!("  CPU side on a resident page: AddressSpace::fault_in {fi}, walk {wk}, vma_at {ext} instructions");
    acc.unbind();
    Ok((faulting / pages, clean / pages, hmm / pages, first))
}

/// IOTLB commands one munmap of pages `[first, end)` of a mirrored range issues.
fn unaligned_munmap(first: u64, end: u64, slot: u64) -> Result<u64, &'static str> {
    let accs = accels()?;
    let p = Process::new().map_err(|_| "out of frames")?;
    p.hmm.mm.set_prefault(16);
    let base = 0x100_0000_0000 + slot * 0x10_0000_0000;
    let r = p.aspace.mmap(Some(base), (end + 1) * 4096, Prot::READ | Prot::WRITE, true).map_err(|_| "mmap")?;
    touch(&p, r)?;
    let mut acc = accs[0].lock();
    acc.bind(&p.hmm).map_err(|_| "bind")?;
    let b = acc.binding().ok_or("bind")?;
    for va in r.page_addrs().step_by(512) {
        b.mirror.fault(va, 1, false).map_err(|_| "fault")?;
    }
    let before = acc.driver().iotlb_commands.load(Ordering::Relaxed);
    p.aspace.munmap(base + first * 4096, (end - first) * 4096).map_err(|_| "munmap")?;
    let cmds = acc.driver().iotlb_commands.load(Ordering::Relaxed) - before;
    acc.unbind();
    Ok(cmds)
}

fn target_row(name: &str, now: u64, target: u64, unit: &str) {
    let verdict = if now <= target { "met" } else { "missed" };
    println!("| {name} | {} | ≤ {} {unit} | {verdict} |", thousands(now), thousands(target));
}

fn thousands(n: u64) -> alloc::string::String {
    let s = alloc::format!("{n}");
    let mut out = alloc::string::String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn run() -> bool {
    // `--cmdline bench=throughput`: that table alone (e.g. under `--accel mttcg`).
    if crate::cmdline::get(crate::boot_info().cmdline(), "bench") == Some("throughput") {
        return throughput::run();
    }
    let exact = cycles::icount_shift() == Some(0);
    println!("\n== hmmos in-guest benchmarks ==");
    println!("cycles are {}", if exact { "instructions (icount shift=0: exact and repeatable)" } else { "TSC ticks (not instruction-exact: use cargo run -- --bench)" });
    println!("\ndevice faults on the real path (edu DMA → VT-d fault record → HMM fault → replay), one 1-byte read per page:");
    println!("{:>6} {:>9} {:>7} {:>12} {:>12} {:>14} {:>10}", "pages", "prefault", "faults", "cyc/fault", "cyc/page", "munmap cyc/pg", "IOTLB cmds");
    let mut slot = 0;
    let mut ok = true;
    let mut rows = alloc::vec::Vec::new();
    for prefault in [1u64, hmm::DEFAULT_PREFAULT_PAGES] {
        for &n in &SIZES {
            slot += 1;
            match one(n, prefault, slot) {
                Ok(r) => rows.push(r),
                Err(e) => {
                    println!("{n:>6} pages: failed: {e}");
                    ok = false;
                    continue;
                }
            }
            let r = rows.last().expect("pushed");
            println!(
                    "{:>6} {:>9} {:>7} {:>12} {:>12} {:>14} {:>10}",
                    r.pages,
                    if r.prefault == 1 { "off".into() } else { alloc::format!("{}", r.prefault) },
                    r.faults,
                    r.fault_cycles / r.faults.max(1),
                    r.fault_cycles / r.populated.max(1),
                    r.munmap_cycles / r.pages,
                    r.iotlb_commands
            );
        }
    }
    println!("\nfresh (never touched) pages, prefault 16: the default policy faults in only what the device touches; `populate` read-faults the window:");
    for (name, policy) in [("mirror", hmm::PrefaultPolicy::Mirror), ("populate", hmm::PrefaultPolicy::Populate)] {
        slot += 1;
        match one_with(512, 16, slot, false, policy) {
            Ok(r) => println!("  512 pages, {name:>8}: {:>4} faults, {:>7} cyc/fault, {:>6} cyc/page populated", r.faults, r.fault_cycles / r.faults.max(1), r.fault_cycles / r.populated.max(1)),
            Err(e) => {
                println!("  512 pages, {name}: failed: {e}");
                ok = false;
            }
        }
    }
    println!("\nHMM alone:");
    let mut one_round = alloc::vec::Vec::new();
    for &n in &SIZES {
        match populate(n) {
            Ok(c) => one_round.push((n, c)),
            Err(_) => ok = false,
        }
    }
    println!("\nthe whole cost of a 1-byte device read (64 resident pages, prefault off, per page):");
    let Ok((faulting, clean, hmm, first)) = whole_fault(64, slot + 1) else {
        println!("  failed");
        return false;
    };
    let marginal = faulting.saturating_sub(clean);
    println!("  (instructions outside the halted completion waits; a transfer's wait loop and interrupt are not counted)");
    println!("  read that faults {faulting}, read that does not {clean}: a fault adds {marginal}");
    println!("  of which HMM resolution (Mirror::fault) {hmm} (the range's first fault, building the table path: {first}), device/interrupt work {}", marginal.saturating_sub(hmm));
    let unaligned = unaligned_munmap(3, 4099, slot + 2);
    println!("  munmap of pages [3, 4099) of a mirrored range: {} IOTLB commands", unaligned.map_or("failed".into(), |c| alloc::format!("{c}")));
    let row = |n: u64, pf: u64| rows.iter().find(|r| r.pages == n && r.prefault == pf);
    let max_cmds = rows.iter().map(|r| r.iotlb_commands).chain(unaligned.ok()).max().unwrap_or(0);
    println!("\n<!-- readme-guest:begin -->");
    println!("| figure | now | target | |");
    println!("|---|---:|---:|---|");
    target_row("HMM resolution of a 1-page fault (mean of 64)", hmm, 600, "instr");
    target_row("marginal cost of a fault on a 1-byte device read", marginal, 1_200, "instr");
    if let Some(r) = row(16, 16) {
        target_row("per page, 16-page prefault window", r.fault_cycles / r.populated.max(1), 150, "instr");
    }
    if let Some(&(_, c)) = one_round.iter().find(|(n, _)| *n == 512) {
        target_row("per page, a 512-page present range in one round", c, 100, "instr");
    }
    if let Some(r) = row(1, 1) {
        target_row("1-page munmap of a mirrored page", r.munmap_cycles, 2_500, "instr");
    }
    if let Some(r) = row(4096, 1) {
        target_row("bulk munmap per page (4,096 pages)", r.munmap_cycles / r.pages, 100, "instr");
    }
    target_row("IOTLB commands for one munmap (any size above, and pages [3, 4099))", max_cmds, 2, "commands");
    println!("<!-- readme-guest:end -->");
    let tlb = tlb::run();
    let throughput = throughput::run();
    ok && unaligned.is_ok() && tlb && throughput
}
