//! The local APIC (xAPIC, memory-mapped at 0xFEE0_0000).
//!
//! Used for: EOI, the CPU's APIC id (MSI destination), and the one-shot
//! timer that bounds every wait. The timer counts the APIC bus clock, which
//! QEMU (TCG and KVM) models at 1 GHz; with divide-by-16 one count is 16 ns.

use devices::mmio::{MmioRegion, Registers};
use x86_64::PhysAddr;

const BASE: u64 = 0xfee0_0000;
const ID: usize = 0x20;
const VERSION: usize = 0x30;
const TPR: usize = 0x80;
const EOI: usize = 0xb0;
const SVR: usize = 0xf0;
const LVT_TIMER: usize = 0x320;
const TIMER_INITIAL: usize = 0x380;
const TIMER_DIVIDE: usize = 0x3e0;
const ICR_LOW: usize = 0x300;
const ICR_HIGH: usize = 0x310;
/// ICR delivery status: the previous IPI is still being sent.
const ICR_PENDING: u32 = 1 << 12;
const LVT_MASKED: u32 = 1 << 16;
const LVT_PERIODIC: u32 = 1 << 17;
const NS_PER_COUNT: u64 = 16;

pub struct Lapic {
    regs: MmioRegion,
}

impl Lapic {
    pub(super) fn map() -> Result<Lapic, crate::mm::frames::OutOfFrames> {
        let virt = crate::mm::mmio::map(PhysAddr::new(BASE), 4096)?;
        // SAFETY: `virt` maps the LAPIC's 4 KiB register page, uncached,
        // for the kernel's lifetime.
        Ok(Lapic { regs: unsafe { MmioRegion::new(virt.as_mut_ptr(), 4096) } })
    }

    fn read(&self, reg: usize) -> u32 {
        self.regs.read32(reg)
    }

    fn write(&self, reg: usize, value: u32) {
        self.regs.write32(reg, value)
    }

    pub(super) fn enable(&self, spurious: u8, timer: u8) {
        self.write(TPR, 0);
        self.write(SVR, 0x100 | spurious as u32); // software enable
        self.write(TIMER_DIVIDE, 0b0011); // divide by 16
        self.write(LVT_TIMER, LVT_MASKED | timer as u32); // one-shot, masked until armed
    }

    /// This CPU's APIC id.
    pub fn id(&self) -> u8 {
        (self.read(ID) >> 24) as u8
    }

    pub fn version(&self) -> u32 {
        self.read(VERSION) & 0xff
    }

    /// Acknowledge the interrupt being handled.
    pub fn eoi(&self) {
        self.write(EOI, 0);
    }

    /// Send `vector` to the CPU whose local APIC id is `apic_id` (fixed
    /// delivery, physical destination). Waits until the APIC accepted the
    /// previous command, so back-to-back IPIs are not dropped.
    pub fn send_ipi(&self, apic_id: u32, vector: u8) {
        self.send_icr(apic_id, vector as u32);
    }

    /// Write the ICR (destination `apic_id`, low word `low`) once the
    /// previous command is delivered. With interrupts off: a handler
    /// sending its own IPI between the two writes would change the
    /// destination under us.
    fn send_icr(&self, apic_id: u32, low: u32) {
        x86_64::instructions::interrupts::without_interrupts(|| {
            while self.read(ICR_LOW) & ICR_PENDING != 0 {
                core::hint::spin_loop();
            }
            self.write(ICR_HIGH, apic_id << 24);
            self.write(ICR_LOW, low); // writing the low half sends
        })
    }

    /// INIT (level assert) to the CPU with `apic_id`: it resets and waits
    /// for a startup IPI.
    pub(crate) fn send_init(&self, apic_id: u32) {
        self.send_icr(apic_id, (5 << 8) | (1 << 14));
    }

    /// STARTUP to the CPU with `apic_id`: it starts in real mode at
    /// `vector << 12`.
    pub(crate) fn send_startup(&self, apic_id: u32, vector: u8) {
        self.send_icr(apic_id, (6 << 8) | vector as u32);
    }

    /// Send `vector` to this CPU through the APIC (as a device's MSI would arrive).
    pub fn self_ipi(&self, vector: u8) {
        self.write(ICR_LOW, (1 << 18) | vector as u32); // destination shorthand: self
    }

    /// Fire the timer vector once after `us` microseconds.
    pub(super) fn start_oneshot_us(&self, us: u64) {
        let counts = (us.saturating_mul(1000) / NS_PER_COUNT).clamp(1, u32::MAX as u64) as u32;
        let lvt = self.read(LVT_TIMER) & !(LVT_MASKED | LVT_PERIODIC);
        self.write(LVT_TIMER, lvt);
        self.write(TIMER_INITIAL, counts);
    }

    /// Fire the timer vector every `us` microseconds (the scheduler's tick).
    pub(crate) fn start_periodic_us(&self, us: u64) {
        let counts = (us.saturating_mul(1000) / NS_PER_COUNT).clamp(1, u32::MAX as u64) as u32;
        let lvt = (self.read(LVT_TIMER) & !LVT_MASKED) | LVT_PERIODIC;
        self.write(LVT_TIMER, lvt);
        self.write(TIMER_INITIAL, counts);
    }

    pub(super) fn stop_timer(&self) {
        self.write(TIMER_INITIAL, 0);
        let lvt = (self.read(LVT_TIMER) | LVT_MASKED) & !LVT_PERIODIC;
        self.write(LVT_TIMER, lvt);
    }
}
