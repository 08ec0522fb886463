//! The machine's devices, brought up in order:
//!
//! ```text
//!  ACPI (RSDP from PVH) ─► MCFG: ECAM window ─► PCI enumeration
//!                      └─► DMAR: VT-d register base
//!  PCI: assign BARs (qboot leaves them 0) from PCI_WINDOW, enable memory
//!       decoding + bus mastering, MSI per device
//!  VT-d: root table, translation on, fault-event MSI
//!  edu × 2: identified, liveness checked, MSI vector each
//! ```
//!
//! After [`init`], every DMA any device does goes through second-level
//! tables the kernel wrote: a device attached to no domain reaches nothing
//! (its context entry is absent), so kernel memory is out of reach unless
//! a domain maps it.
//!
//! Locking: the platform is a `spin::Once`; the IOMMU and each accelerator
//! sit behind their own ranked locks (see [`crate::sync`]): device before IOMMU.

pub mod accel;
pub mod disk;
pub mod fault_stash;
pub mod memory;

pub use accel::{Accelerator, DmaError, WAIT_CYCLES};
pub use memory::KernelTableMemory;

use crate::acpi::KernelAcpiHandler;
use crate::irq::{self, Vector};
use crate::mm::{direct, mmio};
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use devices::dmar::Dmar;
use devices::mmio::MmioRegion;
use devices::pci::{BarWindow, Bdf, Ecam, PciDevice};
use devices::vtd::Iommu;
use crate::sync::{LockRank, RankedMutex};
use spin::Once;
use x86_64::PhysAddr;

/// Physical window for BARs: above the ECAM window, below the IOAPIC/LAPIC.
pub const PCI_WINDOW: (u64, u64) = (0xc000_0000, 0xfec0_0000);

/// The IOMMU type the kernel uses.
pub type KernelIommu = Iommu<MmioRegion, KernelTableMemory>;

/// Everything found at boot.
pub struct Platform {
    pub ecam: Ecam<MmioRegion>,
    pub pci: Vec<PciDevice>,
    pub dmar: Dmar,
    pub iommu: RankedMutex<KernelIommu>,
    /// The IOMMU's fault-event vector.
    pub fault_vector: Vector,
    /// The edu accelerators, in PCI order.
    pub accels: Vec<RankedMutex<Accelerator>>,
}

/// Why bring-up failed.
#[derive(Debug)]
pub enum PlatformError {
    Acpi(String),
    NoDevice(&'static str),
    Pci(String),
    Iommu(devices::vtd::IommuError),
    Edu(Bdf, devices::edu::EduError),
    OutOfFrames,
    NoVector,
}

impl fmt::Display for PlatformError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Acpi(e) => write!(f, "ACPI: {e}"),
            Self::NoDevice(what) => write!(f, "not found: {what}"),
            Self::Pci(e) => write!(f, "PCI: {e}"),
            Self::Iommu(e) => write!(f, "VT-d: {e}"),
            Self::Edu(b, e) => write!(f, "edu at {b}: {e}"),
            Self::OutOfFrames => f.write_str("out of frames during device bring-up"),
            Self::NoVector => f.write_str("no interrupt vector left"),
        }
    }
}

impl From<devices::vtd::IommuError> for PlatformError {
    fn from(e: devices::vtd::IommuError) -> Self {
        Self::Iommu(e)
    }
}
impl From<crate::mm::frames::OutOfFrames> for PlatformError {
    fn from(_: crate::mm::frames::OutOfFrames) -> Self {
        Self::OutOfFrames
    }
}
impl From<irq::NoVectorLeft> for PlatformError {
    fn from(_: irq::NoVectorLeft) -> Self {
        Self::NoVector
    }
}

/// The DMAR table as the `acpi` crate sees it: just the header.
#[repr(C, packed)]
struct DmarHeader {
    header: acpi::sdt::SdtHeader,
}

// SAFETY: the layout starts with the SDT header, as the trait requires.
unsafe impl acpi::AcpiTable for DmarHeader {
    const SIGNATURE: acpi::sdt::Signature = acpi::sdt::Signature::DMAR;
    fn header(&self) -> &acpi::sdt::SdtHeader {
        &self.header
    }
}

fn map_regs(phys: u64, len: u64) -> Result<MmioRegion, PlatformError> {
    let virt = mmio::map(PhysAddr::new(phys), len)?;
    // SAFETY: `virt` maps `len` bytes of device registers, uncached, for
    // the kernel's lifetime (MMIO mappings are never removed).
    Ok(unsafe { MmioRegion::new(virt.as_mut_ptr(), len as usize) })
}

