//! The VT-d IOMMU (legacy mode), register-based invalidation.
//!
//! ```text
//!  RTADDR ─► root table (256 × 16 B, one per bus)
//!              └─► context table (256 × 16 B, one per devfn)
//!                    lo: second-level table root | present
//!                    hi: address width (2 = 48-bit, 4 levels) | domain id << 8
//!                      └─► 4-level second-level table (an hmm::pt table, VtdLayout)
//! ```
//!
//! Protocol:
//! * **Attach** writes a context entry; if one was present, a
//!   device-selective context-cache invalidation and a domain IOTLB flush
//!   of the old domain follow, since QEMU caches both.
//! * **Map / unmap / protect** (on a [`Domain`] or an HMM mirror's table)
//!   return an [`IotlbFlush`]; [`Iommu::flush`] issues page-selective
//!   invalidations (address mask for aligned blocks) or one domain-wide,
//!   and only then frees unlinked table nodes. A not-present → present
//!   change needs no flush here (CAP.CM = 0) and gets none.
//! * **Faults**: the IOMMU logs a refused DMA in its fault record(s) and
//!   raises the fault event (an MSI). After a transfer its driver calls
//!   [`Iommu::claim_fault`]: the records are read and cleared, and records
//!   of *other* devices are parked for them (see [`mailbox`]), since
//!   transfers on different devices overlap.
//!
//! Invalidation is register-based (CCMD, IVA/IOTLB), not queued: every
//! command completes before the register read returns on QEMU, so the
//! synchronous form is both simpler and no slower; QI would add a ring,
//! wait descriptors and a status write for nothing here.

mod domain;
mod fault;
mod flush;
mod layout;
pub mod mailbox;
pub mod regs;

pub use domain::{Domain, DomainId, Iova, MapError, Perm};
pub use fault::{Access, FaultRecord};
pub use flush::{plan, IotlbCommand, IotlbFlush, Plan, DOMAIN_THRESHOLD};
pub use layout::VtdLayout;
pub use mailbox::FaultClaim;

use crate::mmio::Registers;
use crate::pci::Bdf;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::Ordering;
use hmm::pt::{PageTable, TableMemory};
use regs::*;
use x86_64::PhysAddr;

/// Why the IOMMU refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IommuError {
    /// The hardware cannot do 4-level (48-bit) second-level tables.
    No4LevelTables,
    /// A command did not complete.
    Timeout(&'static str),
    NoTableMemory,
    /// Every domain id is in use.
    NoDomainIds,
    /// The device is not attached to any domain.
    NotAttached(Bdf),
}

impl fmt::Display for IommuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::No4LevelTables => f.write_str("the IOMMU does not support 4-level tables (use intel-iommu,aw-bits=48)"),
            Self::Timeout(op) => write!(f, "IOMMU command did not complete: {op}"),
            Self::NoTableMemory => f.write_str("no memory for an IOMMU table"),
            Self::NoDomainIds => f.write_str("no free IOMMU domain id"),
            Self::NotAttached(b) => write!(f, "{b} is not attached to an IOMMU domain"),
        }
    }
}

/// Counters (for the console's statistics and the benchmarks).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IommuStats {
    pub page_invalidations: u64,
    pub domain_invalidations: u64,
    pub global_invalidations: u64,
    pub context_invalidations: u64,
    pub faults: u64,
    pub overflows: u64,
}

/// What [`Iommu::flush`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Page-selective commands issued.
    pub page_commands: usize,
    /// Whether one domain-wide command was used instead.
    pub domain_wide: bool,
}

const CCMD_ICC: u64 = 1 << 63;
const IOTLB_IVT: u64 = 1 << 63;
const IOTLB_DRAIN: u64 = 1 << 49 | 1 << 48;
const SPIN_LIMIT: u32 = 1_000_000;

/// The IOMMU.
pub struct Iommu<R: Registers, M: TableMemory> {
    regs: R,
    mem: M,
    cap: Cap,
    ecap: Ecap,
    version: u32,
    root: PhysAddr,
    /// Context table per bus, allocated on first attach.
    context: Vec<Option<PhysAddr>>,
    /// Domain ids in use (bit per id; 0 reserved).
    dids: Vec<u64>,
    /// Which device uses which domain.
    attached: Vec<(Bdf, DomainId)>,
    /// Fault records read but not yet claimed by their device.
    mailbox: mailbox::Mailbox,
    stats: IommuStats,
}

