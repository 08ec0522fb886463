//! Mirror page-table benchmarks: populate, invalidate and iterate N pages
//! (N = 1, 512, 262144) with `hmm::pt` (the functions the fault and
//! invalidation paths run: `PageTable::populate` = `Cursor::populate`,
//! `PageTable::clear`, `PageTable::iter`), in the same run beside
//!
//! * a real peer: the `x86_64` crate's `OffsetPageTable` (`map_to` per page,
//!   `unmap` per page, `translate` per page), and
//! * the machine's limit: a memset of the same N × 8 bytes of entries.
//!
//! Both page tables take their nodes from one pool of pre-touched 4 KiB
//! frames (zeroed on allocation, as both need), so neither side pays for
//! first-touching fresh memory. After criterion's own report, a summary
//! prints best-of ratios: ×peer (> 1: hmm::pt is faster) and the share of
//! the memset (the same bytes written at memory speed).

use criterion::{black_box, criterion_group, BenchmarkId, Criterion, Throughput};
use hmm::pt::{Leaf, Node, PageTable, SoftLayout, TableMemory};
use hmm::VaRange;
use std::cell::RefCell;
use std::ptr::NonNull;
use std::time::Instant;
use x86_64::structures::paging::mapper::{CleanUp, Mapper, Translate};
use x86_64::structures::paging::{FrameAllocator, FrameDeallocator, OffsetPageTable, Page, PageTable as X86Table, PageTableFlags, PhysFrame, Size4KiB};
use x86_64::{PhysAddr, VirtAddr};

const SIZES: [u64; 3] = [1, 512, 262_144];
const BASE: u64 = 0x1000_0000;

#[repr(C, align(4096))]
struct Frame([u8; 4096]);

/// A pool of pre-touched frames; "physical" address = pointer.
struct Pool {
    free: RefCell<Vec<u64>>,
    _backing: Vec<Frame>,
}

impl Pool {
    fn new(frames: usize) -> Pool {
        let mut backing: Vec<Frame> = (0..frames).map(|_| Frame([1; 4096])).collect();
        let free = backing.iter_mut().map(|f| f as *mut Frame as u64).collect();
        Pool { free: RefCell::new(free), _backing: backing }
    }
    fn take(&self) -> Option<u64> {
        let p = self.free.borrow_mut().pop()?;
        // SAFETY: a free frame of the pool, 4 KiB, owned by nobody.
        unsafe { std::ptr::write_bytes(p as *mut u8, 0, 4096) };
        Some(p)
    }
    fn give(&self, p: u64) {
        self.free.borrow_mut().push(p);
    }
}

// SAFETY: frames are zeroed, aligned, handed out once until given back.
unsafe impl TableMemory for Pool {
    fn alloc_table(&self) -> Option<PhysAddr> {
        self.take().map(PhysAddr::new)
    }
    unsafe fn free_table(&self, t: PhysAddr) {
        self.give(t.as_u64())
    }
    fn table(&self, t: PhysAddr) -> NonNull<Node> {
        NonNull::new(t.as_u64() as *mut Node).expect("not null")
    }
}

struct PoolFrames<'p>(&'p Pool);

// SAFETY: each frame is handed out once until deallocated.
unsafe impl FrameAllocator<Size4KiB> for PoolFrames<'_> {
    fn allocate_frame(&mut self) -> Option<PhysFrame> {
        self.0.take().map(|p| PhysFrame::containing_address(PhysAddr::new(p)))
    }
}
impl FrameDeallocator<Size4KiB> for PoolFrames<'_> {
    unsafe fn deallocate_frame(&mut self, f: PhysFrame) {
        self.0.give(f.start_address().as_u64())
    }
}

type Pt<'m> = PageTable<SoftLayout, &'m Pool>;

fn leaf(i: u64) -> Leaf {
    Leaf::writable(PhysAddr::new((i + 1) << 12))
}

fn populated(pool: &Pool, n: u64) -> Pt<'_> {
    let mut pt = Pt::new(pool).unwrap();
    pt.populate(VirtAddr::new(BASE), (0..n).map(leaf)).unwrap();
    pt
}

