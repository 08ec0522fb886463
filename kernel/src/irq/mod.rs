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
//! that kernel code holds with interrupts enabled: they only bump counters
//! (and send IPIs).
//!
//! # More than one CPU
//! Every CPU has its own local APIC (the same MMIO address reaches the
//! running CPU's), timer and spurious vector. A device's MSI goes to the
//! CPU that set the device up ([`msi_message`]: its APIC id), but a task
//! waiting for that interrupt may sleep on any CPU. So the epoch is global,
//! and a CPU that parks an interrupt waiter joins [`IRQ_WAITERS`] *before*
//! it last compares the epoch; a device interrupt bumps the epoch *before*
//! it reads the set and sends [`RESCHEDULE_VECTOR`] to every other CPU in
//! it. Both sides use sequentially consistent atomics, so at least one of
//! them sees the other: either the waiter sees the new epoch, or the
//! interrupt sees the waiter and its IPI ends the waiter CPU's `hlt`
//! (taken right after `sti`, if it arrived while interrupts were off).
//!
//! Time: [`ticks`] counts the boot CPU's timer only (every CPU ticks, but
//! "10 ms passed" must not run N times faster with N CPUs).

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

/// The inter-processor "look at your run queue" kick: ends a `hlt`. Its
/// handler only acknowledges; the interrupted CPU re-checks on its way out.
pub const RESCHEDULE_VECTOR: u8 = 0xfd;

/// CPUs with a task parked until the next interrupt (see the module docs).
static IRQ_WAITERS: crate::cpus::AtomicCpuSet = crate::cpus::AtomicCpuSet::new();

/// Boot-CPU timer interrupts since boot.
static TICKS: AtomicU64 = AtomicU64::new(0);
/// Timer interrupts per CPU.
static CPU_TICKS: [AtomicU64; crate::cpus::MAX_CPUS] = [const { AtomicU64::new(0) }; crate::cpus::MAX_CPUS];

/// RESCHEDULE IPIs sent (by any CPU) and received (on any CPU).
static IPIS_SENT: AtomicU64 = AtomicU64::new(0);
static IPIS_RECEIVED: AtomicU64 = AtomicU64::new(0);

/// Interrupts handled since boot (any vector): a sleeper waiting for "the
/// next interrupt" compares it.
static EPOCH: AtomicU64 = AtomicU64::new(0);

/// How many device or timer interrupts were handled since boot.
pub fn epoch() -> u64 {
    EPOCH.load(Ordering::SeqCst)
}

/// Timer interrupts of the boot CPU since boot (the scheduler's clock).
pub fn ticks() -> u64 {
    TICKS.load(Ordering::SeqCst)
}

/// Whether the running CPU has tasks waiting for the next interrupt (the
/// scheduler says so when it parks or releases one).
pub fn set_irq_waiter(cpu: crate::cpus::CpuId, waiting: bool) {
    if waiting {
        IRQ_WAITERS.insert(cpu);
    } else {
        IRQ_WAITERS.remove(cpu);
    }
}

/// Timer interrupts `cpu` took since boot.
pub fn cpu_ticks(cpu: crate::cpus::CpuId) -> u64 {
    CPU_TICKS[cpu.index()].load(Ordering::Relaxed)
}

/// (RESCHEDULE IPIs sent, received) since boot.
pub fn ipi_counts() -> (u64, u64) {
    (IPIS_SENT.load(Ordering::Relaxed), IPIS_RECEIVED.load(Ordering::Relaxed))
}

/// Kick `cpu` out of `hlt` (or out of ring 3) so it looks at its run queue.
pub fn kick(cpu: crate::cpus::CpuId) {
    if cpu != crate::cpus::this_cpu() && send_ipi(cpu, RESCHEDULE_VECTOR).is_ok() {
        IPIS_SENT.fetch_add(1, Ordering::Relaxed);
    }
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
    crate::arch::trap::set_interrupt_handler(TIMER_VECTOR, on_timer);
    crate::arch::trap::set_interrupt_handler(RESCHEDULE_VECTOR, on_reschedule);
    crate::arch::trap::set_interrupt_handler(SPURIOUS_VECTOR, |_| {});
    x86_64::instructions::interrupts::enable();
    Ok(())
}

/// An application processor's part of [`init`]: enable its own local APIC
/// (timer masked until the scheduler starts it) and register as `cpu`.
/// Interrupts stay disabled.
pub fn init_ap(cpu: crate::cpus::CpuId) {
    let lapic = lapic();
    lapic.enable(SPURIOUS_VECTOR, TIMER_VECTOR);
    crate::cpus::register(cpu, lapic.id() as u32);
}

/// The local APIC (after [`init`]).
pub fn lapic() -> &'static Lapic {
    LAPIC.get().expect("irq::init not called")
}

/// The MSI address and data that deliver `vector` to this CPU (fixed
/// delivery, edge-triggered, physical destination). Waiters on other CPUs
/// are woken by the IPI [`on_vector`] forwards (see the module docs).
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

/// The handler every allocated vector gets: count, acknowledge, and kick
/// the other CPUs that have interrupt waiters.
fn on_vector(vector: u8) {
    COUNTS[vector as usize].fetch_add(1, Ordering::SeqCst);
    EPOCH.fetch_add(1, Ordering::SeqCst);
    lapic().eoi();
    let me = crate::cpus::this_cpu();
    for cpu in IRQ_WAITERS.load().without(me).iter() {
        kick(cpu);
    }
}

/// The timer: every CPU's ends waits and drives its scheduler; only the
/// boot CPU's advances [`ticks`]. Other CPUs' waiters are not kicked: their
/// own timers tick.
fn on_timer(vector: u8) {
    COUNTS[vector as usize].fetch_add(1, Ordering::SeqCst);
    let me = crate::cpus::this_cpu();
    CPU_TICKS[me.index()].fetch_add(1, Ordering::Relaxed);
    if me == crate::cpus::CpuId::BOOT {
        TICKS.fetch_add(1, Ordering::SeqCst);
    }
    EPOCH.fetch_add(1, Ordering::SeqCst);
    lapic().eoi();
}

/// A RESCHEDULE IPI: the `hlt` it ended, or the return to ring 3 it
/// interrupted, re-checks the run queue. Not an "interrupt" for waiters.
fn on_reschedule(_vector: u8) {
    IPIS_RECEIVED.fetch_add(1, Ordering::Relaxed);
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
