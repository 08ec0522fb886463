//! Console commands on processes and their memory (the CPU side).

use super::{pid, Process, World};
use crate::aspace::Prot;
use crate::shell::{fail, Args, Out, ShellError};
use alloc::vec;

fn prot(a: &mut Args<'_>) -> Result<Prot, ShellError> {
    let w = a.word("prot")?;
    Prot::parse(w).ok_or_else(|| fail(alloc::format!("<prot> `{w}` is not r, rw, rx, rwx or none")))
}

pub fn spawn(w: &mut World, a: &mut Args<'_>, out: Out<'_>) -> Result<(), ShellError> {
    a.done()?;
    let p = Process::new().map_err(fail)?;
    let id = w.add(p);
    let _ = writeln!(out, "process {id}");
    Ok(())
}

pub fn ps(w: &mut World, a: &mut Args<'_>, out: Out<'_>) -> Result<(), ShellError> {
    a.done()?;
    if w.procs.is_empty() && crate::proc::list().is_empty() {
        let _ = writeln!(out, "no processes (try `spawn`, or `run hello`)");
    }
    for (id, p) in &w.procs {
        let s = p.aspace.stats();
        let _ = writeln!(out, "process {id}: {} page-table pages, {} mirrors; demand-zero {}, COW copies {} / reuses {}, swap-ins {}, migrations {}", p.aspace.table_frames(), p.hmm.mm.mirrors().len(), s.demand_zero, s.cow_copies, s.cow_reuses, s.swap_ins, s.migrations);
        for v in p.aspace.vmas() {
            let _ = writeln!(out, "  {:#014x}-{:#014x} {} ({} pages)", v.range.start(), v.range.end(), v.prot, v.range.pages());
        }
    }
    super::prog::ps_user(out);
    Ok(())
}

pub fn kill(w: &mut World, a: &mut Args<'_>, out: Out<'_>) -> Result<(), ShellError> {
    let id = pid(a)?;
    a.done()?;
    let p = w.procs.remove(&id).ok_or_else(|| super::no_process(id))?;
    let before = crate::mm::frames::stats().free;
    drop(p);
    let _ = writeln!(out, "process {id} exited; {} frames freed", crate::mm::frames::stats().free.saturating_sub(before));
    Ok(())
}

pub fn mmap(w: &mut World, a: &mut Args<'_>, out: Out<'_>) -> Result<(), ShellError> {
    let id = pid(a)?;
    let len = a.number("len")?;
    let mut p = Prot::READ | Prot::WRITE;
    let (mut at, mut fixed) = (None, false);
    while let Some(word) = a.opt_word() {
        if let Some(v) = word.strip_prefix("at=") {
            at = Some(crate::shell::args::parse_number(v).ok_or_else(|| fail(alloc::format!("at=`{v}` is not an address")))?);
        } else if word == "fixed" {
            fixed = true;
        } else {
            p = Prot::parse(word).ok_or_else(|| fail(alloc::format!("`{word}` is not r, rw, rx, rwx, none, at=<addr> or fixed")))?;
        }
    }
    a.done()?;
    let r = w.proc(id)?.aspace.mmap(at, len, p, fixed).map_err(|e| fail(crate::aspace::AspaceError::from(e)))?;
    let _ = writeln!(out, "mapped {:#x}..{:#x} {p} ({} pages)", r.start(), r.end(), r.pages());
    Ok(())
}

pub fn munmap(w: &mut World, a: &mut Args<'_>, out: Out<'_>) -> Result<(), ShellError> {
    let (id, addr, len) = (pid(a)?, a.number("addr")?, a.number("len")?);
    a.done()?;
    w.proc(id)?.aspace.munmap(addr, len).map_err(|e| fail(crate::aspace::AspaceError::from(e)))?;
    let _ = writeln!(out, "unmapped {addr:#x}..{:#x}", addr + len);
    Ok(())
}

pub fn mprotect(w: &mut World, a: &mut Args<'_>, out: Out<'_>) -> Result<(), ShellError> {
    let (id, addr, len, p) = (pid(a)?, a.number("addr")?, a.number("len")?, prot(a)?);
    a.done()?;
    w.proc(id)?.aspace.mprotect(addr, len, p).map_err(|e| fail(crate::aspace::AspaceError::from(e)))?;
    let _ = writeln!(out, "{addr:#x}..{:#x} is now {p}", addr + len);
    Ok(())
}

pub fn fork(w: &mut World, a: &mut Args<'_>, out: Out<'_>) -> Result<(), ShellError> {
    let id = pid(a)?;
    a.done()?;
    let child = w.proc(id)?.aspace.fork().map_err(|e| fail(crate::aspace::AspaceError::from(e)))?;
    let cid = w.add(Process::from_aspace(child));
    let _ = writeln!(out, "process {cid} is a copy-on-write child of {id}");
    Ok(())
}