fn hmm_populate(mut pt: Pt<'_>, n: u64) -> Pt<'_> {
    pt.populate(VirtAddr::new(BASE), (0..n).map(leaf)).unwrap();
    pt
}

fn hmm_invalidate(mut pt: Pt<'_>, n: u64) -> Pt<'_> {
    let up = pt.clear(VaRange::pages_from(BASE, n).unwrap());
    pt.release(up.retired);
    pt
}

/// The mirror's invalidation (`Mirror::invalidate`): `update` with a
/// callback per leaf that collects dirty pages — no whole-node shortcut.
fn hmm_invalidate_update(mut pt: Pt<'_>, n: u64) -> Pt<'_> {
    let mut dirty = 0u64;
    let up = pt.update(VaRange::pages_from(BASE, n).unwrap(), |va, l| {
        if l.dirty {
            dirty += va.as_u64();
        }
        None
    });
    black_box(dirty);
    pt.release(up.retired);
    pt
}

fn hmm_iterate(pt: &Pt<'_>, n: u64) -> usize {
    pt.iter(VaRange::pages_from(BASE, n).unwrap()).count()
}

/// The peer: an `OffsetPageTable` (offset 0: "physical" = pointer) whose
/// frames come from the same pool; dropped by unmapping what is left and
/// giving every table back.
struct Peer<'p> {
    pool: &'p Pool,
    root: u64,
    n: u64,
}

impl<'p> Peer<'p> {
    fn new(pool: &'p Pool) -> Peer<'p> {
        Peer { pool, root: pool.take().expect("pool frame"), n: 0 }
    }
    fn table(&mut self) -> OffsetPageTable<'_> {
        // SAFETY: the root is a zeroed or peer-built table in the pool and
        // every table it links is too; offset 0 maps "physical" = pointer.
        unsafe { OffsetPageTable::new(&mut *(self.root as *mut X86Table), VirtAddr::new(0)) }
    }
    fn populate(&mut self, n: u64) {
        let pool = self.pool;
        let mut t = self.table();
        let flags = PageTableFlags::PRESENT | PageTableFlags::WRITABLE;
        for i in 0..n {
            let page = Page::<Size4KiB>::containing_address(VirtAddr::new(BASE + i * 4096));
            let frame = PhysFrame::containing_address(PhysAddr::new((i + 1) << 12));
            // SAFETY: the mapped frames are never dereferenced (bench only).
            unsafe { t.map_to(page, frame, flags, &mut PoolFrames(pool)).expect("map_to").ignore() };
        }
        self.n = n;
    }
    fn unmap(&mut self, n: u64) {
        let mut t = self.table();
        for i in 0..n {
            let page = Page::<Size4KiB>::containing_address(VirtAddr::new(BASE + i * 4096));
            t.unmap(page).expect("unmap").1.ignore();
        }
        self.n = 0;
    }
    fn translate(&mut self, n: u64) -> u64 {
        let t = self.table();
        (0..n).filter(|i| t.translate_addr(VirtAddr::new(BASE + i * 4096)).is_some()).count() as u64
    }
}

impl Drop for Peer<'_> {
    fn drop(&mut self) {
        let n = self.n;
        self.unmap(n);
        let pool = self.pool;
        // SAFETY: nothing is mapped any more; the tables go back to the pool.
        unsafe { self.table().clean_up(&mut PoolFrames(pool)) };
        pool.give(self.root);
    }
}

fn peer_populated(pool: &Pool, n: u64) -> Peer<'_> {
    let mut p = Peer::new(pool);
    p.populate(n);
    p
}

fn memset(buf: &mut [u64], n: u64) {
    // SAFETY: `buf` holds at least n entries.
    unsafe { std::ptr::write_bytes(buf.as_mut_ptr(), 0x5a, n as usize) };
    black_box(&buf[..]);
}

fn bench(c: &mut Criterion) {
    let pool = Pool::new(8192);
    let mut buf = vec![1u64; 262_144];
    for &n in &SIZES {
        let mut g = c.benchmark_group(format!("pt/{n}"));
        g.throughput(Throughput::Elements(n));
        if n > 512 {
            g.sample_size(10);
        }
        // Bounded batches: every input lives in the pool at once.
        let large = if n > 512 { criterion::BatchSize::PerIteration } else { criterion::BatchSize::NumIterations(64) };
        g.bench_function(BenchmarkId::new("populate", n), |b| b.iter_batched(|| Pt::new(&pool).unwrap(), |pt| hmm_populate(pt, n), large));
        g.bench_function(BenchmarkId::new("populate_x86_64_map_to", n), |b| b.iter_batched(|| Peer::new(&pool), |mut p| { p.populate(n); p }, large));
        g.bench_function(BenchmarkId::new("invalidate", n), |b| b.iter_batched(|| populated(&pool, n), |pt| hmm_invalidate(pt, n), large));
        g.bench_function(BenchmarkId::new("invalidate_x86_64_unmap", n), |b| b.iter_batched(|| peer_populated(&pool, n), |mut p| { p.unmap(n); p }, large));
        let pt = populated(&pool, n);
        g.bench_function(BenchmarkId::new("iterate", n), |b| b.iter(|| black_box(hmm_iterate(&pt, n))));
        drop(pt);
        let mut peer = peer_populated(&pool, n);
        g.bench_function(BenchmarkId::new("iterate_x86_64_translate", n), |b| b.iter(|| black_box(peer.translate(n))));
        drop(peer);
        g.bench_function(BenchmarkId::new("memset_8n_bytes", n), |b| b.iter(|| memset(&mut buf, n)));
        g.finish();
    }
}

