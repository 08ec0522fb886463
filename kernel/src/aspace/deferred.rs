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

use super::pte::UserTables;
use super::{swap, RELEASE_MAX};
use crate::mm::frames::{Frame, FreeBatch};
use crate::mm::tlb::Flushed;
use core::mem::MaybeUninit;
use hmm::VaRange;
use x86_64::structures::paging::PhysFrame;

/// Frame references (and, for a bulk unmap, a range of dying entries)
/// released only with a [`Flushed`]. Dropping one that holds anything is a
/// bug (a change that never flushed) and panics.
// repr(C), the buffer last: so the zeroing of the other fields is not
// widened over the uninitialised buffer (LLVM may fill undef bytes).
#[repr(C)]
pub(crate) struct DeferredFrees {
    nframes: usize,
    /// Dying entries of this range hold their frames (a bulk unmap keeps
    /// its work list in the page table: no allocation).
    dying: Option<VaRange>,
    /// `frames[..nframes]` are written (uninitialised storage: a change
    /// starts with an empty buffer and should not pay to clear it).
    frames: [MaybeUninit<PhysFrame>; RELEASE_MAX],
}

impl DeferredFrees {
    #[inline(always)]
    pub(crate) fn new() -> Self {
        DeferredFrees { nframes: 0, dying: None, frames: [MaybeUninit::uninit(); RELEASE_MAX] }
    }

    /// Take over the frame reference a user entry held.
    ///
    /// # Safety
    /// `frame` must carry a reference (an entry's) that nobody else releases.
    pub(crate) unsafe fn frame(&mut self, frame: PhysFrame) {
        assert!(self.nframes < RELEASE_MAX, "a change released more than {RELEASE_MAX} frames through its buffer");
        self.frames[self.nframes] = MaybeUninit::new(frame);
        self.nframes += 1;
    }

    /// The dying entries of `r` are released (and cleared) with the rest.
    pub(crate) fn dying(&mut self, r: VaRange) {
        assert!(self.dying.is_none(), "one dying range per change");
        self.dying = Some(r);
    }

    /// Release everything: the flush is complete.
    /// Frames whose last reference goes return to the allocator in
    /// batches, their swap-cache slots released.
    pub(crate) fn free(&mut self, _proof: Flushed, tables: &mut UserTables) {
        let mut batch = FreeBatch::new();
        for f in &self.frames[..self.nframes] {
            // SAFETY: `frames[..nframes]` were written by `frame`.
            let f = unsafe { f.assume_init() };
            // SAFETY: `DeferredFrees::frame`'s contract: we own this reference.
            if let Some(slot) = batch.release(unsafe { Frame::from_raw(f) }) {
                swap::SWAP.release(slot);
            }
        }
        self.nframes = 0;
        if let Some(r) = self.dying.take() {
            tables.reap(
                r.start(),
                r.end(),
                |f| {
                    // SAFETY: a dying entry holds the frame reference of the present entry it was.
                    if let Some(slot) = batch.release(unsafe { Frame::from_raw(f) }) {
                        swap::SWAP.release(slot); // the swap cache's
                    }
                },
                |slot| swap::SWAP.release(slot),
            );
        }
    }
}

impl Drop for DeferredFrees {
    fn drop(&mut self) {
        assert!(self.nframes == 0 && self.dying.is_none(), "frames taken out of a live table were dropped without a TLB flush");
    }
}
