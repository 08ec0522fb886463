//! HMM scenario: exclusive access revoked by cpu write (see `scenarios.rs`).
#![no_std]
#![no_main]

kernel::entry!(main);

fn main(_: &'static kernel::BootInfo) -> ! {
    kernel::testing::run("hmm_exclusive", kernel::tests![test_kernels::scenarios::exclusive_access_revoked_by_cpu_write]);
}
