//! Reading `hvm_start_info`, the structure PVH hands over in `ebx`.
//!
//! Layout (all little-endian, offsets in bytes):
//!
//! ```text
//!  +0  magic = 0x336ec578     +4  version      +8  flags     +12 nr_modules
//!  +16 modlist_paddr (u64)    +24 cmdline_paddr (u64)        +32 rsdp_paddr (u64)
//!  +40 memmap_paddr (u64)     +48 memmap_entries (u32)       +52 reserved
//!  memory map entry (24 bytes): addr u64, size u64, type u32 (e820), reserved u32
//! ```
//!
//! The parser reads physical memory through a caller-supplied function, so it
//! is the same code on the host (tests feed it synthetic bytes) and in the
//! kernel (which reads through the boot identity map). The result is a plain
//! value with fixed-size storage: no heap exists yet when it runs.

use core::fmt;
use x86_64::PhysAddr;

/// `hvm_start_info.magic`.
pub const START_INFO_MAGIC: u32 = 0x336e_c578;
/// The most memory-map entries kept; QEMU hands over a handful.
pub const MAX_REGIONS: usize = 64;
/// The longest kernel command line kept (bytes).
pub const MAX_CMDLINE: usize = 512;

/// What the firmware says a physical range is (e820 types).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryKind {
    /// Free RAM the kernel may allocate.
    Usable,
    /// Reserved by firmware or chipset.
    Reserved,
    /// ACPI tables; reclaimable once parsed (hmmos keeps them).
    AcpiReclaimable,
    /// ACPI non-volatile storage.
    AcpiNvs,
    /// Defective RAM.
    Bad,
    /// A type this kernel does not know; treated as reserved.
    Other(u32),
}

impl MemoryKind {
    fn from_e820(t: u32) -> Self {
        match t {
            1 => Self::Usable,
            2 => Self::Reserved,
            3 => Self::AcpiReclaimable,
            4 => Self::AcpiNvs,
            5 => Self::Bad,
            other => Self::Other(other),
        }
    }
}

/// One memory-map entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRegion {
    pub start: PhysAddr,
    pub len: u64,
    pub kind: MemoryKind,
}

impl MemoryRegion {
    /// One past the last byte (saturating at the top of the address space).
    pub fn end(&self) -> u64 {
        self.start.as_u64().saturating_add(self.len)
    }
}

impl fmt::Display for MemoryRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{:#014x}-{:#014x}) {:>8} KiB  {:?}",
            self.start.as_u64(),
            self.end(),
            self.len / 1024,
            self.kind
        )
    }
}

/// Why the start info could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartInfoError {
    /// The magic number is wrong: this was not a PVH boot.
    BadMagic(u32),
    /// No memory map was handed over.
    NoMemoryMap,
    /// A physical address does not fit this kernel's address width.
    BadAddress(u64),
}

impl fmt::Display for StartInfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadMagic(m) => write!(f, "PVH start info has magic {m:#x}, expected {START_INFO_MAGIC:#x}"),
            Self::NoMemoryMap => write!(f, "PVH start info has no memory map"),
            Self::BadAddress(a) => write!(f, "PVH start info names an impossible physical address {a:#x}"),
        }
    }
}

/// Everything the kernel keeps from the boot hand-off.
#[derive(Clone)]
pub struct BootInfo {
    regions: [MemoryRegion; MAX_REGIONS],
    region_count: usize,
    /// Entries beyond [`MAX_REGIONS`] that had to be dropped (reported, never silent).
    pub regions_dropped: usize,
    cmdline: [u8; MAX_CMDLINE],
    cmdline_len: usize,
    /// The ACPI RSDP, if the hypervisor gave one.
    pub rsdp: Option<PhysAddr>,
    /// The physical address of the start info itself (it must not be reused while read).
    pub start_info: PhysAddr,
}

impl BootInfo {
    /// Parse the start info at `start_info`, reading physical memory with
    /// `read(phys, buf)`. The reader fills `buf` from physical address `phys`.
    pub fn parse(
        start_info: u64,
        mut read: impl FnMut(u64, &mut [u8]),
    ) -> Result<Self, StartInfoError> {
        let mut hdr = [0u8; 56];
        read(start_info, &mut hdr);
        let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        let magic = u32_at(&hdr, 0);
        if magic != START_INFO_MAGIC {
            return Err(StartInfoError::BadMagic(magic));
        }
        let phys = |a: u64| PhysAddr::try_new(a).map_err(|_| StartInfoError::BadAddress(a));

        let mut info = BootInfo {
            regions: [MemoryRegion { start: PhysAddr::zero(), len: 0, kind: MemoryKind::Reserved }; MAX_REGIONS],
            region_count: 0,
            regions_dropped: 0,
            cmdline: [0; MAX_CMDLINE],
            cmdline_len: 0,
            rsdp: None,
            start_info: phys(start_info)?,
        };

        let rsdp = u64_at(&hdr, 32);
        if rsdp != 0 {
            info.rsdp = Some(phys(rsdp)?);
        }

        let cmdline = u64_at(&hdr, 24);
        if cmdline != 0 {
            phys(cmdline)?;
            // Read byte by byte up to the NUL: the string may end right
            // before an unmapped page.
            let mut byte = [0u8; 1];
            while info.cmdline_len < MAX_CMDLINE {
                read(cmdline + info.cmdline_len as u64, &mut byte);
                if byte[0] == 0 {
                    break;
                }
                info.cmdline[info.cmdline_len] = byte[0];
                info.cmdline_len += 1;
            }
        }

        let memmap = u64_at(&hdr, 40);
        let entries = u32_at(&hdr, 48) as usize;
        if memmap == 0 || entries == 0 {
            return Err(StartInfoError::NoMemoryMap);
        }
        phys(memmap)?;
        for i in 0..entries {
            let mut e = [0u8; 24];
            read(memmap + (i * 24) as u64, &mut e);
            let start = u64_at(&e, 0);
            let len = u64_at(&e, 8);
            let region = MemoryRegion { start: phys(start)?, len, kind: MemoryKind::from_e820(u32_at(&e, 16)) };
            if len == 0 {
                continue;
            }
            if info.region_count == MAX_REGIONS {
                info.regions_dropped += 1;
                continue;
            }
            info.regions[info.region_count] = region;
            info.region_count += 1;
        }
        info.regions[..info.region_count].sort_unstable_by_key(|r| r.start);
        Ok(info)
    }

