//! Device drivers for hmmos: MMIO register access, PCI over ECAM, the
//! VT-d IOMMU, the `edu` accelerator. Hardware-free logic (decoding,
//! planning, validation) is tested on the host against fake registers;
//! the kernel supplies real MMIO mappings and table memory.
#![no_std]

extern crate alloc;

pub mod dmar;
pub mod edu;
pub mod mmio;
pub mod pci;
pub mod vtd;
