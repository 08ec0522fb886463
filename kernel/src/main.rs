//! The hmmos kernel that `cargo run` boots.
//!
//! `mode=` on the command line (set by the launcher's flags) picks what it
//! does after booting: `demo` (default) narrates HMM end to end and exits
//! with success only if every check held; `console` opens the `hmm> `
//! console on the serial line; `bench` runs the in-guest benchmarks.
#![no_std]
#![no_main]

use kernel::{cmdline, qemu, BootInfo};

kernel::entry!(main);

fn main(boot: &'static BootInfo) -> ! {
    if let Err(e) = kernel::platform::init() {
        log::error!("device bring-up failed: {e}");
        qemu::exit(qemu::ExitCode::Failure);
    }
    let ok = match cmdline::get(boot.cmdline(), "mode").unwrap_or("demo") {
        "console" => {
            kernel::println!("\nhmm> console: `help` lists the commands, `exit` leaves.");
            let mut world = kernel::world::World::default();
            kernel::world::SHELL.run_serial(&mut world);
            true
        }
        "bench" => kernel::bench::run(),
        "demo" => kernel::demo::run(),
        other => {
            log::error!("unknown mode `{other}` (demo, console, bench)");
            false
        }
    };
    qemu::exit(if ok { qemu::ExitCode::Success } else { qemu::ExitCode::Failure })
}