    /// The memory map, sorted by start address.
    pub fn memory_map(&self) -> &[MemoryRegion] {
        &self.regions[..self.region_count]
    }

    /// The kernel command line (`-append`), empty if none. Non-UTF-8 bytes
    /// make it empty rather than garbage.
    pub fn cmdline(&self) -> &str {
        core::str::from_utf8(&self.cmdline[..self.cmdline_len]).unwrap_or("")
    }

    /// The end of the highest usable RAM byte.
    pub fn top_of_ram(&self) -> u64 {
        self.memory_map().iter().filter(|r| r.kind == MemoryKind::Usable).map(|r| r.end()).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    /// A fake physical memory: a byte vector starting at physical 0.
    fn memory() -> Vec<u8> {
        std::vec![0u8; 0x4000]
    }
    fn put(m: &mut [u8], at: usize, bytes: &[u8]) {
        m[at..at + bytes.len()].copy_from_slice(bytes);
    }
    fn reader(m: &[u8]) -> impl FnMut(u64, &mut [u8]) + '_ {
        move |p, buf| buf.copy_from_slice(&m[p as usize..p as usize + buf.len()])
    }
    fn start_info(m: &mut [u8], cmdline: u64, rsdp: u64, memmap: u64, entries: u32) {
        put(m, 0x1000, &START_INFO_MAGIC.to_le_bytes());
        put(m, 0x1004, &1u32.to_le_bytes());
        put(m, 0x1000 + 24, &cmdline.to_le_bytes());
        put(m, 0x1000 + 32, &rsdp.to_le_bytes());
        put(m, 0x1000 + 40, &memmap.to_le_bytes());
        put(m, 0x1000 + 48, &entries.to_le_bytes());
    }
    fn entry(m: &mut [u8], at: usize, start: u64, len: u64, kind: u32) {
        put(m, at, &start.to_le_bytes());
        put(m, at + 8, &len.to_le_bytes());
        put(m, at + 16, &kind.to_le_bytes());
    }

    #[test]
    fn parses_memory_map_cmdline_and_rsdp() {
        let mut m = memory();
        start_info(&mut m, 0x2000, 0xf5a40, 0x3000, 3);
        put(&mut m, 0x2000, b"log=debug test=1\0");
        entry(&mut m, 0x3000, 0x10_0000, 0x1000_0000, 1);
        entry(&mut m, 0x3018, 0, 0x9fc00, 1);
        entry(&mut m, 0x3030, 0xfeff_c000, 0x4000, 2);
        let info = BootInfo::parse(0x1000, reader(&m)).unwrap();
        assert_eq!(info.cmdline(), "log=debug test=1");
        assert_eq!(info.rsdp, Some(PhysAddr::new(0xf5a40)));
        let map = info.memory_map();
        assert_eq!(map.len(), 3);
        assert_eq!(map[0].start.as_u64(), 0, "sorted by start");
        assert_eq!(map[1].kind, MemoryKind::Usable);
        assert_eq!(map[2].kind, MemoryKind::Reserved);
        assert_eq!(info.top_of_ram(), 0x1010_0000);
    }

    #[test]
    fn rejects_wrong_magic_and_missing_map() {
        let mut m = memory();
        assert_eq!(BootInfo::parse(0x1000, reader(&m)).err(), Some(StartInfoError::BadMagic(0)));
        start_info(&mut m, 0, 0, 0, 0);
        assert_eq!(BootInfo::parse(0x1000, reader(&m)).err(), Some(StartInfoError::NoMemoryMap));
    }

    #[test]
    fn impossible_address_is_an_error() {
        let mut m = memory();
        start_info(&mut m, 0, 0, 0x3000, 1);
        entry(&mut m, 0x3000, 1 << 60, 0x1000, 1);
        assert_eq!(BootInfo::parse(0x1000, reader(&m)).err(), Some(StartInfoError::BadAddress(1 << 60)));
    }

    #[test]
    fn long_map_is_truncated_and_counted() {
        let mut m = std::vec![0u8; 0x8000];
        let n = MAX_REGIONS + 3;
        start_info(&mut m, 0, 0, 0x3000, n as u32);
        for i in 0..n {
            entry(&mut m, 0x3000 + i * 24, (i as u64) << 20, 0x1000, 1);
        }
        let info = BootInfo::parse(0x1000, reader(&m)).unwrap();
        assert_eq!(info.memory_map().len(), MAX_REGIONS);
        assert_eq!(info.regions_dropped, 3);
        assert_eq!(info.cmdline(), "");
    }
}
