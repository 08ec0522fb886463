use super::*;
use core::sync::atomic::Ordering;
use crate::range::VaRange;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use proptest::prelude::*;

type Pt<'m> = PageTable<SoftLayout, &'m HeapMemory>;

fn va(page: u64) -> VirtAddr {
    VirtAddr::new(page * PAGE)
}
fn r(first: u64, end: u64) -> VaRange {
    VaRange::new(first * PAGE, end * PAGE).unwrap()
}
const ALL: u64 = (1 << 47) / PAGE;
fn pa(n: u64) -> PhysAddr {
    PhysAddr::new(n * PAGE)
}

#[test]
fn set_get_and_lazy_nodes() {
    let mem = HeapMemory::new();
    let mut pt = Pt::new(&mem).unwrap();
    assert_eq!(mem.live(), 1, "only the root");
    assert_eq!(pt.get(va(5)), None);
    assert_eq!(pt.set(va(5), Leaf::writable(pa(77))).unwrap(), None);
    assert_eq!(mem.live(), 4, "one node per level on the path");
    assert_eq!(pt.get(va(5)), Some(Leaf::writable(pa(77))));
    assert_eq!(pt.get(va(6)), None);
    // A far address needs its own path below the root.
    pt.set(VirtAddr::new(0x7fff_ffff_f000), Leaf::read_only(pa(1))).unwrap();
    assert_eq!(mem.live(), 7);
    assert_eq!(pt.leaves(), 2);
    drop(pt);
    assert_eq!(mem.live(), 0, "drop frees every node");
}

#[test]
fn clearing_frees_empty_nodes_only_after_release() {
    let mem = HeapMemory::new();
    let mut pt = Pt::new(&mem).unwrap();
    pt.populate(va(510), (0..4).map(|i| Leaf::writable(pa(i)))).unwrap(); // crosses a leaf node
    assert_eq!(mem.live(), 5, "root, L3, L2, two leaf nodes");
    let up = pt.clear(r(510, 512));
    assert_eq!(up.cleared, 2);
    assert_eq!(up.retired.len(), 1, "the first leaf node emptied");
    assert_eq!(mem.live(), 5, "not freed before release");
    pt.release(up.retired);
    assert_eq!(mem.live(), 4);
    let up = pt.clear(r(0, 1 << 20));
    assert_eq!(up.cleared, 2);
    assert_eq!(up.retired.len(), 3, "leaf node, then its now-empty parents");
    pt.release(up.retired);
    assert_eq!(mem.live(), 1, "back to the root alone");
    assert_eq!(pt.nodes(), 1);
    assert_eq!(pt.leaves(), 0);
}

#[test]
fn update_applies_a_mask() {
    let mem = HeapMemory::new();
    let mut pt = Pt::new(&mem).unwrap();
    pt.populate(va(0), (0..8).map(|i| Leaf::writable(pa(i)))).unwrap();
    let up = pt.update(r(2, 6), |_, l| Some(Leaf { write: false, ..l }));
    assert_eq!((up.changed, up.cleared), (4, 0));
    pt.release(up.retired);
    let writable: Vec<bool> = pt.iter(r(0, 8)).map(|(_, l)| l.write).collect();
    assert_eq!(writable, [true, true, false, false, false, false, true, true]);
}

#[test]
fn iter_skips_empty_subtrees_and_respects_bounds() {
    let mem = HeapMemory::new();
    let mut pt = Pt::new(&mem).unwrap();
    let pages = [3u64, 511, 512, 1 << 18, (1 << 27) + 7, (1 << 35) - 1];
    for &p in &pages {
        pt.set(va(p), Leaf::read_only(pa(p & 0xffff))).unwrap();
    }
    let all: Vec<u64> = pt.iter(r(0, ALL)).map(|(v, _)| v.as_u64() / PAGE).collect();
    assert_eq!(all, pages);
    let some: Vec<u64> = pt.iter(r(4, 1 << 18)).map(|(v, _)| v.as_u64() / PAGE).collect();
    assert_eq!(some, [511, 512]);
    assert_eq!(pt.iter(r(513, 600)).count(), 0);
}

#[test]
fn populate_counts_new_leaves_only() {
    let mem = HeapMemory::new();
    let mut pt = Pt::new(&mem).unwrap();
    assert_eq!(pt.populate(va(0), (0..600).map(|i| Leaf::writable(pa(i)))).unwrap(), 600);
    assert_eq!(pt.populate(va(100), (0..10).map(|i| Leaf::read_only(pa(i)))).unwrap(), 10);
    assert_eq!(pt.leaves(), 600);
}

