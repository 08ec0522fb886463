//! HMM end to end: each edu accelerator is an HMM device whose VT-d
//! domain is its mirror of a process (IOVA == process virtual address).
//!
//! ```text
//!  process (aspace) ──notifier──► ProcessHmm (hmm::Mm) ──► Mirror table ──is──► VT-d domain
//!        ▲                                   │                                     ▲
//!        │ fault_in (CPU semantics)          │ update(): IOTLB invalidate          │ walks
//!        └──────────── hmm::Mm::fault ◄── IOMMU fault record ◄── edu DMA ───────────┘
//! ```
//!
//! * [`space`]: the kernel address space as HMM's `MirroredSpace`, and the
//!   notifier hook (kernel change → HMM event table);
//! * [`driver`]: the device driver's `update` — IOTLB invalidation;
//! * [`jobs`]: read / write / copy jobs on process addresses, with device
//!   faults resolved and transfers replayed; [`queue`]: the per-device queue.
//!
//! Lock order: accelerator → address space → HMM mirrors → mirror table →
//! edu device → IOMMU. (A job holds its accelerator; a device fault enters
//! the address space, whose notifier enters HMM, whose driver update takes
//! the IOMMU; a DMA holds its edu device, then reads the IOMMU's fault
//! records.) The accelerator, address-space, device and IOMMU locks are
//! [`crate::sync::RankedMutex`]es: a reversed pair panics in debug builds.
//!
//! Isolation — which addresses a job may reach, and why no byte passes
//! between processes through a kernel buffer — is stated in [`jobs`].

pub mod driver;
pub mod jobs;
pub mod queue;
pub mod space;

pub use driver::EduMirrorDriver;
pub use jobs::{SpanError, UserSpan};
pub use queue::{Job, JobId, JobOutput};
pub use space::{KernelMirror, KernelMm, ProcessHmm};

use crate::mm::frames::{self, Frame};
use crate::platform::{self, DmaError, KernelTableMemory};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use devices::edu::DmaRequestError;
use devices::vtd::DomainId;
use hmm::DeviceFaultKind;
use crate::sync::{LockRank, RankedMutex};
use devices::pci::Bdf;
use spin::Once;

/// Why a job failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobError {
    /// The accelerator mirrors no process.
    NotBound,
    /// The job's range was refused before the device was touched.
    Span(SpanError),
    /// No kernel memory for the job's result.
    NoMemory,
    Platform(&'static str),
    Request(DmaRequestError),
    Dma(DmaError),
    /// A device fault HMM could not resolve.
    Fault { addr: u64, write: bool, kind: DeviceFaultKind },
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotBound => f.write_str("the accelerator is not bound to a process"),
            Self::Span(e) => write!(f, "{e}"),
            Self::NoMemory => f.write_str("no kernel memory for the job's result"),
            Self::Platform(e) => write!(f, "devices unavailable: {e}"),
            Self::Request(e) => write!(f, "{e}"),
            Self::Dma(e) => write!(f, "{e}"),
            Self::Fault { addr, write, kind } => {
                let access = if *write { "write" } else { "read" };
                let why = match kind {
                    DeviceFaultKind::Cpu(hmm::CpuFaultError::NoVma) => "no mapping there",
                    DeviceFaultKind::Cpu(hmm::CpuFaultError::Protection) => "not permitted by the mapping's protection",
                    DeviceFaultKind::Cpu(hmm::CpuFaultError::OutOfMemory) => "out of memory",
                    DeviceFaultKind::Released => "the process's mirror is gone",
                    DeviceFaultKind::TooManyRetries => "invalidations kept racing the fault",
                    DeviceFaultKind::NoTableMemory => "no memory for the mirror table",
                    DeviceFaultKind::BadRange => "not a user range HMM can fault",
                };
                write!(f, "device {access} at {addr:#x} failed: {why}")
            }
        }
    }
}

impl From<SpanError> for JobError {
    fn from(e: SpanError) -> Self {
        JobError::Span(e)
    }
}

/// Why binding failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindError {
    Platform(&'static str),
    NoTableMemory,
    Iommu(devices::vtd::IommuError),
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Platform(e) => write!(f, "devices unavailable: {e}"),
            Self::NoTableMemory => f.write_str("no memory for the mirror table"),
            Self::Iommu(e) => write!(f, "{e}"),
        }
    }
}

/// Counters of one accelerator (for the console, the demo, the benchmarks).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JobStats {
    pub jobs: u64,
    pub transfers: u64,
    pub faults_resolved: u64,
    pub faults_failed: u64,
    /// Transfers the mirror entry could not have permitted that completed
    /// without a fault record (see `jobs`), treated as faults.
    pub silent_faults: u64,
    pub replays: u64,
    pub pages_populated: u64,
    /// Cycles spent from a fault record to the replay (fault resolution).
    pub fault_cycles: u64,
}

