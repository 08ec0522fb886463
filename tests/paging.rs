//! The kernel page table: map, translate, remap with a TLB flush, unmap.
#![no_std]
#![no_main]

use kernel::arch::extable;
use kernel::mm::{direct, frames, kpt};
use kernel::{tests, BootInfo};
use x86_64::structures::paging::{Page, PageTableFlags as F};
use x86_64::VirtAddr;

kernel::entry!(main);

fn main(_: &'static BootInfo) -> ! {
    kernel::testing::run("paging", tests![map_translate_remap_unmap, kernel_sections_have_their_permissions, direct_map_is_not_executable]);
}

/// A kernel address nobody else uses: past the heap, in its PML4 slot.
const TEST_VA: u64 = kernel::mm::HEAP_BASE + (1 << 30);

fn read_u64(va: VirtAddr) -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: copying from a mapped test page into a local; faults are caught.
    unsafe { extable::copy_bytes(b.as_mut_ptr(), va.as_ptr(), 8) }.expect("test page readable");
    u64::from_le_bytes(b)
}

fn map_translate_remap_unmap() {
    let before = frames::stats();
    let page = Page::containing_address(VirtAddr::new(TEST_VA));
    let a = frames::alloc_zeroed().unwrap();
    let b = frames::alloc_zeroed().unwrap();
    // SAFETY: each frame is owned here; writing the first 8 bytes is fine.
    unsafe {
        direct::write_frame(a.frame(), 0, &0xaaaa_u64.to_le_bytes());
        direct::write_frame(b.frame(), 0, &0xbbbb_u64.to_le_bytes());
    }
    let flags = F::PRESENT | F::WRITABLE | F::NO_EXECUTE;
    // SAFETY: TEST_VA is unused kernel space; the frame is owned here.
    unsafe { kpt::map(page, a.frame(), flags) }.unwrap().flush();
    assert_eq!(kpt::translate(page.start_address() + 8u64).map(|t| t.0), Some(a.start_address() + 8u64));
    assert_eq!(read_u64(page.start_address()), 0xaaaa, "reads go to frame A");

    // Remap to B. The read above put A's translation in the TLB: only the
    // flush makes the CPU see B.
    // SAFETY: nothing uses the page between unmap and the new map.
    let (old, flush) = unsafe { kpt::unmap(page) }.unwrap();
    flush.flush();
    assert_eq!(old, a.frame());
    // SAFETY: as above.
    unsafe { kpt::map(page, b.frame(), flags) }.unwrap().flush();
    assert_eq!(read_u64(page.start_address()), 0xbbbb, "after remap + flush, reads go to frame B");

    // SAFETY: nothing uses the page afterwards.
    let (_, flush) = unsafe { kpt::unmap(page) }.unwrap();
    flush.flush();
    assert_eq!(kpt::translate(page.start_address()), None);
    let fault = extable::probe_read(page.start_address()).expect_err("unmapped page must fault");
    assert_eq!(fault.addr, page.start_address());
    assert_eq!(fault.error & 1, 0, "not-present fault");
    drop((a, b));
    // The page-table pages created for TEST_VA stay (kernel tables are never
    // freed): exactly the intermediate levels, no data frame.
    let used = before.free - frames::stats().free;
    assert!(used <= 2, "only intermediate tables remain ({used} frames)");
}

fn kernel_sections_have_their_permissions() {
    for s in kpt::kernel_sections() {
        // The first page that is not a stack guard (.stacks starts with one).
        let first = (0..).map(|i| s.start + i * 4096u64).find(|&a| kernel::arch::stacks::guard_hit(a).is_none()).unwrap();
        let (_, flags) = kpt::translate(first).expect("section mapped");
        assert_eq!(flags.contains(F::WRITABLE), s.flags.contains(F::WRITABLE), "{} writability", s.name);
        assert_eq!(flags.contains(F::NO_EXECUTE), s.flags.contains(F::NO_EXECUTE), "{} executability", s.name);
        assert!(!flags.contains(F::WRITABLE) || flags.contains(F::NO_EXECUTE), "{} is W^X", s.name);
    }
    for s in kernel::arch::stacks::every() {
        assert_eq!(kpt::translate(s.guard), None, "guard page of the {} stack is unmapped", s.name);
        assert!(kpt::translate(s.top - 8u64).is_some(), "the {} stack is mapped", s.name);
    }
}

fn direct_map_is_not_executable() {
    let f = frames::alloc().unwrap();
    let va = direct::phys_to_virt(f.start_address());
    let (pa, flags) = kpt::translate(va).expect("RAM is in the direct map");
    assert_eq!(pa, f.start_address());
    assert!(flags.contains(F::NO_EXECUTE | F::WRITABLE));
}
