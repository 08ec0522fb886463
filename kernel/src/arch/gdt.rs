//! The GDT and the TSS. Long mode ignores segment bases and limits; what
//! matters is a 64-bit code segment per privilege level and the TSS: its
//! interrupt stack table (IST) gives #DF, NMI and #MC known-good stacks of
//! their own, and its `rsp0` is the stack the CPU switches to when a trap
//! arrives from ring 3 — the running task's kernel stack, set by the
//! scheduler at every switch ([`set_kernel_stack`]).
//!
//! ```text
//!  0x00 null | 0x08 kernel code | 0x10 kernel data | 0x18 TSS (2 slots)
//!  0x28 user data (selector 0x2b) | 0x30 user code (selector 0x33)
//! ```
//!
//! User data sits just below user code so that `SYSRET` (user SS = STAR +8,
//! CS = +16) could use the same table; today ring 3 is entered with `iretq`.

use super::stacks;
use core::cell::UnsafeCell;
use spin::Lazy;
use x86_64::instructions::segmentation::{Segment, CS, DS, ES, SS};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::tss::TaskStateSegment;
use x86_64::VirtAddr;

/// IST slot (0-based, as the `x86_64` crate counts) per exception.
pub const DOUBLE_FAULT_IST: u16 = 0;
pub const NMI_IST: u16 = 1;
pub const MACHINE_CHECK_IST: u16 = 2;

/// The TSS, which the CPU reads on every entry from ring 3 (for `rsp0`):
/// written only by [`set_kernel_stack`].
struct TssCell(UnsafeCell<TaskStateSegment>);
// SAFETY: one CPU; the only writer (`set_kernel_stack`) runs with
// interrupts disabled, and the CPU reads the field only on a ring change.
unsafe impl Sync for TssCell {}

static TSS: Lazy<TssCell> = Lazy::new(|| {
    let [main, df, nmi, mc] = stacks::all();
    let mut tss = TaskStateSegment::new();
    tss.privilege_stack_table[0] = main.top;
    tss.interrupt_stack_table[DOUBLE_FAULT_IST as usize] = df.top;
    tss.interrupt_stack_table[NMI_IST as usize] = nmi.top;
    tss.interrupt_stack_table[MACHINE_CHECK_IST as usize] = mc.top;
    TssCell(UnsafeCell::new(tss))
});

struct Gdt {
    table: GlobalDescriptorTable,
    code: SegmentSelector,
    data: SegmentSelector,
    tss: SegmentSelector,
    user_data: SegmentSelector,
    user_code: SegmentSelector,
}

static GDT: Lazy<Gdt> = Lazy::new(|| {
    let mut table = GlobalDescriptorTable::new();
    let code = table.append(Descriptor::kernel_code_segment());
    let data = table.append(Descriptor::kernel_data_segment());
    // SAFETY: the TSS is a static that lives forever and is never moved.
    let tss = table.append(unsafe { Descriptor::tss_segment_unchecked(TSS.0.get()) });
    let user_data = table.append(Descriptor::user_data_segment());
    let user_code = table.append(Descriptor::user_code_segment());
    Gdt { table, code, data, tss, user_data, user_code }
});

/// Load the GDT, reload the segment registers and the task register.
pub fn init() {
    GDT.table.load();
    // SAFETY: the selectors come from the GDT just loaded and describe a
    // 64-bit code segment, a data segment and an available TSS.
    unsafe {
        CS::set_reg(GDT.code);
        SS::set_reg(GDT.data);
        DS::set_reg(GDT.data);
        ES::set_reg(GDT.data);
        load_tss(GDT.tss);
    }
}

/// The ring-3 selectors `(code, data)`, RPL 3 (0x33, 0x2b).
pub fn user_selectors() -> (u16, u16) {
    (GDT.user_code.0, GDT.user_data.0)
}

/// The kernel stack the CPU loads on a trap from ring 3.
pub fn set_kernel_stack(top: VirtAddr) {
    let tss = TSS.0.get();
    // The TSS is packed (rsp0 sits at offset 4): an unaligned write.
    // SAFETY: see `TssCell`: a plain field write, no reference to the TSS
    // is held anywhere else; the caller has interrupts disabled.
    unsafe { core::ptr::addr_of_mut!((*tss).privilege_stack_table[0]).write_unaligned(top) };
}
