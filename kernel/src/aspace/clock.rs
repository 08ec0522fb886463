//! Reclaim: one clock over every process's resident pages, evicting in
//! batches.
//!
//! ```text
//!  hand = (address space, va) ──► sweep that space's present pages from va:
//!     in the protected window (a fault in progress)  ─► skip
//!     swap full, and the page is not clean in the swap cache ─► skip
//!     accessed bit set   ─► clear it (second chance; harvested)
//!     otherwise          ─► victim; BATCH victims ─► evict_batch:
//!                            ONE SwapOut change over the batch's span
//!                            (one notification, one IOTLB flush per mirror),
//!                            pages the swap cache holds clean keep their
//!                            slot; the others are written in one batch
//!                            (several disk requests in flight); entries →
//!                            swapped, frames freed after invalidate_end
//!  end of that space ─► the next registered space, from 0; at most two
//!  full turns (the first may only clear accessed bits)
//! ```
//!
//! Device state: a page a device wrote is reported by HMM in the SwapOut
//! change's `invalidate_start` and marked dirty before the page is read for
//! writing, so the device's data is what goes to swap.
//!
//! The registry holds weak references (per process, never per page). The
//! faulting address space is passed in already locked; others are only
//! `try_lock`ed (one that is busy — e.g. a fork's parent — is skipped), so
//! reclaim can never deadlock on an address-space lock.

use super::pte::Pte;
use super::swap::{SwapError, SWAP};
use super::{page, uncache, AddressSpace, AspaceId, Change, ChangeKind, Inner};
use crate::mm::frames::{self, OutOfFrames};
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use hmm::VaRange;
use spin::Mutex;
use x86_64::structures::paging::{PageTableFlags as F, PhysFrame};
use x86_64::PhysAddr;

/// Pages evicted under one notification.
pub const BATCH: usize = super::RELEASE_MAX;

struct Registry {
    spaces: Vec<(AspaceId, Weak<AddressSpace>)>,
    /// The clock hand's address space (its position within it is that
    /// space's `clock_hand`).
    hand: AspaceId,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry { spaces: Vec::new(), hand: AspaceId(0) });

/// Put a new address space under the clock.
pub(super) fn register(a: &Arc<AddressSpace>) -> Result<(), OutOfFrames> {
    let mut r = REGISTRY.lock();
    r.spaces.retain(|(_, w)| w.strong_count() > 0);
    r.spaces.try_reserve(1).map_err(|_| OutOfFrames)?;
    r.spaces.push((a.id, Arc::downgrade(a)));
    Ok(())
}

/// Free up to `want` frames from any process. `current` is the caller's
/// (locked) address space; `protect` is never evicted from it.
pub(super) fn reclaim(current_id: AspaceId, current: &mut Inner, want: usize, protect: Option<VaRange>) -> usize {
    let reg = REGISTRY.lock();
    let n = reg.spaces.len();
    if n == 0 {
        return 0;
    }
    let mut i = reg.spaces.iter().position(|(id, _)| *id >= reg.hand).unwrap_or(0);
    let mut freed = 0;
    // Two full turns: the first may only clear accessed bits.
    for _visit in 0..2 * n + 1 {
        let (id, weak) = (reg.spaces[i].0, reg.spaces[i].1.clone());
        let done = if id == current_id {
            let r = current.sweep(id, want - freed, protect);
            freed += r.0;
            r.1
        } else if let Some(a) = weak.upgrade() {
            match a.inner.try_lock() {
                Some(mut inner) if inner.tables.is_some() => {
                    let r = inner.sweep(id, want - freed, None);
                    freed += r.0;
                    r.1
                }
                _ => true,
            }
        } else {
            true
        };
        if freed >= want {
            drop(reg);
            REGISTRY.lock().hand = id;
            return freed;
        }
        if done {
            i = (i + 1) % n;
        }
    }
    let next = reg.spaces[i].0;
    drop(reg);
    REGISTRY.lock().hand = next;
    freed
}

impl Inner {
    /// Sweep this space's resident pages from its hand: up to `want` frames
    /// freed, in batches. Returns (freed, reached the end — the hand wrapped).
    pub(super) fn sweep(&mut self, id: AspaceId, want: usize, protect: Option<VaRange>) -> (usize, bool) {
        let mut freed = 0;
        loop {
            let mut victims = [0u64; BATCH];
            let mut n = 0;
            let mut last = self.clock_hand;
            let start = self.clock_hand;
            let active = self.active();
            let limit = want.saturating_sub(freed).min(BATCH);
            // With swap full, only pages the swap cache still holds clean can go.
            let full = SWAP.is_full();
            let finished = self.tables().for_each_while(start, crate::mm::USER_END, &mut |va, e| {
                last = va + 4096;
                // Only a hint: the decision to write a page is taken from
                // the value its exchange returns (see `evict_batch`).
                if let Pte::Present { frame, flags } = e.get() {
                    if protect.is_some_and(|p| p.contains(va)) {
                        return true;
                    }
                    if full && (flags.contains(F::DIRTY) || frames::swap_slot(frame).is_none()) {
                        return true;
                    }
                    if flags.contains(F::ACCESSED) {
                        // Second chance. Clearing Accessed needs no
                        // shootdown for correctness (a CPU with a cached
                        // translation just does not set it again — Linux's
                        // x86 `ptep_clear_flush_young` skips it too); the
                        // local flush keeps this CPU's own use visible.
                        e.clear_flags(F::ACCESSED);
                        if active {
                            x86_64::instructions::tlb::flush(page(va).start_address());
                        }
                    } else {
                        victims[n] = va;
                        n += 1;
                        if n == limit {
                            return false;
                        }
                    }
                }
                true
            });
            self.clock_hand = if finished { 0 } else { last };
            if n > 0 {
                match self.evict_batch(id, &victims[..n]) {
                    (k, None) => freed += k,
                    (k, Some(SwapError::Full)) if k > 0 => freed += k,
                    (k, Some(e)) => {
                        log::debug!("reclaim: swap-out stopped: {e}");
                        return (freed + k, true);
                    }
                }
            }
            if finished || freed >= want {
                return (freed, finished);
            }
        }
    }

