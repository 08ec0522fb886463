//! A translation domain: an id and a second-level page table in the VT-d
//! format — an `hmm::pt` table, so the same walker serves HMM mirrors and
//! plain DMA mappings. IOVAs are a distinct type: a device address is not
//! a CPU virtual address, even where HMM makes them equal.

use super::flush::IotlbFlush;
use super::layout::VtdLayout;
use core::fmt;
use hmm::pt::{Leaf, OutOfTableMemory, PageTable, TableMemory};
use hmm::VaRange;
use x86_64::PhysAddr;

/// An I/O virtual address: what a device puts on the bus.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Iova(u64);

impl Iova {
    /// The highest IOVA a domain takes (the user half; see `hmm::USER_END`).
    pub const END: u64 = hmm::USER_END;

    pub const fn new(v: u64) -> Iova {
        Iova(v)
    }
    pub const fn as_u64(self) -> u64 {
        self.0
    }
    pub fn page_offset(self) -> u64 {
        self.0 & 0xfff
    }
}

impl fmt::Debug for Iova {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Iova({:#x})", self.0)
    }
}
impl fmt::Display for Iova {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// A domain id (16 bits in the context entry; 0 is never handed out).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DomainId(pub u16);

impl fmt::Display for DomainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "domain {}", self.0)
    }
}

/// Why a mapping change was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// Not page-aligned, or beyond the domain's address range.
    BadIova(u64),
    NoTableMemory,
}

impl From<OutOfTableMemory> for MapError {
    fn from(_: OutOfTableMemory) -> Self {
        MapError::NoTableMemory
    }
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MapError::BadIova(a) => write!(f, "IOVA {a:#x} is not a page below {:#x}", Iova::END),
            MapError::NoTableMemory => f.write_str("no memory for an IOMMU page-table node"),
        }
    }
}

/// DMA permissions of a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Perm {
    ReadOnly,
    ReadWrite,
}

/// A domain with its own second-level table.
pub struct Domain<M: TableMemory> {
    id: DomainId,
    table: PageTable<VtdLayout, M>,
}

fn range(start: Iova, pages: u64) -> Result<VaRange, MapError> {
    VaRange::pages_from(start.as_u64(), pages).map_err(|_| MapError::BadIova(start.as_u64()))
}

impl<M: TableMemory> Domain<M> {
    pub fn new(id: DomainId, mem: M) -> Result<Self, MapError> {
        Ok(Domain { id, table: PageTable::new(mem)? })
    }

    pub fn id(&self) -> DomainId {
        self.id
    }

    /// The table root (what the context entry points at).
    pub fn root(&self) -> PhysAddr {
        self.table.root()
    }

    /// Map one page.
    pub fn map(&mut self, iova: Iova, frame: PhysAddr, perm: Perm) -> Result<IotlbFlush, MapError> {
        let r = range(iova, 1)?;
        let leaf = Leaf { addr: frame, write: perm == Perm::ReadWrite, dirty: false, exclusive: false };
        let old = self.table.set(r.start_addr(), leaf)?;
        let mut flush = IotlbFlush::new();
        match old {
            Some(_) => flush.changed(r.start(), r.end()),
            None => flush.added(r.start(), r.end()),
        }
        Ok(flush)
    }

    /// Remove every mapping in `pages` pages from `iova`.
    pub fn unmap(&mut self, iova: Iova, pages: u64) -> Result<IotlbFlush, MapError> {
        let r = range(iova, pages)?;
        let up = self.table.clear(r);
        let mut flush = IotlbFlush::new();
        if up.cleared > 0 {
            flush.changed(r.start(), r.end());
        }
        flush.retired = up.retired;
        Ok(flush)
    }

    /// Change the permission of every mapping in the range.
    pub fn protect(&mut self, iova: Iova, pages: u64, perm: Perm) -> Result<IotlbFlush, MapError> {
        let r = range(iova, pages)?;
        let up = self.table.update(r, |_, l| Some(Leaf { write: perm == Perm::ReadWrite, ..l }));
        let mut flush = IotlbFlush::new();
        if up.changed > 0 {
            flush.changed(r.start(), r.end());
        }
        flush.retired = up.retired;
        Ok(flush)
    }

    /// What `iova` maps to.
    pub fn translate(&self, iova: Iova) -> Option<Leaf> {
        let r = range(Iova(iova.as_u64() & !0xfff), 1).ok()?;
        self.table.get(r.start_addr())
    }

    /// Mappings in the domain.
    pub fn pages(&self) -> usize {
        self.table.leaves()
    }

    pub(crate) fn table_mut(&mut self) -> &mut PageTable<VtdLayout, M> {
        &mut self.table
    }
}
