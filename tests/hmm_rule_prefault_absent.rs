//! HMM rule (issue 10): prefault_never_allocates_neighbours (see `rules.rs`).
#![no_std]
#![no_main]

kernel::entry!(main);

fn main(_: &'static kernel::BootInfo) -> ! {
    kernel::testing::run("hmm_rule_prefault_absent", kernel::tests![test_kernels::rules::prefault_never_allocates_neighbours]);
}