#[test]
fn out_of_memory_is_an_error() {
    struct Tiny(HeapMemory);
    // SAFETY: delegates, refusing past 2 live nodes.
    unsafe impl TableMemory for Tiny {
        fn alloc_table(&self) -> Option<PhysAddr> {
            (self.0.live() < 2).then(|| self.0.alloc_table()).flatten()
        }
        unsafe fn free_table(&self, t: PhysAddr) {
            // SAFETY: forwarded: the caller's contract is the same.
            unsafe { self.0.free_table(t) }
        }
        fn table(&self, t: PhysAddr) -> core::ptr::NonNull<Node> {
            self.0.table(t)
        }
    }
    let mem = Tiny(HeapMemory::new());
    let mut pt = PageTable::<SoftLayout, _>::new(&mem).unwrap();
    assert_eq!(pt.set(va(1), Leaf::read_only(pa(1))), Err(OutOfTableMemory));
    assert_eq!(pt.get(va(1)), None);
    drop(pt);
    assert_eq!(mem.0.live(), 0, "partially built paths are still freed");
}

/// Every table entry's count equals its child's live entries, and the
/// root's field the root's: returns the number of nodes checked.
fn audit(pt: &Pt<'_>) -> usize {
    fn live(pt: &Pt<'_>, t: PhysAddr, level: u8, nodes: &mut usize) -> usize {
        *nodes += 1;
        let mut n = 0;
        for e in pt.node(t).iter() {
            let raw = e.load(Ordering::Relaxed);
            if raw == 0 {
                continue;
            }
            n += 1;
            if level > 1 {
                let child = SoftLayout::decode_table(raw).unwrap();
                assert_eq!(count_of(raw), live(pt, child, level - 1, nodes), "count of the level-{} node {child:?}", level - 1);
            }
        }
        n
    }
    let mut nodes = 0;
    assert_eq!(pt.root_live, live(pt, pt.root(), LEVELS, &mut nodes), "root count");
    nodes
}

#[test]
fn invalidation_visits_entries_proportional_to_what_it_clears() {
    let mem = HeapMemory::new();
    let mut pt = Pt::new(&mem).unwrap();
    pt.populate(va(0), (0..1024).map(|i| Leaf::writable(pa(i)))).unwrap(); // two full leaf nodes
    // One page out of a full node: one entry per level, no rescan of the 511 others.
    let up = pt.clear(r(100, 101));
    assert_eq!((up.cleared, up.visited, up.retired.len()), (1, 4, 0));
    pt.release(up.retired);
    // The last page of a node that then empties: still one entry per level.
    let up = pt.clear(r(512, 1023));
    assert_eq!(up.cleared, 511);
    pt.release(up.retired);
    let up = pt.clear(r(1023, 1024));
    assert_eq!((up.cleared, up.visited, up.retired.len()), (1, 4, 1));
    pt.release(up.retired);
    // A sparse node: the scan stops at the last live entry, not at 512.
    pt.populate(va(2048), (0..3).map(|i| Leaf::writable(pa(i)))).unwrap();
    let up = pt.update(r(2048, 2048 + 512), |_, _| None);
    assert_eq!((up.cleared, up.visited), (3, 3 + 3));
    pt.release(up.retired);
    // A bulk update: entries visited = leaves cleared + the path to them.
    let up = pt.update(r(0, 1 << 20), |_, _| None);
    assert_eq!(up.cleared, 511);
    assert!(up.visited <= 511 + 3 + 1, "visited {} entries to clear 511", up.visited);
    pt.release(up.retired);
    assert_eq!(audit(&pt), 1);
    // `clear` of fully covered nodes unlinks them whole: 2 full leaf nodes
    // and a partial one cost the path plus the partial node's leaves.
    pt.populate(va(4096), (0..1100).map(|i| Leaf::writable(pa(i)))).unwrap();
    let up = pt.clear(r(4096, 4096 + 1100));
    assert_eq!((up.cleared, up.retired.len()), (1100, 5));
    assert_eq!(up.visited, 1 + 1 + 3 + 76, "root, L3, one L2 entry per leaf node, the partial node's leaves");
    pt.release(up.retired);
    assert_eq!((audit(&pt), mem.live(), pt.leaves()), (1, 1, 0));
}

