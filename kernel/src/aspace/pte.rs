//! The user half of a process page table: a 4-level walk over the x86-64
//! entries, through the direct map. This module is where process page
//! tables are written — and the only place their words are touched.
//!
//! A leaf entry is one of four things:
//!
//! ```text
//!  present:   P=1  frame | flags (W, U, A, D, NX)      holds one frame reference
//!  swapped:   P=0, bit 9 = 1, bits 12..51 = swap slot   holds one slot reference
//!  exclusive: P=0, bit 10 = 1, bits 12..51 = frame,     holds one frame reference;
//!             bit 6 = dirty, owner device id in bits    a device has exclusive access
//!             52..62 (low 11) and 1..5 (high 5)         (any CPU access faults → revoke)
//!  dying:     P=0, bit 11 = 1, bits 12..51 = frame      unmapped, frame reference
//!                                                       released after the change
//!  none:      0
//! ```
//!
//! A dying entry exists only inside one locked munmap: it lets a bulk
//! unmap keep its work list in the page table itself (no allocation) until
//! `invalidate_end`, when the frames may be freed.
//!
//! # Access: atomic words, never references
//! Any CPU's MMU may set Accessed and Dirty in a present entry at any time
//! (a locked read-modify-write of the word), and other CPUs' page walks read
//! the tables while we write them. So no `&mut PageTableEntry` (or any Rust
//! reference to the plain word) is ever made for a user table: every word is
//! reached as an [`Entry`], a `&AtomicU64`, and changed only by atomic
//! operations. Taking a present entry away is one exchange that returns the
//! old value with every A/D bit any MMU set up to that instant (Linux's
//! `ptep_get_and_clear`): the caller decides from *that* value (is the page
//! dirty?), after flushing the TLBs — never from an earlier read.
//!
//! Writers are serialized by the address-space lock; the MMUs are the only
//! other writers, and only of present leaves.
//!
//! # One walker
//! Ranges are walked by `hmm::pt`'s walker (the one mirror and VT-d tables
//! use) with the x86-64 layout (`layout.rs`): [`UserTables::view`] and
//! [`UserTables::leaf_nodes`] — one descent per 512-entry leaf node, then a
//! plain loop over its atomic words. The range operations of a munmap
//! ([`UserTables::kill`], [`UserTables::clear_live`], [`UserTables::reap`])
//! are such loops, on raw words: a word is decoded only as far as the
//! decision needs.

use super::layout::CpuLayout;
use crate::mm::direct;
use crate::mm::frames::{self, Frame, FrameFlags, OutOfFrames};
use crate::platform::KernelTableMemory;
use core::sync::atomic::{AtomicU64, Ordering};
use hmm::pt::{LeafNodes, View};
use x86_64::structures::paging::{PageTableFlags as F, PhysFrame};
use x86_64::PhysAddr;

/// The software bit that marks a swap entry.
const SWAP: F = F::BIT_9;
/// The software bit that marks a device-exclusive entry.
const EXCLUSIVE: F = F::BIT_10;
/// Owner ids an exclusive entry can name (16 bits).
pub const MAX_EXCLUSIVE_OWNER: u32 = (1 << 16) - 1;
/// The software bit that marks a dying entry (not 10: exclusive uses it).
const DYING: F = F::BIT_11;
/// Flags of intermediate (non-leaf) user entries.
const TABLE_FLAGS: F = F::PRESENT.union(F::WRITABLE).union(F::USER_ACCESSIBLE);
/// The frame-address bits of an entry.
const ADDR: u64 = 0x000f_ffff_ffff_f000;
/// Swap slots an entry can name (40 address bits).
pub const MAX_SWAP_SLOT: u64 = (1 << 40) - 1;

/// A decoded leaf entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pte {
    None,
    Present { frame: PhysFrame, flags: F },
    Swapped { slot: u64 },
    /// A device (`owner`) holds the page exclusively; the CPU has no access.
    Exclusive { frame: PhysFrame, owner: u32, dirty: bool },
    /// Unmapped inside a locked munmap; the frame is released after it.
    Dying { frame: PhysFrame },
}

fn frame_of(raw: u64) -> PhysFrame {
    PhysFrame::containing_address(PhysAddr::new(raw & ADDR))
}

impl Pte {
    /// The entry a raw word stands for.
    pub fn decode(raw: u64) -> Pte {
        let flags = F::from_bits_retain(raw & !ADDR);
        if flags.contains(F::PRESENT) {
            Pte::Present { frame: frame_of(raw), flags }
        } else if flags.contains(SWAP) {
            Pte::Swapped { slot: (raw & ADDR) >> 12 }
        } else if flags.contains(EXCLUSIVE) {
            let bits = flags.bits();
            let owner = ((bits >> 52) & 0x7ff) as u32 | (((bits >> 1) & 0x1f) as u32) << 11;
            Pte::Exclusive { frame: frame_of(raw), owner, dirty: flags.contains(F::DIRTY) }
        } else if flags.contains(DYING) {
            Pte::Dying { frame: frame_of(raw) }
        } else {
            Pte::None
        }
    }

