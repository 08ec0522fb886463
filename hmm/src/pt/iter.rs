//! `hmm_pt_iter`: walk the valid leaves of a range, depth first, never
//! descending into an absent subtree — leaf by leaf ([`Iter`]) or leaf
//! node by leaf node ([`LeafNodes`]: the caller runs its own tight loop
//! over the node's atomic words, e.g. the kernel exchanging CPU entries).

use super::{index, span, EntryLayout, Leaf, Node, TableMemory, LEVELS};
use core::marker::PhantomData;
use core::sync::atomic::Ordering;
use x86_64::{PhysAddr, VirtAddr};

/// An iterator over `(address, leaf)` in a range (see
/// [`super::PageTable::iter`], [`super::View::iter`]).
pub struct Iter<'a, L: EntryLayout, M: TableMemory> {
    mem: &'a M,
    _layout: PhantomData<L>,
    /// Per level (index = level - 1): the node being scanned, its base
    /// address, and the next entry to look at.
    stack: [(PhysAddr, u64, usize); LEVELS as usize],
    level: u8,
    start: u64,
    end: u64,
    done: bool,
}

impl<'a, L: EntryLayout, M: TableMemory> Iter<'a, L, M> {
    /// # Safety
    /// Every node reachable from `root` through `mem` stays allocated for
    /// `'a` (a `PageTable` borrowed shared frees none; a `View`'s maker
    /// promises it), and its entries change only by atomic stores.
    pub(super) unsafe fn new(mem: &'a M, root: PhysAddr, start: u64, end: u64) -> Self {
        let mut stack = [(PhysAddr::zero(), 0, 0); LEVELS as usize];
        stack[LEVELS as usize - 1] = (root, 0, index(start, LEVELS));
        Iter { mem, _layout: PhantomData, stack, level: LEVELS, start, end, done: start >= end }
    }

    #[inline]
    fn node(&self, table: PhysAddr) -> &'a Node {
        // SAFETY: `table` was reached from the root through present
        // entries; `new`'s contract keeps it allocated for 'a.
        unsafe { self.mem.table(table).as_ref() }
    }
}

impl<L: EntryLayout, M: TableMemory> Iter<'_, L, M> {
    /// The end (exclusive index) of the scan of the current leaf node.
    #[inline]
    fn leaf_stop(&self, base: u64) -> usize {
        if self.end - base >= span(2) {
            512
        } else {
            (self.end - base).div_ceil(span(1)) as usize
        }
    }

    /// One step above the leaves: descend into the next present child,
    /// or pop a finished node (setting `done` after the root).
    #[inline]
    fn step(&mut self) {
        let level = self.level;
        let (table, base, i) = self.stack[level as usize - 1];
        let va = base + i as u64 * span(level);
        if i == 512 || va >= self.end {
            if level == LEVELS {
                self.done = true;
            } else {
                self.level += 1; // pop: the parent already points past us
            }
            return;
        }
        self.stack[level as usize - 1].2 += 1;
        if let Some(child) = L::decode_table(self.node(table)[i].load(Ordering::Acquire)) {
            let first = if self.start > va { index(self.start, level - 1) } else { 0 };
            self.level -= 1;
            self.stack[level as usize - 2] = (child, va, first);
        }
    }
}

impl<L: EntryLayout, M: TableMemory> Iterator for Iter<'_, L, M> {
    type Item = (VirtAddr, Leaf);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            if self.level > 1 {
                self.step();
                continue;
            }
            // The hot loop: scan the current leaf node in place.
            let (table, base, mut i) = self.stack[0];
            let node = self.node(table);
            let stop = self.leaf_stop(base);
            while i < stop {
                let raw = node[i].load(Ordering::Acquire);
                i += 1;
                if let Some(leaf) = L::decode_leaf(raw) {
                    self.stack[0].2 = i;
                    return Some((VirtAddr::new(base + (i as u64 - 1) * span(1)), leaf));
                }
            }
            self.level += 1; // pop: the parent already points past us
        }
        None
    }

    /// Internal iteration (`count`, `for_each`, `sum`, ...): one tight loop
    /// per leaf node instead of a resumable state machine per leaf.
    fn fold<B, F: FnMut(B, Self::Item) -> B>(mut self, init: B, mut f: F) -> B {
        let mut acc = init;
        while !self.done {
            if self.level > 1 {
                self.step();
                continue;
            }
            let (table, base, i) = self.stack[0];
            let node = self.node(table);
            for (j, entry) in node[..self.leaf_stop(base)].iter().enumerate().skip(i) {
                if let Some(leaf) = L::decode_leaf(entry.load(Ordering::Acquire)) {
                    acc = f(acc, (VirtAddr::new(base + j as u64 * span(1)), leaf));
                }
            }
            self.level += 1;
        }
        acc
    }
}

/// One leaf node of a walk: `node[first..stop]` are the entries of the
/// range in it; entry `i` maps page `base + i * 4096`.
pub struct LeafNode<'a> {
    pub base: u64,
    pub node: &'a Node,
    pub first: usize,
    pub stop: usize,
}

impl LeafNode<'_> {
    /// The page entry `i` maps.
    #[inline]
    pub fn va(&self, i: usize) -> u64 {
        self.base + i as u64 * span(1)
    }
}

/// The leaf nodes under a range, in address order, one descent each,
/// absent subtrees skipped (see [`super::View::leaf_nodes`]). A range
/// inside one leaf node (the common small unmap) is one straight descent
/// with no walker state.
pub struct LeafNodes<'a, L: EntryLayout, M: TableMemory>(Nodes<'a, L, M>);

enum Nodes<'a, L: EntryLayout, M: TableMemory> {
    One(Option<LeafNode<'a>>),
    Walk(Iter<'a, L, M>),
}

impl<'a, L: EntryLayout, M: TableMemory> LeafNodes<'a, L, M> {
    /// # Safety
    /// As [`Iter::new`].
    pub(super) unsafe fn new(mem: &'a M, root: PhysAddr, start: u64, end: u64) -> Self {
        if start < end && start / span(2) == (end - 1) / span(2) {
            let mut t = root;
            for level in (2..=LEVELS).rev() {
                // SAFETY: reached from the root; the caller keeps it allocated.
                let node = unsafe { mem.table(t).as_ref() };
                match L::decode_table(node[index(start, level)].load(Ordering::Acquire)) {
                    Some(next) => t = next,
                    None => return LeafNodes(Nodes::One(None)),
                }
            }
            let base = start & !(span(2) - 1);
            // SAFETY: as above.
            let node = unsafe { mem.table(t).as_ref() };
            let stop = if end - base >= span(2) { 512 } else { ((end - base) / span(1)) as usize };
            return LeafNodes(Nodes::One(Some(LeafNode { base, node, first: index(start, 1), stop })));
        }
        // SAFETY: the caller's contract is `Iter::new`'s.
        LeafNodes(Nodes::Walk(unsafe { Iter::new(mem, root, start, end) }))
    }
}

impl<'a, L: EntryLayout, M: TableMemory> Iterator for LeafNodes<'a, L, M> {
    type Item = LeafNode<'a>;

    #[inline]
    fn next(&mut self) -> Option<LeafNode<'a>> {
        let it = match &mut self.0 {
            Nodes::One(one) => return one.take(),
            Nodes::Walk(it) => it,
        };
        while !it.done {
            if it.level > 1 {
                it.step();
                continue;
            }
            let (table, base, first) = it.stack[0];
            let stop = it.leaf_stop(base);
            it.level += 1; // pop: the parent already points past us
            return Some(LeafNode { base, node: it.node(table), first, stop });
        }
        None
    }
}
