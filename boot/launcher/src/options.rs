//! The launcher's command line: `cargo run -- [OPTIONS] [-- QEMU-ARGS]`.

use crate::machine::DEFAULT_GDB_PORT;
use crate::{Accel, Machine, Profile};
use std::path::PathBuf;
use std::time::Duration;

/// `--help`.
pub const HELP: &str = "\
hmmos: build the kernel and boot it in QEMU (q35, VT-d, two edu accelerators).

USAGE: cargo run [-- OPTIONS] [-- EXTRA-QEMU-ARGS...]

OPTIONS:
  --accel tcg|mttcg|kvm|auto
                         accelerator (default auto: KVM only if the host CPU has
                         vmx/svm, else TCG with -icount shift=auto,sleep=off);
                         mttcg: one host thread per CPU, no icount (CPUs truly
                         interleave; every edu DMA costs 100 ms of wall time)
  --smp N                processors, 1..=8 (default 2)
  --icount-shift N       TCG with a fixed icount shift: the guest TSC then counts
                         instructions, so cycle figures repeat run to run
  --console              after boot, open the hmm> console on the serial line
                         (stdin); `cargo run -- --console < script.txt` runs a script
  --bench                run the in-guest benchmarks (release build, icount shift=0)
  --run PROGRAM          run a user program in ring 3 (e.g. hmm-tests, hello);
                         the exit status is 0 only if the program's was
  --cmdline \"...\"        extra kernel command line: log=debug (one line per HMM
                         event), log=trace (per page-table entry)
  --gdb[=PORT]           QEMU waits for gdb on 127.0.0.1:PORT (default 1234):
                         gdb <kernel ELF> -ex 'target remote :PORT'
  --trace FILE           write a timeline of HMM events (device faults, their
                         rounds and replays, invalidations, IOTLB commands) as
                         Chrome trace-event JSON, for ui.perfetto.dev or
                         chrome://tracing; implies log=debug
  --kernel PATH          boot this kernel ELF instead of building one
  --release              build the kernel with the release profile
  --memory MIB           guest RAM in MiB (default 512)
  --disk MIB             swap disk size in MiB (default 4096; a sparse file)
  --timeout SECS         kill the guest after SECS seconds (default 300; none
                         with --console or --gdb)
  --qemu-arg ARG         pass ARG to QEMU (repeatable); so does everything after
                         a second `--`
  -h, --help             this text

EXIT STATUS:
  0    the kernel finished and every check held
  1    the kernel reported a failed check
  2    bad options
  3    the kernel panicked (backtrace symbolized)
  4    the kernel died of a CPU exception (backtrace symbolized)
  5    triple fault
  6    QEMU could not start (bad QEMU argument, missing kernel file, busy
       gdb port, no KVM)
  7    QEMU crashed or was killed
  8    the debugger ended the session (gdb `kill`)
  9    a prerequisite is missing or the kernel build failed
  10   the kernel wrote an unknown exit code
  124  the guest hung and was killed after the timeout";

/// What the user asked for.
#[derive(Debug)]
pub struct Options {
    pub machine: Machine,
    pub kernel: Option<PathBuf>,
    pub profile: Profile,
    pub timeout: Option<Duration>,
    pub mode: Option<&'static str>,
    /// `--trace FILE`: where to write the HMM event timeline.
    pub trace: Option<PathBuf>,
    /// Things the user should know before the boot (e.g. KVM without VT-x).
    pub warnings: Vec<String>,
}

