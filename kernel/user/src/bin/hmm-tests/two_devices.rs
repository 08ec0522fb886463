//! The `hmm2` fixture: two accelerators mirroring one process.

use super::{dev, has_pattern, is_err, lone_page, ok, pattern, rw, ensure, R, PAGE};
use abi::{PROT_READ, PROT_WRITE, SNAP_READ, SNAP_WRITE};
use user::{Device, Errno};

pub(crate) fn two_devices_double_map() -> R {
    let (d0, d1) = (dev(0)?, dev(1)?);
    let mut b = rw(4 * PAGE)?;
    pattern(&mut b, 11);
    let (mut o0, mut o1) = (rw(4 * PAGE)?, rw(4 * PAGE)?);
    ok(d0.read(b.addr, o0.bytes_mut()), "read 0")?;
    ok(d1.read(b.addr, o1.bytes_mut()), "read 1")?;
    ensure(has_pattern(o0.bytes(), 11) && has_pattern(o1.bytes(), 11), "both devices mirror the same range")
}

pub(crate) fn two_devices_write_then_read() -> R {
    let (d0, d1) = (dev(0)?, dev(1)?);
    let b = rw(2 * PAGE)?;
    ok(d0.fill(b.addr, 2 * PAGE, 0x3c), "dev0 fill")?;
    let mut out = [0u8; 32];
    ok(d1.read(b.addr + PAGE, &mut out), "dev1 read")?;
    ensure(out.iter().all(|&x| x == 0x3c), "dev1 sees dev0's writes")
}

pub(crate) fn two_devices_snapshot() -> R {
    let (d0, d1) = (dev(0)?, dev(1)?);
    let (p0, p1) = (lone_page(4, PROT_READ | PROT_WRITE)?, lone_page(5, PROT_READ | PROT_WRITE)?);
    let mut x = [0u8; 1];
    ok(d0.read(p0, &mut x), "dev0 read")?;
    ok(d1.write(p1, &[1]), "dev1 write")?;
    let mut s = [0u8; 1];
    let mut snap = |d: &Device, a| -> Result<u8, &'static str> {
        ok(d.snapshot(a, &mut s), "snapshot")?;
        Ok(s[0])
    };
    let (a0, b0, a1, b1) = (snap(&d0, p0)?, snap(&d0, p1)?, snap(&d1, p0)?, snap(&d1, p1)?);
    let _ = user::munmap(p0, PAGE);
    let _ = user::munmap(p1, PAGE);
    ensure(a0 & SNAP_READ != 0 && b0 == 0, "dev0 mirrors only what it touched")?;
    ensure(b1 & SNAP_WRITE != 0 && a1 == 0, "dev1 mirrors only what it touched")
}

pub(crate) fn two_devices_exclusive() -> R {
    let (d0, d1) = (dev(0)?, dev(1)?);
    let b = rw(PAGE)?;
    ok(d0.exclusive(b.addr, PAGE), "dev0 exclusive")?;
    ok(d1.exclusive(b.addr, PAGE), "dev1 exclusive")?;
    ensure(d1.check_exclusive(b.addr, PAGE).is_ok(), "dev1 holds it now")?;
    ensure(is_err(d0.check_exclusive(b.addr, PAGE), Errno::EPERM), "dev0 lost it")
}

