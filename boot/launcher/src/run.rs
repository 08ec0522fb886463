//! Running a kernel in QEMU, with a timeout, and judging how it ended.
//!
//! A session has up to three threads besides the one waiting for QEMU:
//!
//! * the **serial reader** forwards QEMU's stdout (the guest's COM1) as it
//!   comes — or collects it, for `cargo test` — and watches each line: the
//!   console's ready line, a `PANIC`/`EXCEPTION` report, backtrace lines
//!   (symbolized, see [`crate::symbolize`]) and stamped HMM events (for the
//!   timeline, see [`crate::timeline`]);
//! * the **stderr reader** forwards QEMU's own messages and keeps them, to
//!   tell a start-up failure or a gdb `kill` from a guest's end;
//! * the **script writer** (`--console < script.txt`) waits for the
//!   console's ready line, then streams the script into QEMU's stdin a line
//!   at a time. It blocks when the guest's UART is full while the serial
//!   reader keeps draining the guest's output, so a script of any size runs
//!   to its end. A script that ends without `exit` gets one (and the user
//!   is told), so the session ends when the script does.
//!
//! Every way a session can end has its own [`Verdict`], message and exit
//! status (see [`status`]).

use crate::machine::{Machine, QEMU_INSTALL_HINT};
use crate::symbolize::Symbolizer;
use crate::timeline::Timeline;
use crate::SUCCESS_STATUS;
use std::fmt;
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The launcher's exit statuses, one per way a session (or the set-up
/// before it) can end.
pub mod status {
    /// The kernel finished and every check held.
    pub const SUCCESS: i32 = 0;
    /// The kernel reported failure: a check did not hold.
    pub const CHECKS_FAILED: i32 = 1;
    /// Bad launcher options.
    pub const USAGE: i32 = 2;
    /// The kernel panicked.
    pub const PANIC: i32 = 3;
    /// The kernel died of a CPU exception (page fault, GP fault, ...).
    pub const TRAP: i32 = 4;
    /// A triple fault reset the machine.
    pub const TRIPLE_FAULT: i32 = 5;
    /// QEMU could not start (bad argument, missing kernel file, busy gdb port, no KVM).
    pub const QEMU_START: i32 = 6;
    /// QEMU itself crashed or was killed by a signal.
    pub const QEMU_CRASH: i32 = 7;
    /// The debugger ended the session (gdb `kill`).
    pub const GDB_ENDED: i32 = 8;
    /// A prerequisite is missing (QEMU, the Rust target) or the kernel build failed.
    pub const SETUP: i32 = 9;
    /// The kernel wrote an exit code the launcher does not know.
    pub const UNKNOWN_EXIT: i32 = 10;
    /// The guest hung and was killed after the timeout.
    pub const TIMEOUT: i32 = 124;
}

/// How a session ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Success,
    /// The kernel wrote the failure code without a panic or trap report.
    ChecksFailed,
    /// `PANIC at file:line: message` (the kernel's line).
    Panic(String),
    /// `EXCEPTION vector ...` (the kernel's trap report).
    Trap(String),
    /// The kernel wrote a code that is neither success nor failure.
    UnknownExit(u32),
    TripleFault,
    /// QEMU did not start the guest. `hint` says what to do; `qemu` is
    /// QEMU's own message.
    StartFailed { hint: String, qemu: String },
    EndedByGdb,
    /// QEMU crashed or was killed (status or signal in words).
    QemuCrashed(String),
    TimedOut(Duration),
}

