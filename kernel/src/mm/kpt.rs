//! The kernel's own page table: built at boot, then shared (its upper half)
//! by every address space.
//!
//! [`build_and_switch`] makes a fresh PML4 with the direct map, the kernel
//! image with per-section permissions (W^X), the stacks with their guard
//! pages left unmapped, and empty PDPTs for the heap and MMIO slots (so the
//! kernel half's PML4 entries never change later). It loads it into CR3:
//! from then on the boot identity map is gone.
//!
//! Later changes go through the functions here, under one lock; they return
//! the `x86_64` crate's `#[must_use]` `MapperFlush` tokens.

use super::early::EarlyFrames;
use super::frames::PageTableFrames;
use super::{direct, Bytes, DIRECT_MAP_BASE, HEAP_BASE, KERNEL_BASE, MMIO_BASE};
use crate::arch::stacks;
use pvh::{BootInfo, MemoryKind};
use spin::Mutex;
use x86_64::registers::control::{Cr3, Cr3Flags, Cr4, Cr4Flags};
use x86_64::structures::paging::mapper::{MapToError, MapperFlush, TranslateResult, UnmapError};
use x86_64::structures::paging::{
    FrameAllocator, Mapper, OffsetPageTable, Page, PageSize, PageTable, PageTableFlags as F, PhysFrame, Size2MiB,
    Size4KiB, Translate,
};
use x86_64::{PhysAddr, VirtAddr};

extern "C" {
    static __text_start: u8;
    static __text_end: u8;
    static __rodata_start: u8;
    static __rodata_end: u8;
    static __data_start: u8;
    static __data_end: u8;
    static __stacks_start: u8;
    static __stacks_end: u8;
    static __kernel_phys_start: u8;
    static __kernel_phys_end: u8;
}

macro_rules! sym {
    ($s:ident) => {
        // Only the linker symbol's address is used.
        VirtAddr::new(core::ptr::addr_of!($s) as u64)
    };
}

/// The physical range of the kernel image (never handed out as free memory).
pub fn kernel_image_phys() -> (PhysAddr, PhysAddr) {
    (PhysAddr::new(sym!(__kernel_phys_start).as_u64()), PhysAddr::new(sym!(__kernel_phys_end).as_u64()))
}

/// One section of the kernel image with its permissions.
#[derive(Clone, Copy, Debug)]
pub struct Section {
    pub name: &'static str,
    pub start: VirtAddr,
    pub end: VirtAddr,
    pub flags: F,
}

/// The kernel image, section by section, with the permissions each gets.
pub fn kernel_sections() -> [Section; 4] {
    let g = F::PRESENT | F::GLOBAL;
    [
        Section { name: ".text", start: sym!(__text_start), end: sym!(__text_end), flags: g },
        Section { name: ".rodata", start: sym!(__rodata_start), end: sym!(__rodata_end), flags: g | F::NO_EXECUTE },
        Section { name: ".data+.bss", start: sym!(__data_start), end: sym!(__data_end), flags: g | F::WRITABLE | F::NO_EXECUTE },
        Section { name: ".stacks", start: sym!(__stacks_start), end: sym!(__stacks_end), flags: g | F::WRITABLE | F::NO_EXECUTE },
    ]
}

static KPT: Mutex<Option<OffsetPageTable<'static>>> = Mutex::new(None);

fn map_range(m: &mut OffsetPageTable<'_>, early: &mut EarlyFrames, start: u64, end: u64, virt_off: u64, flags: F) {
    let mut a = start & !0xfff;
    while a < end {
        let v = VirtAddr::new(a + virt_off);
        let huge = a.is_multiple_of(Size2MiB::SIZE) && a + Size2MiB::SIZE <= end;
        // SAFETY: the table is not loaded yet (the flush tokens are ignored
        // for that reason) and each physical range is mapped where the memory
        // map above says it goes; nothing aliases Rust-owned memory wrongly.
        unsafe {
            if huge {
                let page = Page::<Size2MiB>::containing_address(v);
                m.map_to(page, PhysFrame::containing_address(PhysAddr::new(a)), flags | F::HUGE_PAGE, early)
                    .expect("direct map")
                    .ignore();
                a += Size2MiB::SIZE;
            } else {
                let page = Page::<Size4KiB>::containing_address(v);
                m.map_to(page, PhysFrame::containing_address(PhysAddr::new(a)), flags, early).expect("kernel mapping").ignore();
                a += Size4KiB::SIZE;
            }
        }
    }
}

