//! The GDT and the TSS. Long mode ignores segment bases and limits; what
//! matters is a 64-bit code segment and the TSS's interrupt stack table
//! (IST), which gives #DF, NMI and #MC known-good stacks of their own.

use super::stacks;
use spin::Lazy;
use x86_64::instructions::segmentation::{Segment, CS, DS, ES, SS};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::tss::TaskStateSegment;

/// IST slot (0-based, as the `x86_64` crate counts) per exception.
pub const DOUBLE_FAULT_IST: u16 = 0;
pub const NMI_IST: u16 = 1;
pub const MACHINE_CHECK_IST: u16 = 2;

static TSS: Lazy<TaskStateSegment> = Lazy::new(|| {
    let [main, df, nmi, mc] = stacks::all();
    let mut tss = TaskStateSegment::new();
    tss.privilege_stack_table[0] = main.top;
    tss.interrupt_stack_table[DOUBLE_FAULT_IST as usize] = df.top;
    tss.interrupt_stack_table[NMI_IST as usize] = nmi.top;
    tss.interrupt_stack_table[MACHINE_CHECK_IST as usize] = mc.top;
    tss
});

struct Gdt {
    table: GlobalDescriptorTable,
    code: SegmentSelector,
    data: SegmentSelector,
    tss: SegmentSelector,
}

static GDT: Lazy<Gdt> = Lazy::new(|| {
    let mut table = GlobalDescriptorTable::new();
    let code = table.append(Descriptor::kernel_code_segment());
    let data = table.append(Descriptor::kernel_data_segment());
    let tss = table.append(Descriptor::tss_segment(&TSS));
    Gdt { table, code, data, tss }
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
