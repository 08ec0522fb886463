//! Console commands that look: page-table walks (the CPU's, and the CPU's
//! beside the device's), mirror snapshots, stats, and the log level.

use super::{pid, World};
use crate::hmmdev::accels;
use x86_64::structures::paging::PhysFrame;
use x86_64::PhysAddr;
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

/// `<accel>[/<pid>] <addr> <pages>` of a per-page view: the accelerator
/// with the context selected, and the (at most 4,096) pages.
fn page_view(w: &World, a: &mut Args<'_>) -> Result<(crate::sync::RankedGuard<'static, crate::hmmdev::HmmAccel>, hmm::VaRange), ShellError> {
    let acc = super::dev::job_accel(w, a)?;
    let (addr, pages) = (a.number("addr")?, a.number("pages")?);
    a.done()?;
    if pages == 0 || pages > 4096 {
        return Err(fail("<pages> is 1..=4096"));
    }
    if acc.binding().is_none() {
        return Err(fail(alloc::format!("accel{} is not bound", acc.index())));
    }
    let r = hmm::VaRange::pages_from(addr & !0xfff, pages).map_err(fail)?;
    Ok((acc, r))
}

/// One character per page, 64 pages a line.
fn print_pages(out: Out<'_>, start: u64, line: &str) {
    for (k, chunk) in line.as_bytes().chunks(64).enumerate() {
        let _ = writeln!(out, "  {:#014x} {}", start + k as u64 * 64 * 4096, core::str::from_utf8(chunk).unwrap_or(""));
    }
}

pub fn mirror(w: &mut World, a: &mut Args<'_>, out: Out<'_>) -> Result<(), ShellError> {
    let (acc, r) = page_view(w, a)?;
    let b = acc.binding().ok_or_else(|| fail("internal: no context"))?;
    let entries = b.mirror.entries(r); // in address order
    let mut next = entries.iter().peekable();
    let mut line = alloc::string::String::new();
    for va in r.page_addrs() {
        let leaf = next.next_if(|(v, _)| *v == va).map(|(_, l)| l);
        line.push(match leaf {
            None if acc.fault_failed(va) => '!',
            None => '.',
            Some(l) if l.exclusive => 'x',
            Some(l) if l.dirty => 'd',
            Some(l) if l.write => 'w',
            Some(_) => 'r',
        });
    }
    let _ = writeln!(out, "accel{} mirror {:#x}.. ({} of {} pages mirrored):", acc.index(), r.start(), entries.len(), r.pages());
    print_pages(out, r.start(), &line);
    Ok(())
}

/// `snapshot <accel>[/<pid>] <addr> <pages>`: what the device would see
/// at each page right now, faulting nothing (see `hmm::PageView::symbol`).
pub fn snapshot(w: &mut World, a: &mut Args<'_>, out: Out<'_>) -> Result<(), ShellError> {
    let (acc, r) = page_view(w, a)?;
    let b = acc.binding().ok_or_else(|| fail("internal: no context"))?;
    let mut line = alloc::string::String::new();
    b.mirror.snapshot(r, &mut |v| line.push(v.symbol())).map_err(|k| fail(alloc::format!("{:?}", k)))?;
    let _ = writeln!(out, "accel{} {} snapshot {:#x}.. ({} pages; - hole  n no access  . absent  0 zero page  r/w present  s swapped  x exclusive; upper case = mirrored now):", acc.index(), b.id, r.start(), r.pages());
    print_pages(out, r.start(), &line);
    Ok(())
}

