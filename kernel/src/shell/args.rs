//! Arguments of a console command: words, numbers (`42`, `0x7f00`, `16K`,
//! `2M`, `1G`), addresses, `key=value` options. Every parse error names the
//! argument and says what was expected.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;
use x86_64::VirtAddr;

/// What was wrong with a command's arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArgError {
    Missing(&'static str),
    Invalid { name: &'static str, value: String, expected: &'static str },
    Extra(String),
}

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing(n) => write!(f, "missing <{n}>"),
            Self::Invalid { name, value, expected } => write!(f, "<{name}> `{value}` is not {expected}"),
            Self::Extra(w) => write!(f, "unexpected argument `{w}`"),
        }
    }
}

/// The words after the command name, consumed left to right.
pub struct Args<'a> {
    words: Vec<&'a str>,
    next: usize,
    done: bool,
}

/// Parse `42`, `0x2a`, `0b101`, with an optional `K`/`M`/`G` suffix (×2^10/20/30).
pub fn parse_number(s: &str) -> Option<u64> {
    let (digits, shift) = match s.as_bytes().last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 10),
        b'm' | b'M' => (&s[..s.len() - 1], 20),
        b'g' | b'G' => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    let digits = digits.replace('_', "");
    let v = if let Some(h) = digits.strip_prefix("0x") {
        u64::from_str_radix(h, 16).ok()?
    } else if let Some(b) = digits.strip_prefix("0b") {
        u64::from_str_radix(b, 2).ok()?
    } else {
        digits.parse().ok()?
    };
    v.checked_mul(1 << shift)
}

impl<'a> Args<'a> {
    pub fn new(words: Vec<&'a str>) -> Self {
        Args { words, next: 0, done: false }
    }

    /// The next word, if any (without consuming an error).
    pub fn peek(&self) -> Option<&'a str> {
        self.words.get(self.next).copied()
    }

    /// The next word, required.
    pub fn word(&mut self, name: &'static str) -> Result<&'a str, ArgError> {
        let w = self.peek().ok_or(ArgError::Missing(name))?;
        self.next += 1;
        Ok(w)
    }

    /// The next word if there is one.
    pub fn opt_word(&mut self) -> Option<&'a str> {
        let w = self.peek()?;
        self.next += 1;
        Some(w)
    }

    /// A number (see [`parse_number`]).
    pub fn number(&mut self, name: &'static str) -> Result<u64, ArgError> {
        let w = self.word(name)?;
        parse_number(w).ok_or_else(|| ArgError::Invalid { name, value: w.to_string(), expected: "a number (e.g. 42, 0x1000, 16K)" })
    }

    /// An optional number, with a default when absent.
    pub fn number_or(&mut self, name: &'static str, default: u64) -> Result<u64, ArgError> {
        if self.peek().is_some() { self.number(name) } else { Ok(default) }
    }

    /// A canonical virtual address.
    pub fn addr(&mut self, name: &'static str) -> Result<VirtAddr, ArgError> {
        let w = self.word(name)?;
        parse_number(w)
            .and_then(|v| VirtAddr::try_new(v).ok())
            .ok_or_else(|| ArgError::Invalid { name, value: w.to_string(), expected: "a canonical address (e.g. 0x10000000)" })
    }

    /// One of a fixed set of words.
    pub fn choice(&mut self, name: &'static str, choices: &'static [&'static str], expected: &'static str) -> Result<&'a str, ArgError> {
        let w = self.word(name)?;
        if choices.contains(&w) { Ok(w) } else { Err(ArgError::Invalid { name, value: w.to_string(), expected }) }
    }

    /// Every argument has been parsed: call this before acting, so a line
    /// with a stray word changes nothing.
    pub fn done(&mut self) -> Result<(), ArgError> {
        self.done = true;
        match self.peek() {
            Some(w) => Err(ArgError::Extra(w.to_string())),
            None => Ok(()),
        }
    }

    /// Whether [`Args::done`] was called.
    pub fn checked(&self) -> bool {
        self.done
    }
}
