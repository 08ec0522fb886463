//! The device interface, after Linux's `test_hmm` (`lib/test_hmm.c`): a
//! process opens a context on an accelerator with permissions, then submits
//! jobs on its own virtual addresses; the calling task sleeps in each DMA
//! wait (other tasks run) and device faults are resolved meanwhile by HMM.
//!
//! ```text
//!  dev_open(accel, DEV_READ|DEV_WRITE) → fd        (no binding yet)
//!  dev_job(fd, op, addr, buf, len, arg):
//!     lock accels()[i]  (contended: the caller sleeps, see sync)
//!     our context there? select it; none yet? add one (its own mirror and
//!     VT-d domain, read-only unless the descriptor may write); other
//!     processes' contexts on the same accelerator stay (jobs take turns)
//!     Read:  device reads addr.. in pieces ─► copy_to_user(buf..)
//!     Write: copy_from_user(buf..) in pieces ─► device writes addr..
//!     Copy / Fill / Exclusive: on the device, process addresses only
//!     CheckExclusive / Snapshot: the mirror's entries (the VT-d table itself)
//! ```
//!
//! Jobs cut the work into pieces of at most `CHUNK` bytes, so the kernel
//! buffer is fixed whatever the length. Results are error codes:
//! EFAULT for an address the process has no mapping at, EPERM for an
//! access its protection (or the context's permissions) forbid, EINVAL for
//! malformed arguments, EBADF for a bad descriptor, ENODEV for no device.

use super::syscall::SysResult;
use super::{ProcCore, MAX_FDS, PROCS};
use crate::hmmdev::{accels, jobs::CHUNK, HmmAccel, JobError, SpanError};
use crate::sync::RankedGuard;
use abi::{DevOp, DevStats, Errno, DEV_MAX_LEN, DEV_MAX_PAGES, DEV_READ, DEV_WRITE, SNAP_DIRTY, SNAP_EXCLUSIVE, SNAP_READ, SNAP_WRITE};
use hmm::{CpuFaultError, DeviceFaultKind};

/// An open device context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct DevCtx {
    accel: usize,
    perms: u64,
}

impl From<JobError> for Errno {
    fn from(e: JobError) -> Errno {
        match e {
            JobError::NotBound | JobError::NoContext => Errno::EBADF,
            JobError::Fault { kind: DeviceFaultKind::ReadOnly, .. } => Errno::EPERM,
            JobError::Iommu(_) => Errno::EIO,
            JobError::Span(SpanError::TooLong { .. }) => Errno::E2BIG,
            JobError::Span(_) => Errno::EINVAL,
            JobError::NoMemory => Errno::ENOMEM,
            JobError::Fault { kind: DeviceFaultKind::Cpu(CpuFaultError::NoVma), .. } => Errno::EFAULT,
            JobError::Fault { kind: DeviceFaultKind::Cpu(CpuFaultError::Protection), .. } => Errno::EPERM,
            JobError::Fault { kind: DeviceFaultKind::Cpu(CpuFaultError::OutOfMemory), .. } => Errno::ENOMEM,
            JobError::Fault { kind: DeviceFaultKind::Released, .. } => Errno::ESRCH,
            // The CPU side kept changing the pages under the job: try again.
            JobError::Fault { kind: DeviceFaultKind::TooManyRetries, .. } => Errno::EAGAIN,
            JobError::Fault { .. } | JobError::Platform(_) | JobError::Request(_) | JobError::Dma(_) => {
                // EIO names no cause: say it here, once, for whoever debugs it.
                log::warn!("device job failed with EIO: {e}");
                Errno::EIO
            }
        }
    }
}

pub(super) fn open(core: &ProcCore, accel: u64, perms: u64) -> SysResult {
    let n = accels().map_err(|_| Errno::ENODEV)?.len() as u64;
    if accel >= n {
        return Err(Errno::ENODEV);
    }
    if perms == 0 || perms & !(DEV_READ | DEV_WRITE) != 0 {
        return Err(Errno::EINVAL);
    }
    let mut t = PROCS.lock();
    let e = t.procs.get_mut(&core.pid).ok_or(Errno::ESRCH)?;
    let slot = e.fds.iter().position(Option::is_none).ok_or(Errno::EMFILE)?;
    e.fds[slot] = Some(DevCtx { accel: accel as usize, perms });
    Ok(slot as u64)
}

