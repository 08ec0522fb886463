//! The clock of "every CPU halted" (`sched::halted`), which the throughput
//! benchmark subtracts from the TSC to count the instructions all CPUs
//! ran (under icount the virtual clock warps only while every CPU halts).
//! Run at 1, 2 and 4 CPUs: an idle machine is halted nearly all the time;
//! while one CPU spins — the test's own, or another, woken while this one
//! ran, while the test sleeps — the clock never runs, though the other
//! CPUs halt.
#![no_std]
#![no_main]

extern crate alloc;

use core::sync::atomic::{AtomicBool, Ordering};
use kernel::sched::{self, halted};
use kernel::{cpus, cycles};

kernel::entry!(main);

fn main(_: &'static kernel::BootInfo) -> ! {
    sched::init();
    kernel::testing::run("halted_clock", kernel::tests![an_idle_machine_is_halted, a_spinning_cpu_stops_the_clock, a_spinner_elsewhere_stops_the_clock]);
}

fn an_idle_machine_is_halted() {
    sched::sleep_ms(10); // start on a tick
    let (t0, h0) = (cycles::now(), halted::all_halted_cycles());
    sched::sleep_ms(300);
    let (el, h) = (cycles::now() - t0, halted::all_halted_cycles() - h0);
    kernel::println!("  300 ms asleep on {} CPU(s): {el} TSC cycles, {h} of them with every CPU halted", cpus::online().len());
    assert!(h <= el, "more halted time than time");
    assert!(h * 10 >= el * 9, "an idle machine was halted only {h} of {el} cycles");
}

fn a_spinning_cpu_stops_the_clock() {
    let (t0, h0) = (sched::ticks(), halted::all_halted_cycles());
    while sched::ticks() - t0 < 5 {
        core::hint::spin_loop();
    }
    let h = halted::all_halted_cycles() - h0;
    assert_eq!(h, 0, "{h} cycles counted as all-halted while this CPU spun");
}

static SPIN: AtomicBool = AtomicBool::new(false);
static SPINNING: AtomicBool = AtomicBool::new(false);

fn spinner(_: u64) {
    SPINNING.store(true, Ordering::SeqCst);
    while SPIN.load(Ordering::SeqCst) {
        core::hint::spin_loop();
    }
    SPINNING.store(false, Ordering::SeqCst);
}

fn a_spinner_elsewhere_stops_the_clock() {
    let Some(last) = cpus::online().iter().last().filter(|&c| c != cpus::CpuId::BOOT) else {
        return; // one CPU: the test's own spin above is the case
    };
    SPIN.store(true, Ordering::SeqCst);
    // From before the spawn: `last` is woken (and starts the spinner)
    // while this CPU runs, so only its own return from `hlt` takes it out
    // of the halted set; then this CPU sleeps.
    let h0 = halted::all_halted_cycles();
    sched::spawn_kernel("spinner".into(), spinner, 0, Some(last)).expect("a task");
    while !SPINNING.load(Ordering::SeqCst) {
        core::hint::spin_loop();
    }
    sched::sleep_ms(50); // this CPU (and the others) halt; `last` spins
    let h = halted::all_halted_cycles() - h0;
    SPIN.store(false, Ordering::SeqCst);
    while SPINNING.load(Ordering::SeqCst) {
        sched::sleep_ms(1);
    }
    assert_eq!(h, 0, "{h} cycles counted as all-halted while {last} spun");
}