pub fn migrate(w: &mut World, a: &mut Args<'_>, out: Out<'_>) -> Result<(), ShellError> {
    let (id, addr) = (pid(a)?, a.number("addr")?);
    a.done()?;
    let (old, new) = w.proc(id)?.aspace.migrate(addr).map_err(fail)?;
    let _ = writeln!(out, "page {:#x} moved from frame {:#x} to {:#x}", addr & !0xfff, old.start_address().as_u64(), new.start_address().as_u64());
    Ok(())
}

pub fn swapout(w: &mut World, a: &mut Args<'_>, out: Out<'_>) -> Result<(), ShellError> {
    let (id, addr, len) = (pid(a)?, a.number("addr")?, a.number("len")?);
    a.done()?;
    let r = hmm::VaRange::new(addr, addr.saturating_add(len)).map_err(fail)?;
    let n = w.proc(id)?.aspace.swap_out(r);
    let _ = writeln!(out, "{n} pages swapped out");
    Ok(())
}

pub fn write(w: &mut World, a: &mut Args<'_>, out: Out<'_>) -> Result<(), ShellError> {
    let (id, addr, text) = (pid(a)?, a.number("addr")?, a.word("text")?);
    a.done()?;
    w.proc(id)?.aspace.copy_to_user(addr, text.as_bytes()).map_err(fail)?;
    let _ = writeln!(out, "wrote {} bytes at {addr:#x}", text.len());
    Ok(())
}

/// A hex dump, 16 bytes a line.
pub(crate) fn dump(out: Out<'_>, addr: u64, bytes: &[u8]) {
    for (i, line) in bytes.chunks(16).enumerate() {
        let _ = write!(out, "{:#014x}:", addr + 16 * i as u64);
        for b in line {
            let _ = write!(out, " {b:02x}");
        }
        let text: alloc::string::String = line.iter().map(|&b| if b.is_ascii_graphic() || b == b' ' { b as char } else { '.' }).collect();
        let _ = writeln!(out, "{:>pad$}  {text}", "", pad = 3 * (16 - line.len()));
    }
}

const MAX_DUMP: u64 = 4096;

pub fn read(w: &mut World, a: &mut Args<'_>, out: Out<'_>) -> Result<(), ShellError> {
    let (id, addr, len) = (pid(a)?, a.number("addr")?, a.number("len")?);
    a.done()?;
    if len > MAX_DUMP {
        return Err(fail(alloc::format!("read shows at most {MAX_DUMP} bytes")));
    }
    let mut buf = vec![0u8; len as usize];
    w.proc(id)?.aspace.copy_from_user(addr, &mut buf).map_err(fail)?;
    dump(out, addr, &buf);
    Ok(())
}

fn byte(a: &mut Args<'_>) -> Result<u8, ShellError> {
    let v = a.number("byte")?;
    u8::try_from(v).map_err(|_| fail(alloc::format!("<byte> {v} is larger than 255")))
}

/// `fill` and `check` stream through a buffer of this size: any length
/// works (or fails at the first bad page) without heap in proportion to it.
const STREAM: usize = 4096;

/// The range `[addr, addr + len)` of a CPU access, checked before any work.
fn user_range(addr: u64, len: u64) -> Result<(), ShellError> {
    match addr.checked_add(len) {
        Some(end) if end <= crate::mm::USER_END => Ok(()),
        _ => Err(fail(alloc::format!("{len:#x} bytes at {addr:#x} are not inside the user half"))),
    }
}

pub fn fill(w: &mut World, a: &mut Args<'_>, out: Out<'_>) -> Result<(), ShellError> {
    let (id, addr, len, b) = (pid(a)?, a.number("addr")?, a.number("len")?, byte(a)?);
    a.done()?;
    user_range(addr, len)?;
    let p = w.proc(id)?;
    let chunk = [b; STREAM];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(STREAM as u64);
        // done < len and the range is checked: addr + done cannot overflow.
        p.aspace.copy_to_user(addr + done, &chunk[..n as usize]).map_err(|e| fail(alloc::format!("{e} (after {done} bytes were filled)")))?;
        done += n;
    }
    let _ = writeln!(out, "filled {len} bytes at {addr:#x} with {b:#04x}");
    Ok(())
}

pub fn check(w: &mut World, a: &mut Args<'_>, out: Out<'_>) -> Result<(), ShellError> {
    let (id, addr, len, b) = (pid(a)?, a.number("addr")?, a.number("len")?, byte(a)?);
    a.done()?;
    user_range(addr, len)?;
    let p = w.proc(id)?;
    let mut buf = [0u8; STREAM];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(STREAM as u64) as usize;
        p.aspace.copy_from_user(addr + done, &mut buf[..n]).map_err(fail)?;
        if let Some(i) = buf[..n].iter().position(|&x| x != b) {
            return Err(fail(alloc::format!("check failed: byte at {:#x} is {:#04x}, expected {b:#04x}", addr + done + i as u64, buf[i])));
        }
        done += n as u64;
    }
    let _ = writeln!(out, "ok: {len} bytes at {addr:#x} are {b:#04x}");
    Ok(())
}
