//! The user programs embedded in the kernel image (built from
//! `kernel/user` by the kernel's build script).

include!(concat!(env!("OUT_DIR"), "/programs.rs"));

/// The ELF image of `name`.
pub fn find(name: &str) -> Option<&'static [u8]> {
    PROGRAMS.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
}

/// Every program's name.
pub fn names() -> alloc::vec::Vec<&'static str> {
    PROGRAMS.iter().map(|(n, _)| *n).collect()
}
