//! The PVH entry: from 32-bit protected mode to 64-bit Rust in the higher half.
//!
//! The boot page tables map the first GiB twice with 2 MiB pages: identity
//! (so the code keeps running after paging is switched on) and at
//! `0xffff_ffff_8000_0000` (where the kernel is linked). The kernel replaces
//! them with its own tables as soon as it can; the identity half is gone then.
//!
//! ```text
//!  boot_pml4[0]   ─► boot_pdpt_lo[0]   ─► boot_pd  (512 × 2 MiB = 0..1 GiB)
//!  boot_pml4[511] ─► boot_pdpt_hi[510] ─┘
//! ```
//!
//! Only assembled for the bare-metal target; on the host this module is empty
//! so the start-info parser can be unit-tested.

#[cfg(target_os = "none")]
core::arch::global_asm!(
    r#"
    /* The PVH note: name "Xen", type 18 (PHYS32_ENTRY), 8-byte descriptor. */
    .pushsection .note.Xen, "a", @note
    .balign 4
    .long 4
    .long 8
    .long 18
    .asciz "Xen"
    .balign 4
    .quad pvh_start32
    .balign 4
    .popsection

    .pushsection .boot.text, "ax"
    .code32
    .global pvh_start32
pvh_start32:
    cli
    cld
    mov %ebx, %edi                      /* keep the start-info pointer */

    /* Boot page tables: PML4 -> PDPTs -> one PD of 2 MiB pages. */
    mov $boot_pdpt_lo, %eax
    or $0x3, %eax
    mov %eax, boot_pml4
    mov $boot_pdpt_hi, %eax
    or $0x3, %eax
    mov %eax, boot_pml4 + 511 * 8
    mov $boot_pd, %eax
    or $0x3, %eax
    mov %eax, boot_pdpt_lo
    mov %eax, boot_pdpt_hi + 510 * 8
    xor %ecx, %ecx
1:  mov %ecx, %eax
    shl $21, %eax
    or $0x83, %eax                      /* present | writable | 2 MiB */
    mov %eax, boot_pd(, %ecx, 8)
    inc %ecx
    cmp $512, %ecx
    jne 1b

    mov %cr4, %eax
    or $(1 << 5), %eax                  /* PAE */
    mov %eax, %cr4
    mov $boot_pml4, %eax
    mov %eax, %cr3
    mov $0xC0000080, %ecx               /* EFER */
    rdmsr
    or $((1 << 8) | (1 << 11)), %eax    /* LME | NXE */
    wrmsr
    mov %cr0, %eax
    or $((1 << 31) | (1 << 16) | 1), %eax   /* PG | WP | PE */
    mov %eax, %cr0

    lgdt boot_gdt_ptr
    ljmp $0x08, $pvh_start64

    .code64
pvh_start64:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    xor %ax, %ax
    mov %ax, %fs
    mov %ax, %gs
    movabs $__boot_stack_top, %rsp
    xor %ebp, %ebp
    mov %edi, %edi                      /* zero-extend the start-info pointer */
    movabs $pvh_rust_entry, %rax
    call *%rax
2:  hlt
    jmp 2b

    .balign 8
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff            /* 0x08: 64-bit code */
    .quad 0x00cf92000000ffff            /* 0x10: data */
boot_gdt_ptr:
    .word boot_gdt_ptr - boot_gdt - 1
    .long boot_gdt
    .popsection

    .pushsection .boot.bss, "aw", @nobits
    .balign 4096
boot_pml4:    .skip 4096
boot_pdpt_lo: .skip 4096
boot_pdpt_hi: .skip 4096
boot_pd:      .skip 4096
    .popsection
"#,
    options(att_syntax)
);
