//! `cargo run [-- OPTIONS]`: build the hmmos kernel and boot it in QEMU.

use launcher::{build_kernels, run, Accel, Machine, Profile};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

const HELP: &str = "\
hmmos: build the kernel and boot it in QEMU (q35, VT-d, two edu accelerators).

USAGE: cargo run [-- OPTIONS] [-- EXTRA-QEMU-ARGS...]

OPTIONS:
  --accel tcg|kvm|auto   accelerator (default auto: KVM only if the host CPU has
                         vmx/svm, else TCG with -icount shift=auto,sleep=off)
  --icount-shift N       TCG with a fixed icount shift: the guest TSC then counts
                         instructions, so cycle figures repeat run to run
  --console              after boot, open the hmm> console on the serial line
                         (stdin); `cargo run -- --console < script.txt` runs a script
  --bench                run the in-guest benchmarks (release build, icount shift=0)
  --cmdline \"...\"        extra kernel command line (e.g. \"log=debug\")
  --gdb                  QEMU waits for gdb on tcp::1234 (target remote :1234)
  --kernel PATH          boot this kernel ELF instead of building one
  --release              build the kernel with the release profile
  --memory MIB           guest RAM in MiB (default 512)
  --timeout SECS         kill the guest after SECS seconds (default 300; none
                         with --console or --gdb)
  --qemu-arg ARG         pass ARG to QEMU (repeatable); so does everything after
                         a second `--`
  -h, --help             this text

The exit status is 0 only when the kernel finished and every check held;
124 means the guest hung and was killed.";

struct Options {
    machine: Machine,
    kernel: Option<PathBuf>,
    profile: Profile,
    timeout: Option<Duration>,
    mode: Option<&'static str>,
}

fn parse(args: Vec<String>) -> Result<Option<Options>, String> {
    let mut o = Options { machine: Machine::default(), kernel: None, profile: Profile::Dev, timeout: Some(Duration::from_secs(300)), mode: None };
    let mut explicit_timeout = false;
    let mut it = args.into_iter();
    let mut cmdline = Vec::new();
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value (see --help)"));
        match a.as_str() {
            "-h" | "--help" => return Ok(None),
            "--accel" => {
                let v = value("--accel")?;
                o.machine.accel = Accel::parse(&v).ok_or_else(|| format!("unknown accelerator `{v}`: use tcg, kvm or auto"))?;
            }
            "--icount-shift" => {
                let v = value("--icount-shift")?;
                let n: u8 = v.parse().ok().filter(|n| *n <= 10).ok_or_else(|| format!("--icount-shift takes 0..=10, not `{v}`"))?;
                o.machine.accel = Accel::Tcg { icount_shift: Some(n) };
            }
            "--console" => o.mode = Some("console"),
            "--bench" => {
                o.mode = Some("bench");
                o.profile = Profile::Release;
                if matches!(o.machine.accel, Accel::Tcg { icount_shift: None }) {
                    o.machine.accel = Accel::Tcg { icount_shift: Some(0) };
                }
            }
            "--cmdline" => cmdline.push(value("--cmdline")?),
            "--gdb" => o.machine.gdb = true,
            "--kernel" => o.kernel = Some(PathBuf::from(value("--kernel")?)),
            "--release" => o.profile = Profile::Release,
            "--memory" => {
                let v = value("--memory")?;
                o.machine.memory_mib = v.parse().ok().filter(|m| (64..=65536).contains(m)).ok_or_else(|| format!("--memory takes MiB in 64..=65536, not `{v}`"))?;
            }
            "--timeout" => {
                let v = value("--timeout")?;
                let s: u64 = v.parse().map_err(|_| format!("--timeout takes whole seconds, not `{v}`"))?;
                o.timeout = Some(Duration::from_secs(s));
                explicit_timeout = true;
            }
            "--qemu-arg" => {
                let v = value("--qemu-arg")?;
                o.machine.extra_args.push(v);
            }
            "--" => o.machine.extra_args.extend(it.by_ref()),
            other => return Err(format!("unknown option `{other}` (see --help)")),
        }
    }
    if let Some(m) = o.mode {
        cmdline.insert(0, format!("mode={m}"));
    }
    o.machine.cmdline = cmdline.join(" ");
    if (o.mode == Some("console") || o.machine.gdb) && !explicit_timeout {
        o.timeout = None;
    }
    Ok(Some(o))
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