    /// Swap out the resident pages at `vas` (ascending, at most [`BATCH`])
    /// under one `SwapOut` change covering them. Returns the pages evicted
    /// and the error that stopped it early, if any.
    ///
    /// ```text
    ///  each page: old = exchange(Present → Dying)     ← no CPU can set D from here
    ///  ONE shootdown round for the batch                ← nor write the frame
    ///  old was the zero frame         ─► entry none
    ///  old clean, swap cache holds it ─► entry swapped (same slot)
    ///  otherwise ─► written (one batch), entry swapped; not written ─► restored
    /// ```
    pub(super) fn evict_batch(&mut self, id: AspaceId, vas: &[u64]) -> (usize, Option<SwapError>) {
        let (Some(&first), Some(&last)) = (vas.first(), vas.last()) else { return (0, None) };
        let span = VaRange::new(first, last + 4096).expect("user pages");
        let mut count = 0;
        let mut err = None;
        self.change(id, Change { range: span, kind: ChangeKind::SwapOut }, |inner, tlb, frees| {
            // Pass 1: take every page away from the MMUs. The exchange
            // returns the entry as it was at that instant, with any Dirty
            // bit a CPU set up to then (a listener may also have just marked
            // it); after the flush nobody can dirty the frame any more.
            let zero = PhysFrame::containing_address(PhysAddr::new(0));
            let mut taken = [(0u64, zero, F::empty()); BATCH];
            let mut nt = 0;
            for &va in vas {
                let Some(e) = inner.tables().entry(va, false).ok().flatten() else { continue };
                let Pte::Present { frame, .. } = e.get() else { continue };
                let Pte::Present { flags, .. } = e.exchange(Pte::Dying { frame }) else { unreachable!("present under our lock") };
                tlb.add(page(va));
                taken[nt] = (va, frame, flags);
                nt += 1;
            }
            let _flushed = inner.flush(core::mem::take(tlb));
            // Pass 2: swap-cache hits go at once; the rest need writing.
            let mut pending = [(0u64, zero, F::empty()); BATCH];
            let mut np = 0;
            for &(va, frame, flags) in &taken[..nt] {
                let e = inner.tables().entry(va, false).ok().flatten().expect("taken above");
                if frames::is_zero_frame(frame) {
                    // Nothing to save: the entry goes back to "never written".
                    let _ = e.exchange(Pte::None);
                    // SAFETY: the entry held one reference; released after the flush.
                    unsafe { frees.frame(frame) };
                    count += 1;
                    continue;
                }
                match frames::swap_slot(frame) {
                    // Swap cache: the slot still holds exactly this page.
                    Some(slot) if !flags.contains(F::DIRTY) && SWAP.share(slot).is_ok() => {
                        let _ = e.exchange(Pte::Swapped { slot });
                        // SAFETY: the entry held one reference; released after the flush.
                        unsafe { frees.frame(frame) };
                        inner.stats.swap_cache_hits += 1;
                        inner.stats.swap_outs += 1;
                        count += 1;
                    }
                    _ => {
                        uncache(frame);
                        pending[np] = (va, frame, flags);
                        np += 1;
                    }
                }
            }
            // Pass 3: one batched write (several disk requests in flight),
            // of frames no CPU can reach any more.
            let mut frames_out = [zero; BATCH];
            for (i, &(_, f, _)) in pending[..np].iter().enumerate() {
                frames_out[i] = f;
            }
            let mut slots = [0u64; BATCH];
            let (written, e) = if np > 0 { SWAP.write_batch(&frames_out[..np], &mut slots) } else { (0, None) };
            err = e;
            for (i, &(va, frame, flags)) in pending[..np].iter().enumerate() {
                let e = inner.tables().entry(va, false).ok().flatten().expect("taken above");
                if i < written {
                    let _ = e.exchange(Pte::Swapped { slot: slots[i] });
                    // SAFETY: the entry held one reference; released after the flush.
                    unsafe { frees.frame(frame) };
                    inner.stats.swap_outs += 1;
                    count += 1;
                } else {
                    // Not written (swap full): the page stays, dirty as it was.
                    let _ = e.exchange(Pte::Present { frame, flags });
                }
            }
        });
        (count, err)
    }
}