pub(super) fn close(core: &ProcCore, fd: u64) -> SysResult {
    let ctx = {
        let mut t = PROCS.lock();
        let e = t.procs.get_mut(&core.pid).ok_or(Errno::ESRCH)?;
        let slot = e.fds.get_mut(usize::try_from(fd).map_err(|_| Errno::EBADF)?).ok_or(Errno::EBADF)?;
        slot.take().ok_or(Errno::EBADF)?
    };
    release(core, &[Some(ctx)]);
    Ok(0)
}

/// Unbind every accelerator in `fds` that still mirrors `core`'s process
/// (at close and exit), so no device keeps a dead process's mirror.
pub(super) fn release(core: &ProcCore, fds: &[Option<DevCtx>]) {
    // A process that never opened a device must not bring the devices up
    // on its way out (`accels()` initialises them on first use: a PCI scan
    // and the IOMMU, inside an exit — it made a sleeper miss its turns in
    // `user_sched@2`).
    if fds.iter().all(Option::is_none) {
        return;
    }
    let Ok(all) = accels() else { return };
    for ctx in fds.iter().flatten() {
        let mut acc = all[ctx.accel].lock();
        if let Some(id) = acc.context_of(&core.hmm) {
            let _ = acc.remove_context(id);
        }
    }
}

fn ctx_of(core: &ProcCore, fd: u64) -> Result<DevCtx, Errno> {
    let t = PROCS.lock();
    let e = t.procs.get(&core.pid).ok_or(Errno::ESRCH)?;
    let i = usize::try_from(fd).map_err(|_| Errno::EBADF)?;
    if i >= MAX_FDS {
        return Err(Errno::EBADF);
    }
    e.fds[i].ok_or(Errno::EBADF)
}

/// The accelerator, bound to this process.
fn bound(core: &ProcCore, ctx: DevCtx) -> Result<RankedGuard<'static, HmmAccel>, Errno> {
    let all = accels().map_err(|_| Errno::ENODEV)?;
    let mut acc = all[ctx.accel].lock();
    match acc.context_of(&core.hmm) {
        Some(id) => acc.select(id).map_err(|_| Errno::EBADF)?,
        None => {
            let access = if ctx.perms & DEV_WRITE != 0 { hmm::MirrorAccess::ReadWrite } else { hmm::MirrorAccess::ReadOnly };
            acc.add_context(&core.hmm, access).map_err(|_| Errno::ENOMEM)?;
        }
    }
    Ok(acc)
}

fn need(ctx: DevCtx, perms: u64) -> Result<(), Errno> {
    if ctx.perms & perms == perms {
        Ok(())
    } else {
        Err(Errno::EPERM)
    }
}

fn length(len: u64) -> Result<u64, Errno> {
    if len == 0 || len > DEV_MAX_LEN {
        return Err(Errno::EINVAL);
    }
    Ok(len)
}

/// A range of whole pages: `(first page, pages)`.
fn page_range(addr: u64, len: u64) -> Result<hmm::VaRange, Errno> {
    if !addr.is_multiple_of(4096) || !len.is_multiple_of(4096) || len == 0 || len / 4096 > DEV_MAX_PAGES {
        return Err(Errno::EINVAL);
    }
    hmm::VaRange::pages_from(addr, len / 4096).map_err(|_| Errno::EINVAL)
}

