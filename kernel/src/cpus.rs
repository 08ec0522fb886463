//! Processor identities and sets of processors.
//!
//! A [`CpuId`] is the kernel's own dense index (0 = the boot CPU), used to
//! index per-CPU arrays; the local APIC id the hardware routes interrupts
//! by is looked up from it ([`apic_id`]). A [`CpuSet`] is a bit mask over
//! `CpuId`s — "the CPUs that may cache this address space's translations",
//! "the CPUs that still have to acknowledge a shootdown" — and
//! [`AtomicCpuSet`] is the same mask shared between CPUs.
//!
//! The boot CPU registers itself when its local APIC is set up; each
//! application processor registers itself when it has started (see
//! `smp`), so [`online`] grows at boot, up to [`MAX_CPUS`].
//!
//! # Which CPU am I? ([`this_cpu`])
//! Each CPU loads its own GDT (`arch::gdt`), so the GDT's address — read
//! with `sgdt`, one unprivileged instruction — names the CPU; a table of
//! `MAX_CPUS` addresses maps it back to the `CpuId`. The usual alternative,
//! a per-CPU pointer in the GS base, would need `swapgs` on every entry
//! from and exit to ring 3 (ring 3 can load GS, which rewrites the base)
//! and care for NMIs and faulting `iretq`s in the window between the two;
//! GDTR is per CPU and ring 3 cannot change it, so there is no window.
//! The LAPIC id register is the other alternative: an MMIO read, which
//! TCG emulates with a callback, much slower than `sgdt`.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Processors the per-CPU layout has room for.
pub const MAX_CPUS: usize = 8;

/// The kernel's index of a processor: `0..MAX_CPUS`, dense, 0 = boot CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CpuId(u8);

impl CpuId {
    /// The boot processor.
    pub const BOOT: CpuId = CpuId(0);

    /// `index` as a CPU id, if the layout has room for it.
    pub const fn new(index: usize) -> Option<CpuId> {
        if index < MAX_CPUS { Some(CpuId(index as u8)) } else { None }
    }

    /// The index into per-CPU arrays.
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

impl core::fmt::Display for CpuId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "cpu{}", self.0)
    }
}

/// A set of processors (a bit per [`CpuId`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuSet(u64);

const _: () = assert!(MAX_CPUS <= 64);

impl CpuSet {
    pub const EMPTY: CpuSet = CpuSet(0);

    pub const fn single(cpu: CpuId) -> CpuSet {
        CpuSet(1 << cpu.0)
    }
    pub const fn bits(self) -> u64 {
        self.0
    }
    pub const fn contains(self, cpu: CpuId) -> bool {
        self.0 & (1 << cpu.0) != 0
    }
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub const fn len(self) -> usize {
        self.0.count_ones() as usize
    }
    #[must_use]
    pub const fn with(self, cpu: CpuId) -> CpuSet {
        CpuSet(self.0 | (1 << cpu.0))
    }
    #[must_use]
    pub const fn without(self, cpu: CpuId) -> CpuSet {
        CpuSet(self.0 & !(1 << cpu.0))
    }
    #[must_use]
    pub const fn intersection(self, other: CpuSet) -> CpuSet {
        CpuSet(self.0 & other.0)
    }
    /// The members, lowest first.
    pub fn iter(self) -> impl Iterator<Item = CpuId> {
        (0..MAX_CPUS as u8).filter(move |&i| self.0 & (1 << i) != 0).map(CpuId)
    }
}

/// A [`CpuSet`] several CPUs update (each its own bit, with `fetch_or` /
/// `fetch_and`, so no update is lost).
#[derive(Debug, Default)]
pub struct AtomicCpuSet(AtomicU64);

impl AtomicCpuSet {
    pub const fn new() -> Self {
        AtomicCpuSet(AtomicU64::new(0))
    }
    pub fn load(&self) -> CpuSet {
        CpuSet(self.0.load(Ordering::SeqCst))
    }
    /// Add `cpu`; the set before.
    pub fn insert(&self, cpu: CpuId) -> CpuSet {
        CpuSet(self.0.fetch_or(1 << cpu.0, Ordering::SeqCst))
    }
    /// Remove `cpu`; the set before.
    pub fn remove(&self, cpu: CpuId) -> CpuSet {
        CpuSet(self.0.fetch_and(!(1 << cpu.0), Ordering::SeqCst))
    }
}

/// Local APIC id of each registered CPU (`u32::MAX`: not started).
static APIC_IDS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(u32::MAX) }; MAX_CPUS];
static ONLINE: AtomicCpuSet = AtomicCpuSet::new();

/// Record that `cpu` runs, with local APIC id `apic_id`.
pub fn register(cpu: CpuId, apic_id: u32) {
    APIC_IDS[cpu.index()].store(apic_id, Ordering::SeqCst);
    ONLINE.insert(cpu);
}

/// The CPUs that have been started.
pub fn online() -> CpuSet {
    ONLINE.load()
}

/// The local APIC id of `cpu`, if it was started.
pub fn apic_id(cpu: CpuId) -> Option<u32> {
    match APIC_IDS[cpu.index()].load(Ordering::SeqCst) {
        u32::MAX => None,
        id => Some(id),
    }
}

/// The CPU this code runs on (the boot CPU until its GDT is loaded). A
/// task can move to another CPU whenever it gives the CPU up: callers that
/// need the answer to stay true keep interrupts off and do not sleep.
pub fn this_cpu() -> CpuId {
    crate::arch::gdt::cpu_of_loaded_table().unwrap_or(CpuId::BOOT)
}
