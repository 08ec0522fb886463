//! The per-mirror page table: a 4-level radix tree over the 48-bit user
//! address space, 512 entries per 4 KiB node — the x86-64 and VT-d geometry.
//!
//! ```text
//!  47    39 38    30 29    21 20    12 11      0
//!  ├──────┼────────┼────────┼────────┼─────────┤
//!  │ L4   │  L3    │  L2    │  L1    │ offset  │   root = L4; L1 entries are leaves
//!  └──────┴────────┴────────┴────────┴─────────┘
//! ```
//!
//! * Populated lazily: a node exists only under a populated leaf.
//! * Freed when empty: an update that clears the last leaf of a node
//!   unlinks the node (and parents that become empty) and hands the frames
//!   back as a [`Retired`] token. They are freed by [`PageTable::release`]
//!   — which the caller does only *after* flushing whatever hardware may
//!   still walk them (the IOTLB / paging-structure caches). That is why
//!   freeing is a separate step.
//! * Live-entry counts, no shadow table: every table entry keeps, in bits
//!   the hardware ignores ([`COUNT_SHIFT`]), how many live entries its child
//!   node holds (the root's count is a field). An update that clears entries
//!   subtracts them and unlinks a child whose count reaches 0 — it never
//!   rescans a node to learn whether it emptied, and stops scanning a node
//!   once it has seen all its live entries. [`Updated::visited`] counts the
//!   entries an update looked at, so tests can check that the work is
//!   proportional to the entries cleared. [`PageTable::clear`] (no
//!   per-leaf callback) goes further: a node whose whole span is cleared is
//!   unlinked as it is, its leaves counted from the counts; its stale
//!   entries are reachable only through caches flushed before `release`,
//!   and table memory is zeroed when handed out again. The table still
//!   costs 8 bytes per densely mapped page plus 1/512 of that per level.
//! * Writes go through a [`Cursor`] that holds the path to its current
//!   leaf node: consecutive pages cost one entry store each, a walk from
//!   the root happens only when the cursor leaves its 2 MiB leaf node (and
//!   then only from the deepest node still shared).
//! * Entries are written with atomic stores: a device (the IOMMU) may walk
//!   the table while the kernel changes it. There is one writer: the caller
//!   holds the mirror's lock.
//! * One walker for every 4-level table: a [`View`] reads a table someone
//!   else owns — the kernel's CPU page tables, with an x86-64 layout — with
//!   the same [`Iter`] (one descent per leaf node), so a device fault walks
//!   the CPU's tables and writes the mirror's with the same code.

mod cursor;
mod iter;
mod layout;
mod memory;
mod view;

pub use cursor::Cursor;
pub use iter::{Iter, LeafNode, LeafNodes};
pub use view::View;
pub use layout::{EntryLayout, Leaf, SoftLayout, COUNT_MASK, COUNT_SHIFT};
pub use memory::{HeapMemory, Node, TableMemory};

use alloc::vec::Vec;
use core::marker::PhantomData;
use crate::range::VaRange;
use core::sync::atomic::Ordering;
use x86_64::{PhysAddr, VirtAddr};

/// Levels in the tree (4 = PML4-like root).
pub const LEVELS: u8 = 4;
pub use crate::range::PAGE;
/// The end of the address space the table can hold (48 bits; mirrors use
/// the lower 47, the user half).
pub const VA_END: u64 = 1 << 48;

/// Bytes covered by one entry at `level` (1 = leaf = 4 KiB).
pub const fn span(level: u8) -> u64 {
    1 << (12 + 9 * (level as u64 - 1))
}

/// The index of `va` in a node at `level`.
pub const fn index(va: u64, level: u8) -> usize {
    ((va >> (12 + 9 * (level as u64 - 1))) & 511) as usize
}

/// No frame for a table node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfTableMemory;

impl core::fmt::Display for OutOfTableMemory {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("no memory for a page-table node")
    }
}

/// Nodes a [`Retired`] token holds without allocating: a one-page clear
/// retires at most 3 (leaf node and two parents; the root stays).
const RETIRED_INLINE: usize = 4;