/// The process an accelerator mirrors.
pub struct Binding {
    pub mm: Arc<KernelMm>,
    pub mirror: Arc<KernelMirror>,
    pub domain: DomainId,
    /// This binding's bounce page (mapped at [`jobs::BOUNCE_IOVA`]): zeroed
    /// at bind, freed after unbind has detached the device and flushed its
    /// IOTLB — never shared with another binding.
    bounce: Frame,
}

/// One edu as an HMM device.
pub struct HmmAccel {
    index: usize,
    device: Arc<hmm::Device>,
    driver: Arc<EduMirrorDriver>,
    /// The edu's PCI address (its VT-d source id), fixed at start-up.
    bdf: Bdf,
    binding: Option<Binding>,
    queue: queue::JobQueue,
    /// Pages whose last device fault could not be resolved (for the
    /// console's mirror snapshot); bounded.
    failed_pages: alloc::collections::BTreeSet<u64>,
    pub stats: JobStats,
}

static ACCELS: Once<Result<Vec<RankedMutex<HmmAccel>>, &'static str>> = Once::new();

/// The accelerators (bringing the platform up on first use).
pub fn accels() -> Result<&'static [RankedMutex<HmmAccel>], &'static str> {
    ACCELS
        .call_once(|| {
            let p = platform::init()?;
            (0..p.accels.len())
                .map(|index| {
                    let driver = Arc::new(EduMirrorDriver::new());
                    let device = hmm::Device::register(driver.clone());
                    let bdf = p.accels[index].lock().bdf();
                    Ok(RankedMutex::new(LockRank::HmmAccel, HmmAccel { index, device, driver, bdf, binding: None, queue: queue::JobQueue::default(), failed_pages: Default::default(), stats: JobStats::default() }))
                })
                .collect()
        })
        .as_ref()
        .map(|v| v.as_slice())
        .map_err(|e| *e)
}

impl HmmAccel {
    pub fn index(&self) -> usize {
        self.index
    }

    pub fn driver(&self) -> &EduMirrorDriver {
        &self.driver
    }

    pub fn binding(&self) -> Option<&Binding> {
        self.binding.as_ref()
    }

    /// Whether the last device fault on `page` failed.
    pub fn fault_failed(&self, page: u64) -> bool {
        self.failed_pages.contains(&(page & !0xfff))
    }

    /// Mirror `process` on this device: a new mirror (its table becomes
    /// the device's VT-d domain) replaces any previous binding.
    pub fn bind(&mut self, process: &ProcessHmm) -> Result<(), BindError> {
        self.unbind();
        let p = platform::init().map_err(BindError::Platform)?;
        let bounce = frames::alloc_zeroed().map_err(|_| BindError::NoTableMemory)?;
        let mirror = process.mm.mirror(&self.device, KernelTableMemory).map_err(|_| BindError::NoTableMemory)?;
        if mirror.map_private(jobs::BOUNCE_IOVA, bounce.start_address(), true).is_err() {
            process.mm.unmirror(&mirror);
            return Err(BindError::NoTableMemory);
        }
        let mut iommu = p.iommu.lock();
        let domain = match iommu.alloc_domain_id() {
            Ok(d) => d,
            Err(e) => {
                drop(iommu);
                process.mm.unmirror(&mirror);
                return Err(BindError::Iommu(e));
            }
        };
        self.driver.set_domain(Some(domain));
        if let Err(e) = iommu.attach(self.bdf, domain, mirror.root()) {
            iommu.free_domain_id(domain);
            drop(iommu);
            self.driver.set_domain(None);
            process.mm.unmirror(&mirror);
            return Err(BindError::Iommu(e));
        }
        self.driver.set_attached(mirror.id(), self.bdf);
        self.binding = Some(Binding { mm: process.mm.clone(), mirror, domain, bounce });
        Ok(())
    }

    /// Stop mirroring: the device loses its context entry (all its DMA
    /// faults), then the mirror is released.
    pub fn unbind(&mut self) {
        let Some(b) = self.binding.take() else { return };
        // If the process exited first, its RELEASE already made the driver
        // detach the device and give the domain id back: never twice (a
        // domain id freed twice could tag two devices' IOTLB entries alike).
        if let Some(domain) = self.driver.take_domain() {
            if let Ok(p) = platform::init() {
                let mut iommu = p.iommu.lock();
                let _ = iommu.detach(self.bdf);
                iommu.free_domain_id(domain);
            }
        }
        self.failed_pages.clear();
        b.mm.unmirror(&b.mirror);
        // `b` (with its bounce frame) is dropped only now: the device was
        // detached and its IOTLB flushed above.
        drop(b);
    }
}
