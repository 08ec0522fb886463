//! HMM scenario: two devices different permissions (see `scenarios.rs`).
#![no_std]
#![no_main]

kernel::entry!(main);

fn main(_: &'static kernel::BootInfo) -> ! {
    kernel::testing::run("hmm_two_devices", kernel::tests![test_kernels::scenarios::two_devices_different_permissions]);
}
