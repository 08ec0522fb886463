//! The context switch: the only assembly of the scheduler.
//!
//! `switch_stacks(save, next)` pushes the callee-saved registers (the
//! System V ABI says the caller saved the rest), stores RSP through `save`,
//! loads `next` into RSP, pops the next task's callee-saved registers and
//! returns — into wherever that task called `switch_stacks` from, or, for a
//! new task, into `trap_return` (see `task.rs`).

use super::task::Task;
use crate::arch::gdt;
use x86_64::registers::control::Cr3;
use x86_64::structures::paging::PhysFrame;
use x86_64::{PhysAddr, VirtAddr};

/// What `switch_stacks` pushes, lowest address first.
#[repr(C)]
#[derive(Default)]
pub(super) struct SwitchFrame {
    r15: u64,
    r14: u64,
    r13: u64,
    r12: u64,
    rbx: u64,
    rbp: u64,
}

core::arch::global_asm!(
    r#"
    .pushsection .text.switch_stacks, "ax"
    .global switch_stacks
switch_stacks:
    push %rbp
    push %rbx
    push %r12
    push %r13
    push %r14
    push %r15
    mov %rsp, (%rdi)
    mov %rsi, %rsp
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %rbx
    pop %rbp
    ret
    .popsection
"#,
    options(att_syntax)
);

extern "C" {
    fn switch_stacks(save: *mut u64, next: u64);
}

/// Switch from `me` (running on this stack) to `next`.
///
/// # Safety
/// Interrupts off, run queue unlocked; `me` is the running task; `next` was
/// switched out by this function or prepared by `Task::new_user`; both
/// outlive the switch (see `reschedule`).
pub(super) unsafe fn switch_to(me: &Task, next: &Task) {
    let (mine, theirs) = (me.ctx(), next.ctx());
    assert!(me.stack_intact(), "kernel stack overflow in task {} ({}): its canary is overwritten", me.id, me.name);
    // SAFETY (all accesses to `*mine` / `*theirs`): contexts are touched
    // only here, with interrupts off on the one CPU (sched invariant 1).
    unsafe {
        (*mine).cr3 = Cr3::read().0.start_address().as_u64();
        (*mine).held = crate::sync::save_held();
        crate::sync::restore_held(&(*theirs).held);
        if (*theirs).cr3 != (*mine).cr3 {
            let frame = PhysFrame::containing_address(PhysAddr::new((*theirs).cr3));
            // The kernel half is shared by every table: this code and
            // stack stay mapped. Recorded for TLB shootdowns (mm::shootdown).
            crate::mm::shootdown::load_root(frame);
        }
        if let Some(top) = next.kstack_top() {
            gdt::set_kernel_stack(VirtAddr::new(top));
        }
        switch_stacks(core::ptr::addr_of_mut!((*mine).rsp), (*theirs).rsp);
    }
}