#[test]
fn cursor_walks_once_per_leaf_node() {
    let mem = HeapMemory::new();
    let mut pt = Pt::new(&mem).unwrap();
    let mut c = pt.cursor();
    for p in 0..512 {
        c.set(va(p), Leaf::writable(pa(p))).unwrap();
    }
    assert_eq!(c.steps(), 3, "one walk for a whole leaf node");
    c.set(va(512), Leaf::writable(pa(1))).unwrap();
    assert_eq!(c.steps(), 4, "the next leaf node: one step from the shared L2 node");
    assert_eq!(c.get(va(3)), Some(Leaf::writable(pa(3))));
    assert_eq!(c.steps(), 5);
    assert_eq!(c.get(va(1 << 27)), None, "absent: nothing created");
    drop(c);
    assert_eq!(pt.nodes(), 5);
    assert_eq!(pt.leaves(), 513);
    audit(&pt);
    // The next cursor starts where the last one stopped (that one stopped
    // at an absent node: no position kept, so this one walks).
    let mut c = pt.cursor();
    c.set(va(5), Leaf::writable(pa(5))).unwrap();
    assert_eq!(c.steps(), 3);
    drop(c);
    let mut c = pt.cursor();
    c.set(va(7), Leaf::read_only(pa(9))).unwrap();
    assert_eq!(c.steps(), 0, "same leaf node as the last cursor");
    drop(c);
    // An update that unlinks nodes forgets that position (it may run
    // through a freed node): the next cursor walks, and rebuilds the path.
    let up = pt.update(r(0, 1024), |_, _| None);
    assert_eq!(up.retired.len(), 4, "both leaf nodes and their parents below the root");
    pt.release(up.retired);
    let mut c = pt.cursor();
    c.set(va(7), Leaf::read_only(pa(9))).unwrap();
    assert_eq!(c.steps(), 3, "a fresh walk from the root");
    drop(c);
    assert_eq!((pt.leaves(), pt.get(va(7)), pt.nodes()), (1, Some(Leaf::read_only(pa(9))), 4));
    audit(&pt);
}

#[derive(Clone, Debug)]
enum Op {
    Set(u64, u64, bool),
    Clear(u64, u64),
    Protect(u64, u64),
    /// A run written through one cursor: (first page, pages, frame).
    Run(u64, u64, u64),
}

fn op() -> impl Strategy<Value = Op> {
    // Pages clustered so that nodes fill, empty and cross boundaries.
    let page = prop_oneof![0u64..2048, (1u64 << 18)..(1 << 18) + 1024, Just((1 << 35) - 1)];
    prop_oneof![
        (page.clone(), 0u64..1 << 20, any::<bool>()).prop_map(|(p, f, w)| Op::Set(p, f, w)),
        (page.clone(), 1u64..1100).prop_map(|(p, n)| Op::Clear(p, n)),
        (page.clone(), 1u64..1100).prop_map(|(p, n)| Op::Protect(p, n)),
        (page, 1u64..1100, 0u64..1 << 20).prop_map(|(p, n, f)| Op::Run(p, n, f)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    /// The table behaves like a map from page to leaf, and after every
    /// step holds exactly the nodes its leaves need.
    #[test]
    fn behaves_like_a_map(ops in proptest::collection::vec(op(), 1..60)) {
        let mem = HeapMemory::new();
        let mut pt = Pt::new(&mem).unwrap();
        let mut model: BTreeMap<u64, Leaf> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Set(p, f, w) => {
                    let leaf = Leaf { addr: pa(f), write: w, dirty: false, exclusive: false };
                    prop_assert_eq!(pt.set(va(p), leaf).unwrap(), model.insert(p, leaf));
                }
                Op::Clear(p, n) => {
                    let up = pt.clear(r(p, (p + n).min(1 << 35)));
                    let gone: Vec<u64> = model.range(p..p + n).map(|(k, _)| *k).collect();
                    prop_assert_eq!(up.cleared, gone.len());
                    for k in gone { model.remove(&k); }
                    pt.release(up.retired);
                }
                Op::Protect(p, n) => {
                    let up = pt.update(r(p, (p + n).min(1 << 35)), |_, l| Some(Leaf { write: false, ..l }));
                    for (_, l) in model.range_mut(p..p + n) { l.write = false; }
                    pt.release(up.retired);
                }
                Op::Run(p, n, f) => {
                    let n = n.min((1 << 35) - p);
                    let mut c = pt.cursor();
                    // Every other page through get/set, then the run by populate.
                    for q in (p..p + n).step_by(2) {
                        let leaf = Leaf::read_only(pa(f + q));
                        prop_assert_eq!(c.get(va(q)), model.get(&q).copied());
                        prop_assert_eq!(c.set(va(q), leaf).unwrap(), model.insert(q, leaf));
                    }
                    prop_assert_eq!(c.populate(va(p), (p..p + n).map(|q| Leaf::writable(pa(f + q)))).unwrap(), n as usize);
                    for q in p..p + n { model.insert(q, Leaf::writable(pa(f + q))); }
                }
            }
            audit(&pt);
            let got: Vec<(u64, Leaf)> = pt.iter(r(0, ALL)).map(|(v, l)| (v.as_u64() / PAGE, l)).collect();
            let want: Vec<(u64, Leaf)> = model.iter().map(|(k, v)| (*k, *v)).collect();
            prop_assert_eq!(&got, &want);
            // Internal iteration (fold) and a range starting and ending mid-node agree.
            let folded = pt.iter(r(0, ALL)).fold(Vec::new(), |mut v, (a, l)| { v.push((a.as_u64() / PAGE, l)); v });
            prop_assert_eq!(&folded, &want);
            let part: Vec<(u64, Leaf)> = pt.iter(r(300, 1800)).fold(Vec::new(), |mut v, (a, l)| { v.push((a.as_u64() / PAGE, l)); v });
            let want_part: Vec<(u64, Leaf)> = model.range(300..1800).map(|(k, v)| (*k, *v)).collect();
            prop_assert_eq!(part, want_part);
            prop_assert_eq!(pt.iter(r(300, 1800)).count(), model.range(300..1800).count());
            prop_assert_eq!(pt.leaves(), model.len());
            // Exactly the nodes needed: root + distinct prefixes per level.
            let mut need = 1;
            for shift in [27u32, 18, 9] {
                let mut prefixes: Vec<u64> = model.keys().map(|k| k >> shift).collect();
                prefixes.dedup();
                need += prefixes.len();
            }
            prop_assert_eq!(mem.live(), need);
        }
    }
}