pub fn stats(w: &mut World, a: &mut Args<'_>, out: Out<'_>) -> Result<(), ShellError> {
    a.done()?;
    let f = crate::mm::frames::stats();
    let _ = writeln!(out, "frames: {} free of {}", f.free, f.managed);
    let t = crate::mm::shootdown::stats();
    let _ = writeln!(out, "TLB: {} shootdown rounds, {} IPIs sent, {} local flushes, {} remote flushes", t.rounds, t.ipis, t.local_flushes, t.remote_flushes);
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
                "accel{}: {} jobs, {} transfers, {} faults resolved ({} failed), {} IOTLB flushes ({} invalidation commands); {} contexts, {} context switches; fault rounds per job {}{}",
                acc.index(),
                s.jobs,
                s.transfers,
                s.faults_resolved,
                s.faults_failed,
                d.flushes.load(core::sync::atomic::Ordering::Relaxed),
                d.iotlb_commands.load(core::sync::atomic::Ordering::Relaxed),
                acc.contexts().len(),
                s.context_switches,
                match s.jobs {
                    0 => alloc::string::String::from("-"),
                    j => alloc::format!("{}.{:02}", s.fault_rounds() / j, s.fault_rounds().saturating_mul(100) / j % 100),
                },
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

/// Permission bits of a CPU entry, in words.
fn cpu_perms(raw: u64) -> alloc::string::String {
    let flags = F::from_bits_truncate(raw);
    let mut s = alloc::string::String::new();
    for (f, name) in [(F::PRESENT, "P"), (F::WRITABLE, "W"), (F::USER_ACCESSIBLE, "U"), (F::ACCESSED, "A"), (F::DIRTY, "D")] {
        if flags.contains(f) {
            s.push_str(name);
            s.push(' ');
        }
    }
    s.push_str(if flags.contains(F::NO_EXECUTE) { "NX" } else { "X" });
    s
}

/// Permission bits of a VT-d second-level entry (bit 0 R, bit 1 W; HMM's
/// software bits 52 dirty, 53 exclusive, which the IOMMU ignores).
fn vtd_perms(raw: u64, leaf: bool) -> alloc::string::String {
    let mut s = alloc::string::String::new();
    s.push_str(if raw & 1 != 0 { "R" } else { "-" });
    s.push_str(if raw & 2 != 0 { " W" } else { " -" });
    if leaf && raw & (1 << 52) != 0 {
        s.push_str(" dirty");
    }
    if leaf && raw & (1 << 53) != 0 {
        s.push_str(" exclusive");
    }
    s
}

/// One entry of a VT-d table page, read through the direct map.
fn read_entry(table: u64, index: usize) -> u64 {
    let mut b = [0u8; 8];
    crate::mm::direct::read_frame(PhysFrame::containing_address(PhysAddr::new(table)), index * 8, &mut b);
    u64::from_le_bytes(b)
}

/// `walk2 <accel> <addr>`: the CPU's 4-level walk of the bound process and
/// the device's VT-d second-level walk of the same address, level by level.
/// Both tables split the 48-bit address the same way (9 bits a level), so
/// the indices match; a mirrored page ends at the same frame on both sides,
/// each with its own permissions.
pub fn walk2(w: &mut World, a: &mut Args<'_>, out: Out<'_>) -> Result<(), ShellError> {
    let acc = super::dev::job_accel(w, a)?;
    let i = acc.index();
    let addr = a.number("addr")?;
    a.done()?;
    if addr >= crate::mm::USER_END {
        return Err(fail(alloc::format!("{addr:#x} is not a user address")));
    }
    let b = acc.binding().ok_or_else(|| fail(alloc::format!("accel{i} is not bound (bind <accel> <pid>)")))?;
    let (id, p) = w
        .procs
        .iter()
        .find(|(_, p)| alloc::sync::Arc::ptr_eq(&p.hmm.mm, &b.mm))
        .ok_or_else(|| fail(alloc::format!("accel{i} mirrors a process the console no longer has")))?;
    let root = b.mirror.root().as_u64();
    let _ = writeln!(out, "walk of {addr:#x}: CPU = process {id} (CR3 -> PML4 at {:#x}) | accel{i} = VT-d {} (context entry -> SLPTPTR {root:#x}, the mirror table)", p.aspace.pml4().start_address().as_u64(), b.domain);
    let _ = writeln!(out, "  level [idx]  {:<50} | VT-d entry          next/frame      perms", "CPU entry           next/frame      perms");
    let cpu = p.aspace.walk_levels(addr);
    let mut dev_table = Some(root);
    let (mut cpu_frame, mut dev_frame) = (None, None);
    for level in (1..=4u8).rev() {
        let index = ((addr >> (12 + 9 * (level as u64 - 1))) & 0x1ff) as usize;
        let leaf = level == 1;
        let cpu_cell = match cpu.iter().find(|(l, _, _)| *l == level) {
            Some(&(_, _, raw)) if raw & 1 != 0 => {
                let next = raw & 0x000f_ffff_ffff_f000;
                if leaf {
                    cpu_frame = Some((next, raw));
                }
                alloc::format!("{raw:#018x}  -> {next:#012x}  {}", cpu_perms(raw))
            }
            Some(&(_, _, raw)) if raw != 0 && F::from_bits_truncate(raw).contains(F::BIT_9) => alloc::format!("{raw:#018x}  swapped out, slot {}", raw >> 12),
            Some(&(_, _, raw)) => alloc::format!("{raw:#018x}  (not present)"),
            None => alloc::string::String::from("-"),
        };
        let mut line = alloc::format!("  {} [{index:3}]  {cpu_cell:<50}", LEVEL_NAMES[level as usize]);
        line.push_str(" | ");
        match dev_table {
            Some(table) => {
                let raw = read_entry(table, index);
                if raw & 3 == 0 {
                    line.push_str(&alloc::format!("{raw:#018x}  (not present: a device access faults)"));
                    dev_table = None;
                } else {
                    let next = raw & 0x0000_ffff_ffff_f000;
                    line.push_str(&alloc::format!("{raw:#018x}  -> {next:#012x}  {}", vtd_perms(raw, leaf)));
                    if leaf {
                        dev_frame = Some((next, raw));
                    }
                    dev_table = Some(next);
                }
            }
            None => line.push('-'),
        }
        let _ = writeln!(out, "{line}");
    }
    match (cpu_frame, dev_frame) {
        (Some((c, craw)), Some((d, draw))) if c == d => {
            let cpu_w = craw & 2 != 0;
            let dev_w = draw & 2 != 0;
            let _ = writeln!(
                out,
                "  same frame {c:#x}: the CPU may {}, the device may {}{}",
                if cpu_w { "read and write" } else { "read" },
                if dev_w { "read and write" } else { "read" },
                if dev_w && !cpu_w { " (!)" } else if cpu_w && !dev_w { " (the device's first write faults; HMM upgrades the entry)" } else { "" }
            );
        }
        (Some((c, _)), Some((d, _))) => {
            let _ = writeln!(out, "  different frames: CPU {c:#x}, device {d:#x} (a stale mirror entry?)");
        }
        (Some((c, _)), None) => {
            let _ = writeln!(out, "  resident at {c:#x} for the CPU, not mirrored: the device's first access faults and HMM fills the entry");
        }
        (None, Some((d, _))) => {
            let _ = writeln!(out, "  mirrored at {d:#x} but not resident for the CPU (!)");
        }
        (None, None) => {
            let _ = writeln!(out, "  neither side maps it");
        }
    }
    Ok(())
}

/// `trace on|events|off`: per-entry lines, HMM event lines, or back to the
/// level the kernel booted with.
pub fn trace(_: &mut World, a: &mut Args<'_>, out: Out<'_>) -> Result<(), ShellError> {
    let what = a.choice("on|events|off", &["on", "events", "off"], "on, events or off")?;
    a.done()?;
    let level = match what {
        "on" => log::LevelFilter::Trace,
        "events" => log::LevelFilter::Debug,
        _ => crate::console::boot_level(),
    };
    crate::console::set_level(level);
    let _ = writeln!(
        out,
        "log level {}: {}",
        level,
        match level {
            log::LevelFilter::Trace => "every HMM event, and every entry set (mirror, CPU PTE) and DMA transfer",
            log::LevelFilter::Debug => "one line per HMM event (device fault, round, invalidation, IOTLB command, replay)",
            _ => "events off",
        }
    );
    Ok(())
}
