//! Accelerator jobs on process addresses, carried out by the device.
//!
//! ```text
//!  read(src, len):       src ──DMA──► edu buffer ──DMA──► bounce page ──CPU──► kernel
//!  write(dst, data):     kernel ──CPU──► bounce ──DMA──► edu buffer ──DMA──► dst
//!  fill(dst, len, byte): byte ──CPU──► bounce ──DMA──► edu buffer ══DMA══► dst (every piece)
//!  copy(dst, src, len):  src ──DMA──► edu buffer ──DMA──► dst
//! ```
//!
//! # Isolation: the rule and where it is enforced
//!
//! **A job reaches exactly what its process's mirror allows, and nothing
//! the kernel keeps for itself.** It holds by construction:
//!
//! 1. A user-given address reaches the device only inside a [`UserSpan`],
//!    and `UserSpan::new` is the one check: length ≥ 1, `start + len`
//!    computed with checked arithmetic and ≤ [`hmm::USER_END`] (2^47).
//!    Everything else — kernel direct-map or image addresses, the bounce
//!    IOVA, 2^47 and above, wrapping ranges — is refused before the device
//!    is touched ([`SpanError`]).
//! 2. A transfer names its device-side address as a [`Target`]: either a
//!    `UserPiece` (made only in this module, by cutting `UserSpan`s: within
//!    one page, at most [`CHUNK`] bytes) or the bounce page. No integer IOVA is taken
//!    from a caller, so no user number can name the bounce page.
//! 3. The bounce page is owned by the context (see `Context`): a fresh
//!    zeroed frame when the context is added, freed when it is removed,
//!    after the device is detached or the context's IOTLB entries flushed.
//!    Nothing a device read for one process is ever in a buffer another
//!    context's device can read.
//! 5. A job runs in one context: `activate` points the device's VT-d
//!    context entry at that context's domain first (flushing the previous
//!    context's IOTLB entries: QEMU keys them by requester id, not domain).
//! 4. Each context's VT-d domain *is* its mirror table: it holds the mirror
//!    entries HMM made from the process's own page table, and the bounce
//!    page above the user half. Any other address faults in the IOMMU.
//!
//! # Faults and replay
//!
//! Each job is cut into transfers that never cross a page of process
//! memory, so a fault names one page. A transfer that the IOMMU refused
//! (the fault record names this device) becomes an HMM device fault —
//! resolved with CPU semantics (demand-zero, COW break, swap-in) — and, in
//! the same round, the rest of the job's range that the CPU already maps is
//! mirrored too (`Mirror::fault_with`: the driver knows the job's extent;
//! one interval, one address-space lock), so a job over present pages
//! faults once. Then the transfer is
//! replayed. A fault HMM cannot resolve
//! fails the job with the address and the access; the device and the
//! kernel carry on.
//!
//! The fault records are not a complete channel: a device *write* through
//! a translation the IOTLB holds as read-only is dropped by QEMU without a
//! fault record (the cached permission check never reaches the page walk
//! that records faults). So before each transfer the engine notes whether
//! the mirror entry permits it; a transfer it could not have permitted is
//! treated as faulted even without a record (counted as `silent_faults`).
//! This is why a transfer must not cross a page: the check covers one entry.

use super::{HmmAccel, JobError};
use crate::cycles;
use crate::mm::direct;
use core::fmt;
use devices::edu::{DmaRequest, Direction};
use devices::vtd::Access;
use hmm::{DeviceFaultKind, USER_END};

/// Bytes per transfer (edu takes at most 4095 at buffer offset 0; half a
/// page keeps transfers page-aligned).
pub const CHUNK: u64 = 2048;
/// Where the bounce page sits in every edu mirror table: above the user
/// half, so no [`UserSpan`] can name it.
pub const BOUNCE_IOVA: u64 = 0xffff_ffff_f000;
/// The most a single read job returns (its result is kernel memory).
pub const MAX_READ: u64 = 1 << 20;
/// The most pages one exclusive-access job takes (the work is per page).
pub const MAX_EXCLUSIVE_PAGES: u64 = 4096;
/// Give up on a transfer that keeps faulting (a livelock guard).
const MAX_REPLAYS: u32 = 8;
const PAGE: u64 = 4096;

