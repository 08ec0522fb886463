//! Kernel stacks, each with an unmapped guard page below it.
//!
//! They live in the `.stacks` section of the image (see `boot/pvh/linker.ld`):
//!
//! ```text
//!   [guard][ main/boot stack 256 KiB ][guard][ #DF 16 KiB ][guard][ NMI 16 KiB ][guard][ #MC 16 KiB ]
//! ```
//!
//! The guard pages are left out of the kernel page table, so running off the
//! end of a stack is a page fault on the guard, which (the stack being
//! unusable) escalates to a double fault; the #DF handler runs on its own IST
//! stack and reports the overflow.

use x86_64::VirtAddr;

core::arch::global_asm!(
    r#"
    .pushsection .stacks, "aw", @nobits
    .balign 4096
    .global __boot_stack_guard, __boot_stack_top
__boot_stack_guard: .skip 4096
    .skip 262144
__boot_stack_top:
__df_stack_guard:   .skip 4096
    .skip 16384
__df_stack_top:
__nmi_stack_guard:  .skip 4096
    .skip 16384
__nmi_stack_top:
__mc_stack_guard:   .skip 4096
    .skip 16384
__mc_stack_top:
    .popsection
"#
);

extern "C" {
    static __boot_stack_guard: u8;
    static __boot_stack_top: u8;
    static __df_stack_guard: u8;
    static __df_stack_top: u8;
    static __nmi_stack_guard: u8;
    static __nmi_stack_top: u8;
    static __mc_stack_guard: u8;
    static __mc_stack_top: u8;
}

/// One kernel stack: `[guard, guard + 4 KiB)` is never mapped, the stack
/// proper is `[guard + 4 KiB, top)`.
#[derive(Clone, Copy, Debug)]
pub struct KernelStack {
    pub name: &'static str,
    pub guard: VirtAddr,
    pub top: VirtAddr,
}

impl KernelStack {
    /// Whether `addr` lies in this stack's guard page.
    pub fn guard_contains(&self, addr: VirtAddr) -> bool {
        addr >= self.guard && addr < self.guard + 4096u64
    }
}

macro_rules! stack {
    ($name:literal, $guard:ident, $top:ident) => {
        KernelStack {
            name: $name,
            // Only the symbols' addresses are taken; nothing is read.
            guard: VirtAddr::new(core::ptr::addr_of!($guard) as u64),
            top: VirtAddr::new(core::ptr::addr_of!($top) as u64),
        }
    };
}

/// Every kernel stack: main (the boot stack the kernel keeps running on),
/// then the IST stacks for #DF, NMI and #MC.
pub fn all() -> [KernelStack; 4] {
    [
        stack!("main", __boot_stack_guard, __boot_stack_top),
        stack!("double-fault IST", __df_stack_guard, __df_stack_top),
        stack!("NMI IST", __nmi_stack_guard, __nmi_stack_top),
        stack!("machine-check IST", __mc_stack_guard, __mc_stack_top),
    ]
}

/// The stack whose guard page holds `addr`, if any.
pub fn guard_hit(addr: VirtAddr) -> Option<KernelStack> {
    all().into_iter().find(|s| s.guard_contains(addr))
}
