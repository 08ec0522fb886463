//! A self-check of the test harness: this kernel never finishes; the
//! launcher must kill it after its timeout and judge it failed.
#![no_std]
#![no_main]

kernel::entry!(main);

fn main(_: &'static kernel::BootInfo) -> ! {
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}
