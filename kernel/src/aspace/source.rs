//! Page sources: where a page's first contents come from.
//!
//! An address space may have one [`PageSource`]. On the first fault of a
//! page that has no entry (the demand-zero case), the fresh zeroed frame
//! is offered to the source, which may write the page's initial bytes —
//! a program's text and data come from its ELF image this way, on first
//! touch, whoever touches it: the program, the kernel's `copy_from_user`,
//! or a device fault through HMM. Afterwards the page is anonymous like any
//! other (COW on fork, swapped out and in).
//!
//! The source runs under the address-space lock: it must not call back
//! into the address space, and takes only leaf locks of its own.

use super::{AddressSpace, Inner};
use crate::mm::direct;
use crate::mm::frames::Frame;
use alloc::sync::Arc;

/// Initial contents of pages.
pub trait PageSource: Send + Sync {
    /// Write the initial bytes of the page at `va` into `page` (zeroed on
    /// entry) and return true, or return false: the page is demand-zero.
    fn fill(&self, va: u64, page: &mut [u8; 4096]) -> bool;
}

impl AddressSpace {
    /// Give this address space a page source (replacing any earlier one).
    pub fn set_page_source(&self, source: Option<Arc<dyn PageSource>>) {
        self.lock().source = source;
    }
}

impl Inner {
    /// Offer the fresh zeroed frame `f` for page `va` to the source; true
    /// if it wrote the page.
    pub(super) fn fill_from_source(&mut self, va: u64, f: &Frame) -> bool {
        let Some(src) = self.source.clone() else { return false };
        let mut page = alloc::boxed::Box::new([0u8; 4096]);
        if !src.fill(va, &mut page) {
            return false;
        }
        // SAFETY: `f` was just allocated for this page and is not mapped yet.
        unsafe { direct::write_frame(f.frame(), 0, &page[..]) };
        self.stats.source_fills += 1;
        true
    }
}
