//! Starting the application processors (APs).
//!
//! ```text
//!  boot CPU (kernel::init, after irq::init)        each AP
//!  MADT: local APICs (enabled or online-capable)
//!  for each AP, one at a time:
//!    write the trampoline + params (its stack, cpu)
//!    INIT, 10 ms, STARTUP(0x08), 200 us,  ───────►  real mode at 0x8000 → long mode
//!    STARTUP again unless it answered                (arch::smp_trampoline)
//!    wait ≤ 1 s for its answer  ◄──────────────────  ap_entry: kernel CR3, own GDT/TSS,
//!                                                    IDT, own LAPIC, cpus::register, answer
//!                                                    sched::run_ap: idle until the
//!                                                    scheduler starts, then schedule
//! ```
//!
//! CPU ids are dense in MADT order (the boot CPU is 0 whatever its APIC
//! id); APICs beyond `MAX_CPUS` are left halted, with a warning. An AP that
//! does not answer is reported and left out: the kernel runs on the others.
//!
//! The delays follow the MultiProcessor Specification; QEMU does not need
//! them, and under icount a halted wait costs almost no wall time.

use crate::arch::{gdt, idt, smp_trampoline, stacks};
use crate::cpus::{self, CpuId, MAX_CPUS};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use spin::Once;
use x86_64::registers::control::{Cr3, Cr3Flags};
use x86_64::structures::paging::PhysFrame;
use x86_64::PhysAddr;

/// A processor the firmware lists: (ACPI processor id, local APIC id).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MadtCpu {
    pub processor_id: u8,
    pub apic_id: u8,
}

static MADT_CPUS: Once<Vec<MadtCpu>> = Once::new();
/// The kernel's PML4 (physical), for APs leaving the trampoline's tables.
static KERNEL_PML4: AtomicU64 = AtomicU64::new(0);
/// The CPU index the last started AP answered with (`u64::MAX`: none yet).
static ANSWER: AtomicU64 = AtomicU64::new(u64::MAX);

/// The processors the MADT lists (enabled or online-capable), in its order.
pub fn madt_cpus() -> &'static [MadtCpu] {
    MADT_CPUS.get().map_or(&[], |v| v.as_slice())
}

fn read_madt() -> Result<Vec<MadtCpu>, &'static str> {
    use acpi::madt::{Madt, MadtEntry};
    let rsdp = crate::boot_info().rsdp.ok_or("no ACPI RSDP")?;
    // SAFETY: the RSDP address comes from the PVH start info.
    let tables = unsafe { acpi::AcpiTables::from_rsdp(crate::acpi::KernelAcpiHandler, rsdp.as_u64() as usize) }.map_err(|_| "unreadable ACPI tables")?;
    let madt = tables.find_table::<Madt>().map_err(|_| "no MADT")?;
    let mut cpus = Vec::new();
    for e in madt.get().entries() {
        if let MadtEntry::LocalApic(l) = e {
            // Bit 0: enabled; bit 1: online capable (may be started).
            if l.flags & 0b11 != 0 {
                cpus.push(MadtCpu { processor_id: l.processor_id, apic_id: l.apic_id });
            }
        }
    }
    Ok(cpus)
}

/// Start every AP the MADT lists (called once by `kernel::init`, with the
/// boot CPU's APIC up and interrupts on). Returns how many answered.
pub fn start_aps() -> usize {
    let list = match read_madt() {
        Ok(l) => MADT_CPUS.call_once(|| l),
        Err(e) => {
            log::warn!("SMP: {e}; running on the boot CPU only");
            return 0;
        }
    };
    KERNEL_PML4.store(Cr3::read().0.start_address().as_u64(), Ordering::SeqCst);
    let boot_apic = crate::irq::lapic().id();
    let mut next = 1;
    let mut started = 0;
    for c in list.iter().filter(|c| c.apic_id != boot_apic) {
        let Some(cpu) = CpuId::new(next) else {
            log::warn!("SMP: APIC id {} left halted: the kernel supports {MAX_CPUS} CPUs", c.apic_id);
            continue;
        };
        if start_one(cpu, c.apic_id as u32) {
            started += 1;
            next += 1;
        } else {
            log::error!("SMP: the CPU with APIC id {} did not start", c.apic_id);
        }
    }
    log::info!("SMP: {} CPU(s) online (MADT lists {})", cpus::online().len(), list.len());
    started
}

fn start_one(cpu: CpuId, apic_id: u32) -> bool {
    let stack_top = stacks::of_cpu(cpu)[0].top.as_u64();
    ANSWER.store(u64::MAX, Ordering::SeqCst);
    let params = smp_trampoline::Params { entry: ap_entry as *const () as u64, stack_top, arg: cpu.index() as u64 };
    // SAFETY: APs start one at a time: the previous one answered (it is
    // past the trampoline) or never started (it never got a STARTUP that
    // reached it — it may get one now, with these params).
    unsafe { smp_trampoline::install(&params) };
    let lapic = crate::irq::lapic();
    let answered = || ANSWER.load(Ordering::SeqCst) == cpu.index() as u64;
    lapic.send_init(apic_id);
    let _ = crate::irq::wait_until(10_000, || false);
    lapic.send_startup(apic_id, smp_trampoline::SIPI_VECTOR);
    let _ = crate::irq::wait_until(200, answered);
    if !answered() {
        lapic.send_startup(apic_id, smp_trampoline::SIPI_VECTOR);
    }
    // Nothing interrupts us when it answers: wait in short halted slices.
    for _ in 0..1000 {
        if answered() {
            return true;
        }
        let _ = crate::irq::wait_until(1_000, answered);
    }
    answered()
}

/// Where an AP arrives in the higher half (from the trampoline), on its own
/// main stack, interrupts off.
extern "C" fn ap_entry(index: u64) -> ! {
    let pml4 = PhysFrame::containing_address(PhysAddr::new(KERNEL_PML4.load(Ordering::SeqCst)));
    // SAFETY: the kernel's own table maps this code, this stack (in the
    // image's .stacks) and all kernel data; the trampoline's table mapped
    // the same kernel half.
    unsafe { Cr3::write(pml4, Cr3Flags::empty()) };
    let cpu = CpuId::new(index as usize).expect("the starter passes a valid index");
    gdt::init_cpu(cpu);
    idt::init();
    crate::irq::init_ap(cpu);
    ANSWER.store(index, Ordering::SeqCst);
    crate::sched::run_ap(cpu)
}
