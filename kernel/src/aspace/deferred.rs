//! Frees that wait for the TLB flush (Linux's `mmu_gather`, Asterinas'
//! deferred frees): what a change takes out of live entries goes into a
//! [`DeferredFrees`], which can only be emptied by presenting the
//! [`Flushed`] proof of that change's flush — so no frame is reused while
//! any CPU may still reach it through a cached translation.
//!
//! # Event → action, in order (one change, address-space lock held)
//! ```text
//!  event           1 listeners' start      2 entries              3 CPU TLBs          4 end, then free
//!  --------------  ----------------------  ---------------------  ------------------  ---------------------------
//!  munmap          mirrors drop entries,   Present/Exclusive →    one round over the  dying frames and slots
//!                  IOTLB flushed (token)   Dying (exchange)       range's pages       released (reap)
//!  swap-out        same; device-dirty      Present → Dying        round BEFORE the    Dying → Swapped; frames
//!                  pages marked D          (exchange: old D)      disk reads the      freed after the disk's
//!                                                                 frame               own IOTLB unmap (write_batch)
//!  migration       same                    Present → Dying        round BEFORE the    old frame freed
//!                                          (exchange: old flags)  copy; then new      
//!                                                                 Present installed
//!  COW break       same                    Present → new Present  one round           old reference dropped
//!                                          (exchange)
//!  exit            every mirror of the     (tables torn down)     none: no CPU has    everything, with the
//!                  space is dropped                               the root loaded     page-table pages
//! ```
//! Devices: a mirror's IOTLB is flushed inside `invalidate_start` (step 1,
//! see `notify`), before any entry changes; the swap disk maps a frame into
//! its own domain only for the duration of `write_batch`, which unmaps it
//! and flushes that IOTLB before it returns (step 3 → 4). So by step 4 no
//! CPU TLB and no IOTLB reaches the frames.
//!
//! Page-table pages are never taken out of a live table (munmap leaves
//! empty tables in place); they are freed only at exit, when no CPU has the
//! root loaded (checked), hence caches none of it.

use super::pte::{Pte, UserTables};
use super::{release_user_frame, swap, RELEASE_MAX};
use crate::mm::frames::Frame;
use crate::mm::tlb::Flushed;
use hmm::VaRange;
use x86_64::structures::paging::PhysFrame;

/// Frame references (and, for a bulk unmap, a range of dying entries)
/// released only with a [`Flushed`]. Dropping one that holds anything is a
/// bug (a change that never flushed) and panics.
pub(crate) struct DeferredFrees {
    frames: [Option<PhysFrame>; RELEASE_MAX],
    nframes: usize,
    /// Dying entries of this range hold their frames (a bulk unmap keeps
    /// its work list in the page table: no allocation).
    dying: Option<VaRange>,
}

impl DeferredFrees {
    pub(crate) fn new() -> Self {
        DeferredFrees { frames: [None; RELEASE_MAX], nframes: 0, dying: None }
    }

    /// Take over the frame reference a user entry held.
    ///
    /// # Safety
    /// `frame` must carry a reference (an entry's) that nobody else releases.
    pub(crate) unsafe fn frame(&mut self, frame: PhysFrame) {
        assert!(self.nframes < RELEASE_MAX, "a change released more than {RELEASE_MAX} frames through its buffer");
        self.frames[self.nframes] = Some(frame);
        self.nframes += 1;
    }

    /// The dying entries of `r` are released (and cleared) with the rest.
    pub(crate) fn dying(&mut self, r: VaRange) {
        assert!(self.dying.is_none(), "one dying range per change");
        self.dying = Some(r);
    }

    /// Release everything: the flush is complete.
    pub(crate) fn free(mut self, _proof: Flushed, tables: &mut UserTables) {
        for f in self.frames[..self.nframes].iter_mut().filter_map(Option::take) {
            // SAFETY: `DeferredFrees::frame`'s contract: we own this reference.
            release_user_frame(unsafe { Frame::from_raw(f) });
        }
        self.nframes = 0;
        if let Some(r) = self.dying.take() {
            tables.for_each(r.start(), r.end(), &mut |_, e| match e.take_non_present() {
                // SAFETY: a dying entry holds the frame reference of the present entry it was.
                Pte::Dying { frame } => release_user_frame(unsafe { Frame::from_raw(frame) }),
                Pte::Swapped { slot } => swap::SWAP.release(slot),
                Pte::Present { .. } | Pte::Exclusive { .. } => unreachable!("munmap left a live entry"),
                Pte::None => {}
            });
        }
    }
}

impl Drop for DeferredFrees {
    fn drop(&mut self) {
        assert!(self.nframes == 0 && self.dying.is_none(), "frames taken out of a live table were dropped without a TLB flush");
    }
}
