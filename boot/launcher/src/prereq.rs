//! What must be on the host before anything is built or booted, checked
//! first so that a fresh machine gets one clear line instead of a compiler
//! error or a failure after a minute of building:
//!
//! * the Rust target `x86_64-unknown-none` — `rust-toolchain.toml` asks for
//!   it, but rustup honours that only when it installs the toolchain itself;
//!   when it is missing the launcher runs `rustup target add` (and says so);
//! * QEMU (`qemu-system-x86_64` on `PATH`) — reported once, with the
//!   install command, by `cargo run` and by `cargo test` alike;
//! * for `--accel kvm`: whether the host CPU has VT-x or AMD-V (a warning:
//!   a paravirtual `/dev/kvm` without them works, three orders of magnitude
//!   slower than TCG).

use crate::build::KERNEL_TARGET;
use crate::machine::{QEMU, QEMU_INSTALL_HINT};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A prerequisite that is missing and could not be put in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetupError {
    /// QEMU is not on `PATH`.
    QemuMissing,
    /// The kernel target is not installed and could not be added.
    TargetMissing(String),
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::QemuMissing => f.write_str(QEMU_INSTALL_HINT),
            Self::TargetMissing(why) => write!(f, "the Rust target {KERNEL_TARGET} is missing and could not be installed: {why}"),
        }
    }
}
impl std::error::Error for SetupError {}

/// `name` as found on the directories of `path` (a `PATH`-style value).
pub fn find_in_path(name: &str, path: &OsStr) -> Option<PathBuf> {
    std::env::split_paths(path).map(|d| d.join(name)).find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        p.is_file()
    }
}

fn path_var() -> OsString {
    std::env::var_os("PATH").unwrap_or_default()
}

/// QEMU on this process's `PATH`.
pub fn qemu() -> Result<PathBuf, SetupError> {
    qemu_in(&path_var())
}

/// QEMU on the given `PATH`.
pub fn qemu_in(path: &OsStr) -> Result<PathBuf, SetupError> {
    find_in_path(QEMU, path).ok_or(SetupError::QemuMissing)
}

