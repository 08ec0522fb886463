//! TLB flushing with tokens: a change to live translations produces a
//! `#[must_use]` [`TlbFlush`] naming the pages it touched, so a forgotten
//! flush is a compiler warning.
//!
//! Policy: up to [`INVLPG_THRESHOLD`] pages are flushed one `invlpg` each;
//! beyond that one CR3 reload (which keeps the kernel's GLOBAL entries) is
//! cheaper than hundreds of `invlpg`s.

use x86_64::structures::paging::Page;
use x86_64::VirtAddr;

/// Above this many pages, flush the whole (non-global) TLB instead.
pub const INVLPG_THRESHOLD: usize = 32;

/// Pages whose translations changed and are not yet flushed.
#[must_use = "the TLB still holds the old translations: call .flush()"]
#[derive(Debug, Default)]
pub struct TlbFlush {
    /// Fixed storage: a token must not allocate (it is made under locks).
    pages: [u64; INVLPG_THRESHOLD],
    count: usize,
    all: bool,
}

/// How a flush was carried out (for statistics and tests).
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

    /// Record one page.
    pub fn add(&mut self, page: Page) {
        if self.all {
            return;
        }
        if self.count == INVLPG_THRESHOLD {
            self.all = true;
        } else {
            self.pages[self.count] = page.start_address().as_u64();
            self.count += 1;
        }
    }

    /// Merge another token into this one.
    pub fn merge(&mut self, other: TlbFlush) {
        if other.all {
            self.all = true;
        } else {
            for &p in &other.pages[..other.count] {
                self.add(Page::containing_address(VirtAddr::new(p)));
            }
        }
    }

    /// True if nothing was recorded.
    pub fn is_empty(&self) -> bool {
        !self.all && self.count == 0
    }

    /// The translations belong to an address space that is not loaded:
    /// nothing of it is cached (CR3 is reloaded before it is used), so
    /// there is nothing to flush.
    pub fn discard_inactive(self) {}

    /// Flush what was recorded from this CPU's TLB.
    pub fn flush(self) -> FlushKind {
        if self.all {
            x86_64::instructions::tlb::flush_all();
            FlushKind::All
        } else if self.count == 0 {
            FlushKind::Nothing
        } else {
            for &p in &self.pages[..self.count] {
                x86_64::instructions::tlb::flush(VirtAddr::new(p));
            }
            FlushKind::Pages(self.count)
        }
    }
}