/// Table nodes unlinked by an update, to be freed after the flush. The
/// first few sit inline (a small invalidation allocates nothing); more
/// spill to the heap (a bulk clear, whose work is per node anyway).
#[must_use = "retired table nodes must be released (after the IOTLB/TLB flush) or they leak"]
#[derive(Debug)]
pub struct Retired {
    inline: [PhysAddr; RETIRED_INLINE],
    n: usize,
    more: Vec<PhysAddr>,
}

impl Default for Retired {
    fn default() -> Self {
        Retired { inline: [PhysAddr::zero(); RETIRED_INLINE], n: 0, more: Vec::new() }
    }
}

impl Retired {
    /// How many nodes.
    pub fn len(&self) -> usize {
        self.n + self.more.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn push(&mut self, node: PhysAddr) {
        if self.n < RETIRED_INLINE {
            self.inline[self.n] = node;
            self.n += 1;
        } else {
            self.more.push(node);
        }
    }
    fn nodes(&self) -> impl Iterator<Item = PhysAddr> + '_ {
        self.inline[..self.n].iter().chain(self.more.iter()).copied()
    }
    /// Merge another token into this one.
    pub fn merge(&mut self, other: Retired) {
        for node in other.nodes() {
            self.push(node);
        }
    }
}

/// What an update did.
#[must_use = "the update retired table nodes: release them after the flush"]
#[derive(Debug, Default)]
pub struct Updated {
    /// Leaves changed or cleared.
    pub changed: usize,
    /// Leaves cleared.
    pub cleared: usize,
    /// Entries (at every level) the update loaded: the measure of its work.
    /// Proportional to the entries it changed plus the path down to them,
    /// never to the size of the nodes it touched.
    pub visited: usize,
    pub retired: Retired,
}

/// A mirror's page table with entry layout `L` on table memory `M`.
pub struct PageTable<L: EntryLayout, M: TableMemory> {
    mem: M,
    root: PhysAddr,
    nodes: usize,
    leaves: usize,
    /// Live entries of the root (other nodes' counts live in their parent entry).
    root_live: usize,
    /// Where the last cursor stopped: its leaf node's base and path (a
    /// cursor starts there, so consecutive faults in one 2 MiB block skip
    /// the walk). Valid while no node is unlinked: every update that
    /// retires nodes forgets it.
    hint: (u64, [PhysAddr; LEVELS as usize]),
    _layout: PhantomData<L>,
}

// SAFETY: the table owns its nodes; all access to them goes through
// `&self`/`&mut self` (one writer), entries are atomics.
unsafe impl<L: EntryLayout, M: TableMemory + Send> Send for PageTable<L, M> {}
// SAFETY: as above; shared access only reads atomics.
unsafe impl<L: EntryLayout, M: TableMemory + Sync> Sync for PageTable<L, M> {}

/// The live count kept in a table entry.
const fn count_of(raw: u64) -> usize {
    ((raw & COUNT_MASK) >> COUNT_SHIFT) as usize
}

/// `raw` with live count `n`.
const fn with_count(raw: u64, n: usize) -> u64 {
    (raw & !COUNT_MASK) | (n as u64) << COUNT_SHIFT
}

#[inline]
fn check_va(va: u64) {
    assert!(va < VA_END && va.is_multiple_of(PAGE), "address {va:#x} is not a page in the 48-bit user range");
}

impl<L: EntryLayout, M: TableMemory> PageTable<L, M> {
    /// An empty table (one root node).
    pub fn new(mem: M) -> Result<Self, OutOfTableMemory> {
        let root = mem.alloc_table().ok_or(OutOfTableMemory)?;
        Ok(PageTable { mem, root, nodes: 1, leaves: 0, root_live: 0, hint: (cursor::NONE, [root; LEVELS as usize]), _layout: PhantomData })
    }

    /// The root node's physical address (what a VT-d context entry holds).
    pub fn root(&self) -> PhysAddr {
        self.root
    }

    /// Nodes allocated (root included).
    pub fn nodes(&self) -> usize {
        self.nodes
    }

    /// Valid leaves.
    pub fn leaves(&self) -> usize {
        self.leaves
    }

