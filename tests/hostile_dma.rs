//! Hostile DMA: 10,000 random device jobs (read, write, fill, copy,
//! exclusive) aimed across the whole 64-bit range — other processes' pages,
//! kernel direct-map and image addresses, the bounce page, the 2^47
//! boundary, wrapping lengths, zero lengths, unaligned starts — on both
//! accelerators, with their bindings switched between two processes (same
//! layout, different canaries) during the run.
//!
//! Every job's outcome is predicted by an oracle that knows only what each
//! process's mappings permit, piece by piece (a job stops at its first
//! refused piece). A job must succeed exactly when the oracle says so, a
//! read must return the process's own bytes, and after the run every byte
//! of both processes, a kernel frame and a kernel static must be as the
//! oracle says: 0 jobs beyond the mirror, 0 bytes of one process in the
//! other, kernel memory untouched.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use kernel::aspace::{AddressSpace, Prot};
use kernel::hmmdev::jobs::{BOUNCE_IOVA, CHUNK, MAX_EXCLUSIVE_PAGES, MAX_READ};
use kernel::hmmdev::{accels, JobError, ProcessHmm};
use kernel::mm::{direct, frames};
use test_kernels::Rng;

kernel::entry!(main);

fn main(_: &'static kernel::BootInfo) -> ! {
    kernel::testing::run("hostile_dma", kernel::tests![ten_thousand_hostile_jobs]);
}

const PAGE: u64 = 4096;
const BASE: u64 = 0x1000_0000;
/// The read-write area: 16 pages at BASE.
const RW: (u64, u64) = (BASE, BASE + 16 * PAGE);
/// A read-only area after a 4-page hole.
const RO: (u64, u64) = (BASE + 20 * PAGE, BASE + 24 * PAGE);
const JOBS: u32 = 10_000;

/// A kernel static the device must never reach (its image address is aimed at).
static KERNEL_STATIC: [u8; 64] = [0x5a; 64];

struct Proc {
    aspace: Arc<AddressSpace>,
    hmm: ProcessHmm,
    /// What RW and RO must hold.
    rw: Vec<u8>,
    ro: Vec<u8>,
}

fn pattern(seed: u8, n: usize) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(29).wrapping_add(seed).wrapping_add((i >> 8) as u8)).collect()
}

fn process(seed: u8) -> Proc {
    let aspace = AddressSpace::new().unwrap();
    let hmm = ProcessHmm::attach(&aspace);
    aspace.mmap(Some(RW.0), RW.1 - RW.0, Prot::READ | Prot::WRITE, true).unwrap();
    aspace.mmap(Some(RO.0), RO.1 - RO.0, Prot::READ | Prot::WRITE, true).unwrap();
    let rw = pattern(seed, (RW.1 - RW.0) as usize);
    let ro = pattern(seed ^ 0xff, (RO.1 - RO.0) as usize);
    aspace.copy_to_user(RW.0, &rw).unwrap();
    aspace.copy_to_user(RO.0, &ro).unwrap();
    aspace.mprotect(RO.0, RO.1 - RO.0, Prot::READ).unwrap();
    Proc { aspace, hmm, rw, ro }
}

/// What a page of a process permits a device.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Perm {
    None,
    Read,
    Write,
}

fn perm(addr: u64) -> Perm {
    if (RW.0..RW.1).contains(&addr) {
        Perm::Write
    } else if (RO.0..RO.1).contains(&addr) {
        Perm::Read
    } else {
        Perm::None
    }
}

/// A job's range as the engine takes it: non-empty, no wrap, ≤ 2^47.
fn valid_span(addr: u64, len: u64) -> bool {
    len > 0 && addr.checked_add(len).is_some_and(|e| e <= 1 << 47)
}

/// The transfer pieces of a span (as the engine cuts it).
fn pieces(addr: u64, len: u64) -> impl Iterator<Item = (u64, u64)> {
    let end = addr + len;
    let mut at = addr;
    core::iter::from_fn(move || {
        if at >= end {
            return None;
        }
        let n = (end - at).min(CHUNK).min(PAGE - at % PAGE);
        let p = (at, n);
        at += n;
        Some(p)
    })
}

