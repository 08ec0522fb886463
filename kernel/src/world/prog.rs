//! Console commands on user programs: `run` a program in ring 3 (in the
//! foreground, or in the background with a trailing `&`), `wait` for a
//! background one, `stop` ends one, `programs` lists what is embedded. `ps` (in `mem`)
//! lists user processes with their state beside the console's own.

use super::World;
use crate::proc;
use crate::shell::{fail, Args, Out, ShellError};
use alloc::vec::Vec;

pub fn run(_: &mut World, a: &mut Args<'_>, out: Out<'_>) -> Result<(), ShellError> {
    let program = a.word("program")?;
    let mut words: Vec<&str> = Vec::new();
    while let Some(w) = a.opt_word() {
        words.push(w);
    }
    a.done()?;
    let background = words.last() == Some(&"&");
    if background {
        words.pop();
    }
    let args = words.join(" ");
    let pid = proc::spawn(program, args.as_bytes()).map_err(|e| fail(alloc::format!("cannot run `{program}`: {e}")))?;
    if background {
        let _ = writeln!(out, "process {pid} ({program}) started in the background (`ps`, `wait {pid}`)");
        return Ok(());
    }
    report(out, pid, program)
}

pub fn wait(_: &mut World, a: &mut Args<'_>, out: Out<'_>) -> Result<(), ShellError> {
    let n = a.number("pid")?;
    a.done()?;
    let pid = proc::Pid::try_from(n).map_err(|_| fail(alloc::format!("no user process {n}")))?;
    if !proc::list().iter().any(|(p, _, _)| *p == pid) {
        return Err(fail(alloc::format!("no user process {pid} (see `ps`)")));
    }
    if !proc::is_kernel_child(pid) {
        return Err(fail(alloc::format!("process {pid} is another process's child: its parent reaps it")));
    }
    report(out, pid, "")
}

fn report(out: Out<'_>, pid: proc::Pid, program: &str) -> Result<(), ShellError> {
    let info = proc::wait_exit(pid).ok_or_else(|| fail(alloc::format!("process {pid} is gone")))?;
    let _ = write!(out, "process {pid}{}{} exited with status {}", if program.is_empty() { "" } else { " " }, program, info.status);
    match info.report {
        Some(r) => {
            let _ = writeln!(out, ": {r}");
        }
        None => {
            let _ = writeln!(out);
        }
    }
    Ok(())
}

pub fn stop(_: &mut World, a: &mut Args<'_>, out: Out<'_>) -> Result<(), ShellError> {
    let n = a.number("pid")?;
    a.done()?;
    let pid = proc::Pid::try_from(n).map_err(|_| fail(alloc::format!("no user process {n}")))?;
    if !proc::kill(pid) {
        return Err(fail(alloc::format!("no running user process {pid} (see `ps`)")));
    }
    let _ = writeln!(out, "process {pid} told to end (status -9 at its next return to ring 3)");
    Ok(())
}

pub fn programs(_: &mut World, a: &mut Args<'_>, out: Out<'_>) -> Result<(), ShellError> {
    a.done()?;
    for (name, image) in proc::programs::PROGRAMS {
        let _ = writeln!(out, "  {name:<12} {} bytes of ELF", image.len());
    }
    Ok(())
}

/// The user-process part of `ps`.
pub fn ps_user(out: Out<'_>) {
    let list = proc::list();
    if list.is_empty() {
        return;
    }
    let _ = writeln!(out, "user processes (ring 3):");
    for (pid, name, state) in list {
        let _ = writeln!(out, "  pid {pid:<4} {name:<12} {state}");
    }
    for cpu in crate::cpus::online().iter() {
        let c = crate::sched::of(cpu);
        let _ = writeln!(out, "  {cpu}: {} context switches, {} timer preemptions", c.switches.load(core::sync::atomic::Ordering::Relaxed), c.preemptions.load(core::sync::atomic::Ordering::Relaxed));
    }
}