impl Verdict {
    /// The exit status for this verdict (see [`status`]).
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Success => status::SUCCESS,
            Self::ChecksFailed => status::CHECKS_FAILED,
            Self::Panic(_) => status::PANIC,
            Self::Trap(_) => status::TRAP,
            Self::UnknownExit(_) => status::UNKNOWN_EXIT,
            Self::TripleFault => status::TRIPLE_FAULT,
            Self::StartFailed { .. } => status::QEMU_START,
            Self::EndedByGdb => status::GDB_ENDED,
            Self::QemuCrashed(_) => status::QEMU_CRASH,
            Self::TimedOut(_) => status::TIMEOUT,
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Success => f.write_str("the kernel reported success"),
            Self::ChecksFailed => f.write_str("the kernel reported failure: a check did not hold (see the output above)"),
            Self::Panic(p) => write!(f, "the kernel panicked: {} (backtrace above)", p.trim_start_matches("PANIC").trim_start_matches(':').trim()),
            Self::Trap(t) => write!(f, "the kernel died of a CPU exception: {} (backtrace above)", t.trim_start_matches("EXCEPTION ")),
            Self::UnknownExit(c) => write!(f, "the kernel exited with code {c:#x}, which is neither success nor failure"),
            Self::TripleFault => f.write_str("triple fault: the CPU could not deliver an exception and reset the machine (QEMU exited 0 under -no-reboot)"),
            Self::StartFailed { hint, qemu } => write!(f, "QEMU could not start: {hint} (QEMU said: {qemu})"),
            Self::EndedByGdb => f.write_str("the debugger ended the session (gdb `kill`); the kernel did not finish"),
            Self::QemuCrashed(how) => write!(f, "QEMU crashed: {how}"),
            Self::TimedOut(t) => write!(f, "timed out after {:.1} s and was killed (the guest hung?)", t.as_secs_f64()),
        }
    }
}

/// How a boot ended.
#[derive(Debug)]
pub struct Outcome {
    /// QEMU's exit status code, None if it was killed by a signal or by us.
    pub status: Option<i32>,
    pub timed_out: bool,
    /// The serial output, when captured (backtraces symbolized), followed
    /// by QEMU's stderr after a `--- QEMU stderr ---` line if it said anything.
    pub output: String,
    /// What QEMU printed on stderr.
    pub stderr: String,
    pub wall: Duration,
    pub kind: Verdict,
    /// Events written to the `--trace` file, if one was asked for.
    pub timeline_events: Option<usize>,
}

impl Outcome {
    /// True only when the kernel wrote the success code.
    pub fn success(&self) -> bool {
        self.kind == Verdict::Success
    }

    /// What happened, in words.
    pub fn verdict(&self) -> String {
        self.kind.to_string()
    }

    /// The exit status this process should end with.
    pub fn exit_code(&self) -> i32 {
        self.kind.exit_code()
    }
}

#[derive(Debug)]
pub enum RunError {
    /// QEMU is not installed.
    QemuMissing,
    Io(std::io::Error),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::QemuMissing => f.write_str(QEMU_INSTALL_HINT),
            Self::Io(e) => write!(f, "running QEMU failed: {e}"),
        }
    }
}
impl std::error::Error for RunError {}

/// Where the guest's serial input comes from.
pub enum Input {
    /// Nothing (stdin closed).
    None,
    /// This process's stdin, handed to QEMU as it is (a terminal).
    Inherit,
    /// A console script, streamed once the console is ready.
    Script(Box<dyn Read + Send>),
}

/// What a session does besides booting.
pub struct Session {
    pub timeout: Option<Duration>,
    /// Collect the serial output and QEMU's stderr into the [`Outcome`]
    /// instead of forwarding them.
    pub capture: bool,
    pub input: Input,
    /// Write a Chrome trace-event timeline of HMM events here.
    pub trace: Option<PathBuf>,
}

impl Default for Session {
    fn default() -> Self {
        Session { timeout: None, capture: false, input: Input::None, trace: None }
    }
}

/// Boot `kernel` on `machine`. With `capture`, the serial output is collected
/// into [`Outcome::output`] (and stdin is closed); otherwise it goes to this
/// process's stdout and stdin feeds the serial port. `timeout` None = wait forever.
pub fn run(kernel: &Path, machine: &Machine, capture: bool, timeout: Option<Duration>) -> Result<Outcome, RunError> {
    let input = if capture { Input::None } else { Input::Inherit };
    run_session(kernel, machine, Session { timeout, capture, input, trace: None })
}

/// The line the kernel prints when its console is ready for input.
pub const CONSOLE_READY: &str = "hmm> console:";

/// Boot `kernel` and stream `script` into its serial console once the
/// console is ready (QEMU hands stdin to the UART from the first
/// instruction, and bytes that arrive before the kernel initialises the
/// UART are lost). Serial output goes to this process's stdout as it comes.
pub fn run_script(kernel: &Path, machine: &Machine, script: impl Read + Send + 'static, timeout: Option<Duration>) -> Result<Outcome, RunError> {
    run_session(kernel, machine, Session { timeout, capture: false, input: Input::Script(Box::new(script)), trace: None })
}

