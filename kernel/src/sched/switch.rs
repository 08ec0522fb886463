//! The context switch: the only assembly of the scheduler.
//!
//! `switch_stacks(save, next)` pushes the callee-saved registers (the
//! System V ABI says the caller saved the rest), stores RSP through `save`,
//! loads `next` into RSP, pops the next task's callee-saved registers and
//! returns — into wherever that task called `switch_stacks` from, or, for a
//! new task, into `trap_return` or `kernel_task_start` (see `task.rs`).
//!
//! Right after RSP moved to the next stack, `switch_stacks` clears the old
//! task's `on_cpu` flag (a plain byte store: on x86 it is ordered after the
//! store of the saved RSP, a release): from then on another CPU may resume
//! the old task, and this CPU no longer touches its stack.

use super::task::Task;
use crate::arch::gdt;
use x86_64::registers::control::Cr3;
use core::sync::atomic::AtomicBool;
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

impl SwitchFrame {
    /// The frame of a new kernel task: `kernel_task_start` finds the
    /// function in r12 and its argument in r13.
    pub(super) fn entry(f: u64, arg: u64) -> SwitchFrame {
        SwitchFrame { r12: f, r13: arg, ..SwitchFrame::default() }
    }
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
    movb $0, (%rdx)
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %rbx
    pop %rbp
    ret

    .global kernel_task_start
kernel_task_start:
    mov %r12, %rdi
    mov %r13, %rsi
    call kernel_task_main
    ud2
    .popsection
"#,
    options(att_syntax)
);

extern "C" {
    fn switch_stacks(save: *mut u64, next: u64, prev_on_cpu: *const AtomicBool);
    static kernel_task_start: u8;
}

/// The address a new kernel task's first switch returns to.
pub(super) fn kernel_task_start_addr() -> u64 {
    // Only the symbol's address is taken.
    core::ptr::addr_of!(kernel_task_start) as u64
}

/// A new kernel task's first Rust code (from `kernel_task_start`): turn
/// interrupts on (the switch ran with them off), run, exit.
#[no_mangle]
extern "C" fn kernel_task_main(f: usize, arg: u64) -> ! {
    x86_64::instructions::interrupts::enable();
    // SAFETY: `Task::new_kernel` stored a `fn(u64)` in r12, which
    // kernel_task_start passes here unchanged.
    let f: fn(u64) = unsafe { core::mem::transmute::<usize, fn(u64)>(f) };
    f(arg);
    super::exit_current()
}

/// Switch from `me` (running on this stack) to `next`.
///
/// # Safety
/// Interrupts off, run queue unlocked; `me` is the running task; `next` was
/// switched out by this function (and its `on_cpu` seen false since) or
/// prepared by `Task::new_user`/`new_kernel`, and this CPU set its
/// `on_cpu`; both outlive the switch (see `reschedule`).
pub(super) unsafe fn switch_to(me: &Task, next: &Task) {
    let (mine, theirs) = (me.ctx(), next.ctx());
    assert!(me.stack_intact(), "kernel stack overflow in task {} ({}): its canary is overwritten", me.id, me.name);
    // SAFETY (all accesses to `*mine` / `*theirs`): contexts are touched
    // only here, with interrupts off, by one CPU at a time (see `Task`).
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
        switch_stacks(core::ptr::addr_of_mut!((*mine).rsp), (*theirs).rsp, &me.on_cpu);
    }
}
