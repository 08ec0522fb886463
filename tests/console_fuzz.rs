//! Console fuzz: 10,000 random and malformed lines through the `hmm>`
//! console's real command table — random tokens, missing and extra
//! arguments, 0xffffffffffffffff, negative numbers, 2^32 + 1 as a pid,
//! unaligned addresses, overflowing ranges, unknown pids and accelerators,
//! non-UTF-8 bytes, control characters, lines over 4 KiB — interleaved with
//! data checks on a guard process that no fuzz line may name.
//!
//! Passes if every line gets an answer (a result, `Ok` or a one-line
//! error), the kernel never panics, and the guard's data is intact at every
//! check and at the end.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::{self, Write};
use kernel::shell::{Flow, ShellError, MAX_LINE};
use kernel::world::{World, SHELL};
use test_kernels::Rng;

kernel::entry!(main);

fn main(_: &'static kernel::BootInfo) -> ! {
    kernel::testing::run("console_fuzz", kernel::tests![ten_thousand_hostile_lines]);
}

const LINES: u32 = 10_000;

/// Output that keeps only a bounded tail (enough to report a failure).
#[derive(Default)]
struct Tail {
    bytes: usize,
    last: String,
}

impl Write for Tail {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.bytes += s.len();
        if self.last.len() > 512 {
            self.last.clear();
        }
        self.last.push_str(&s[..s.len().min(512)]);
        Ok(())
    }
}

/// The command templates: name and argument kinds.
#[derive(Clone, Copy)]
enum Kind {
    Pid,
    Accel,
    Addr,
    Len,
    /// A length that stays small (CPU fill/check and device jobs: their
    /// cost is real work, and the guest has 512 MiB).
    SmallLen,
    Byte,
    Prot,
    Text,
    MmapOpt,
}

use Kind::*;

const TEMPLATES: &[(&str, &[Kind])] = &[
    ("spawn", &[]),
    ("ps", &[]),
    ("kill", &[Pid]),
    ("mmap", &[Pid, Len, MmapOpt, MmapOpt]),
    ("munmap", &[Pid, Addr, Len]),
    ("mprotect", &[Pid, Addr, Len, Prot]),
    ("fork", &[Pid]),
    ("migrate", &[Pid, Addr]),
    ("swapout", &[Pid, Addr, Len]),
    ("write", &[Pid, Addr, Text]),
    ("read", &[Pid, Addr, SmallLen]),
    ("fill", &[Pid, Addr, SmallLen, Byte]),
    ("check", &[Pid, Addr, SmallLen, Byte]),
    ("bind", &[Accel, Pid]),
    ("unbind", &[Accel]),
    ("dread", &[Accel, Addr, SmallLen]),
    ("dwrite", &[Accel, Addr, Text]),
    ("dfill", &[Accel, Addr, SmallLen, Byte]),
    ("dcopy", &[Accel, Addr, Addr, SmallLen]),
    ("exclusive", &[Accel, Addr, Len]),
    ("prefault", &[Pid, Len]),
    ("walk", &[Pid, Addr]),
    ("mirror", &[Accel, Addr, Len]),
    ("stats", &[]),
    ("help", &[]),
    ("frobnicate", &[Addr]),
    ("", &[]),
];

