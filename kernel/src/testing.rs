//! The harness of the integration test kernels (`tests/`): each test kernel
//! is a binary that runs a list of checks and exits QEMU with success only
//! if all of them returned. A failed `assert!` panics, and the panic handler
//! exits with failure; the launcher shows the serial output.

use crate::qemu::{exit, ExitCode};

/// One named check.
pub struct Test {
    pub name: &'static str,
    pub run: fn(),
}

/// `tests![a, b, c]`: a list of [`Test`]s named after the functions.
#[macro_export]
macro_rules! tests {
    ($($f:path),* $(,)?) => {
        &[$($crate::testing::Test { name: stringify!($f), run: $f }),*]
    };
}

/// Run every test in order, then exit QEMU with success.
pub fn run(kernel: &str, tests: &[Test]) -> ! {
    crate::println!("running {} checks in test kernel `{kernel}`", tests.len());
    for t in tests {
        crate::print!("{kernel}::{} ... ", t.name);
        (t.run)();
        crate::println!("ok");
    }
    crate::println!("all {} checks passed", tests.len());
    exit(ExitCode::Success)
}
