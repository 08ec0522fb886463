//! Mirror page-table benchmarks: populate, invalidate and iterate N pages
//! (N = 1, 512, 262144), each beside a naive per-page baseline (a fresh
//! 4-level walk from the root per page) in the same run. After criterion's
//! own report, a summary prints pages/s, the ratio to the baseline and the
//! bytes of table per mirrored page.

use criterion::{black_box, criterion_group, BenchmarkId, Criterion, Throughput};
use hmm::pt::{HeapMemory, Leaf, PageTable, SoftLayout};
use hmm::VaRange;
use std::time::Instant;
use x86_64::{PhysAddr, VirtAddr};

const SIZES: [u64; 3] = [1, 512, 262_144];
const BASE: u64 = 0x1000_0000;

type Pt<'m> = PageTable<SoftLayout, &'m HeapMemory>;

fn leaf(i: u64) -> Leaf {
    Leaf::writable(PhysAddr::new((i + 1) << 12))
}

fn populated(mem: &HeapMemory, n: u64) -> Pt<'_> {
    let mut pt = Pt::new(mem).unwrap();
    pt.populate(VirtAddr::new(BASE), (0..n).map(leaf)).unwrap();
    pt
}

/// Baseline: one root-to-leaf walk per page.
fn naive_populate(pt: &mut Pt<'_>, n: u64) {
    for i in 0..n {
        pt.set(VirtAddr::new(BASE + i * 4096), leaf(i)).unwrap();
    }
}

fn naive_invalidate(pt: &mut Pt<'_>, n: u64) {
    for i in 0..n {
        let up = pt.clear(VaRange::pages_from(BASE + i * 4096, 1).unwrap());
        pt.release(up.retired);
    }
}

fn naive_iterate(pt: &Pt<'_>, n: u64) -> u64 {
    (0..n).filter_map(|i| pt.get(VirtAddr::new(BASE + i * 4096))).count() as u64
}

fn bench(c: &mut Criterion) {
    let mem = HeapMemory::new();
    for &n in &SIZES {
        let mut g = c.benchmark_group(format!("pt/{n}"));
        g.throughput(Throughput::Elements(n));
        if n > 512 {
            g.sample_size(10);
        }
        g.bench_function(BenchmarkId::new("populate", n), |b| {
            b.iter_batched(|| Pt::new(&mem).unwrap(), |mut pt| { pt.populate(VirtAddr::new(BASE), (0..n).map(leaf)).unwrap(); pt }, criterion::BatchSize::LargeInput)
        });
        g.bench_function(BenchmarkId::new("populate_baseline", n), |b| {
            b.iter_batched(|| Pt::new(&mem).unwrap(), |mut pt| { naive_populate(&mut pt, n); pt }, criterion::BatchSize::LargeInput)
        });
        g.bench_function(BenchmarkId::new("invalidate", n), |b| {
            b.iter_batched(|| populated(&mem, n), |mut pt| { let up = pt.clear(VaRange::pages_from(BASE, n).unwrap()); pt.release(up.retired); pt }, criterion::BatchSize::LargeInput)
        });
        g.bench_function(BenchmarkId::new("invalidate_baseline", n), |b| {
            b.iter_batched(|| populated(&mem, n), |mut pt| { naive_invalidate(&mut pt, n); pt }, criterion::BatchSize::LargeInput)
        });
        let pt = populated(&mem, n);
        g.bench_function(BenchmarkId::new("iterate", n), |b| b.iter(|| black_box(pt.iter(VaRange::pages_from(BASE, n).unwrap()).count())));
        g.bench_function(BenchmarkId::new("iterate_baseline", n), |b| b.iter(|| black_box(naive_iterate(&pt, n))));
        g.finish();
    }
}

/// Best-of-k wall time of `f` (after building its input with `setup`).
fn best<T, R>(k: usize, mut setup: impl FnMut() -> T, mut f: impl FnMut(T) -> R) -> f64 {
    (0..k)
        .map(|_| {
            let input = setup();
            let t = Instant::now();
            black_box(f(input));
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn summary() {
    let mem = HeapMemory::new();
    println!("\nsummary (best of runs; pages/s, ratio to the naive per-page walk):");
    println!("{:>8} {:>12} {:>14} {:>14} {:>8}", "N", "operation", "pages/s", "baseline", "ratio");
    for &n in &SIZES {
        let k = if n > 512 { 5 } else { 200 };
        let rows = [
            ("populate", best(k, || Pt::new(&mem).unwrap(), |mut pt| { pt.populate(VirtAddr::new(BASE), (0..n).map(leaf)).unwrap(); pt }), best(k, || Pt::new(&mem).unwrap(), |mut pt| { naive_populate(&mut pt, n); pt })),
            ("invalidate", best(k, || populated(&mem, n), |mut pt| { let up = pt.clear(VaRange::pages_from(BASE, n).unwrap()); pt.release(up.retired); pt }), best(k, || populated(&mem, n), |mut pt| { naive_invalidate(&mut pt, n); pt })),
            ("iterate", { let pt = populated(&mem, n); best(k, || (), |_| pt.iter(VaRange::pages_from(BASE, n).unwrap()).count()) }, { let pt = populated(&mem, n); best(k, || (), |_| naive_iterate(&pt, n)) }),
        ];
        for (name, t, base) in rows {
            println!("{n:>8} {name:>12} {:>14.3e} {:>14.3e} {:>7.1}x", n as f64 / t, n as f64 / base, base / t);
        }
    }
    // Iteration cost follows populated entries, not the range: 512 pages
    // mirrored inside a 1 GiB range vs. inside a 2 MiB range.
    let mut sparse = Pt::new(&mem).unwrap();
    sparse.populate(VirtAddr::new(BASE), (0..512).map(leaf)).unwrap();
    let t_small = best(200, || (), |_| sparse.iter(VaRange::pages_from(BASE, 512).unwrap()).count());
    let t_huge = best(200, || (), |_| sparse.iter(VaRange::pages_from(BASE, 1 << 18).unwrap()).count());
    println!("iterate 512 mirrored pages: over a 512-page range {:.2} us, over a 262144-page range {:.2} us", t_small * 1e6, t_huge * 1e6);
    let dense = populated(&mem, 262_144);
    println!("table bytes per mirrored page (262144 dense pages): {:.3} ({} nodes of 4 KiB)", dense.bytes() as f64 / 262_144.0, dense.nodes());
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    summary();
}
