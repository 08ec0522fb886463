//! The entries of a munmap'd range, in two ways (both allocate nothing):
//!
//! ```text
//!  ≤ RELEASE_MAX pages: inside the notification, exchange each present
//!                       entry for none and put its frame in the change's
//!                       fixed `DeferredFrees` buffer (one walk; ≤ 4 pages:
//!                       a lookup per page)
//!  more:                inside the notification, each present entry is
//!                       exchanged for a dying one (no translation, frame
//!                       reference kept: the table is the work list)
//!  then:                one TLB shootdown, `invalidate_end`, and only then
//!                       the deferred frees: frames, dying entries and swap
//!                       slots (see `deferred`)
//! ```
//!
//! Swapped entries are always left to the dying-range reap (slots are
//! released after `invalidate_end`, like frames).

use super::pte::{Entry, Pte};
use super::{page, DeferredFrees, Inner};
use crate::mm::tlb::TlbFlush;
use hmm::VaRange;

/// Up to this many pages, a small unmap looks each entry up instead of
/// walking the range (measured: a one-page walk's descent costs more).
const DIRECT_LOOKUP_PAGES: u64 = 4;

impl Inner {
    /// Inside an unmap: every present entry in `r` becomes dying (no
    /// translation, frame reference kept) by one exchange, so the frames
    /// outlive the flush and `invalidate_end` without a list; the change's
    /// [`DeferredFrees`] reaps them after.
    pub(super) fn kill_entries(&mut self, r: VaRange, tlb: &mut TlbFlush) {
        self.tables().for_each(r.start(), r.end(), &mut |va, e| {
            if let Pte::Present { frame, .. } | Pte::Exclusive { frame, .. } = e.get() {
                // The frame cannot change under our lock; the exchange takes
                // the entry from every MMU at one instant.
                let old = e.exchange(Pte::Dying { frame });
                debug_assert!(matches!(old, Pte::Present { frame: f, .. } | Pte::Exclusive { frame: f, .. } if f == frame));
                tlb.add(page(va));
            }
        });
    }

    /// Inside an unmap of at most [`super::RELEASE_MAX`] pages: every present
    /// entry in `r` is exchanged for none and its frame goes to `frees`
    /// (freed after the flush). Swapped entries stay for the dying-range
    /// reap: returns whether there were any.
    pub(super) fn drop_entries(&mut self, r: VaRange, tlb: &mut TlbFlush, frees: &mut DeferredFrees) -> bool {
        let mut swapped = false;
        let mut drop_entry = |va: u64, e: Entry<'_>| match e.get() {
            Pte::Present { .. } | Pte::Exclusive { .. } => {
                if let Pte::Present { frame, .. } | Pte::Exclusive { frame, .. } = e.exchange(Pte::None) {
                    tlb.add(page(va));
                    // SAFETY: the entry held this frame reference; it is cleared.
                    unsafe { frees.frame(frame) };
                }
            }
            Pte::Swapped { .. } => swapped = true,
            Pte::None | Pte::Dying { .. } => {}
        };
        if r.pages() <= DIRECT_LOOKUP_PAGES {
            // A lookup per page (three loads each) is cheaper than the
            // range walk's descent for a few pages.
            for va in r.page_addrs() {
                if let Ok(Some(e)) = self.tables().entry(va, false) {
                    drop_entry(va, e);
                }
            }
        } else {
            self.tables().for_each(r.start(), r.end(), &mut drop_entry);
        }
        swapped
    }
}
