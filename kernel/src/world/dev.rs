//! Console commands on the accelerators.

use super::{pid, World};
use crate::hmmdev::{accels, HmmAccel};
use crate::shell::{fail, Args, Out, ShellError};
use crate::sync::RankedGuard;

fn accel(a: &mut Args<'_>) -> Result<RankedGuard<'static, HmmAccel>, ShellError> {
    let i = a.number("accel")?;
    lock_accel(i)
}

fn lock_accel(i: u64) -> Result<RankedGuard<'static, HmmAccel>, ShellError> {
    let all = accels().map_err(fail)?;
    usize::try_from(i).ok().and_then(|i| all.get(i)).map(|m| m.lock()).ok_or_else(|| fail(alloc::format!("no accelerator {i} (there are {})", all.len())))
}

/// `<accel>[/<pid>]`: the accelerator, with the context a job runs in
/// selected — the process's, or the only one there is.
pub(crate) fn job_accel(w: &World, a: &mut Args<'_>) -> Result<RankedGuard<'static, HmmAccel>, ShellError> {
    let word = a.word("accel")?;
    let (acc_word, pid_word) = match word.split_once('/') {
        Some((x, p)) => (x, Some(p)),
        None => (word, None),
    };
    let bad = || ShellError::from(crate::shell::ArgError::Invalid { name: "accel", value: word.into(), expected: "<accel> or <accel>/<pid> (e.g. 0 or 0/2)" });
    let i = crate::shell::args::parse_number(acc_word).ok_or_else(bad)?;
    let mut acc = lock_accel(i)?;
    match pid_word {
        Some(p) => {
            let n = crate::shell::args::parse_number(p).ok_or_else(bad)?;
            let id = super::Pid::try_from(n).map_err(|_| super::no_process(n))?;
            let proc = w.proc(id)?;
            let ctx = acc.context_of(&proc.hmm).ok_or_else(|| fail(alloc::format!("process {id} is not bound to accel{i} (try `bind {i} {id}`)")))?;
            acc.select(ctx).map_err(fail)?;
        }
        None if acc.contexts().len() > 1 => {
            return Err(fail(alloc::format!("accel{i} has {} contexts: name one as {i}/<pid>", acc.contexts().len())));
        }
        None => {}
    }
    Ok(acc)
}

/// `ro` or `rw` (default `rw`).
fn access(a: &mut Args<'_>) -> Result<hmm::MirrorAccess, ShellError> {
    match a.opt_word() {
        None | Some("rw") => Ok(hmm::MirrorAccess::ReadWrite),
        Some("ro") | Some("r") => Ok(hmm::MirrorAccess::ReadOnly),
        Some(w) => Err(crate::shell::ArgError::Invalid { name: "access", value: w.into(), expected: "ro or rw" }.into()),
    }
}

pub fn bind(w: &mut World, a: &mut Args<'_>, out: Out<'_>) -> Result<(), ShellError> {
    let mut acc = accel(a)?;
    let id = pid(a)?;
    let access = access(a)?;
    a.done()?;
    let p = w.proc(id)?;
    let ctx = acc.add_context(&p.hmm, access).map_err(fail)?;
    let b = acc.binding().ok_or_else(|| fail("internal: no context after bind"))?;
    let how = if access == hmm::MirrorAccess::ReadOnly { "read-only" } else { "read-write" };
    let _ = writeln!(out, "accel{} {ctx} mirrors process {id} {how}: VT-d {} walks mirror table at {:#x} (IOVA = process address)", acc.index(), b.domain, b.mirror.root().as_u64());
    if acc.contexts().len() > 1 {
        let _ = writeln!(out, "  accel{} now has {} contexts: jobs name one as {}/<pid>", acc.index(), acc.contexts().len(), acc.index());
    }
    Ok(())
}

pub fn unbind(w: &mut World, a: &mut Args<'_>, out: Out<'_>) -> Result<(), ShellError> {
    let mut acc = accel(a)?;
    let who = match a.peek() {
        Some(_) => Some(pid(a)?),
        None => None,
    };
    a.done()?;
    match who {
        None => {
            if acc.contexts().is_empty() {
                return Err(fail(alloc::format!("accel{} is not bound", acc.index())));
            }
            acc.unbind();
            let _ = writeln!(out, "accel{} unbound: its DMA faults from now on", acc.index());
        }
        Some(id) => {
            let p = w.proc(id)?;
            let ctx = acc.context_of(&p.hmm).ok_or_else(|| fail(alloc::format!("process {id} is not bound to accel{}", acc.index())))?;
            acc.remove_context(ctx).map_err(fail)?;
            let _ = writeln!(out, "accel{} {ctx} (process {id}) removed; {} left", acc.index(), acc.contexts().len());
        }
    }
    Ok(())
}

fn report(out: Out<'_>, acc: &HmmAccel, before: crate::hmmdev::JobStats) {
    let s = acc.stats;
    let _ = writeln!(out, "  ({} transfers, {} device faults resolved and replayed, {} pages populated)", s.transfers - before.transfers, s.faults_resolved - before.faults_resolved, s.pages_populated - before.pages_populated);
}

pub fn dread(w: &mut World, a: &mut Args<'_>, out: Out<'_>) -> Result<(), ShellError> {
    let mut acc = job_accel(w, a)?;
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

pub fn dwrite(w: &mut World, a: &mut Args<'_>, out: Out<'_>) -> Result<(), ShellError> {
    let mut acc = job_accel(w, a)?;
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

pub fn dfill(w: &mut World, a: &mut Args<'_>, out: Out<'_>) -> Result<(), ShellError> {
    let mut acc = job_accel(w, a)?;
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

pub fn dcopy(w: &mut World, a: &mut Args<'_>, out: Out<'_>) -> Result<(), ShellError> {
    let mut acc = job_accel(w, a)?;
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

pub fn exclusive(w: &mut World, a: &mut Args<'_>, out: Out<'_>) -> Result<(), ShellError> {
    let mut acc = job_accel(w, a)?;
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
