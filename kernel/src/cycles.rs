//! Counting cycles in the guest, for the in-guest benchmarks.
//!
//! Under TCG with a fixed `-icount shift=N` (the launcher's `--bench` uses
//! N = 0) QEMU runs the virtual clock from the instruction count: the guest
//! TSC advances 2^N per instruction, so with N = 0 a TSC difference *is* an
//! instruction count, identical run to run. With `shift=auto` or under KVM
//! it is a time-like count and varies. While the guest halts (waiting for a
//! device), virtual time jumps ahead: measure CPU work between waits, never
//! across one.

use core::arch::x86_64::{_mm_lfence, _rdtsc};

/// The time-stamp counter, ordered after earlier instructions.
pub fn now() -> u64 {
    // SAFETY: `lfence` and `rdtsc` are available on every x86_64 CPU and
    // have no memory effects.
    unsafe {
        _mm_lfence();
        let t = _rdtsc();
        _mm_lfence();
        t
    }
}

/// Cycles taken by `f`, with its result.
pub fn measure<R>(f: impl FnOnce() -> R) -> (u64, R) {
    let start = now();
    let r = f();
    (now().wrapping_sub(start), r)
}

/// The fixed icount shift the kernel was booted with (`icount=N` on the
/// command line, passed by the launcher), if any: then cycles are exact.
pub fn icount_shift() -> Option<u8> {
    crate::cmdline::get(crate::boot_info().cmdline(), "icount").and_then(|v| v.parse().ok())
}
