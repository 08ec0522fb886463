//! Memory management: physical frames, the kernel's own page tables, the
//! direct map, the kernel heap.
//!
//! # The virtual memory map
//!
//! ```text
//!  0x0000_0000_0000_0000 ┬──────────────────────────────┐ PML4 0..=255
//!                        │ user space, per address space │ (process page tables;
//!  0x0000_7fff_ffff_ffff ┴──────────────────────────────┘  see crate::aspace)
//!                          ... non-canonical hole ...
//!  0xffff_8000_0000_0000 ┬──────────────────────────────┐ PML4 256
//!                        │ direct map of physical RAM    │ phys + DIRECT_MAP_BASE, RW NX,
//!                        │ (2 MiB pages where aligned)   │ up to 512 GiB
//!  0xffff_c000_0000_0000 ├──────────────────────────────┤ PML4 384
//!                        │ kernel heap (up to HEAP_SIZE) │ RW NX, grows from frames
//!  0xffff_d000_0000_0000 ├──────────────────────────────┤ PML4 416
//!                        │ MMIO window                   │ device registers, uncached, RW NX
//!  0xffff_ffff_8000_0000 ├──────────────────────────────┤ PML4 511, PDPT 510
//!                        │ kernel image = phys + offset  │ .text R X | .rodata R NX |
//!                        │                               │ .data/.bss RW NX | .stacks RW NX
//!                        │                               │ (one unmapped guard page below
//!                        │                               │  every stack)
//!  0xffff_ffff_ffff_ffff ┴──────────────────────────────┘
//! ```
//!
//! The kernel half (PML4 256..=511) is created once at boot and its PML4
//! entries never change afterwards, so every process page table shares it by
//! copying those 256 entries.
//!
//! # A virtual address, bit by bit (4-level paging, 4 KiB pages)
//!
//! ```text
//!  63      48 47    39 38    30 29    21 20    12 11         0
//!  ┌─────────┬────────┬────────┬────────┬────────┬────────────┐
//!  │ sign ext│  PML4  │  PDPT  │   PD   │   PT   │   offset   │
//!  └─────────┴────────┴────────┴────────┴────────┴────────────┘
//!     16 bits   9 bits   9 bits   9 bits   9 bits    12 bits
//! ```
//!
//! # Boot order
//! 1. [`early::EarlyFrames`] hands out frames with a bump pointer while only
//!    the boot identity map exists — just the page-table pages of the new
//!    kernel table and the allocator's own metadata.
//! 2. [`kpt::build_and_switch`] builds the kernel's page table and loads it;
//!    the boot identity map is gone from then on.
//! 3. [`frames::init`] builds the bitmap allocator from the memory map,
//!    reserving firmware, the kernel image and everything step 1 handed out.
//! 4. [`heap::init`] maps the heap and starts the global allocator.

pub mod direct;
pub mod early;
pub mod frames;
pub mod heap;
pub mod kpt;
pub mod mmio;
pub mod shootdown;
pub mod tlb;

use x86_64::VirtAddr;

/// Where physical memory is mapped: `virt = phys + DIRECT_MAP_BASE`.
pub const DIRECT_MAP_BASE: u64 = 0xffff_8000_0000_0000;
/// The most physical memory the direct map covers (one PML4 slot).
pub const DIRECT_MAP_MAX: u64 = 512 << 30;
/// The kernel heap.
pub const HEAP_BASE: u64 = 0xffff_c000_0000_0000;
/// The heap's virtual region: mapped on demand (see [`heap`]).
pub const HEAP_SIZE: u64 = 1 << 30;
/// The MMIO window: device registers get uncached mappings here.
pub const MMIO_BASE: u64 = 0xffff_d000_0000_0000;
pub const MMIO_SIZE: u64 = 512 << 30;
/// The kernel image.
pub const KERNEL_BASE: u64 = pvh::KERNEL_VIRT_OFFSET;

/// The first user-space address that is never handed out (the null page stays unmapped).
pub const USER_MIN: u64 = 0x1000;
/// One past the highest user-space address (the lower canonical half).
pub const USER_END: u64 = 0x0000_8000_0000_0000;

/// Whether `addr` is in the lower (user) half.
pub fn is_user(addr: VirtAddr) -> bool {
    addr.as_u64() < USER_END
}

/// Sizes in the boot log.
pub(crate) struct Bytes(pub u64);

impl core::fmt::Display for Bytes {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let b = self.0;
        if b >= 1 << 30 && b.is_multiple_of(1 << 30) {
            write!(f, "{} GiB", b >> 30)
        } else if b >= 1 << 20 {
            write!(f, "{} MiB", b >> 20)
        } else {
            write!(f, "{} KiB", b >> 10)
        }
    }
}
