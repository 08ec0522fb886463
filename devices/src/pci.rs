//! PCI through ECAM: enumeration, header and capability decoding, BAR
//! sizing and assignment, enabling, MSI.
//!
//! ECAM puts each function's 4 KiB configuration space at
//! `base + (bus << 20 | device << 15 | function << 12)`.
//!
//! qboot leaves every BAR unassigned and the command register 0, so the
//! kernel assigns BARs from a window it owns ([`BarWindow`]) and turns on
//! memory decoding and bus mastering itself. Without bus mastering a
//! device's DMA silently reads zeros and drops writes.

use crate::mmio::Registers;
use alloc::vec::Vec;
use core::fmt;

/// A PCI function's address: bus, device, function (`00:01.0`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bdf {
    pub bus: u8,
    pub dev: u8,
    pub func: u8,
}

impl Bdf {
    pub fn new(bus: u8, dev: u8, func: u8) -> Self {
        assert!(dev < 32 && func < 8);
        Bdf { bus, dev, func }
    }
    /// The 16-bit requester id (source id) the IOMMU sees: bus << 8 | devfn.
    pub fn source_id(self) -> u16 {
        (self.bus as u16) << 8 | self.devfn() as u16
    }
    pub fn from_source_id(sid: u16) -> Self {
        Bdf { bus: (sid >> 8) as u8, dev: ((sid >> 3) & 0x1f) as u8, func: (sid & 7) as u8 }
    }
    /// Device and function in one byte (the context-table index).
    pub fn devfn(self) -> u8 {
        self.dev << 3 | self.func
    }
}

impl fmt::Display for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.dev, self.func)
    }
}
impl fmt::Debug for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Configuration space over ECAM.
pub struct Ecam<R: Registers> {
    regs: R,
    bus_start: u8,
    bus_end: u8,
}

const VENDOR: usize = 0x00;
const COMMAND: usize = 0x04;
const STATUS: usize = 0x06;
const CLASS: usize = 0x08;
const HEADER_TYPE: usize = 0x0e;
const BAR0: usize = 0x10;
const CAP_PTR: usize = 0x34;
const CMD_MEMORY: u16 = 1 << 1;
const CMD_BUS_MASTER: u16 = 1 << 2;
const CMD_INTX_DISABLE: u16 = 1 << 10;
const STATUS_CAP_LIST: u16 = 1 << 4;
/// The MSI capability id.
pub const CAP_MSI: u8 = 0x05;

impl<R: Registers> Ecam<R> {
    /// `regs` maps the ECAM window for buses `bus_start..=bus_end`.
    pub fn new(regs: R, bus_start: u8, bus_end: u8) -> Self {
        Ecam { regs, bus_start, bus_end }
    }

    fn offset(&self, bdf: Bdf, reg: usize) -> usize {
        assert!(bdf.bus >= self.bus_start && bdf.bus <= self.bus_end && reg < 4096);
        ((bdf.bus - self.bus_start) as usize) << 20 | (bdf.dev as usize) << 15 | (bdf.func as usize) << 12 | reg
    }
    pub fn read32(&self, bdf: Bdf, reg: usize) -> u32 {
        self.regs.read32(self.offset(bdf, reg))
    }
    pub fn write32(&self, bdf: Bdf, reg: usize, v: u32) {
        self.regs.write32(self.offset(bdf, reg), v)
    }
    pub fn read16(&self, bdf: Bdf, reg: usize) -> u16 {
        self.regs.read16(self.offset(bdf, reg))
    }
    pub fn write16(&self, bdf: Bdf, reg: usize, v: u16) {
        self.regs.write16(self.offset(bdf, reg), v)
    }
    pub fn read8(&self, bdf: Bdf, reg: usize) -> u8 {
        (self.read16(bdf, reg & !1) >> ((reg & 1) * 8)) as u8
    }

