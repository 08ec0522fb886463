//! The entries of a munmap'd range, in two ways (both allocate nothing):
//!
//! ```text
//!  ≤ RELEASE_MAX pages: inside the notification, clear each present entry
//!                       and put its frame in the change's fixed `Released`
//!                       buffer (one walk; ≤ 4 pages: a lookup per page);
//!                       freed after `invalidate_end`
//!  more:                inside the notification, each present entry becomes
//!                       dying (no translation, frame reference kept: the
//!                       table is the work list); after `invalidate_end`,
//!                       `reap` frees dying frames and swap slots
//! ```
//!
//! Swapped entries are always left to `reap` (slots are released after
//! `invalidate_end`, like frames).

use super::pte::{self, Pte};
use super::{page, release_user_frame, swap, Inner, Released};
use crate::mm::frames::Frame;
use crate::mm::tlb::TlbFlush;
use hmm::VaRange;

/// Up to this many pages, a small unmap looks each entry up instead of
/// walking the range (measured: a one-page walk's descent costs more).
const DIRECT_LOOKUP_PAGES: u64 = 4;

impl Inner {
    /// Inside an unmap: every present entry in `r` becomes dying (no
    /// translation, frame reference kept), so the frames outlive
    /// `invalidate_end` without a list; [`Inner::reap`] frees them after.
    pub(super) fn kill_entries(&mut self, r: VaRange, tlb: &mut TlbFlush) {
        self.tables().for_each(r.start(), r.end(), &mut |va, e| {
            if let Pte::Present { frame, .. } | Pte::Exclusive { frame, .. } = Pte::decode(e) {
                pte::set_dying(e, frame);
                tlb.add(page(va));
            }
        });
    }

    /// Inside an unmap of at most [`super::RELEASE_MAX`] pages: every present
    /// entry in `r` is cleared and its frame goes to `released` (freed
    /// after `invalidate_end`). Swapped entries stay for [`Inner::reap`]:
    /// returns whether there were any.
    pub(super) fn drop_entries(&mut self, r: VaRange, tlb: &mut TlbFlush, released: &mut Released) -> bool {
        let mut swapped = false;
        let mut drop_entry = |va: u64, e: &mut x86_64::structures::paging::page_table::PageTableEntry| match Pte::decode(e) {
            Pte::Present { frame, .. } | Pte::Exclusive { frame, .. } => {
                e.set_unused();
                tlb.add(page(va));
                // SAFETY: the entry held this frame reference; it is cleared.
                unsafe { released.frame(frame) };
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

    /// After an unmap's `invalidate_end`: release what the entries of `r`
    /// held (dying frames, swap slots) and clear them.
    pub(super) fn reap(&mut self, r: VaRange) {
        self.tables().for_each(r.start(), r.end(), &mut |_, e| {
            match Pte::decode(e) {
                // SAFETY: a dying entry holds the frame reference of the present entry it was.
                Pte::Dying { frame } => release_user_frame(unsafe { Frame::from_raw(frame) }),
                Pte::Swapped { slot } => swap::SWAP.release(slot),
                Pte::Present { .. } | Pte::Exclusive { .. } => unreachable!("munmap left a present entry"),
                Pte::None => {}
            }
            e.set_unused();
        });
    }
}
