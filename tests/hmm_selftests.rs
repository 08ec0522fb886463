//! Linux's HMM self-tests, ported (`kernel/user/src/bin/hmm-tests.rs`): the
//! program runs in ring 3 and hands two accelerators its own pointers. It
//! exits with the number of failed cases (100 if fewer than 30 passed).
#![no_std]
#![no_main]

use kernel::proc;

kernel::entry!(main);

fn main(_: &'static kernel::BootInfo) -> ! {
    kernel::testing::run("hmm_selftests", kernel::tests![hmm_tests_pass]);
}

fn hmm_tests_pass() {
    kernel::hmmdev::accels().expect("accelerators");
    let pid = proc::spawn("hmm-tests", b"").expect("spawn hmm-tests");
    let info = proc::wait_exit(pid).expect("exits");
    assert_eq!(info, proc::ExitInfo { status: 0, report: None }, "every ported case passed");
    let free = kernel::mm::frames::stats();
    kernel::println!("  frames free after the run: {} of {}", free.free, free.managed);
}
