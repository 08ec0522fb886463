//! Link bare-metal binaries with the PVH linker script (it needs an
//! absolute path), and build the user programs (`user/`, a workspace of its
//! own) so the kernel can embed them: each program's ELF is copied to
//! OUT_DIR and listed in `programs.rs` (see `proc::programs`).
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        println!("cargo:rustc-link-arg-bins=-T{}", pvh::LINKER_SCRIPT);
    }
    println!("cargo:rerun-if-changed={}", pvh::LINKER_SCRIPT);
    build_user_programs();
}

fn build_user_programs() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"));
    let user = manifest.join("user");
    for p in ["user/src", "user/Cargo.toml", "user/user.ld", "user/build.rs", "abi/src", "abi/Cargo.toml"] {
        println!("cargo:rerun-if-changed={}", manifest.join(p).display());
    }
    // A program is `src/bin/NAME.rs` or `src/bin/NAME/main.rs`.
    let mut names: Vec<String> = std::fs::read_dir(user.join("src/bin"))
        .expect("kernel/user/src/bin")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            match name.strip_suffix(".rs") {
                Some(n) => Some(n.to_string()),
                None if e.path().join("main.rs").is_file() => Some(name),
                None => None,
            }
        })
        .collect();
    names.sort();
    let target_dir = manifest.join("../target/user");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&user)
        .args(["build", "--quiet", "--release", "--bins", "--target", "x86_64-unknown-none"])
        .arg("--target-dir")
        .arg(&target_dir)
        // The outer build's settings are not the user programs'.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_PRIMARY_PACKAGE")
        .env_remove("__CARGO_DEFAULT_LIB_METADATA")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .status()
        .expect("run cargo for the user programs");
    assert!(status.success(), "building the user programs (kernel/user) failed");
    let mut list = String::from("/// Every user program, by name, as ELF bytes.\npub static PROGRAMS: &[(&str, &[u8])] = &[\n");
    for n in &names {
        let from = target_dir.join("x86_64-unknown-none/release").join(n);
        let to = out.join(format!("user-{n}.elf"));
        copy_if_changed(&from, &to);
        list.push_str(&format!("    (\"{n}\", include_bytes!(\"{}\")),\n", to.display()));
    }
    list.push_str("];\n");
    std::fs::write(out.join("programs.rs"), list).expect("write programs.rs");
}

fn copy_if_changed(from: &Path, to: &Path) {
    let new = std::fs::read(from).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
    if std::fs::read(to).ok().as_deref() != Some(&new[..]) {
        std::fs::write(to, new).expect("copy a user program");
    }
}
