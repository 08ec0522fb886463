//! HMM rule (issue 10): exclusive_any_cpu_access_revokes (see `rules.rs`).
#![no_std]
#![no_main]

kernel::entry!(main);

fn main(_: &'static kernel::BootInfo) -> ! {
    kernel::testing::run("hmm_rule_exclusive", kernel::tests![test_kernels::rules::exclusive_any_cpu_access_revokes]);
}
