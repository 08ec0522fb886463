//! The console's world: processes (address spaces with HMM attached) and
//! the accelerators, and the `hmm> ` command table.
//!
//! Commands are split by what they touch: [`mem`] (processes and their
//! memory, as the CPU sees it), [`dev`] (accelerators: binding, jobs,
//! exclusive access), [`view`] (page-table walks, mirror snapshots,
//! statistics).

pub mod dev;
pub mod mem;
pub mod prog;
pub mod view;

use crate::aspace::AddressSpace;
use crate::hmmdev::ProcessHmm;
use crate::shell::{fail, Args, Command, Shell, ShellError};
use alloc::collections::BTreeMap;
use alloc::sync::Arc;

/// A process: an address space with HMM attached.
pub struct Process {
    pub aspace: Arc<AddressSpace>,
    pub hmm: ProcessHmm,
}

impl Process {
    pub fn new() -> Result<Process, crate::mm::frames::OutOfFrames> {
        let aspace = AddressSpace::new()?;
        let hmm = ProcessHmm::attach(&aspace);
        Ok(Process { aspace, hmm })
    }

    pub fn from_aspace(aspace: Arc<AddressSpace>) -> Process {
        let hmm = ProcessHmm::attach(&aspace);
        Process { aspace, hmm }
    }
}

/// Everything the console works on.
#[derive(Default)]
pub struct World {
    pub procs: BTreeMap<u32, Process>,
    next_pid: u32,
}

impl World {
    /// Add a process; returns its pid.
    pub fn add(&mut self, p: Process) -> Pid {
        // Pids count up from 1 and are not reused while the counter lasts;
        // after 2^32 spawns it wraps, skipping 0 and every live pid (there
        // cannot be 2^32 live processes: each holds page-table frames).
        loop {
            self.next_pid = self.next_pid.checked_add(1).unwrap_or(1);
            if !self.procs.contains_key(&self.next_pid) {
                break;
            }
        }
        self.procs.insert(self.next_pid, p);
        self.next_pid
    }

    pub(crate) fn proc(&self, pid: Pid) -> Result<&Process, ShellError> {
        self.procs.get(&pid).ok_or_else(|| no_process(pid))
    }
}

/// A process id as the console names it.
pub type Pid = u32;

/// The one message for a pid that names no process.
pub(crate) fn no_process(pid: impl core::fmt::Display) -> ShellError {
    fail(alloc::format!("no process {pid} (see `ps`)"))
}

/// Parse `<pid>`: a number that fits a pid (a larger one names no process;
/// it is never cut down to one that does).
pub(crate) fn pid(a: &mut Args<'_>) -> Result<Pid, ShellError> {
    let n = a.number("pid")?;
    Pid::try_from(n).map_err(|_| no_process(n))
}

/// The console's commands.
pub static COMMANDS: &[Command<World>] = &[
    Command { name: "spawn", usage: "spawn", about: "create a process (an empty address space with HMM attached)", run: mem::spawn },
    Command { name: "ps", usage: "ps", about: "list processes (console address spaces, and user processes with their state)", run: mem::ps },
    Command { name: "run", usage: "run <program> [args...] [&]", about: "run a user program in ring 3 (`&`: in the background)", run: prog::run },
    Command { name: "wait", usage: "wait <pid>", about: "wait for a background user process and reap it", run: prog::wait },
    Command { name: "stop", usage: "stop <pid>", about: "end a user process (it exits with status -9)", run: prog::stop },
    Command { name: "programs", usage: "programs", about: "list the user programs embedded in the kernel", run: prog::programs },
    Command { name: "kill", usage: "kill <pid>", about: "exit a process: mirrors torn down, memory freed", run: mem::kill },
    Command { name: "mmap", usage: "mmap <pid> <len> [r|rw|rx|rwx|none] [at=<addr>] [fixed]", about: "map anonymous zero-filled memory", run: mem::mmap },
    Command { name: "munmap", usage: "munmap <pid> <addr> <len>", about: "unmap a page-aligned range (areas split)", run: mem::munmap },
    Command { name: "mprotect", usage: "mprotect <pid> <addr> <len> r|rw|rx|rwx|none", about: "change protection (areas split and merge)", run: mem::mprotect },
    Command { name: "fork", usage: "fork <pid>", about: "copy-on-write child; prints its pid", run: mem::fork },
    Command { name: "migrate", usage: "migrate <pid> <addr>", about: "move a page to another frame", run: mem::migrate },
    Command { name: "swapout", usage: "swapout <pid> <addr> <len>", about: "swap out resident pages of a range", run: mem::swapout },
    Command { name: "write", usage: "write <pid> <addr> <text>", about: "CPU writes text into the process", run: mem::write },
    Command { name: "read", usage: "read <pid> <addr> <len>", about: "CPU reads and dumps process memory", run: mem::read },
    Command { name: "fill", usage: "fill <pid> <addr> <len> <byte>", about: "CPU fills a range with a byte", run: mem::fill },
    Command { name: "check", usage: "check <pid> <addr> <len> <byte>", about: "CPU checks a range holds a byte (error if not)", run: mem::check },
    Command { name: "bind", usage: "bind <accel> <pid> [ro|rw]", about: "add a context: the process mirrored on the accelerator (its own VT-d domain = its mirror)", run: dev::bind },
    Command { name: "unbind", usage: "unbind <accel> [<pid>]", about: "remove one process's context (or all): the others keep working", run: dev::unbind },
    Command { name: "dread", usage: "dread <accel>[/<pid>] <addr> <len>", about: "device job: read process memory (hex dump)", run: dev::dread },
    Command { name: "dwrite", usage: "dwrite <accel>[/<pid>] <addr> <text>", about: "device job: write text into process memory", run: dev::dwrite },
    Command { name: "dfill", usage: "dfill <accel>[/<pid>] <addr> <len> <byte>", about: "device job: fill process memory with a byte", run: dev::dfill },
    Command { name: "dcopy", usage: "dcopy <accel>[/<pid>] <dst> <src> <len>", about: "device job: copy within process memory", run: dev::dcopy },
    Command { name: "exclusive", usage: "exclusive <accel>[/<pid>] <addr> <len>", about: "give the device exclusive (atomic) access to a range", run: dev::exclusive },
    Command { name: "prefault", usage: "prefault <pid> <pages>", about: "device-fault prefault window (1 = off)", run: dev::prefault },
    Command { name: "walk", usage: "walk <pid> <addr>", about: "walk the CPU page table, each level decoded", run: view::walk },
    Command { name: "walk2", usage: "walk2 <accel>[/<pid>] <addr>", about: "CPU walk and device (VT-d) walk of one address, side by side", run: view::walk2 },
    Command { name: "trace", usage: "trace on|events|off", about: "log every entry (on), every HMM event (events), or neither (off)", run: view::trace },
    Command { name: "snapshot", usage: "snapshot <accel>[/<pid>] <addr> <pages>", about: "what the device would see per page, faulting nothing: - hole n none . absent 0 zero r/w s swapped x excl", run: view::snapshot },
    Command { name: "mirror", usage: "mirror <accel>[/<pid>] <addr> <pages>", about: "mirror snapshot: . none  r read  w write  d dirty  x exclusive  ! fault failed", run: view::mirror },
    Command { name: "stats", usage: "stats", about: "faults, retries, invalidations, IOTLB flushes, pages mirrored", run: view::stats },
];

/// The console shell.
pub static SHELL: Shell<World> = Shell::new(COMMANDS);
