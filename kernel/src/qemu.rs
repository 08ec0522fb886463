//! Leaving QEMU with a status: the `isa-debug-exit` device at port 0xf4.
//! QEMU exits with `(code << 1) | 1`; the launcher turns [`ExitCode::Success`]
//! (status 33) into 0 and anything else into a failure.

use x86_64::instructions::port::Port;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ExitCode {
    /// Finished, every check held.
    Success = 0x10,
    /// A check failed, a panic, or a fatal trap.
    Failure = 0x11,
}

/// Exit QEMU. Never returns (halts forever if the device is missing).
pub fn exit(code: ExitCode) -> ! {
    // SAFETY: port 0xf4 is isa-debug-exit on the launcher's machine; writing
    // it ends the VM. Nothing else uses that port.
    unsafe { Port::<u32>::new(0xf4).write(code as u32) };
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}