impl Proc {
    fn byte_mut(&mut self, addr: u64) -> &mut u8 {
        match perm(addr) {
            Perm::Write => &mut self.rw[(addr - RW.0) as usize],
            Perm::Read => &mut self.ro[(addr - RO.0) as usize],
            Perm::None => unreachable!("only mapped bytes are modelled"),
        }
    }
    fn byte(&self, addr: u64) -> u8 {
        match perm(addr) {
            Perm::Write => self.rw[(addr - RW.0) as usize],
            Perm::Read => self.ro[(addr - RO.0) as usize],
            Perm::None => unreachable!("only mapped bytes are modelled"),
        }
    }

    /// Every byte of both areas is what the model says.
    fn verify(&self, who: &str) {
        let mut buf = vec![0u8; (RW.1 - RW.0) as usize];
        self.aspace.copy_from_user(RW.0, &mut buf).unwrap();
        if let Some(i) = buf.iter().zip(&self.rw).position(|(a, b)| a != b) {
            panic!("{who}: byte {:#x} is {:#04x}, expected {:#04x}", RW.0 + i as u64, buf[i], self.rw[i]);
        }
        let mut buf = vec![0u8; (RO.1 - RO.0) as usize];
        self.aspace.copy_from_user(RO.0, &mut buf).unwrap();
        assert!(buf == self.ro, "{who}: the read-only area changed");
    }
}

/// Outcome counters.
#[derive(Default)]
struct Counts {
    attempts: u32,
    refused_before_device: u32,
    faulted: u32,
    succeeded: u32,
    beyond_mirror: u32,
    wrongly_refused: u32,
}

/// A random address from one of the hostile classes.
fn address(rng: &mut Rng, kernel_frame: u64) -> u64 {
    let small = |rng: &mut Rng, n: u64| rng.below(n);
    match rng.below(12) {
        0 | 1 => RW.0 + small(rng, RW.1 - RW.0),
        2 => RO.0 + small(rng, RO.1 - RO.0),
        3 => {
            // Around the edges of the areas and the hole.
            let edges = [RW.0, RW.1, RO.0, RO.1];
            edges[rng.below(4) as usize].wrapping_add(small(rng, 4 * PAGE)).wrapping_sub(2 * PAGE)
        }
        4 => kernel::mm::DIRECT_MAP_BASE + kernel_frame + small(rng, PAGE),
        5 => kernel_frame + small(rng, PAGE), // the kernel frame's physical address, as an IOVA
        6 => KERNEL_STATIC.as_ptr() as u64 + small(rng, 64),
        7 => BOUNCE_IOVA.wrapping_add(small(rng, 4 * PAGE)).wrapping_sub(2 * PAGE),
        8 => (1u64 << 47).wrapping_add(small(rng, 4 * PAGE)).wrapping_sub(2 * PAGE),
        9 => (1u64 << 48).wrapping_add(small(rng, 4 * PAGE)).wrapping_sub(2 * PAGE),
        10 => u64::MAX - small(rng, 3 * PAGE),
        _ => rng.next_u64(),
    }
}

fn length(rng: &mut Rng) -> u64 {
    match rng.below(20) {
        0 => 0,
        1 => [u64::MAX, 1 << 47, 1 << 63, u64::MAX - PAGE + 1, 1 << 32][rng.below(5) as usize],
        2..=7 => 1 + rng.below(16),
        _ => 1 + rng.below(9000),
    }
}

