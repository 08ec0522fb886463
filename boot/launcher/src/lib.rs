//! The host side of hmmos: build kernels for `x86_64-unknown-none` and boot
//! them in QEMU.
//!
//! One place owns the emulated machine ([`machine`]); `cargo run` (the
//! `hmmos` binary) and `cargo test` (the `kernels` integration test, which
//! boots every test kernel under `tests/`) both go through it, so a test
//! kernel sees exactly the machine a user sees.
//!
//! Before building anything it checks the host ([`prereq`]): the Rust
//! target (installed through rustup if missing) and QEMU (one line with the
//! install command if missing).
//!
//! Exit protocol: a kernel ends by writing a code to the `isa-debug-exit`
//! port (0xf4); QEMU then exits with `(code << 1) | 1`. The kernel writes
//! [`SUCCESS_CODE`] only when it finished and every check held. Every other
//! ending — a failed check, a panic, a CPU exception, a triple fault (QEMU
//! exits 0 with `-no-reboot`), a QEMU start-up error, a gdb `kill`, a QEMU
//! crash, our timeout — is judged by [`run::judge`] into its own
//! [`Verdict`], message and exit status ([`run::status`]).
//!
//! While the guest runs, the launcher reads its serial output line by line:
//! backtraces are symbolized from the kernel's DWARF ([`symbolize`]) and,
//! with `--trace FILE`, HMM events become a trace-viewer timeline
//! ([`timeline`]).

pub mod build;
pub mod machine;
pub mod options;
pub mod prereq;
pub mod run;
pub mod symbolize;
pub mod timeline;

pub use build::{build_kernels, BuildError, KernelImage, Profile};
pub use machine::{Accel, Machine, DEFAULT_CPUS};
pub use run::{run, run_script, run_session, status, Input, Outcome, RunError, Session, Verdict, CONSOLE_READY};

/// The value the kernel writes to `isa-debug-exit` on success.
pub const SUCCESS_CODE: u8 = 0x10;
/// The QEMU exit status that [`SUCCESS_CODE`] produces.
pub const SUCCESS_STATUS: i32 = ((SUCCESS_CODE as i32) << 1) | 1;

/// The workspace root (where `Cargo.toml` with `[workspace]` lives).
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root exists")
}
