//! Page faults from ring 3 take the same resolution as the kernel's own
//! accesses and device faults: demand-zero, swap-in (the kernel swaps a
//! sleeping process out under its feet), copy-on-write after fork.
#![no_std]
#![no_main]

use kernel::{proc, sched};

kernel::entry!(main);

fn main(_: &'static kernel::BootInfo) -> ! {
    kernel::testing::run("user_faults", kernel::tests![demand_zero_swap_in_and_cow_from_ring3]);
}

fn demand_zero_swap_in_and_cow_from_ring3() {
    let pid = proc::spawn("swapper", b"").expect("spawn");
    sched::sleep_ms(50); // it has written its pages and sleeps
    let aspace = proc::aspace_of(pid).expect("live");
    let buf = aspace.vmas().into_iter().find(|v| v.range.start() == kernel::aspace::MMAP_BASE).expect("the buffer");
    let out = aspace.swap_out(buf.range);
    kernel::println!("  swapped out {out} pages of process {pid} while it slept");
    assert_eq!(out, 16, "all 16 written pages were resident and went out");
    let info = proc::wait_exit(pid).expect("exits");
    assert_eq!(info, proc::ExitInfo { status: 0, report: None }, "every byte came back");
    let s = aspace.stats();
    kernel::println!("  ring-3 faults resolved: {} demand-zero, {} swap-ins, {} COW copies, {} COW reuses", s.demand_zero, s.swap_ins, s.cow_copies, s.cow_reuses);
    assert!(s.demand_zero >= 16, "the first writes were demand-zero faults");
    assert!(s.swap_ins >= 16, "the reads after swap-out were swap-in faults");
    assert!(s.cow_copies + s.cow_reuses >= 1, "the write after fork broke COW");
}