impl<R: Registers, M: TableMemory> Iommu<R, M> {
    /// Read the capabilities and build an empty root table. Translation is
    /// off until [`Iommu::enable`].
    pub fn new(regs: R, mem: M) -> Result<Self, IommuError> {
        let cap = Cap(regs.read64(CAP));
        let ecap = Ecap(regs.read64(ECAP));
        let version = regs.read32(VER);
        if !cap.supports_4_level() {
            return Err(IommuError::No4LevelTables);
        }
        let root = mem.alloc_table().ok_or(IommuError::NoTableMemory)?;
        let ids = cap.domains().min(1 << 16) as usize;
        let mut dids = alloc::vec![0u64; ids.div_ceil(64)];
        dids[0] = 1; // id 0 is reserved
        Ok(Iommu { regs, mem, cap, ecap, version, root, context: alloc::vec![None; 256], dids, attached: Vec::new(), mailbox: Default::default(), stats: IommuStats::default() })
    }

    pub fn cap(&self) -> Cap {
        self.cap
    }
    pub fn ecap(&self) -> Ecap {
        self.ecap
    }
    /// VER as (major, minor).
    pub fn version(&self) -> (u32, u32) {
        ((self.version >> 4) & 0xf, self.version & 0xf)
    }
    pub fn stats(&self) -> IommuStats {
        self.stats
    }
    pub fn table_memory(&self) -> &M {
        &self.mem
    }

    fn wait(&self, what: &'static str, mut done: impl FnMut() -> bool) -> Result<(), IommuError> {
        for _ in 0..SPIN_LIMIT {
            if done() {
                return Ok(());
            }
            core::hint::spin_loop();
        }
        Err(IommuError::Timeout(what))
    }

    fn gcmd(&self, bit: u32, what: &'static str) -> Result<(), IommuError> {
        let sts = self.regs.read32(GSTS) & GSTS_KEEP_MASK;
        self.regs.write32(GCMD, sts | bit);
        self.wait(what, || self.regs.read32(GSTS) & bit != 0)
    }

    /// Install the root table, invalidate every cache, turn translation on.
    pub fn enable(&mut self) -> Result<(), IommuError> {
        self.regs.write64(RTADDR, self.root.as_u64());
        self.gcmd(GCMD_SRTP, "set root table pointer")?;
        self.context_invalidate(1, 0, 0)?;
        self.iotlb_invalidate(1, 0, 0, 0)?;
        self.stats.global_invalidations += 1;
        self.gcmd(GCMD_TE, "enable translation")
    }

    /// Whether translation is on.
    pub fn enabled(&self) -> bool {
        self.regs.read32(GSTS) & GCMD_TE != 0
    }

    /// A fresh domain id.
    pub fn alloc_domain_id(&mut self) -> Result<DomainId, IommuError> {
        for (w, word) in self.dids.iter_mut().enumerate() {
            if *word != !0 {
                let bit = word.trailing_ones() as usize;
                *word |= 1 << bit;
                return Ok(DomainId((w * 64 + bit) as u16));
            }
        }
        Err(IommuError::NoDomainIds)
    }

    /// Give a domain id back (its devices must be detached).
    pub fn free_domain_id(&mut self, id: DomainId) {
        assert!(!self.attached.iter().any(|(_, d)| *d == id), "{id} still has devices attached");
        self.dids[id.0 as usize / 64] &= !(1 << (id.0 % 64));
    }

    /// A new domain with its own table.
    pub fn new_domain(&mut self, mem: M) -> Result<Domain<M>, IommuError> {
        let id = self.alloc_domain_id()?;
        Domain::new(id, mem).map_err(|_| {
            self.free_domain_id(id);
            IommuError::NoTableMemory
        })
    }

    fn entries(&self, table: PhysAddr) -> &hmm::pt::Node {
        // SAFETY: root and context tables are nodes this driver allocated
        // from `mem` and never frees while it lives; accessed atomically.
        unsafe { self.mem.table(table).as_ref() }
    }

    fn context_table(&mut self, bus: u8) -> Result<PhysAddr, IommuError> {
        if let Some(t) = self.context[bus as usize] {
            return Ok(t);
        }
        let t = self.mem.alloc_table().ok_or(IommuError::NoTableMemory)?;
        let root = self.entries(self.root);
        root[2 * bus as usize + 1].store(0, Ordering::Release);
        root[2 * bus as usize].store(t.as_u64() | 1, Ordering::Release);
        self.context[bus as usize] = Some(t);
        Ok(t)
    }

