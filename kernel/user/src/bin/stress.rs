//! Random operations from several threads of one process, each thread on
//! its own pages, all of them sharing the address space, its page tables,
//! its HMM mirror and an accelerator: the races HMM's protocol is for (a
//! device fault resolving while another CPU unmaps, protects or forks
//! next to it) happen between the threads, on as many CPUs as there are.
//!
//! Arguments: `THREADS OPS ACCEL SEED` (decimal; defaults 2 25000 0 1).
//!
//! # The oracle
//! Each thread owns [`AREAS`] areas of [`AREA_PAGES`] pages and keeps, per
//! page, the *version* the page must hold: 0 = zeros, `FILL | b` = every
//! byte `b`, otherwise a pattern unique to (version, byte offset).
//! Versions carry the thread's number and a counter, so a page that shows
//! another page's (or another thread's) bytes — a write lost, a device
//! read served from a stale translation, a frame reused while some TLB or
//! IOTLB still reached it — is a mismatch, counted and reported.
//!
//! | operation            | model change                    | checked                    |
//! |----------------------|---------------------------------|----------------------------|
//! | CPU write page       | new version                     | —                          |
//! | CPU read page / area | —                               | every byte (lost write)    |
//! | device read 1–4 pages| —                               | every byte (stale read)    |
//! | device write page    | new version                     | later reads                |
//! | device fill 1–4 pages| `FILL | b`                      | later reads                |
//! | device copy page     | dst := src's version            | later reads                |
//! | munmap + mmap area / page | zeros                      | later reads                |
//! | mprotect read-only, read, back | —                     | CPU and device read        |
//! | exclusive, then CPU read/write | (write: new version)  | the read                   |
//! | fork                 | child writes its copy           | child sees the parent's pages; parent's unchanged |
//!
//! Exit status: 0 when every check held, 1 on a mismatch, 2 on an
//! operation that failed although it must succeed.
#![no_std]
#![no_main]

use abi::{DEV_READ, DEV_WRITE, MAP_FIXED, PROT_READ, PROT_WRITE};
use core::sync::atomic::{AtomicU64, Ordering};
use user::{println, Buf, Device, Rng};

user::entry!(main);

const PAGE: u64 = 4096;
const AREAS: usize = 4;
const AREA_PAGES: usize = 16;
const PAGES: usize = AREAS * AREA_PAGES;
const MAX_THREADS: usize = 8;
/// Thread t's areas start at `BASE + t * THREAD_SPAN`; two threads share
/// each 2 MiB leaf table, so their changes meet in the same nodes.
const BASE: u64 = 0x4000_0000;
const THREAD_SPAN: u64 = 0x10_0000;
/// Areas are 32 pages apart (16 mapped, 16 not).
const AREA_SPAN: u64 = 2 * AREA_PAGES as u64 * PAGE;
const FILL: u32 = 1 << 31;
const STACK: u64 = 16 * PAGE;
const PROGRESS: bool = true;

/// What every thread counted (summed by the main thread).
struct Totals {
    ops: AtomicU64,
    dev_jobs: AtomicU64,
    forks: AtomicU64,
    pages_checked: AtomicU64,
    lost_writes: AtomicU64,
    stale_device_reads: AtomicU64,
    failed_ops: AtomicU64,
    /// Device jobs that got EAGAIN (the CPU side kept changing their pages)
    /// and were run again.
    again: AtomicU64,
    done: AtomicU64,
}

static TOTALS: Totals = Totals {
    ops: AtomicU64::new(0),
    dev_jobs: AtomicU64::new(0),
    forks: AtomicU64::new(0),
    pages_checked: AtomicU64::new(0),
    lost_writes: AtomicU64::new(0),
    stale_device_reads: AtomicU64::new(0),
    failed_ops: AtomicU64::new(0),
    again: AtomicU64::new(0),
    done: AtomicU64::new(0),
};

