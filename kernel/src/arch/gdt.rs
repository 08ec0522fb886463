//! The GDT and the TSS, one of each per CPU. Long mode ignores segment
//! bases and limits; what matters is a 64-bit code segment per privilege
//! level and the TSS: its interrupt stack table (IST) gives #DF, NMI and
//! #MC known-good stacks of their own (each CPU its own, see
//! [`super::stacks::of_cpu`]), and its `rsp0` is the stack the CPU switches
//! to when a trap arrives from ring 3 — the running task's kernel stack,
//! set by the scheduler at every switch ([`set_kernel_stack`]).
//!
//! ```text
//!  0x00 null | 0x08 kernel code | 0x10 kernel data | 0x18 TSS (2 slots)
//!  0x28 user data (selector 0x2b) | 0x30 user code (selector 0x33)
//! ```
//!
//! User data sits just below user code so that `SYSRET` (user SS = STAR +8,
//! CS = +16) could use the same table; today ring 3 is entered with `iretq`.
//!
//! Every CPU has the same layout but its own table (a TSS descriptor is
//! marked busy when loaded, so two CPUs cannot share one) — which also makes
//! the table's address a per-CPU value that ring 3 cannot change: see
//! [`cpu_of_loaded_table`] and `cpus::this_cpu`.

use super::stacks;
use crate::cpus::{CpuId, MAX_CPUS};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, Ordering};
use spin::Once;
use x86_64::instructions::segmentation::{Segment, CS, DS, ES, SS};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::tss::TaskStateSegment;
use x86_64::VirtAddr;

/// IST slot (0-based, as the `x86_64` crate counts) per exception.
pub const DOUBLE_FAULT_IST: u16 = 0;
pub const NMI_IST: u16 = 1;
pub const MACHINE_CHECK_IST: u16 = 2;

/// A CPU's TSS, which that CPU reads on every entry from ring 3 (for
/// `rsp0`): written only by [`set_kernel_stack`], on that CPU.
struct TssCell(UnsafeCell<TaskStateSegment>);
// SAFETY: each cell is written only by the CPU that loaded it (its `rsp0`,
// in `set_kernel_stack`, with interrupts disabled) or before that CPU
// starts (`init_cpu`, through `Once`); the CPU itself reads the field only
// on a ring change, which cannot happen on that CPU while it writes.
unsafe impl Sync for TssCell {}

static TSS: [Once<TssCell>; MAX_CPUS] = [const { Once::new() }; MAX_CPUS];

struct Gdt {
    table: GlobalDescriptorTable,
    code: SegmentSelector,
    data: SegmentSelector,
    tss: SegmentSelector,
    user_data: SegmentSelector,
    user_code: SegmentSelector,
}

static GDT: [Once<Gdt>; MAX_CPUS] = [const { Once::new() }; MAX_CPUS];
/// The address of each CPU's table (0: not built), for [`cpu_of_loaded_table`].
static GDT_BASE: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

fn build(cpu: CpuId) -> &'static Gdt {
    let tss = TSS[cpu.index()].call_once(|| {
        let [main, df, nmi, mc] = stacks::of_cpu(cpu);
        let mut tss = TaskStateSegment::new();
        tss.privilege_stack_table[0] = main.top;
        tss.interrupt_stack_table[DOUBLE_FAULT_IST as usize] = df.top;
        tss.interrupt_stack_table[NMI_IST as usize] = nmi.top;
        tss.interrupt_stack_table[MACHINE_CHECK_IST as usize] = mc.top;
        TssCell(UnsafeCell::new(tss))
    });
    let gdt = GDT[cpu.index()].call_once(|| {
        let mut table = GlobalDescriptorTable::new();
        let code = table.append(Descriptor::kernel_code_segment());
        let data = table.append(Descriptor::kernel_data_segment());
        // SAFETY: the TSS is a static that lives forever and is never moved.
        let tss = table.append(unsafe { Descriptor::tss_segment_unchecked(tss.0.get()) });
        let user_data = table.append(Descriptor::user_data_segment());
        let user_code = table.append(Descriptor::user_code_segment());
        Gdt { table, code, data, tss, user_data, user_code }
    });
    GDT_BASE[cpu.index()].store(gdt.table.entries().as_ptr() as u64, Ordering::SeqCst);
    gdt
}

/// Load the boot CPU's GDT, reload the segment registers and the task register.
pub fn init() {
    init_cpu(CpuId::BOOT);
}

/// Load `cpu`'s GDT and TSS on the running processor (once per CPU, at its
/// start).
pub fn init_cpu(cpu: CpuId) {
    let gdt = build(cpu);
    gdt.table.load();
    // SAFETY: the selectors come from the GDT just loaded and describe a
    // 64-bit code segment, a data segment and an available TSS (this CPU's
    // own, loaded nowhere else).
    unsafe {
        CS::set_reg(gdt.code);
        SS::set_reg(gdt.data);
        DS::set_reg(gdt.data);
        ES::set_reg(gdt.data);
        load_tss(gdt.tss);
    }
}

/// Which CPU's table the running processor has loaded (`sgdt`: one
/// unprivileged instruction; ring 3 cannot change GDTR). None before
/// [`init`] (the boot code's table).
pub fn cpu_of_loaded_table() -> Option<CpuId> {
    let base = x86_64::instructions::tables::sgdt().base.as_u64();
    GDT_BASE.iter().position(|b| b.load(Ordering::Relaxed) == base).and_then(CpuId::new)
}

/// `cpu`'s TSS as loaded: (`rsp0`, the #DF, NMI and #MC stack tops), or
/// None if that CPU never started.
pub fn tss_stacks(cpu: CpuId) -> Option<(u64, [u64; 3])> {
    let tss = TSS[cpu.index()].get()?.0.get();
    // SAFETY: plain reads of a TSS that lives forever; `rsp0` may be
    // rewritten by its CPU meanwhile (the value read is one of its tops).
    let t = unsafe { core::ptr::read_volatile(tss) };
    let ist = t.interrupt_stack_table;
    let rsp0 = t.privilege_stack_table[0];
    Some((rsp0.as_u64(), [ist[0].as_u64(), ist[1].as_u64(), ist[2].as_u64()]))
}

/// The ring-3 selectors `(code, data)`, RPL 3 (0x33, 0x2b).
pub fn user_selectors() -> (u16, u16) {
    let gdt = GDT[0].get().expect("gdt::init");
    (gdt.user_code.0, gdt.user_data.0)
}

/// The kernel stack the running CPU loads on a trap from ring 3. The caller
/// has interrupts disabled (the task cannot move to another CPU meanwhile).
pub fn set_kernel_stack(top: VirtAddr) {
    let cpu = crate::cpus::this_cpu();
    let tss = TSS[cpu.index()].get().expect("this CPU's TSS").0.get();
    // The TSS is packed (rsp0 sits at offset 4): an unaligned write.
    // SAFETY: see `TssCell`: this CPU's own TSS, a plain field write, no
    // reference to the TSS is held anywhere else; interrupts are disabled.
    unsafe { core::ptr::addr_of_mut!((*tss).privilege_stack_table[0]).write_unaligned(top) };
}
