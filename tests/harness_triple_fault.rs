//! A self-check of the test harness: a triple fault resets the machine,
//! QEMU (with -no-reboot) exits 0 — and the launcher must still judge it
//! failed, because 0 is not the kernel's success code.
#![no_std]
#![no_main]

use x86_64::structures::DescriptorTablePointer;
use x86_64::VirtAddr;

kernel::entry!(main);

fn main(_: &'static kernel::BootInfo) -> ! {
    let empty = DescriptorTablePointer { limit: 0, base: VirtAddr::zero() };
    // SAFETY: deliberately loads an empty IDT and faults: with no handler
    // for anything, the CPU escalates to a triple fault and QEMU exits.
    unsafe {
        x86_64::instructions::tables::lidt(&empty);
        core::arch::asm!("ud2");
    }
    unreachable!()
}
