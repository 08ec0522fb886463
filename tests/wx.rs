//! W^X: kernel text cannot be written, data cannot be executed; each fault
//! is caught (exception table) and checked: address and error bits.
#![no_std]
#![no_main]

use kernel::arch::extable;
use kernel::{tests, BootInfo};
use x86_64::registers::model_specific::{Efer, EferFlags};
use x86_64::structures::idt::PageFaultErrorCode as E;
use x86_64::VirtAddr;

kernel::entry!(main);

fn main(_: &'static BootInfo) -> ! {
    kernel::testing::run(
        "wx",
        tests![nx_is_enabled, text_is_executable, writing_text_faults, writing_rodata_faults, executing_data_faults, executing_heap_and_stack_faults, boot_identity_map_is_gone],
    );
}

/// Code that just returns (`ret`), as bytes in writable, non-executable memory.
static DATA_RET: spin::Mutex<[u8; 16]> = spin::Mutex::new([0xc3; 16]);
static RODATA: [u8; 8] = [7; 8];

extern "C" fn returns() {}

fn nx_is_enabled() {
    assert!(Efer::read().contains(EferFlags::NO_EXECUTE_ENABLE));
}

fn text_is_executable() {
    // The positive control: the probe itself works on real code.
    // SAFETY: `returns` is an extern "C" function with no arguments.
    unsafe { extable::probe_exec(VirtAddr::new(returns as *const () as u64)) }.expect("kernel text executes");
}

fn writing_text_faults() {
    let target = VirtAddr::new(returns as *const () as u64);
    let before = extable::probe_read(target).unwrap();
    // SAFETY: if the write succeeded it would clobber `returns` — which is
    // exactly what this test proves cannot happen.
    let fault = unsafe { extable::probe_write(target, 0xcc) }.expect_err("kernel text must not be writable");
    assert_eq!(fault.addr, target);
    let e = E::from_bits_truncate(fault.error);
    assert!(e.contains(E::PROTECTION_VIOLATION | E::CAUSED_BY_WRITE), "error bits {e:?}");
    assert_eq!(extable::probe_read(target).unwrap(), before, "text unchanged");
}

fn writing_rodata_faults() {
    let target = VirtAddr::from_ptr(&RODATA);
    // SAFETY: as above, the write must not happen.
    let fault = unsafe { extable::probe_write(target, 1) }.expect_err("rodata must not be writable");
    assert_eq!(fault.addr, target);
    assert!(E::from_bits_truncate(fault.error).contains(E::PROTECTION_VIOLATION | E::CAUSED_BY_WRITE));
    assert_eq!(RODATA[0], 7);
}

fn executing_data_faults() {
    let target = VirtAddr::from_ptr(DATA_RET.lock().as_ptr());
    // SAFETY: the bytes are `ret`; if the page were executable the call
    // would simply return — and the test would fail on the Ok.
    let fault = unsafe { extable::probe_exec(target) }.expect_err("data must not be executable");
    assert_eq!(fault.addr, target);
    let e = E::from_bits_truncate(fault.error);
    assert!(e.contains(E::INSTRUCTION_FETCH | E::PROTECTION_VIOLATION), "error bits {e:?}");
}

fn executing_heap_and_stack_faults() {
    let heap = alloc_ret();
    // SAFETY: as above.
    let fault = unsafe { extable::probe_exec(VirtAddr::from_ptr(heap.as_ptr())) }.expect_err("heap must not be executable");
    assert!(E::from_bits_truncate(fault.error).contains(E::INSTRUCTION_FETCH));
    let stack = [0xc3u8; 16];
    // SAFETY: as above.
    let fault = unsafe { extable::probe_exec(VirtAddr::from_ptr(stack.as_ptr())) }.expect_err("stack must not be executable");
    assert!(E::from_bits_truncate(fault.error).contains(E::INSTRUCTION_FETCH));
}

extern crate alloc;
fn alloc_ret() -> alloc::boxed::Box<[u8; 16]> {
    alloc::boxed::Box::new([0xc3; 16])
}

fn boot_identity_map_is_gone() {
    // The PVH entry code sits at physical (and, during boot, virtual) 1 MiB.
    let fault = extable::probe_read(VirtAddr::new(0x10_0000)).expect_err("the boot identity map must be gone");
    assert_eq!(fault.error & 1, 0, "not present");
    assert!(extable::probe_read(VirtAddr::new(0)).is_err(), "the null page is unmapped");
}