/// Whether the sysroot of `rustc` has the kernel target's `core`.
fn target_installed(rustc: &OsStr, root: &Path) -> Result<bool, String> {
    let out = Command::new(rustc)
        .current_dir(root)
        .args(["--print", "sysroot"])
        .output()
        .map_err(|e| format!("could not run {}: {e}", rustc.to_string_lossy()))?;
    if !out.status.success() {
        return Err(format!("`rustc --print sysroot` failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    Ok(sysroot.join("lib/rustlib").join(KERNEL_TARGET).join("lib").is_dir())
}

/// What [`ensure_kernel_target`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum TargetCheck {
    AlreadyInstalled,
    /// Installed now through rustup.
    Installed,
}

/// Make sure `x86_64-unknown-none` is installed for the toolchain that
/// builds in `root`, running `rustup target add` if it is not. `say` gets
/// the line announcing the install (before it starts).
pub fn ensure_kernel_target(root: &Path, say: &mut dyn FnMut(&str)) -> Result<TargetCheck, SetupError> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let rustup = std::env::var_os("RUSTUP").unwrap_or_else(|| "rustup".into());
    ensure_kernel_target_with(&rustc, &rustup, root, say)
}

/// [`ensure_kernel_target`] with explicit `rustc` and `rustup` programs.
pub fn ensure_kernel_target_with(rustc: &OsStr, rustup: &OsStr, root: &Path, say: &mut dyn FnMut(&str)) -> Result<TargetCheck, SetupError> {
    if target_installed(rustc, root).map_err(SetupError::TargetMissing)? {
        return Ok(TargetCheck::AlreadyInstalled);
    }
    say(&format!("the Rust target {KERNEL_TARGET} is not installed: running `rustup target add {KERNEL_TARGET}`"));
    let status = Command::new(rustup)
        .current_dir(root)
        .args(["target", "add", KERNEL_TARGET])
        .status()
        .map_err(|e| SetupError::TargetMissing(format!("could not run rustup ({e}); install the target with your toolchain's installer")))?;
    if !status.success() {
        return Err(SetupError::TargetMissing(format!("`rustup target add {KERNEL_TARGET}` failed ({status})")));
    }
    match target_installed(rustc, root) {
        Ok(true) => Ok(TargetCheck::Installed),
        Ok(false) => Err(SetupError::TargetMissing("rustup reported success but the target's `core` is still absent".into())),
        Err(e) => Err(SetupError::TargetMissing(e)),
    }
}

/// The warning `--accel kvm` deserves on this host, if any. `cpuinfo` is
/// the text of `/proc/cpuinfo`.
pub fn kvm_warning(cpuinfo: &str, dev_kvm_exists: bool) -> Option<String> {
    let hw_virt = cpuinfo.lines().filter(|l| l.starts_with("flags")).any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    match (hw_virt, dev_kvm_exists) {
        (true, true) => None,
        (_, false) => Some("warning: --accel kvm but /dev/kvm does not exist: QEMU will refuse to start; use --accel tcg".into()),
        (false, true) => Some(
            "warning: --accel kvm but this host's CPU has no VT-x/AMD-V (no vmx/svm in /proc/cpuinfo): /dev/kvm is a paravirtual one, \
             about 1000x slower than TCG (a boot can take a minute); --accel tcg is faster here"
                .into(),
        ),
    }
}

/// [`kvm_warning`] for this host.
pub fn host_kvm_warning() -> Option<String> {
    kvm_warning(&std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default(), Path::new("/dev/kvm").exists())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// An executable shell script. The executable itself is written by a
    /// child `cp`, never opened for writing in this process: tests run on
    /// several threads, and a thread that spawns a process while this one
    /// holds a write descriptor hands that descriptor to its child until
    /// the child's `exec`, so executing the script then fails with ETXTBSY
    /// ("Text file busy") — seen on CI.
    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        let text = dir.join(format!("{name}.txt"));
        std::fs::write(&text, format!("#!/bin/sh\n{body}\n")).unwrap();
        let _ = std::fs::remove_file(&p);
        let copied = Command::new("cp").arg(&text).arg(&p).status().unwrap();
        assert!(copied.success(), "cp {} {}", text.display(), p.display());
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("hmmos-prereq-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn qemu_is_looked_up_on_path() {
        let empty = tempdir("noqemu");
        assert_eq!(qemu_in(empty.as_os_str()), Err(SetupError::QemuMissing));
        let msg = SetupError::QemuMissing.to_string();
        assert!(msg.contains("apt-get install qemu-system-x86") && !msg.contains('\n'), "one line with the install command: {msg}");
        let with = tempdir("qemu");
        script(&with, QEMU, "exit 0");
        let path = std::env::join_paths([empty.clone(), with.clone()]).unwrap();
        assert_eq!(qemu_in(&path), Ok(with.join(QEMU)));
    }

    #[test]
    fn a_missing_target_is_added_through_rustup() {
        let d = tempdir("target");
        let sysroot = d.join("sysroot");
        std::fs::create_dir_all(&sysroot).unwrap();
        let log = d.join("rustup.log");
        let rustc = script(&d, "rustc", &format!("echo {}", sysroot.display()));
        // The fake rustup records its arguments and installs the target.
        let rustup = script(
            &d,
            "rustup",
            &format!("echo \"$@\" >> {}\nmkdir -p {}/lib/rustlib/{KERNEL_TARGET}/lib", log.display(), sysroot.display()),
        );
        let mut said = Vec::new();
        let r = ensure_kernel_target_with(rustc.as_os_str(), rustup.as_os_str(), &d, &mut |s| said.push(s.to_string()));
        assert_eq!(r, Ok(TargetCheck::Installed));
        assert_eq!(std::fs::read_to_string(&log).unwrap().trim(), format!("target add {KERNEL_TARGET}"));
        assert_eq!(said.len(), 1);
        assert!(said[0].contains("rustup target add x86_64-unknown-none"), "{said:?}");
        // Second time: nothing to do, nothing said.
        said.clear();
        let r = ensure_kernel_target_with(rustc.as_os_str(), rustup.as_os_str(), &d, &mut |s| said.push(s.to_string()));
        assert_eq!(r, Ok(TargetCheck::AlreadyInstalled));
        assert!(said.is_empty());
    }

    #[test]
    fn a_failing_rustup_is_a_clear_error() {
        let d = tempdir("target-fail");
        let rustc = script(&d, "rustc", &format!("echo {}", d.join("nowhere").display()));
        let rustup = script(&d, "rustup", "exit 1");
        let e = ensure_kernel_target_with(rustc.as_os_str(), rustup.as_os_str(), &d, &mut |_| {}).unwrap_err();
        assert!(e.to_string().contains("`rustup target add x86_64-unknown-none` failed"), "{e}");
        let e = ensure_kernel_target_with(rustc.as_os_str(), d.join("no-rustup").as_os_str(), &d, &mut |_| {}).unwrap_err();
        assert!(e.to_string().contains("could not run rustup"), "{e}");
    }

    #[test]
    fn kvm_without_hardware_virtualisation_warns() {
        let with_vmx = "processor : 0\nflags\t\t: fpu vme de pse vmx sse\n";
        let without = "processor : 0\nflags\t\t: fpu vme de pse sse hypervisor\n";
        assert_eq!(kvm_warning(with_vmx, true), None);
        assert!(kvm_warning(without, true).unwrap().contains("no VT-x/AMD-V"));
        assert!(kvm_warning(with_vmx, false).unwrap().contains("/dev/kvm does not exist"));
        assert!(kvm_warning("flags : svm", true).is_none(), "AMD-V counts");
    }
}
