//! The hmmos kernel.
//!
//! A kernel binary (the demo in `main.rs`, or a test kernel under `tests/`)
//! names its main function with [`entry!`]; the PVH boot code calls
//! `pvh_rust_entry`, which runs [`init`] and then that function.
//!
//! ```text
//!  pvh_rust_entry(start_info)            (boot/pvh: 32-bit entry → long mode)
//!   └─ init()
//!       ├─ read the PVH start info        → BootInfo (memory map, RSDP, cmdline)
//!       ├─ console + log level            (uart_16550 behind `log`)
//!       ├─ GDT/TSS (IST stacks), IDT      (arch)
//!       ├─ own page tables, frames, heap  (mm)
//!       ├─ local APIC, PICs masked, sti   (irq)
//!       ├─ the other CPUs (MADT, INIT-SIPI) (smp: they wait for the scheduler)
//!       └─ main(&BootInfo)                (the binary's)
//! ```
//!
//! **New here? Start with [`guide`]**: why HMM, the words, and three walks
//! through the source (one device fault, one fork, one munmap) tied to the
//! console output, with exercises.
//!
//! User processes ([`proc`]) start the scheduler ([`sched`]) on the first
//! spawn: the running kernel thread becomes task 0, the LAPIC timer ticks,
//! and ring-3 traps go to `proc`.
#![no_std]
// The reading path (`cargo docs`) renders private items too, so a link from
// public docs to a private helper is a working link there.
#![allow(rustdoc::private_intra_doc_links)]

// Built for the host by mistake (`cargo build -p kernel`, `cargo test
// --workspace`): say so, instead of rustc's missing-panic-handler and
// build-std advice. Linting and documenting for the host are fine (`cargo
// clippy --workspace`, `cargo doc`): they never link.
#[cfg(not(any(target_os = "none", clippy, doc)))]
compile_error!(
    "the kernel crates (kernel, test-kernels) are bare-metal: they build only for x86_64-unknown-none. \
     `cargo run` and `cargo test` build them through the launcher; to build or lint them directly use \
     `cargo kbuild` or `cargo kclippy` (aliases in .cargo/config.toml)"
);

extern crate alloc;

pub mod acpi;
pub mod arch;
pub mod bench;
pub mod aspace;
pub mod cmdline;
pub mod console;
pub mod cpus;
pub mod cycles;
pub mod demo;
pub mod guide;
pub mod hmmdev;
pub mod irq;
pub mod mm;
pub mod platform;
pub mod proc;
pub mod qemu;
pub mod sched;
pub mod shell;
pub mod smp;
pub mod sync;
pub mod testing;
pub mod world;

pub use pvh::BootInfo;

use spin::Once;
use x86_64::PhysAddr;

static BOOT_INFO: Once<BootInfo> = Once::new();

/// The boot hand-off, once [`init`] has read it.
pub fn boot_info() -> &'static BootInfo {
    BOOT_INFO.get().expect("boot info read by init")
}

/// Bring the machine up: called by `pvh_rust_entry` (see [`entry!`]).
pub fn init(start_info: u32) -> &'static BootInfo {
    let parsed = BootInfo::parse(start_info as u64, |p, buf| {
        // SAFETY: the start info, memory map and command line sit in low
        // memory, identity-mapped by the boot page tables at this point.
        unsafe { mm::direct::read_phys(PhysAddr::new(p), buf) }
    });
    let info = match parsed {
        Ok(info) => BOOT_INFO.call_once(|| info),
        Err(e) => {
            console::emergency_write(format_args!("hmmos: cannot boot: {e}\n"));
            qemu::exit(qemu::ExitCode::Failure)
        }
    };
    console::init(cmdline::get(info.cmdline(), "log"));
    arch::init();
    log::info!("hmmos booting; command line: \"{}\"", info.cmdline());
    log::info!("accelerator: {}", cmdline::get(info.cmdline(), "accel").unwrap_or("unknown"));
    log::info!("memory map (from PVH start info):");
    for r in info.memory_map() {
        log::info!("  {r}");
    }
    if info.regions_dropped > 0 {
        log::warn!("  {} more memory-map entries were dropped (table full)", info.regions_dropped);
    }

    let image = mm::kpt::kernel_image_phys();
    let mut early = mm::early::EarlyFrames::new(info, image.1).unwrap_or_else(|| {
        panic!("no usable RAM below 1 GiB after the kernel image for the boot page tables")
    });
    let layout = mm::kpt::build_and_switch(info, &mut early);
    mm::frames::init(info, &mut early, &[image]);
    let stats = mm::frames::stats();
    log::info!(
        "frames: {} managed ({} MiB), {} free; kernel image {:#x}..{:#x}",
        stats.managed,
        (stats.managed * 4096) >> 20,
        stats.free,
        image.0.as_u64(),
        image.1.as_u64()
    );
    if let Err(e) = mm::heap::init() {
        panic!("kernel heap: {e}");
    }
    // The shared zero frame exists from boot on (part of every baseline).
    if mm::frames::zero_frame().is_err() {
        panic!("no frame for the shared zero page");
    }
    for line in alloc::format!("{layout}").lines() {
        log::info!("{line}");
    }
    if let Err(e) = irq::init() {
        panic!("interrupts: {e}");
    }
    smp::start_aps();
    info
}

/// Define the kernel's entry: `entry!(main)` with `fn main(&'static BootInfo) -> !`.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        #[no_mangle]
        extern "C" fn pvh_rust_entry(start_info: u32) -> ! {
            let main: fn(&'static $crate::BootInfo) -> ! = $main;
            main($crate::init(start_info))
        }
    };
}

/// The panic handler: the message with its location, a frame-pointer
/// backtrace (symbolized by the launcher), and a failure exit.
///
/// Only for the bare-metal target: built for the host (by `cargo clippy
/// --workspace`, say) the kernel library uses std's handler instead.
#[cfg(target_os = "none")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    x86_64::instructions::interrupts::disable();
    match info.location() {
        Some(l) => console::emergency_write(format_args!("\nPANIC at {}:{}:{}: {}\n", l.file(), l.line(), l.column(), info.message())),
        None => console::emergency_write(format_args!("\nPANIC: {}\n", info.message())),
    }
    arch::backtrace::print_here();
    qemu::exit(qemu::ExitCode::Failure)
}
