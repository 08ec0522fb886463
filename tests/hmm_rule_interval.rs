//! HMM rule (issue 10): reclaim_outside_the_window_forces_no_retry and
//! reclaim_inside_the_round_forces_a_retry (see `rules.rs`).
#![no_std]
#![no_main]

kernel::entry!(main);

fn main(_: &'static kernel::BootInfo) -> ! {
    kernel::testing::run("hmm_rule_interval", kernel::tests![test_kernels::rules::reclaim_outside_the_window_forces_no_retry, test_kernels::rules::reclaim_inside_the_round_forces_a_retry]);
}
