//! HMM rule (issue 10): release_reaches_the_driver (see `rules.rs`).
#![no_std]
#![no_main]

kernel::entry!(main);

fn main(_: &'static kernel::BootInfo) -> ! {
    kernel::testing::run("hmm_rule_release", kernel::tests![test_kernels::rules::release_reaches_the_driver]);
}
