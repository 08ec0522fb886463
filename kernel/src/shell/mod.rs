//! The serial console: `hmm> ` prompts, one command per line.
//!
//! The shell is generic over a context `C` (the state commands act on) and
//! a static table of [`Command`]s; `help` is built from that table, so a
//! command cannot exist without its syntax being listed. Commands write to
//! a `fmt::Write`, so a test kernel can run lines and check the output.
//!
//! A bad line — unknown command, wrong arguments, a failed operation, bytes
//! that are not printable UTF-8, a line over [`MAX_LINE`] bytes — prints one
//! `error: ...` line and the console carries on. Nothing on a line is
//! silently dropped: a corrupted line is refused whole, never run as some
//! other valid command.
//!
//! Input comes from COM1, polled: the reader halts with a 1 ms (virtual)
//! timeout between polls, so an idle console costs almost no host CPU under
//! icount. Scripts (`cargo run -- --console < script.txt`) end with `exit`.

pub mod args;

pub use args::{ArgError, Args};

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::{self, Write};

/// Why a command line failed.
#[derive(Debug)]
pub enum ShellError {
    /// No command of that name.
    Unknown(String),
    /// The arguments were wrong; carries the command's usage.
    Usage { usage: &'static str, problem: ArgError },
    /// The command ran and failed.
    Failed(String),
    /// The line itself was refused before any command saw it.
    Line(LineError),
}

/// Why a raw input line was refused (see [`check_line`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineError {
    /// More than [`MAX_LINE`] bytes before the end of the line.
    TooLong,
    /// Not valid UTF-8 (the offset of the first bad byte).
    NotUtf8 { at: usize },
    /// A control character (the offset and the byte); tab counts as a space.
    Control { at: usize, byte: u8 },
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLong => write!(f, "line longer than {MAX_LINE} bytes refused"),
            Self::NotUtf8 { at } => write!(f, "line refused: byte {at} is not valid UTF-8"),
            Self::Control { at, byte } => write!(f, "line refused: control character {byte:#04x} at byte {at}"),
        }
    }
}

/// The longest line the console accepts, in bytes.
pub const MAX_LINE: usize = 4096;

/// Check a raw line (without its terminator): at most [`MAX_LINE`] bytes,
/// valid UTF-8, no control characters other than tab.
pub fn check_line(bytes: &[u8]) -> Result<&str, LineError> {
    if bytes.len() > MAX_LINE {
        return Err(LineError::TooLong);
    }
    let s = core::str::from_utf8(bytes).map_err(|e| LineError::NotUtf8 { at: e.valid_up_to() })?;
    if let Some((at, c)) = s.char_indices().find(|&(_, c)| c.is_control() && c != '\t') {
        return Err(LineError::Control { at, byte: if (c as u32) < 0x100 { c as u32 as u8 } else { 0 } });
    }
    Ok(s)
}

impl From<ArgError> for ShellError {
    fn from(problem: ArgError) -> Self {
        // The usage is filled in by `execute`, which knows the command.
        ShellError::Usage { usage: "", problem }
    }
}

impl fmt::Display for ShellError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unknown(c) => write!(f, "unknown command `{c}` (try `help`)"),
            Self::Usage { usage, problem } => write!(f, "{problem}; usage: {usage}"),
            Self::Failed(m) => f.write_str(m),
            Self::Line(e) => write!(f, "{e}"),
        }
    }
}

/// Shorthand for a command failing with a message.
pub fn fail(msg: impl fmt::Display) -> ShellError {
    ShellError::Failed(alloc::format!("{msg}"))
}

/// What the shell does after a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// `exit`: leave the console.
    Exit,
}

/// The output a command writes to.
pub type Out<'a> = &'a mut dyn Write;

/// A command's implementation. It parses its arguments, calls
/// [`Args::done`], and only then acts.
pub type Run<C> = fn(&mut C, &mut Args<'_>, Out<'_>) -> Result<(), ShellError>;

/// One console command.
pub struct Command<C: 'static> {
    pub name: &'static str,
    /// The syntax, e.g. `mmap <pid> <len> [r|rw|rx|rwx] [at=<addr>]`.
    pub usage: &'static str,
    /// One line saying what it does.
    pub about: &'static str,
    pub run: Run<C>,
}

pub struct Shell<C: 'static> {
    commands: &'static [Command<C>],
}