/// What the serial reader saw.
#[derive(Default)]
struct Seen {
    panic: Option<String>,
    trap: Option<String>,
    /// The guest wrote at least one byte.
    spoke: bool,
    captured: Vec<u8>,
    timeline: Option<Timeline>,
}

/// Watches serial lines; forwards or captures them with annotations.
struct SerialReader {
    kernel: PathBuf,
    symbolizer: Option<Option<Symbolizer>>,
    ready: Option<mpsc::Sender<()>>,
    capture: bool,
    seen: Seen,
    /// The current line's bytes so far, and how many were already forwarded.
    line: Vec<u8>,
}

impl SerialReader {
    fn emit(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.capture {
            self.seen.captured.extend_from_slice(bytes);
        } else {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(bytes);
            let _ = out.flush();
        }
    }

    /// Handle a chunk of serial output: forwarded (or captured) at once, in
    /// one write, with annotations appended to the lines that get them.
    fn feed(&mut self, chunk: &[u8]) {
        self.seen.spoke = true;
        let mut out = Vec::with_capacity(chunk.len() + 64);
        let mut rest = chunk;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            let (part, tail) = rest.split_at(nl);
            self.line.extend_from_slice(part);
            let full = String::from_utf8_lossy(&self.line).into_owned();
            // What was not forwarded yet, any annotation, then the newline.
            out.extend_from_slice(part);
            if let Some(note) = self.line_done(full.trim_end_matches('\r')) {
                out.extend_from_slice(note.as_bytes());
            }
            out.push(b'\n');
            self.line.clear();
            rest = &tail[1..];
        }
        // A partial line (a prompt, or a line still arriving): forward now.
        out.extend_from_slice(rest);
        self.emit(&out);
        self.line.extend_from_slice(rest);
        if !rest.is_empty() && String::from_utf8_lossy(&self.line).contains(CONSOLE_READY) {
            self.console_ready();
        }
    }

    fn console_ready(&mut self) {
        if let Some(tx) = self.ready.take() {
            let _ = tx.send(());
        }
    }

    /// A complete line: returns text to append to it.
    fn line_done(&mut self, line: &str) -> Option<String> {
        if line.contains(CONSOLE_READY) {
            self.console_ready();
        }
        if let Some(t) = self.seen.timeline.as_mut() {
            t.feed(line);
        }
        let trimmed = line.trim_start_matches('\r');
        if self.seen.panic.is_none() && (trimmed.starts_with("PANIC at ") || trimmed.starts_with("PANIC: ")) {
            self.seen.panic = Some(trimmed.to_string());
        }
        if self.seen.trap.is_none() && trimmed.starts_with("EXCEPTION vector ") {
            self.seen.trap = Some(trimmed.to_string());
        }
        if crate::symbolize::parse_line(line).is_some() {
            let kernel = &self.kernel;
            let sym = self.symbolizer.get_or_insert_with(|| Symbolizer::new(kernel));
            return sym.as_ref().and_then(|s| s.annotate(line));
        }
        None
    }
}

/// The last command of a script line (comments and blanks ignored).
fn command_of(line: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(line);
    let cmd = text.split('#').next().unwrap_or("").trim();
    (!cmd.is_empty()).then(|| cmd.split_ascii_whitespace().next().unwrap_or("").to_string())
}

/// Stream `script` into `stdin` once `ready` fires; at its end, send `exit`
/// if the script's last command was not one.
fn write_script(script: Box<dyn Read + Send>, mut stdin: std::process::ChildStdin, ready: mpsc::Receiver<()>) {
    if ready.recv().is_err() {
        return; // The console never came up: nothing to feed.
    }
    let mut reader = std::io::BufReader::with_capacity(64 * 1024, script);
    let mut last = None;
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                eprintln!("hmmos: reading the console script failed: {e}");
                break;
            }
        }
        if let Some(c) = command_of(&line) {
            last = Some(c);
        }
        if !line.ends_with(b"\n") {
            line.push(b'\n');
        }
        if stdin.write_all(&line).is_err() {
            return; // QEMU is gone; the verdict will say why.
        }
    }
    if !matches!(last.as_deref(), Some("exit" | "quit")) {
        eprintln!("\nhmmos: the script ended without `exit`: sending `exit` to end the session");
        let _ = stdin.write_all(b"exit\n");
    }
    let _ = stdin.flush();
}

