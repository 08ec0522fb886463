//! What `cargo run` does: the guided demo exits 0 with every check held;
//! the `hmm> ` console, scripted (`--console < scripts/console-tour.txt`),
//! runs every kind of command (and some bad lines) and exits 0.

use std::process::{Command, Stdio};

fn run_console(script: &str) -> (i32, String) {
    let root = launcher::workspace_root();
    let out = Command::new(env!("CARGO_BIN_EXE_hmmos"))
        .args(["--console", "--accel", "tcg", "--timeout", "120"])
        .current_dir(&root)
        .stdin(std::fs::File::open(root.join(script)).expect("script exists"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run the launcher");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn the_console_tour_runs_and_bad_lines_are_one_line_errors() {
    let (code, out) = run_console("scripts/console-tour.txt");
    assert_eq!(code, 0, "the console exits cleanly:\n{out}");
    for expected in [
        "process 1",
        "mapped 0x20000000..0x20010000 rw- (16 pages)",
        "AAAAAAAAAAAAAAAA",
        "1 device faults resolved and replayed, 16 pages populated",
        "0x000020000000 rrrrrrrrrrrrrrrr",
        "hello-from-the-d",
        "0x000020000000 dddddddddddddddd",
        "process 2 is a copy-on-write child of 1",
        "parent-wrote-thi",
        "ok: 8 bytes at 0x20000000 are 0x41",
        "PT   [  0] = 0x0000000000000200  swapped out, slot 0",
        "error: device write at 0x20000000 failed: not permitted by the mapping's protection",
        "error: device read at 0x20004000 failed: no mapping there",
        "error: unknown command `frobnicate` (try `help`)",
        "error: missing <len>; usage: mmap <pid> <len> [r|rw|rx|rwx] [at=<addr>] [fixed]",
        "0x000020000000 rdxd!rrrrrrrrrrr",
        "0x000020000000 rd.d!rrrrrrrrrrr",
        "IOTLB flushes",
        "error: device read at 0x20000000 failed: the process's mirror is gone",
    ] {
        assert!(out.contains(expected), "console output lacks `{expected}`:\n{out}");
    }
    assert_eq!(out.matches("\nerror: ").count(), 6, "exactly the six bad lines failed:\n{out}");
}

#[test]
fn help_lists_every_command() {
    let (code, out) = run_console("scripts/console-help.txt");
    assert_eq!(code, 0);
    for cmd in ["spawn", "ps", "kill", "mmap", "munmap", "mprotect", "fork", "migrate", "swapout", "write", "read", "fill", "check", "bind", "unbind", "dread", "dwrite", "dfill", "dcopy", "exclusive", "prefault", "walk", "mirror", "stats", "help", "exit"] {
        assert!(out.contains(&format!("\n  {cmd}")), "help lists `{cmd}`:\n{out}");
    }
}

#[test]
fn the_guided_demo_holds_every_check() {
    let out = Command::new(env!("CARGO_BIN_EXE_hmmos"))
        .args(["--accel", "tcg", "--timeout", "120"])
        .current_dir(launcher::workspace_root())
        .stdin(Stdio::null())
        .output()
        .expect("run the launcher");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "the demo exits 0:\n{text}");
    assert!(text.contains(" checks held, 0 failed."), "{text}");
    assert!(!text.contains("FAILED"), "{text}");
    for step in ["1. The device reads", "3. fork()", "5. The kernel swaps", "9. accel0 takes exclusive", "10. Process A exits."] {
        assert!(text.contains(step), "the demo narrates `{step}`");
    }
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
