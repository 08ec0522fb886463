//! One edu accelerator as the kernel drives it: a transfer starts, the CPU
//! halts until the completion MSI, and the IOMMU's fault records decide
//! whether the transfer really happened.
//!
//! ```text
//!  dma(req): [drop this device's stale records, only if its last transfer was abandoned]
//!            ─► start ─► sleep until MSI (≤ 2 s virtual)
//!            ─► ack edu irq ─► claim_fault(this device):
//!                 Fault ─► Err(Fault { addr, read/write, reason })
//!                 Lost  ─► Err(Fault) (records overflowed: not provably clean)
//!                 Clean ─► Ok
//! ```
//!
//! edu reports a DMA the IOMMU refused as a normal completion (a refused
//! read leaves zeros in its buffer), so without the fault check a failed
//! transfer would look like success with zeros — never acceptable.
//!
//! Transfers on the two accelerators (and the swap disk) overlap: while
//! one sleeps in its wait, another runs and may fault. The IOMMU driver
//! parks records by requester ([`devices::vtd::mailbox`]), so each
//! transfer claims exactly its own — before, a reader dropped the other
//! device's record with a warning and that device's faulted transfer
//! looked clean (found by the `smp_stress` kernel). Records of this device
//! can be left over only by its own transfer that timed out: only then is
//! the next transfer preceded by a sweep (`undrained`). A transfer with
//! nothing pending costs one fault-status read, no record decoding and no
//! allocation.

use super::KernelIommu;
use crate::irq::{self, Vector};
use core::fmt;
use devices::edu::{DmaRequest, DmaRequestError, Edu, EduError};
use devices::mmio::MmioRegion;
use devices::pci::{Bdf, Ecam, PciDevice};
use devices::vtd::{FaultClaim, FaultRecord};
use crate::sync::RankedMutex;

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
    /// Its last transfer was abandoned (timed out): records it may still
    /// cause are dropped before the next one.
    undrained: bool,
}

impl Accelerator {
    pub(super) fn new(bdf: Bdf, regs: MmioRegion, ecam: &Ecam<MmioRegion>, dev: &PciDevice, index: usize) -> Result<Self, super::PlatformError> {
        let edu = Edu::new(regs).map_err(|e| super::PlatformError::Edu(bdf, e))?;
        edu.check_alive(0x1234_5678 ^ index as u32).map_err(|e| super::PlatformError::Edu(bdf, e))?;
        let vector = Vector::alloc()?;
        let (addr, data) = irq::msi_message(&vector);
        ecam.enable_msi(dev, addr, data as u16).map_err(|e| super::PlatformError::Pci(alloc::format!("{e}")))?;
        Ok(Accelerator { index, bdf, edu, vector, transfers: 0, undrained: true })
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
        if core::mem::take(&mut self.undrained) {
            let stale = iommu.lock().discard_faults(self.bdf);
            if stale > 0 {
                log::warn!("{stale} IOMMU fault record(s) of accel{}'s abandoned transfer dropped", self.index);
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
            self.undrained = true;
            return Err(DmaError::Timeout);
        }
        match iommu.lock().claim_fault(self.bdf) {
            FaultClaim::Fault(rec) => Err(DmaError::Fault(rec)),
            FaultClaim::Lost => {
                // Records were lost: we cannot prove our transfer was clean.
                // Routine when both accelerators fault at once (this VT-d
                // has one record): the job resolves and replays, so debug.
                log::debug!("IOMMU fault records overflowed during accel{}'s transfer", self.index);
                Err(DmaError::Fault(FaultRecord { addr: req.ram().as_u64() & !0xfff, access: match req.direction() {
                    devices::edu::Direction::ToDevice => devices::vtd::Access::Read,
                    devices::edu::Direction::ToRam => devices::vtd::Access::Write,
                }, reason: 0, source: self.bdf }))
            }
            FaultClaim::Clean => Ok(()),
        }
    }
}
