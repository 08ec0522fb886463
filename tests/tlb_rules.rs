//! The TLB rules on one CPU, checked through real translations: the test
//! loads the address space in CR3 and touches its pages directly, so the
//! (emulated) TLB caches them as user code's would.
//!
//! * munmap, mprotect and migration flush this CPU's TLB before they
//!   return: a frame freed by munmap is taken and overwritten at once (the
//!   allocator hands a just-freed frame out first), and a stale
//!   translation would read the new owner's data instead of faulting.
//! * swap-out decides from the Dirty bit the exchange returns: a page
//!   dirtied through the CPU — even by a write made after the change began
//!   (a listener writes through the mapping in `invalidate_start`) — is
//!   written to swap and reads back.
//! * the frames a munmap takes out are still allocated when listeners hear
//!   `invalidate_end` — after the TLB flush — small and bulk alike: no
//!   frame is free while a CPU may still reach it.
//! * on one CPU no shootdown round and no IPI is needed.
#![no_std]
#![no_main]

extern crate alloc;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicU64, Ordering};
use kernel::aspace::swap::SWAP;
use kernel::aspace::{AccessFailure, AddressSpace, AspaceId, Change, ChangeKind, Listener, Prot};
use kernel::mm::{direct, frames, shootdown};
use kernel::{tests, BootInfo};

kernel::entry!(main);

fn main(_: &'static BootInfo) -> ! {
    kernel::testing::run(
        "tlb_rules",
        tests![
            munmap_leaves_no_stale_translation,
            bulk_munmap_leaves_no_stale_translation,
            mprotect_read_only_takes_effect_at_once,
            migration_leaves_no_stale_translation,
            swap_out_writes_a_page_dirtied_through_the_tlb,
            a_write_during_the_change_is_not_lost,
            frames_outlive_the_flush,
            one_cpu_needs_no_shootdown,
        ],
    );
}

fn rw() -> Prot {
    Prot::READ | Prot::WRITE
}

/// Read user memory directly (with the space loaded): through the TLB.
fn peek(va: u64) -> u64 {
    // SAFETY: the caller has the address space loaded and the page mapped
    // (so this cannot fault); SMAP is off, so the kernel may read it.
    unsafe { core::ptr::read_volatile(va as *const u64) }
}

fn poke(va: u64, v: u64) {
    // SAFETY: as `peek`, and the page is writable.
    unsafe { core::ptr::write_volatile(va as *mut u64, v) }
}

/// Fault a swapped page back in (a direct access would be a kernel fault).
fn swap_in(a: &AddressSpace, va: u64) {
    a.copy_from_user(va, &mut [0u8; 1]).unwrap();
}

/// Take frames until `want` comes back (the allocator hands out a
/// just-freed frame first), write `fill` over it; returns it.
fn reuse(want: x86_64::structures::paging::PhysFrame, fill: u8) -> frames::Frame {
    let mut others = alloc::vec::Vec::new();
    let f = loop {
        let f = frames::alloc().expect("frames");
        if f.frame() == want {
            break f;
        }
        assert!(others.len() < 64, "the freed frame was not handed out again");
        others.push(f);
    };
    // SAFETY: the frame is ours now.
    unsafe { direct::write_frame(f.frame(), 0, &[fill; 4096]) };
    f
}

fn munmap_leaves_no_stale_translation() {
    let a = AddressSpace::new().unwrap();
    let r = a.mmap(None, 4 * 4096, rw(), false).unwrap();
    a.copy_to_user(r.start(), &[0xaa; 4 * 4096]).unwrap();
    let frame = a.walk(r.start() + 4096).unwrap().frame;
    let _loaded = a.load();
    assert_eq!(peek(r.start() + 4096), 0xaaaa_aaaa_aaaa_aaaa, "the TLB caches the page now");
    a.munmap(r.start() + 4096, 4096).unwrap();
    let _new_owner = reuse(frame, 0x55);
    let mut b = [0u8; 8];
    let e = a.copy_from_user(r.start() + 4096, &mut b);
    assert!(e.is_err(), "read {b:x?} through a stale translation of an unmapped page (the new owner's data)");
    assert_eq!(e.unwrap_err().reason, AccessFailure::NoVma);
    assert_eq!(peek(r.start()), 0xaaaa_aaaa_aaaa_aaaa, "the neighbours stay");
}

