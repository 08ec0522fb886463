//! HMM end to end: each edu accelerator is an HMM device whose VT-d
//! domain is its mirror of a process (IOVA == process virtual address).
//!
//! ```text
//!  process (aspace) ──notifier──► ProcessHmm (hmm::Mm) ──► Mirror table ──is──► VT-d domain
//!        ▲                                   │                                     ▲
//!        │ fault_round (CPU semantics)       │ update(): IOTLB invalidate          │ walks
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
//! the address space, which hands the round's pages to HMM's commit (mirror
//! table, driver update) under its lock, and whose notifier enters HMM, whose driver update takes
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
use hmm::{DeviceFaultKind, MirrorAccess};
use crate::sync::{LockRank, RankedMutex};
use devices::pci::Bdf;
use spin::Once;

/// Why a job failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobError {
    /// The accelerator mirrors no process.
    NotBound,
    /// No such context on this accelerator.
    NoContext,
    /// Switching the device to the job's context failed.
    Iommu(devices::vtd::IommuError),
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
            Self::NoContext => f.write_str("no such context on this accelerator"),
            Self::Iommu(e) => write!(f, "{e}"),
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
                    DeviceFaultKind::ReadOnly => "the accelerator's binding to this process is read-only",
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
    /// The process already has a context here.
    AlreadyBound(ContextId),
    TooManyContexts,
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Platform(e) => write!(f, "devices unavailable: {e}"),
            Self::NoTableMemory => f.write_str("no memory for the mirror table"),
            Self::Iommu(e) => write!(f, "{e}"),
            Self::AlreadyBound(id) => write!(f, "the process is already bound here ({id})"),
            Self::TooManyContexts => write!(f, "an accelerator holds at most {MAX_CONTEXTS} contexts"),
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
    /// Times the device's context entry was switched to another context.
    pub context_switches: u64,
}

impl JobStats {
    /// Fault rounds (record → HMM → replay): one per resolved device fault;
    /// per job this is the figure a batched fault path keeps near 1.
    pub fn fault_rounds(&self) -> u64 {
        self.faults_resolved
    }
}

/// One context of an accelerator: a bound process, its own mirror, its own
/// VT-d domain (the mirror's table), its permission and bounce page.
pub struct Context {
    pub id: ContextId,
    pub mm: Arc<KernelMm>,
    pub mirror: Arc<KernelMirror>,
    pub domain: DomainId,
    /// This context's bounce page (mapped at [`jobs::BOUNCE_IOVA`]): zeroed
    /// at bind, freed after unbind has detached the device and flushed its
    /// IOTLB — never shared with another context.
    bounce: Frame,
}

/// The name an old single-binding API used for a context.
pub type Binding = Context;

/// A context's number on its accelerator (never reused while it lives).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ContextId(pub u32);

impl fmt::Display for ContextId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "context {}", self.0)
    }
}

/// The most contexts one accelerator holds (each costs a domain, a mirror
/// table and a bounce page).
pub const MAX_CONTEXTS: usize = 8;

/// One edu as an HMM device, with up to [`MAX_CONTEXTS`] contexts.
///
/// The edu has one requester id, so its VT-d context entry names one
/// domain at a time: a job first makes its context the attached one
/// (`activate`). On QEMU 7.2 a switch must also flush the previous
/// domain's IOTLB entries — QEMU keys them by requester id and page, not by
/// domain id, so they would otherwise be used by the next context (the
/// VT-d spec tags them by domain; QEMU does not check). `Iommu::attach`
/// does both; `stats.context_switches` counts them.
pub struct HmmAccel {
    index: usize,
    device: Arc<hmm::Device>,
    driver: Arc<EduMirrorDriver>,
    /// The edu's PCI address (its VT-d source id), fixed at start-up.
    bdf: Bdf,
    contexts: Vec<Context>,
    /// The context jobs run on (`select`); the newest after a bind.
    selected: Option<ContextId>,
    next_context: u32,
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
                    let bdf = p.accels[index].lock().bdf();
                    let driver = Arc::new(EduMirrorDriver::new(bdf));
                    let device = hmm::Device::register(driver.clone());
                    Ok(RankedMutex::new(
                        LockRank::HmmAccel,
                        HmmAccel { index, device, driver, bdf, contexts: Vec::new(), selected: None, next_context: 0, queue: queue::JobQueue::default(), failed_pages: Default::default(), stats: JobStats::default() },
                    ))
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

    /// The selected context (the one jobs run on), if any.
    pub fn binding(&self) -> Option<&Context> {
        let id = self.selected?;
        self.contexts.iter().find(|c| c.id == id)
    }

    /// Every context, oldest first.
    pub fn contexts(&self) -> &[Context] {
        &self.contexts
    }

