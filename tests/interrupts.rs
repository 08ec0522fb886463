//! Interrupt delivery through the local APIC: an allocated vector's handler
//! runs, a waiter halts until it fires, a wait for an interrupt that never
//! comes times out instead of hanging, and vectors are given back on drop.
#![no_std]
#![no_main]

extern crate alloc;
use alloc::vec::Vec;
use kernel::irq::{self, Vector};
use kernel::{tests, BootInfo};

kernel::entry!(main);

fn main(_: &'static BootInfo) -> ! {
    kernel::testing::run("interrupts", tests![self_ipi_reaches_the_handler, wait_times_out, vectors_are_exhaustible_and_reusable, msi_message_targets_this_cpu]);
}

fn self_ipi_reaches_the_handler() {
    let v = Vector::alloc().unwrap();
    let before = v.count();
    irq::lapic().self_ipi(v.number());
    irq::wait_until(10_000, || v.count() > before).expect("the interrupt arrived");
    assert_eq!(v.count(), before + 1, "handled exactly once");
}

fn wait_times_out() {
    let v = Vector::alloc().unwrap();
    let before = v.count(); // counts are per vector number, since boot
    let err = irq::wait_until(2_000, || v.count() > before).expect_err("nothing fires this vector");
    assert_eq!(err.waited_us, 2_000);
    // And the timer left nothing armed: a later wait still works.
    irq::lapic().self_ipi(v.number());
    irq::wait_until(10_000, || v.count() == before + 1).expect("delivery after a timeout");
}

fn vectors_are_exhaustible_and_reusable() {
    let mut all = Vec::new();
    let err = loop {
        match Vector::alloc() {
            Ok(v) => all.push(v),
            Err(e) => break e,
        }
    };
    // 0x30..=0xef, less the system-call gate 0x80.
    assert_eq!(all.len(), 0xf0 - 0x30 - 1, "every device vector could be taken once");
    assert!(all.iter().all(|v| v.number() != kernel::arch::idt::SYSCALL_VECTOR), "the system-call gate is never a device's");
    let mut numbers: Vec<u8> = all.iter().map(|v| v.number()).collect();
    numbers.dedup();
    assert_eq!(numbers.len(), all.len(), "no vector handed out twice");
    kernel::println!("(got `{err}`)");
    let freed = all.pop().unwrap().number();
    let again = Vector::alloc().expect("a dropped vector is free again");
    assert_eq!(again.number(), freed);
}

fn msi_message_targets_this_cpu() {
    let v = Vector::alloc().unwrap();
    let (addr, data) = irq::msi_message(&v);
    assert_eq!(addr & 0xfff0_0000, 0xfee0_0000);
    assert_eq!((addr >> 12) & 0xff, irq::lapic().id() as u64);
    assert_eq!(data, v.number() as u32);
}