/// What the boot log prints about the new page table.
pub struct Layout {
    pub pml4: PhysFrame,
    pub direct_mapped: u64,
    pub table_frames: u64,
}

/// Build the kernel page table and switch to it.
pub fn build_and_switch(info: &BootInfo, early: &mut EarlyFrames) -> Layout {
    let before = early.used().1;
    let pml4 = early.allocate_frame().expect("no frame for the kernel PML4");
    // SAFETY: the fresh, zeroed PML4 frame is identity-mapped (early frames
    // lie below 1 GiB) and owned only by this function.
    let table = unsafe { &mut *(pml4.start_address().as_u64() as *mut PageTable) };
    // SAFETY: offset 0 is right while the boot identity map is active.
    let mut m = unsafe { OffsetPageTable::new(table, VirtAddr::zero()) };

    // The direct map: the first MiB (firmware tables live there) and every
    // RAM region, merged so that 2 MiB pages can span adjacent regions.
    let mut ranges = [(0u64, 0u64); pvh::start_info::MAX_REGIONS + 1];
    let mut n = 0;
    ranges[n] = (0, 1 << 20);
    n += 1;
    for r in info.memory_map() {
        if matches!(r.kind, MemoryKind::Usable | MemoryKind::AcpiReclaimable | MemoryKind::AcpiNvs) {
            ranges[n] = (r.start.as_u64() & !0xfff, r.end().next_multiple_of(4096).min(super::DIRECT_MAP_MAX));
            n += 1;
        }
    }
    let ranges = &mut ranges[..n];
    ranges.sort_unstable();
    let mut direct_mapped = 0;
    let mut i = 0;
    while i < ranges.len() {
        let (s, mut e) = ranges[i];
        while i + 1 < ranges.len() && ranges[i + 1].0 <= e {
            e = e.max(ranges[i + 1].1);
            i += 1;
        }
        map_range(&mut m, early, s, e, DIRECT_MAP_BASE, F::PRESENT | F::WRITABLE | F::NO_EXECUTE | F::GLOBAL);
        direct_mapped += e - s;
        i += 1;
    }

    // The kernel image, section by section; stacks without their guards.
    for s in kernel_sections() {
        let mut v = s.start.as_u64();
        while v < s.end.as_u64() {
            let page = VirtAddr::new(v);
            if stacks::guard_hit(page).is_none() {
                map_range(&mut m, early, v - KERNEL_BASE, v - KERNEL_BASE + 4096, KERNEL_BASE, s.flags);
            }
            v += 4096;
        }
    }

    // Empty PDPTs for the heap and MMIO slots: the kernel half's PML4
    // entries are final from here on.
    for slot in [HEAP_BASE, MMIO_BASE] {
        let pdpt = early.allocate_frame().expect("no frame for a kernel PDPT");
        let idx = VirtAddr::new(slot).p4_index();
        m.level_4_table_mut()[idx].set_frame(pdpt, F::PRESENT | F::WRITABLE);
    }

    // SAFETY: the new table maps the running code (.text), the stack we are
    // on, all data, and the direct map; the identity-mapped boot code is
    // not needed any more. PGE lets the kernel's GLOBAL entries survive CR3
    // switches between address spaces.
    unsafe {
        Cr4::update(|f| f.insert(Cr4Flags::PAGE_GLOBAL));
        Cr3::write(pml4, Cr3Flags::empty());
    }
    direct::set_offset(DIRECT_MAP_BASE);
    // SAFETY: the PML4 is reachable through the direct map just activated.
    let table = unsafe { &mut *direct::phys_to_virt(pml4.start_address()).as_mut_ptr::<PageTable>() };
    // SAFETY: the direct map covers all RAM, where every table frame lives.
    *KPT.lock() = Some(unsafe { OffsetPageTable::new(table, direct::offset()) });
    let table_frames = (early.used().1 - before) / 4096;
    Layout { pml4, direct_mapped, table_frames }
}

