//! HMM scenario: munmap then device access fails cleanly (see `scenarios.rs`).
#![no_std]
#![no_main]

kernel::entry!(main);

fn main(_: &'static kernel::BootInfo) -> ! {
    kernel::testing::run("hmm_munmap", kernel::tests![test_kernels::scenarios::munmap_then_device_access_fails_cleanly]);
}