/// Best-of-k wall time of `f` (after building its input with `setup`;
/// dropping the result is not timed).
fn best<T, R>(k: usize, mut setup: impl FnMut() -> T, mut f: impl FnMut(T) -> R) -> f64 {
    (0..k)
        .map(|_| {
            let input = setup();
            let t = Instant::now();
            let out = black_box(f(input));
            let e = t.elapsed().as_secs_f64();
            drop(out);
            e
        })
        .fold(f64::INFINITY, f64::min)
}

fn summary() {
    let pool = Pool::new(8192);
    let mut buf = vec![1u64; 262_144];
    println!("\nsummary (best of runs, same pre-touched frame pool on both sides):");
    println!("  ×peer: the x86_64 crate's OffsetPageTable time / hmm::pt time (map_to, unmap, translate per page)");
    println!("  memset share: a memset of the same N×8 bytes / hmm::pt time");
    println!("  invalidate = PageTable::clear (VT-d domain unmap; whole nodes unlinked), inval_upd = update with a per-leaf callback (a mirror's invalidation)");
    println!("{:>8} {:>11} {:>14} {:>14} {:>9} {:>13}", "N", "operation", "hmm pages/s", "peer pages/s", "×peer", "memset share");
    let mut readme = Vec::new();
    for &n in &SIZES {
        let k = if n > 512 { 15 } else { 300 };
        let mem = best(k, || (), |_| memset(&mut buf, n));
        let rows = [
            ("populate", best(k, || Pt::new(&pool).unwrap(), |pt| hmm_populate(pt, n)), best(k, || Peer::new(&pool), |mut p| { p.populate(n); p })),
            ("invalidate", best(k, || populated(&pool, n), |pt| hmm_invalidate(pt, n)), best(k, || peer_populated(&pool, n), |mut p| { p.unmap(n); p })),
            ("inval_upd", best(k, || populated(&pool, n), |pt| hmm_invalidate_update(pt, n)), best(k, || peer_populated(&pool, n), |mut p| { p.unmap(n); p })),
            ("iterate", { let pt = populated(&pool, n); best(k, || (), |_| hmm_iterate(&pt, n)) }, { let mut p = peer_populated(&pool, n); best(k, || (), |_| p.translate(n)) }),
        ];
        for (name, t, peer) in rows {
            let share = if name == "iterate" { String::from("-") } else { format!("{:.1} %", 100.0 * mem / t) };
            println!("{n:>8} {name:>11} {:>14.3e} {:>14.3e} {:>8.2}x {:>13}", n as f64 / t, n as f64 / peer, peer / t, share);
            readme.push(format!("| {n} | {name} | {:.0} M | {:.0} M | {:.2}× | {share} |", n as f64 / t / 1e6, n as f64 / peer / 1e6, peer / t));
        }
    }
    // Iteration cost follows populated entries, not the range.
    let sparse = populated(&pool, 512);
    let t_small = best(300, || (), |_| hmm_iterate(&sparse, 512));
    let t_huge = best(300, || (), |_| sparse.iter(VaRange::pages_from(BASE, 1 << 18).unwrap()).count());
    println!("iterate 512 mirrored pages: over a 512-page range {:.2} us, over a 262144-page range {:.2} us", t_small * 1e6, t_huge * 1e6);
    drop(sparse);
    let dense = populated(&pool, 262_144);
    println!("table bytes per mirrored page (262144 dense pages): {:.3} ({} nodes of 4 KiB)", dense.bytes() as f64 / 262_144.0, dense.nodes());
    println!("\n<!-- readme-host:begin -->");
    println!("| N | operation | hmm::pt pages/s | x86_64 peer pages/s | ×peer | share of memset |");
    println!("|--:|---|--:|--:|--:|--:|");
    for r in readme {
        println!("{r}");
    }
    println!("<!-- readme-host:end -->");
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    summary();
}
