//! The console and user programs: `run` in the foreground and in the
//! background, `ps` with user processes and their state, `wait`, a
//! segfault reported on the console, and bad lines that are errors.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::string::String;
use kernel::world::{World, SHELL};

kernel::entry!(main);

fn main(_: &'static kernel::BootInfo) -> ! {
    kernel::testing::run("user_console", kernel::tests![run_ps_wait]);
}

fn exec(w: &mut World, line: &str) -> Result<String, String> {
    let mut out = String::new();
    match SHELL.execute(w, line, &mut out) {
        Ok(_) => Ok(out),
        Err(e) => Err(alloc::format!("{e}")),
    }
}

fn run_ps_wait() {
    let mut w = World::default();
    let out = exec(&mut w, "run hello from the console").expect("run hello");
    assert!(out.contains("exited with status 0"), "{out}");
    let out = exec(&mut w, "run segv null").expect("run segv");
    assert!(out.contains("exited with status -11: segfault: read at 0x0: no mapping there"), "{out}");
    let out = exec(&mut w, "run spin 40 &").expect("background");
    assert!(out.contains("started in the background"), "{out}");
    let pid: u32 = out.split_whitespace().nth(1).and_then(|p| p.parse().ok()).expect("a pid");
    let _ = exec(&mut w, "run ticker 2 &").expect("background ticker");
    let ps = exec(&mut w, "ps").expect("ps");
    kernel::println!("{ps}");
    assert!(ps.contains("user processes (ring 3):"), "{ps}");
    assert!(ps.contains(&alloc::format!("pid {pid:<4} spin")), "ps lists the spinner: {ps}");
    assert!(ps.contains("ready") || ps.contains("sleeping") || ps.contains("running"), "ps shows states: {ps}");
    let out = exec(&mut w, &alloc::format!("wait {pid}")).expect("wait");
    assert!(out.contains("exited with status 0"), "{out}");
    assert!(exec(&mut w, &alloc::format!("wait {pid}")).is_err(), "reaped already");
    let ps = exec(&mut w, "ps").expect("ps");
    assert!(!ps.contains(&alloc::format!("pid {pid:<4} spin")), "reaped: {ps}");
    let out = exec(&mut w, "run spin 100000 &").expect("a long hog");
    let hog: u32 = out.split_whitespace().nth(1).and_then(|p| p.parse().ok()).expect("a pid");
    assert!(exec(&mut w, &alloc::format!("stop {hog}")).expect("stop").contains("told to end"));
    let out = exec(&mut w, &alloc::format!("wait {hog}")).expect("wait");
    assert!(out.contains("exited with status -9: killed"), "{out}");
    assert!(exec(&mut w, &alloc::format!("stop {hog}")).is_err(), "gone");
    assert!(exec(&mut w, "run no-such-program").unwrap_err().contains("no such program"));
    assert!(exec(&mut w, "run").is_err());
    assert!(exec(&mut w, "wait 99999999999").is_err());
    let progs = exec(&mut w, "programs").expect("programs");
    assert!(progs.contains("hmm-tests") && progs.contains("hello"), "{progs}");
}
