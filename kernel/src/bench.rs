//! In-guest benchmarks (`cargo run -- --bench`): device-fault resolution,
//! population and invalidation costs on the real device path, for 1, 16,
//! 512 and 4096-page ranges, prefault on and off, and the IOTLB
//! invalidation commands a munmap issues.
//!
//! The launcher boots this with `-icount shift=0`, so the guest TSC counts
//! instructions: the figures are instruction counts and repeat run to run.
//! Targets (informational here; the numbers go in the README): ≤ 5,000
//! instructions per 4 KiB device fault resolved, ≤ 1,000 per page with a
//! 16-page prefault, one page-selective invalidation per munmap of an
//! aligned 2^k-page range.

use crate::aspace::Prot;
use crate::cycles;
use crate::hmmdev::accels;
use crate::println;
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

pub fn run() -> bool {
    let exact = cycles::icount_shift() == Some(0);
    println!("\n== hmmos in-guest benchmarks ==");
    println!("cycles are {}", if exact { "instructions (icount shift=0: exact and repeatable)" } else { "TSC ticks (not instruction-exact: use cargo run -- --bench)" });
    println!("\ndevice faults on the real path (edu DMA → VT-d fault record → HMM fault → replay), one 1-byte read per page:");
    println!("{:>6} {:>9} {:>7} {:>12} {:>12} {:>14} {:>10}", "pages", "prefault", "faults", "cyc/fault", "cyc/page", "munmap cyc/pg", "IOTLB cmds");
    let mut slot = 0;
    let mut ok = true;
    for prefault in [1u64, hmm::DEFAULT_PREFAULT_PAGES] {
        for &n in &SIZES {
            slot += 1;
            match one(n, prefault, slot) {
                Ok(r) => println!(
                    "{:>6} {:>9} {:>7} {:>12} {:>12} {:>14} {:>10}",
                    r.pages,
                    if r.prefault == 1 { "off".into() } else { alloc::format!("{}", r.prefault) },
                    r.faults,
                    r.fault_cycles / r.faults.max(1),
                    r.fault_cycles / r.populated.max(1),
                    r.munmap_cycles / r.pages,
                    r.iotlb_commands
                ),
                Err(e) => {
                    println!("{n:>6} pages: failed: {e}");
                    ok = false;
                }
            }
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
    for &n in &SIZES {
        if populate(n).is_err() {
            ok = false;
        }
    }
    ok
}