impl<C> Shell<C> {
    pub const fn new(commands: &'static [Command<C>]) -> Self {
        Shell { commands }
    }

    /// Run one raw line as it arrived: refused whole (see [`check_line`])
    /// unless it is printable UTF-8 of at most [`MAX_LINE`] bytes.
    pub fn execute_bytes(&self, ctx: &mut C, line: &[u8], out: Out<'_>) -> Result<Flow, ShellError> {
        let line = check_line(line).map_err(ShellError::Line)?;
        self.execute(ctx, line, out)
    }

    /// Run one line. Blank lines and `#` comments do nothing.
    pub fn execute(&self, ctx: &mut C, line: &str, out: Out<'_>) -> Result<Flow, ShellError> {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut words = line.split_whitespace();
        let Some(name) = words.next() else { return Ok(Flow::Continue) };
        match name {
            "help" => {
                self.help(out);
                return Ok(Flow::Continue);
            }
            "exit" | "quit" => return Ok(Flow::Exit),
            _ => {}
        }
        let cmd = self.commands.iter().find(|c| c.name == name).ok_or_else(|| ShellError::Unknown(name.into()))?;
        let mut args = Args::new(words.collect::<Vec<_>>());
        (cmd.run)(ctx, &mut args, out)
            .and_then(|()| match args.checked() {
                true => Ok(()),
                false => Err(ShellError::Failed(alloc::format!("internal: `{name}` did not check its arguments"))),
            })
            .map_err(|e| match e {
                ShellError::Usage { problem, .. } => ShellError::Usage { usage: cmd.usage, problem },
                other => other,
            })?;
        Ok(Flow::Continue)
    }

    /// The `help` text: every command with its syntax.
    pub fn help(&self, out: Out<'_>) {
        let width = self.commands.iter().map(|c| c.usage.len()).max().unwrap_or(0).max(4);
        let _ = writeln!(out, "commands (numbers: 42, 0x1000, 16K, 2M; # starts a comment):");
        for c in self.commands {
            let _ = writeln!(out, "  {:<width$}  {}", c.usage, c.about);
        }
        let _ = writeln!(out, "  {:<width$}  this list", "help");
        let _ = writeln!(out, "  {:<width$}  leave the console", "exit");
    }

    /// The interactive loop on the serial line, until `exit`.
    pub fn run_serial(&self, ctx: &mut C) {
        let mut out = SerialOut;
        let mut line = LineBuf::new();
        loop {
            crate::print!("hmm> ");
            read_line(&mut line);
            let result = match line.overflowed {
                true => Err(ShellError::Line(LineError::TooLong)),
                false => self.execute_bytes(ctx, &line.bytes, &mut out),
            };
            match result {
                Ok(Flow::Continue) => {}
                Ok(Flow::Exit) => return,
                Err(e) => crate::println!("error: {e}"),
            }
        }
    }
}

/// Console output to the serial port.
pub struct SerialOut;

impl Write for SerialOut {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        crate::console::write(format_args!("{s}"));
        Ok(())
    }
}

/// One input line, bounded: bytes past [`MAX_LINE`] are counted, not kept.
struct LineBuf {
    bytes: Vec<u8>,
    overflowed: bool,
}

impl LineBuf {
    fn new() -> Self {
        LineBuf { bytes: Vec::with_capacity(MAX_LINE), overflowed: false }
    }
}

/// Read a line from the serial port, echoing it; backspace edits. Every
/// other byte is kept as it came (checked by [`check_line`] afterwards), so
/// a corrupted line is refused rather than run as a different command.
fn read_line(line: &mut LineBuf) {
    line.bytes.clear();
    line.overflowed = false;
    loop {
        let mut byte = None;
        while byte.is_none() {
            // A timeout here only means "poll again".
            let _ = crate::irq::wait_until(1_000, || {
                byte = crate::console::try_read_byte();
                byte.is_some()
            });
        }
        let Some(b) = byte else { continue };
        match b {
            b'\r' | b'\n' => {
                crate::println!();
                return;
            }
            0x08 | 0x7f => {
                if line.bytes.pop().is_some() {
                    crate::print!("\x08 \x08");
                }
            }
            _ if line.bytes.len() >= MAX_LINE => line.overflowed = true,
            _ => {
                line.bytes.push(b);
                if b.is_ascii_graphic() || b == b' ' {
                    crate::print!("{}", b as char);
                }
            }
        }
    }
}
