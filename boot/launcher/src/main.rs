//! `cargo run [-- OPTIONS]`: build the hmmos kernel and boot it in QEMU.

use launcher::options::{parse, HELP};
use launcher::{build_kernels, run, run_script};
use std::io::{IsTerminal, Read};
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
    // A console script on stdin is forwarded once the console is ready;
    // a terminal is connected straight through.
    let scripted = opts.mode == Some("console") && !std::io::stdin().is_terminal();
    let result = if scripted {
        let mut script = Vec::new();
        if let Err(e) = std::io::stdin().read_to_end(&mut script) {
            eprintln!("hmmos: reading the console script: {e}");
            return ExitCode::FAILURE;
        }
        // A script without `exit` must not hang: bound it unless asked otherwise.
        run_script(&kernel, &opts.machine, script, opts.timeout.or(Some(std::time::Duration::from_secs(600))))
    } else {
        run(&kernel, &opts.machine, false, opts.timeout)
    };
    match result {
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