#[test]
fn a_view_reads_what_the_table_holds() {
    let mem = HeapMemory::new();
    let mut pt = Pt::new(&mem).unwrap();
    pt.populate(va(510), (0..5).map(|i| Leaf::writable(pa(i)))).unwrap();
    pt.set(va(1 << 20), Leaf::read_only(pa(7))).unwrap();
    // SAFETY: `pt` outlives the view and is not changed while it lives.
    let view = unsafe { View::<SoftLayout, HeapMemory>::new(&mem, pt.root()) };
    for p in [0, 509, 510, 512, 514, 515, 1 << 20, (1 << 20) + 1] {
        assert_eq!(view.get(va(p).as_u64()), pt.get(va(p)), "page {p}");
    }
    assert!(view.leaf_node(va(511).as_u64()).is_some() && view.leaf_node(va(1 << 19).as_u64()).is_none());
    let all = r(0, (1 << 20) + 8);
    assert_eq!(view.iter(all).collect::<Vec<_>>(), pt.iter(all).collect::<Vec<_>>());
}

/// `View::leaf_nodes` yields exactly the leaf nodes under a range, each
/// once, with the range's entries in it — the one-node fast path and the
/// walk agree with `iter` on every range tried.
#[test]
fn leaf_nodes_cover_exactly_the_range() {
    let mem = HeapMemory::new();
    let mut pt = Pt::new(&mem).unwrap();
    pt.populate(va(500), (0..30).map(|i| Leaf::writable(pa(i + 1)))).unwrap();
    pt.set(va(1 << 20), Leaf::read_only(pa(99))).unwrap();
    pt.set(va((1 << 27) + 3), Leaf::read_only(pa(98))).unwrap();
    // SAFETY: `pt` outlives the view and is not changed while it lives.
    let view = unsafe { View::<SoftLayout, HeapMemory>::new(&mem, pt.root()) };
    for (first, end) in [(0, 1), (500, 501), (511, 513), (510, 512), (512, 1024), (0, 530), (505, 1 << 20), (505, (1 << 20) + 1), (0, 1 << 28), (1 << 20, (1 << 20) + 1), ((1 << 27) + 3, (1 << 27) + 4), (3, 4)] {
        let range = r(first, end);
        let mut from_nodes = Vec::new();
        let mut last_base = None;
        for n in view.leaf_nodes(range.start(), range.end()) {
            assert!(last_base < Some(n.base), "nodes in order, each once");
            last_base = Some(n.base);
            assert!(n.first <= n.stop && n.stop <= 512);
            assert!(n.va(n.first) >= range.start() && (n.first == n.stop || n.va(n.stop - 1) < range.end()), "entries {}..{} of {:#x} outside {range:?}", n.first, n.stop, n.base);
            for i in n.first..n.stop {
                if let Some(l) = SoftLayout::decode_leaf(n.node[i].load(Ordering::Relaxed)) {
                    from_nodes.push((VirtAddr::new(n.va(i)), l));
                }
            }
        }
        assert_eq!(from_nodes, view.iter(range).collect::<Vec<_>>(), "range {first}..{end}");
    }
}
