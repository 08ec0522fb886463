//! Interrupts from devices: the local APIC, a vector allocator, MSI
//! messages, and waiting for an interrupt with `hlt`.
//!
//! ```text
//!  device ──MSI write (0xFEE0_0000 | apic id << 12, data = vector)──► LAPIC
//!     LAPIC ──► IDT[vector] ──► trap stub ──► trap_dispatch ──► irq::on_vector
//!        on_vector: count the event for the vector, EOI
//!  waiter: Vector::wait(timeout): with interrupts off, check the count;
//!          if nothing new, `sti; hlt` (atomic: no lost wakeup) and check again
//! ```
//!
//! Why `hlt` and not polling: under TCG with `-icount sleep=off` the virtual
//! clock skips ahead only while the guest is halted, so a 100 ms (virtual)
//! device operation costs ~0.3 ms of wall time when the guest halts, and
//! seconds when it spins.
//!
//! Every wait has a timeout, enforced by the LAPIC timer in one-shot mode
//! (armed only while someone waits), so a device that never answers is an
//! error, never a hang.
//!
//! Once the scheduler runs (see [`crate::sched`]), the LAPIC timer ticks
//! periodically instead, and [`wait_until`] hands its wait to the
//! scheduler's hook: the waiting task sleeps until the next interrupt
//! (any: [`epoch`] counts them) and re-checks, while other tasks run; its
//! timeout is counted in ticks.
//!
//! Handlers run with interrupts disabled and must not allocate or take locks
//! that kernel code holds with interrupts enabled: they only bump counters.

mod lapic;
mod pic;
mod vectors;

pub use lapic::Lapic;
pub use vectors::{NoVectorLeft, Vector};

use core::sync::atomic::{AtomicU64, Ordering};
use spin::Once;

static LAPIC: Once<Lapic> = Once::new();

/// How many times each vector fired since boot.
static COUNTS: [AtomicU64; 256] = [const { AtomicU64::new(0) }; 256];

/// The vector of the LAPIC timer (wakes a waiter whose time is up; the
/// scheduler's tick).
pub const TIMER_VECTOR: u8 = 0xfe;

/// Interrupts handled since boot (any vector): a sleeper waiting for "the
/// next interrupt" compares it.
static EPOCH: AtomicU64 = AtomicU64::new(0);

/// How many device or timer interrupts were handled since boot.
pub fn epoch() -> u64 {
    EPOCH.load(Ordering::SeqCst)
}

/// A wait handed to the scheduler: `(timeout_us, done)`.
pub type WaitHook = fn(u64, &mut dyn FnMut() -> bool) -> Result<(), TimedOut>;

static WAIT_HOOK: spin::Once<WaitHook> = spin::Once::new();

/// From now on every [`wait_until`] goes to `hook` (set once, by the scheduler).
pub fn set_wait_hook(hook: WaitHook) {
    WAIT_HOOK.call_once(|| hook);
}
/// Spurious-interrupt vector (SVR); its low 4 bits must be 1s on old CPUs.
const SPURIOUS_VECTOR: u8 = 0xff;

/// Set up the LAPIC (masking the legacy PICs) and enable interrupts.
pub fn init() -> Result<(), crate::mm::frames::OutOfFrames> {
    pic::remap_and_mask();
    let lapic = Lapic::map()?;
    lapic.enable(SPURIOUS_VECTOR, TIMER_VECTOR);
    log::info!("local APIC: id {}, version {:#x}; 8259 PICs masked", lapic.id(), lapic.version());
    crate::cpus::register(crate::cpus::CpuId::BOOT, lapic.id() as u32);
    LAPIC.call_once(|| lapic);
    crate::arch::trap::set_interrupt_handler(TIMER_VECTOR, on_vector);
    crate::arch::trap::set_interrupt_handler(SPURIOUS_VECTOR, |_| {});
    x86_64::instructions::interrupts::enable();
    Ok(())
}

/// The local APIC (after [`init`]).
pub fn lapic() -> &'static Lapic {
    LAPIC.get().expect("irq::init not called")
}

/// The MSI address and data that deliver `vector` to this CPU (fixed
/// delivery, edge-triggered, physical destination).
pub fn msi_message(vector: &Vector) -> (u64, u32) {
    (0xfee0_0000 | ((lapic().id() as u64) << 12), vector.number() as u32)
}

/// Send `vector` to `cpu` as an inter-processor interrupt. `Err` if that
/// CPU was never started.
pub fn send_ipi(cpu: crate::cpus::CpuId, vector: u8) -> Result<(), crate::cpus::CpuId> {
    let apic_id = crate::cpus::apic_id(cpu).ok_or(cpu)?;
    lapic().send_ipi(apic_id, vector);
    Ok(())
}

/// The handler every allocated vector gets: count, acknowledge.
fn on_vector(vector: u8) {
    COUNTS[vector as usize].fetch_add(1, Ordering::SeqCst);
    EPOCH.fetch_add(1, Ordering::SeqCst);
    lapic().eoi();
}

/// How many times `vector` has fired.
pub fn count(vector: u8) -> u64 {
    COUNTS[vector as usize].load(Ordering::SeqCst)
}

/// The wait ran out before the interrupt came.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimedOut {
    pub waited_us: u64,
}

impl core::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "no interrupt within {} us", self.waited_us)
    }
}

/// Halt until `done()` holds (checked with interrupts off, so a wakeup
/// between the check and the `hlt` cannot be lost), or until `timeout_us`
/// of (virtual) time passed.
pub fn wait_until(timeout_us: u64, mut done: impl FnMut() -> bool) -> Result<(), TimedOut> {
    use x86_64::instructions::interrupts;
    if let Some(hook) = WAIT_HOOK.get() {
        return hook(timeout_us, &mut done);
    }
    let lapic = lapic();
    let timer_before = count(TIMER_VECTOR);
    lapic.start_oneshot_us(timeout_us);
    let result = loop {
        interrupts::disable();
        if done() {
            break Ok(());
        }
        if count(TIMER_VECTOR) != timer_before {
            break Err(TimedOut { waited_us: timeout_us });
        }
        // `sti; hlt`: the interrupt that ends the wait is taken after hlt starts.
        interrupts::enable_and_hlt();
    };
    lapic.stop_timer();
    interrupts::enable();
    result
}
