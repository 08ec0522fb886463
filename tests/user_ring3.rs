//! Ring 3: a program loaded from ELF runs in its own address space, makes
//! system calls, takes demand-zero faults; every access it may not make
//! ends that process alone, with a report naming address, access and
//! reason — and the kernel carries on.
#![no_std]
#![no_main]

use kernel::proc;

kernel::entry!(main);

fn main(_: &'static kernel::BootInfo) -> ! {
    kernel::testing::run("user_ring3", kernel::tests![hello_runs_in_ring3, image_pages_are_demand_paged, every_bad_access_is_a_segfault, malformed_images_are_refused]);
}

fn run(program: &str, args: &str) -> proc::ExitInfo {
    let pid = proc::spawn(program, args.as_bytes()).unwrap_or_else(|e| panic!("spawn {program}: {e}"));
    proc::wait_exit(pid).expect("the process exits")
}

fn hello_runs_in_ring3() {
    let info = run("hello", "world");
    assert_eq!(info, proc::ExitInfo { status: 0, report: None }, "hello exits 0 without a report");
}

/// Nothing of the image is resident before the program runs; the first
/// touch of a page — here the kernel's own copy — brings exactly that page
/// in, with the image's bytes.
fn image_pages_are_demand_paged() {
    let image = proc::programs::find("hello").expect("embedded");
    let pid = proc::spawn("hello", b"").expect("spawn");
    let aspace = proc::aspace_of(pid).expect("live");
    let areas = aspace.vmas();
    let text = areas.iter().find(|v| v.range.start() == 0x400000).expect("text at 0x400000");
    assert_eq!(text.prot, kernel::aspace::Prot::READ | kernel::aspace::Prot::EXEC, "text is r-x");
    assert!(areas.iter().any(|v| v.prot == kernel::aspace::Prot::READ | kernel::aspace::Prot::WRITE && v.range.start() < 0x1000_0000), "a data area, rw-");
    for v in areas.iter().filter(|v| v.range.start() < 0x1000_0000) {
        for page in v.range.page_addrs() {
            assert!(aspace.walk(page).is_none(), "image page {page:#x} is not resident before the program runs");
        }
    }
    assert_eq!(aspace.stats().source_fills, 0);
    // The kernel reads the first text page: one fault, filled from the image
    // (user.ld puts the text at file offset 0x1000).
    let mut first = [0u8; 64];
    aspace.copy_from_user(0x400000, &mut first).expect("readable");
    assert_eq!(&first[..], &image[0x1000..0x1040], "the page holds the image's bytes");
    assert_eq!(aspace.stats().source_fills, 1, "one page came from the image");
    assert_eq!(proc::wait_exit(pid).expect("exits").status, 0);
    let s = aspace.stats();
    kernel::println!("  hello: {} pages filled from the image, {} demand-zero", s.source_fills, s.demand_zero);
    assert!(s.source_fills >= 2 && s.source_fills <= areas.iter().filter(|v| v.range.start() < 0x1000_0000).map(|v| v.range.pages()).sum::<u64>());
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
    assert!(proc::spawn_image("cut", &good[..200], b"").is_err(), "a truncated image is refused");
    assert!(proc::spawn_image("empty", &good[..0], b"").is_err());
    assert!(proc::spawn("no-such-program", b"").is_err());
    assert!(proc::spawn("hello", &[b'x'; 1000]).is_err(), "arguments too long");
}

extern crate alloc;
