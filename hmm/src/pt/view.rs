//! A read-only view of a 4-level table that someone else owns and changes
//! (the kernel's CPU page tables): the same walker as [`super::PageTable`]'s,
//! for any [`EntryLayout`], without ownership, counts or writes.
//!
//! The owner keeps the view's nodes alive (the kernel: its address-space
//! lock, under which no table node is freed); entries are read with atomic
//! loads, so hardware that sets bits meanwhile (the MMU's Accessed/Dirty)
//! is never torn.

use super::{check_va, index, EntryLayout, Iter, Leaf, LeafNodes, Node, TableMemory, LEVELS};
use crate::range::VaRange;
use core::marker::PhantomData;
use core::sync::atomic::Ordering;
use x86_64::PhysAddr;

/// See the module docs.
pub struct View<'a, L: EntryLayout, M: TableMemory> {
    mem: &'a M,
    root: PhysAddr,
    _layout: PhantomData<L>,
}

impl<'a, L: EntryLayout, M: TableMemory> View<'a, L, M> {
    /// # Safety
    /// For `'a`, every node reachable from `root` through `mem` stays
    /// allocated (new nodes may appear), and entries change only by atomic
    /// stores or read-modify-writes.
    pub unsafe fn new(mem: &'a M, root: PhysAddr) -> Self {
        View { mem, root, _layout: PhantomData }
    }

    /// The leaf for page `va`, if the layout decodes one there.
    pub fn get(&self, va: u64) -> Option<Leaf> {
        L::decode_leaf(self.leaf_node(va)?[index(va, 1)].load(Ordering::Acquire))
    }

    /// The leaf node (512 entries) covering `va`, if the path to it exists:
    /// a caller that reads several pages of one 2 MiB block walks once and
    /// decodes `node[index(va, 1)]` itself (loading it when it needs it).
    pub fn leaf_node(&self, va: u64) -> Option<&'a Node> {
        check_va(va);
        let mut t = self.root;
        for level in (2..=LEVELS).rev() {
            // SAFETY: reached from the root; `new`'s contract keeps it allocated.
            let node = unsafe { self.mem.table(t).as_ref() };
            t = L::decode_table(node[index(va, level)].load(Ordering::Acquire))?;
        }
        // SAFETY: as above.
        Some(unsafe { self.mem.table(t).as_ref() })
    }

    /// The leaves of `range`, in address order, one descent per leaf node.
    pub fn iter(&self, range: VaRange) -> Iter<'a, L, M> {
        // SAFETY: `new`'s contract is `Iter::new`'s.
        unsafe { Iter::new(self.mem, self.root, range.start(), range.end()) }
    }

    /// The leaf nodes under `start..end` (page-aligned, `end` ≤ 2^48), one
    /// descent each: the owner runs its own loop over each node's words
    /// (the kernel's munmap exchanges CPU entries there — the owner's
    /// writes are its business; the view only walks).
    pub fn leaf_nodes(&self, start: u64, end: u64) -> LeafNodes<'a, L, M> {
        assert!(end <= super::VA_END && start.is_multiple_of(super::PAGE) && end.is_multiple_of(super::PAGE), "range {start:#x}..{end:#x} is not pages of the 48-bit range");
        // SAFETY: `new`'s contract is `Iter::new`'s.
        unsafe { LeafNodes::new(self.mem, self.root, start, end) }
    }
}