    /// Point `dev` at a second-level table `root` under domain `id`.
    /// Re-attaching flushes the device's cached context and old domain.
    pub fn attach(&mut self, dev: Bdf, id: DomainId, root: PhysAddr) -> Result<(), IommuError> {
        let ctx = self.context_table(dev.bus)?;
        let e = &self.entries(ctx)[2 * dev.devfn() as usize..2 * dev.devfn() as usize + 2];
        let was_present = e[0].load(Ordering::Acquire) & 1 != 0;
        // Address width 2 = 48-bit (4-level); translation type 0 = untranslated only.
        e[0].store(0, Ordering::Release);
        e[1].store(2 | (id.0 as u64) << 8, Ordering::Release);
        e[0].store(root.as_u64() | 1, Ordering::Release);
        let old = self.attached.iter().position(|(b, _)| *b == dev).map(|i| self.attached.swap_remove(i).1);
        self.attached.push((dev, id));
        if was_present || self.cap.caching_mode() {
            self.context_invalidate(3, dev.source_id(), id.0)?;
            self.iotlb_invalidate(2, old.unwrap_or(id).0, 0, 0)?;
            self.stats.domain_invalidations += 1;
        }
        Ok(())
    }

    /// Remove `dev`'s context entry: its DMA faults from now on.
    pub fn detach(&mut self, dev: Bdf) -> Result<(), IommuError> {
        let i = self.attached.iter().position(|(b, _)| *b == dev).ok_or(IommuError::NotAttached(dev))?;
        let (_, id) = self.attached.swap_remove(i);
        let ctx = self.context[dev.bus as usize].ok_or(IommuError::NotAttached(dev))?;
        let e = &self.entries(ctx)[2 * dev.devfn() as usize..2 * dev.devfn() as usize + 2];
        e[0].store(0, Ordering::Release);
        e[1].store(0, Ordering::Release);
        self.context_invalidate(3, dev.source_id(), id.0)?;
        self.iotlb_invalidate(2, id.0, 0, 0)?;
        self.stats.domain_invalidations += 1;
        Ok(())
    }

    /// The domain `dev` is attached to.
    pub fn domain_of(&self, dev: Bdf) -> Option<DomainId> {
        self.attached.iter().find(|(b, _)| *b == dev).map(|(_, d)| *d)
    }

    /// Which devices are attached to which domains.
    pub fn attachments(&self) -> &[(Bdf, DomainId)] {
        &self.attached
    }

    /// Context-cache invalidation: granularity 1 global, 3 device.
    fn context_invalidate(&mut self, granularity: u64, sid: u16, did: u16) -> Result<(), IommuError> {
        self.regs.write64(CCMD, CCMD_ICC | granularity << 61 | (sid as u64) << 16 | did as u64);
        self.stats.context_invalidations += 1;
        self.wait("context-cache invalidation", || self.regs.read64(CCMD) & CCMD_ICC == 0)
    }

    /// IOTLB invalidation: granularity 1 global, 2 domain, 3 page(s).
    fn iotlb_invalidate(&mut self, granularity: u64, did: u16, addr: u64, am: u8) -> Result<(), IommuError> {
        let off = self.ecap.iotlb_offset();
        if granularity == 3 {
            self.regs.write64(off, addr | am as u64);
        }
        self.regs.write64(off + 8, IOTLB_IVT | granularity << 60 | IOTLB_DRAIN | (did as u64) << 32);
        self.wait("IOTLB invalidation", || self.regs.read64(off + 8) & IOTLB_IVT == 0)
    }

    /// Invalidate every IOTLB entry of domain `id` (domain-selective).
    pub fn invalidate_domain(&mut self, id: DomainId) -> Result<(), IommuError> {
        self.iotlb_invalidate(2, id.0, 0, 0)?;
        self.stats.domain_invalidations += 1;
        Ok(())
    }

    /// Invalidate the IOTLB for `ranges` of domain `id`: page-selective
    /// commands with address masks, or one domain-wide command beyond
    /// [`DOMAIN_THRESHOLD`]. (HMM mirrors use this from their driver's
    /// update callback; HMM frees its table nodes after it returns.)
    pub fn invalidate_ranges(&mut self, id: DomainId, ranges: &[(u64, u64)]) -> Result<FlushReport, IommuError> {
        let mut report = FlushReport::default();
        for cmd in plan(ranges, self.cap.mamv(), self.cap.psi(), DOMAIN_THRESHOLD).iter() {
            match cmd {
                IotlbCommand::Page { addr, am } => {
                    log::debug!("iotlb did={} scope=page addr={addr:#x} am={am} pages={}", id.0, 1u64 << am);
                    self.iotlb_invalidate(3, id.0, addr, am)?;
                    self.stats.page_invalidations += 1;
                    report.page_commands += 1;
                }
                IotlbCommand::Domain => {
                    log::debug!("iotlb did={} scope=domain", id.0);
                    self.iotlb_invalidate(2, id.0, 0, 0)?;
                    self.stats.domain_invalidations += 1;
                    report.domain_wide = true;
                }
            }
        }
        Ok(report)
    }

