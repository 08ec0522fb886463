//! Spin locks with a rank: the kernel's lock order, checked at run time.
//!
//! The order (a lock may be taken only while every lock held has a lower
//! rank):
//!
//! ```text
//!  rank  lock                                  taken by
//!  1     HmmAccel      (hmmdev::accels)        a job, bind/unbind
//!  2     AddressSpace  (aspace inner)          a device fault's fault_in, every CPU-side change
//!        (hmm's mirror list and mirror tables)  the notifier, inside the address-space lock
//!  3     Device        (platform::accels,      one DMA, one swap-disk transfer
//!                       platform::disk)
//!  4     Iommu         (platform::iommu)       faults, attach/detach, IOTLB invalidation
//!  5     Process       (proc::PROCS)            the process table: pids, parents, exit status
//!  6     RunQueue      (sched per-CPU queues)   pick/park/wake; always with interrupts off
//! ```
//!
//! The process table and the run queues are leaves for everything above:
//! nothing of rank 1-4 is taken while they are held, and the run queue is
//! taken inside the process table (an exit wakes its parent).
//!
//! A job holds its accelerator; a device fault enters the address space,
//! whose notifier enters HMM, whose driver update takes the IOMMU; a DMA
//! holds its edu device and reads the IOMMU's fault records.
//!
//! In debug builds (`cargo run`, `cargo test`) every [`RankedMutex::lock`]
//! checks that no lock of a higher rank is held and panics with both names
//! if one is: a reversed pair is caught the first time it runs, not on the
//! day two CPUs interleave it into a deadlock. Locks of equal rank may nest
//! (two address spaces in a fork); their order is the caller's own rule.
//!
//! The held-rank counters belong to the running task: a task may sleep
//! holding locks (a device job sleeps in its DMA wait holding its
//! accelerator), so the scheduler swaps the counters at every context
//! switch ([`save_held`], [`restore_held`]). The live copy is per CPU (each
//! CPU runs one task at a time); a task moves between CPUs only through a
//! switch, which saves its counts and restores them where it resumes.
//! Release builds (the benchmarks) check nothing, so they keep no counts
//! either: a lock is then a try-lock and an unlock (every fault, transfer
//! and fault-record read takes several).
//!
//! # Contention
//! A CPU spinning on a lock whose holder is asleep would spin forever.
//! When [`RankedMutex::lock`] finds the lock taken, it calls the contention
//! hook the scheduler installs ([`set_contended_hook`]): with interrupts on,
//! the spinner sleeps until that lock is released (each lock counts its
//! releases, after unlocking) or an interrupt arrives, so the holder can run
//! and nobody spins. Every release calls the scheduler's release hook
//! ([`set_released_hook`]), which kicks the other CPUs that have a task
//! asleep on a lock (the holder may run on another CPU). Spinning would be
//! the wrong answer under TCG: each `pause` hands the emulator thread to
//! the next vCPU while the virtual clock hardly moves.

use crate::cpus::MAX_CPUS;
use core::fmt;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// A lock's place in the kernel's lock order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum LockRank {
    HmmAccel = 1,
    AddressSpace = 2,
    Device = 3,
    Iommu = 4,
    Process = 5,
    RunQueue = 6,
}

impl fmt::Display for LockRank {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            LockRank::HmmAccel => "accelerator",
            LockRank::AddressSpace => "address space",
            LockRank::Device => "device",
            LockRank::Iommu => "IOMMU",
            LockRank::Process => "process table",
            LockRank::RunQueue => "run queue",
        };
        write!(f, "{name} (rank {})", *self as u8)
    }
}

/// Number of rank slots (index = rank; slot 0 unused).
pub const RANKS: usize = 7;
/// How many locks of each rank the task running on each CPU holds.
static HELD: [[AtomicU32; RANKS]; MAX_CPUS] = [const { [const { AtomicU32::new(0) }; RANKS] }; MAX_CPUS];

/// The running CPU's live counts. Only that CPU touches them (interrupt
/// handlers take no ranked locks), so relaxed atomics suffice.
fn live() -> &'static [AtomicU32; RANKS] {
    &HELD[crate::cpus::this_cpu().index()]
}

/// The highest-ranked lock held above `rank`, if any.
fn held_above(rank: LockRank) -> Option<LockRank> {
    let live = live();
    [LockRank::RunQueue, LockRank::Process, LockRank::Iommu, LockRank::Device, LockRank::AddressSpace, LockRank::HmmAccel]
        .into_iter()
        .find(|&r| r > rank && live[r as usize].load(Ordering::Relaxed) > 0)
}

/// The held-lock counts of one task (see the module docs).
pub type HeldRanks = [u32; RANKS];

/// The live held-lock counts, for the task being switched out (the
/// scheduler, with interrupts off).
pub fn save_held() -> HeldRanks {
    let live = live();
    core::array::from_fn(|i| live[i].load(Ordering::Relaxed))
}

/// Make `saved` the live held-lock counts (the task being switched in).
pub fn restore_held(saved: &HeldRanks) {
    for (live, s) in live().iter().zip(saved.iter()) {
        live.store(*s, Ordering::Relaxed);
    }
}

/// How many locks of `rank` the running task holds (counted in debug
/// builds only; 0 in release builds).
pub fn held(rank: LockRank) -> u32 {
    live()[rank as usize].load(Ordering::Relaxed)
}

static CONTENDED_HOOK: AtomicUsize = AtomicUsize::new(0);

