//! Kernel stacks, each with an unmapped guard page below it.
//!
//! They live in the `.stacks` section of the image (see `boot/pvh/linker.ld`):
//!
//! ```text
//!  boot CPU:  [guard][ main/boot stack 256 KiB ][guard][ #DF 16 KiB ][guard][ NMI 16 KiB ][guard][ #MC 16 KiB ]
//!  each AP:   [guard][ main 64 KiB ][guard][ #DF 16 KiB ][guard][ NMI 16 KiB ][guard][ #MC 16 KiB ]
//! ```
//!
//! An application processor's main stack is where it starts and idles; tasks
//! run on their own kernel stacks (see `sched`), so 64 KiB is plenty. The AP
//! blocks sit at a fixed stride after `__ap_stacks` (one per CPU index
//! 1..MAX_CPUS) and are part of the image: no allocation, and their guard
//! pages are left out of the kernel page table like the boot CPU's.
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
    .balign 4096
    .global __ap_stacks
__ap_stacks:
    .skip {ap_bytes}
    .popsection
"#,
    ap_bytes = const AP_BLOCK * (crate::cpus::MAX_CPUS - 1),
);

/// An AP's main stack (bytes, without its guard).
const AP_MAIN: usize = 64 * 1024;
/// Each IST stack (bytes, without its guard).
const IST: usize = 16 * 1024;
/// One AP's block: four guard pages, the main stack and three IST stacks.
const AP_BLOCK: usize = 4 * 4096 + AP_MAIN + 3 * IST;

extern "C" {
    static __boot_stack_guard: u8;
    static __boot_stack_top: u8;
    static __df_stack_guard: u8;
    static __df_stack_top: u8;
    static __nmi_stack_guard: u8;
    static __nmi_stack_top: u8;
    static __mc_stack_guard: u8;
    static __mc_stack_top: u8;
    static __ap_stacks: u8;
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

/// The boot CPU's kernel stacks: main (the boot stack the kernel keeps
/// running on), then the IST stacks for #DF, NMI and #MC.
pub fn all() -> [KernelStack; 4] {
    [
        stack!("main", __boot_stack_guard, __boot_stack_top),
        stack!("double-fault IST", __df_stack_guard, __df_stack_top),
        stack!("NMI IST", __nmi_stack_guard, __nmi_stack_top),
        stack!("machine-check IST", __mc_stack_guard, __mc_stack_top),
    ]
}

/// The stacks of CPU `cpu` (same order as [`all`]).
pub fn of_cpu(cpu: crate::cpus::CpuId) -> [KernelStack; 4] {
    let Some(ap) = cpu.index().checked_sub(1) else { return all() };
    // Only the symbol's address is taken.
    let block = core::ptr::addr_of!(__ap_stacks) as u64 + (ap * AP_BLOCK) as u64;
    let main_guard = block;
    let df_guard = main_guard + 4096 + AP_MAIN as u64;
    let nmi_guard = df_guard + 4096 + IST as u64;
    let mc_guard = nmi_guard + 4096 + IST as u64;
    let s = |name, guard: u64, size: usize| KernelStack { name, guard: VirtAddr::new(guard), top: VirtAddr::new(guard + 4096 + size as u64) };
    [
        s("AP main", main_guard, AP_MAIN),
        s("AP double-fault IST", df_guard, IST),
        s("AP NMI IST", nmi_guard, IST),
        s("AP machine-check IST", mc_guard, IST),
    ]
}

/// Every CPU's stacks.
pub fn every() -> impl Iterator<Item = KernelStack> {
    (0..crate::cpus::MAX_CPUS).filter_map(crate::cpus::CpuId::new).flat_map(of_cpu)
}

/// The stack whose guard page holds `addr`, if any (any CPU's).
pub fn guard_hit(addr: VirtAddr) -> Option<KernelStack> {
    every().find(|s| s.guard_contains(addr))
}
