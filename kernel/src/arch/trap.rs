//! Trap dispatch: exceptions are reported (or fixed up), interrupts go to
//! the handler registered for their vector.
//!
//! Every exception report names the vector, the error code and RIP; a page
//! fault adds CR2 and the error bits decoded; a double fault whose CR2 lies
//! in a stack's guard page is reported as that stack's overflow. A fatal
//! report then goes to the fatal hook — by default: print the report and a
//! frame-pointer backtrace starting at the faulting RIP (see [`backtrace`];
//! the launcher symbolizes it), and exit QEMU with a failure code. (Test kernels that provoke a fatal trap on purpose install
//! a hook that checks the report instead.)

use super::backtrace;
use super::extable;
use super::stacks;
use super::trap_entry::TrapFrame;
use core::fmt;
use core::sync::atomic::{AtomicUsize, Ordering};
use x86_64::registers::control::Cr2;
use x86_64::structures::idt::PageFaultErrorCode;
use x86_64::VirtAddr;

/// A fatal trap, ready to print.
pub struct TrapReport<'a> {
    pub frame: &'a TrapFrame,
    /// CR2 for page faults and double faults.
    pub cr2: Option<VirtAddr>,
    /// The stack whose guard page was hit, if the trap is a stack overflow.
    pub overflowed: Option<stacks::KernelStack>,
}

/// The name of exception `vector`.
pub fn exception_name(vector: u64) -> &'static str {
    const NAMES: [&str; 32] = [
        "divide error", "debug", "non-maskable interrupt", "breakpoint", "overflow",
        "bound range exceeded", "invalid opcode", "device not available", "double fault",
        "coprocessor segment overrun", "invalid TSS", "segment not present", "stack-segment fault",
        "general protection fault", "page fault", "reserved", "x87 floating point", "alignment check",
        "machine check", "SIMD floating point", "virtualization", "control protection", "reserved",
        "reserved", "reserved", "reserved", "reserved", "reserved", "hypervisor injection",
        "VMM communication", "security", "reserved",
    ];
    NAMES.get(vector as usize).copied().unwrap_or("interrupt")
}

/// The page-fault error bits in words, e.g. "write, not-present page, kernel mode".
pub struct PfBits(pub u64);

impl fmt::Display for PfBits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = PageFaultErrorCode::from_bits_truncate(self.0);
        let access = if e.contains(PageFaultErrorCode::INSTRUCTION_FETCH) {
            "instruction fetch"
        } else if e.contains(PageFaultErrorCode::CAUSED_BY_WRITE) {
            "write"
        } else {
            "read"
        };
        let why = if e.contains(PageFaultErrorCode::PROTECTION_VIOLATION) { "protection violation" } else { "not-present page" };
        let mode = if e.contains(PageFaultErrorCode::USER_MODE) { "user mode" } else { "kernel mode" };
        write!(f, "{access}, {why}, {mode}")?;
        if e.contains(PageFaultErrorCode::MALFORMED_TABLE) {
            f.write_str(", reserved bit set in a page-table entry")?;
        }
        Ok(())
    }
}

impl fmt::Display for TrapReport<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fr = self.frame;
        write!(f, "EXCEPTION vector {} ({}), error code {:#x}, RIP {:#x}, RSP {:#x}", fr.vector, exception_name(fr.vector), fr.error_code, fr.rip, fr.rsp)?;
        if let Some(cr2) = self.cr2 {
            write!(f, ", CR2 {:#x}", cr2.as_u64())?;
            if fr.vector == 14 {
                write!(f, " ({})", PfBits(fr.error_code))?;
            }
        }
        if let Some(s) = self.overflowed {
            write!(f, "\n  kernel stack overflow: the {} stack ran into its guard page at {:#x}", s.name, s.guard.as_u64())?;
        }
        Ok(())
    }
}

