//! The hmmos kernel that `cargo run` boots.
#![no_std]
#![no_main]

use kernel::{qemu, BootInfo};

kernel::entry!(main);

fn main(_boot: &'static BootInfo) -> ! {
    let stats = kernel::mm::frames::stats();
    log::info!("boot complete: {} of {} frames free", stats.free, stats.managed);
    qemu::exit(qemu::ExitCode::Success)
}
