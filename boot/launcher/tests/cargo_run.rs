//! What `cargo run` does, through the launcher binary itself:
//!
//! * the guided demo exits 0 with every check held;
//! * the `hmm> ` console, scripted (`--console < scripts/console-tour.txt`),
//!   runs every kind of command (and some bad lines) and exits 0; a script
//!   over 1 MiB streams to its end; a script without `exit` ends when it does;
//! * set-up: a missing QEMU is one line with the install command, before
//!   any build, for `cargo run` and for `cargo test`'s kernel harness;
//! * verdicts: a bad QEMU argument, a missing kernel file and a busy gdb
//!   port are start-up failures (status 6); a gdb `kill` ends the session
//!   with status 8; `--accel kvm` warns without VT-x/AMD-V;
//! * `--trace FILE` writes a Chrome trace-event timeline of device faults.
//!
//! (Panics, CPU exceptions, triple faults and timeouts are judged in
//! `tests/kernels.rs`, by the `harness_*` kernels.)
//!
//! Tests that boot need QEMU; without it they return at once, and the
//! kernel harness (`tests/kernels.rs`) reports the missing QEMU, once.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn have_qemu() -> bool {
    launcher::prereq::qemu().is_ok()
}

/// The demo kernel, built once for every test here.
fn kernel() -> &'static Path {
    static K: OnceLock<PathBuf> = OnceLock::new();
    K.get_or_init(|| launcher::build_kernels("kernel", Some("hmmos-kernel"), launcher::Profile::Dev).expect("the kernel builds").remove(0).path)
}

struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
    wall: Duration,
}

/// Run the launcher with `args`, `stdin` as its input, and extra environment.
fn launch(args: &[&str], stdin: Option<Vec<u8>>, env: &[(&str, &std::ffi::OsStr)]) -> Ran {
    let start = Instant::now();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hmmos"));
    cmd.args(args).current_dir(launcher::workspace_root()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("run the launcher");
    // Feed stdin from its own thread: a big script must not block us.
    let feeder = stdin.map(|bytes| {
        let mut pipe = child.stdin.take().unwrap();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&bytes);
        })
    });
    let out = child.wait_with_output().expect("wait for the launcher");
    if let Some(f) = feeder {
        let _ = f.join();
    }
    Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        wall: start.elapsed(),
    }
}

fn run_console(script: &str) -> (i32, String) {
    let root = launcher::workspace_root();
    let bytes = std::fs::read(root.join(script)).expect("script exists");
    let r = launch(&["--console", "--accel", "tcg", "--timeout", "120", "--kernel", kernel().to_str().unwrap()], Some(bytes), &[]);
    (r.code, r.stdout)
}

#[test]
fn the_console_tour_runs_and_bad_lines_are_one_line_errors() {
    if !have_qemu() {
        return;
    }
    let (code, out) = run_console("scripts/console-tour.txt");
    assert_eq!(code, 0, "the console exits cleanly:\n{out}");
    for expected in [
        "process 1",
        "mapped 0x20000000..0x20010000 rw- (16 pages)",
        "AAAAAAAAAAAAAAAA",
        // Prefault mirrors only the resident neighbours (2 of 16 here).
        "1 device faults resolved and replayed, 2 pages populated",
        "0x000020000000 rr..............",
        "hello-from-the-d",
        // The device write dirtied exactly the written page.
        "0x000020000000 wd..............",
        "process 2 is a copy-on-write child of 1",
        "parent-wrote-thi",
        "ok: 8 bytes at 0x20000000 are 0x41",
        "PT   [  0] = 0x0000000000000200  swapped out, slot 0",
        "error: device write at 0x20000000 failed: not permitted by the mapping's protection",
        "error: device read at 0x20004000 failed: no mapping there",
        "error: unknown command `frobnicate` (try `help`)",
        "error: missing <len>; usage: mmap <pid> <len> [r|rw|rx|rwx|none] [at=<addr>] [fixed]",
        "0x000020000000 r.x.!...........",
        "0x000020000000 r...!...........",
        "IOTLB flushes",
        "error: device read at 0x20000000 failed: the process's mirror is gone",
    ] {
        assert!(out.contains(expected), "console output lacks `{expected}`:\n{out}");
    }
    assert_eq!(out.matches("\nerror: ").count(), 6, "exactly the six bad lines failed:\n{out}");
}

