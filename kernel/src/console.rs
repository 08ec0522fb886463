//! The serial console (COM1, a 16550 UART) behind the `log` facade.
//!
//! `log=error|warn|info|debug|trace` on the kernel command line sets the
//! level (default `info`); the console's `trace on|events|off` changes it
//! at run time. What each level shows:
//!
//! | level | lines |
//! |-------|-------|
//! | info  | boot facts, one line per scenario step |
//! | debug | one line per HMM event: device fault (`fault.begin`/`fault.end`), fault round, mirror update, invalidation (kind, event, range, mask), IOTLB command, replay, swap-in, COW break |
//! | trace | per entry: each mirror entry set, each CPU PTE installed, each DMA transfer |
//!
//! Lines are prefixed with the level; debug and trace lines also carry the
//! guest TSC, `[DEBUG @<tsc>] <event> key=value ...`, the shape the
//! launcher's `--trace FILE` turns into a timeline
//! (`boot/launcher/src/timeline.rs`). The port is a spin lock; an interrupt or fault handler that must print while the lock
//! may be held uses [`emergency_write`], which takes the port regardless.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicUsize, Ordering};
use log::{Level, LevelFilter, Log, Metadata, Record};
use spin::{Lazy, Mutex};
use uart_16550::SerialPort;

const COM1: u16 = 0x3f8;

static PORT: Lazy<Mutex<SerialPort>> = Lazy::new(|| {
    // SAFETY: 0x3f8 is COM1 on the q35 machine; nothing else drives it.
    let mut port = unsafe { SerialPort::new(COM1) };
    port.init();
    Mutex::new(port)
});

/// Write formatted text to the serial port.
pub fn write(args: fmt::Arguments<'_>) {
    x86_64::instructions::interrupts::without_interrupts(|| {
        let _ = PORT.lock().write_fmt(args);
    });
}

/// Write even if the port's lock is held (the holder was interrupted for
/// good: a fatal trap or a panic). Output may interleave; nothing deadlocks.
pub fn emergency_write(args: fmt::Arguments<'_>) {
    // SAFETY: same port as above; the lock holder (if any) will never run
    // again, so taking the port from under it cannot corrupt shared state
    // beyond interleaved characters.
    let mut port = unsafe { SerialPort::new(COM1) };
    let _ = port.write_fmt(args);
}

/// Read one byte from the serial line, if one has arrived.
pub fn try_read_byte() -> Option<u8> {
    x86_64::instructions::interrupts::without_interrupts(|| {
        // Line status register bit 0: data ready.
        let mut lsr = x86_64::instructions::port::Port::<u8>::new(COM1 + 5);
        let mut data = x86_64::instructions::port::Port::<u8>::new(COM1);
        let _guard = PORT.lock();
        // SAFETY: reading COM1's LSR and RBR has no side effect beyond
        // consuming the received byte, which is what we want.
        unsafe { (lsr.read() & 1 != 0).then(|| data.read()) }
    })
}

/// `print!` to the serial console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::write(format_args!($($arg)*)) };
}

/// `println!` to the serial console.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::console::write(format_args!("{}\n", format_args!($($arg)*))) };
}

struct SerialLogger;

impl Log for SerialLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }
    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
        } else if record.level() <= Level::Info {
            write(format_args!("[{:<5}] {}\n", record.level(), record.args()));
        } else {
            write(format_args!("[{:<5} @{}] {}\n", record.level(), crate::cycles::now(), record.args()));
        }
    }
    fn flush(&self) {}
}

static LOGGER: SerialLogger = SerialLogger;

/// The level the command line asked for (a `LevelFilter` as usize).
static BOOT_LEVEL: AtomicUsize = AtomicUsize::new(LevelFilter::Info as usize);

/// The level the kernel was booted with (`log=` on the command line).
pub fn boot_level() -> LevelFilter {
    match BOOT_LEVEL.load(Ordering::Relaxed) {
        0 => LevelFilter::Off,
        1 => LevelFilter::Error,
        2 => LevelFilter::Warn,
        3 => LevelFilter::Info,
        4 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    }
}

/// Change the level at run time (the console's `trace` command).
pub fn set_level(level: LevelFilter) {
    log::set_max_level(level);
}

/// Install the logger at the level named by `level` (None = info). An
/// unknown level name is reported and info is used.
pub fn init(level: Option<&str>) {
    let _ = log::set_logger(&LOGGER);
    let filter = match level {
        None => LevelFilter::Info,
        Some(l) => l.parse().unwrap_or_else(|_| {
            write(format_args!("[WARN ] unknown log level `{l}` on the command line; using info\n"));
            LevelFilter::Info
        }),
    };
    BOOT_LEVEL.store(filter as usize, Ordering::Relaxed);
    log::set_max_level(filter);
}
