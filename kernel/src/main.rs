//! The hmmos kernel that `cargo run` boots.
//!
//! `mode=` on the command line (set by the launcher's flags) picks what it
//! does after booting: `demo` (default) narrates HMM end to end and exits
//! with success only if every check held; `console` opens the `hmm> `
//! console on the serial line; `bench` runs the in-guest benchmarks; `run`
//! runs the user program `program=` in ring 3 and exits with success only if
//! it exited with status 0.
#![no_std]
#![no_main]

extern crate alloc;

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
        "run" => run_program(cmdline::get(boot.cmdline(), "program").unwrap_or("")),
        other => {
            log::error!("unknown mode `{other}` (demo, console, bench, run)");
            false
        }
    };
    qemu::exit(if ok { qemu::ExitCode::Success } else { qemu::ExitCode::Failure })
}

/// `mode=run program=NAME`: one user program, its exit status judged.
fn run_program(name: &str) -> bool {
    let pid = match kernel::proc::spawn(name, b"") {
        Ok(pid) => pid,
        Err(e) => {
            log::error!("cannot run `{name}`: {e}");
            return false;
        }
    };
    match kernel::proc::wait_exit(pid) {
        Some(info) => {
            kernel::println!("process {pid} ({name}) exited with status {}{}", info.status, info.report.map(|r| alloc::format!(": {r}")).unwrap_or_default());
            info.status == 0
        }
        None => false,
    }
}