fn ten_thousand_hostile_jobs() {
    let mut rng = Rng::new(0x0bad_d11a);
    let mut procs = [process(0x11), process(0x77)];
    // A kernel frame with a canary, and its addresses, aimed at by jobs.
    let canary = frames::alloc_zeroed().unwrap();
    let canary_bytes = pattern(0xc3, PAGE as usize);
    // SAFETY: the frame is ours.
    unsafe { direct::write_frame(canary.frame(), 0, &canary_bytes) };
    let kernel_frame = canary.start_address().as_u64();
    let accs = accels().unwrap();
    // bound[i]: which process accel i mirrors.
    let mut bound: [Option<usize>; 2] = [None, None];
    let mut c = Counts::default();
    let (mut switches, mut reads_checked) = (0u32, 0u32);

    for n in 0..JOBS {
        if n % 250 == 0 {
            // Switch bindings: each accelerator to P, Q, or nothing.
            for (i, b) in bound.iter_mut().enumerate() {
                let mut a = accs[i].lock();
                match rng.below(5) {
                    0 => {
                        a.unbind();
                        *b = None;
                    }
                    k => {
                        let which = (k % 2) as usize;
                        a.bind(&procs[which].hmm).unwrap();
                        *b = Some(which);
                    }
                }
                switches += 1;
            }
        }
        if n % 97 == 0 {
            // The CPU side moves too: writes, and swap-out of part of RW.
            let p = &mut procs[rng.below(2) as usize];
            let at = RW.0 + rng.below(RW.1 - RW.0 - 64);
            let data = pattern(rng.next_u64() as u8, 1 + rng.below(64) as usize);
            p.aspace.copy_to_user(at, &data).unwrap();
            for (k, &b) in data.iter().enumerate() {
                *p.byte_mut(at + k as u64) = b;
            }
            let first = RW.0 + rng.below(16) * PAGE;
            p.aspace.swap_out(hmm::VaRange::new(first, first + PAGE * (1 + rng.below(2))).unwrap_or_else(|_| hmm::VaRange::page_of(first).unwrap()));
        }
        if n % 1000 == 999 {
            procs[0].verify("process P");
            procs[1].verify("process Q");
        }

        let i = rng.below(2) as usize;
        let target = bound[i];
        let mut acc = accs[i].lock();
        let transfers_before = acc.stats.transfers;
        let (addr, len) = (address(&mut rng, kernel_frame), length(&mut rng));
        // The oracle: Some(true) = must succeed, Some(false) = must fail.
        let (result, expected): (Result<(), JobError>, bool) = match rng.below(5) {
            0 => {
                let r = acc.read(addr, len);
                let ok = target.is_some() && valid_span(addr, len) && len <= MAX_READ && pieces(addr, len).all(|(a, _)| perm(a) != Perm::None);
                if let (Ok(data), Some(t)) = (&r, target) {
                    for (k, &b) in data.iter().enumerate() {
                        let want = procs[t].byte(addr + k as u64);
                        assert_eq!(b, want, "job {n}: device read {:#x} from process {t}: got {b:#04x}, it holds {want:#04x}", addr + k as u64);
                    }
                    reads_checked += 1;
                }
                (r.map(|_| ()), ok)
            }
            1 => {
                // A write carries its data: keep it small enough to hold.
                let len = len.min(3 * PAGE);
                let data = pattern(rng.next_u64() as u8, len as usize);
                let r = acc.write(addr, &data);
                let ok = expect_writes(&mut procs, target, addr, len, |k| data[k as usize]);
                (r, ok)
            }
            2 => {
                let byte = rng.next_u64() as u8;
                let len = if len > 64 * PAGE && valid_span(addr, len) && perm(addr) == Perm::Write { 64 * PAGE } else { len };
                let r = acc.fill(addr, len, byte);
                let ok = expect_writes(&mut procs, target, addr, len, |_| byte);
                (r, ok)
            }
            3 => {
                let src = address(&mut rng, kernel_frame);
                let len = if valid_span(src, len) && valid_span(addr, len) { len.min(3 * PAGE) } else { len };
                let r = acc.copy(addr, src, len);
                let ok = expect_copy(&mut procs, target, addr, src, len);
                (r, ok)
            }
            _ => {
                let r = acc.exclusive(addr, len).map(|_| ());
                let ok = target.is_some()
                    && valid_span(addr, len)
                    && {
                        let first = addr & !(PAGE - 1);
                        let pages = (addr + len).div_ceil(PAGE) - first / PAGE;
                        pages <= MAX_EXCLUSIVE_PAGES && (0..pages).all(|k| perm(first + k * PAGE) == Perm::Write)
                    };
                (r, ok)
            }
        };
        c.attempts += 1;
        match (&result, expected) {
            (Ok(()), true) => c.succeeded += 1,
            (Ok(()), false) => {
                c.beyond_mirror += 1;
                kernel::println!("\n  job {n} on accel{i} at {addr:#x}+{len:#x} succeeded beyond what the mirror allows");
            }
            (Err(e), true) => {
                c.wrongly_refused += 1;
                kernel::println!("\n  job {n} on accel{i} at {addr:#x}+{len:#x} failed although permitted: {e}");
            }
            (Err(_), false) if acc.stats.transfers == transfers_before => c.refused_before_device += 1,
            (Err(_), false) => c.faulted += 1,
        }
    }

    for (i, a) in accs.iter().enumerate() {
        a.lock().unbind();
        let _ = i;
    }
    procs[0].verify("process P");
    procs[1].verify("process Q");
    let mut now = vec![0u8; PAGE as usize];
    direct::read_frame(canary.frame(), 0, &mut now);
    assert!(now == canary_bytes, "the kernel frame was changed by a device");
    assert!(KERNEL_STATIC.iter().all(|&b| b == 0x5a), "the kernel static was changed");
    // The devices and the kernel still work: a fresh process, a clean job.
    let fresh = process(0x33);
    accs[0].lock().bind(&fresh.hmm).unwrap();
    assert_eq!(accs[0].lock().read(RW.0, 32).unwrap(), &fresh.rw[..32]);
    accs[0].lock().unbind();
    kernel::println!();
    kernel::println!(
        "hostile_dma: {} jobs: {} refused before the device, {} faulted in the IOMMU, {} succeeded legitimately ({} reads checked byte for byte), {} beyond the mirror, {} wrongly refused; {} binding switches",
        c.attempts, c.refused_before_device, c.faulted, c.succeeded, reads_checked, c.beyond_mirror, c.wrongly_refused, switches
    );
    assert_eq!(c.attempts, JOBS);
    assert_eq!((c.beyond_mirror, c.wrongly_refused), (0, 0), "every job did exactly what the mirror allows");
    assert!(c.succeeded > 1000 && c.faulted > 500 && c.refused_before_device > 1000, "the job mix reaches every outcome");
}

