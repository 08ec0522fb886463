//! The lock order is checked at run time: taking the locks in the documented
//! order works; taking an edu device's lock while holding the IOMMU's (the
//! pair `bind` once reversed) must panic with both names. The launcher's
//! test runner expects this kernel to FAIL with "lock order violated".
//! It runs at 1, 2 and 4 CPUs; the reversed pair is taken on the last CPU
//! (the held-lock counts are per CPU: the check must fire there too).
#![no_std]
#![no_main]

kernel::entry!(main);

fn main(_: &'static kernel::BootInfo) -> ! {
    let p = kernel::platform::init().expect("platform");
    let accs = kernel::hmmdev::accels().expect("accelerators");
    {
        // The documented order: accelerator → device → IOMMU.
        let _acc = accs[0].lock();
        let _dev = p.accels[0].lock();
        let _iommu = p.iommu.lock();
    }
    let last = kernel::cpus::online().iter().last().expect("the boot CPU");
    kernel::println!("the documented order passed; now the reversed pair, on {last}:");
    kernel::sched::spawn_kernel("reversed".into(), reversed, 0, Some(last)).expect("spawn");
    loop {
        kernel::sched::sleep_ms(10);
    }
}

fn reversed(_: u64) {
    let p = kernel::platform::init().expect("platform");
    kernel::println!("on {}", kernel::cpus::this_cpu());
    let _iommu = p.iommu.lock();
    let _dev = p.accels[0].lock(); // must panic here
    kernel::println!("a reversed lock pair went unnoticed");
    kernel::qemu::exit(kernel::qemu::ExitCode::Success)
}