/// Why a job's address range was refused before the device was touched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanError {
    /// Length 0.
    Empty,
    /// `[addr, addr + len)` wraps or leaves the user half.
    OutsideUser { addr: u64, len: u64 },
    /// Longer than this kind of job takes.
    TooLong { len: u64, max: u64 },
}

impl fmt::Display for SpanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("a job of length 0"),
            Self::OutsideUser { addr, len } => write!(f, "{len:#x} bytes at {addr:#x} are not inside the user half (below {USER_END:#x})"),
            Self::TooLong { len, max } => write!(f, "{len} bytes is more than this job takes ({max})"),
        }
    }
}

/// A range of process memory named by a job: the only form in which a
/// user-given address reaches a device. Non-empty, inside the user half.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserSpan {
    start: u64,
    len: u64,
}

impl UserSpan {
    /// Check `[addr, addr + len)` (checked arithmetic: a wrapping range is
    /// refused, never truncated).
    pub fn new(addr: u64, len: u64) -> Result<Self, SpanError> {
        if len == 0 {
            return Err(SpanError::Empty);
        }
        match addr.checked_add(len) {
            Some(end) if end <= USER_END => Ok(UserSpan { start: addr, len }),
            _ => Err(SpanError::OutsideUser { addr, len }),
        }
    }

    pub fn start(&self) -> u64 {
        self.start
    }
    /// The length in bytes (never 0: see [`UserSpan::new`]).
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u64 {
        self.len
    }
    /// One past the last byte (≤ 2^47, so no overflow).
    pub fn end(&self) -> u64 {
        self.start + self.len
    }

    /// The pages it touches, as a page-aligned range.
    pub fn pages(&self) -> hmm::VaRange {
        let start = self.start & !(PAGE - 1);
        // end ≤ 2^47, so rounding up cannot overflow.
        let end = self.end().next_multiple_of(PAGE);
        hmm::VaRange::new(start, end).expect("inside the user half by construction")
    }

    /// Cut into transfers: each within one page and at most [`CHUNK`] bytes.
    fn pieces(self) -> impl Iterator<Item = UserPiece> {
        let end = self.end();
        let mut at = self.start;
        core::iter::from_fn(move || {
            if at >= end {
                return None;
            }
            let n = (end - at).min(CHUNK).min(PAGE - at % PAGE);
            let piece = UserPiece { iova: at, len: n as u16 };
            at += n;
            Some(piece)
        })
    }
}

/// One transfer's worth of a [`UserSpan`]: within one page, ≤ [`CHUNK`].
#[derive(Clone, Copy, Debug)]
struct UserPiece {
    iova: u64,
    len: u16,
}

/// Where a transfer's RAM side is.
#[derive(Clone, Copy, Debug)]
enum Target {
    User(UserPiece),
    /// The binding's bounce page, bytes `[0, len)`.
    Bounce(u16),
}

/// The pages from a fault at `addr` (inside the job's `extent`) to the end
/// of the extent, at most `hmm::MAX_FAULT_PAGES`: what one fault round may
/// also mirror.
fn mirror_window(addr: u64, extent: hmm::VaRange) -> hmm::VaRange {
    let start = addr & !(PAGE - 1);
    let end = extent.end().min(start.saturating_add(hmm::MAX_FAULT_PAGES * PAGE)).max(start);
    hmm::VaRange::new(start, end).unwrap_or(extent)
}

