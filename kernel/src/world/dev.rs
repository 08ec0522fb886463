//! Console commands on the accelerators.

use super::{pid, World};
use crate::hmmdev::{accels, HmmAccel};
use crate::shell::{fail, Args, Out, ShellError};
use crate::sync::RankedGuard;

fn accel(a: &mut Args<'_>) -> Result<RankedGuard<'static, HmmAccel>, ShellError> {
    let i = a.number("accel")?;
    let all = accels().map_err(fail)?;
    all.get(i as usize).map(|m| m.lock()).ok_or_else(|| fail(alloc::format!("no accelerator {i} (there are {})", all.len())))
}

pub fn bind(w: &mut World, a: &mut Args<'_>, out: Out<'_>) -> Result<(), ShellError> {
    let mut acc = accel(a)?;
    let id = pid(a)?;
    a.done()?;
    let p = w.proc(id)?;
    acc.bind(&p.hmm).map_err(fail)?;
    let b = acc.binding().expect("just bound");
    let _ = writeln!(out, "accel{} mirrors process {id}: VT-d {} walks mirror table at {:#x} (IOVA = process address)", acc.index(), b.domain, b.mirror.root().as_u64());
    Ok(())
}

pub fn unbind(_: &mut World, a: &mut Args<'_>, out: Out<'_>) -> Result<(), ShellError> {
    let mut acc = accel(a)?;
    a.done()?;
    if acc.binding().is_none() {
        return Err(fail(alloc::format!("accel{} is not bound", acc.index())));
    }
    acc.unbind();
    let _ = writeln!(out, "accel{} unbound: its DMA faults from now on", acc.index());
    Ok(())
}

fn report(out: Out<'_>, acc: &HmmAccel, before: crate::hmmdev::JobStats) {
    let s = acc.stats;
    let _ = writeln!(out, "  ({} transfers, {} device faults resolved and replayed, {} pages populated)", s.transfers - before.transfers, s.faults_resolved - before.faults_resolved, s.pages_populated - before.pages_populated);
}

pub fn dread(_: &mut World, a: &mut Args<'_>, out: Out<'_>) -> Result<(), ShellError> {
    let mut acc = accel(a)?;
    let (addr, len) = (a.number("addr")?, a.number("len")?);
    a.done()?;
    if len == 0 || len > 4096 {
        return Err(fail("dread reads 1..=4096 bytes"));
    }
    let before = acc.stats;
    let data = acc.read(addr, len).map_err(fail)?;
    super::mem::dump(out, addr, &data);
    report(out, &acc, before);
    Ok(())
}

pub fn dwrite(_: &mut World, a: &mut Args<'_>, out: Out<'_>) -> Result<(), ShellError> {
    let mut acc = accel(a)?;
    let (addr, text) = (a.number("addr")?, a.word("text")?);
    a.done()?;
    let before = acc.stats;
    acc.write(addr, text.as_bytes()).map_err(fail)?;
    let _ = writeln!(out, "device wrote {} bytes at {addr:#x}", text.len());
    report(out, &acc, before);
    Ok(())
}

/// The longest device fill or copy one console line starts: each 2 KiB is
/// one edu DMA of 100 ms virtual time (about 0.5 ms of wall time here), so
/// 16 MiB is some seconds — longer lines would hold the console for minutes.
const MAX_DEVICE_JOB: u64 = 16 << 20;

pub fn dfill(_: &mut World, a: &mut Args<'_>, out: Out<'_>) -> Result<(), ShellError> {
    let mut acc = accel(a)?;
    let (addr, len, b) = (a.number("addr")?, a.number("len")?, a.number("byte")?);
    a.done()?;
    let b = u8::try_from(b).map_err(|_| fail("<byte> must be 0..=255"))?;
    if len == 0 || len > MAX_DEVICE_JOB {
        return Err(fail("dfill writes 1 byte .. 16 MiB (each 2 KiB is one device DMA)"));
    }
    let before = acc.stats;
    acc.fill(addr, len, b).map_err(fail)?;
    let _ = writeln!(out, "device filled {len} bytes at {addr:#x} with {b:#04x}");
    report(out, &acc, before);
    Ok(())
}

pub fn dcopy(_: &mut World, a: &mut Args<'_>, out: Out<'_>) -> Result<(), ShellError> {
    let mut acc = accel(a)?;
    let (dst, src, len) = (a.number("dst")?, a.number("src")?, a.number("len")?);
    a.done()?;
    if len == 0 || len > MAX_DEVICE_JOB {
        return Err(fail("dcopy copies 1 byte .. 16 MiB (each 2 KiB is one device DMA)"));
    }
    let before = acc.stats;
    acc.copy(dst, src, len).map_err(fail)?;
    let _ = writeln!(out, "device copied {len} bytes {src:#x} -> {dst:#x}");
    report(out, &acc, before);
    Ok(())
}

pub fn exclusive(_: &mut World, a: &mut Args<'_>, out: Out<'_>) -> Result<(), ShellError> {
    let mut acc = accel(a)?;
    let (addr, len) = (a.number("addr")?, a.number("len")?);
    a.done()?;
    let r = acc.exclusive(addr, len).map_err(fail)?;
    let _ = writeln!(out, "accel{} holds {r} exclusively; the CPU's next access revokes it", acc.index());
    Ok(())
}

pub fn prefault(w: &mut World, a: &mut Args<'_>, out: Out<'_>) -> Result<(), ShellError> {
    let (id, n) = (pid(a)?, a.number("pages")?);
    a.done()?;
    if n == 0 || n > 512 {
        return Err(fail("<pages> is 1..=512 (1 turns prefault off)"));
    }
    w.proc(id)?.hmm.mm.set_prefault(n);
    let _ = writeln!(out, "device faults in process {id} now populate up to {n} pages");
    Ok(())
}
