//! Accelerator jobs on process addresses, carried out by the device.
//!
//! ```text
//!  read(src, len):   src ──DMA──► edu buffer ──DMA──► bounce page ──CPU──► kernel
//!  write(dst, data): kernel ──CPU──► bounce ──DMA──► edu buffer ──DMA──► dst
//!  copy(dst, src):   src ──DMA──► edu buffer ──DMA──► dst
//! ```
//!
//! Each job is cut into transfers of at most [`CHUNK`] bytes that never
//! cross a page of process memory, so a fault names one page. A transfer
//! that the IOMMU refused (the fault record names this device) becomes an
//! HMM device fault — resolved with CPU semantics (demand-zero, COW break,
//! swap-in) and prefault — and the transfer is replayed. A fault HMM cannot
//! resolve fails the job with the address and the access; the device and
//! the kernel carry on.
//!
//! The fault records are not a complete channel: a device *write* through
//! a translation the IOTLB holds as read-only is dropped by QEMU without a
//! fault record (the cached permission check never reaches the page walk
//! that records faults). So before each transfer the engine notes whether
//! the mirror entry permits it; a transfer it could not have permitted is
//! treated as faulted even without a record (counted as `silent_faults`).
//!
//! The bounce page is kernel memory mapped in the device's table *above*
//! the user half (IOVA [`BOUNCE_IOVA`]): the device reaches it, no process
//! address does, and no invalidation of user ranges touches it.

use super::{HmmAccel, JobError};
use crate::cycles;
use crate::mm::direct;
use devices::edu::{DmaRequest, Direction};
use devices::vtd::Access;
use hmm::DeviceFaultKind;

/// Bytes per transfer (edu takes at most 4095 at buffer offset 0; half a
/// page keeps transfers page-aligned).
pub const CHUNK: u64 = 2048;
/// Where the bounce page sits in every edu mirror table.
pub const BOUNCE_IOVA: u64 = 0xffff_ffff_f000;
/// Give up on a transfer that keeps faulting (a livelock guard).
const MAX_REPLAYS: u32 = 8;

/// Process ranges cut into (address, length) pieces within one page and
/// at most CHUNK bytes.
fn pieces(addr: u64, len: u64) -> impl Iterator<Item = (u64, u64)> {
    let end = addr + len;
    let mut at = addr;
    core::iter::from_fn(move || {
        if at >= end {
            return None;
        }
        let n = (end - at).min(CHUNK).min(4096 - at % 4096);
        let piece = (at, n);
        at += n;
        Some(piece)
    })
}

impl HmmAccel {
    /// One DMA, with device faults resolved and the transfer replayed.
    fn transfer(&mut self, dir: Direction, iova: u64, count: u64) -> Result<(), JobError> {
        let p = crate::platform::init().map_err(JobError::Platform)?;
        let binding = self.binding.as_ref().ok_or(JobError::NotBound)?;
        let req = DmaRequest::new(dir, devices::vtd::Iova::new(iova), 0, count as u16).map_err(JobError::Request)?;
        let write = dir == Direction::ToRam;
        for _ in 0..=MAX_REPLAYS {
            let permitted = iova >= hmm::USER_END || binding.mirror.get(iova).is_some_and(|l| l.write || !write);
            self.stats.transfers += 1;
            let mut result = p.accels[self.index].lock().dma(&p.iommu, &req);
            if result.is_ok() && !permitted {
                // Completed without a record, but the entry did not allow it.
                self.stats.silent_faults += 1;
                let access = if write { Access::Write } else { Access::Read };
                let source = p.accels[self.index].lock().bdf();
                result = Err(crate::platform::DmaError::Fault(devices::vtd::FaultRecord { addr: iova & !0xfff, access, reason: 0, source }));
            }
            match result {
                Ok(()) => {
                    if dir == Direction::ToRam && iova < hmm::USER_END {
                        binding.mirror.set_dirty(iova);
                    }
                    return Ok(());
                }
                Err(crate::platform::DmaError::Fault(rec)) => {
                    let t0 = cycles::now();
                    let write = rec.access == Access::Write;
                    let _ = dir;
                    if rec.addr >= hmm::USER_END {
                        // Beyond every process address: nothing to fault in.
                        return Err(JobError::Fault { addr: rec.addr, write, kind: DeviceFaultKind::Cpu(hmm::CpuFaultError::NoVma) });
                    }
                    match binding.mirror.fault(rec.addr, 1, write) {
                        Ok(out) => {
                            self.failed_pages.remove(&rec.addr);
                            self.stats.faults_resolved += 1;
                            self.stats.pages_populated += out.pages;
                            self.stats.fault_cycles += cycles::now().wrapping_sub(t0);
                            self.stats.replays += 1;
                        }
                        Err(e) => {
                            if self.failed_pages.len() < 4096 {
                                self.failed_pages.insert(e.addr & !0xfff);
                            }
                            self.stats.faults_failed += 1;
                            return Err(JobError::Fault { addr: e.addr, write, kind: e.kind });
                        }
                    }
                }
                Err(e) => return Err(JobError::Dma(e)),
            }
        }
        Err(JobError::Fault { addr: iova & !0xfff, write: dir == Direction::ToRam, kind: DeviceFaultKind::TooManyRetries })
    }

    /// Read `len` bytes of process memory at `src` through the device.
    pub fn read(&mut self, src: u64, len: u64) -> Result<alloc::vec::Vec<u8>, JobError> {
        let mut out = alloc::vec::Vec::with_capacity(len as usize);
        for (at, n) in pieces(src, len) {
            self.transfer(Direction::ToDevice, at, n)?;
            self.transfer(Direction::ToRam, BOUNCE_IOVA, n)?;
            let mut buf = alloc::vec![0u8; n as usize];
            direct::read_frame(self.bounce.frame(), 0, &mut buf);
            out.extend_from_slice(&buf);
        }
        self.stats.jobs += 1;
        Ok(out)
    }

    /// Write `data` into process memory at `dst` through the device.
    pub fn write(&mut self, dst: u64, data: &[u8]) -> Result<(), JobError> {
        let mut off = 0usize;
        for (at, n) in pieces(dst, data.len() as u64) {
            // SAFETY: the bounce frame belongs to this accelerator; the
            // device reads it only during the transfers below.
            unsafe { direct::write_frame(self.bounce.frame(), 0, &data[off..off + n as usize]) };
            self.transfer(Direction::ToDevice, BOUNCE_IOVA, n)?;
            self.transfer(Direction::ToRam, at, n)?;
            off += n as usize;
        }
        self.stats.jobs += 1;
        Ok(())
    }

    /// Copy `len` bytes of process memory from `src` to `dst` on the device.
    pub fn copy(&mut self, dst: u64, src: u64, len: u64) -> Result<(), JobError> {
        let mut done = 0;
        while done < len {
            let (s, d) = (src + done, dst + done);
            let n = (len - done).min(CHUNK).min(4096 - s % 4096).min(4096 - d % 4096);
            self.transfer(Direction::ToDevice, s, n)?;
            self.transfer(Direction::ToRam, d, n)?;
            done += n;
        }
        self.stats.jobs += 1;
        Ok(())
    }
}
