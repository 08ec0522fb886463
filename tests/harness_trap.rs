//! A self-check of the test harness and of crash reports: this kernel reads
//! an unmapped address, and the launcher must judge it a CPU exception (not
//! a panic, not a triple fault) and symbolize the backtrace down to the
//! function that faulted (boot/launcher/tests/kernels.rs checks both).
#![no_std]
#![no_main]

kernel::entry!(main);

/// Reads an address nothing maps: a page fault the kernel cannot fix up.
#[inline(never)]
fn read_unmapped(addr: u64) -> u64 {
    // SAFETY: deliberately faults (the point of this kernel).
    unsafe { core::ptr::read_volatile(addr as *const u64) }
}

fn main(_: &'static kernel::BootInfo) -> ! {
    let v = read_unmapped(core::hint::black_box(0x0000_5ead_0000_0000));
    kernel::println!("read {v:#x}: the fault did not happen");
    kernel::qemu::exit(kernel::qemu::ExitCode::Success)
}
