//! The console framework: commands run from lines, `help` lists every
//! command with its syntax, bad lines give one clear error and the shell
//! carries on.
#![no_std]
#![no_main]

extern crate alloc;
use alloc::string::String;
use kernel::shell::{args::parse_number, fail, Args, Command, Flow, Out, Shell, ShellError};
use kernel::{tests, BootInfo};

kernel::entry!(main);

fn main(_: &'static BootInfo) -> ! {
    kernel::testing::run("shell", tests![numbers_parse, commands_run_and_help_lists_them, bad_lines_are_errors_and_the_shell_goes_on]);
}

#[derive(Default)]
struct Ctx {
    total: u64,
}

fn add(c: &mut Ctx, a: &mut Args<'_>, out: Out<'_>) -> Result<(), ShellError> {
    let n = a.number("n")?;
    a.done()?;
    c.total = c.total.checked_add(n).ok_or_else(|| fail("total overflows"))?;
    let _ = writeln!(out, "total {}", c.total);
    Ok(())
}

fn at(_: &mut Ctx, a: &mut Args<'_>, out: Out<'_>) -> Result<(), ShellError> {
    let addr = a.addr("addr")?;
    a.done()?;
    let _ = writeln!(out, "{:#x}", addr.as_u64());
    Ok(())
}

static COMMANDS: &[Command<Ctx>] = &[
    Command { name: "add", usage: "add <n>", about: "add n to the total", run: add },
    Command { name: "at", usage: "at <addr>", about: "echo an address", run: at },
];
static SHELL: Shell<Ctx> = Shell::new(COMMANDS);

fn numbers_parse() {
    assert_eq!(parse_number("42"), Some(42));
    assert_eq!(parse_number("0x1000"), Some(0x1000));
    assert_eq!(parse_number("16K"), Some(16 << 10));
    assert_eq!(parse_number("2M"), Some(2 << 20));
    assert_eq!(parse_number("0b101"), Some(5));
    assert_eq!(parse_number("1_000"), Some(1000));
    assert_eq!(parse_number("x"), None);
    assert_eq!(parse_number("99999999999999999999"), None);
    assert_eq!(parse_number("17179869184G"), None, "overflow is an error");
}

fn commands_run_and_help_lists_them() {
    let mut ctx = Ctx::default();
    let mut out = String::new();
    assert_eq!(SHELL.execute(&mut ctx, "add 40", &mut out).unwrap(), Flow::Continue);
    assert_eq!(SHELL.execute(&mut ctx, "  add 0x2   # comment", &mut out).unwrap(), Flow::Continue);
    assert_eq!(ctx.total, 42);
    assert_eq!(out, "total 40\ntotal 42\n");
    let mut help = String::new();
    SHELL.execute(&mut ctx, "help", &mut help).unwrap();
    for line in ["add <n>", "at <addr>", "help", "exit"] {
        assert!(help.contains(line), "help lists `{line}`:\n{help}");
    }
    assert_eq!(SHELL.execute(&mut ctx, "exit", &mut out).unwrap(), Flow::Exit);
    assert_eq!(SHELL.execute(&mut ctx, "", &mut out).unwrap(), Flow::Continue);
}

fn bad_lines_are_errors_and_the_shell_goes_on() {
    let mut ctx = Ctx::default();
    let mut out = String::new();
    let e = SHELL.execute(&mut ctx, "frobnicate", &mut out).unwrap_err();
    assert_eq!(alloc::format!("{e}"), "unknown command `frobnicate` (try `help`)");
    let e = SHELL.execute(&mut ctx, "add", &mut out).unwrap_err();
    assert_eq!(alloc::format!("{e}"), "missing <n>; usage: add <n>");
    let e = SHELL.execute(&mut ctx, "add ten", &mut out).unwrap_err();
    assert!(alloc::format!("{e}").starts_with("<n> `ten` is not a number"), "{e}");
    let e = SHELL.execute(&mut ctx, "add 1 2", &mut out).unwrap_err();
    assert_eq!(alloc::format!("{e}"), "unexpected argument `2`; usage: add <n>");
    assert_eq!(ctx.total, 0, "a rejected line changes nothing");
    let e = SHELL.execute(&mut ctx, "at 0x0000900000000000", &mut out).unwrap_err();
    assert!(alloc::format!("{e}").contains("not a canonical address"), "{e}");
    SHELL.execute(&mut ctx, "add 0xffffffffffffffff", &mut out).unwrap();
    let e = SHELL.execute(&mut ctx, "add 1", &mut out).unwrap_err();
    assert_eq!(alloc::format!("{e}"), "total overflows");
    // And the shell still works.
    SHELL.execute(&mut ctx, "at 0x1000", &mut out).unwrap();
    assert!(out.ends_with("0x1000\n"));
}
