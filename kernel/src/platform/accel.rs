//! One edu accelerator as the kernel drives it: a transfer starts, the CPU
//! halts until the completion MSI, and the IOMMU's fault records decide
//! whether the transfer really happened.
//!
//! ```text
//!  dma(req): [take stale faults, only if a transfer was left undrained] ─► start ─► hlt until MSI (≤ 2 s virtual)
//!            ─► ack edu irq ─► take faults: one from this device?
//!                 yes ─► Err(Fault { addr, read/write, reason })
//!                 no  ─► Ok
//! ```
//!
//! edu reports a DMA the IOMMU refused as a normal completion (a refused
//! read leaves zeros in its buffer), so without the fault check a failed
//! transfer would look like success with zeros — never acceptable.
//!
//! Every transfer drains the fault records after its completion, so records
//! can be left over only by a transfer that timed out (or from before the
//! first transfer): only then does the next transfer sweep them first
//! ([`UNDRAINED`]). A transfer with nothing pending costs one fault-status
//! read, no record decoding and no allocation.

use super::KernelIommu;
use crate::irq::{self, Vector};
use core::fmt;
use devices::edu::{DmaRequest, DmaRequestError, Edu, EduError};
use devices::mmio::MmioRegion;
use devices::pci::{Bdf, Ecam, PciDevice};
use devices::vtd::FaultRecord;
use crate::sync::RankedMutex;

/// Fault records may be pending that no transfer drained (set at boot and
/// when a transfer times out; any accelerator's next transfer sweeps them).
static UNDRAINED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(true);

/// Fault records one transfer drained that belong to another accelerator:
/// the IOMMU has one fault-record register for every device, so a transfer
/// that drains it may take a record of another device's transfer still in
/// flight. Dropping it would make that transfer look clean (its refused DMA
/// is a normal completion). Kept here for the owner, and touched only under
/// the IOMMU lock: when a transfer looks, its record is either still in the
/// IOMMU or here.
static HANDED_OVER: spin::Mutex<[Option<FaultRecord>; 8]> = spin::Mutex::new([None; 8]);

/// Cycles spent in the completion wait of every transfer: under `-icount`
/// the guest clock jumps over the device's virtual DMA time while the CPU
/// halts, so benchmarks subtract this to count the CPU's own instructions
/// (the wait loop's few instructions and the interrupt go with it).
pub static WAIT_CYCLES: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// How long a transfer may take (virtual time; edu needs 100 ms).
pub const DMA_TIMEOUT_US: u64 = 2_000_000;

/// Why a transfer failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DmaError {
    /// Refused before touching the device.
    Request(DmaRequestError),
    Device(EduError),
    /// No completion interrupt in time.
    Timeout,
    /// The IOMMU refused the device's access.
    Fault(FaultRecord),
}

impl From<DmaRequestError> for DmaError {
    fn from(e: DmaRequestError) -> Self {
        DmaError::Request(e)
    }
}
impl From<EduError> for DmaError {
    fn from(e: EduError) -> Self {
        DmaError::Device(e)
    }
}

impl fmt::Display for DmaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Request(e) => write!(f, "{e}"),
            Self::Device(e) => write!(f, "{e}"),
            Self::Timeout => write!(f, "no DMA completion within {} ms", DMA_TIMEOUT_US / 1000),
            Self::Fault(r) => write!(f, "transfer failed: {r}"),
        }
    }
}

/// An edu device with its interrupt.
pub struct Accelerator {
    index: usize,
    bdf: Bdf,
    edu: Edu<MmioRegion>,
    vector: Vector,
    transfers: u64,
}

impl Accelerator {
    pub(super) fn new(bdf: Bdf, regs: MmioRegion, ecam: &Ecam<MmioRegion>, dev: &PciDevice, index: usize) -> Result<Self, super::PlatformError> {
        let edu = Edu::new(regs).map_err(|e| super::PlatformError::Edu(bdf, e))?;
        edu.check_alive(0x1234_5678 ^ index as u32).map_err(|e| super::PlatformError::Edu(bdf, e))?;
        let vector = Vector::alloc()?;
        let (addr, data) = irq::msi_message(&vector);
        ecam.enable_msi(dev, addr, data as u16).map_err(|e| super::PlatformError::Pci(alloc::format!("{e}")))?;
        Ok(Accelerator { index, bdf, edu, vector, transfers: 0 })
    }

    pub fn index(&self) -> usize {
        self.index
    }
    pub fn bdf(&self) -> Bdf {
        self.bdf
    }
    pub fn vector(&self) -> u8 {
        self.vector.number()
    }
    pub fn edu(&self) -> &Edu<MmioRegion> {
        &self.edu
    }
    /// Transfers started so far.
    pub fn transfers(&self) -> u64 {
        self.transfers
    }

    /// Run one transfer to completion; a fault recorded for this device
    /// during it makes it fail with that fault.
    pub fn dma(&mut self, iommu: &RankedMutex<KernelIommu>, req: &DmaRequest) -> Result<(), DmaError> {
        // Faults left from earlier transfers would be misattributed (and,
        // with one record, would hide ours): clear them first.
        if UNDRAINED.swap(false, core::sync::atomic::Ordering::AcqRel) {
            for stale in iommu.lock().take_faults().records {
                log::warn!("unclaimed IOMMU fault before a transfer: {stale}");
            }
        }
        {
            // No transfer of ours is in flight: anything kept for us is stale.
            let _iommu = iommu.lock();
            for slot in HANDED_OVER.lock().iter_mut() {
                if slot.is_some_and(|r| r.source == self.bdf) {
                    *slot = None;
                }
            }
        }
        let before = self.vector.count();
        self.edu.start_dma(req)?;
        self.transfers += 1;
        let t0 = crate::cycles::now();
        let waited = irq::wait_until(DMA_TIMEOUT_US, || self.vector.count() != before);
        WAIT_CYCLES.fetch_add(crate::cycles::now().wrapping_sub(t0), core::sync::atomic::Ordering::Relaxed);
        self.edu.ack_interrupt();
        if waited.is_err() {
            // The device may still fault after we stop waiting.
            UNDRAINED.store(true, core::sync::atomic::Ordering::Release);
            return Err(DmaError::Timeout);
        }
        let mut io = iommu.lock();
        let faults = io.take_faults();
        let mut kept = HANDED_OVER.lock();
        let mut ours = kept.iter_mut().find(|s| s.is_some_and(|r| r.source == self.bdf)).and_then(Option::take);
        for rec in faults.records {
            if rec.source == self.bdf {
                ours.get_or_insert(rec);
            } else if let Some(free) = kept.iter_mut().find(|s| s.is_none()) {
                log::debug!("IOMMU fault of another device during accel{}'s transfer, handed over: {rec}", self.index);
                *free = Some(rec);
            } else {
                log::warn!("IOMMU fault from another source during accel{}'s transfer (nowhere to keep it): {rec}", self.index);
            }
        }
        drop(kept);
        drop(io);
        match ours {
            Some(rec) => Err(DmaError::Fault(rec)),
            None if faults.overflow => {
                // Records were lost: we cannot prove our transfer was clean.
                log::warn!("IOMMU fault records overflowed during accel{}'s transfer", self.index);
                Err(DmaError::Fault(FaultRecord { addr: req.ram().as_u64() & !0xfff, access: match req.direction() {
                    devices::edu::Direction::ToDevice => devices::vtd::Access::Read,
                    devices::edu::Direction::ToRam => devices::vtd::Access::Write,
                }, reason: 0, source: self.bdf }))
            }
            None => Ok(()),
        }
    }
}