/// `dev_job(fd, op, addr, buf, len, arg)`.
pub(super) fn job(core: &ProcCore, a: [u64; 6]) -> SysResult {
    let ctx = ctx_of(core, a[0])?;
    let op = DevOp::from_u64(a[1]).ok_or(Errno::EINVAL)?;
    let (addr, buf, len, arg) = (a[2], a[3], a[4], a[5]);
    match op {
        DevOp::Read => {
            need(ctx, DEV_READ)?;
            let len = length(len)?;
            buf.checked_add(len).ok_or(Errno::EFAULT)?;
            addr.checked_add(len).ok_or(Errno::EINVAL)?;
            let mut acc = bound(core, ctx)?;
            let mut done = 0;
            while done < len {
                let n = (len - done).min(CHUNK);
                let data = acc.read(addr + done, n)?;
                core.aspace.copy_to_user(buf + done, &data)?;
                done += n;
            }
            Ok(0)
        }
        DevOp::Write => {
            need(ctx, DEV_WRITE)?;
            let len = length(len)?;
            buf.checked_add(len).ok_or(Errno::EFAULT)?;
            addr.checked_add(len).ok_or(Errno::EINVAL)?;
            let mut acc = bound(core, ctx)?;
            let mut piece = [0u8; CHUNK as usize];
            let mut done = 0;
            while done < len {
                let n = (len - done).min(CHUNK);
                core.aspace.copy_from_user(buf + done, &mut piece[..n as usize])?;
                acc.write(addr + done, &piece[..n as usize])?;
                done += n;
            }
            Ok(0)
        }
        DevOp::Copy => {
            need(ctx, DEV_READ | DEV_WRITE)?;
            let len = length(len)?;
            bound(core, ctx)?.copy(addr, buf, len)?;
            Ok(0)
        }
        DevOp::Fill => {
            need(ctx, DEV_WRITE)?;
            let len = length(len)?;
            let byte = u8::try_from(arg).map_err(|_| Errno::EINVAL)?;
            bound(core, ctx)?.fill(addr, len, byte)?;
            Ok(0)
        }
        DevOp::Exclusive => {
            need(ctx, DEV_WRITE)?;
            let span = len.checked_add(addr & 0xfff).and_then(|n| n.checked_next_multiple_of(4096)).ok_or(Errno::EINVAL)?;
            let r = page_range(addr & !0xfff, span)?;
            let pages = bound(core, ctx)?.exclusive(r.start(), r.end() - r.start())?;
            Ok(pages.pages())
        }
        DevOp::CheckExclusive => {
            let r = page_range(addr, len)?;
            let acc = bound(core, ctx)?;
            let b = acc.binding().ok_or(Errno::EBADF)?;
            let entries = b.mirror.entries(r);
            let all = entries.len() as u64 == r.pages() && entries.iter().all(|(_, l)| l.exclusive);
            if all {
                Ok(0)
            } else {
                Err(Errno::EPERM)
            }
        }
        DevOp::Snapshot => {
            let r = page_range(addr, len)?;
            let snap = {
                let acc = bound(core, ctx)?;
                let b = acc.binding().ok_or(Errno::EBADF)?;
                let entries = b.mirror.entries(r);
                let mut snap = [0u8; DEV_MAX_PAGES as usize];
                for (va, l) in entries {
                    let i = ((va - r.start()) / 4096) as usize;
                    snap[i] = SNAP_READ | if l.write { SNAP_WRITE } else { 0 } | if l.dirty { SNAP_DIRTY } else { 0 } | if l.exclusive { SNAP_EXCLUSIVE } else { 0 };
                }
                snap
            };
            core.aspace.copy_to_user(buf, &snap[..r.pages() as usize])?;
            Ok(0)
        }
        DevOp::Stats => {
            if len != core::mem::size_of::<DevStats>() as u64 {
                return Err(Errno::EINVAL);
            }
            let s = accels().map_err(|_| Errno::ENODEV)?[ctx.accel].lock().stats;
            let out = DevStats { jobs: s.jobs, transfers: s.transfers, faults_resolved: s.faults_resolved, faults_failed: s.faults_failed, pages_populated: s.pages_populated };
            let bytes: [u64; 5] = [out.jobs, out.transfers, out.faults_resolved, out.faults_failed, out.pages_populated];
            let mut raw = [0u8; 40];
            for (i, v) in bytes.iter().enumerate() {
                raw[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
            }
            core.aspace.copy_to_user(buf, &raw)?;
            Ok(0)
        }
    }
}
