//! Scheduling: processes preempted by the local APIC timer, each on its
//! own kernel stack; a process waiting for its device job sleeps while
//! others run; two processes contend for one accelerator and both finish.
#![no_std]
#![no_main]

extern crate alloc;

use core::sync::atomic::Ordering;
use kernel::{proc, sched};

kernel::entry!(main);

fn main(_: &'static kernel::BootInfo) -> ! {
    kernel::testing::run(
        "user_sched",
        kernel::tests![timer_preempts_a_cpu_hog, several_processes_share_the_cpu, device_job_sleeps_while_others_run, two_processes_share_one_accelerator],
    );
}

fn spawn(program: &str, args: &str) -> proc::Pid {
    proc::spawn(program, args.as_bytes()).unwrap_or_else(|e| panic!("spawn {program}: {e}"))
}

fn state(pid: proc::Pid) -> alloc::string::String {
    proc::list().into_iter().find(|(p, _, _)| *p == pid).map(|(_, _, s)| s).unwrap_or_default()
}

/// A CPU hog never makes a system call; a sleeper still gets its turns.
fn timer_preempts_a_cpu_hog() {
    proc::init();
    let before = sched::cpu().preemptions.load(Ordering::Relaxed);
    let hog = spawn("spin", "60");
    let sleeper = spawn("ticker", "5");
    let t = proc::wait_exit(sleeper).expect("ticker exits");
    assert_eq!(t.status, 0);
    let hog_state = state(hog);
    assert!(!hog_state.starts_with("exited"), "the hog still runs when the sleeper is done (it is `{hog_state}`)");
    assert_eq!(proc::wait_exit(hog).expect("spin exits").status, 0);
    let n = sched::cpu().preemptions.load(Ordering::Relaxed) - before;
    kernel::println!("  {n} preemptions by the timer");
    assert!(n > 0, "the timer preempted ring 3");
}

fn several_processes_share_the_cpu() {
    let (p0, s0) = (sched::cpu().preemptions.load(Ordering::Relaxed), sched::cpu().switches.load(Ordering::Relaxed));
    let pids: alloc::vec::Vec<_> = (0..3).map(|_| spawn("spin", "15")).collect();
    // While they run, all three are in the table at once.
    assert_eq!(proc::list().len(), 3);
    for p in pids {
        assert_eq!(proc::wait_exit(p).expect("exits").status, 0);
    }
    let (p1, s1) = (sched::cpu().preemptions.load(Ordering::Relaxed), sched::cpu().switches.load(Ordering::Relaxed));
    kernel::println!("  3 hogs: {} preemptions, {} context switches", p1 - p0, s1 - s0);
    assert!(p1 - p0 >= 3, "each hog was preempted");
}

/// While one process waits for its device's DMA, another runs.
fn device_job_sleeps_while_others_run() {
    kernel::hmmdev::accels().expect("accelerators");
    let dev = spawn("devjob", "0");
    let sleeper = spawn("ticker", "3");
    let (mut seen_waiting, mut dev_done_first) = (false, false);
    loop {
        sched::sleep_ms(5);
        let (d, s) = (state(dev), state(sleeper));
        seen_waiting |= d.contains("waiting (device)");
        if d.starts_with("exited") && !s.starts_with("exited") {
            dev_done_first = true;
        }
        if s.starts_with("exited") {
            break;
        }
    }
    assert!(seen_waiting, "the device job's process was seen asleep on its device");
    assert!(!dev_done_first, "the sleeper finished while the device job still ran");
    assert_eq!(proc::wait_exit(sleeper).expect("exits").status, 0);
    assert_eq!(proc::wait_exit(dev).expect("exits").status, 0, "the device job's bytes were right");
}

/// Two processes, one accelerator: the second waits for the first's job
/// (the lock holder sleeps in its DMA; the contender sleeps too).
fn two_processes_share_one_accelerator() {
    let a = spawn("devjob", "0");
    let b = spawn("devjob", "0");
    let c = spawn("devjob", "1");
    for p in [a, b, c] {
        assert_eq!(proc::wait_exit(p).expect("exits").status, 0, "devjob {p}");
    }
}
