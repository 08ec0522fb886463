//! The exception table: instructions that are allowed to fault.
//!
//! A few assembly routines touch memory that may not be mapped or may not
//! allow the access — copying to and from process memory, and the probes the
//! tests use to check W^X. Each such instruction has an entry in the
//! `.extable` section naming a fixup address. When a page fault hits a listed
//! instruction, the trap handler does not report or resolve anything: it puts
//! CR2 in `r9`, the error code in `r10` and resumes at the fixup, which makes
//! the routine return "faulted at CR2". The caller — safe Rust, with the
//! address space in hand — decides what to do (resolve the fault and retry,
//! or report it). No page-fault resolution ever runs in trap context.
//!
//! Entry kinds: `INSN` fixes up a fault *at* the listed instruction;
//! `CALL` fixes up an instruction-fetch fault in a function called from the
//! listed return address (used to probe "is this page executable?").

use super::trap_entry::TrapFrame;
use x86_64::VirtAddr;

#[repr(C)]
struct Entry {
    at: u64,
    fixup: u64,
    kind: u64,
}

const INSN: u64 = 0;
const CALL: u64 = 1;

/// What a faulting probe or copy saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultInfo {
    /// CR2: the address that faulted.
    pub addr: VirtAddr,
    /// The page-fault error code (see [`x86_64::structures::idt::PageFaultErrorCode`]).
    pub error: u64,
}

#[repr(C)]
#[derive(Default)]
struct RawFault {
    addr: u64,
    error: u64,
}

core::arch::global_asm!(
    r#"
    .pushsection .text.extable_routines, "ax"

    /* usize hmm_copy_bytes(dst rdi, src rsi, len rdx, fault_out rcx): bytes NOT copied. */
    .global hmm_copy_bytes
hmm_copy_bytes:
    mov %rcx, %r8
    mov %rdx, %rcx
1:  rep movsb
    xor %eax, %eax
    ret
2:  mov %r9, (%r8)
    mov %r10, 8(%r8)
    mov %rcx, %rax
    ret
    .pushsection .extable, "a"
    .quad 1b, 2b, 0
    .popsection

    /* u64 hmm_probe_exec(target rdi, fault_out rsi): 0 if target ran and returned. */
    .global hmm_probe_exec
hmm_probe_exec:
    mov %rsi, %r8
    call *%rdi
3:  xor %eax, %eax
    ret
4:  mov %r9, (%r8)
    mov %r10, 8(%r8)
    mov $1, %eax
    ret
    .pushsection .extable, "a"
    .quad 3b, 4b, 1
    .popsection

    .popsection
"#,
    options(att_syntax)
);

extern "C" {
    fn hmm_copy_bytes(dst: *mut u8, src: *const u8, len: usize, fault: *mut RawFault) -> usize;
    fn hmm_probe_exec(target: u64, fault: *mut RawFault) -> u64;
    static __extable_start: Entry;
    static __extable_end: Entry;
}

fn entries() -> &'static [Entry] {
    // SAFETY: the linker script brackets the `.extable` section, which holds
    // only `Entry` records emitted by the assembly above, with these symbols.
    unsafe {
        let start = core::ptr::addr_of!(__extable_start);
        let end = core::ptr::addr_of!(__extable_end);
        core::slice::from_raw_parts(start, end.offset_from(start) as usize)
    }
}

/// Called by the page-fault handler: if the fault is one the table allows,
/// redirect the frame to the fixup and return true.
pub fn fixup(frame: &mut TrapFrame, cr2: VirtAddr) -> bool {
    let instruction_fetch = frame.error_code & (1 << 4) != 0;
    for e in entries() {
        let hit = match e.kind {
            INSN => frame.rip == e.at,
            // The fetch of the called function faulted: the return address
            // the `call` pushed is on top of the stack.
            CALL => {
                instruction_fetch && frame.rip == cr2.as_u64() && {
                    // SAFETY: rsp is the interrupted kernel stack, mapped;
                    // it holds at least the return address of the `call`.
                    let ret = unsafe { *(frame.rsp as *const u64) };
                    ret == e.at
                }
            }
            _ => false,
        };
        if hit {
            if e.kind == CALL {
                frame.rsp += 8; // drop the return address: resume as if returned
            }
            frame.r9 = cr2.as_u64();
            frame.r10 = frame.error_code;
            frame.rip = e.fixup;
            return true;
        }
    }
    false
}

/// Copy `len` bytes from `src` to `dst`, either of which may fault.
/// Returns the fault (and so how far it got) instead of crashing.
///
/// # Safety
/// Every byte of both ranges that *is* mapped must be valid to read (`src`)
/// or write (`dst`) — e.g. memory of a process, never a live Rust object
/// that is borrowed elsewhere.
pub unsafe fn copy_bytes(dst: *mut u8, src: *const u8, len: usize) -> Result<(), (usize, FaultInfo)> {
    let mut raw = RawFault::default();
    // SAFETY: forwarded to the caller; faults are caught by the table above.
    let left = unsafe { hmm_copy_bytes(dst, src, len, &mut raw) };
    if left == 0 {
        Ok(())
    } else {
        Err((len - left, FaultInfo { addr: VirtAddr::new_truncate(raw.addr), error: raw.error }))
    }
}

/// Read one byte at `addr`, or the fault.
pub fn probe_read(addr: VirtAddr) -> Result<u8, FaultInfo> {
    let mut b = 0u8;
    // SAFETY: one byte read into a local; a fault is caught and reported.
    unsafe { copy_bytes(&mut b, addr.as_ptr(), 1) }.map(|_| b).map_err(|(_, f)| f)
}

/// Write `value` at `addr`, or the fault. The write really happens if the
/// page allows it: only probe memory whose contents you own.
///
/// # Safety
/// If `addr` is writable, writing `value` there must not break anything.
pub unsafe fn probe_write(addr: VirtAddr, value: u8) -> Result<(), FaultInfo> {
    // SAFETY: forwarded to the caller.
    unsafe { copy_bytes(addr.as_mut_ptr(), &value, 1) }.map_err(|(_, f)| f)
}

/// Call the code at `target`; an instruction-fetch fault there (a
/// non-executable page) comes back as the fault.
///
/// # Safety
/// If `target` is executable, it must be a function that returns with the
/// C calling convention and no arguments.
pub unsafe fn probe_exec(target: VirtAddr) -> Result<(), FaultInfo> {
    let mut raw = RawFault::default();
    // SAFETY: forwarded to the caller.
    match unsafe { hmm_probe_exec(target.as_u64(), &mut raw) } {
        0 => Ok(()),
        _ => Err(FaultInfo { addr: VirtAddr::new_truncate(raw.addr), error: raw.error }),
    }
}