/// The same for a bulk munmap (dying entries, more pages than a TLB
/// token lists): no page read through the TLB before stays readable.
fn bulk_munmap_leaves_no_stale_translation() {
    let a = AddressSpace::new().unwrap();
    let pages = 2 * kernel::aspace::RELEASE_MAX as u64;
    let r = a.mmap(None, pages * 4096, rw(), false).unwrap();
    for i in 0..pages {
        a.copy_to_user(r.start() + i * 4096, &[0xaa; 8]).unwrap();
    }
    let _loaded = a.load();
    for i in 0..pages {
        assert_eq!(peek(r.start() + i * 4096), 0xaaaa_aaaa_aaaa_aaaa, "the TLB caches page {i} now");
    }
    a.munmap(r.start(), pages * 4096).unwrap();
    for i in 0..pages {
        let mut b = [0u8; 8];
        let e = a.copy_from_user(r.start() + i * 4096, &mut b);
        assert!(e.is_err(), "page {i}: read {b:x?} through a stale translation after a bulk munmap");
    }
}

fn mprotect_read_only_takes_effect_at_once() {
    let a = AddressSpace::new().unwrap();
    let r = a.mmap(None, 4096, rw(), false).unwrap();
    a.copy_to_user(r.start(), &[1; 8]).unwrap();
    let _loaded = a.load();
    poke(r.start(), 2); // cached writable (and dirty)
    a.mprotect(r.start(), 4096, Prot::READ).unwrap();
    let e = a.copy_to_user(r.start(), &[3; 8]);
    assert!(e.is_err(), "wrote through a stale writable translation after mprotect(READ)");
    assert_eq!(peek(r.start()), 2);
}

fn migration_leaves_no_stale_translation() {
    let a = AddressSpace::new().unwrap();
    let r = a.mmap(None, 4096, rw(), false).unwrap();
    a.copy_to_user(r.start(), &[1; 8]).unwrap();
    let _loaded = a.load();
    poke(r.start(), 0x1111); // cached writable
    let (old, new) = a.migrate(r.start()).unwrap();
    assert_eq!(a.walk(r.start()).unwrap().frame, new);
    assert!(a.walk(r.start()).unwrap().dirty, "the dirty bit moved with the page");
    poke(r.start(), 0x2222); // must go to the new frame
    let mut b = [0u8; 8];
    direct::read_frame(new, 0, &mut b);
    assert_eq!(u64::from_le_bytes(b), 0x2222, "a write after migrate went to the old frame {:#x} (stale translation)", old.start_address().as_u64());
}

fn swap_out_writes_a_page_dirtied_through_the_tlb() {
    SWAP.init();
    let a = AddressSpace::new().unwrap();
    let r = a.mmap(None, 4096, rw(), false).unwrap();
    let range = hmm::VaRange::page_of(r.start()).unwrap();
    a.copy_to_user(r.start(), &[7; 4096]).unwrap();
    assert_eq!(a.swap_out(range), 1);
    let _loaded = a.load();
    swap_in(&a, r.start());
    assert_eq!(peek(r.start()), 0x0707_0707_0707_0707); // clean, slot cached
    assert!(!a.walk(r.start()).unwrap().dirty);
    poke(r.start(), 0x1234); // the MMU sets Dirty
    let writes = SWAP.stats().writes;
    assert_eq!(a.swap_out(range), 1);
    assert_eq!(SWAP.stats().writes, writes + 1, "the dirty page was written, not dropped as a clean swap-cache hit");
    swap_in(&a, r.start());
    assert_eq!(peek(r.start()), 0x1234, "and reads back");
}

/// Writes `value` through the CPU mapping of `va` when a swap-out starts:
/// after any read of the entry that precedes the change, before its exchange.
struct WriteOnSwapOut {
    va: u64,
    value: AtomicU64,
}

