//! TLB shootdown: which CPUs may cache an address space, and flushing
//! their TLBs by IPI.
//!
//! # Who may cache an address space
//! Each CPU records the page-table root it loads, in [`LOADED`], *before*
//! writing CR3 ([`load_root`] — the scheduler's switch and the kernel's
//! user-access window both go through it). The CPUs that may cache the
//! translations of root R are those whose `LOADED` is R: paging here runs
//! without PCID (CR4.PCIDE = 0), so a CPU that writes CR3 with another root
//! drops every non-global TLB entry and paging-structure cache of R.
//! Ordering: a changer exchanges the entry (a locked instruction) and then
//! reads `LOADED` (SeqCst); a CPU stores `LOADED` (SeqCst) and then loads
//! CR3 and walks. So either the changer sees the CPU, or the CPU's walks
//! see the new entry. (A CPU between its `LOADED` store and its CR3 write
//! still holds the old root's entries but touches no user memory: the
//! CR3 write drops them.) Why per CPU and not a mask in the address
//! space: the switch knows only the raw root, and a mask bit cleared
//! after the switch could land in a root that exit already freed.
//!
//! # A round
//! ```text
//!  initiator (interrupts off for the round)        target CPU t
//!   flush locally if LOADED[me] == R
//!   my request: pages or "all", pending = {t..}
//!   one IPI to each t ──────────────────────────►  handler: for every request
//!   wait until pending is empty, servicing             with my bit: invlpg / CR3
//!     requests addressed to me meanwhile               reload, clear my bit, EOI
//! ```
//! Requests are per *initiating* CPU (the mailbox): a CPU has at most one
//! round outstanding (interrupts are off for it), so nothing is shared
//! between initiators and no lock is needed. Rule against deadlock: a
//! CPU waiting for acknowledgements keeps servicing requests addressed to
//! it, so two CPUs shooting each other both finish. And no lock held
//! across a shootdown — an address space's, the reclaim clock's registry —
//! is ever waited for with interrupts off (a contended ranked lock sleeps
//! or spins with them on), so every target acknowledges; the run-queue
//! lock, taken with interrupts off, is never held across a shootdown.
//!
//! Counters ([`stats`]): IPIs sent, rounds (one per change that had other
//! CPUs to reach), local and remote flushes.

use crate::cpus::{self, AtomicCpuSet, CpuId, CpuSet, MAX_CPUS};
use crate::irq::{self, Vector};
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use spin::Once;
use x86_64::instructions::interrupts;
use x86_64::registers::control::Cr3;
use x86_64::structures::paging::PhysFrame;

use super::tlb::{flush_here, INVLPG_THRESHOLD};

/// The root each CPU has (or is about to have) in CR3; 0 before the first
/// [`load_root`] (the kernel's own table: no user translations).
static LOADED: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// One initiating CPU's request (its mailbox).
struct Request {
    pages: [AtomicU64; INVLPG_THRESHOLD],
    count: AtomicUsize,
    all: AtomicBool,
    /// Targets that have not acknowledged yet.
    pending: AtomicCpuSet,
}

static REQUESTS: [Request; MAX_CPUS] = [const {
    Request { pages: [const { AtomicU64::new(0) }; INVLPG_THRESHOLD], count: AtomicUsize::new(0), all: AtomicBool::new(false), pending: AtomicCpuSet::new() }
}; MAX_CPUS];

static VECTOR: Once<Vector> = Once::new();

static IPIS: AtomicU64 = AtomicU64::new(0);
static ROUNDS: AtomicU64 = AtomicU64::new(0);
static LOCAL: AtomicU64 = AtomicU64::new(0);
static REMOTE: AtomicU64 = AtomicU64::new(0);

/// Shootdown counters since boot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShootdownStats {
    /// IPIs sent for shootdowns.
    pub ipis: u64,
    /// Shootdown rounds (changes that had to reach another CPU).
    pub rounds: u64,
    /// Flushes carried out by the changing CPU itself.
    pub local_flushes: u64,
    /// Requests carried out by target CPUs.
    pub remote_flushes: u64,
}

