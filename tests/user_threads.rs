//! Threads and the end of a process: threads share memory; an exit ends
//! every thread, even one blocked in wait(); the kernel can kill a CPU hog.
#![no_std]
#![no_main]

use kernel::{proc, sched};

kernel::entry!(main);

fn main(_: &'static kernel::BootInfo) -> ! {
    kernel::testing::run("user_threads", kernel::tests![threads_share_one_address_space, exit_ends_a_thread_blocked_in_wait, kill_ends_a_cpu_hog]);
}

fn threads_share_one_address_space() {
    let pid = proc::spawn("threads", b"share").expect("spawn");
    assert_eq!(proc::wait_exit(pid).expect("exits"), proc::ExitInfo { status: 0, report: None });
}

fn exit_ends_a_thread_blocked_in_wait() {
    let t0 = sched::ticks();
    let pid = proc::spawn("threads", b"exit-while-waiting").expect("spawn");
    let info = proc::wait_exit(pid).expect("exits");
    let took = sched::ticks() - t0;
    kernel::println!("  the process ended after {took} ticks (its child sleeps 6000)");
    assert_eq!(info.status, 5);
    assert!(took < 500, "the blocked thread was woken and left ({took} ticks)");
}

fn kill_ends_a_cpu_hog() {
    let pid = proc::spawn("spin", b"100000").expect("spawn");
    sched::sleep_ms(30);
    assert!(proc::kill(pid), "a live process");
    let info = proc::wait_exit(pid).expect("exits");
    assert_eq!(info, proc::ExitInfo { status: -9, report: Some("killed".into()) });
    assert!(!proc::kill(pid), "gone");
}

extern crate alloc;
