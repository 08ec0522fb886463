//! The serial console: `hmm> ` prompts, one command per line.
//!
//! The shell is generic over a context `C` (the state commands act on) and
//! a static table of [`Command`]s; `help` is built from that table, so a
//! command cannot exist without its syntax being listed. Commands write to
//! a `fmt::Write`, so a test kernel can run lines and check the output.
//!
//! A bad line — unknown command, wrong arguments, a failed operation —
//! prints one `error: ...` line and the console carries on.
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

    /// Run one line. Blank lines and `#` comments do nothing.
    pub fn execute(&self, ctx: &mut C, line: &str, out: Out<'_>) -> Result<Flow, ShellError> {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut words = line.split_ascii_whitespace();
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
        loop {
            crate::print!("hmm> ");
            let line = read_line();
            match self.execute(ctx, &line, &mut out) {
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

/// Read a line from the serial port, echoing it; handles backspace.
fn read_line() -> String {
    let mut line = String::new();
    loop {
        let mut byte = None;
        while byte.is_none() {
            // A timeout here only means "poll again".
            let _ = crate::irq::wait_until(1_000, || {
                byte = crate::console::try_read_byte();
                byte.is_some()
            });
        }
        match byte.unwrap() {
            b'\r' | b'\n' => {
                crate::println!();
                return line;
            }
            0x08 | 0x7f
                if line.pop().is_some() => {
                    crate::print!("\x08 \x08");
                }
            b if b.is_ascii_graphic() || b == b' ' => {
                line.push(b as char);
                crate::print!("{}", b as char);
            }
            _ => {}
        }
    }
}
