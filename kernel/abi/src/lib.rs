//! The hmmos system-call interface: numbers, error codes and the device
//! job operations — the one definition both sides compile against.
//!
//! # Calling convention (`int 0x80`)
//! ```text
//!  rax = number   rdi, rsi, rdx, r10, r8, r9 = arguments
//!  rax ← result: ≥ 0 success, -errno on failure
//! ```
//! Every other register is preserved. A program starts with
//! `rdi` = address of its argument bytes, `rsi` = their length.
#![cfg_attr(not(test), no_std)]

/// System-call numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum Sys {
    /// exit(status) → never returns.
    Exit = 0,
    /// write(buf, len) → bytes written to the console (≤ 4096 per call).
    Write = 1,
    /// getpid() → pid.
    GetPid = 2,
    /// fork() → child pid in the parent, 0 in the child.
    Fork = 3,
    /// wait(pid or -1, status_ptr or 0) → pid of the child reaped.
    Wait = 4,
    /// mmap(hint or 0, len, prot, flags) → address.
    Mmap = 5,
    /// munmap(addr, len) → 0.
    Munmap = 6,
    /// mprotect(addr, len, prot) → 0.
    Mprotect = 7,
    /// yield() → 0.
    Yield = 8,
    /// sleep(ms) → 0.
    Sleep = 9,
    /// dev_open(accel, perms) → descriptor.
    DevOpen = 10,
    /// dev_close(fd) → 0.
    DevClose = 11,
    /// dev_job(fd, op, addr, buf, len, arg) → 0 (or a count, per op).
    DevJob = 12,
    /// ticks() → scheduler ticks since boot (10 ms of virtual time each).
    Ticks = 13,
    /// spawn_thread(entry, stack_top, arg) → thread's task id (shares the address space).
    Thread = 14,
    /// thread_exit() → ends only the calling task (the process ends with its last task).
    ThreadExit = 15,
}

impl Sys {
    pub fn from_u64(n: u64) -> Option<Sys> {
        use Sys::*;
        Some(match n {
            0 => Exit,
            1 => Write,
            2 => GetPid,
            3 => Fork,
            4 => Wait,
            5 => Mmap,
            6 => Munmap,
            7 => Mprotect,
            8 => Yield,
            9 => Sleep,
            10 => DevOpen,
            11 => DevClose,
            12 => DevJob,
            13 => Ticks,
            14 => Thread,
            15 => ThreadExit,
            _ => return None,
        })
    }
}

/// Error codes (returned negated), numbered as on Linux.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i64)]
pub enum Errno {
    EPERM = 1,
    ENOENT = 2,
    ESRCH = 3,
    EIO = 5,
    E2BIG = 7,
    EBADF = 9,
    ECHILD = 10,
    EAGAIN = 11,
    ENOMEM = 12,
    EFAULT = 14,
    EBUSY = 16,
    EEXIST = 17,
    ENODEV = 19,
    EINVAL = 22,
    EMFILE = 24,
    ENOSYS = 38,
}