/// Never 1 (the guard's pid) in any spelling: 2^32 + 1 checks that a pid
/// is not cut to 32 bits.
const PIDS: &[&str] = &["2", "3", "4", "5", "6", "7", "0", "4294967297", "18446744073709551615", "-1", "0x2", "99999999999999999999999"];
const ACCELS: &[&str] = &["0", "1", "2", "0x1", "18446744073709551615", "-0", "4294967296"];
const ADDRS: &[&str] = &[
    "0x10000000", "0x10000800", "0x10001000", "0x10003ffe", "0x1000ffff", "0x10010000", "0x20000000", "0x0", "0x1", "0xfff",
    "0x7ffffffff000", "0x7fffffffffff", "0x800000000000", "0xfffffffffffff000", "0xffffffffffffffff", "0xffff800000000000",
    "0xffffffff80000000", "0xfffffffff000", "18446744073709551615", "-4096", "0x", "0x1g", "268435456",
];
const LENS: &[&str] = &[
    "0", "1", "4096", "4K", "8K", "64K", "1M", "16M", "1G", "4G", "0xffffffffffffffff", "0x7ffffffff000", "0x800000000000",
    "4097", "-1", "17179869184G", "0x1000", "2", "512", "4095",
];
const SMALL_LENS: &[&str] = &["0", "1", "16", "4095", "4096", "4097", "8K", "64K", "0xffffffffffffffff", "-1", "0x800000000000", "18446744073709551616"];
const BYTES: &[&str] = &["0", "0x41", "255", "256", "-1", "0xffffffffffffffff", "x"];
const PROTS: &[&str] = &["r", "rw", "rx", "rwx", "none", "w", "", "rr", "RW", "x"];
const MMAP_OPTS: &[&str] = &["rw", "r", "at=0x10000000", "at=0x20000000", "at=0xfffffffffffff000", "at=0x800000000000", "at=", "fixed", "at=0x10000001", "bogus"];
const JUNK: &[&str] = &["", "#", "# comment", "0x", "--", "é", "\u{202e}", "help", "exit", "1x", "\t", "0b102", "_", "9999999999999999999999"];

fn pick<'a>(rng: &mut Rng, from: &[&'a str]) -> &'a str {
    from[rng.below(from.len() as u64) as usize]
}

fn token(rng: &mut Rng, k: Kind) -> String {
    match k {
        Pid => pick(rng, PIDS).into(),
        Accel => pick(rng, ACCELS).into(),
        Addr => {
            if rng.below(4) == 0 {
                alloc::format!("{:#x}", 0x1000_0000 + rng.below(0x20000))
            } else {
                pick(rng, ADDRS).into()
            }
        }
        Len => pick(rng, LENS).into(),
        SmallLen => pick(rng, SMALL_LENS).into(),
        Byte => pick(rng, BYTES).into(),
        Prot => pick(rng, PROTS).into(),
        Text => {
            let n = rng.below(40) as usize;
            (0..n).map(|_| (b'!' + rng.below(94) as u8) as char).collect()
        }
        MmapOpt => pick(rng, MMAP_OPTS).into(),
    }
}

/// One fuzz line as raw bytes.
fn line(rng: &mut Rng) -> Vec<u8> {
    let (name, kinds) = TEMPLATES[rng.below(TEMPLATES.len() as u64) as usize];
    let mut words: Vec<String> = Vec::new();
    words.push(name.into());
    for &k in kinds {
        if rng.below(12) != 0 {
            words.push(token(rng, k));
        }
    }
    match rng.below(10) {
        0 => words.push(pick(rng, JUNK).into()),
        1 if words.len() > 1 => {
            let i = 1 + rng.below(words.len() as u64 - 1) as usize;
            words[i] = pick(rng, JUNK).into();
        }
        _ => {}
    }
    let mut bytes: Vec<u8> = words.join(" ").into_bytes();
    match rng.below(25) {
        // Corrupted bytes: non-UTF-8, control characters, NUL, escape.
        0 => bytes.insert(rng.below(bytes.len() as u64 + 1) as usize, [0xff, 0xc3, 0x80, 0xfe][rng.below(4) as usize]),
        1 => bytes.insert(rng.below(bytes.len() as u64 + 1) as usize, [0x00, 0x01, 0x1b, 0x07, 0x7f][rng.below(5) as usize]),
        // Over 4 KiB.
        2 => bytes.resize(MAX_LINE + 1 + rng.below(8192) as usize, b'7'),
        _ => {}
    }
    bytes
}

fn run(world: &mut World, text: &str) -> Result<Flow, ShellError> {
    let mut out = Tail::default();
    SHELL.execute(world, text, &mut out)
}

