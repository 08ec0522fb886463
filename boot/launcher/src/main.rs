//! `cargo run [-- OPTIONS]`: check the host, build the hmmos kernel, boot it
//! in QEMU and say how it ended (each ending has its own exit status: see
//! `--help` or [`launcher::run::status`]).

use launcher::options::{parse, HELP};
use launcher::{build_kernels, prereq, run_session, status, Input, Session};
use std::io::IsTerminal;
use std::process::ExitCode;

fn exit(code: i32) -> ExitCode {
    ExitCode::from(code.clamp(0, 255) as u8)
}

fn main() -> ExitCode {
    let opts = match parse(std::env::args().skip(1).collect()) {
        Ok(Some(o)) => o,
        Ok(None) => {
            println!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("hmmos: {e}");
            return exit(status::USAGE);
        }
    };
    for w in &opts.warnings {
        eprintln!("hmmos: {w}");
    }
    // Prerequisites first: a fresh machine hears about them before a build.
    if let Err(e) = prereq::qemu() {
        eprintln!("hmmos: {e}");
        return exit(status::SETUP);
    }
    let kernel = match opts.kernel {
        Some(k) => k,
        None => {
            let root = launcher::workspace_root();
            if let Err(e) = prereq::ensure_kernel_target(&root, &mut |s| eprintln!("hmmos: {s}")) {
                eprintln!("hmmos: {e}");
                return exit(status::SETUP);
            }
            eprintln!("hmmos: building the kernel for {} ({:?} profile; a first build takes a minute or two)", launcher::build::KERNEL_TARGET, opts.profile);
            match build_kernels("kernel", Some("hmmos-kernel"), opts.profile) {
                Ok(mut images) => images.remove(0).path,
                Err(e) => {
                    eprintln!("hmmos: {e}");
                    return exit(status::SETUP);
                }
            }
        }
    };
    eprintln!("hmmos: booting {} — accelerator: {}; {} CPU(s)", kernel.display(), opts.machine.accel.describe(), opts.machine.cpus);
    if let Some(port) = opts.machine.gdb {
        eprintln!("hmmos: QEMU waits for gdb on 127.0.0.1:{port}: gdb {} -ex 'target remote :{port}'", kernel.display());
    }
    // A console script on stdin is streamed once the console is ready;
    // a terminal is connected straight through.
    let input = if opts.mode == Some("console") && !std::io::stdin().is_terminal() {
        Input::Script(Box::new(std::io::stdin()))
    } else {
        Input::Inherit
    };
    let session = Session { timeout: opts.timeout, capture: false, input, trace: opts.trace.clone() };
    match run_session(&kernel, &opts.machine, session) {
        Ok(outcome) => {
            if let (Some(path), Some(n)) = (&opts.trace, outcome.timeline_events) {
                eprintln!("hmmos: wrote {n} HMM events to {}: open it in https://ui.perfetto.dev (or chrome://tracing)", path.display());
            }
            eprintln!("hmmos: {} ({:.2} s)", outcome.verdict(), outcome.wall.as_secs_f64());
            exit(outcome.exit_code())
        }
        Err(e @ launcher::RunError::QemuMissing) => {
            eprintln!("hmmos: {e}");
            exit(status::SETUP)
        }
        Err(e) => {
            eprintln!("hmmos: {e}");
            exit(status::QEMU_START)
        }
    }
}