/// Boot `kernel` on `machine` as `session` says.
pub fn run_session(kernel: &Path, machine: &Machine, session: Session) -> Result<Outcome, RunError> {
    let start = Instant::now();
    if !kernel.is_file() {
        let kind = Verdict::StartFailed {
            hint: format!("the kernel file {} does not exist", kernel.display()),
            qemu: "(not started)".into(),
        };
        return Ok(Outcome { status: None, timed_out: false, output: String::new(), stderr: String::new(), wall: start.elapsed(), kind, timeline_events: None });
    }
    let mut cmd = machine.command(kernel);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(match session.input {
        Input::None => Stdio::null(),
        Input::Inherit => Stdio::inherit(),
        Input::Script(_) => Stdio::piped(),
    });
    let mut child = cmd.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => RunError::QemuMissing,
        _ => RunError::Io(e),
    })?;
    let (ready_tx, ready_rx) = mpsc::channel();
    if let Input::Script(script) = session.input {
        let stdin = child.stdin.take().expect("piped");
        // Not joined: it may sit on a stdin that never closes.
        std::thread::spawn(move || write_script(script, stdin, ready_rx));
    }
    let mut reader = SerialReader {
        kernel: kernel.to_path_buf(),
        symbolizer: None,
        ready: Some(ready_tx),
        capture: session.capture,
        seen: Seen { timeline: session.trace.as_ref().map(|_| Timeline::default()), ..Seen::default() },
        line: Vec::new(),
    };
    let mut stdout = child.stdout.take().expect("piped");
    let serial = std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => reader.feed(&buf[..n]),
            }
        }
        if !reader.line.is_empty() {
            let last = String::from_utf8_lossy(&reader.line).into_owned();
            reader.line_done(&last);
        }
        reader.seen
    });
    let mut stderr = child.stderr.take().expect("piped");
    let capture = session.capture;
    let errors = std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match stderr.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if !capture {
                        let _ = std::io::stderr().write_all(&buf[..n]);
                    }
                    if kept.len() < 1 << 20 {
                        kept.extend_from_slice(&buf[..n]);
                    }
                }
            }
        }
        String::from_utf8_lossy(&kept).into_owned()
    });
    let (exit, timed_out) = wait(&mut child, session.timeout).map_err(RunError::Io)?;
    let wall = start.elapsed();
    let seen = serial.join().unwrap_or_default();
    let stderr = errors.join().unwrap_or_default();
    let (status, signal) = exit.map_or((None, None), |(c, s)| (c, s));
    let kind = judge(&Observed {
        status,
        signal,
        timed_out,
        wall,
        panic: seen.panic.as_deref(),
        trap: seen.trap.as_deref(),
        guest_spoke: seen.spoke,
        stderr: &stderr,
        gdb_port: machine.gdb,
    });
    let mut timeline_events = None;
    if let (Some(path), Some(t)) = (&session.trace, &seen.timeline) {
        t.write(path).map_err(RunError::Io)?;
        timeline_events = Some(t.len());
    }
    let mut output = String::from_utf8_lossy(&seen.captured).into_owned();
    if session.capture && !stderr.is_empty() {
        output.push_str("--- QEMU stderr ---\n");
        output.push_str(&stderr);
    }
    Ok(Outcome { status, timed_out, output, stderr, wall, kind, timeline_events })
}

/// What a session left behind, for [`judge`].
pub struct Observed<'a> {
    pub status: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub wall: Duration,
    /// The kernel's `PANIC ...` line, if it printed one.
    pub panic: Option<&'a str>,
    /// The kernel's `EXCEPTION vector ...` line, if it printed one.
    pub trap: Option<&'a str>,
    /// Whether the guest wrote anything to its serial port.
    pub guest_spoke: bool,
    /// QEMU's stderr.
    pub stderr: &'a str,
    pub gdb_port: Option<u16>,
}

