//! TLB flushing with tokens: a change to live translations produces a
//! `#[must_use]` [`TlbFlush`] naming the pages it touched, so a forgotten
//! flush is a compiler warning; carrying it out ([`TlbFlush::flush`]) is
//! the only way to get a [`Flushed`], the proof that frames taken out of
//! the changed entries may be freed (see `aspace::deferred`).
//!
//! Policy: up to [`INVLPG_THRESHOLD`] pages are flushed one `invlpg` each;
//! beyond that one CR3 reload (which keeps the kernel's GLOBAL entries) is
//! cheaper than hundreds of `invlpg`s. A flush reaches every CPU that may
//! cache the address space — this one directly, the others by one
//! shootdown round (see [`super::shootdown`]).

use super::shootdown;
use x86_64::structures::paging::{Page, PhysFrame};
use core::mem::MaybeUninit;
use x86_64::VirtAddr;

/// Above this many pages, flush the whole (non-global) TLB instead.
pub const INVLPG_THRESHOLD: usize = 32;

/// Pages whose translations changed and are not yet flushed.
#[must_use = "the TLBs still hold the old translations: call .flush()"]
#[repr(C)] // the buffer last: zeroing `count` and `all` is not widened over it
pub struct TlbFlush {
    count: usize,
    all: bool,
    /// Fixed storage: a token must not allocate (it is made under locks).
    /// `pages[..count]` are written; the rest is left uninitialised (a
    /// token is made for every change: clearing 256 bytes each time showed
    /// in the 1-page munmap).
    pages: [MaybeUninit<u64>; INVLPG_THRESHOLD],
}

impl Default for TlbFlush {
    fn default() -> Self {
        TlbFlush { count: 0, all: false, pages: [MaybeUninit::uninit(); INVLPG_THRESHOLD] }
    }
}

impl core::fmt::Debug for TlbFlush {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TlbFlush").field("pages", &self.pages()).field("all", &self.all).finish()
    }
}

/// Proof that a [`TlbFlush`] was carried out on every CPU that may cache
/// the address space: no CPU can reach the old translations any more.
/// Only [`TlbFlush::flush`] makes one.
#[must_use = "a Flushed exists to release deferred frees"]
#[derive(Debug)]
pub struct Flushed(());

/// What a token asks for (for statistics and tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushKind {
    Nothing,
    Pages(usize),
    All,
}

impl TlbFlush {
    pub fn new() -> Self {
        Self::default()
    }

    /// The pages recorded.
    fn pages(&self) -> &[u64] {
        // SAFETY: `pages[..count]` were written by `add`; `MaybeUninit<u64>`
        // has `u64`'s layout.
        unsafe { core::slice::from_raw_parts(self.pages.as_ptr().cast::<u64>(), self.count) }
    }

    /// Record one page.
    #[inline]
    pub fn add(&mut self, page: Page) {
        self.add_addr(page.start_address().as_u64());
    }

    /// Record the page at `va` (page-aligned, canonical: a user page).
    #[inline]
    pub fn add_addr(&mut self, va: u64) {
        if self.all {
            return;
        }
        if self.count == INVLPG_THRESHOLD {
            self.all = true;
        } else {
            self.pages[self.count] = MaybeUninit::new(va);
            self.count += 1;
        }
    }

    /// Record that everything of the address space must go.
    pub fn add_all(&mut self) {
        self.all = true;
    }

    /// Merge another token into this one.
    pub fn merge(&mut self, other: TlbFlush) {
        if other.all {
            self.all = true;
        } else {
            for &p in other.pages() {
                self.add(Page::containing_address(VirtAddr::new(p)));
            }
        }
    }

    /// True if nothing was recorded.
    pub fn is_empty(&self) -> bool {
        !self.all && self.count == 0
    }

    /// What the token asks for.
    pub fn kind(&self) -> FlushKind {
        if self.all {
            FlushKind::All
        } else if self.count == 0 {
            FlushKind::Nothing
        } else {
            FlushKind::Pages(self.count)
        }
    }

    /// Flush what was recorded from every CPU that may cache the address
    /// space rooted at `root`: this CPU if it has `root` loaded, the
    /// others by one shootdown round that returns only when each of them
    /// acknowledged. An empty token flushes nothing.
    #[inline]
    pub fn flush(self, root: PhysFrame) -> Flushed {
        if !self.is_empty() {
            shootdown::flush(root, self.pages(), self.all);
        }
        Flushed(())
    }
}

/// Flush `pages` (or everything non-global) from this CPU's TLB.
pub(super) fn flush_here(pages: &[u64], all: bool) {
    if all {
        x86_64::instructions::tlb::flush_all();
    } else {
        for &p in pages {
            x86_64::instructions::tlb::flush(VirtAddr::new(p));
        }
    }
}
