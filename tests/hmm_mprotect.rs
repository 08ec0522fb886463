//! HMM scenario: mprotect read only blocks device writes not reads (see `scenarios.rs`).
#![no_std]
#![no_main]

kernel::entry!(main);

fn main(_: &'static kernel::BootInfo) -> ! {
    kernel::testing::run("hmm_mprotect", kernel::tests![test_kernels::scenarios::mprotect_read_only_blocks_device_writes_not_reads]);
}