/// The first line QEMU printed that reads like an error.
fn qemu_error_line(stderr: &str) -> String {
    stderr
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("qemu") || l.contains("rror") || l.contains("ould not"))
        .or_else(|| stderr.lines().map(str::trim).find(|l| !l.is_empty()))
        .unwrap_or("(no message)")
        .to_string()
}

/// Why QEMU refused to start, in words the user can act on.
fn start_hint(stderr: &str, gdb_port: Option<u16>) -> String {
    let s = stderr.to_ascii_lowercase();
    if s.contains("address already in use") || s.contains("failed to find an available port") {
        let port = gdb_port.map_or("the gdb port".to_string(), |p| format!("the gdb port {p}"));
        format!("{port} is busy (another QEMU or gdb server holds it): pick another with --gdb=PORT")
    } else if s.contains("could not load kernel") || s.contains("error loading") {
        "the kernel file could not be loaded".into()
    } else if s.contains("kvm") && (s.contains("could not access") || s.contains("failed to initialize") || s.contains("no accelerator")) {
        "KVM is not usable on this host: use --accel tcg".into()
    } else if s.contains("invalid option") || s.contains("invalid parameter") || s.contains("unsupported") || s.contains("parameter") || s.contains("not found") || s.contains("invalid") {
        "QEMU refused an argument: check the extra QEMU arguments (after a second `--` or --qemu-arg)".into()
    } else {
        "QEMU exited before the guest ran".into()
    }
}

/// How a session ended, from what it left behind.
pub fn judge(o: &Observed<'_>) -> Verdict {
    if o.timed_out {
        return Verdict::TimedOut(o.wall);
    }
    if o.status == Some(SUCCESS_STATUS) {
        return Verdict::Success;
    }
    if o.stderr.contains("Terminated via GDBstub") {
        return Verdict::EndedByGdb;
    }
    match (o.status, o.signal) {
        // QEMU's own start-up errors exit 1 before the guest says a word
        // (a kernel writing code 0 would also give 1, but it has spoken).
        (Some(1), _) if !o.guest_spoke => Verdict::StartFailed { hint: start_hint(o.stderr, o.gdb_port), qemu: qemu_error_line(o.stderr) },
        (Some(s), _) if s & 1 == 1 => {
            if let Some(p) = o.panic {
                Verdict::Panic(p.to_string())
            } else if let Some(t) = o.trap {
                Verdict::Trap(t.to_string())
            } else if s == ((0x11 << 1) | 1) {
                Verdict::ChecksFailed
            } else {
                Verdict::UnknownExit((s >> 1) as u32)
            }
        }
        (Some(0), _) => Verdict::TripleFault,
        (Some(134), _) => Verdict::QemuCrashed(format!("status 134 (abort): a device model hit an internal error: {}", qemu_error_line(o.stderr))),
        (Some(s), _) => Verdict::QemuCrashed(format!("QEMU exited with status {s}: {}", qemu_error_line(o.stderr))),
        (None, Some(sig)) => Verdict::QemuCrashed(format!("QEMU was killed by signal {sig}")),
        (None, None) => Verdict::QemuCrashed("QEMU ended without a status".into()),
    }
}

type Exit = Option<(Option<i32>, Option<i32>)>;