impl HmmAccel {
    /// One DMA, with device faults resolved and the transfer replayed.
    /// `extent`: the job's pages (the rest of them the CPU already has is
    /// mirrored in the same fault round).
    fn transfer(&mut self, dir: Direction, target: Target, extent: hmm::VaRange) -> Result<(), JobError> {
        let p = crate::platform::init().map_err(JobError::Platform)?;
        let mirror = self.binding().ok_or(JobError::NotBound)?.mirror.clone();
        let (iova, count) = match target {
            Target::User(u) => (u.iova, u.len),
            Target::Bounce(n) => (BOUNCE_IOVA, n),
        };
        let req = DmaRequest::new(dir, devices::vtd::Iova::new(iova), 0, count).map_err(JobError::Request)?;
        let write = dir == Direction::ToRam;
        let access = if write { Access::Write } else { Access::Read };
        for _ in 0..=MAX_REPLAYS {
            let permitted = match target {
                // Reads always leave a fault record; only writes through a
                // cached read-only entry vanish silently (see the module docs).
                Target::User(_) => !write || mirror.get(iova).is_some_and(|l| l.write),
                Target::Bounce(_) => true,
            };
            self.stats.transfers += 1;
            log::trace!("dma accel={} iova={iova:#x} len={count} dir={}", self.index, if write { "to-ram" } else { "to-device" });
            let mut result = p.accels[self.index].lock().dma(&p.iommu, &req);
            if result.is_ok() && !permitted {
                // Completed without a record, but the entry did not allow it.
                self.stats.silent_faults += 1;
                log::debug!("fault.silent accel={} va={:#x} (a write the IOTLB's read-only entry dropped without a record)", self.index, iova & !0xfff);
                result = Err(crate::platform::DmaError::Fault(devices::vtd::FaultRecord { addr: iova & !0xfff, access, reason: 0, source: self.bdf }));
            }
            let rec = match (result, target) {
                (Ok(()), Target::User(_)) => {
                    if write {
                        mirror.set_dirty(iova);
                    }
                    return Ok(());
                }
                (Ok(()), Target::Bounce(_)) => return Ok(()),
                // The bounce page is always mapped: a fault there is the
                // kernel's bug, reported as a failed transfer, never resolved.
                (Err(e), Target::Bounce(_)) => return Err(JobError::Dma(e)),
                (Err(crate::platform::DmaError::Fault(rec)), Target::User(_)) => rec,
                (Err(e), Target::User(_)) => return Err(JobError::Dma(e)),
            };
            if rec.addr != iova & !0xfff {
                // A piece lies in one page: a record elsewhere is not ours to resolve.
                return Err(JobError::Dma(crate::platform::DmaError::Fault(rec)));
            }
            let t0 = cycles::now();
            let write = rec.access == Access::Write;
            log::debug!("fault.begin accel={} va={:#x} access={} reason={:#x}", self.index, rec.addr, if write { "write" } else { "read" }, rec.reason);
            // The same round: the rest of the job's pages the CPU has.
            let rest = mirror_window(rec.addr, extent);
            let resolved = mirror.fault_with(rec.addr, 1, write, (rest.pages() > 1).then_some(rest));
            match resolved {
                Ok(out) => {
                    self.failed_pages.remove(&rec.addr);
                    self.stats.faults_resolved += 1;
                    self.stats.pages_populated += out.pages;
                    self.stats.fault_cycles += cycles::now().wrapping_sub(t0);
                    self.stats.replays += 1;
                    log::debug!("fault.end accel={} va={:#x} result=resolved pages={} retries={}", self.index, rec.addr, out.pages, out.retries);
                    log::debug!("replay accel={} iova={iova:#x} len={count}", self.index);
                }
                Err(e) => {
                    if self.failed_pages.len() < 4096 {
                        self.failed_pages.insert(e.addr & !0xfff);
                    }
                    self.stats.faults_failed += 1;
                    log::debug!("fault.end accel={} va={:#x} result=failed why={:?}", self.index, e.addr, e.kind);
                    return Err(JobError::Fault { addr: e.addr, write, kind: e.kind });
                }
            }
        }
        Err(JobError::Fault { addr: iova & !0xfff, write, kind: DeviceFaultKind::TooManyRetries })
    }

    /// The selected context's bounce page, with the device switched to
    /// that context: every job starts here (`addr`, `write`: the job's first
    /// access, named if the context's process is gone).
    fn begin_job(&mut self, addr: u64, write: bool) -> Result<x86_64::structures::paging::PhysFrame, JobError> {
        self.activate().map_err(|e| match e {
            JobError::Fault { kind, .. } => JobError::Fault { addr, write, kind },
            e => e,
        })?;
        self.binding().map(|b| b.bounce.frame()).ok_or(JobError::NotBound)
    }

    /// Read `len` bytes (1..=[`MAX_READ`]) of process memory at `src`
    /// through the device.
    pub fn read(&mut self, src: u64, len: u64) -> Result<alloc::vec::Vec<u8>, JobError> {
        let span = UserSpan::new(src, len)?;
        if len > MAX_READ {
            return Err(SpanError::TooLong { len, max: MAX_READ }.into());
        }
        let mut out = alloc::vec::Vec::new();
        out.try_reserve_exact(len as usize).map_err(|_| JobError::NoMemory)?;
        self.read_with(span, |bytes| out.extend_from_slice(bytes))?;
        Ok(out)
    }

