//! A read-only view of a 4-level table that someone else owns and changes
//! (the kernel's CPU page tables): the same walker as [`super::PageTable`]'s,
//! for any [`EntryLayout`], without ownership, counts or writes.
//!
//! The owner keeps the view's nodes alive (the kernel: its address-space
//! lock, under which no table node is freed); entries are read with atomic
//! loads, so hardware that sets bits meanwhile (the MMU's Accessed/Dirty)
//! is never torn.

use super::{check_va, index, EntryLayout, Iter, Leaf, Node, TableMemory, LEVELS};
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
}
