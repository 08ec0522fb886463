//! A self-check of the test harness: this kernel panics, and the launcher
//! must judge it failed (it is listed as an expected failure in
//! boot/launcher/tests/kernels.rs, which checks the panic report).
#![no_std]
#![no_main]

kernel::entry!(main);

fn main(_: &'static kernel::BootInfo) -> ! {
    let v: u32 = core::hint::black_box(7);
    assert_eq!(v, 8, "deliberate failure");
    kernel::qemu::exit(kernel::qemu::ExitCode::Success)
}