/// The counters now.
pub fn stats() -> ShootdownStats {
    ShootdownStats {
        ipis: IPIS.load(Ordering::Relaxed),
        rounds: ROUNDS.load(Ordering::Relaxed),
        local_flushes: LOCAL.load(Ordering::Relaxed),
        remote_flushes: REMOTE.load(Ordering::Relaxed),
    }
}

/// Load `root` into this CPU's CR3, recording it first (see the module
/// docs). Interrupts are kept off between the record and the write so the
/// record is this CPU's.
///
/// # Safety
/// `root` must be a PML4 whose kernel half is the kernel's (the running
/// code, stack and data stay mapped), and stay allocated while loaded.
pub unsafe fn load_root(root: PhysFrame) {
    interrupts::without_interrupts(|| {
        LOADED[cpus::this_cpu().index()].store(root.start_address().as_u64(), Ordering::SeqCst);
        // SAFETY: the caller's contract.
        unsafe { Cr3::write(root, Cr3::read().1) };
    });
}

/// The CPUs that may cache translations of `root`.
pub fn cpus_caching(root: PhysFrame) -> CpuSet {
    let r = root.start_address().as_u64();
    let mut set = CpuSet::EMPTY;
    for (i, loaded) in LOADED.iter().enumerate() {
        if loaded.load(Ordering::SeqCst) == r {
            set = set.with(CpuId::new(i).expect("LOADED has MAX_CPUS slots"));
        }
    }
    set
}

fn vector() -> u8 {
    VECTOR
        .call_once(|| {
            let v = Vector::alloc().expect("a vector for TLB shootdowns");
            crate::arch::trap::set_interrupt_handler(v.number(), on_ipi);
            v
        })
        .number()
}

/// Flush `pages` (or all) of `root` everywhere it may be cached; returns
/// once every other CPU acknowledged.
pub(super) fn flush(root: PhysFrame, pages: &[u64], all: bool) {
    // Loaded nowhere (read after the caller's entry changes, see the
    // module docs): no CPU caches anything to flush, wherever we run.
    if cpus_caching(root).is_empty() {
        return;
    }
    interrupts::without_interrupts(|| {
        let me = cpus::this_cpu();
        let caching = cpus_caching(root);
        if caching.contains(me) {
            flush_here(pages, all);
            LOCAL.fetch_add(1, Ordering::Relaxed);
        }
        let targets = caching.without(me);
        if targets.is_empty() {
            return;
        }
        let v = vector();
        let req = &REQUESTS[me.index()];
        debug_assert!(req.pending.load().is_empty(), "one round at a time per CPU");
        for (slot, &p) in req.pages.iter().zip(pages) {
            slot.store(p, Ordering::Relaxed);
        }
        req.count.store(pages.len(), Ordering::Relaxed);
        req.all.store(all, Ordering::Relaxed);
        for t in targets.iter() {
            req.pending.insert(t); // SeqCst: publishes the pages above
        }
        ROUNDS.fetch_add(1, Ordering::Relaxed);
        for t in targets.iter() {
            if irq::send_ipi(t, v).is_err() {
                // Not started: it caches nothing.
                req.pending.remove(t);
            } else {
                IPIS.fetch_add(1, Ordering::Relaxed);
            }
        }
        while !req.pending.load().is_empty() {
            service(me); // requests aimed at us while we wait (no deadlock)
            core::hint::spin_loop();
        }
    });
}

/// Carry out every request addressed to `me`.
fn service(me: CpuId) {
    for req in &REQUESTS {
        if req.pending.load().contains(me) {
            let n = req.count.load(Ordering::Relaxed).min(INVLPG_THRESHOLD);
            let mut pages = [0u64; INVLPG_THRESHOLD];
            for (p, slot) in pages.iter_mut().zip(&req.pages[..n]) {
                *p = slot.load(Ordering::Relaxed);
            }
            flush_here(&pages[..n], req.all.load(Ordering::Relaxed));
            REMOTE.fetch_add(1, Ordering::Relaxed);
            req.pending.remove(me); // the acknowledgement
        }
    }
}

fn on_ipi(_vector: u8) {
    service(cpus::this_cpu());
    irq::lapic().eoi();
}