fn wait(child: &mut Child, timeout: Option<Duration>) -> std::io::Result<(Exit, bool)> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        if let Some(st) = child.try_wait()? {
            #[cfg(unix)]
            let signal = std::os::unix::process::ExitStatusExt::signal(&st);
            #[cfg(not(unix))]
            let signal = None;
            return Ok((Some((st.code(), signal)), false));
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = child.kill();
            let _ = child.wait();
            return Ok((None, true));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(status: Option<i32>) -> Observed<'static> {
        Observed { status, signal: None, timed_out: false, wall: Duration::from_secs(1), panic: None, trap: None, guest_spoke: true, stderr: "", gdb_port: None }
    }

    #[test]
    fn each_ending_has_its_own_verdict_and_status() {
        let cases: Vec<(Observed<'static>, Verdict, i32)> = vec![
            (obs(Some(SUCCESS_STATUS)), Verdict::Success, 0),
            (obs(Some(0x23)), Verdict::ChecksFailed, 1),
            (Observed { panic: Some("PANIC at x.rs:1:1: boom"), ..obs(Some(0x23)) }, Verdict::Panic("PANIC at x.rs:1:1: boom".into()), 3),
            (Observed { trap: Some("EXCEPTION vector 14 (page fault)"), ..obs(Some(0x23)) }, Verdict::Trap("EXCEPTION vector 14 (page fault)".into()), 4),
            (obs(Some(0)), Verdict::TripleFault, 5),
            (obs(Some(0x45)), Verdict::UnknownExit(0x22), 10),
            (Observed { timed_out: true, status: None, ..obs(None) }, Verdict::TimedOut(Duration::from_secs(1)), 124),
            (Observed { stderr: "qemu-system-x86_64: QEMU: Terminated via GDBstub\n", ..obs(Some(0)) }, Verdict::EndedByGdb, 8),
            (obs(Some(134)), Verdict::QemuCrashed("status 134 (abort): a device model hit an internal error: (no message)".into()), 7),
            (Observed { signal: Some(9), ..obs(None) }, Verdict::QemuCrashed("QEMU was killed by signal 9".into()), 7),
        ];
        for (o, want, code) in cases {
            let v = judge(&o);
            assert_eq!(v, want);
            assert_eq!(v.exit_code(), code, "{v}");
        }
    }

    #[test]
    fn start_up_failures_say_what_to_do() {
        let silent = |stderr: &'static str, gdb| Observed { guest_spoke: false, stderr, gdb_port: gdb, ..obs(Some(1)) };
        let v = judge(&silent("qemu-system-x86_64: -frobnicate: invalid option\n", None));
        assert_eq!(v.exit_code(), status::QEMU_START);
        assert!(v.to_string().contains("refused an argument") && v.to_string().contains("-frobnicate: invalid option"), "{v}");
        let v = judge(&silent("qemu-system-x86_64: -gdb tcp:127.0.0.1:1234: Failed to find an available port: Address already in use\n", Some(1234)));
        assert!(v.to_string().contains("gdb port 1234 is busy"), "{v}");
        let v = judge(&silent("qemu: could not load kernel '/nope'\n", None));
        assert!(v.to_string().contains("kernel file could not be loaded"), "{v}");
        let v = judge(&silent("Could not access KVM kernel module: No such file or directory\nqemu-system-x86_64: -accel kvm: failed to initialize kvm: No such file or directory\n", None));
        assert!(v.to_string().contains("--accel tcg"), "{v}");
        // The same status after the guest spoke is the kernel's code 0.
        assert_eq!(judge(&obs(Some(1))), Verdict::UnknownExit(0));
    }

    #[test]
    fn gdb_kill_is_not_a_triple_fault() {
        assert_ne!(judge(&Observed { stderr: "QEMU: Terminated via GDBstub", ..obs(Some(0)) }), Verdict::TripleFault);
    }

    #[test]
    fn scripts_end_with_exit_detection() {
        assert_eq!(command_of(b"exit\n").as_deref(), Some("exit"));
        assert_eq!(command_of(b"  # exit\n"), None);
        assert_eq!(command_of(b"ps # list\n").as_deref(), Some("ps"));
        assert_eq!(command_of(b"\n"), None);
    }

    #[test]
    fn serial_reader_annotates_and_watches() {
        let (tx, rx) = mpsc::channel();
        let mut r = SerialReader { kernel: PathBuf::from("/nonexistent"), symbolizer: None, ready: Some(tx), capture: true, seen: Seen::default(), line: Vec::new() };
        r.feed(b"boot\nPANIC at a.rs:1:2: bo");
        r.feed(b"om\n  #1 0xffffffff80100000\nhmm> cons");
        assert!(rx.try_recv().is_err());
        r.feed(b"ole: ready\nhmm> ");
        assert!(rx.try_recv().is_ok(), "the console's ready line is seen even when split");
        assert_eq!(r.seen.panic.as_deref(), Some("PANIC at a.rs:1:2: boom"));
        assert_eq!(String::from_utf8_lossy(&r.seen.captured), "boot\nPANIC at a.rs:1:2: boom\n  #1 0xffffffff80100000\nhmm> console: ready\nhmm> ");
    }
}