impl Errno {
    pub fn from_i64(e: i64) -> Option<Errno> {
        use Errno::*;
        Some(match e {
            1 => EPERM,
            2 => ENOENT,
            3 => ESRCH,
            5 => EIO,
            7 => E2BIG,
            9 => EBADF,
            10 => ECHILD,
            11 => EAGAIN,
            12 => ENOMEM,
            14 => EFAULT,
            16 => EBUSY,
            17 => EEXIST,
            19 => ENODEV,
            22 => EINVAL,
            24 => EMFILE,
            38 => ENOSYS,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        use Errno::*;
        match self {
            EPERM => "EPERM",
            ENOENT => "ENOENT",
            ESRCH => "ESRCH",
            EIO => "EIO",
            E2BIG => "E2BIG",
            EBADF => "EBADF",
            ECHILD => "ECHILD",
            EAGAIN => "EAGAIN",
            ENOMEM => "ENOMEM",
            EFAULT => "EFAULT",
            EBUSY => "EBUSY",
            EEXIST => "EEXIST",
            ENODEV => "ENODEV",
            EINVAL => "EINVAL",
            EMFILE => "EMFILE",
            ENOSYS => "ENOSYS",
        }
    }
}

/// `mmap` / `mprotect` protection bits (as on Linux).
pub const PROT_READ: u64 = 1;
pub const PROT_WRITE: u64 = 2;
pub const PROT_EXEC: u64 = 4;
/// `mmap` flag: exactly at the hint, or fail.
pub const MAP_FIXED: u64 = 0x10;

/// `dev_open` permissions: what the device may do to the process's memory.
pub const DEV_READ: u64 = 1;
pub const DEV_WRITE: u64 = 2;

/// Device job operations (`dev_job`'s `op`), after Linux's `test_hmm`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum DevOp {
    /// The device reads `len` bytes at `addr` into the buffer at `buf`.
    Read = 1,
    /// The device writes `len` bytes from `buf` to `addr`.
    Write = 2,
    /// The device copies `len` bytes from `buf` (a process address) to `addr`.
    Copy = 3,
    /// The device fills `len` bytes at `addr` with the byte `arg`.
    Fill = 4,
    /// The device takes exclusive (atomic) access to the pages of `[addr, addr+len)`.
    Exclusive = 5,
    /// 0 if the device still holds every page of the range exclusively, else -EPERM.
    CheckExclusive = 6,
    /// One byte per page of `[addr, addr+len)` into `buf` (`SNAP_*` bits).
    Snapshot = 7,
    /// The device's counters (a [`DevStats`]) into `buf` (`len` = its size).
    Stats = 8,
}

impl DevOp {
    pub fn from_u64(n: u64) -> Option<DevOp> {
        use DevOp::*;
        Some(match n {
            1 => Read,
            2 => Write,
            3 => Copy,
            4 => Fill,
            5 => Exclusive,
            6 => CheckExclusive,
            7 => Snapshot,
            8 => Stats,
            _ => return None,
        })
    }
}

/// Snapshot bits per page (0 = the device has no entry).
pub const SNAP_READ: u8 = 1;
pub const SNAP_WRITE: u8 = 2;
pub const SNAP_DIRTY: u8 = 4;
pub const SNAP_EXCLUSIVE: u8 = 8;

/// The most bytes one Read/Write/Copy/Fill job takes.
pub const DEV_MAX_LEN: u64 = 1 << 22;
/// The most pages a Snapshot or exclusive job covers.
pub const DEV_MAX_PAGES: u64 = 4096;

/// A device's counters, as `DevOp::Stats` returns them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct DevStats {
    pub jobs: u64,
    pub transfers: u64,
    pub faults_resolved: u64,
    pub faults_failed: u64,
    pub pages_populated: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip() {
        for n in 0..64u64 {
            if let Some(s) = Sys::from_u64(n) {
                assert_eq!(s as u64, n);
            }
            if let Some(op) = DevOp::from_u64(n) {
                assert_eq!(op as u64, n);
            }
        }
        assert_eq!(Sys::from_u64(15), Some(Sys::ThreadExit));
        assert_eq!(Sys::from_u64(16), None);
        assert_eq!(Sys::from_u64(u64::MAX), None);
        assert_eq!(DevOp::from_u64(0), None);
    }

    #[test]
    fn errors_round_trip_and_have_names() {
        for e in 0..100i64 {
            if let Some(x) = Errno::from_i64(e) {
                assert_eq!(x as i64, e);
                assert!(x.name().starts_with('E'));
            }
        }
        assert_eq!(Errno::from_i64(14), Some(Errno::EFAULT));
        assert_eq!(Errno::from_i64(-14), None);
    }

    #[test]
    fn snapshot_bits_are_distinct() {
        let bits = [SNAP_READ, SNAP_WRITE, SNAP_DIRTY, SNAP_EXCLUSIVE];
        for (i, a) in bits.iter().enumerate() {
            assert_eq!(a.count_ones(), 1);
            for b in &bits[i + 1..] {
                assert_eq!(a & b, 0);
            }
        }
        assert_eq!(core::mem::size_of::<DevStats>(), 40);
    }
}
