//! The user half of a process page table: a 4-level walk over the x86-64
//! entries, through the direct map. This module is where process page
//! tables are written.
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

use crate::mm::direct;
use core::sync::atomic::{AtomicU64, Ordering};
use crate::mm::frames::{self, Frame, FrameFlags, OutOfFrames};
use x86_64::structures::paging::page_table::PageTableEntry;
use x86_64::structures::paging::{PageTable, PageTableFlags as F, PhysFrame};
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

impl Pte {
    pub fn decode(e: &PageTableEntry) -> Pte {
        let flags = e.flags();
        if flags.contains(F::PRESENT) {
            Pte::Present { frame: PhysFrame::containing_address(e.addr()), flags }
        } else if flags.contains(SWAP) {
            Pte::Swapped { slot: e.addr().as_u64() >> 12 }
        } else if flags.contains(EXCLUSIVE) {
            let bits = flags.bits();
            let owner = ((bits >> 52) & 0x7ff) as u32 | (((bits >> 1) & 0x1f) as u32) << 11;
            Pte::Exclusive { frame: PhysFrame::containing_address(e.addr()), owner, dirty: flags.contains(F::DIRTY) }
        } else if flags.contains(DYING) {
            Pte::Dying { frame: PhysFrame::containing_address(e.addr()) }
        } else {
            Pte::None
        }
    }
}

/// Write a present entry.
///
/// User access comes from `flags` (see `leaf_flags`): a page of a
/// PROT_NONE area is present but supervisor-only, so every user-mode
/// access faults while its frame (and data) stay.
pub fn set_present(e: &mut PageTableEntry, frame: PhysFrame, flags: F) {
    e.set_addr(frame.start_address(), flags | F::PRESENT);
}

/// Write a device-exclusive entry (non-present). `owner` must be at most
/// [`MAX_EXCLUSIVE_OWNER`].
pub fn set_exclusive(e: &mut PageTableEntry, frame: PhysFrame, owner: u32, dirty: bool) {
    assert!(owner <= MAX_EXCLUSIVE_OWNER, "exclusive owner id out of range");
    let o = owner as u64;
    let mut flags = F::from_bits_retain(((o & 0x7ff) << 52) | ((o >> 11) << 1)) | EXCLUSIVE;
    if dirty {
        flags |= F::DIRTY;
    }
    e.set_addr(frame.start_address(), flags);
}

/// The entry as the atomic word it is: the MMU sets Accessed and Dirty in
/// a present entry on its own (a locked read-modify-write of the same
/// word), so every change of a live leaf's flags goes through here — an
/// atomic AND, OR or compare-exchange, never a read and a later write that
/// could drop a bit the MMU set in between (Linux's
/// `ptep_test_and_clear_young` / `ptep_set_wrprotect`).
fn word(e: &mut PageTableEntry) -> &AtomicU64 {
    // SAFETY: `PageTableEntry` is `#[repr(transparent)]` over a `u64`, and
    // entries sit at 8-byte-aligned offsets of a page-table frame, which
    // is `AtomicU64`'s size and alignment. The `&mut` means no other Rust
    // reference to the word exists; the only other writer is the MMU,
    // whose updates are atomic on every CPU.
    unsafe { &*(e as *mut PageTableEntry as *const AtomicU64) }
}

/// Clear `flags` in a leaf atomically; returns the flags before.
pub fn clear_flags(e: &mut PageTableEntry, flags: F) -> F {
    F::from_bits_retain(word(e).fetch_and(!flags.bits(), Ordering::AcqRel))
}

/// Set `flags` in a leaf atomically; returns the flags before.
pub fn set_flags(e: &mut PageTableEntry, flags: F) -> F {
    F::from_bits_retain(word(e).fetch_or(flags.bits(), Ordering::AcqRel))
}

/// Replace a present leaf's flags by `f(old flags)` atomically (the frame
/// stays); returns the flags before.
pub fn update_flags(e: &mut PageTableEntry, f: impl Fn(F) -> F) -> F {
    let w = word(e);
    let mut old = w.load(Ordering::Acquire);
    loop {
        let addr = old & 0x000f_ffff_ffff_f000;
        let new = addr | (f(F::from_bits_retain(old)) | F::PRESENT).bits() & !0x000f_ffff_ffff_f000;
        match w.compare_exchange_weak(old, new, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return F::from_bits_retain(old),
            Err(now) => old = now,
        }
    }
}

/// Write a swap entry.
pub fn set_swapped(e: &mut PageTableEntry, slot: u64) {
    e.set_addr(PhysAddr::new(slot << 12), SWAP);
}

/// Turn a present entry into a dying one (same frame reference).
pub fn set_dying(e: &mut PageTableEntry, frame: PhysFrame) {
    e.set_addr(frame.start_address(), DYING);
}

/// The user-half tables of one address space.
pub struct UserTables {
    pml4: PhysFrame,
    /// Page-table frames in use (PML4 included).
    pub table_frames: usize,
}

