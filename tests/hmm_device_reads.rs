//! HMM scenario: device reads cpu written data (see `scenarios.rs`).
#![no_std]
#![no_main]

kernel::entry!(main);

fn main(_: &'static kernel::BootInfo) -> ! {
    kernel::testing::run("hmm_device_reads", kernel::tests![test_kernels::scenarios::device_reads_cpu_written_data]);
}