    /// The raw word. A present entry's user access comes from its flags
    /// (see `leaf_flags`): a page of a PROT_NONE area is present but
    /// supervisor-only, so every user-mode access faults while its frame
    /// (and data) stay. Panics on an exclusive owner above
    /// [`MAX_EXCLUSIVE_OWNER`] or a slot above [`MAX_SWAP_SLOT`] (callers
    /// check both).
    pub fn encode(self) -> u64 {
        let addr = |f: PhysFrame| f.start_address().as_u64();
        match self {
            Pte::None => 0,
            Pte::Present { frame, flags } => addr(frame) | ((flags | F::PRESENT).bits() & !ADDR),
            Pte::Swapped { slot } => {
                assert!(slot <= MAX_SWAP_SLOT, "swap slot out of range");
                (slot << 12) | SWAP.bits()
            }
            Pte::Exclusive { frame, owner, dirty } => {
                assert!(owner <= MAX_EXCLUSIVE_OWNER, "exclusive owner id out of range");
                let o = owner as u64;
                let mut flags = F::from_bits_retain(((o & 0x7ff) << 52) | ((o >> 11) << 1)) | EXCLUSIVE;
                if dirty {
                    flags |= F::DIRTY;
                }
                addr(frame) | flags.bits()
            }
            Pte::Dying { frame } => addr(frame) | DYING.bits(),
        }
    }
}

/// One leaf entry of a live user table, as the atomic word it is (see the
/// module docs). Borrowed from the [`UserTables`] that owns the table.
#[derive(Clone, Copy)]
pub struct Entry<'a>(&'a AtomicU64);

impl Entry<'_> {
    /// The entry now (an MMU may set A/D right after: decide nothing that
    /// depends on them from this read — exchange instead).
    pub fn get(self) -> Pte {
        Pte::decode(self.raw())
    }

    /// The raw word now.
    pub fn raw(self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// Replace the entry by `new` in one atomic exchange; returns what it
    /// was at that instant, with every Accessed/Dirty bit any MMU had set.
    /// Until the TLBs are flushed, CPUs may still use (and even dirty
    /// through) cached translations of a present old entry: a caller that
    /// needs the final dirty state of the *data* reads it after the flush.
    pub fn exchange(self, new: Pte) -> Pte {
        Pte::decode(self.0.swap(new.encode(), Ordering::AcqRel))
    }

    /// Clear `flags` atomically; returns the flags before.
    pub fn clear_flags(self, flags: F) -> F {
        F::from_bits_retain(self.0.fetch_and(!flags.bits(), Ordering::AcqRel) & !ADDR)
    }

    /// Set `flags` atomically; returns the flags before.
    pub fn set_flags(self, flags: F) -> F {
        F::from_bits_retain(self.0.fetch_or(flags.bits(), Ordering::AcqRel) & !ADDR)
    }

    /// Replace a present leaf's flags by `f(old flags)` with a
    /// compare-exchange loop (the frame stays; an A/D bit an MMU sets
    /// meanwhile makes the exchange fail and `f` see it); returns the flags
    /// before.
    pub fn update_flags(self, f: impl Fn(F) -> F) -> F {
        let mut old = self.raw();
        loop {
            let new = (old & ADDR) | ((f(F::from_bits_retain(old & !ADDR)) | F::PRESENT).bits() & !ADDR);
            match self.0.compare_exchange_weak(old, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return F::from_bits_retain(old & !ADDR),
                Err(now) => old = now,
            }
        }
    }
}

/// The user-half tables of one address space.
pub struct UserTables {
    pml4: PhysFrame,
    /// Page-table frames in use (PML4 included).
    pub table_frames: usize,
}

/// Word `i` of the page-table frame `table`, as an atomic.
///
/// # Safety
/// `table` is a page-table frame of a `UserTables` (or reached from one's
/// entries) that stays allocated for `'a`: callers tie `'a` to a borrow of
/// that `UserTables`, whose frames are freed only by `destroy` (by value).
unsafe fn word<'a>(table: PhysFrame, i: usize) -> &'a AtomicU64 {
    assert!(i < 512);
    let p = direct::phys_to_virt(table.start_address() + i as u64 * 8).as_ptr::<AtomicU64>();
    // SAFETY: by the contract the word is allocated memory for `'a`,
    // reached through the direct map, 8-byte aligned. Every access to it,
    // on any CPU, is atomic: software goes through this function, and MMU
    // walks and A/D updates are atomic locked accesses — so a shared
    // `&AtomicU64` is sound where a `&mut` to the plain word would not be.
    unsafe { &*p }
}