#[test]
fn help_lists_every_command() {
    if !have_qemu() {
        return;
    }
    let (code, out) = run_console("scripts/console-help.txt");
    assert_eq!(code, 0);
    for cmd in ["spawn", "ps", "kill", "mmap", "munmap", "mprotect", "fork", "migrate", "swapout", "write", "read", "fill", "check", "bind", "unbind", "dread", "dwrite", "dfill", "dcopy", "exclusive", "prefault", "walk", "walk2", "trace", "snapshot", "mirror", "stats", "help", "exit"] {
        assert!(out.contains(&format!("\n  {cmd}")), "help lists `{cmd}`:\n{out}");
    }
}

#[test]
fn the_guided_demo_holds_every_check() {
    if !have_qemu() {
        return;
    }
    let r = launch(&["--accel", "tcg", "--timeout", "120"], None, &[]);
    let text = &r.stdout;
    assert_eq!(r.code, 0, "the demo exits 0:\n{text}\n{}", r.stderr);
    assert!(text.contains(" checks held, 0 failed."), "{text}");
    assert!(!text.contains("FAILED"), "{text}");
    for step in ["1. The device reads", "3. fork()", "5. The kernel swaps", "9. accel0 takes exclusive", "10. Process A exits."] {
        assert!(text.contains(step), "the demo narrates `{step}`");
    }
    assert!(r.stderr.contains("hmmos: building the kernel"), "the build is announced:\n{}", r.stderr);
    assert!(r.stderr.contains("Finished `dev` profile"), "the nested build is not --quiet: its progress shows:\n{}", r.stderr);
}

/// A script of at least `size` bytes: data written first, `ps` and comment
/// lines, then a check of the data and a marker.
fn big_script(size: usize) -> (Vec<u8>, usize) {
    let mut s = String::from("spawn\nmmap 1 64K rw at=0x20000000\nfill 1 0x20000000 4K 0x41\n");
    let mut ps = 0;
    let mut i = 0;
    while s.len() < size {
        if i % 20 == 0 {
            s.push_str("ps\n");
            ps += 1;
        } else {
            s.push_str(&format!("# filler {i:06}: a console script of any size streams to its end ......\n"));
        }
        i += 1;
    }
    s.push_str("check 1 0x20000000 4K 0x41\nwrite 1 0x20001000 end-of-the-big-script\nread 1 0x20001000 21\nexit\n");
    (s.into_bytes(), ps)
}

#[test]
fn a_script_over_a_mebibyte_streams_to_its_end() {
    if !have_qemu() {
        return;
    }
    let (script, ps) = big_script(1 << 20);
    assert!(script.len() >= 1 << 20);
    let r = launch(&["--console", "--accel", "tcg", "--timeout", "400", "--kernel", kernel().to_str().unwrap()], Some(script), &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stderr, &r.stdout[r.stdout.len().saturating_sub(3000)..]);
    assert!(r.stdout.contains("ok: 4096 bytes at 0x20000000 are 0x41"), "the data check after 1 MiB of script ran");
    assert!(r.stdout.contains("end-of-the-big-scr"), "the last lines ran");
    assert_eq!(r.stdout.matches("hmm> ps").count(), ps, "every `ps` line ran");
    assert!(!r.stderr.contains("sending `exit`"), "the script had its own exit");
}

#[test]
fn a_script_without_exit_ends_when_stdin_closes() {
    if !have_qemu() {
        return;
    }
    let r = launch(&["--console", "--accel", "tcg", "--kernel", kernel().to_str().unwrap()], Some(b"spawn\nps\n# no exit here".to_vec()), &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("process 1"), "{}", r.stdout);
    assert!(r.stderr.contains("the script ended without `exit`: sending `exit`"), "the user is told:\n{}", r.stderr);
    assert!(r.wall < Duration::from_secs(60), "no waiting for a timeout: {:?}", r.wall);
}

