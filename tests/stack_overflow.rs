//! A kernel stack overflow runs into the guard page; the page fault cannot
//! be delivered on the dead stack, so it becomes a double fault, which runs
//! on its own IST stack and reports the overflow clearly.
//!
//! Passing needs all of it: without the guard page the recursion would
//! scribble over memory, without the IST stack the CPU would triple-fault
//! (QEMU exits 0, which the launcher counts as failure), and the report
//! must name the double fault and the main stack's guard page.
#![no_std]
#![no_main]

use kernel::arch::trap::{self, TrapReport};
use kernel::{qemu, BootInfo};

kernel::entry!(main);

fn main(_: &'static BootInfo) -> ! {
    trap::set_fatal_hook(check_report);
    kernel::println!("stack_overflow: recursing until the guard page ...");
    let depth = recurse(0);
    panic!("recursion returned ({depth}) instead of overflowing");
}

fn check_report(report: &TrapReport<'_>) -> ! {
    kernel::console::emergency_write(format_args!("{report}\n"));
    let ok = report.frame.vector == 8
        && report.overflowed.is_some_and(|s| s.name == "main")
        && report.cr2.is_some_and(|a| kernel::arch::stacks::all()[0].guard_contains(a));
    if ok {
        kernel::console::emergency_write(format_args!("stack_overflow: double fault on the IST stack reported the overflow: ok\n"));
        qemu::exit(qemu::ExitCode::Success)
    }
    kernel::console::emergency_write(format_args!("stack_overflow: wrong report\n"));
    qemu::exit(qemu::ExitCode::Failure)
}

/// Recurses until the stack runs out (the bound is never reached: 256 KiB of
/// stack holds far fewer than a million 512-byte frames).
#[inline(never)]
fn recurse(n: u64) -> u64 {
    let mut frame = [n; 64];
    core::hint::black_box(&mut frame);
    if n == 1_000_000 {
        return n;
    }
    recurse(n + 1) + frame[(n % 64) as usize]
}
