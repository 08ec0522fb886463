//! HMM scenario: exit tears mirrors down (see `scenarios.rs`).
#![no_std]
#![no_main]

kernel::entry!(main);

fn main(_: &'static kernel::BootInfo) -> ! {
    kernel::testing::run("hmm_exit", kernel::tests![test_kernels::scenarios::exit_tears_mirrors_down]);
}
