//! HMM scenario: device writes cpu reads and pages are dirty (see `scenarios.rs`).
#![no_std]
#![no_main]

kernel::entry!(main);

fn main(_: &'static kernel::BootInfo) -> ! {
    kernel::testing::run("hmm_device_writes", kernel::tests![test_kernels::scenarios::device_writes_cpu_reads_and_pages_are_dirty]);
}
