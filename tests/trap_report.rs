//! An unexpected exception (here #UD from `ud2`) is reported with its
//! vector, name, error code and RIP — checked by a fatal hook.
#![no_std]
#![no_main]

use kernel::arch::trap::{self, TrapReport};
use kernel::{qemu, BootInfo};

kernel::entry!(main);

core::arch::global_asm!(".global trap_report_ud2", "trap_report_ud2:", "ud2");
extern "C" {
    fn trap_report_ud2();
}

fn main(_: &'static BootInfo) -> ! {
    // A breakpoint is reported and execution continues.
    x86_64::instructions::interrupts::int3();
    trap::set_fatal_hook(check);
    // SAFETY: it never returns: the #UD is fatal and the hook exits QEMU.
    unsafe { trap_report_ud2() };
    panic!("ud2 did not trap");
}

fn check(report: &TrapReport<'_>) -> ! {
    let text = alloc::format!("{report}");
    kernel::console::emergency_write(format_args!("{text}\n"));
    let expected_rip = trap_report_ud2 as *const () as u64;
    let ok = report.frame.vector == 6
        && report.frame.rip == expected_rip
        && text.contains("vector 6 (invalid opcode)")
        && text.contains(&alloc::format!("RIP {expected_rip:#x}"))
        && text.contains("error code 0x0");
    qemu::exit(if ok { qemu::ExitCode::Success } else { qemu::ExitCode::Failure })
}
extern crate alloc;