static PLATFORM: Once<Result<Platform, String>> = Once::new();

/// Bring the devices up (once); later calls return the same platform.
pub fn init() -> Result<&'static Platform, &'static str> {
    PLATFORM
        .call_once(|| bring_up().map_err(|e| alloc::format!("{e}")))
        .as_ref()
        .map_err(|e| e.as_str())
}

fn bring_up() -> Result<Platform, PlatformError> {
    let rsdp = crate::boot_info().rsdp.ok_or(PlatformError::NoDevice("ACPI RSDP"))?;
    // SAFETY: the RSDP address comes from the PVH start info.
    let tables = unsafe { acpi::AcpiTables::from_rsdp(KernelAcpiHandler, rsdp.as_u64() as usize) }.map_err(|e| PlatformError::Acpi(alloc::format!("{e:?}")))?;
    let mcfg = tables.find_table::<acpi::mcfg::Mcfg>().map_err(|e| PlatformError::Acpi(alloc::format!("MCFG: {e:?}")))?;
    let ecam_entry = *mcfg.entries().first().ok_or(PlatformError::NoDevice("ECAM window in MCFG"))?;
    let dmar_hdr = tables.find_table::<DmarHeader>().map_err(|_| PlatformError::NoDevice("DMAR table (is intel-iommu configured?)"))?;
    let dmar_len = { dmar_hdr.header.length } as usize;
    let mut dmar_bytes = alloc::vec![0u8; dmar_len];
    // SAFETY: the table lies in firmware memory the direct map covers
    // (checked by the ACPI handler, which mapped it the same way).
    unsafe { direct::read_phys(PhysAddr::new(dmar_hdr.physical_start() as u64), &mut dmar_bytes) };
    let dmar = Dmar::parse(&dmar_bytes).map_err(|e| PlatformError::Acpi(alloc::format!("{e}")))?;

    // PCI.
    let (bus_start, bus_end) = (ecam_entry.bus_number_start, ecam_entry.bus_number_end);
    let ecam_len = ((bus_end as u64 - bus_start as u64) + 1) << 20;
    let ecam = Ecam::new(map_regs(ecam_entry.base_address, ecam_len)?, bus_start, bus_end);
    let mut pci = ecam.enumerate();
    let mut window = BarWindow::new(PCI_WINDOW.0, PCI_WINDOW.1);
    for d in pci.iter_mut() {
        ecam.assign_bars(d, &mut window).map_err(|e| PlatformError::Pci(alloc::format!("{}: {e}", d.bdf)))?;
    }
    log::info!("PCI (ECAM at {:#x}, buses {bus_start}..={bus_end}):", { ecam_entry.base_address });
    for d in &pci {
        log::info!("  {d}");
    }

    // VT-d.
    let unit = dmar.units.first().ok_or(PlatformError::NoDevice("DRHD unit in DMAR"))?;
    let mut iommu = Iommu::new(map_regs(unit.register_base, 4096)?, KernelTableMemory)?;
    iommu.enable()?;
    let fault_vector = Vector::alloc()?;
    let (addr, data) = irq::msi_message(&fault_vector);
    iommu.enable_fault_interrupt(addr, data);
    let (maj, min) = iommu.version();
    log::info!("VT-d {maj}.{min} at {:#x} (DMAR host address width {}), translation on, fault events on vector {:#x}", unit.register_base, dmar.host_address_width, fault_vector.number());
    log::info!("  {}", iommu.cap());
    log::info!("  {}", iommu.ecap());
    log::info!("  invalidation: register-based (synchronous CCMD / IVA+IOTLB)");

    // The accelerators.
    let mut accels = Vec::new();
    for d in pci.iter().filter(|d| d.vendor == devices::edu::VENDOR_ID && d.device == devices::edu::DEVICE_ID) {
        let bar = d.bars[0].ok_or(PlatformError::NoDevice("edu BAR0"))?;
        ecam.enable(d.bdf);
        let accel = Accelerator::new(d.bdf, map_regs(bar.base, bar.size)?, &ecam, d, accels.len())?;
        log::info!("  accel{}: edu at {} (BAR0 {:#x}), MSI vector {:#x}, alive", accels.len(), d.bdf, bar.base, accel.vector());
        accels.push(RankedMutex::new(LockRank::Device, accel));
    }
    if accels.is_empty() {
        return Err(PlatformError::NoDevice("edu accelerator"));
    }
    Ok(Platform { ecam, pci, dmar, iommu: RankedMutex::new(LockRank::Iommu, iommu), fault_vector, accels })
}