/// What to do with a fatal trap. Must not return.
pub type FatalHook = fn(&TrapReport<'_>) -> !;

static FATAL_HOOK: AtomicUsize = AtomicUsize::new(0);

/// Replace the fatal-trap policy (test kernels use this to check a report).
pub fn set_fatal_hook(hook: FatalHook) {
    FATAL_HOOK.store(hook as usize, Ordering::SeqCst);
}

fn fatal(report: &TrapReport<'_>) -> ! {
    let hook = FATAL_HOOK.load(Ordering::SeqCst);
    if hook != 0 {
        // SAFETY: only `set_fatal_hook` stores into FATAL_HOOK, always a `FatalHook`.
        let hook: FatalHook = unsafe { core::mem::transmute::<usize, FatalHook>(hook) };
        hook(report);
    }
    crate::console::emergency_write(format_args!("\n{report}\n"));
    backtrace::print(Some(report.frame.rip), report.frame.rbp);
    crate::qemu::exit(crate::qemu::ExitCode::Failure)
}

/// A handler for an interrupt vector (32..=255).
pub type InterruptHandler = fn(vector: u8);

static HANDLERS: [AtomicUsize; 256] = [const { AtomicUsize::new(0) }; 256];

/// Route `vector` to `handler` (replacing any previous one).
pub fn set_interrupt_handler(vector: u8, handler: InterruptHandler) {
    assert!(vector >= 32, "vectors below 32 are exceptions");
    HANDLERS[vector as usize].store(handler as usize, Ordering::SeqCst);
}

/// Remove the handler of `vector`.
pub fn clear_interrupt_handler(vector: u8) {
    HANDLERS[vector as usize].store(0, Ordering::SeqCst);
}

/// What runs for every trap from ring 3 (system calls, exceptions and
/// interrupts that arrived while user code ran): the process layer's.
pub type UserTrapHook = fn(&mut TrapFrame);

static USER_HOOK: AtomicUsize = AtomicUsize::new(0);

/// Route every trap from ring 3 to `hook`.
pub fn set_user_trap_hook(hook: UserTrapHook) {
    USER_HOOK.store(hook as usize, Ordering::SeqCst);
}

/// Whether the trap interrupted ring 3.
pub fn from_user(frame: &TrapFrame) -> bool {
    frame.cs & 3 == 3
}

/// Run the registered handler of interrupt `vector` (32..=255).
pub fn dispatch_interrupt(vector: u8) {
    let h = HANDLERS[vector as usize].load(Ordering::SeqCst);
    if h == 0 {
        log::warn!("interrupt on vector {vector} with no handler");
    } else {
        // SAFETY: only `set_interrupt_handler` stores non-zero values here,
        // always an `InterruptHandler`.
        let h: InterruptHandler = unsafe { core::mem::transmute::<usize, InterruptHandler>(h) };
        h(vector);
    }
}

#[no_mangle]
extern "C" fn trap_dispatch(frame: &mut TrapFrame) {
    let vector = frame.vector;
    if from_user(frame) {
        let h = USER_HOOK.load(Ordering::SeqCst);
        if h != 0 {
            // SAFETY: only `set_user_trap_hook` stores non-zero values, always a `UserTrapHook`.
            let h: UserTrapHook = unsafe { core::mem::transmute::<usize, UserTrapHook>(h) };
            return h(frame);
        }
        // No process layer: a ring-3 trap is fatal like any other.
        fatal(&TrapReport { frame, cr2: (vector == 14).then(|| VirtAddr::new_truncate(Cr2::read_raw())), overflowed: None })
    }
    if vector >= 32 {
        let h = HANDLERS[vector as usize].load(Ordering::SeqCst);
        if h == 0 {
            log::warn!("interrupt on vector {vector} with no handler");
        } else {
            // SAFETY: only `set_interrupt_handler` stores non-zero values here,
            // always an `InterruptHandler`.
            let h: InterruptHandler = unsafe { core::mem::transmute::<usize, InterruptHandler>(h) };
            h(vector as u8);
        }
        return;
    }
    match vector {
        14 => {
            let cr2 = Cr2::read_raw();
            let cr2 = VirtAddr::new_truncate(cr2);
            if extable::fixup(frame, cr2) {
                return;
            }
            fatal(&TrapReport { frame, cr2: Some(cr2), overflowed: stacks::guard_hit(cr2) })
        }
        8 => {
            // The #PF that could not be delivered left its address in CR2.
            let cr2 = VirtAddr::new_truncate(Cr2::read_raw());
            fatal(&TrapReport { frame, cr2: Some(cr2), overflowed: stacks::guard_hit(cr2) })
        }
        3 => log::warn!("breakpoint at {:#x}", frame.rip - 1),
        _ => fatal(&TrapReport { frame, cr2: None, overflowed: None }),
    }
}
