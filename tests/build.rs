//! Link bare-metal binaries with the PVH linker script (it needs an absolute path).
fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        println!("cargo:rustc-link-arg-bins=-T{}", pvh::LINKER_SCRIPT);
    }
    println!("cargo:rerun-if-changed={}", pvh::LINKER_SCRIPT);
}
