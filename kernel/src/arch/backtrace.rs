//! Frame-pointer backtraces for panics and fatal traps.
//!
//! Every kernel crate is built with `-C force-frame-pointers=yes`
//! (`.cargo/config.toml`) and the prebuilt `core` keeps frame pointers too,
//! so each frame starts with `push rbp; mov rbp, rsp`:
//!
//! ```text
//!   [rbp]      the caller's rbp      ─┐ a linked list up the stack,
//!   [rbp + 8]  the return address     │ ending at rbp = 0 (the PVH entry
//!                                     ┘ zeroes it before calling Rust)
//! ```
//!
//! The walk only follows links that stay inside the kernel stack it started
//! on and move strictly upward, so a corrupt frame ends the backtrace
//! instead of faulting again. The kernel has no symbol table of its own: it
//! prints addresses in the shape the launcher symbolizes
//! (`boot/launcher/src/symbolize.rs`):
//!
//! ```text
//! backtrace (most recent call first):
//!   #0 0xffffffff8010a1b3 (RIP)       ← a trap's faulting instruction
//!   #1 0xffffffff80104c2e             ← return addresses
//! ```

use super::stacks;
use core::fmt::Write;

/// At most this many frames are printed.
pub const MAX_FRAMES: usize = 48;

/// The return addresses reached from frame pointer `rbp`, innermost first.
/// Returns how many were stored in `out`.
pub fn walk(rbp: u64, out: &mut [u64]) -> usize {
    let Some(stack) = stacks::every().find(|s| rbp >= s.guard.as_u64() + 4096 && rbp < s.top.as_u64()) else {
        return 0;
    };
    let (lo, hi) = (stack.guard.as_u64() + 4096, stack.top.as_u64());
    let mut fp = rbp;
    let mut n = 0;
    while n < out.len() && fp.is_multiple_of(8) && fp >= lo && fp + 16 <= hi {
        // SAFETY: [fp, fp + 16) lies inside a mapped kernel stack (checked
        // above); reading it has no side effect.
        let (next, ret) = unsafe { (*(fp as *const u64), *((fp + 8) as *const u64)) };
        if ret == 0 {
            break;
        }
        out[n] = ret;
        n += 1;
        if next <= fp {
            break; // rbp = 0 at the bottom, or a corrupt link.
        }
        fp = next;
    }
    n
}

/// Print a backtrace: `rip` (a trap's faulting instruction) first if
/// given, then the return addresses from frame pointer `rbp`. Uses the
/// emergency console path: callable from a panic or a fatal trap.
pub fn print(rip: Option<u64>, rbp: u64) {
    let mut frames = [0u64; MAX_FRAMES];
    let n = walk(rbp, &mut frames);
    let mut w = Emergency;
    let _ = writeln!(w, "backtrace (most recent call first):");
    let mut i = 0;
    if let Some(rip) = rip {
        let _ = writeln!(w, "  #{i} {rip:#018x} (RIP)");
        i += 1;
    }
    for f in &frames[..n] {
        let _ = writeln!(w, "  #{i} {f:#018x}");
        i += 1;
    }
    if n == 0 && rip.is_none() {
        let _ = writeln!(w, "  (no frames: rbp {rbp:#x} is not on a kernel stack)");
    }
}

/// Print the backtrace of the caller of this function.
#[inline(never)]
pub fn print_here() {
    let rbp: u64;
    // SAFETY: reads a register.
    unsafe { core::arch::asm!("mov {}, rbp", out(reg) rbp, options(nomem, nostack, preserves_flags)) };
    print(None, rbp);
}

struct Emergency;

impl Write for Emergency {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        crate::console::emergency_write(format_args!("{s}"));
        Ok(())
    }
}
