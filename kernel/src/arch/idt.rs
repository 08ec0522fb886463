//! The interrupt descriptor table: every vector points at its stub in
//! [`super::trap_entry`]; #DF, NMI and #MC run on their own IST stacks;
//! vector 0x80 is the system-call gate, the one ring 3 may invoke.

use super::gdt;
use super::trap_entry::stub;
use spin::Lazy;
use x86_64::structures::idt::InterruptDescriptorTable;

static IDT: Lazy<InterruptDescriptorTable> = Lazy::new(|| {
    let mut idt = InterruptDescriptorTable::new();
    // SAFETY (for every `set_handler_addr` below): each address is the
    // trap stub for exactly that vector, which saves all state, calls the
    // dispatcher and returns with `iretq`, as an IDT handler must.
    unsafe {
        macro_rules! set {
            ($($field:ident = $v:literal),* $(,)?) => { $( idt.$field.set_handler_addr(stub($v)); )* };
        }
        set!(
            divide_error = 0, debug = 1, breakpoint = 3, overflow = 4, bound_range_exceeded = 5,
            invalid_opcode = 6, device_not_available = 7, invalid_tss = 10, segment_not_present = 11,
            stack_segment_fault = 12, general_protection_fault = 13, page_fault = 14,
            x87_floating_point = 16, alignment_check = 17, simd_floating_point = 19, virtualization = 20,
            cp_protection_exception = 21, hv_injection_exception = 28, vmm_communication_exception = 29,
            security_exception = 30,
        );
        idt.double_fault.set_handler_addr(stub(8)).set_stack_index(gdt::DOUBLE_FAULT_IST);
        idt.non_maskable_interrupt.set_handler_addr(stub(2)).set_stack_index(gdt::NMI_IST);
        idt.machine_check.set_handler_addr(stub(18)).set_stack_index(gdt::MACHINE_CHECK_IST);
        for v in 32..=255u8 {
            idt[v].set_handler_addr(stub(v));
        }
        // The system-call gate: the only vector ring 3 may raise with `int`.
        idt[SYSCALL_VECTOR].set_handler_addr(stub(SYSCALL_VECTOR)).set_privilege_level(x86_64::PrivilegeLevel::Ring3);
    }
    idt
});

/// The vector of `int 0x80`, the system-call gate (DPL 3). The device
/// vector allocator never hands it out.
pub const SYSCALL_VECTOR: u8 = 0x80;

/// Load the IDT.
pub fn init() {
    IDT.load();
}
