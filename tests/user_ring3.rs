//! Ring 3: a program loaded from ELF runs in its own address space, makes
//! system calls, takes demand-zero faults; every access it may not make
//! ends that process alone, with a report naming address, access and
//! reason — and the kernel carries on.
#![no_std]
#![no_main]

use kernel::proc;

kernel::entry!(main);

fn main(_: &'static kernel::BootInfo) -> ! {
    kernel::testing::run("user_ring3", kernel::tests![hello_runs_in_ring3, every_bad_access_is_a_segfault, malformed_images_are_refused]);
}

fn run(program: &str, args: &str) -> proc::ExitInfo {
    let pid = proc::spawn(program, args.as_bytes()).unwrap_or_else(|e| panic!("spawn {program}: {e}"));
    proc::wait_exit(pid).expect("the process exits")
}

fn hello_runs_in_ring3() {
    let info = run("hello", "world");
    assert_eq!(info, proc::ExitInfo { status: 0, report: None }, "hello exits 0 without a report");
}

fn every_bad_access_is_a_segfault() {
    let cases: &[(&str, &str)] = &[
        ("null", "read at 0x0: no mapping there"),
        ("kernel", "read at 0xffffffff80000000: no mapping there"),
        ("text-write", "write at 0x40"),
        ("ro-write", "not permitted by the mapping's protection"),
        ("exec-data", "execute at 0x"),
        ("stack", "stack overflow into the guard gap"),
        ("unmapped", "no mapping there"),
        ("ud2", "invalid opcode"),
        ("privileged", "general protection fault"),
    ];
    for (case, expect) in cases {
        let info = run("segv", case);
        let report = info.report.unwrap_or_else(|| panic!("segv {case}: exited {} without a report", info.status));
        assert_eq!(info.status, -11, "segv {case}");
        assert!(report.contains(expect), "segv {case}: report `{report}` lacks `{expect}`");
    }
    // The kernel is fine: another program still runs.
    assert_eq!(run("hello", "").status, 0);
}

fn malformed_images_are_refused() {
    let good = proc::programs::find("hello").expect("hello is embedded");
    assert!(proc::spawn_image("junk", b"not an elf at all", b"").is_err());
    let mut cut = alloc::vec::Vec::from(&good[..200]);
    assert!(proc::spawn_image("cut", &cut, b"").is_err(), "a truncated image is refused");
    cut.clear();
    assert!(proc::spawn_image("empty", &cut, b"").is_err());
    assert!(proc::spawn("no-such-program", b"").is_err());
    assert!(proc::spawn("hello", &[b'x'; 1000]).is_err(), "arguments too long");
}

extern crate alloc;
