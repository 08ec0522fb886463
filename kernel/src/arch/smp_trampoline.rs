//! The application processors' way from real mode to the kernel: a page of
//! code copied to [`BASE`] (below 1 MiB, where a startup IPI can point) and
//! the page tables it runs on.
//!
//! ```text
//!  SIPI vector 0x08 ─► 0x8000 real mode (CS = 0x800): lgdt (trampoline GDT), CR0.PE
//!     ─► 32-bit: CR4.PAE|PGE, CR3 = trampoline PML4, EFER.LME|NXE, CR0.PG|WP
//!     ─► 64-bit, still at 0x8000: RSP = params.stack, RDI = params.arg,
//!        call params.entry (higher half, the kernel's Rust `ap_entry`)
//! ```
//!
//! Low memory used (all inside the first MiB, which the frame allocator
//! never hands out — see `mm::frames`, so nothing else can own these
//! pages while APs start):
//!
//! ```text
//!  0x8000  code, GDT and the parameter block   (this file's assembly)
//!  0x9000  PML4: [0] → 0xa000; [256..512] = the kernel's own entries
//!  0xa000  PDPT: [0] → 0xb000
//!  0xb000  PD:   [0] = 0..2 MiB identity, 2 MiB page (covers 0x8000)
//! ```
//!
//! The kernel half of the PML4 is copied from the kernel's table: its
//! entries never change after boot (`mm::kpt`), so the copy stays right.
//! The entry point switches to the kernel's own CR3 at once; the low
//! identity map is used only for the few instructions here.
//!
//! One AP starts at a time: the parameter block is shared, so the starter
//! waits for each AP's acknowledgement before writing the next block.

use crate::mm::direct;
use x86_64::structures::paging::PhysFrame;
use x86_64::PhysAddr;

/// Where the trampoline runs (physical; identity-mapped while it runs).
pub const BASE: u64 = 0x8000;
/// The startup-IPI vector that starts an AP at [`BASE`] (`BASE >> 12`).
pub const SIPI_VECTOR: u8 = (BASE >> 12) as u8;
const PML4: u64 = 0x9000;
const PDPT: u64 = 0xa000;
const PD: u64 = 0xb000;

core::arch::global_asm!(
    r#"
    .pushsection .rodata.smp_trampoline, "a"
    .balign 16
    .global smp_tramp_start, smp_tramp_params, smp_tramp_end
smp_tramp_start:
    .code16
    cli
    cld
    xor %ax, %ax
    mov %ax, %ds
    lgdtl ({base} + (smp_tramp_gdtr - smp_tramp_start))
    mov %cr0, %eax
    or $1, %eax                                 /* PE */
    mov %eax, %cr0
    ljmpl $0x08, ${base} + (smp_tramp_32 - smp_tramp_start)

    .code32
smp_tramp_32:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov %cr4, %eax
    or $((1 << 5) | (1 << 7)), %eax             /* PAE | PGE */
    mov %eax, %cr4
    mov ${pml4}, %eax
    mov %eax, %cr3
    mov $0xC0000080, %ecx                       /* EFER */
    rdmsr
    or $((1 << 8) | (1 << 11)), %eax            /* LME | NXE (kernel tables use NX) */
    wrmsr
    mov %cr0, %eax
    or $((1 << 31) | (1 << 16)), %eax           /* PG | WP */
    mov %eax, %cr0
    ljmp $0x18, ${base} + (smp_tramp_64 - smp_tramp_start)

    .code64
smp_tramp_64:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    xor %eax, %eax
    mov %ax, %fs
    mov %ax, %gs
    mov ({base} + (smp_tramp_params - smp_tramp_start) + 8), %rsp
    mov ({base} + (smp_tramp_params - smp_tramp_start) + 16), %rdi
    mov ({base} + (smp_tramp_params - smp_tramp_start) + 0), %rax
    xor %ebp, %ebp
    call *%rax
1:  hlt
    jmp 1b

    .balign 8
smp_tramp_gdt:
    .quad 0
    .quad 0x00cf9a000000ffff                    /* 0x08: 32-bit code */
    .quad 0x00cf92000000ffff                    /* 0x10: data */
    .quad 0x00af9a000000ffff                    /* 0x18: 64-bit code */
smp_tramp_gdtr:
    .word smp_tramp_gdtr - smp_tramp_gdt - 1
    .long {base} + (smp_tramp_gdt - smp_tramp_start)

    .balign 8
smp_tramp_params:
    .quad 0                                     /* +0  entry (virtual) */
    .quad 0                                     /* +8  stack top */
    .quad 0                                     /* +16 argument (RDI) */
smp_tramp_end:
    .code64
    .popsection
"#,
    base = const BASE,
    pml4 = const PML4,
    options(att_syntax)
);

extern "C" {
    static smp_tramp_start: u8;
    static smp_tramp_params: u8;
    static smp_tramp_end: u8;
}

/// What an AP gets when it reaches 64-bit mode.
pub struct Params {
    /// The higher-half function to call (`extern "C" fn(u64) -> !`).
    pub entry: u64,
    /// Its stack's top (16-byte aligned).
    pub stack_top: u64,
    /// Its argument.
    pub arg: u64,
}

fn frame(addr: u64) -> PhysFrame {
    PhysFrame::containing_address(PhysAddr::new(addr))
}

/// Copy the trampoline and its page tables into low memory, with `params`
/// for the next AP to start.
///
/// # Safety
/// No AP is between its startup IPI and its acknowledgement (nothing runs
/// the low pages being rewritten).
pub unsafe fn install(params: &Params) {
    // Only the symbols' addresses are taken.
    let (start, params_at, end) =
        (core::ptr::addr_of!(smp_tramp_start), core::ptr::addr_of!(smp_tramp_params), core::ptr::addr_of!(smp_tramp_end));
    let len = end as usize - start as usize;
    assert!(len <= 4096, "the SMP trampoline fits one page");
    let mut code = [0u8; 4096];
    // SAFETY: [start, end) is the trampoline in .rodata, `len` bytes.
    unsafe { core::ptr::copy_nonoverlapping(start, code.as_mut_ptr(), len) };
    let p = params_at as usize - start as usize;
    code[p..p + 8].copy_from_slice(&params.entry.to_le_bytes());
    code[p + 8..p + 16].copy_from_slice(&params.stack_top.to_le_bytes());
    code[p + 16..p + 24].copy_from_slice(&params.arg.to_le_bytes());

    let mut pml4 = [0u8; 4096];
    pml4[..8].copy_from_slice(&(PDPT | 0x3).to_le_bytes());
    for (i, e) in crate::mm::kpt::kernel_half().iter().enumerate() {
        let at = (256 + i) * 8;
        pml4[at..at + 8].copy_from_slice(&e.addr().as_u64().wrapping_add(e.flags().bits()).to_le_bytes());
    }
    let mut pdpt = [0u8; 4096];
    pdpt[..8].copy_from_slice(&(PD | 0x3).to_le_bytes());
    let mut pd = [0u8; 4096];
    pd[..8].copy_from_slice(&0x83u64.to_le_bytes()); // present | writable | 2 MiB, at 0
    // SAFETY: the four pages lie in the first MiB, which the frame
    // allocator never hands out and the direct map covers; per the
    // caller, no CPU executes or walks them now.
    unsafe {
        direct::write_frame(frame(BASE), 0, &code);
        direct::write_frame(frame(PML4), 0, &pml4);
        direct::write_frame(frame(PDPT), 0, &pdpt);
        direct::write_frame(frame(PD), 0, &pd);
    }
}