    /// Invalidate what `token` names in domain `id`, then free the table
    /// nodes it retired into `table`.
    pub fn flush_table<L: hmm::pt::EntryLayout, T: TableMemory>(&mut self, id: DomainId, table: &mut PageTable<L, T>, token: IotlbFlush) -> Result<FlushReport, IommuError> {
        let report = if token.only_new && !self.cap.caching_mode() { FlushReport::default() } else { self.invalidate_ranges(id, &token.ranges)? };
        table.release(token.retired);
        Ok(report)
    }

    /// [`Iommu::flush_table`] for a [`Domain`].
    pub fn flush<T: TableMemory>(&mut self, domain: &mut Domain<T>, token: IotlbFlush) -> Result<FlushReport, IommuError> {
        let id = domain.id();
        self.flush_table(id, domain.table_mut(), token)
    }

    /// Route fault events to `address`/`data` (an MSI to the CPU) and unmask them.
    pub fn enable_fault_interrupt(&mut self, address: u64, data: u32) {
        self.regs.write32(FEDATA, data);
        self.regs.write32(FEADDR, address as u32);
        self.regs.write32(FEUADDR, (address >> 32) as u32);
        self.regs.write32(FECTL, 0);
    }

    /// Whether a fault is waiting in the records.
    pub fn fault_pending(&self) -> bool {
        self.regs.read32(FSTS) & FSTS_PPF != 0
    }

    /// After a transfer by `source`: the fault recorded for it, if any.
    /// Records of other devices read on the way are parked for them.
    /// The common case — nothing pending, nothing parked — costs one
    /// register read; a pending record of `source` itself is handed back
    /// without being parked (nothing is allocated either way).
    pub fn claim_fault(&mut self, source: Bdf) -> FaultClaim {
        let own = self.drain(source);
        // A record parked earlier (read by another device's claim) came
        // first; the one just read is then dropped, as `take` drops all.
        let first = if self.mailbox.is_empty() { own } else { self.mailbox.take(source).0.or(own) };
        // Always note the loss generation: a transfer that failed anyway
        // has nothing more to learn from an older loss.
        let lost = self.mailbox.lost_since_last(source);
        match first {
            Some(rec) => FaultClaim::Fault(rec),
            None if lost => FaultClaim::Lost,
            None => FaultClaim::Clean,
        }
    }

    /// Before a transfer by `source` whose previous one was abandoned
    /// (timed out): drop the records it may have left, so they are not
    /// taken for the new transfer's. Returns them (for a log line).
    pub fn discard_faults(&mut self, source: Bdf) -> usize {
        let own = self.drain(source).is_some() as usize;
        self.mailbox.lost_since_last(source);
        own + self.mailbox.take(source).1
    }

    /// Read and clear every pending fault record (and the overflow flag):
    /// the first record of `source` is returned, the others are parked for
    /// their devices (a second one of `source` goes with the first: a
    /// transfer stops at its first fault). The common case — nothing
    /// pending — costs one register read: records are read and decoded
    /// only when FSTS says one is there.
    fn drain(&mut self, source: Bdf) -> Option<FaultRecord> {
        let fsts = self.regs.read32(FSTS);
        if fsts & (FSTS_PPF | FSTS_CLEAR) == 0 {
            return None;
        }
        if fsts & FSTS_PFO != 0 {
            self.mailbox.overflowed();
            self.stats.overflows += 1;
        }
        let mut own = None;
        let (base, n) = (self.cap.fault_offset(), self.cap.fault_records());
        let first = ((fsts >> 8) & 0xff) as usize % n;
        for k in 0..n {
            let off = base + 16 * ((first + k) % n);
            let hi = self.regs.read64(off + 8);
            let Some(rec) = FaultRecord::decode(self.regs.read64(off), hi) else { continue };
            self.regs.write64(off + 8, 1 << 63); // F is write-1-to-clear
            self.stats.faults += 1;
            match own {
                None if rec.source == source => own = Some(rec),
                Some(_) if rec.source == source => {}
                _ => self.mailbox.park(rec),
            }
        }
        self.regs.write32(FSTS, FSTS_CLEAR);
        own
    }
}

impl<R: Registers, M: TableMemory> Drop for Iommu<R, M> {
    fn drop(&mut self) {
        // Root and context tables stay in use while translation is on; an
        // IOMMU is only dropped with the machine, so they are freed only if
        // translation was never enabled.
        if !self.enabled() {
            for t in self.context.iter().flatten() {
                // SAFETY: allocated by this driver; translation is off, so
                // no hardware walks them.
                unsafe { self.mem.free_table(*t) };
            }
            // SAFETY: as above.
            unsafe { self.mem.free_table(self.root) };
        }
    }
}

#[cfg(test)]
mod tests;