/// What a thread is given (lives on the main thread's stack until every
/// thread said it is done).
struct Job<'a> {
    thread: u64,
    ops: u64,
    seed: u64,
    dev: &'a Device,
    /// This thread's scratch page (device read target, write source).
    scratch: u64,
}

/// Word `j` (bytes `8j..8j+8`, little-endian) of a page holding `version`.
fn word_of(version: u32, j: usize) -> u64 {
    match version {
        0 => 0,
        v if v & FILL != 0 => (v as u8 as u64) * 0x0101_0101_0101_0101,
        v => (v as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (j as u64).wrapping_mul(0xff51_afd7_ed55_8ccd),
    }
}

fn byte_of(version: u32, k: usize) -> u8 {
    (word_of(version, k / 8) >> ((k % 8) * 8)) as u8
}

/// A page as words (pages are 8-byte aligned).
fn words(page: &[u8]) -> &[u64] {
    assert!(page.len() == PAGE as usize && page.as_ptr() as usize % 8 == 0);
    // SAFETY: aligned, in bounds, and every bit pattern is a valid u64.
    unsafe { core::slice::from_raw_parts(page.as_ptr() as *const u64, page.len() / 8) }
}

fn fill_pattern(dst: &mut [u8], version: u32) {
    assert!(dst.len() == PAGE as usize && dst.as_ptr() as usize % 8 == 0);
    // SAFETY: as in `words`, and `dst` is borrowed uniquely.
    let w = unsafe { core::slice::from_raw_parts_mut(dst.as_mut_ptr() as *mut u64, dst.len() / 8) };
    for (j, x) in w.iter_mut().enumerate() {
        *x = word_of(version, j);
    }
}

/// The first byte of `page` that differs from `version`'s bytes (compared
/// a word at a time: the check runs on every page a thread looks at).
fn first_difference(page: &[u8], version: u32) -> Option<(usize, u8)> {
    let j = words(page).iter().enumerate().position(|(j, &x)| x != word_of(version, j))?;
    (8 * j..8 * j + 8).find(|&k| page[k] != byte_of(version, k)).map(|k| (k, page[k]))
}

struct Worker<'a> {
    job: &'a Job<'a>,
    rng: Rng,
    version: [u32; PAGES],
    next_version: u32,
}

/// A device job, run again while it fails with EAGAIN ("invalidations kept
/// racing the fault": the kernel's swapper took its pages between a fault
/// and the replay). Every job here is idempotent — it reads, or writes the
/// same bytes to the same pages — so running it again is exact.
fn again(mut job: impl FnMut() -> Result<u64, abi::Errno>) -> Result<u64, abi::Errno> {
    for _ in 0..AGAIN_TRIES {
        match job() {
            Err(abi::Errno::EAGAIN) => TOTALS.again.fetch_add(1, Ordering::Relaxed),
            r => return r,
        };
    }
    job()
}

const AGAIN_TRIES: u32 = 8;

fn page_addr(thread: u64, page: usize) -> u64 {
    BASE + thread * THREAD_SPAN + (page / AREA_PAGES) as u64 * AREA_SPAN + (page % AREA_PAGES) as u64 * PAGE
}

/// The page at `addr` — one of this thread's own pages or its scratch
/// page. Only the owning thread touches them, and every borrow ends
/// within the operation that took it, so no two overlap.
fn slice(addr: u64) -> &'static [u8] {
    // SAFETY: `addr` is a page this thread owns and keeps mapped readable
    // while it looks (only this thread unmaps or protects its areas).
    unsafe { core::slice::from_raw_parts(addr as *const u8, PAGE as usize) }
}

/// [`slice`], writable (same rule: one borrow at a time, by the owner).
fn slice_mut(addr: u64) -> &'static mut [u8] {
    // SAFETY: as `slice`, and only this thread writes its pages.
    unsafe { core::slice::from_raw_parts_mut(addr as *mut u8, PAGE as usize) }
}