/// The oracle for a job writing `len` bytes at `addr` (byte k = `byte(k)`):
/// pieces go out in order, each lands only if its page is writable, and the
/// job stops at the first that is not. Applies the landed pieces to the
/// model; returns whether the whole job must succeed.
fn expect_writes(procs: &mut [Proc; 2], target: Option<usize>, addr: u64, len: u64, byte: impl Fn(u64) -> u8) -> bool {
    let Some(t) = target else { return false };
    if !valid_span(addr, len) {
        return false;
    }
    for (at, n) in pieces(addr, len) {
        if perm(at) != Perm::Write {
            return false;
        }
        for k in 0..n {
            *procs[t].byte_mut(at + k) = byte(at + k - addr);
        }
    }
    true
}

/// The oracle for a device copy (see [`expect_writes`]): each piece reads
/// its source, then writes its destination, in order.
fn expect_copy(procs: &mut [Proc; 2], target: Option<usize>, dst: u64, src: u64, len: u64) -> bool {
    let Some(t) = target else { return false };
    if !valid_span(src, len) || !valid_span(dst, len) {
        return false;
    }
    let mut done = 0;
    while done < len {
        let (s, d) = (src + done, dst + done);
        let n = (len - done).min(CHUNK).min(PAGE - s % PAGE).min(PAGE - d % PAGE);
        if perm(s) == Perm::None || perm(d) != Perm::Write {
            return false;
        }
        let bytes: Vec<u8> = (0..n).map(|k| procs[t].byte(s + k)).collect();
        for (k, b) in bytes.into_iter().enumerate() {
            *procs[t].byte_mut(d + k as u64) = b;
        }
        done += n;
    }
    true
}
