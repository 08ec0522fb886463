//! Exclusive (atomic) device access and what ends it: a CPU write,
//! mprotect, fork; another device taking it over is in `two_devices`.

use super::{dev, has_pattern, is_err, ok, pattern, rw, ensure, R, PAGE};
use abi::{PROT_READ, SNAP_EXCLUSIVE};
use user::Errno;

pub(crate) fn exclusive() -> R {
    let d = dev(0)?;
    let mut b = rw(4 * PAGE)?;
    pattern(&mut b, 7);
    ok(d.exclusive(b.addr, 4 * PAGE), "exclusive")?;
    ok(d.check_exclusive(b.addr, 4 * PAGE), "the device holds every page")?;
    let mut snap = [0u8; 4];
    ok(d.snapshot(b.addr, &mut snap), "snapshot")?;
    ensure(snap.iter().all(|&s| s & SNAP_EXCLUSIVE != 0), "snapshot shows exclusive")?;
    ensure(has_pattern(b.bytes(), 7), "the CPU can still read the data")
}

pub(crate) fn exclusive_cpu_write_revokes() -> R {
    let d = dev(0)?;
    let mut b = rw(2 * PAGE)?;
    ok(d.exclusive(b.addr, 2 * PAGE), "exclusive")?;
    b.bytes_mut()[0] = 42; // the CPU writes: exclusivity ends
    ensure(is_err(d.check_exclusive(b.addr, 2 * PAGE), Errno::EPERM), "revoked by the CPU write")?;
    let mut x = [0u8; 1];
    ok(d.read(b.addr, &mut x), "device read")?;
    ensure(x[0] == 42, "the device sees the CPU's write")
}

pub(crate) fn exclusive_mprotect() -> R {
    let d = dev(0)?;
    let b = rw(PAGE)?;
    ok(d.exclusive(b.addr, PAGE), "exclusive")?;
    ok(user::mprotect(b.addr, PAGE, PROT_READ), "mprotect")?;
    ensure(is_err(d.write(b.addr, &[1]), Errno::EPERM), "no device write after mprotect")
}

pub(crate) fn exclusive_cow() -> R {
    let d = dev(0)?;
    let mut b = rw(2 * PAGE)?;
    pattern(&mut b, 8);
    ok(d.exclusive(b.addr, 2 * PAGE), "exclusive")?;
    match user::fork() {
        Ok(0) => user::exit(if has_pattern(b.bytes(), 8) { 0 } else { 1 }),
        Ok(child) => {
            let r = ok(user::wait(child as i64), "wait")?;
            ensure(r.1 == 0, "the child sees the data")?;
            b.bytes_mut()[5] = 0; // COW break in the parent
            ensure(is_err(d.check_exclusive(b.addr, 2 * PAGE), Errno::EPERM), "fork + write ended exclusivity")?;
            let mut x = [1u8; 1];
            ok(d.read(b.addr + 5, &mut x), "device read")?;
            ensure(x[0] == 0, "the device follows the parent's new page")
        }
        Err(_) => Err("fork"),
    }
}

pub(crate) fn check_exclusive_never_taken() -> R {
    let d = dev(0)?;
    let b = rw(PAGE)?;
    ensure(is_err(d.check_exclusive(b.addr, PAGE), Errno::EPERM), "EPERM")
}

