//! HMM rule (issue 10): partial_commit_still_flushes (see `rules.rs`).
#![no_std]
#![no_main]

kernel::entry!(main);

fn main(_: &'static kernel::BootInfo) -> ! {
    kernel::testing::run("hmm_rule_partial_commit", kernel::tests![test_kernels::rules::partial_commit_still_flushes]);
}