impl core::fmt::Display for Layout {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        writeln!(f, "kernel page table: PML4 at {:#x}, {} table pages", self.pml4.start_address().as_u64(), self.table_frames)?;
        writeln!(f, "  {:#018x}  direct map of {} (RW NX, 2 MiB pages where aligned)", DIRECT_MAP_BASE, Bytes(self.direct_mapped))?;
        writeln!(f, "  {:#018x}  heap region ({}, RW NX, {} mapped; grows from frames)", HEAP_BASE, Bytes(super::HEAP_SIZE), Bytes(super::heap::mapped()))?;
        writeln!(f, "  {:#018x}  MMIO window (uncached, RW NX)", MMIO_BASE)?;
        for s in kernel_sections() {
            let p = s.flags;
            writeln!(
                f,
                "  {:#018x}  {:<11} R{}{}  {}",
                s.start.as_u64(),
                s.name,
                if p.contains(F::WRITABLE) { "W" } else { "-" },
                if p.contains(F::NO_EXECUTE) { "-" } else { "X" },
                Bytes(s.end - s.start)
            )?;
        }
        for s in stacks::all() {
            writeln!(f, "  {:#018x}  guard page below the {} stack (unmapped)", s.guard.as_u64(), s.name)?;
        }
        write!(f, "  user half PML4 0..=255 empty; boot identity map gone")
    }
}

fn with<R>(f: impl FnOnce(&mut OffsetPageTable<'static>) -> R) -> R {
    x86_64::instructions::interrupts::without_interrupts(|| f(KPT.lock().as_mut().expect("kernel page table not built")))
}

/// The kernel PML4 frame.
pub fn pml4_frame() -> PhysFrame {
    Cr3::read().0
}

/// Map a kernel page.
///
/// # Safety
/// `page` is in a kernel region and not in use; mapping `frame` there must
/// not create an alias that breaks Rust's aliasing rules (e.g. to memory
/// the heap or a live object owns).
pub unsafe fn map(page: Page, frame: PhysFrame, flags: F) -> Result<MapperFlush<Size4KiB>, MapToError<Size4KiB>> {
    assert!(!super::is_user(page.start_address()), "kpt::map is for kernel addresses");
    // SAFETY: forwarded to the caller.
    with(|m| unsafe { m.map_to(page, frame, flags | F::GLOBAL, &mut PageTableFrames) })
}

/// Map a 2 MiB kernel page (device memory; see `mmio`).
///
/// # Safety
/// As for [`map`].
pub unsafe fn map_huge(page: Page<Size2MiB>, frame: PhysFrame<Size2MiB>, flags: F) -> Result<MapperFlush<Size2MiB>, MapToError<Size2MiB>> {
    assert!(!super::is_user(page.start_address()), "kpt::map_huge is for kernel addresses");
    // SAFETY: forwarded to the caller.
    with(|m| unsafe { m.map_to(page, frame, flags | F::GLOBAL | F::HUGE_PAGE, &mut PageTableFrames) })
}

/// Unmap a kernel page; the frame that was mapped is returned (the caller
/// decides whether to free it) with the flush the change needs.
///
/// # Safety
/// Nothing may use the page after the flush.
pub unsafe fn unmap(page: Page) -> Result<(PhysFrame, MapperFlush<Size4KiB>), UnmapError> {
    with(|m| m.unmap(page))
}

/// Change a kernel page's flags.
///
/// # Safety
/// Taking permissions away from memory in use crashes its users.
pub unsafe fn update_flags(page: Page, flags: F) -> Result<MapperFlush<Size4KiB>, x86_64::structures::paging::mapper::FlagUpdateError> {
    // SAFETY: forwarded to the caller.
    with(|m| unsafe { m.update_flags(page, flags | F::GLOBAL) })
}

/// Where `addr` is mapped in the kernel page table, with its flags.
pub fn translate(addr: VirtAddr) -> Option<(PhysAddr, F)> {
    with(|m| match m.translate(addr) {
        TranslateResult::Mapped { frame, offset, flags } => Some((frame.start_address() + offset, flags)),
        _ => None,
    })
}

/// The kernel half of the PML4 (entries 256..=511), for new address spaces.
pub fn kernel_half() -> [x86_64::structures::paging::page_table::PageTableEntry; 256] {
    with(|m| core::array::from_fn(|i| m.level_4_table()[256 + i].clone()))
}