    /// Read a span through the device, handing the bytes to `sink` one
    /// transfer at a time (no buffer in proportion to the span).
    pub fn read_with(&mut self, span: UserSpan, mut sink: impl FnMut(&[u8])) -> Result<(), JobError> {
        let bounce = self.begin_job(span.start(), false)?;
        let extent = span.pages();
        let mut buf = [0u8; CHUNK as usize];
        for piece in span.pieces() {
            self.transfer(Direction::ToDevice, Target::User(piece), extent)?;
            self.transfer(Direction::ToRam, Target::Bounce(piece.len), extent)?;
            let chunk = &mut buf[..piece.len as usize];
            direct::read_frame(bounce, 0, chunk);
            sink(chunk);
        }
        self.stats.jobs += 1;
        Ok(())
    }

    /// Write `data` into process memory at `dst` through the device.
    pub fn write(&mut self, dst: u64, data: &[u8]) -> Result<(), JobError> {
        let span = UserSpan::new(dst, data.len() as u64)?;
        let bounce = self.begin_job(dst, true)?;
        let extent = span.pages();
        let mut off = 0usize;
        for piece in span.pieces() {
            let n = piece.len as usize;
            // SAFETY: the bounce frame belongs to this binding; the device
            // reads it only during the transfers below.
            unsafe { direct::write_frame(bounce, 0, &data[off..off + n]) };
            self.transfer(Direction::ToDevice, Target::Bounce(piece.len), extent)?;
            self.transfer(Direction::ToRam, Target::User(piece), extent)?;
            off += n;
        }
        self.stats.jobs += 1;
        Ok(())
    }

    /// Fill `len` bytes of process memory at `dst` with `byte` through the
    /// device: the pattern is loaded into the device's buffer once, then
    /// written out piece by piece (streamed: nothing in proportion to `len`).
    pub fn fill(&mut self, dst: u64, len: u64, byte: u8) -> Result<(), JobError> {
        let span = UserSpan::new(dst, len)?;
        let bounce = self.begin_job(dst, true)?;
        let extent = span.pages();
        // SAFETY: as in `write`.
        unsafe { direct::write_frame(bounce, 0, &[byte; CHUNK as usize]) };
        self.transfer(Direction::ToDevice, Target::Bounce(CHUNK as u16), extent)?;
        for piece in span.pieces() {
            // A device→RAM transfer leaves the edu buffer as it was, faulted
            // and replayed or not: the pattern stays loaded.
            self.transfer(Direction::ToRam, Target::User(piece), extent)?;
        }
        self.stats.jobs += 1;
        Ok(())
    }

    /// Give the device exclusive (atomic) access to the pages of
    /// `[addr, addr + len)` (at most [`MAX_EXCLUSIVE_PAGES`]); returns them.
    pub fn exclusive(&mut self, addr: u64, len: u64) -> Result<hmm::VaRange, JobError> {
        let pages = UserSpan::new(addr, len)?.pages();
        if pages.pages() > MAX_EXCLUSIVE_PAGES {
            return Err(SpanError::TooLong { len, max: MAX_EXCLUSIVE_PAGES * PAGE }.into());
        }
        let b = self.binding().ok_or(JobError::NotBound)?;
        b.mirror.take_exclusive(pages).map_err(|e| JobError::Fault { addr: e.addr, write: true, kind: e.kind })?;
        self.stats.jobs += 1;
        Ok(pages)
    }

    /// Copy `len` bytes of process memory from `src` to `dst` on the device.
    pub fn copy(&mut self, dst: u64, src: u64, len: u64) -> Result<(), JobError> {
        let (s, d) = (UserSpan::new(src, len)?, UserSpan::new(dst, len)?);
        self.begin_job(src, false)?;
        let mut done = 0;
        while done < len {
            let (sa, da) = (s.start + done, d.start + done);
            let n = (len - done).min(CHUNK).min(PAGE - sa % PAGE).min(PAGE - da % PAGE);
            self.transfer(Direction::ToDevice, Target::User(UserPiece { iova: sa, len: n as u16 }), s.pages())?;
            self.transfer(Direction::ToRam, Target::User(UserPiece { iova: da, len: n as u16 }), d.pages())?;
            done += n;
        }
        self.stats.jobs += 1;
        Ok(())
    }
}

