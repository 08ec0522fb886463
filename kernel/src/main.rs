//! The hmmos kernel that `cargo run` boots.
#![no_std]
#![no_main]

use kernel::{qemu, BootInfo};

kernel::entry!(main);

fn main(_boot: &'static BootInfo) -> ! {
    if let Err(e) = kernel::platform::init() {
        log::error!("device bring-up failed: {e}");
        qemu::exit(qemu::ExitCode::Failure);
    }
    let stats = kernel::mm::frames::stats();
    log::info!("boot complete: {} of {} frames free", stats.free, stats.managed);
    qemu::exit(qemu::ExitCode::Success)
}