    /// Every function present, with its header decoded and BARs sized.
    /// Must run before memory decoding is enabled (sizing writes the BARs).
    pub fn enumerate(&self) -> Vec<PciDevice> {
        let mut found = Vec::new();
        for bus in self.bus_start..=self.bus_end {
            for dev in 0..32 {
                for func in 0..8 {
                    let bdf = Bdf::new(bus, dev, func);
                    if self.read16(bdf, VENDOR) == 0xffff {
                        if func == 0 {
                            break; // no device: no other functions either
                        }
                        continue;
                    }
                    found.push(self.decode(bdf));
                    if func == 0 && self.read8(bdf, HEADER_TYPE) & 0x80 == 0 {
                        break; // single-function device
                    }
                }
            }
        }
        found
    }

    fn decode(&self, bdf: Bdf) -> PciDevice {
        let id = self.read32(bdf, VENDOR);
        let class = self.read32(bdf, CLASS);
        let header_type = self.read8(bdf, HEADER_TYPE) & 0x7f;
        let mut d = PciDevice {
            bdf,
            vendor: id as u16,
            device: (id >> 16) as u16,
            class: (class >> 24) as u8,
            subclass: (class >> 16) as u8,
            header_type,
            bars: [None; 6],
            msi: None,
        };
        if header_type == 0 {
            self.size_bars(&mut d);
        }
        d.msi = self.find_capability(bdf, CAP_MSI);
        d
    }

    fn size_bars(&self, d: &mut PciDevice) {
        let cmd = self.read16(d.bdf, COMMAND);
        self.write16(d.bdf, COMMAND, cmd & !(CMD_MEMORY | 1)); // no decoding while sizing
        let mut i = 0;
        while i < 6 {
            let reg = BAR0 + i * 4;
            let orig = self.read32(d.bdf, reg);
            if orig & 1 == 1 {
                self.write32(d.bdf, reg, !0);
                let size = (!(self.read32(d.bdf, reg) & !0x3)).wrapping_add(1) & 0xffff;
                self.write32(d.bdf, reg, orig);
                if size != 0 {
                    d.bars[i] = Some(Bar { kind: BarKind::Io, base: (orig & !3) as u64, size: size as u64, prefetchable: false });
                }
                i += 1;
                continue;
            }
            let is64 = (orig >> 1) & 3 == 2;
            self.write32(d.bdf, reg, !0);
            let mut mask = (self.read32(d.bdf, reg) & !0xf) as u64;
            self.write32(d.bdf, reg, orig);
            let mut base = (orig & !0xf) as u64;
            if is64 {
                let hi = self.read32(d.bdf, reg + 4);
                self.write32(d.bdf, reg + 4, !0);
                mask |= (self.read32(d.bdf, reg + 4) as u64) << 32;
                self.write32(d.bdf, reg + 4, hi);
                base |= (hi as u64) << 32;
            } else {
                mask |= 0xffff_ffff_0000_0000;
            }
            let size = (!mask).wrapping_add(1);
            if mask & 0xffff_fff0 != 0 {
                let kind = if is64 { BarKind::Mem64 } else { BarKind::Mem32 };
                d.bars[i] = Some(Bar { kind, base, size, prefetchable: orig & 8 != 0 });
            }
            i += if is64 { 2 } else { 1 };
        }
        self.write16(d.bdf, COMMAND, cmd);
    }

    /// The config-space offset of capability `id`, if the function has it.
    /// A looping or out-of-range list ends the search (malformed, not fatal).
    pub fn find_capability(&self, bdf: Bdf, id: u8) -> Option<u8> {
        if self.read16(bdf, STATUS) & STATUS_CAP_LIST == 0 {
            return None;
        }
        let mut ptr = self.read8(bdf, CAP_PTR) & !3;
        for _ in 0..48 {
            if ptr < 0x40 {
                return None;
            }
            if self.read8(bdf, ptr as usize) == id {
                return Some(ptr);
            }
            ptr = self.read8(bdf, ptr as usize + 1) & !3;
        }
        None
    }

    /// Give every unassigned memory BAR of `d` an address from `window`
    /// and write it to the device.
    pub fn assign_bars(&self, d: &mut PciDevice, window: &mut BarWindow) -> Result<(), BarWindowFull> {
        for i in 0..6 {
            let Some(mut bar) = d.bars[i] else { continue };
            if bar.kind == BarKind::Io || bar.base != 0 {
                continue;
            }
            bar.base = window.take(bar.size)?;
            self.write32(d.bdf, BAR0 + i * 4, bar.base as u32 | if bar.kind == BarKind::Mem64 { 4 } else { 0 });
            if bar.kind == BarKind::Mem64 {
                self.write32(d.bdf, BAR0 + i * 4 + 4, (bar.base >> 32) as u32);
            }
            d.bars[i] = Some(bar);
        }
        Ok(())
    }