fn new_table() -> Result<PhysFrame, OutOfFrames> {
    let f = frames::alloc_zeroed()?;
    f.set_flags(FrameFlags::PAGE_TABLE);
    Ok(f.into_raw())
}

fn is_unused(raw: u64) -> bool {
    raw == 0
}

/// The present bit.
const P: u64 = 1;

/// The dying entry for the frame of `raw`.
fn dying(raw: u64) -> u64 {
    (raw & ADDR) | DYING.bits()
}

impl UserTables {
    /// A PML4 whose kernel half is the kernel's.
    pub fn new() -> Result<Self, OutOfFrames> {
        let pml4 = new_table()?;
        for (i, e) in crate::mm::kpt::kernel_half().into_iter().enumerate() {
            // Not yet loaded anywhere: no MMU sees it, order is moot.
            // SAFETY: the PML4 just allocated, owned by the tables returned.
            unsafe { word(pml4, 256 + i) }.store(e.addr().as_u64() | e.flags().bits(), Ordering::Relaxed);
        }
        Ok(UserTables { pml4, table_frames: 1 })
    }

    pub fn pml4(&self) -> PhysFrame {
        self.pml4
    }

    /// `hmm::pt`'s walker over these tables, for as long as they are borrowed.
    pub fn view(&self) -> View<'_, CpuLayout, KernelTableMemory> {
        // SAFETY: user table nodes are freed only by `destroy`, which takes
        // the tables by value — excluded while `self` is borrowed — so every
        // node reachable from the PML4 stays allocated for the view's life;
        // every access to their words is atomic (see `word`).
        unsafe { View::new(&KernelTableMemory, self.pml4.start_address()) }
    }

    /// The leaf nodes under `[start, end)` (see `hmm::pt::View::leaf_nodes`).
    pub fn leaf_nodes(&self, start: u64, end: u64) -> LeafNodes<'_, CpuLayout, KernelTableMemory> {
        self.view().leaf_nodes(start, end)
    }

    /// The leaf entry of page `va`; with `create`, missing tables are
    /// made. An address outside the user half has none (never a panic:
    /// callers pass addresses users gave).
    pub fn entry(&mut self, va: u64, create: bool) -> Result<Option<Entry<'_>>, OutOfFrames> {
        let va = va & !0xfff;
        if va >= crate::mm::USER_END {
            return Ok(None);
        }
        if !create {
            return Ok(self.view().leaf_node(va).map(|n| Entry(&n[hmm::pt::index(va, 1)])));
        }
        let idx = [(va >> 39) & 511, (va >> 30) & 511, (va >> 21) & 511];
        let mut t = self.pml4;
        for i in idx {
            // SAFETY: `t` is this table's PML4 or a table linked below it;
            // the result borrows `self`.
            let w = unsafe { word(t, i as usize) };
            let mut raw = w.load(Ordering::Acquire);
            if is_unused(raw) {
                if !create {
                    return Ok(None);
                }
                let n = new_table()?;
                self.table_frames += 1;
                raw = n.start_address().as_u64() | TABLE_FLAGS.bits();
                // Release: the zeroed table is visible before any walker
                // can reach it through this entry.
                w.store(raw, Ordering::Release);
            }
            t = frame_of(raw);
        }
        // SAFETY: as above: a leaf table linked below our PML4.
        Ok(Some(Entry(unsafe { word(t, ((va >> 12) & 511) as usize) })))
    }

    /// The entries a walk of `va` meets, from the PML4 down: (level, index,
    /// raw entry). Stops after the first unused entry.
    pub fn levels(&self, va: u64) -> alloc::vec::Vec<(u8, usize, u64)> {
        let mut out = alloc::vec::Vec::new();
        let mut t = self.pml4;
        for level in (1..=4u8).rev() {
            let i = ((va >> (12 + 9 * (level as u64 - 1))) & 511) as usize;
            // SAFETY: our PML4 or a table linked below it, while `self` is borrowed.
            let raw = unsafe { word(t, i) }.load(Ordering::Acquire);
            out.push((level, i, raw));
            if is_unused(raw) || level == 1 || raw & F::PRESENT.bits() == 0 {
                break;
            }
            t = frame_of(raw);
        }
        out
    }

    /// Visit every used leaf entry in `[start, end)`, skipping absent tables.
    pub fn for_each(&mut self, start: u64, end: u64, f: &mut dyn FnMut(u64, Entry<'_>)) {
        self.for_each_while(start, end, &mut |va, e| {
            f(va, e);
            true
        });
    }

    /// Like [`UserTables::for_each`], stopping when `f` returns false;
    /// returns false if it stopped early.
    pub fn for_each_while(&mut self, start: u64, end: u64, f: &mut dyn FnMut(u64, Entry<'_>) -> bool) -> bool {
        for n in self.leaf_nodes(start, end) {
            for (i, w) in n.node.iter().enumerate().take(n.stop).skip(n.first) {
                if !is_unused(w.load(Ordering::Acquire)) && !f(n.va(i), Entry(w)) {
                    return false;
                }
            }
        }
        true
    }

    /// munmap, bulk: every present or exclusive entry of `[start, end)`
    /// becomes dying — same frame, reference kept, no translation — a
    /// present one by one exchange (it leaves every MMU at one instant;
    /// the frame cannot change under our lock, only A/D, which a dying
    /// page does not need). `flush(va)` hears each page that was present.
    pub fn kill(&mut self, start: u64, end: u64, mut flush: impl FnMut(u64)) {
        for n in self.leaf_nodes(start, end) {
            for (i, w) in n.node.iter().enumerate().take(n.stop).skip(n.first) {
                let raw = w.load(Ordering::Relaxed);
                if raw & P != 0 {
                    let old = w.swap(dying(raw), Ordering::AcqRel);
                    debug_assert_eq!(old & ADDR, raw & ADDR, "a present entry's frame changed under the lock");
                    flush(n.va(i));
                } else if raw & (EXCLUSIVE.bits() | SWAP.bits()) == EXCLUSIVE.bits() {
                    // Not present: no MMU writes it, a store will do.
                    w.store(dying(raw), Ordering::Release);
                }
            }
        }
    }

    /// munmap, small: every present or exclusive entry of `[start, end)`
    /// is exchanged for none; `taken(va, frame, was_present)` receives the
    /// frame reference it held. Swapped entries stay (for [`Self::reap`]):
    /// returns whether there were any.
    pub fn clear_live(&mut self, start: u64, end: u64, mut taken: impl FnMut(u64, PhysFrame, bool)) -> bool {
        let mut swapped = false;
        for n in self.leaf_nodes(start, end) {
            for (i, w) in n.node.iter().enumerate().take(n.stop).skip(n.first) {
                let raw = w.load(Ordering::Relaxed);
                if raw & P != 0 {
                    let old = w.swap(0, Ordering::AcqRel);
                    taken(n.va(i), frame_of(old), true);
                } else if raw & SWAP.bits() != 0 {
                    swapped = true;
                } else if raw & EXCLUSIVE.bits() != 0 {
                    w.store(0, Ordering::Release);
                    taken(n.va(i), frame_of(raw), false);
                }
            }
        }
        swapped
    }

    /// After a munmap's flush: clear every dying and swapped entry of
    /// `[start, end)`, handing over the frame reference or swap slot it
    /// held. Plain stores: no MMU writes a non-present entry. Panics on a
    /// live (present or exclusive) entry: the munmap left one.
    pub fn reap(&mut self, start: u64, end: u64, mut frame: impl FnMut(PhysFrame), mut slot: impl FnMut(u64)) {
        for n in self.leaf_nodes(start, end) {
            for w in &n.node[n.first..n.stop] {
                let raw = w.load(Ordering::Relaxed);
                if raw == 0 {
                    continue;
                }
                assert!(raw & (P | EXCLUSIVE.bits()) == 0, "munmap left a live entry");
                w.store(0, Ordering::Release);
                if raw & SWAP.bits() != 0 {
                    slot((raw & ADDR) >> 12);
                } else if raw & DYING.bits() != 0 {
                    frame(frame_of(raw));
                }
            }
        }
    }

    /// Visit every used leaf entry, then free every user page-table frame.
    /// The visitor must release what each entry holds. The caller makes
    /// sure no CPU has (or caches) these tables any more.
    pub fn destroy(mut self, f: &mut dyn FnMut(u64, Entry<'_>)) {
        self.for_each(0, crate::mm::USER_END, f);
        free(self.pml4, 4);
        self.table_frames = 0;
    }
}

fn free(t: PhysFrame, level: u8) {
    if level > 1 {
        let last = if level == 4 { 256 } else { 512 };
        for i in 0..last {
            // SAFETY: a table being destroyed: still allocated (freed below,
            // children first).
            let raw = unsafe { word(t, i) }.load(Ordering::Acquire);
            if !is_unused(raw) {
                free(frame_of(raw), level - 1);
            }
        }
    }
    // SAFETY: a table frame allocated by `new_table`, whose reference the
    // table held; it is no longer linked or loaded.
    drop(unsafe { Frame::from_raw(t) });
}
