//! System calls from ring 3: every call with good and bad arguments (the
//! `syscalls` program checks its own results), fork with copy-on-write,
//! wait, and a fuzzer making thousands of hostile calls. The kernel must
//! survive all of it, and every frame must come back once the processes
//! are gone.
#![no_std]
#![no_main]

use kernel::proc;

kernel::entry!(main);

fn main(_: &'static kernel::BootInfo) -> ! {
    kernel::testing::run("user_syscalls", kernel::tests![every_call_checks_its_arguments, fuzzed_calls_return_errors_not_panics, memory_comes_back]);
}

fn run(program: &str, args: &str) -> proc::ExitInfo {
    let pid = proc::spawn(program, args.as_bytes()).unwrap_or_else(|e| panic!("spawn {program}: {e}"));
    proc::wait_exit(pid).expect("the process exits")
}

fn every_call_checks_its_arguments() {
    let info = run("syscalls", "");
    assert_eq!(info, proc::ExitInfo { status: 0, report: None }, "every check of the syscalls program held");
}

fn fuzzed_calls_return_errors_not_panics() {
    kernel::hmmdev::accels().expect("accelerators");
    let info = run("fuzz", "1500");
    assert_eq!(info.status, 0, "every fuzzed call returned a known code: {info:?}");
}

fn memory_comes_back() {
    // Warm up (page tables of the kernel heap, the accelerators), then a
    // full run must give every frame back.
    let _ = run("hello", "");
    let before = kernel::mm::frames::stats().free;
    assert_eq!(run("syscalls", "").status, 0);
    assert_eq!(run("hello", "").status, 0);
    let after = kernel::mm::frames::stats().free;
    assert_eq!(after, before, "frames leaked by processes that exited: {} ", before as i64 - after as i64);
    assert!(proc::list().is_empty(), "no process left: {:?}", proc::list());
}
