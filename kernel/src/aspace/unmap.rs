//! The entries of a munmap'd range, in two ways (both allocate nothing;
//! both are one walk per 512-entry leaf node — `hmm::pt`'s walker over the
//! CPU tables — and a tight loop of atomic words in each, see `pte`):
//!
//! ```text
//!  ≤ RELEASE_MAX pages: inside the notification, exchange each present
//!                       entry for none and put its frame in the change's
//!                       fixed `DeferredFrees` buffer
//!  more:                inside the notification, each present entry is
//!                       exchanged for a dying one (no translation, frame
//!                       reference kept: the table is the work list)
//!  then:                one TLB shootdown, `invalidate_end`, and only then
//!                       the deferred frees: frames, dying entries and swap
//!                       slots (see `deferred`), frames in batches
//! ```
//!
//! Swapped entries are always left to the dying-range reap (slots are
//! released after `invalidate_end`, like frames).

use super::{DeferredFrees, Inner};
use crate::mm::tlb::TlbFlush;
use hmm::VaRange;

impl Inner {
    /// Inside an unmap: every present entry in `r` becomes dying (no
    /// translation, frame reference kept) by one exchange, so the frames
    /// outlive the flush and `invalidate_end` without a list; the change's
    /// [`DeferredFrees`] reaps them after.
    pub(super) fn kill_entries(&mut self, r: VaRange, tlb: &mut TlbFlush) {
        self.tables().kill(r.start(), r.end(), |va| tlb.add_addr(va));
    }

    /// Inside an unmap of at most [`super::RELEASE_MAX`] pages: every present
    /// entry in `r` is exchanged for none and its frame goes to `frees`
    /// (freed after the flush). Swapped entries stay for the dying-range
    /// reap: returns whether there were any.
    pub(super) fn drop_entries(&mut self, r: VaRange, tlb: &mut TlbFlush, frees: &mut DeferredFrees) -> bool {
        self.tables().clear_live(r.start(), r.end(), |va, frame, present| {
            if present {
                tlb.add_addr(va);
            }
            // SAFETY: the entry held this frame reference; it is cleared.
            unsafe { frees.frame(frame) };
        })
    }
}
