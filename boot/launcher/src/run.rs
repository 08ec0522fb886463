//! Running a kernel in QEMU, with a timeout, and judging how it ended.

use crate::machine::{Machine, QEMU_INSTALL_HINT};
use crate::SUCCESS_STATUS;
use std::fmt;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// How a boot ended.
#[derive(Debug)]
pub struct Outcome {
    /// QEMU's exit status code, None if it was killed by a signal or by us.
    pub status: Option<i32>,
    pub timed_out: bool,
    /// The serial output, when captured.
    pub output: String,
    pub wall: Duration,
}

impl Outcome {
    /// True only when the kernel wrote the success code.
    pub fn success(&self) -> bool {
        !self.timed_out && self.status == Some(SUCCESS_STATUS)
    }

    /// What happened, in words.
    pub fn verdict(&self) -> String {
        match (self.timed_out, self.status) {
            (true, _) => format!("timed out after {:.1} s and was killed", self.wall.as_secs_f64()),
            (false, Some(s)) if s == SUCCESS_STATUS => "the kernel reported success".into(),
            (false, Some(0)) => "QEMU exited 0 without the kernel's success code: a triple fault (reset)".into(),
            (false, Some(134)) => "QEMU aborted (status 134): a device model hit an internal error".into(),
            (false, Some(s)) if s & 1 == 1 => format!("the kernel reported failure (exit code {:#x})", s >> 1),
            (false, Some(s)) => format!("QEMU exited with status {s}"),
            (false, None) => "QEMU was killed by a signal".into(),
        }
    }

    /// The exit status this process should end with.
    pub fn exit_code(&self) -> i32 {
        match (self.success(), self.timed_out, self.status) {
            (true, _, _) => 0,
            (false, true, _) => 124,
            (false, false, Some(s)) if s != 0 => s,
            _ => 1,
        }
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

/// Boot `kernel` on `machine`. With `capture`, the serial output is collected
/// into [`Outcome::output`] (and stdin is closed); otherwise it goes to this
/// process's stdout and stdin feeds the serial port. `timeout` None = wait forever.
pub fn run(kernel: &Path, machine: &Machine, capture: bool, timeout: Option<Duration>) -> Result<Outcome, RunError> {
    let mut cmd = machine.command(kernel);
    if capture {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    }
    let start = Instant::now();
    let mut child = cmd.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => RunError::QemuMissing,
        _ => RunError::Io(e),
    })?;
    let readers = capture.then(|| {
        let mut out = child.stdout.take().expect("piped");
        let mut err = child.stderr.take().expect("piped");
        (
            std::thread::spawn(move || {
                let mut s = Vec::new();
                let _ = out.read_to_end(&mut s);
                s
            }),
            std::thread::spawn(move || {
                let mut s = Vec::new();
                let _ = err.read_to_end(&mut s);
                s
            }),
        )
    });
    let (status, timed_out) = wait(&mut child, timeout).map_err(RunError::Io)?;
    let mut output = String::new();
    if let Some((out, err)) = readers {
        output.push_str(&String::from_utf8_lossy(&out.join().unwrap_or_default()));
        let err = err.join().unwrap_or_default();
        if !err.is_empty() {
            output.push_str("--- QEMU stderr ---\n");
            output.push_str(&String::from_utf8_lossy(&err));
        }
    }
    Ok(Outcome { status, timed_out, output, wall: start.elapsed() })
}

/// The line the kernel prints when its console is ready for input.
pub const CONSOLE_READY: &str = "hmm> console:";

/// Boot `kernel` and feed `script` to its serial console once the console
/// is ready (QEMU hands stdin to the UART from the first instruction, and
/// bytes that arrive before the kernel initialises the UART are lost).
/// Serial output goes to this process's stdout as it comes.
pub fn run_script(kernel: &Path, machine: &Machine, script: Vec<u8>, timeout: Option<Duration>) -> Result<Outcome, RunError> {
    use std::io::{BufRead, Write};
    let mut cmd = machine.command(kernel);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => RunError::QemuMissing,
        _ => RunError::Io(e),
    })?;
    let mut stdin = child.stdin.take().expect("piped");
    let stdout = child.stdout.take().expect("piped");
    let forward = std::thread::spawn(move || {
        let mut script = Some(script);
        let mut out = std::io::stdout();
        for line in std::io::BufReader::new(stdout).split(b'\n') {
            let Ok(mut line) = line else { break };
            line.push(b'\n');
            let _ = out.write_all(&line);
            let _ = out.flush();
            if script.is_some() && String::from_utf8_lossy(&line).contains(CONSOLE_READY) {
                let _ = stdin.write_all(&script.take().unwrap_or_default());
                let _ = stdin.flush();
            }
        }
    });
    let (status, timed_out) = wait(&mut child, timeout).map_err(RunError::Io)?;
    let _ = forward.join();
    Ok(Outcome { status, timed_out, output: String::new(), wall: start.elapsed() })
}

fn wait(child: &mut Child, timeout: Option<Duration>) -> std::io::Result<(Option<i32>, bool)> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok((st.code(), false));
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = child.kill();
            let _ = child.wait();
            return Ok((None, true));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
