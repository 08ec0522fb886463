//! HMM scenario: migration device never sees the old frame (see `scenarios.rs`).
#![no_std]
#![no_main]

kernel::entry!(main);

fn main(_: &'static kernel::BootInfo) -> ! {
    kernel::testing::run("hmm_migrate", kernel::tests![test_kernels::scenarios::migration_device_never_sees_the_old_frame]);
}
