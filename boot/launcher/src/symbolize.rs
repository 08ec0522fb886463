//! Turning the kernel's backtrace addresses into function, file and line.
//!
//! On a panic or a fatal trap the kernel walks its frame pointers (every
//! kernel crate, and the prebuilt `core`, keeps them) and prints one line
//! per frame — it has no symbol table of its own:
//!
//! ```text
//! backtrace (most recent call first):
//!   #0 0xffffffff8010a1b3 (RIP)
//!   #1 0xffffffff80104c2e
//! ```
//!
//! `(RIP)` marks the exact faulting instruction of a trap; every other
//! address is a return address, looked up one byte earlier (inside the
//! call). The launcher, which knows the ELF it booted, reads its DWARF with
//! the `addr2line` crate and appends to each such line the function and
//! `file:line`, inlined callers included:
//!
//! ```text
//!   #1 0xffffffff80104c2e  harness_panic::main at tests/harness_panic.rs:11:5
//!        inlined into pvh_rust_entry at tests/harness_panic.rs:7:1
//! ```

use std::path::Path;

/// The DWARF of one kernel ELF.
pub struct Symbolizer {
    loader: addr2line::Loader,
    root: String,
}

/// One frame of a symbolized address (the innermost first when inlined).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub function: String,
    /// `file:line[:column]`, shortened (workspace-relative where possible).
    pub location: Option<String>,
}

/// A parsed backtrace line: frame number, address, and whether the address
/// is exact (`(RIP)`) rather than a return address.
pub fn parse_line(line: &str) -> Option<(u32, u64, bool)> {
    let rest = line.trim_start().strip_prefix('#')?;
    let (n, rest) = rest.split_once(' ')?;
    let n: u32 = n.parse().ok()?;
    let rest = rest.trim_end();
    let (addr, exact) = match rest.strip_suffix(" (RIP)") {
        Some(a) => (a, true),
        None => (rest, false),
    };
    let hex = addr.strip_prefix("0x")?;
    if hex.len() != 16 || !line.starts_with("  #") {
        return None;
    }
    Some((n, u64::from_str_radix(hex, 16).ok()?, exact))
}

/// Drop a trailing `::h0123456789abcdef` hash from a demangled name.
fn strip_hash(name: &str) -> &str {
    match name.rsplit_once("::h") {
        Some((head, h)) if h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()) => head,
        _ => name,
    }
}

impl Symbolizer {
    /// Load the DWARF of `elf`; None if the file cannot be read or parsed.
    pub fn new(elf: &Path) -> Option<Symbolizer> {
        let loader = addr2line::Loader::new(elf).ok()?;
        let root = crate::workspace_root().to_string_lossy().into_owned() + "/";
        Some(Symbolizer { loader, root })
    }

    fn shorten(&self, file: &str) -> String {
        if let Some(rel) = file.strip_prefix(&self.root) {
            return rel.to_string();
        }
        // The standard library: /rustc/<hash>/library/core/src/... or a
        // rustup toolchain's lib/rustlib/src/rust/library/...
        if let Some(i) = file.find("/library/") {
            return file[i + 1..].to_string();
        }
        // A registry crate: .../registry/src/<index>/<crate-x.y.z>/src/...
        if let Some(i) = file.find("/registry/src/") {
            let tail = &file[i + "/registry/src/".len()..];
            if let Some((_, rest)) = tail.split_once('/') {
                return rest.to_string();
            }
        }
        file.to_string()
    }

    /// The frames at `addr` (inlined ones first), or empty if unknown.
    pub fn frames(&self, addr: u64) -> Vec<Frame> {
        let mut out = Vec::new();
        if let Ok(mut it) = self.loader.find_frames(addr) {
            while let Ok(Some(f)) = it.next() {
                let function = f
                    .function
                    .as_ref()
                    .and_then(|n| n.demangle().ok())
                    .map(|n| strip_hash(&n).to_string())
                    .unwrap_or_else(|| "??".into());
                let location = f.location.as_ref().and_then(|l| {
                    let file = self.shorten(l.file?);
                    Some(match (l.line, l.column) {
                        (Some(line), Some(col)) if col > 0 => format!("{file}:{line}:{col}"),
                        (Some(line), _) => format!("{file}:{line}"),
                        _ => file,
                    })
                });
                out.push(Frame { function, location });
            }
        }
        if out.is_empty() {
            if let Some(sym) = self.loader.find_symbol(addr) {
                let name = rustc_demangle_name(sym);
                out.push(Frame { function: name, location: None });
            }
        }
        out
    }

    /// The text appended to a backtrace line, or None if `line` is not one
    /// or nothing is known about the address.
    pub fn annotate(&self, line: &str) -> Option<String> {
        let (_, addr, exact) = parse_line(line)?;
        let probe = if exact { addr } else { addr.wrapping_sub(1) };
        let frames = self.frames(probe);
        let (first, inlined_into) = frames.split_first()?;
        let mut s = format!("  {}", first.function);
        if let Some(l) = &first.location {
            s.push_str(&format!(" at {l}"));
        }
        for f in inlined_into {
            s.push_str(&format!("\n       inlined into {}", f.function));
            if let Some(l) = &f.location {
                s.push_str(&format!(" at {l}"));
            }
        }
        Some(s)
    }
}

fn rustc_demangle_name(raw: &str) -> String {
    let d = addr2line::demangle_auto(raw.into(), None).into_owned();
    strip_hash(&d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backtrace_lines_parse() {
        assert_eq!(parse_line("  #0 0xffffffff8010a1b3 (RIP)"), Some((0, 0xffffffff8010a1b3, true)));
        assert_eq!(parse_line("  #12 0xffffffff80104c2e"), Some((12, 0xffffffff80104c2e, false)));
        assert_eq!(parse_line("  #1 0x1234"), None, "addresses are printed with 16 digits");
        assert_eq!(parse_line("#1 0xffffffff80104c2e"), None, "indented by two spaces");
        assert_eq!(parse_line("hmm> #1 0xffffffff80104c2e"), None);
    }

    #[test]
    fn hashes_are_dropped() {
        assert_eq!(strip_hash("kernel::panic::h0123456789abcdef"), "kernel::panic");
        assert_eq!(strip_hash("kernel::panic"), "kernel::panic");
        assert_eq!(strip_hash("a::hello"), "a::hello");
    }
}
