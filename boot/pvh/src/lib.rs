//! How hmmos gets started: the PVH boot protocol.
//!
//! QEMU's `-kernel` loads an ELF64 image and, if it finds a "Xen" ELF note of
//! type 18 (`XEN_ELFNOTE_PHYS32_ENTRY`), jumps to the 32-bit physical address
//! in that note with paging off and `ebx` pointing at an `hvm_start_info`
//! structure. There is no bootloader binary: [`entry`] holds the assembly that
//! goes from there to 64-bit Rust, and [`start_info`] reads what the
//! hypervisor handed over (memory map, RSDP, command line) into a plain
//! [`BootInfo`] value that the kernel keeps.
//!
//! ```text
//!  QEMU -kernel ──► pvh_start32 (32-bit, paging off, ebx = start info)
//!                   │  boot page tables: 0..1 GiB identity + at -2 GiB
//!                   │  CR4.PAE, EFER.LME|NXE, CR0.PG|WP, far jump
//!                   ▼
//!                   pvh_start64 (64-bit, still in low memory)
//!                   │  jump to the higher half, boot stack
//!                   ▼
//!                   pvh_rust_entry(start_info_phys)   ← defined by the kernel
//! ```
//!
//! The linker script (`linker.ld` beside this crate) places the boot code at
//! 1 MiB, identity-mapped, and the rest of the kernel at
//! `0xffff_ffff_8000_0000 + physical`.
#![no_std]

pub mod entry;
pub mod start_info;

pub use start_info::{BootInfo, MemoryKind, MemoryRegion, StartInfoError};

/// Where the kernel image is linked: virtual = physical + this.
pub const KERNEL_VIRT_OFFSET: u64 = 0xffff_ffff_8000_0000;

/// The path of the linker script, for the kernel crates' build scripts.
pub const LINKER_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/linker.ld");
