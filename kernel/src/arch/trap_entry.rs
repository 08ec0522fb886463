//! The assembly half of trap handling: 256 entry stubs and the common path.
//!
//! Stable Rust has no `extern "x86-interrupt"`, so each vector gets a 16-byte
//! stub that makes every trap look alike — push a zero where the CPU pushed
//! no error code, push the vector number — and jumps to `trap_common`, which
//! saves all general registers as a [`TrapFrame`] and calls
//! `trap_dispatch(&mut TrapFrame)`. Whatever the dispatcher changes in the
//! frame (RIP, RSP, registers: that is how fault fixups work) is restored by
//! `iretq`.
//!
//! Stack on entry to `trap_dispatch` (lowest address first):
//!
//! ```text
//!  r15 r14 r13 r12 r11 r10 r9 r8 rbp rdi rsi rdx rcx rbx rax
//!  vector error_code | rip cs rflags rsp ss   ← pushed by the CPU
//! ```
//!
//! `trap_return` is the second half alone: with RSP at a `TrapFrame` it
//! restores it and `iretq`s. A new task (a process's first entry to ring 3,
//! a forked child) starts there, on a frame the scheduler built.

use x86_64::VirtAddr;

/// The registers of the interrupted context, as `trap_common` saved them.
#[repr(C)]
#[derive(Clone, Debug, Default)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// Bytes between two consecutive stubs.
pub const STUB_SIZE: u64 = 16;

core::arch::global_asm!(
    r#"
    .pushsection .text.trap_stubs, "ax"
    .balign 16
    .global trap_stubs
trap_stubs:
    .set vec, 0
    .rept 256
    .balign 16
    /* Vectors 8, 10-14, 17, 21, 29, 30 push an error code; the rest don't. */
    .if (vec == 8) || ((vec >= 10) && (vec <= 14)) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
    .else
    pushq $0
    .endif
    pushq $vec
    jmp trap_common
    .set vec, vec + 1
    .endr

trap_common:
    push %rax
    push %rbx
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %rbp
    push %r8
    push %r9
    push %r10
    push %r11
    push %r12
    push %r13
    push %r14
    push %r15
    mov %rsp, %rdi
    cld
    call trap_dispatch
    .global trap_return
trap_return:
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rbp
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rcx
    pop %rbx
    pop %rax
    add $16, %rsp
    iretq
    .popsection
"#,
    options(att_syntax)
);

extern "C" {
    static trap_stubs: u8;
    static trap_return: u8;
}

/// The address of `trap_return` (restore a `TrapFrame` at RSP, `iretq`).
pub fn trap_return_addr() -> u64 {
    // Only the symbol's address is taken.
    core::ptr::addr_of!(trap_return) as u64
}

/// The entry stub for `vector`.
pub fn stub(vector: u8) -> VirtAddr {
    // Only the symbol's address is taken.
    VirtAddr::new(core::ptr::addr_of!(trap_stubs) as u64 + vector as u64 * STUB_SIZE)
}
