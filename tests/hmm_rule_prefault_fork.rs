//! HMM rule (issue 10): fork_then_device_write_copies_one_page (see `rules.rs`).
#![no_std]
#![no_main]

kernel::entry!(main);

fn main(_: &'static kernel::BootInfo) -> ! {
    kernel::testing::run("hmm_rule_prefault_fork", kernel::tests![test_kernels::rules::fork_then_device_write_copies_one_page]);
}
