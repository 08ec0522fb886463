//! Where table nodes come from.
//!
//! A node is one 4 KiB, 4 KiB-aligned frame of 512 entries, named by its
//! physical address (that is what a parent entry — and the IOMMU — holds)
//! and written through a pointer the embedder provides (the kernel: its
//! direct map; host tests: the heap, where "physical" is the pointer).

use core::ptr::NonNull;
use core::sync::atomic::AtomicU64;
use x86_64::PhysAddr;

/// 512 entries: one table node.
pub type Node = [AtomicU64; 512];

/// Table memory.
///
/// # Safety
/// `alloc_table` returns a zeroed, 4 KiB-aligned frame used by nothing
/// else until `free_table`; `table(p)` returns a valid pointer to the node
/// at `p` for as long as it is allocated.
pub unsafe trait TableMemory {
    fn alloc_table(&self) -> Option<PhysAddr>;
    /// # Safety
    /// `table` came from `alloc_table`, and no one (CPU or device) uses it any more.
    unsafe fn free_table(&self, table: PhysAddr);
    fn table(&self, table: PhysAddr) -> NonNull<Node>;
}

/// Host memory for tests and benchmarks: nodes on the heap, "physical"
/// address = pointer value. Counts live nodes, to prove nothing leaks.
#[derive(Default)]
pub struct HeapMemory {
    live: core::sync::atomic::AtomicUsize,
}

impl HeapMemory {
    pub fn new() -> Self {
        Self::default()
    }
    /// Nodes currently allocated.
    pub fn live(&self) -> usize {
        self.live.load(core::sync::atomic::Ordering::SeqCst)
    }
}

const NODE_LAYOUT: core::alloc::Layout = match core::alloc::Layout::from_size_align(4096, 4096) {
    Ok(l) => l,
    Err(_) => panic!("4 KiB layout"),
};

// SAFETY: nodes are fresh zeroed heap blocks of the right size and
// alignment, freed exactly once by `free_table`.
unsafe impl TableMemory for HeapMemory {
    fn alloc_table(&self) -> Option<PhysAddr> {
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { alloc::alloc::alloc_zeroed(NODE_LAYOUT) };
        if p.is_null() {
            return None;
        }
        self.live.fetch_add(1, core::sync::atomic::Ordering::SeqCst);
        Some(PhysAddr::new(p as u64))
    }
    unsafe fn free_table(&self, table: PhysAddr) {
        self.live.fetch_sub(1, core::sync::atomic::Ordering::SeqCst);
        // SAFETY: allocated by `alloc_table` with the same layout.
        unsafe { alloc::alloc::dealloc(table.as_u64() as *mut u8, NODE_LAYOUT) }
    }
    fn table(&self, table: PhysAddr) -> NonNull<Node> {
        NonNull::new(table.as_u64() as *mut Node).expect("node address is not null")
    }
}

// Forward through references and shared owners, so a table can borrow or
// share its memory source.
macro_rules! forward_table_memory {
    ($($ptr:ty),*) => {$(
        // SAFETY: delegates to an implementation that upholds the contract.
        unsafe impl<M: TableMemory + ?Sized> TableMemory for $ptr {
            fn alloc_table(&self) -> Option<PhysAddr> {
                (**self).alloc_table()
            }
            unsafe fn free_table(&self, t: PhysAddr) {
                // SAFETY: forwarded: the caller's contract is the same.
                unsafe { (**self).free_table(t) }
            }
            fn table(&self, t: PhysAddr) -> NonNull<Node> {
                (**self).table(t)
            }
        }
    )*};
}

forward_table_memory!(&M, alloc::sync::Arc<M>);
