//! The scheduler's cross-CPU races, where they can happen: the harness
//! boots this kernel under multi-threaded TCG (`--accel mttcg`, one host
//! thread per vCPU) at 2 and 4 CPUs, because under icount the vCPUs take
//! turns and the windows below (tens of instructions) are almost never
//! open when another CPU looks.
//!
//! | window | what closes it | what this kernel does |
//! |---|---|---|
//! | a task is back in a ready queue while its CPU still saves its registers | the picker waits for `on_cpu` to clear | one yielder more than CPUs, each blocking every 4th round until a waker wakes it: a block that empties its CPU's queue steals a yielder, often one just put back |
//! | a wake arrives after the sleeper checked its condition but before it parked | `wake_pending` turns the park into a yield | ping-pong where each side waits a random while after its hand-off, so the other side's wake lands anywhere in that window |
#![no_std]
#![no_main]

extern crate alloc;

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use kernel::cpus::{self, CpuId};
use kernel::sched;
use test_kernels::{last_cpu, wait_for, Rng};
use x86_64::instructions::interrupts;

kernel::entry!(main);

fn main(_: &'static kernel::BootInfo) -> ! {
    sched::init();
    kernel::testing::run("sched_races", kernel::tests![a_wake_during_the_block_is_not_lost, tasks_stolen_while_switching_resume_intact]);
}

const ROUNDS: u64 = 20_000;
static TURN: AtomicU64 = AtomicU64::new(0);
static IDS: [AtomicU32; 2] = [const { AtomicU32::new(0) }; 2];
static GO: AtomicBool = AtomicBool::new(false);
static PONG_DONE: AtomicU32 = AtomicU32::new(0);

/// Side 0 moves on even turns, side 1 on odd ones. After each hand-off a
/// side spins for a random 0..1,024 steps before it checks whether its
/// turn came, so the other side's wake arrives at every point of
/// check → park, including between them. (No `pause` in the spin: under
/// TCG each one ends a translation block and costs microseconds.)
fn pinger(side: u64) {
    while !GO.load(Ordering::SeqCst) {
        sched::yield_now();
    }
    let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15 ^ (side + 1));
    for round in 0..ROUNDS {
        let mine = round * 2 + side;
        loop {
            interrupts::disable();
            if TURN.load(Ordering::SeqCst) == mine {
                break;
            }
            sched::block(); // a wake since the check makes this return at once
        }
        interrupts::enable();
        TURN.store(mine + 1, Ordering::SeqCst);
        sched::wake(IDS[1 - side as usize].load(Ordering::SeqCst));
        for i in 0..rng.below(1024) {
            core::hint::black_box(i);
        }
    }
    PONG_DONE.fetch_add(1, Ordering::SeqCst);
}

/// Runs the ping-pong between the first and the last CPU; returns ticks taken.
fn ping_pong() -> u64 {
    TURN.store(0, Ordering::SeqCst);
    PONG_DONE.store(0, Ordering::SeqCst);
    GO.store(false, Ordering::SeqCst);
    let ta = sched::spawn_kernel("ping".into(), pinger, 0, Some(CpuId::BOOT)).expect("spawn");
    let tb = sched::spawn_kernel("pong".into(), pinger, 1, Some(last_cpu())).expect("spawn");
    IDS[0].store(ta.id, Ordering::SeqCst);
    IDS[1].store(tb.id, Ordering::SeqCst);
    let t0 = sched::ticks();
    GO.store(true, Ordering::SeqCst);
    wait_for("ping-pong", 20_000, || PONG_DONE.load(Ordering::SeqCst) == 2);
    assert_eq!(TURN.load(Ordering::SeqCst), 2 * ROUNDS);
    sched::ticks() - t0
}

fn a_wake_during_the_block_is_not_lost() {
    let took = ping_pong();
    kernel::print!("({ROUNDS} round trips in {took} ticks) ");
}

const SWITCHES: u64 = 4_000;
static DONE: AtomicBool = AtomicBool::new(false);
static YIELDER_IDS: [AtomicU32; cpus::MAX_CPUS + 1] = [const { AtomicU32::new(0) }; cpus::MAX_CPUS + 1];
/// Set by a yielder before it blocks, cleared by the waker that wakes it.
static PARKED: [AtomicBool; cpus::MAX_CPUS + 1] = [const { AtomicBool::new(false) }; cpus::MAX_CPUS + 1];
static YIELDS: AtomicU64 = AtomicU64::new(0);
static YIELDERS_DONE: AtomicU32 = AtomicU32::new(0);

/// Yields, and every 4th round blocks until the waker wakes it, carrying
/// a running sum in registers and on its stack across every switch;
/// checks both against a recomputation at the end.
fn yielder(index: u64) {
    let seed = 0x1234_5678 * (index + 1);
    let parked = &PARKED[index as usize];
    let mut on_stack = [0u64; 16];
    let (mut sum, mut x) = (0u64, Rng::new(seed));
    for n in 0..SWITCHES {
        let v = x.next_u64();
        sum = sum.wrapping_add(v);
        on_stack[(n % 16) as usize] ^= v;
        if n % 4 == 3 {
            interrupts::disable();
            parked.store(true, Ordering::SeqCst);
            while parked.load(Ordering::SeqCst) {
                sched::block(); // until the waker clears `parked` and wakes it
            }
            interrupts::enable();
        } else {
            sched::yield_now();
        }
        core::hint::black_box(&mut on_stack);
    }
    let (mut again, mut x2, mut stack2) = (0u64, Rng::new(seed), [0u64; 16]);
    for i in 0..SWITCHES {
        let v = x2.next_u64();
        again = again.wrapping_add(v);
        stack2[(i % 16) as usize] ^= v;
    }
    assert_eq!((sum, on_stack), (again, stack2), "yielder {index}: its registers and stack survived {SWITCHES} switches");
    YIELDS.fetch_add(SWITCHES, Ordering::SeqCst);
    YIELDERS_DONE.fetch_add(1, Ordering::SeqCst);
}

/// Wakes every parked yielder in turn, over and over, until all are done.
fn waker(n: u64) {
    while !DONE.load(Ordering::SeqCst) {
        for (id, parked) in YIELDER_IDS.iter().zip(&PARKED).take(n as usize) {
            if parked.swap(false, Ordering::SeqCst) {
                sched::wake(id.load(Ordering::SeqCst));
            }
        }
        sched::yield_now();
    }
}

/// One more yielder than CPUs, so some CPU mostly has one ready behind the
/// running one. Each block leaves its CPU's queue empty often enough that
/// the CPU steals — usually the yielder its victim has just put back,
/// which that CPU may still be saving. A CPU that took it before the save
/// ended would resume it on a half-saved stack.
fn tasks_stolen_while_switching_resume_intact() {
    let n = cpus::online().len() as u64 + 1;
    let (_, _, steals0) = sched::totals();
    for i in 0..n {
        let t = sched::spawn_kernel(alloc::format!("yielder{i}"), yielder, i, None).expect("spawn");
        YIELDER_IDS[i as usize].store(t.id, Ordering::SeqCst);
    }
    sched::spawn_kernel("waker".into(), waker, n, Some(CpuId::BOOT)).expect("spawn");
    wait_for("yielders", 60_000, || YIELDERS_DONE.load(Ordering::SeqCst) == n as u32);
    DONE.store(true, Ordering::SeqCst);
    let steals = sched::totals().2 - steals0;
    kernel::print!("({n} yielders: {} switches each, {steals} steals) ", SWITCHES);
    if cpus::online().len() > 1 {
        assert!(steals > 0, "CPUs stole tasks from each other (else this checks nothing)");
    }
}
