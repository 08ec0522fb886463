//! The x86_64 specifics: descriptor tables, trap entry and dispatch, the
//! exception table, kernel stacks, frame-pointer backtraces.

pub mod backtrace;
pub mod extable;
pub mod gdt;
pub mod idt;
pub mod smp_trampoline;
pub mod stacks;
pub mod trap;
pub mod trap_entry;

/// Load the GDT/TSS and the IDT. Interrupts stay disabled.
pub fn init() {
    gdt::init();
    idt::init();
}
