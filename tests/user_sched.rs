//! Scheduling: processes preempted by the local APIC timer, each on its
//! own kernel stack; a process waiting for its device job sleeps while
//! others run; two processes contend for one accelerator and both finish.
#![no_std]
#![no_main]

extern crate alloc;

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

/// A CPU hog never makes a system call; a sleeper still gets its turns
/// (one hog per CPU, so the sleeper has to share a CPU with one). The
/// sleeper's 5 naps of 2 ticks end within ~15 ticks; the hogs run for
/// hundreds. At 2 CPUs under icount this caught a vCPU that TCG never ran
/// while the other stayed in ring 3 (see `sched::preempt_point`): the sleeper
/// then ended only after a hog.
fn timer_preempts_a_cpu_hog() {
    proc::init();
    let before = sched::totals().1;
    let hogs: alloc::vec::Vec<_> = (0..kernel::cpus::online().len()).map(|_| spawn("spin", "150")).collect();
    let sleeper = spawn("ticker", "5");
    let t = proc::wait_exit(sleeper).expect("ticker exits");
    assert_eq!(t.status, 0);
    for &hog in &hogs {
        let hog_state = state(hog);
        assert!(!hog_state.starts_with("exited"), "the hog still runs when the sleeper is done (it is `{hog_state}`)");
    }
    for hog in hogs {
        assert_eq!(proc::wait_exit(hog).expect("spin exits").status, 0);
    }
    let n = sched::totals().1 - before;
    kernel::println!("  {n} preemptions by the timer");
    assert!(n > 0, "the timer preempted ring 3");
}

fn several_processes_share_the_cpu() {
    // Two hogs per CPU plus one: the CPUs are shared whatever their number.
    let n = 2 * kernel::cpus::online().len() + 1;
    let (s0, p0, _) = sched::totals();
    let pids: alloc::vec::Vec<_> = (0..n).map(|_| spawn("spin", "15")).collect();
    // While they run, all are in the table at once.
    assert_eq!(proc::list().len(), n);
    for p in pids {
        assert_eq!(proc::wait_exit(p).expect("exits").status, 0);
    }
    let (s1, p1, _) = sched::totals();
    kernel::println!("  {n} hogs: {} preemptions, {} context switches", p1 - p0, s1 - s0);
    assert!(p1 - p0 >= n as u64, "each hog was preempted");
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
