//! Building kernels: a nested `cargo build --target x86_64-unknown-none`.
//!
//! The kernel crates cannot be built for the host (they are `no_std`,
//! `no_main`), so they are not default workspace members; the launcher builds
//! them here with their own target directory (`target/kernel`), which also
//! keeps the nested cargo from waiting on the outer one's build lock.

use std::fmt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The bare-metal target every kernel is built for.
pub const KERNEL_TARGET: &str = "x86_64-unknown-none";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// `dev` (optimised a little; see the workspace Cargo.toml).
    Dev,
    /// `release`, for benchmarks.
    Release,
}

/// A built kernel ELF.
#[derive(Clone, Debug)]
pub struct KernelImage {
    /// The binary's name (for test kernels: the test's name).
    pub name: String,
    pub path: PathBuf,
}

#[derive(Debug)]
pub enum BuildError {
    /// cargo itself could not be started.
    Spawn(std::io::Error),
    /// The build failed (cargo printed the diagnostics).
    Failed(std::process::ExitStatus),
    /// The build succeeded but produced no kernel binary.
    NoKernel(String),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Spawn(e) => write!(f, "could not run cargo: {e}"),
            Self::Failed(s) => write!(f, "building the kernel failed ({s})"),
            Self::NoKernel(p) => write!(f, "building `{p}` produced no kernel binary"),
        }
    }
}
impl std::error::Error for BuildError {}

/// Build every binary of `package` for the kernel target and return them.
/// With `bin`, build only that binary.
pub fn build_kernels(package: &str, bin: Option<&str>, profile: Profile) -> Result<Vec<KernelImage>, BuildError> {
    let root = crate::workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        // Not --quiet: cargo's own progress (a bar on a terminal, a line
        // per crate otherwise) goes to stderr, so a first build is seen to move.
        .args(["build", "-p", package, "--target", KERNEL_TARGET, "--message-format=json-render-diagnostics"])
        .arg("--target-dir")
        .arg(root.join("target/kernel"))
        // Flags meant for the host build must not leak into the kernel's
        // (they would replace .cargo/config.toml's relocation model).
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_TARGET_DIR")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    match bin {
        Some(b) => cmd.args(["--bin", b]),
        None => cmd.arg("--bins"),
    };
    if profile == Profile::Release {
        cmd.arg("--release");
    }
    let out = cmd.output().map_err(BuildError::Spawn)?;
    if !out.status.success() {
        return Err(BuildError::Failed(out.status));
    }
    let mut images = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        if let (Some(exe), Some(name)) = (msg["executable"].as_str(), msg["target"]["name"].as_str()) {
            images.push(KernelImage { name: name.to_string(), path: PathBuf::from(exe) });
        }
    }
    images.sort_by(|a, b| a.name.cmp(&b.name));
    if images.is_empty() {
        return Err(BuildError::NoKernel(package.to_string()));
    }
    Ok(images)
}