    /// Bytes of table memory in use.
    pub fn bytes(&self) -> usize {
        self.nodes * 4096
    }

    /// The table memory.
    pub fn memory(&self) -> &M {
        &self.mem
    }

    pub(crate) fn node(&self, table: PhysAddr) -> &Node {
        // SAFETY: `table` is a node of this table (reached from the root
        // through present entries), allocated until released, and only
        // accessed through atomics.
        unsafe { self.mem.table(table).as_ref() }
    }

    /// The leaf for page `va`, if mapped.
    pub fn get(&self, va: VirtAddr) -> Option<Leaf> {
        let va = va.as_u64();
        check_va(va);
        let mut t = self.root;
        for level in (2..=LEVELS).rev() {
            t = L::decode_table(self.node(t)[index(va, level)].load(Ordering::Acquire))?;
        }
        L::decode_leaf(self.node(t)[index(va, 1)].load(Ordering::Acquire))
    }

    /// A cursor for writing entries (see [`Cursor`]).
    pub fn cursor(&mut self) -> Cursor<'_, L, M> {
        Cursor::new(self)
    }

    /// Map page `va` to `leaf`; returns the previous leaf.
    pub fn set(&mut self, va: VirtAddr, leaf: Leaf) -> Result<Option<Leaf>, OutOfTableMemory> {
        self.set_iova(va.as_u64(), leaf)
    }

    /// [`PageTable::set`] for any device address below 2^48 (device
    /// addresses need not be canonical CPU addresses).
    pub fn set_iova(&mut self, va: u64, leaf: Leaf) -> Result<Option<Leaf>, OutOfTableMemory> {
        self.cursor().set_iova(va, leaf)
    }

    /// Map consecutive pages from `start`, one per leaf (see [`Cursor::populate`]).
    pub fn populate(&mut self, start: VirtAddr, leaves: impl IntoIterator<Item = Leaf>) -> Result<usize, OutOfTableMemory> {
        self.cursor().populate(start, leaves)
    }

    /// Add `delta` to the live count of the node at `level` on `va`'s path
    /// (`path[l - 1]` = the node at level `l`): the count sits in the
    /// parent's entry, the root's in a field.
    fn add_live(&mut self, path: &[PhysAddr; LEVELS as usize], level: u8, va: u64, delta: isize) {
        if level == LEVELS {
            self.root_live = self.root_live.wrapping_add_signed(delta);
            return;
        }
        let slot = &self.node(path[level as usize])[index(va, level + 1)];
        let raw = slot.load(Ordering::Relaxed);
        let n = count_of(raw).wrapping_add_signed(delta);
        debug_assert!(n <= 512, "live count out of range");
        // Only bits the walker ignores change; Release keeps the order of
        // the child's stores before it for a later reader of the count.
        slot.store(with_count(raw, n), Ordering::Release);
    }

    /// Apply `f` to every valid leaf in `range`: `Some(new)` rewrites it,
    /// `None` clears it. Nodes left empty are unlinked and retired.
    pub fn update(&mut self, range: VaRange, mut f: impl FnMut(VirtAddr, Leaf) -> Option<Leaf>) -> Updated {
        let (start, end) = (range.start(), range.end());
        let mut out = Updated::default();
        if start < end && start / span(2) == (end - 1) / span(2) {
            self.update_in_leaf_node(start, end, &mut f, &mut out);
        } else if start < end {
            let (root, live) = (self.root, self.root_live);
            self.root_live -= self.update_node(root, LEVELS, 0, start, end, live, false, &mut f, &mut out);
        }
        self.leaves -= out.cleared;
        self.nodes -= out.retired.len();
        if !out.retired.is_empty() {
            self.hint.0 = cursor::NONE; // its path may run through an unlinked node
        }
        out
    }

    /// Clear every leaf in `range`. A node whose whole span lies in the
    /// range is unlinked as it is — its leaves are counted from the live
    /// counts, not visited — and retired with its subtree: the walker
    /// (IOMMU) can reach it only through caches the caller flushes before
    /// [`PageTable::release`], and table memory is zeroed when reallocated.
    pub fn clear(&mut self, range: VaRange) -> Updated {
        let (start, end) = (range.start(), range.end());
        let mut out = Updated::default();
        if start < end && start / span(2) == (end - 1) / span(2) && end - start < span(2) {
            self.update_in_leaf_node(start, end, &mut |_, _| None, &mut out);
        } else if start < end {
            let (root, live) = (self.root, self.root_live);
            self.root_live -= self.update_node(root, LEVELS, 0, start, end, live, true, &mut |_, _| None, &mut out);
        }
        self.leaves -= out.cleared;
        self.nodes -= out.retired.len();
        if !out.retired.is_empty() {
            self.hint.0 = cursor::NONE; // its path may run through an unlinked node
        }
        out
    }

    /// [`Self::update`] of a range inside one leaf node (the common small
    /// invalidation), without recursion: down the path (stopping at a
    /// missing node or a node with no live entries), the leaves of the
    /// range (stopping after the node's last live one), then the counts
    /// back up — a node whose count reaches 0 is unlinked and retired, and
    /// so on upwards. Visits exactly the entries the recursive walk would.
    fn update_in_leaf_node(&mut self, start: u64, end: u64, f: &mut impl FnMut(VirtAddr, Leaf) -> Option<Leaf>, out: &mut Updated) {
        // path[l - 1]: the node at level l; live[l - 1]: its live count.
        let mut path = [self.root; LEVELS as usize];
        let mut live = [0usize; LEVELS as usize];
        live[LEVELS as usize - 1] = self.root_live;
        for level in (2..=LEVELS).rev() {
            if live[level as usize - 1] == 0 {
                return;
            }
            out.visited += 1;
            let raw = self.node(path[level as usize - 1])[index(start, level)].load(Ordering::Acquire);
            let Some(child) = L::decode_table(raw) else { return };
            path[level as usize - 2] = child;
            live[level as usize - 2] = count_of(raw);
        }
        let cleared = self.update_leaves(path[0], start, end, live[0], f, out);
        // Up: the node at `level` lost `gone` live entries.
        let mut gone = cleared;
        for level in 1..LEVELS {
            if gone == 0 {
                return;
            }
            let slot = &self.node(path[level as usize])[index(start, level + 1)];
            let n = live[level as usize - 1] - gone;
            if n > 0 {
                slot.store(with_count(slot.load(Ordering::Relaxed), n), Ordering::Release);
                return;
            }
            slot.store(0, Ordering::Release);
            out.retired.push(path[level as usize - 1]);
            gone = 1;
        }
        self.root_live -= gone;
    }

    /// The leaf level of an update: `f` on every valid leaf of the node
    /// `table` (the leaf node of `start`'s 2 MiB block; `end` is in it or
    /// at its end) inside `start..end`, stopping after its
    /// `live`-th valid leaf. One tight loop over the node's entries with the
    /// counts kept local (the per-leaf path of every invalidation). Returns
    /// how many leaves it cleared.
    #[inline]
    fn update_leaves(&self, table: PhysAddr, start: u64, end: u64, live: usize, f: &mut impl FnMut(VirtAddr, Leaf) -> Option<Leaf>, out: &mut Updated) -> usize {
        let node = self.node(table);
        let base = start & !(span(2) - 1);
        let first = index(start, 1);
        let stop = if end - base >= span(2) { 512 } else { ((end - base) / PAGE) as usize };
        let (mut seen, mut visited, mut changed, mut cleared) = (0, 0, 0, 0);
        let mut va = base + first as u64 * PAGE;
        for entry in &node[first..stop] {
            if seen == live {
                break;
            }
            visited += 1;
            if let Some(leaf) = L::decode_leaf(entry.load(Ordering::Acquire)) {
                seen += 1;
                // `va` < 2^47 (a `VaRange`): canonical, no check needed.
                match f(VirtAddr::new_truncate(va), leaf) {
                    Some(new) if new == leaf => {}
                    Some(new) => {
                        entry.store(L::encode_leaf(new), Ordering::Release);
                        changed += 1;
                    }
                    None => {
                        entry.store(0, Ordering::Release);
                        changed += 1;
                        cleared += 1;
                    }
                }
            }
            va += PAGE;
        }
        out.visited += visited;
        out.changed += changed;
        out.cleared += cleared;
        cleared
    }

    /// Retire everything below `table` (at `level`, holding `live`
    /// entries) — not `table` itself — counting its leaves as cleared.
    fn retire_below(&mut self, table: PhysAddr, level: u8, live: usize, out: &mut Updated) {
        if level == 1 {
            out.cleared += live;
            out.changed += live;
            return;
        }
        let mut seen = 0;
        for i in 0..512 {
            if seen == live {
                break;
            }
            out.visited += 1;
            let raw = self.node(table)[i].load(Ordering::Relaxed);
            if let Some(child) = L::decode_table(raw) {
                seen += 1;
                self.retire_below(child, level - 1, count_of(raw), out);
                out.retired.push(child);
            }
        }
    }

    /// Recursive worker of [`Self::update`] over `table`, which holds `live`
    /// live entries; returns how many of them it cleared (leaves cleared or
    /// children unlinked). Stops once every live entry was seen.
    /// `whole` (only for [`Self::clear`]): retire fully covered children whole.
    #[allow(clippy::too_many_arguments)]
    fn update_node(&mut self, table: PhysAddr, level: u8, base: u64, start: u64, end: u64, live: usize, whole: bool, f: &mut impl FnMut(VirtAddr, Leaf) -> Option<Leaf>, out: &mut Updated) -> usize {
        if level == 1 {
            return self.update_leaves(table, start, end, live, f, out);
        }
        let s = span(level);
        let first = if start > base { index(start, level) } else { 0 };
        let (mut seen, mut cleared) = (0, 0);
        for i in first..512 {
            let va = base + i as u64 * s;
            if va >= end || seen == live {
                break;
            }
            out.visited += 1;
            let raw = self.node(table)[i].load(Ordering::Acquire);
            if let Some(child) = L::decode_table(raw) {
                seen += 1;
                let n = count_of(raw);
                let gone = if whole && start <= va && va + s <= end {
                    self.retire_below(child, level - 1, n, out);
                    n
                } else {
                    self.update_node(child, level - 1, va, start.max(va), end.min(va + s), n, whole, f, out)
                };
                if gone == n {
                    self.node(table)[i].store(0, Ordering::Release);
                    out.retired.push(child);
                    cleared += 1;
                } else if gone > 0 {
                    self.node(table)[i].store(with_count(raw, n - gone), Ordering::Release);
                }
            }
        }
        cleared
    }

    /// Free retired nodes. Call only after every walker that might have
    /// cached them (IOTLB, paging-structure caches) was flushed.
    pub fn release(&mut self, retired: Retired) {
        for t in retired.nodes() {
            // SAFETY: unlinked by `update` and, per this function's contract,
            // no longer cached by any walker.
            unsafe { self.mem.free_table(t) };
        }
    }

    /// Iterate valid leaves in `range`, skipping empty subtrees: the cost is
    /// proportional to the populated nodes visited, not to the range.
    pub fn iter(&self, range: VaRange) -> Iter<'_, L, M> {
        // SAFETY: nodes are freed only through `&mut self`, which the
        // shared borrow excludes for the iterator's life; entries are atomics.
        unsafe { Iter::new(&self.mem, self.root, range.start(), range.end()) }
    }

    fn free_subtree(&mut self, table: PhysAddr, level: u8) {
        if level > 1 {
            for i in 0..512 {
                if let Some(child) = L::decode_table(self.node(table)[i].load(Ordering::Acquire)) {
                    self.free_subtree(child, level - 1);
                }
            }
        }
        // SAFETY: the table is being dropped; its owner (the mirror) has
        // detached it from every device before dropping it.
        unsafe { self.mem.free_table(table) };
    }
}

impl<L: EntryLayout, M: TableMemory> Drop for PageTable<L, M> {
    fn drop(&mut self) {
        let root = self.root;
        self.free_subtree(root, LEVELS);
    }
}

#[cfg(test)]
mod tests;