    /// The context of `process` on this accelerator, if bound.
    pub fn context_of(&self, process: &ProcessHmm) -> Option<ContextId> {
        self.contexts.iter().find(|c| Arc::ptr_eq(&c.mm, &process.mm)).map(|c| c.id)
    }

    /// Make `id` the context jobs run on.
    pub fn select(&mut self, id: ContextId) -> Result<(), JobError> {
        if !self.contexts.iter().any(|c| c.id == id) {
            return Err(JobError::NoContext);
        }
        self.selected = Some(id);
        Ok(())
    }

    /// Whether the last device fault on `page` failed.
    pub fn fault_failed(&self, page: u64) -> bool {
        self.failed_pages.contains(&(page & !0xfff))
    }

    /// The single-context shorthand: every other context is removed, and
    /// `process` becomes the only one, read-write, selected.
    pub fn bind(&mut self, process: &ProcessHmm) -> Result<(), BindError> {
        self.unbind();
        self.add_context(process, MirrorAccess::ReadWrite).map(|_| ())
    }

    /// Add a context for `process` with `access` (never more than the
    /// CPU's), and select it. The device's context entry is switched to it
    /// when a job first runs on it.
    pub fn add_context(&mut self, process: &ProcessHmm, access: MirrorAccess) -> Result<ContextId, BindError> {
        if let Some(id) = self.context_of(process) {
            return Err(BindError::AlreadyBound(id));
        }
        if self.contexts.len() >= MAX_CONTEXTS {
            return Err(BindError::TooManyContexts);
        }
        let p = platform::init().map_err(BindError::Platform)?;
        let bounce = frames::alloc_zeroed().map_err(|_| BindError::NoTableMemory)?;
        let mirror = process.mm.mirror_with(&self.device, KernelTableMemory, access).map_err(|_| BindError::NoTableMemory)?;
        if mirror.map_private(jobs::BOUNCE_IOVA, bounce.start_address(), true).is_err() {
            process.mm.unmirror(&mirror);
            return Err(BindError::NoTableMemory);
        }
        let domain = match p.iommu.lock().alloc_domain_id() {
            Ok(d) => d,
            Err(e) => {
                process.mm.unmirror(&mirror);
                return Err(BindError::Iommu(e));
            }
        };
        self.driver.add(mirror.id(), domain);
        self.next_context += 1;
        let id = ContextId(self.next_context);
        self.contexts.push(Context { id, mm: process.mm.clone(), mirror, domain, bounce });
        self.selected = Some(id);
        Ok(id)
    }

    /// Point the device's context entry at the selected context (a context
    /// switch, if another was attached).
    fn activate(&mut self) -> Result<(), JobError> {
        let ctx = self.binding().ok_or(JobError::NotBound)?;
        if !ctx.mirror.is_alive() {
            return Err(JobError::Fault { addr: 0, write: false, kind: DeviceFaultKind::Released });
        }
        if self.driver.attached() == Some(ctx.mirror.id()) {
            return Ok(());
        }
        let (mirror, domain, root) = (ctx.mirror.id(), ctx.domain, ctx.mirror.root());
        let p = platform::init().map_err(JobError::Platform)?;
        p.iommu.lock().attach(self.bdf, domain, root).map_err(JobError::Iommu)?;
        self.driver.set_attached(Some(mirror));
        self.stats.context_switches += 1;
        log::debug!("context.switch accel={} did={}", self.index, domain.0);
        Ok(())
    }

    /// Remove context `id`: the device loses it (if attached, its context
    /// entry is cleared), then the mirror is released and the domain id and
    /// bounce page given back. The other contexts keep working.
    pub fn remove_context(&mut self, id: ContextId) -> Result<(), JobError> {
        let i = self.contexts.iter().position(|c| c.id == id).ok_or(JobError::NoContext)?;
        let ctx = self.contexts.remove(i);
        // If the process exited first, its RELEASE already made the driver
        // detach and give the domain id back: never twice (a domain id freed
        // twice could tag two contexts' IOTLB entries alike).
        if let Some((domain, attached)) = self.driver.take(ctx.mirror.id()) {
            if let Ok(p) = platform::init() {
                let mut iommu = p.iommu.lock();
                if attached {
                    let _ = iommu.detach(self.bdf);
                } else {
                    let _ = iommu.invalidate_domain(domain);
                }
                iommu.free_domain_id(domain);
            }
        }
        self.queue.drop_context(id);
        if self.selected == Some(id) {
            self.selected = self.contexts.last().map(|c| c.id);
        }
        self.failed_pages.clear();
        ctx.mm.unmirror(&ctx.mirror);
        // `ctx` (with its bounce frame) is dropped only now: the device was
        // detached or its domain's IOTLB flushed above.
        drop(ctx);
        Ok(())
    }

    /// Remove every context.
    pub fn unbind(&mut self) {
        while let Some(id) = self.contexts.last().map(|c| c.id) {
            let _ = self.remove_context(id);
        }
    }
}
