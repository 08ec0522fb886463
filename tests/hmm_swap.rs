//! HMM scenario: swapped page comes back on a device fault (see `scenarios.rs`).
#![no_std]
#![no_main]

kernel::entry!(main);

fn main(_: &'static kernel::BootInfo) -> ! {
    kernel::testing::run("hmm_swap", kernel::tests![test_kernels::scenarios::swapped_page_comes_back_on_a_device_fault]);
}
