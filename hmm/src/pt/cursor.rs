//! The write cursor: a position in the table that holds the path to its
//! current leaf node.
//!
//! ```text
//!  path[3] = root ─► path[2] (L3) ─► path[1] (L2) ─► path[0] (leaf node, 512 leaves)
//!  leaf_base = the 2 MiB-aligned address path[0] covers (NONE: path below root unknown)
//! ```
//!
//! * `get`/`set` of a page in the current leaf node touch one entry (and,
//!   when a leaf appears, the live count in the parent entry).
//! * Moving to another leaf node re-walks only from the deepest node the
//!   old and new addresses share, creating missing nodes on `set`.
//! * The cursor borrows the table mutably: it is the one writer, which the
//!   caller guarantees by holding the mirror's (or domain's) lock.

use super::{check_va, count_of, index, span, with_count, EntryLayout, Leaf, Node, OutOfTableMemory, PageTable, TableMemory, LEVELS, PAGE, VA_END};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};
use x86_64::{PhysAddr, VirtAddr};

pub(super) const NONE: u64 = u64::MAX;

/// See the module docs.
pub struct Cursor<'a, L: EntryLayout, M: TableMemory> {
    pt: &'a mut PageTable<L, M>,
    /// `path[l - 1]`: the node at level `l` on the way to `leaf_base`.
    path: [PhysAddr; LEVELS as usize],
    leaf_base: u64,
    /// While `leaf_base` is set: the leaf node itself, and the parent entry
    /// that holds its live count — so a page costs no address translation.
    leaf: NonNull<Node>,
    count: NonNull<AtomicU64>,
    /// The leaf node was created by this cursor and nothing written to it
    /// yet: all its entries are known zero.
    fresh: bool,
    /// Nodes walked through since the cursor was made (a work count for tests).
    steps: usize,
}

impl<'a, L: EntryLayout, M: TableMemory> Cursor<'a, L, M> {
    /// Starts where the table's last cursor stopped (its `hint`), if that
    /// is still valid.
    pub(super) fn new(pt: &'a mut PageTable<L, M>) -> Self {
        let (leaf_base, path) = pt.hint;
        let mut c = Cursor { pt, path, leaf_base: NONE, leaf: NonNull::dangling(), count: NonNull::dangling(), fresh: false, steps: 0 };
        if leaf_base != NONE {
            c.leaf = c.pt.mem.table(path[0]);
            c.count = NonNull::from(&c.pt.node(path[1])[index(leaf_base, 2)]);
            c.leaf_base = leaf_base;
        }
        c
    }

    /// Table entries followed from one node to the next since the cursor was
    /// made: 3 for the first page, 0 more within the same leaf node.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// The leaf node covering `va`: cached, or walked to from the deepest
    /// shared node; created if missing when `create`, else `None`.
    #[inline]
    fn leaf_node(&mut self, va: u64, create: bool) -> Result<bool, OutOfTableMemory> {
        let base = va & !(span(2) - 1);
        if base == self.leaf_base {
            return Ok(true);
        }
        self.walk(va, base, create)
    }

    /// The current leaf node's entries (`leaf_base` must be set).
    #[inline]
    fn entries(&self) -> &Node {
        debug_assert!(self.leaf_base != NONE);
        // SAFETY: set by `walk` from a node on the path to `leaf_base`. The
        // cursor borrows the table exclusively, and only `&mut` methods of
        // the table unlink or free nodes: the node lives as long as the cursor.
        unsafe { self.leaf.as_ref() }
    }

    /// Add `n` to the current leaf node's live count (in its parent entry).
    #[inline]
    fn add_leaf_live(&self, n: usize) {
        // SAFETY: as in `entries`: an entry of the level-2 node on the path.
        let slot = unsafe { self.count.as_ref() };
        let raw = slot.load(Ordering::Relaxed);
        slot.store(with_count(raw, count_of(raw) + n), Ordering::Release);
    }

    #[cold]
    fn walk(&mut self, va: u64, base: u64, create: bool) -> Result<bool, OutOfTableMemory> {
        // The node at level l covers span(l + 1) bytes: reuse the deepest one
        // on both paths.
        let mut from = LEVELS;
        if self.leaf_base != NONE {
            for level in 2..LEVELS {
                if va / span(level + 1) == self.leaf_base / span(level + 1) {
                    from = level;
                    break;
                }
            }
        }
        self.leaf_base = NONE;
        self.fresh = false;
        for level in (2..=from).rev() {
            let t = self.path[level as usize - 1];
            let raw = self.pt.node(t)[index(va, level)].load(Ordering::Acquire);
            self.steps += 1;
            self.path[level as usize - 2] = match L::decode_table(raw) {
                Some(next) => next,
                None if !create => return Ok(false),
                None => {
                    let next = self.pt.mem.alloc_table().ok_or(OutOfTableMemory)?;
                    self.pt.nodes += 1;
                    // Release: the zeroed node is visible before the link.
                    self.pt.node(t)[index(va, level)].store(L::encode_table(next), Ordering::Release);
                    self.pt.add_live(&self.path, level, va, 1);
                    self.fresh = level == 2;
                    next
                }
            };
        }
        self.leaf = self.pt.mem.table(self.path[0]);
        self.count = NonNull::from(&self.pt.node(self.path[1])[index(va, 2)]);
        self.leaf_base = base;
        Ok(true)
    }