    /// Memory decoding and bus mastering on, legacy INTx off (we use MSI).
    pub fn enable(&self, bdf: Bdf) {
        let cmd = self.read16(bdf, COMMAND);
        self.write16(bdf, COMMAND, cmd | CMD_MEMORY | CMD_BUS_MASTER | CMD_INTX_DISABLE);
    }

    /// The command register (for checks and the boot listing).
    pub fn command(&self, bdf: Bdf) -> u16 {
        self.read16(bdf, COMMAND)
    }

    /// Point the function's MSI at `address`/`data` and enable it (one vector).
    pub fn enable_msi(&self, d: &PciDevice, address: u64, data: u16) -> Result<(), NoMsi> {
        let cap = d.msi.ok_or(NoMsi(d.bdf))? as usize;
        let ctl = self.read16(d.bdf, cap + 2);
        let is64 = ctl & (1 << 7) != 0;
        self.write32(d.bdf, cap + 4, address as u32);
        if is64 {
            self.write32(d.bdf, cap + 8, (address >> 32) as u32);
            self.write16(d.bdf, cap + 12, data);
        } else if address >> 32 != 0 {
            return Err(NoMsi(d.bdf));
        } else {
            self.write16(d.bdf, cap + 8, data);
        }
        // Enable, one message (MME = 0).
        self.write16(d.bdf, cap + 2, (ctl & !(0x7 << 4)) | 1);
        Ok(())
    }
}

/// Kinds of BAR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarKind {
    Io,
    Mem32,
    Mem64,
}

/// One base address register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bar {
    pub kind: BarKind,
    /// 0 = unassigned (for memory BARs).
    pub base: u64,
    pub size: u64,
    pub prefetchable: bool,
}

/// One PCI function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PciDevice {
    pub bdf: Bdf,
    pub vendor: u16,
    pub device: u16,
    pub class: u8,
    pub subclass: u8,
    pub header_type: u8,
    pub bars: [Option<Bar>; 6],
    /// Config-space offset of the MSI capability.
    pub msi: Option<u8>,
}

impl fmt::Display for PciDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:04x}:{:04x} class {:02x}.{:02x}", self.bdf, self.vendor, self.device, self.class, self.subclass)?;
        for (i, b) in self.bars.iter().enumerate() {
            if let Some(b) = b {
                let k = match b.kind {
                    BarKind::Io => "io",
                    BarKind::Mem32 => "mem32",
                    BarKind::Mem64 => "mem64",
                };
                write!(f, " BAR{i}={k}@{:#x}+{:#x}", b.base, b.size)?;
            }
        }
        if let Some(m) = self.msi {
            write!(f, " MSI@{m:#x}")?;
        }
        Ok(())
    }
}

/// The physical window BARs are assigned from (naturally aligned).
#[derive(Debug)]
pub struct BarWindow {
    next: u64,
    end: u64,
}

/// The BAR window has no room left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarWindowFull {
    pub size: u64,
}

impl fmt::Display for BarWindowFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no room for a {:#x}-byte BAR in the PCI window", self.size)
    }
}

/// The function has no (usable) MSI capability.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoMsi(pub Bdf);

impl fmt::Display for NoMsi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} has no usable MSI capability", self.0)
    }
}

impl BarWindow {
    pub fn new(start: u64, end: u64) -> Self {
        BarWindow { next: start, end }
    }
    /// A naturally aligned block of `size` (a power of two) bytes.
    pub fn take(&mut self, size: u64) -> Result<u64, BarWindowFull> {
        let size = size.max(4096);
        if !size.is_power_of_two() {
            return Err(BarWindowFull { size });
        }
        let base = self.next.next_multiple_of(size);
        if base.checked_add(size).is_none_or(|e| e > self.end) {
            return Err(BarWindowFull { size });
        }
        self.next = base + size;
        Ok(base)
    }
}