/// The guard (pid 1): 64 KiB of 0x5a read-write and 16 KiB of 0xa5
/// read-only, at the very addresses fuzz lines aim at in other processes.
fn guard_intact(world: &mut World) {
    for check in ["check 1 0x10000000 64K 0x5a", "check 1 0x10010000 16K 0xa5"] {
        if let Err(e) = run(world, check) {
            panic!("guard data check `{check}` failed: {e}");
        }
    }
}

fn ten_thousand_hostile_lines() {
    let mut world = World::default();
    for setup in [
        "spawn",
        "mmap 1 64K rw at=0x10000000 fixed",
        "fill 1 0x10000000 64K 0x5a",
        "mmap 1 16K rw at=0x10010000 fixed",
        "fill 1 0x10010000 16K 0xa5",
        "mprotect 1 0x10010000 16K r",
    ] {
        run(&mut world, setup).unwrap_or_else(|e| panic!("setup `{setup}`: {e}"));
    }
    guard_intact(&mut world);
    // Lines that panicked the kernel before: each must be an error now.
    run(&mut world, "spawn").unwrap();
    run(&mut world, "mmap 2 64K rw at=0x10000000 fixed").unwrap();
    run(&mut world, "bind 0 2").unwrap();
    for killer in [
        "dread 0 0xffffffffffffff00 256",
        "dwrite 0 0xfffffffffffffff0 0123456789abcdefXYZ",
        "dfill 0 0xffffffffffffff00 4096 1",
        "dcopy 0 0x10000000 0xfffffffffffff800 4096",
        "exclusive 0 0xfffffffffffff000 0x2000",
        "exclusive 0 0x10000000 4G",
        "mmap 2 0xfffffffffffff000",
        "mmap 2 4K at=0xfffffffffffff000",
        "munmap 2 0x10001000 0",
        "mprotect 2 0x10001001 4K none",
        "migrate 2 0xffff800000000000",
        "migrate 2 0xfffffffffffff000",
        "fill 2 0x10000000 64M 1",
        "check 2 0x10000000 64M 0",
        "fill 2 0xfffffffffffff000 0x2000 1",
        "dfill 0 0x10000000 1G 1",
        "kill 4294967297",
        "dread 0 0xfffffffff000 16",
        "dwrite 0 0xfffffffff000 into-the-bounce-page",
        "read 2 0xffff800000000000 16",
        "swapout 2 0xfffffffffffff000 0x2000",
        "mirror 0 0xfffffffffffff000 4096",
    ] {
        if run(&mut world, killer).is_ok() {
            panic!("`{killer}` should have been refused");
        }
    }
    guard_intact(&mut world);
    let mut rng = Rng::new(0xf022_0001);
    let (mut ok, mut errors, mut refused_lines, mut checks) = (0u32, 0u32, 0u32, 0u32);
    let mut out = Tail::default();
    for n in 0..LINES {
        let bytes = line(&mut rng);
        match SHELL.execute_bytes(&mut world, &bytes, &mut out) {
            Ok(_) => ok += 1,
            Err(ShellError::Line(_)) => refused_lines += 1,
            Err(_) => errors += 1,
        }
        if n % 100 == 99 {
            guard_intact(&mut world);
            checks += 1;
        }
    }
    guard_intact(&mut world);
    // The console still works end to end.
    run(&mut world, "spawn").unwrap();
    let mut listing = Tail::default();
    SHELL.execute(&mut world, "ps", &mut listing).unwrap();
    assert!(listing.bytes > 0, "ps answers");
    kernel::println!();
    kernel::println!(
        "console_fuzz: {LINES} lines: {ok} ran, {errors} answered with an error, {refused_lines} refused as lines (too long, not UTF-8, control characters); {checks} guard data checks intact; {} processes at the end",
        world.procs.len()
    );
    assert_eq!(ok + errors + refused_lines, LINES, "every line has an answer");
    assert!(ok > 1000 && errors > 3000 && refused_lines > 500, "the mix reaches every kind of answer");
}
