//! The host side of hmmos: build kernels for `x86_64-unknown-none` and boot
//! them in QEMU.
//!
//! One place owns the emulated machine ([`machine`]); `cargo run` (the
//! `hmmos` binary) and `cargo test` (the `kernels` integration test, which
//! boots every test kernel under `tests/`) both go through it, so a test
//! kernel sees exactly the machine a user sees.
//!
//! Exit protocol: a kernel ends by writing a code to the `isa-debug-exit`
//! port (0xf4); QEMU then exits with `(code << 1) | 1`. The kernel writes
//! [`SUCCESS_CODE`] only when it finished and every check held. Any other
//! status — another code, a triple fault (QEMU exits 0 with `-no-reboot`), a
//! QEMU abort (134), or our timeout — is a failure.

pub mod build;
pub mod machine;
pub mod options;
pub mod run;

pub use build::{build_kernels, BuildError, KernelImage, Profile};
pub use machine::{Accel, Machine};
pub use run::{run, run_script, Outcome, RunError, CONSOLE_READY};

/// The value the kernel writes to `isa-debug-exit` on success.
pub const SUCCESS_CODE: u8 = 0x10;
/// The QEMU exit status that [`SUCCESS_CODE`] produces.
pub const SUCCESS_STATUS: i32 = ((SUCCESS_CODE as i32) << 1) | 1;

/// The workspace root (where `Cargo.toml` with `[workspace]` lives).
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root exists")
}