fn empty_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hmmos-cargo-run-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn a_missing_qemu_is_one_line_before_any_build() {
    let nothing = empty_dir("path");
    // No --kernel: the check must come before the (nested cargo) build.
    let r = launch(&[], None, &[("PATH", nothing.as_os_str())]);
    assert_eq!(r.code, launcher::status::SETUP, "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "one line:\n{}", r.stderr);
    assert!(r.stderr.contains("apt-get install qemu-system-x86"), "{}", r.stderr);
    assert!(r.stdout.is_empty());

    // cargo test's kernel harness: the same single line, before building.
    let deps = std::env::current_exe().unwrap().parent().unwrap().to_path_buf();
    let harness = std::fs::read_dir(&deps)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("kernels-")) && p.extension().is_none())
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok());
    if let Some(harness) = harness {
        let out = Command::new(&harness).env("PATH", &nothing).stdin(Stdio::null()).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert_eq!(err.lines().count(), 1, "one line:\n{err}");
        assert!(err.contains("apt-get install qemu-system-x86"), "{err}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("running"), "nothing was built or booted");
    }
}

#[test]
fn qemu_start_up_failures_are_their_own_verdict() {
    if !have_qemu() {
        return;
    }
    let k = kernel().to_str().unwrap();
    let r = launch(&["--kernel", k, "--accel", "tcg", "--timeout", "60", "--", "-frobnicate"], None, &[]);
    assert_eq!(r.code, launcher::status::QEMU_START, "{}", r.stderr);
    assert!(r.stderr.contains("QEMU could not start: QEMU refused an argument") && r.stderr.contains("-frobnicate"), "{}", r.stderr);
    assert!(!r.stderr.contains("reported failure"), "{}", r.stderr);

    let r = launch(&["--kernel", "/nonexistent/hmmos-kernel", "--accel", "tcg"], None, &[]);
    assert_eq!(r.code, launcher::status::QEMU_START, "{}", r.stderr);
    assert!(r.stderr.contains("the kernel file /nonexistent/hmmos-kernel does not exist"), "{}", r.stderr);

    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let r = launch(&["--kernel", k, "--accel", "tcg", "--timeout", "60", &format!("--gdb={port}")], None, &[]);
    assert_eq!(r.code, launcher::status::QEMU_START, "{}", r.stderr);
    assert!(r.stderr.contains(&format!("the gdb port {port} is busy")), "{}", r.stderr);
    drop(busy);
}

