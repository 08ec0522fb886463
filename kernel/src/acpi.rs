//! Physical memory for the `acpi` crate: firmware tables are read through
//! the direct map when they lie in it (qboot puts them below 1 MiB, which
//! the direct map always covers) and through an uncached MMIO-window
//! mapping otherwise. Tables are read at boot; the rare window mapping is
//! kept (the window is not reclaimed).

use crate::mm::{direct, kpt, mmio};
use core::ptr::NonNull;
use x86_64::{PhysAddr, VirtAddr};

/// The kernel's `acpi::AcpiHandler`.
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelAcpiHandler;

/// Whether `[phys, phys + len)` is readable through the direct map.
fn in_direct_map(phys: PhysAddr, len: usize) -> bool {
    let first = direct::phys_to_virt(phys);
    let last = direct::phys_to_virt(phys + (len.max(1) as u64 - 1));
    // Both ends mapped and the range spans at most one hole-free stretch:
    // check every page in between (tables are small).
    let mut page = first.align_down(4096u64);
    while page <= last {
        if kpt::translate(page).is_none() {
            return false;
        }
        page += 4096u64;
    }
    true
}

impl acpi::AcpiHandler for KernelAcpiHandler {
    unsafe fn map_physical_region<T>(&self, physical_address: usize, size: usize) -> acpi::PhysicalMapping<Self, T> {
        let phys = PhysAddr::new(physical_address as u64);
        let virt: VirtAddr = if in_direct_map(phys, size) {
            direct::phys_to_virt(phys)
        } else {
            mmio::map(phys, size as u64).expect("out of frames mapping an ACPI table")
        };
        // SAFETY: `virt` maps `size` bytes at `phys`, which the caller
        // (the acpi crate) guarantees hold a `T`; the mapping stays valid
        // for the kernel's lifetime, so unmapping is a no-op.
        unsafe {
            acpi::PhysicalMapping::new(physical_address, NonNull::new(virt.as_mut_ptr()).expect("non-null"), size, size, *self)
        }
    }

    fn unmap_physical_region<T>(_region: &acpi::PhysicalMapping<Self, T>) {}
}
