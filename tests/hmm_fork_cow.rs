//! HMM scenario: fork then parent write device sees new data (see `scenarios.rs`).
#![no_std]
#![no_main]

kernel::entry!(main);

fn main(_: &'static kernel::BootInfo) -> ! {
    kernel::testing::run("hmm_fork_cow", kernel::tests![test_kernels::scenarios::fork_then_parent_write_device_sees_new_data]);
}
