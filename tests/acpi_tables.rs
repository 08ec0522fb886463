//! The `acpi` crate reads the firmware tables through the kernel's
//! handler: the RSDP from the PVH start info, the RSDT, and the MCFG with
//! the ECAM window QEMU's q35 places at 0xB000_0000 for buses 0-255.
#![no_std]
#![no_main]

extern crate alloc;
use alloc::vec::Vec;
use kernel::acpi::KernelAcpiHandler;
use kernel::{tests, BootInfo};

kernel::entry!(main);

fn main(_: &'static BootInfo) -> ! {
    kernel::testing::run("acpi_tables", tests![mcfg_names_the_ecam_window, dmar_is_present]);
}

fn tables() -> acpi::AcpiTables<KernelAcpiHandler> {
    let rsdp = kernel::boot_info().rsdp.expect("PVH hands over an RSDP");
    // SAFETY: the address comes from the hypervisor's start info.
    unsafe { acpi::AcpiTables::from_rsdp(KernelAcpiHandler, rsdp.as_u64() as usize) }.expect("valid ACPI tables")
}

fn mcfg_names_the_ecam_window() {
    let t = tables();
    let mcfg = t.find_table::<acpi::mcfg::Mcfg>().expect("MCFG present");
    let e = mcfg.entries();
    assert_eq!(e.len(), 1);
    let (base, seg, start, end) = (e[0].base_address, e[0].pci_segment_group, e[0].bus_number_start, e[0].bus_number_end);
    kernel::println!("(ECAM at {base:#x}, segment {seg}, buses {start}..={end})");
    assert_eq!((base, seg, start, end), (0xb000_0000, 0, 0, 255));
}

fn dmar_is_present() {
    let t = tables();
    let sigs: Vec<[u8; 4]> = t.headers().map(|h| h.signature.as_str().as_bytes().try_into().unwrap_or([0; 4])).collect();
    assert!(sigs.contains(b"DMAR"), "the intel-iommu device adds a DMAR table");
    assert!(sigs.contains(b"MCFG"));
}