    /// The leaf for page `va`, if mapped.
    pub fn get(&mut self, va: VirtAddr) -> Option<Leaf> {
        let va = va.as_u64();
        check_va(va);
        if !self.leaf_node(va, false).ok()? {
            return None;
        }
        L::decode_leaf(self.entries()[index(va, 1)].load(Ordering::Acquire))
    }

    /// Map page `va` to `leaf`; returns the previous leaf.
    pub fn set(&mut self, va: VirtAddr, leaf: Leaf) -> Result<Option<Leaf>, OutOfTableMemory> {
        self.set_iova(va.as_u64(), leaf)
    }

    /// [`Cursor::set`] for any device address below 2^48.
    pub fn set_iova(&mut self, va: u64, leaf: Leaf) -> Result<Option<Leaf>, OutOfTableMemory> {
        check_va(va);
        self.leaf_node(va, true)?;
        let entry = &self.entries()[index(va, 1)];
        // One writer (the caller holds the lock) and no hardware writes
        // these entries: a plain load + release store, no locked exchange.
        let old = L::decode_leaf(entry.load(Ordering::Relaxed));
        entry.store(L::encode_leaf(leaf), Ordering::Release);
        self.fresh = false;
        if old.is_none() {
            self.add_leaf_live(1);
            self.pt.leaves += 1;
        }
        Ok(old)
    }

    /// Write page `va`'s entry as `f(old entry)`, in one lookup (missing
    /// nodes are created). Returns the old leaf and whether the entry
    /// changed (`f` returning the old leaf writes nothing).
    #[inline]
    pub fn merge(&mut self, va: u64, f: impl FnOnce(Option<Leaf>) -> Leaf) -> Result<(Option<Leaf>, bool), OutOfTableMemory> {
        check_va(va);
        self.leaf_node(va, true)?;
        let entry = &self.entries()[index(va, 1)];
        // One writer (the caller holds the lock): load + release store.
        let old = L::decode_leaf(entry.load(Ordering::Relaxed));
        let new = f(old);
        if old == Some(new) {
            return Ok((old, false));
        }
        entry.store(L::encode_leaf(new), Ordering::Release);
        self.fresh = false;
        if old.is_none() {
            self.add_leaf_live(1);
            self.pt.leaves += 1;
        }
        Ok((old, true))
    }

    /// Map consecutive pages from `start`, one per leaf: per 512-entry leaf
    /// node one (partial) walk and one count update, then one store per
    /// page. Stops at the first `None`. Returns how many pages were written.
    pub fn populate(&mut self, start: VirtAddr, leaves: impl IntoIterator<Item = Leaf>) -> Result<usize, OutOfTableMemory> {
        let mut va = start.as_u64();
        check_va(va);
        let mut leaves = leaves.into_iter();
        let mut written = 0;
        // The first leaf of each node is taken before its walk, so the inner
        // loop is one `next` and one store per page (no peeking).
        while let Some(first) = leaves.next() {
            assert!(va < VA_END, "populate runs past the 48-bit range");
            self.leaf_node(va, true)?;
            let entries = &self.entries()[index(va, 1)..];
            let fresh = self.fresh;
            let old = entries[0].load(Ordering::Relaxed);
            entries[0].store(L::encode_leaf(first), Ordering::Release);
            let (mut n, mut new) = (1, (fresh || L::decode_leaf(old).is_none()) as usize);
            if fresh {
                // A node this cursor just made: every entry is zero, each
                // leaf is new — stores only.
                for (entry, leaf) in entries[1..].iter().zip(leaves.by_ref()) {
                    entry.store(L::encode_leaf(leaf), Ordering::Release);
                    n += 1;
                }
                new = n;
            } else {
                for (entry, leaf) in entries[1..].iter().zip(leaves.by_ref()) {
                    let old = entry.load(Ordering::Relaxed);
                    entry.store(L::encode_leaf(leaf), Ordering::Release);
                    new += L::decode_leaf(old).is_none() as usize;
                    n += 1;
                }
            }
            self.fresh = false;
            written += n;
            va += n as u64 * PAGE;
            self.add_leaf_live(new);
            self.pt.leaves += new;
        }
        Ok(written)
    }
}

impl<L: EntryLayout, M: TableMemory> Drop for Cursor<'_, L, M> {
    /// Leave the position for the next cursor (see `PageTable::hint`).
    fn drop(&mut self) {
        self.pt.hint = (self.leaf_base, self.path);
    }
}