impl Listener for WriteOnSwapOut {
    fn invalidate_start(&self, _: AspaceId, c: &Change, _: &mut dyn FnMut(u64)) {
        if c.kind == ChangeKind::SwapOut && c.range.contains(self.va) {
            poke(self.va, self.value.load(Ordering::SeqCst));
        }
    }
    fn invalidate_end(&self, _: AspaceId, _: &Change) {}
}

fn a_write_during_the_change_is_not_lost() {
    SWAP.init();
    let a = AddressSpace::new().unwrap();
    let r = a.mmap(None, 4096, rw(), false).unwrap();
    let range = hmm::VaRange::page_of(r.start()).unwrap();
    a.copy_to_user(r.start(), &[9; 4096]).unwrap();
    assert_eq!(a.swap_out(range), 1);
    let l = Arc::new(WriteOnSwapOut { va: r.start(), value: AtomicU64::new(0xfeed) });
    a.register_listener(l);
    let _loaded = a.load();
    swap_in(&a, r.start());
    assert_eq!(peek(r.start()), 0x0909_0909_0909_0909); // clean, slot cached
    assert_eq!(a.swap_out(range), 1);
    swap_in(&a, r.start());
    assert_eq!(peek(r.start()), 0xfeed, "the write made while the swap-out began was lost");
}

/// Checks, when an unmap's `invalidate_end` comes (after its flush), that
/// the frame it watches is still allocated.
struct FrameHeldAtEnd {
    frame: AtomicU64,
    /// 0: no unmap ended yet; 1: held at the end; 2: already freed.
    seen: AtomicU64,
}

impl Listener for FrameHeldAtEnd {
    fn invalidate_start(&self, _: AspaceId, _: &Change, _: &mut dyn FnMut(u64)) {}
    fn invalidate_end(&self, _: AspaceId, c: &Change) {
        if c.kind == ChangeKind::Unmap {
            let f = x86_64::structures::paging::PhysFrame::containing_address(x86_64::PhysAddr::new(self.frame.load(Ordering::SeqCst)));
            self.seen.store(if frames::refcount(f) > 0 { 1 } else { 2 }, Ordering::SeqCst);
        }
    }
}

fn frames_outlive_the_flush() {
    for pages in [1, 4, 2 * kernel::aspace::RELEASE_MAX as u64] {
        let a = AddressSpace::new().unwrap();
        let r = a.mmap(None, pages * 4096, rw(), false).unwrap();
        for i in 0..pages {
            a.copy_to_user(r.start() + i * 4096, &[1]).unwrap();
        }
        let frame = a.walk(r.start() + (pages - 1) * 4096).unwrap().frame;
        let l = Arc::new(FrameHeldAtEnd { frame: AtomicU64::new(frame.start_address().as_u64()), seen: AtomicU64::new(0) });
        a.register_listener(l.clone());
        let _loaded = a.load();
        a.munmap(r.start(), pages * 4096).unwrap();
        assert_eq!(l.seen.load(Ordering::SeqCst), 1, "{pages}-page munmap: a frame was freed before the flush and invalidate_end");
    }
}

fn one_cpu_needs_no_shootdown() {
    let before = shootdown::stats();
    let a = AddressSpace::new().unwrap();
    let r = a.mmap(None, 16 * 4096, rw(), false).unwrap();
    a.copy_to_user(r.start(), &[1; 16 * 4096]).unwrap();
    assert!(a.cpus_loaded().is_empty(), "loaded nowhere yet");
    {
        let _loaded = a.load();
        assert_eq!(a.cpus_loaded(), kernel::cpus::CpuSet::single(kernel::cpus::this_cpu()));
        a.munmap(r.start(), 8 * 4096).unwrap();
    }
    assert!(a.cpus_loaded().is_empty(), "the CR3 load of another table drops it (no PCID)");
    a.munmap(r.start() + 8 * 4096, 8 * 4096).unwrap(); // not loaded anywhere: nothing to flush
    let after = shootdown::stats();
    assert_eq!((after.rounds, after.ipis), (before.rounds, before.ipis), "one CPU: no IPI");
    assert_eq!(after.local_flushes, before.local_flushes + 1, "one local flush: the munmap while loaded");
}
