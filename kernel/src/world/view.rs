//! Console commands that look: page-table walks, mirror snapshots, stats.

use super::{pid, World};
use crate::hmmdev::accels;
use crate::shell::{fail, Args, Out, ShellError};
use x86_64::structures::paging::PageTableFlags as F;

const LEVEL_NAMES: [&str; 5] = ["", "PT  ", "PD  ", "PDPT", "PML4"];

pub fn walk(w: &mut World, a: &mut Args<'_>, out: Out<'_>) -> Result<(), ShellError> {
    let (id, addr) = (pid(a)?, a.number("addr")?);
    a.done()?;
    if addr >= crate::mm::USER_END {
        return Err(fail(alloc::format!("{addr:#x} is not a user address")));
    }
    let p = w.proc(id)?;
    let _ = writeln!(out, "walk of {addr:#x} in process {id} (PML4 at {:#x}):", p.aspace.pml4().start_address().as_u64());
    for (level, index, raw) in p.aspace.walk_levels(addr) {
        let flags = F::from_bits_truncate(raw);
        let _ = write!(out, "  {} [{index:3}] = {raw:#018x}", LEVEL_NAMES[level as usize]);
        if raw == 0 {
            let _ = writeln!(out, "  (empty: nothing mapped)");
        } else if !flags.contains(F::PRESENT) && flags.contains(F::BIT_9) {
            let _ = writeln!(out, "  swapped out, slot {}", raw >> 12);
        } else {
            let bit = |f: F, s: &'static str| if flags.contains(f) { s } else { "" };
            let _ = writeln!(
                out,
                "  -> {:#x} {}{}{}{}{}{}",
                raw & 0x000f_ffff_ffff_f000,
                bit(F::PRESENT, "P "),
                bit(F::WRITABLE, "W "),
                bit(F::USER_ACCESSIBLE, "U "),
                bit(F::ACCESSED, "A "),
                bit(F::DIRTY, "D "),
                if flags.contains(F::NO_EXECUTE) { "NX" } else { "X" }
            );
        }
    }
    Ok(())
}

pub fn mirror(_: &mut World, a: &mut Args<'_>, out: Out<'_>) -> Result<(), ShellError> {
    let i = a.number("accel")?;
    let (addr, pages) = (a.number("addr")?, a.number("pages")?);
    a.done()?;
    if pages == 0 || pages > 4096 {
        return Err(fail("<pages> is 1..=4096"));
    }
    let all = accels().map_err(fail)?;
    let acc = all.get(i as usize).ok_or_else(|| fail(alloc::format!("no accelerator {i}")))?.lock();
    let b = acc.binding().ok_or_else(|| fail(alloc::format!("accel{i} is not bound")))?;
    let r = hmm::VaRange::pages_from(addr & !0xfff, pages).map_err(fail)?;
    let entries = b.mirror.entries(r);
    let mut line = alloc::string::String::new();
    for va in r.page_addrs() {
        line.push(match entries.iter().find(|(v, _)| *v == va) {
            None if acc.fault_failed(va) => '!',
            None => '.',
            Some((_, l)) if l.exclusive => 'x',
            Some((_, l)) if l.dirty => 'd',
            Some((_, l)) if l.write => 'w',
            Some(_) => 'r',
        });
    }
    let _ = writeln!(out, "accel{i} mirror {:#x}.. ({} of {pages} pages mirrored):", r.start(), entries.len());
    for (k, chunk) in line.as_bytes().chunks(64).enumerate() {
        let _ = writeln!(out, "  {:#014x} {}", r.start() + k as u64 * 64 * 4096, core::str::from_utf8(chunk).unwrap_or(""));
    }
    Ok(())
}

pub fn stats(w: &mut World, a: &mut Args<'_>, out: Out<'_>) -> Result<(), ShellError> {
    a.done()?;
    let f = crate::mm::frames::stats();
    let _ = writeln!(out, "frames: {} free of {}", f.free, f.managed);
    let sw = crate::aspace::swap::SWAP.stats();
    let _ = writeln!(out, "swap: {} slots in use, {} slot writes, {} slot reads", sw.slots_in_use, sw.writes, sw.reads);
    for (id, p) in &w.procs {
        let s = p.hmm.mm.stats();
        let mirrored: usize = p.hmm.mm.mirrors().iter().map(|m| m.size().0).sum();
        let _ = writeln!(out, "process {id} HMM: {} device faults, {} retries, {} invalidations ({} driver updates, {} pages invalidated), {} pages mirrored over time, {} entries now", s.faults, s.retries, s.invalidations, s.driver_updates, s.pages_invalidated, s.pages_mirrored, mirrored);
    }
    if let Ok(all) = accels() {
        for acc in all {
            let acc = acc.lock();
            let s = acc.stats;
            let d = acc.driver();
            let _ = writeln!(
                out,
                "accel{}: {} jobs, {} transfers, {} faults resolved ({} failed), {} IOTLB flushes ({} invalidation commands){}",
                acc.index(),
                s.jobs,
                s.transfers,
                s.faults_resolved,
                s.faults_failed,
                d.flushes.load(core::sync::atomic::Ordering::Relaxed),
                d.iotlb_commands.load(core::sync::atomic::Ordering::Relaxed),
                if acc.binding().is_some() { "" } else { ", unbound" }
            );
        }
    }
    if let Ok(p) = crate::platform::init() {
        let s = p.iommu.lock().stats();
        let _ = writeln!(out, "VT-d: {} page-selective, {} domain, {} global IOTLB invalidations; {} context invalidations; {} faults recorded, {} overflows", s.page_invalidations, s.domain_invalidations, s.global_invalidations, s.context_invalidations, s.faults, s.overflows);
    }
    Ok(())
}