fn table<'a>(frame: PhysFrame) -> &'a mut PageTable {
    // SAFETY: `frame` is a page-table frame owned by a `UserTables`, which
    // is only reached through `&mut UserTables` (one user at a time); the
    // direct map covers it.
    unsafe { &mut *direct::phys_to_virt(frame.start_address()).as_mut_ptr::<PageTable>() }
}

fn new_table() -> Result<PhysFrame, OutOfFrames> {
    let f = frames::alloc_zeroed()?;
    f.set_flags(FrameFlags::PAGE_TABLE);
    Ok(f.into_raw())
}

impl UserTables {
    /// A PML4 whose kernel half is the kernel's.
    pub fn new() -> Result<Self, OutOfFrames> {
        let pml4 = new_table()?;
        let t = table(pml4);
        for (i, e) in crate::mm::kpt::kernel_half().into_iter().enumerate() {
            t[256 + i] = e;
        }
        Ok(UserTables { pml4, table_frames: 1 })
    }

    pub fn pml4(&self) -> PhysFrame {
        self.pml4
    }

    /// The leaf entry of `va`; with `create`, missing tables are made.
    pub fn entry(&mut self, va: u64, create: bool) -> Result<Option<&mut PageTableEntry>, OutOfFrames> {
        let idx = [(va >> 39) & 511, (va >> 30) & 511, (va >> 21) & 511];
        let mut t = self.pml4;
        for i in idx {
            let e = &mut table(t)[i as usize];
            if e.is_unused() {
                if !create {
                    return Ok(None);
                }
                let n = new_table()?;
                self.table_frames += 1;
                e.set_addr(n.start_address(), TABLE_FLAGS);
            }
            t = PhysFrame::containing_address(e.addr());
        }
        Ok(Some(&mut table(t)[((va >> 12) & 511) as usize]))
    }

    /// The entries a walk of `va` meets, from the PML4 down: (level, index,
    /// raw entry). Stops after the first unused entry.
    pub fn levels(&mut self, va: u64) -> alloc::vec::Vec<(u8, usize, u64)> {
        let mut out = alloc::vec::Vec::new();
        let mut t = self.pml4;
        for level in (1..=4u8).rev() {
            let i = ((va >> (12 + 9 * (level as u64 - 1))) & 511) as usize;
            let e = &table(t)[i];
            // The raw bits: flags and address together.
            let raw = e.addr().as_u64() | e.flags().bits();
            out.push((level, i, raw));
            if e.is_unused() || level == 1 || !e.flags().contains(F::PRESENT) {
                break;
            }
            t = PhysFrame::containing_address(e.addr());
        }
        out
    }

    /// Visit every used leaf entry in `[start, end)`, skipping absent tables.
    pub fn for_each(&mut self, start: u64, end: u64, f: &mut dyn FnMut(u64, &mut PageTableEntry)) {
        walk(self.pml4, 4, 0, start, end, &mut |va, e| {
            f(va, e);
            true
        });
    }

    /// Like [`UserTables::for_each`], stopping when `f` returns false;
    /// returns false if it stopped early.
    pub fn for_each_while(&mut self, start: u64, end: u64, f: &mut dyn FnMut(u64, &mut PageTableEntry) -> bool) -> bool {
        walk(self.pml4, 4, 0, start, end, f)
    }

    /// Visit every used leaf entry, then free every user page-table frame.
    /// The visitor must release what each entry holds.
    pub fn destroy(mut self, f: &mut dyn FnMut(u64, &mut PageTableEntry)) {
        self.for_each(0, crate::mm::USER_END, f);
        free(self.pml4, 4);
        self.table_frames = 0;
    }
}

fn walk(t: PhysFrame, level: u8, base: u64, start: u64, end: u64, f: &mut dyn FnMut(u64, &mut PageTableEntry) -> bool) -> bool {
    let span = 1u64 << (12 + 9 * (level as u64 - 1));
    let first = if start > base { ((start - base) / span) as usize } else { 0 };
    // In the PML4 only the user half (0..256) belongs to us.
    let last = if level == 4 { 256 } else { 512 };
    for i in first..last {
        let va = base + i as u64 * span;
        if va >= end {
            break;
        }
        let e = &mut table(t)[i];
        if e.is_unused() {
            continue;
        }
        let go_on = if level == 1 { f(va, e) } else { walk(PhysFrame::containing_address(e.addr()), level - 1, va, start.max(va), end.min(va + span), f) };
        if !go_on {
            return false;
        }
    }
    true
}

fn free(t: PhysFrame, level: u8) {
    if level > 1 {
        let last = if level == 4 { 256 } else { 512 };
        for i in 0..last {
            let e = &table(t)[i];
            if !e.is_unused() {
                free(PhysFrame::containing_address(e.addr()), level - 1);
            }
        }
    }
    // SAFETY: a table frame allocated by `new_table`, whose reference the
    // table held; it is no longer linked or loaded.
    drop(unsafe { Frame::from_raw(t) });
}