impl Worker<'_> {
    fn addr(&self, page: usize) -> u64 {
        page_addr(self.job.thread, page)
    }

    fn new_version(&mut self) -> u32 {
        self.next_version += 1;
        // Thread in bits 24..30, a counter below: unique across threads.
        ((self.job.thread as u32 + 1) << 24) | (self.next_version & 0x00ff_ffff)
    }

    fn failed(&self, what: &str, e: abi::Errno) {
        if TOTALS.failed_ops.fetch_add(1, Ordering::SeqCst) < 5 {
            println!("stress: thread {}: {what} failed: {}", self.job.thread, e.name());
        }
    }

    /// Check one page's bytes against the model; `device`: they came from a device read.
    fn check(&self, page: usize, bytes: &[u8], device: bool) {
        TOTALS.pages_checked.fetch_add(1, Ordering::Relaxed);
        if let Some((k, got)) = first_difference(bytes, self.version[page]) {
            let counter = if device { &TOTALS.stale_device_reads } else { &TOTALS.lost_writes };
            if counter.fetch_add(1, Ordering::SeqCst) < 5 {
                println!(
                    "stress: thread {}: {} of page {:#x} byte {k}: {got:#04x}, version {:#x} has {:#04x}",
                    self.job.thread,
                    if device { "device read" } else { "CPU read" },
                    self.addr(page),
                    self.version[page],
                    byte_of(self.version[page], k)
                );
            }
        }
    }

    fn below(&mut self, n: u64) -> u64 {
        self.rng.next() % n
    }

    /// A random run of 1..=max pages inside one area: (first page, count).
    fn run(&mut self, max: usize) -> (usize, usize) {
        let area = self.below(AREAS as u64) as usize;
        let n = 1 + self.below(max as u64) as usize;
        let first = self.below((AREA_PAGES - n + 1) as u64) as usize;
        (area * AREA_PAGES + first, n)
    }

    fn map_area(&mut self, area: usize) {
        let at = self.addr(area * AREA_PAGES);
        if let Err(e) = user::mmap(at, AREA_PAGES as u64 * PAGE, PROT_READ | PROT_WRITE, MAP_FIXED) {
            self.failed("mmap", e);
        }
        self.version[area * AREA_PAGES..(area + 1) * AREA_PAGES].fill(0);
    }

    fn step(&mut self) {
        let dev = self.job.dev;
        let scratch = self.job.scratch;
        match self.below(100) {
            0..=19 => {
                let (p, _) = self.run(1);
                let v = self.new_version();
                fill_pattern(slice_mut(self.addr(p)), v);
                self.version[p] = v;
            }
            20..=34 => {
                let (p, _) = self.run(1);
                self.check(p, slice(self.addr(p)), false);
            }
            35..=49 => {
                let (p, n) = self.run(4);
                TOTALS.dev_jobs.fetch_add(1, Ordering::Relaxed);
                for i in 0..n {
                    let out = slice_mut(scratch);
                    match again(|| dev.read(self.addr(p + i), out)) {
                        Ok(_) => self.check(p + i, out, true),
                        Err(e) => self.failed("device read", e),
                    }
                }
            }
            50..=59 => {
                let (p, _) = self.run(1);
                let v = self.new_version();
                fill_pattern(slice_mut(scratch), v);
                TOTALS.dev_jobs.fetch_add(1, Ordering::Relaxed);
                match again(|| dev.write(self.addr(p), slice(scratch))) {
                    Ok(_) => self.version[p] = v,
                    Err(e) => self.failed("device write", e),
                }
            }
            60..=64 => {
                let (p, n) = self.run(4);
                let b = self.rng.next() as u8;
                TOTALS.dev_jobs.fetch_add(1, Ordering::Relaxed);
                match again(|| dev.fill(self.addr(p), n as u64 * PAGE, b)) {
                    Ok(_) => self.version[p..p + n].fill(FILL | b as u32),
                    Err(e) => self.failed("device fill", e),
                }
            }
            65..=69 => {
                let (src, _) = self.run(1);
                let (dst, _) = self.run(1);
                if src != dst {
                    TOTALS.dev_jobs.fetch_add(1, Ordering::Relaxed);
                    match again(|| dev.copy(self.addr(dst), self.addr(src), PAGE)) {
                        Ok(_) => self.version[dst] = self.version[src],
                        Err(e) => self.failed("device copy", e),
                    }
                }
            }
            70..=72 => {
                // The whole area goes and comes back empty.
                let area = self.below(AREAS as u64) as usize;
                if let Err(e) = user::munmap(self.addr(area * AREA_PAGES), AREA_PAGES as u64 * PAGE) {
                    self.failed("munmap", e);
                }
                self.map_area(area);
            }
            73..=74 => {
                // One page in the middle: the area splits and is rejoined.
                let (p, _) = self.run(1);
                let at = self.addr(p);
                if let Err(e) = user::munmap(at, PAGE) {
                    self.failed("munmap page", e);
                }
                if let Err(e) = user::mmap(at, PAGE, PROT_READ | PROT_WRITE, MAP_FIXED) {
                    self.failed("mmap page", e);
                }
                self.version[p] = 0;
            }
            75..=79 => {
                let (p, n) = self.run(AREA_PAGES);
                let (at, len) = (self.addr(p), n as u64 * PAGE);
                if let Err(e) = user::mprotect(at, len, PROT_READ) {
                    self.failed("mprotect read-only", e);
                }
                let q = p + self.below(n as u64) as usize;
                self.check(q, slice(self.addr(q)), false);
                TOTALS.dev_jobs.fetch_add(1, Ordering::Relaxed);
                let out = slice_mut(scratch);
                match again(|| dev.read(self.addr(q), out)) {
                    Ok(_) => self.check(q, out, true),
                    Err(e) => self.failed("device read of a read-only page", e),
                }
                if let Err(e) = user::mprotect(at, len, PROT_READ | PROT_WRITE) {
                    self.failed("mprotect back", e);
                }
            }
            80..=84 => {
                let (p, n) = self.run(4);
                TOTALS.dev_jobs.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = again(|| dev.exclusive(self.addr(p), n as u64 * PAGE)) {
                    self.failed("exclusive", e);
                }
                // A CPU read and a CPU write take it back.
                self.check(p, slice(self.addr(p)), false);
                let v = self.new_version();
                fill_pattern(slice_mut(self.addr(p + n - 1)), v);
                self.version[p + n - 1] = v;
            }
            85 => self.fork(),
            _ => {
                let area = self.below(AREAS as u64) as usize;
                for p in area * AREA_PAGES..(area + 1) * AREA_PAGES {
                    self.check(p, slice(self.addr(p)), false);
                }
            }
        }
    }

    /// Fork while the other threads keep going: the child must see this
    /// thread's pages as they were, its writes must stay its own.
    fn fork(&mut self) {
        TOTALS.forks.fetch_add(1, Ordering::Relaxed);
        let child = match user::fork() {
            Ok(0) => {
                let intact = (0..PAGES).all(|p| first_difference(slice(self.addr(p)), self.version[p]).is_none());
                for p in (0..PAGES).step_by(7) {
                    slice_mut(self.addr(p)).fill(0xc5);
                }
                let written = (0..PAGES).step_by(7).all(|p| slice(self.addr(p)).iter().all(|&b| b == 0xc5));
                user::exit(if intact && written { 0 } else { 1 })
            }
            Ok(pid) => pid,
            Err(e) => return self.failed("fork", e),
        };
        match user::wait(child as i64) {
            Ok((_, 0)) => {}
            Ok((_, status)) => {
                if TOTALS.lost_writes.fetch_add(1, Ordering::SeqCst) < 5 {
                    println!("stress: thread {}: the forked child saw other bytes (status {status})", self.job.thread);
                }
            }
            Err(e) => self.failed("wait", e),
        }
        for p in (0..PAGES).step_by(7) {
            self.check(p, slice(self.addr(p)), false);
        }
    }
}

