//! `cargo run [-- OPTIONS]`: build the hmmos kernel and boot it in QEMU.

use launcher::options::{parse, HELP};
use launcher::{build_kernels, run};
use std::process::ExitCode;

fn main() -> ExitCode {
    let opts = match parse(std::env::args().skip(1).collect()) {
        Ok(Some(o)) => o,
        Ok(None) => {
            println!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("hmmos: {e}");
            return ExitCode::from(2);
        }
    };
    let kernel = match opts.kernel {
        Some(k) => k,
        None => match build_kernels("kernel", Some("hmmos-kernel"), opts.profile) {
            Ok(mut images) => images.remove(0).path,
            Err(e) => {
                eprintln!("hmmos: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    eprintln!("hmmos: booting {} — accelerator: {}", kernel.display(), opts.machine.accel.describe());
    if opts.machine.gdb {
        eprintln!("hmmos: QEMU waits for gdb: gdb {} -ex 'target remote :1234'", kernel.display());
    }
    match run(&kernel, &opts.machine, false, opts.timeout) {
        Ok(outcome) => {
            eprintln!("hmmos: {} ({:.2} s)", outcome.verdict(), outcome.wall.as_secs_f64());
            ExitCode::from(outcome.exit_code().clamp(0, 255) as u8)
        }
        Err(e) => {
            eprintln!("hmmos: {e}");
            ExitCode::FAILURE
        }
    }
}
