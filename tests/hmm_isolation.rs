//! HMM scenario: no reach into kernel or other processes (see `scenarios.rs`).
#![no_std]
#![no_main]

kernel::entry!(main);

fn main(_: &'static kernel::BootInfo) -> ! {
    kernel::testing::run("hmm_isolation", kernel::tests![test_kernels::scenarios::no_reach_into_kernel_or_other_processes]);
}