/// Parse the arguments (without the program name). `Ok(None)` = `--help`.
pub fn parse(args: Vec<String>) -> Result<Option<Options>, String> {
    let mut o = Options { machine: Machine::default(), kernel: None, profile: Profile::Dev, timeout: Some(Duration::from_secs(300)), mode: None, trace: None, warnings: Vec::new() };
    let mut explicit_timeout = false;
    let mut it = args.into_iter();
    let mut cmdline = Vec::new();
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value (see --help)"));
        match a.as_str() {
            "-h" | "--help" => return Ok(None),
            "--accel" => {
                let v = value("--accel")?;
                o.machine.accel = Accel::parse(&v).ok_or_else(|| format!("unknown accelerator `{v}`: use tcg, mttcg, kvm or auto"))?;
                if v == "kvm" {
                    o.warnings.extend(kvm_warning());
                }
            }
            "--smp" => {
                let v = value("--smp")?;
                o.machine.cpus = v.parse().ok().filter(|n| (1..=crate::machine::MAX_CPUS).contains(n)).ok_or_else(|| format!("--smp takes 1..={}, not `{v}`", crate::machine::MAX_CPUS))?;
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
            "--run" => {
                let v = value("--run")?;
                if v.is_empty() || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                    return Err(format!("--run takes a program name (letters, digits, - and _), not `{v}`"));
                }
                o.mode = Some("run");
                cmdline.push(format!("program={v}"));
            }
            "--cmdline" => cmdline.push(value("--cmdline")?),
            "--gdb" => o.machine.gdb = Some(DEFAULT_GDB_PORT),
            g if g.starts_with("--gdb=") => {
                let v = &g["--gdb=".len()..];
                o.machine.gdb = Some(v.parse().ok().filter(|p| *p > 0).ok_or_else(|| format!("--gdb=PORT takes a TCP port 1..=65535, not `{v}`"))?);
            }
            "--trace" => o.trace = Some(PathBuf::from(value("--trace")?)),
            "--kernel" => o.kernel = Some(PathBuf::from(value("--kernel")?)),
            "--release" => o.profile = Profile::Release,
            "--memory" => {
                let v = value("--memory")?;
                o.machine.memory_mib = v.parse().ok().filter(|m| (64..=65536).contains(m)).ok_or_else(|| format!("--memory takes MiB in 64..=65536, not `{v}`"))?;
            }
            "--disk" => {
                let v = value("--disk")?;
                o.machine.disk_mib = v.parse().ok().filter(|m| (1..=1 << 20).contains(m)).ok_or_else(|| format!("--disk takes MiB in 1..=1048576, not `{v}`"))?;
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
    // The timeline is made of debug lines: ask for them unless a level was given.
    if o.trace.is_some() && !cmdline.iter().any(|c| c.split_ascii_whitespace().any(|w| w.starts_with("log="))) {
        cmdline.push("log=debug".into());
    }
    o.machine.cmdline = cmdline.join(" ");
    if (o.mode == Some("console") || o.machine.gdb.is_some()) && !explicit_timeout {
        o.timeout = None;
    }
    Ok(Some(o))
}

/// The warning for `--accel kvm` on this host (tests can replace it).
fn kvm_warning() -> Option<String> {
    if let Ok(fake) = std::env::var("HMMOS_FAKE_CPUINFO") {
        return crate::prereq::kvm_warning(&fake, true);
    }
    crate::prereq::host_kvm_warning()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Option<Options>, String> {
        parse(args.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn defaults() {
        let o = p(&[]).unwrap().unwrap();
        assert_eq!(o.profile, Profile::Dev);
        assert_eq!(o.timeout, Some(Duration::from_secs(300)));
        assert_eq!(o.mode, None);
        assert_eq!(o.machine.cmdline, "");
        assert!(o.machine.gdb.is_none());
        assert!(o.trace.is_none());
        assert_eq!(o.machine.cpus, 2, "two CPUs by default");
    }

    #[test]
    fn processors() {
        assert_eq!(p(&["--smp", "4"]).unwrap().unwrap().machine.cpus, 4);
        assert_eq!(p(&["--smp", "1"]).unwrap().unwrap().machine.cpus, 1);
        for bad in ["0", "9", "-1", "two", "300"] {
            assert!(p(&["--smp", bad]).unwrap_err().contains("--smp takes 1..=8"), "{bad}");
        }
        assert_eq!(p(&["--accel", "mttcg"]).unwrap().unwrap().machine.accel, Accel::Mttcg);
    }

    #[test]
    fn run_a_program() {
        let o = p(&["--run", "hmm-tests"]).unwrap().unwrap();
        assert_eq!(o.mode, Some("run"));
        assert_eq!(o.machine.cmdline, "mode=run program=hmm-tests");
        assert!(p(&["--run", "a b"]).is_err(), "no spaces: one word on the kernel command line");
        assert!(p(&["--run", "x=y"]).is_err());
        assert!(p(&["--run"]).is_err());
    }

    #[test]
    fn help() {
        assert!(p(&["--help"]).unwrap().is_none());
        assert!(p(&["-h"]).unwrap().is_none());
        for opt in ["--accel", "--smp", "mttcg", "--gdb[=PORT]", "--cmdline", "--qemu-arg", "--console", "--bench", "--timeout", "--trace", "--run", "EXIT STATUS", "124"] {
            assert!(HELP.contains(opt), "--help lists {opt}");
        }
    }

    #[test]
    fn accelerators() {
        assert_eq!(p(&["--accel", "tcg"]).unwrap().unwrap().machine.accel, Accel::Tcg { icount_shift: None });
        assert_eq!(p(&["--accel", "kvm"]).unwrap().unwrap().machine.accel, Accel::Kvm);
        assert_eq!(p(&["--icount-shift", "3"]).unwrap().unwrap().machine.accel, Accel::Tcg { icount_shift: Some(3) });
        assert!(p(&["--accel", "xen"]).unwrap_err().contains("unknown accelerator `xen`"));
        assert!(p(&["--icount-shift", "99"]).is_err());
        assert!(p(&["--accel"]).unwrap_err().contains("needs a value"));
    }

    #[test]
    fn modes_cmdline_and_timeouts() {
        let o = p(&["--console", "--cmdline", "log=debug"]).unwrap().unwrap();
        assert_eq!(o.machine.cmdline, "mode=console log=debug");
        assert_eq!(o.timeout, None, "an interactive console never times out");
        let o = p(&["--console", "--timeout", "5"]).unwrap().unwrap();
        assert_eq!(o.timeout, Some(Duration::from_secs(5)), "unless asked");
        let o = p(&["--bench"]).unwrap().unwrap();
        assert_eq!(o.profile, Profile::Release);
        assert_eq!(o.machine.accel, Accel::Tcg { icount_shift: Some(0) }, "benchmarks count instructions");
        assert_eq!(p(&["--gdb"]).unwrap().unwrap().timeout, None);
    }

    #[test]
    fn gdb_port_and_trace() {
        assert_eq!(p(&["--gdb"]).unwrap().unwrap().machine.gdb, Some(1234));
        assert_eq!(p(&["--gdb=4321"]).unwrap().unwrap().machine.gdb, Some(4321));
        assert!(p(&["--gdb=none"]).unwrap_err().contains("TCP port"));
        assert!(p(&["--gdb=0"]).is_err());
        let o = p(&["--trace", "/tmp/t.json"]).unwrap().unwrap();
        assert_eq!(o.trace.as_deref(), Some(std::path::Path::new("/tmp/t.json")));
        assert_eq!(o.machine.cmdline, "log=debug", "a timeline needs the debug lines");
        let o = p(&["--trace", "t.json", "--cmdline", "log=trace"]).unwrap().unwrap();
        assert_eq!(o.machine.cmdline, "log=trace", "unless a level was asked for");
    }

    #[test]
    fn kvm_warns_without_hardware_virtualisation() {
        // The warning itself is tested in prereq; here: only `kvm` asks for it.
        let o = p(&["--accel", "tcg"]).unwrap().unwrap();
        assert!(o.warnings.is_empty());
        let o = p(&["--accel", "kvm"]).unwrap().unwrap();
        assert_eq!(o.warnings, kvm_warning().into_iter().collect::<Vec<_>>());
    }

    #[test]
    fn extra_qemu_args_and_errors() {
        let o = p(&["--qemu-arg", "-d", "--", "-trace", "vtd_*"]).unwrap().unwrap();
        assert_eq!(o.machine.extra_args, ["-d", "-trace", "vtd_*"]);
        assert!(p(&["--frobnicate"]).unwrap_err().contains("unknown option `--frobnicate`"));
        assert!(p(&["--memory", "1"]).is_err());
        assert!(p(&["--timeout", "soon"]).is_err());
    }

    #[test]
    fn machine_command_line() {
        let m = Machine { accel: Accel::Tcg { icount_shift: None }, ..Machine::default() };
        let cmd = m.command(std::path::Path::new("/k.elf"));
        let args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        let joined = args.join(" ");
        for needle in [
            "-machine q35",
            "-icount shift=auto,sleep=off",
            "intel-iommu,aw-bits=48",
            "edu,addr=01.0,dma_mask=0xffffffffffffffff",
            "edu,addr=02.0,dma_mask=0xffffffffffffffff",
            "isa-debug-exit,iobase=0xf4,iosize=0x04",
            "-serial stdio",
            "-display none",
            "-no-reboot",
            "-kernel /k.elf",
            "-smp 2",
        ] {
            assert!(joined.contains(needle), "QEMU command has `{needle}`: {joined}");
        }
        let k = Machine { accel: Accel::Kvm, gdb: Some(4321), ..Machine::default() };
        let joined: Vec<String> = k.command(std::path::Path::new("/k")).get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert!(joined.join(" ").contains("-accel kvm"));
        assert!(joined.iter().any(|a| a == "-S"), "--gdb waits for the debugger");
        assert!(joined.join(" ").contains("-gdb tcp:127.0.0.1:4321"), "gdb listens on localhost only: {joined:?}");
        assert!(!joined.iter().any(|a| a == "-s"), "-s would listen on every interface");
    }
}