extern "C" fn thread_main(arg: u64) -> ! {
    // SAFETY: `arg` points at a `Job` on the main thread's stack, which
    // waits for `done` before returning.
    let job = unsafe { &*(arg as *const Job<'_>) };
    let mut w = Worker { job, rng: Rng(job.seed | 1), version: [0; PAGES], next_version: 0 };
    for area in 0..AREAS {
        w.map_area(area);
    }
    for i in 0..job.ops {
        w.step();
        TOTALS.ops.fetch_add(1, Ordering::Relaxed);
        if PROGRESS && i % 5_000 == 4_999 {
            println!("stress pid {} thread {}: {} operations, {} ticks", user::getpid(), job.thread, i + 1, user::ticks());
        }
    }
    for p in 0..PAGES {
        w.check(p, slice(w.addr(p)), false);
    }
    TOTALS.done.fetch_add(1, Ordering::SeqCst);
    user::thread_exit()
}

fn arg(args: &[u8], i: usize, default: u64) -> Option<u64> {
    match args.split(|&c| c == b' ').filter(|s| !s.is_empty()).nth(i) {
        None => Some(default),
        Some(s) => user::parse_u64(s),
    }
}

fn main(args: &[u8]) -> i32 {
    let (Some(threads), Some(ops), Some(accel), Some(seed)) = (arg(args, 0, 2), arg(args, 1, 25_000), arg(args, 2, 0), arg(args, 3, 1)) else {
        println!("stress: usage: stress [THREADS [OPS [ACCEL [SEED]]]]");
        return 2;
    };
    if threads == 0 || threads > MAX_THREADS as u64 {
        println!("stress: THREADS must be 1..={MAX_THREADS}");
        return 2;
    }
    let dev = match Device::open(accel, DEV_READ | DEV_WRITE) {
        Ok(d) => d,
        Err(e) => {
            println!("stress: open accel{accel}: {}", e.name());
            return 2;
        }
    };
    let Ok(stacks) = Buf::rw(threads * (STACK + PAGE)) else {
        println!("stress: no memory for stacks");
        return 2;
    };
    let jobs: [Job<'_>; MAX_THREADS] = core::array::from_fn(|t| Job {
        thread: t as u64,
        ops,
        seed: seed.wrapping_mul(0x2545_f491_4f6c_dd1d).wrapping_add(t as u64 * 0x9e37),
        dev: &dev,
        scratch: stacks.at(t as u64 * (STACK + PAGE)),
    });
    for (t, job) in jobs.iter().enumerate().take(threads as usize) {
        let top = stacks.at((t as u64 + 1) * (STACK + PAGE));
        if let Err(e) = user::thread(thread_main, top, job as *const Job<'_> as u64) {
            println!("stress: thread {t}: {}", e.name());
            return 2;
        }
    }
    while TOTALS.done.load(Ordering::SeqCst) < threads {
        user::sleep_ms(10);
    }
    let l = |c: &AtomicU64| c.load(Ordering::SeqCst);
    let (lost, stale, failed) = (l(&TOTALS.lost_writes), l(&TOTALS.stale_device_reads), l(&TOTALS.failed_ops));
    println!(
        "stress pid {}: {} threads, {} ops ({} device jobs, {} forks), {} pages checked, {} jobs run again after EAGAIN: {lost} lost writes, {stale} stale device reads, {failed} failed operations",
        user::getpid(),
        threads,
        l(&TOTALS.ops),
        l(&TOTALS.dev_jobs),
        l(&TOTALS.forks),
        l(&TOTALS.pages_checked),
        l(&TOTALS.again)
    );
    if lost + stale > 0 {
        1
    } else if failed > 0 {
        2
    } else {
        0
    }
}