#[test]
fn a_gdb_kill_ends_the_session_with_its_own_verdict() {
    if !have_qemu() {
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hmmos"))
        .args(["--kernel", kernel().to_str().unwrap(), "--accel", "tcg", "--timeout", "60", &format!("--gdb={port}")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Speak gdb's remote protocol: `k` (kill), as gdb's `kill` command does.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut conn = loop {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(c) => break c,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("QEMU's gdb stub never listened on 127.0.0.1:{port}: {e}"),
        }
    };
    conn.write_all(b"$k#6b").unwrap();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(launcher::status::GDB_ENDED), "{err}");
    assert!(err.contains("the debugger ended the session"), "{err}");
    assert!(err.contains(&format!("QEMU waits for gdb on 127.0.0.1:{port}")), "{err}");
    assert!(!err.contains("triple fault"), "{err}");
}

#[test]
fn kvm_without_hardware_virtualisation_warns() {
    let r = launch(&["--accel", "kvm", "--kernel", "/nonexistent/k"], None, &[("HMMOS_FAKE_CPUINFO", std::ffi::OsStr::new("flags : fpu sse hypervisor"))]);
    assert!(r.stderr.contains("warning: --accel kvm but this host's CPU has no VT-x/AMD-V"), "{}", r.stderr);
    let r = launch(&["--accel", "kvm", "--kernel", "/nonexistent/k"], None, &[("HMMOS_FAKE_CPUINFO", std::ffi::OsStr::new("flags : fpu vmx"))]);
    assert!(!r.stderr.contains("warning"), "{}", r.stderr);
}

#[test]
fn trace_writes_a_timeline_of_device_faults_and_walk2_shows_both_sides() {
    if !have_qemu() {
        return;
    }
    let json = std::env::temp_dir().join(format!("hmmos-timeline-{}.json", std::process::id()));
    let script = b"spawn\nmmap 1 64K rw at=0x20000000\nbind 0 1\ndread 0 0x20000000 16\ndwrite 0 0x20001000 hi\nwalk2 0 0x20001000\nmunmap 1 0x20000000 16K\nwalk2 0 0x20000000\ntrace on\ndread 0 0x20008000 4\ntrace off\nexit\n";
    let r = launch(&["--console", "--accel", "tcg", "--timeout", "120", "--kernel", kernel().to_str().unwrap(), "--trace", json.to_str().unwrap()], Some(script.to_vec()), &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    // log=debug: one line per HMM event, stamped.
    for line in ["] fault.begin accel=0 va=0x20000000 access=read", "] fault.round va=0x20000000", "] replay accel=0 iova=0x20000000", "] inval kind=Unmap event=MUNMAP range=0x20000000..0x20004000 mask=invalid", "] iotlb did=1 scope=page addr=0x20000000 am=2 pages=4"] {
        assert!(r.stdout.contains(line), "debug output has `{line}`:\n{}", r.stdout);
    }
    // trace on: per entry.
    assert!(r.stdout.contains("[TRACE @") && r.stdout.contains("] dma accel=0 iova=0x20008000 len=4 dir=to-device"), "{}", r.stdout);
    // walk2: both walks end at the same frame, with each side's permissions.
    assert!(r.stdout.contains("same frame 0x") && r.stdout.contains("the device may read and write"), "{}", r.stdout);
    assert!(r.stdout.contains("R W dirty"), "{}", r.stdout);
    assert!(r.stdout.contains("(not present: a device access faults)"), "after munmap the device's walk ends:\n{}", r.stdout);
    assert!(r.stderr.contains("HMM events to "), "{}", r.stderr);

    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).expect("the timeline was written")).expect("valid JSON");
    let _ = std::fs::remove_file(&json);
    let events = doc["traceEvents"].as_array().expect("traceEvents");
    let count = |name: &str, ph: &str| events.iter().filter(|e| e["name"] == name && e["ph"] == ph).count();
    // dread, dwrite (its page was never touched: the honest prefault does
    // not populate it), dread after trace on: three device faults, each a span.
    assert_eq!(count("fault", "B"), 3, "three device faults, each a span");
    assert_eq!(count("fault", "E"), 3);
    assert!(count("replay", "i") >= 2 && count("inval", "i") >= 1 && count("iotlb", "i") >= 1);
    let ts: Vec<f64> = events.iter().filter(|e| e["ph"] != "M").map(|e| e["ts"].as_f64().unwrap()).collect();
    assert!(ts.windows(2).all(|w| w[0] <= w[1]), "time only moves forward");
    assert!(events.iter().any(|e| e["name"] == "thread_name" && e["args"]["name"] == "accel 0"));
}

#[test]
fn user_programs_from_the_console() {
    let (code, out) = run_console("scripts/console-programs.txt");
    assert_eq!(code, 0, "the console exits cleanly:\n{out}");
    for expected in [
        "hmm-tests",
        "hello from ring 3: pid 1, args \"world\"",
        "process 1 hello exited with status 0",
        "process 2 (spin) started in the background",
        "user processes (ring 3):",
        "pid 2    spin",
        "process 2 exited with status 0",
        "process 3 segv exited with status -11: segfault: read at 0x0: no mapping there",
    ] {
        assert!(out.contains(expected), "console output lacks `{expected}`:\n{out}");
    }
}

#[test]
fn run_hmm_tests_for_a_person() {
    let root = launcher::workspace_root();
    let out = Command::new(env!("CARGO_BIN_EXE_hmmos"))
        .args(["--run", "hmm-tests", "--accel", "tcg", "--timeout", "120"])
        .current_dir(&root)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run the launcher");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "hmm-tests passed:\n{text}");
    assert!(text.contains("TAP version 13") && text.contains("ok 1 - hmm.open_close"), "TAP lines:\n{text}");
    assert!(text.contains("# hmm-tests: 39 passed, 0 failed, 9 skipped"), "the tally:\n{text}");
}