/// What runs while a lock is taken by someone else: it gets the lock's
/// release counter and its value read before the failed attempt (the
/// scheduler sleeps until it changes).
pub type ContendedHook = fn(&AtomicU64, u64);

/// Install the contention hook (the scheduler's).
pub fn set_contended_hook(hook: ContendedHook) {
    CONTENDED_HOOK.store(hook as usize, Ordering::SeqCst);
}

static RELEASED_HOOK: AtomicUsize = AtomicUsize::new(0);

/// What runs after a release of a lock that has contenders (the scheduler
/// kicks the other CPUs whose tasks sleep on a contended lock).
pub type ReleasedHook = fn();

/// Install the release hook (the scheduler's).
pub fn set_released_hook(hook: ReleasedHook) {
    RELEASED_HOOK.store(hook as usize, Ordering::SeqCst);
}

fn released() {
    let h = RELEASED_HOOK.load(Ordering::Relaxed);
    if h != 0 {
        // SAFETY: only `set_released_hook` stores non-zero values, always a `ReleasedHook`.
        let h: ReleasedHook = unsafe { core::mem::transmute::<usize, ReleasedHook>(h) };
        h();
    }
}

fn contended(releases: &AtomicU64, seen: u64) {
    let h = CONTENDED_HOOK.load(Ordering::Relaxed);
    if h == 0 {
        core::hint::spin_loop();
    } else {
        // SAFETY: only `set_contended_hook` stores non-zero values, always a `ContendedHook`.
        let h: ContendedHook = unsafe { core::mem::transmute::<usize, ContendedHook>(h) };
        h(releases, seen);
    }
}

/// A `spin::Mutex` that knows its rank.
pub struct RankedMutex<T> {
    rank: LockRank,
    /// Times this lock was released (a contender sleeps until it changes).
    releases: AtomicU64,
    /// Tasks trying to take it after a failed attempt (a release calls the
    /// release hook only then: see `lock`).
    contenders: AtomicU32,
    inner: spin::Mutex<T>,
}

/// The guard of a [`RankedMutex`]; releases the rank on drop.
pub struct RankedGuard<'a, T> {
    rank: LockRank,
    releases: &'a AtomicU64,
    contenders: &'a AtomicU32,
    guard: core::mem::ManuallyDrop<spin::MutexGuard<'a, T>>,
}

impl<T> RankedMutex<T> {
    pub const fn new(rank: LockRank, value: T) -> Self {
        RankedMutex { rank, releases: AtomicU64::new(0), contenders: AtomicU32::new(0), inner: spin::Mutex::new(value) }
    }

    pub fn rank(&self) -> LockRank {
        self.rank
    }

    /// Take the lock; in debug builds, panic if a higher-ranked lock is held.
    pub fn lock(&self) -> RankedGuard<'_, T> {
        if cfg!(debug_assertions) {
            if let Some(above) = held_above(self.rank) {
                panic!("lock order violated: taking the {} lock while holding the {} lock", self.rank, above);
            }
        }
        // A contender counts itself, then reads the release counter, then
        // tries; a release unlocks, counts, then reads `contenders` (all
        // SeqCst). So a release after a failed try either sees the
        // contender (and calls the hook) or is counted before the try...
        // which then could not have failed. The contender sleeps until the
        // counter moves from the value read before its try.
        let mut contending = false;
        let guard = loop {
            let seen = self.releases.load(Ordering::SeqCst);
            if let Some(g) = self.inner.try_lock() {
                break g;
            }
            if !contending {
                contending = true;
                self.contenders.fetch_add(1, Ordering::SeqCst);
                continue;
            }
            contended(&self.releases, seen);
        };
        if contending {
            self.contenders.fetch_sub(1, Ordering::SeqCst);
        }
        if cfg!(debug_assertions) {
            live()[self.rank as usize].fetch_add(1, Ordering::Relaxed);
        }
        RankedGuard { rank: self.rank, releases: &self.releases, contenders: &self.contenders, guard: core::mem::ManuallyDrop::new(guard) }
    }

    /// Take the lock if it is free (the rank is checked as in [`lock`](Self::lock)).
    pub fn try_lock(&self) -> Option<RankedGuard<'_, T>> {
        if cfg!(debug_assertions) {
            if let Some(above) = held_above(self.rank) {
                panic!("lock order violated: taking the {} lock while holding the {} lock", self.rank, above);
            }
        }
        let guard = self.inner.try_lock()?;
        if cfg!(debug_assertions) {
            live()[self.rank as usize].fetch_add(1, Ordering::Relaxed);
        }
        Some(RankedGuard { rank: self.rank, releases: &self.releases, contenders: &self.contenders, guard: core::mem::ManuallyDrop::new(guard) })
    }

    /// Exclusive access without locking (the owner has `&mut`).
    pub fn get_mut(&mut self) -> &mut T {
        self.inner.get_mut()
    }
}

impl<T> Drop for RankedGuard<'_, T> {
    fn drop(&mut self) {
        if cfg!(debug_assertions) {
            live()[self.rank as usize].fetch_sub(1, Ordering::Relaxed);
        }
        // SAFETY: dropped exactly once, here; `guard` is not used after.
        unsafe { core::mem::ManuallyDrop::drop(&mut self.guard) };
        // Counted after the unlock, so a contender woken by the count finds
        // the lock free (unless someone else took it first).
        self.releases.fetch_add(1, Ordering::SeqCst);
        if self.contenders.load(Ordering::SeqCst) > 0 {
            released();
        }
    }
}

impl<T> Deref for RankedGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> DerefMut for RankedGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}
