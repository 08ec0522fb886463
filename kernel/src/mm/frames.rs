//! The physical frame allocator: a bitmap over all of RAM, plus per-frame
//! metadata (a reference count and flags) for sharing frames copy-on-write.
//!
//! Built once from the boot memory map ([`init`]). A frame is handed out
//! only if the memory map calls it usable and it is not in a reserved
//! range: the first MiB (firmware), the kernel image, and whatever the early
//! bump allocator already used. Allocation is next-fit over 64-bit words, so
//! finding a free frame skips 64 used frames at a time.
//!
//! Ownership: [`alloc()`] returns a [`Frame`], which holds one reference. Drop
//! releases it; the frame returns to the bitmap when the last reference goes.
//! [`Frame::share`] takes another reference (COW). A page-table entry that
//! maps a frame holds a reference too: [`Frame::into_raw`] moves the
//! reference into the entry and [`Frame::from_raw`] takes it back.
//!
//! Locking: one spin lock around the bitmap; reference counts are atomics
//! outside it. Interrupt handlers must not allocate.

use super::direct;
use super::early::EarlyFrames;
use core::fmt;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use pvh::{BootInfo, MemoryKind};
use spin::{Mutex, Once};
use x86_64::structures::paging::{FrameAllocator, FrameDeallocator, PhysFrame, Size4KiB};
use x86_64::PhysAddr;

bitflags::bitflags! {
    /// What a frame is used for (kept for diagnostics and for COW).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct FrameFlags: u32 {
        /// Holds a page table.
        const PAGE_TABLE = 1 << 0;
        /// Backs process (user) memory.
        const USER = 1 << 1;
    }
}

/// Per-frame metadata, one per physical frame.
#[repr(C)]
struct FrameMeta {
    refcount: AtomicU32,
    flags: AtomicU32,
    /// Swap cache: 1 + the swap slot that still holds this (clean) page's
    /// contents, 0 for none. The slot reference belongs to the cache; the
    /// address-space code releases it when the page is dirtied or the
    /// frame's last reference goes.
    swap: AtomicU64,
}

/// No free frame is left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfFrames;

impl fmt::Display for OutOfFrames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("out of physical memory: no free frame")
    }
}

/// Counts, for the boot log and for leak checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameStats {
    /// Frames the allocator manages (usable and not reserved at boot).
    pub managed: usize,
    /// Of those, free now.
    pub free: usize,
}

struct Bitmap {
    /// Bit set = frame in use (or never usable).
    words: &'static mut [u64],
    cursor: usize,
    stats: FrameStats,
}

static BITMAP: Mutex<Option<Bitmap>> = Mutex::new(None);
static META: Once<&'static [FrameMeta]> = Once::new();

fn meta(frame: PhysFrame) -> &'static FrameMeta {
    let metas = META.get().expect("frame allocator not initialised");
    &metas[(frame.start_address().as_u64() / 4096) as usize]
}

/// Build the allocator. `reserved` ranges `[start, end)` are never handed out
/// (the kernel image, for one); the early allocator's used range is reserved
/// here too, including the metadata this function takes from it.
pub fn init(info: &BootInfo, early: &mut EarlyFrames, reserved: &[(PhysAddr, PhysAddr)]) {
    let top = info.top_of_ram().min(super::DIRECT_MAP_MAX);
    let nframes = (top / 4096) as usize;
    let words = nframes.div_ceil(64);
    let bitmap_bytes = (words * 8) as u64;
    let meta_bytes = (nframes * core::mem::size_of::<FrameMeta>()) as u64;
    let storage = early
        .alloc_contiguous((bitmap_bytes + meta_bytes).div_ceil(4096))
        .expect("no room for the frame allocator's metadata");
    let bitmap_ptr = direct::phys_to_virt(storage).as_mut_ptr::<u64>();
    let meta_ptr = direct::phys_to_virt(storage + bitmap_bytes).as_mut_ptr::<FrameMeta>();
    // SAFETY: `storage` is fresh, zeroed, contiguous RAM from the early
    // allocator, reserved below, reachable through the direct map, and sized
    // for exactly these two arrays; all-zero is a valid bit pattern for both
    // (u64 and a pair of atomics). Nothing else will ever refer to it.
    let (words, metas) = unsafe {
        (core::slice::from_raw_parts_mut(bitmap_ptr, words), core::slice::from_raw_parts(meta_ptr, nframes))
    };
    words.fill(!0);
    let mut map = Bitmap { words, cursor: 0, stats: FrameStats { managed: 0, free: 0 } };
    let (early_start, early_end) = early.used();
    let is_reserved = |f: u64| {
        let a = f * 4096;
        a < (1 << 20)
            || (early_start.as_u64()..early_end.as_u64()).contains(&a)
            || reserved.iter().any(|(s, e)| (s.as_u64()..e.as_u64()).contains(&a))
    };
    for r in info.memory_map().iter().filter(|r| r.kind == MemoryKind::Usable) {
        let first = r.start.as_u64().div_ceil(4096);
        let last = (r.end().min(top)) / 4096;
        for f in first..last {
            if !is_reserved(f) {
                map.words[(f / 64) as usize] &= !(1 << (f % 64));
                map.stats.managed += 1;
                map.stats.free += 1;
            }
        }
    }
    META.call_once(|| metas);
    *BITMAP.lock() = Some(map);
}

fn alloc_raw() -> Result<PhysFrame, OutOfFrames> {
    let mut guard = BITMAP.lock();
    let map = guard.as_mut().expect("frame allocator not initialised");
    let n = map.words.len();
    for i in 0..n {
        let w = (map.cursor + i) % n;
        let word = map.words[w];
        if word != !0 {
            let bit = word.trailing_ones() as usize;
            map.words[w] |= 1 << bit;
            map.cursor = w;
            map.stats.free -= 1;
            let frame = PhysFrame::containing_address(PhysAddr::new(((w * 64 + bit) * 4096) as u64));
            let m = meta(frame);
            m.refcount.store(1, Ordering::Release);
            m.flags.store(0, Ordering::Release);
            debug_assert_eq!(m.swap.load(Ordering::Acquire), 0, "a freed frame kept a swap-cache slot");
            return Ok(frame);
        }
    }
    Err(OutOfFrames)
}

fn free_raw(frame: PhysFrame) {
    let f = (frame.start_address().as_u64() / 4096) as usize;
    let mut guard = BITMAP.lock();
    let map = guard.as_mut().expect("frame allocator not initialised");
    let (w, bit) = (f / 64, f % 64);
    assert!(map.words[w] & (1 << bit) != 0, "double free of frame {:#x}", frame.start_address().as_u64());
    map.words[w] &= !(1 << bit);
    map.stats.free += 1;
    // The next allocation looks here first: a recently freed frame is
    // reused soon (cache-warm, like Linux's per-CPU free lists), which also
    // makes a use-after-free through a stale TLB or IOTLB entry show up at
    // once in tests rather than after the allocator wraps around.
    map.cursor = w;
}

/// Frames handed back together: [`FreeBatch::release`] drops one
/// reference each, and frames whose last reference that was wait here and
/// return to the bitmap under one lock per [`FREE_BATCH`] (a bulk unmap
/// frees thousands: one lock round trip each would double its cost). The
/// rest go when the batch is dropped.
pub struct FreeBatch {
    /// The metadata array, looked up once per batch rather than per frame.
    metas: &'static [FrameMeta],
    /// Frame numbers.
    frames: [u64; FREE_BATCH],
    n: usize,
}

/// Frames a [`FreeBatch`] holds before it takes the bitmap lock.
pub const FREE_BATCH: usize = 32;

impl FreeBatch {
    pub fn new() -> Self {
        FreeBatch { metas: META.get().expect("frame allocator not initialised"), frames: [0; FREE_BATCH], n: 0 }
    }

    /// Drop `f`'s reference. If it was the last, the frame joins the
    /// batch and its swap-cache slot (see [`FrameMeta`]'s `swap`), if it
    /// had one, is returned: the caller owns that slot reference now.
    #[inline]
    #[must_use = "a returned swap-cache slot must be released"]
    pub fn release(&mut self, f: Frame) -> Option<u64> {
        let n = f.into_raw().start_address().as_u64() / 4096;
        let m = &self.metas[n as usize];
        let before = m.refcount.fetch_sub(1, Ordering::AcqRel);
        assert!(before > 0, "frame {:#x} released with no references", n * 4096);
        if before != 1 {
            return None;
        }
        // The last reference: nobody else reaches the metadata now.
        let slot = m.swap.swap(0, Ordering::AcqRel).checked_sub(1);
        if self.n == FREE_BATCH {
            self.flush();
        }
        self.frames[self.n] = n;
        self.n += 1;
        slot
    }

    /// Return the batched frames to the bitmap (one lock). Frames of one
    /// bitmap word (a bulk mapping's usually are) are cleared together.
    fn flush(&mut self) {
        let mut guard = BITMAP.lock();
        let map = guard.as_mut().expect("frame allocator not initialised");
        let (mut w, mut mask) = (self.frames[0] as usize / 64, 0u64);
        for &f in &self.frames[..self.n] {
            if f as usize / 64 != w {
                clear_bits(map, w, mask);
                (w, mask) = (f as usize / 64, 0);
            }
            let bit = 1 << (f % 64);
            assert!(mask & bit == 0, "double free of frame {:#x}", f * 4096);
            mask |= bit;
        }
        clear_bits(map, w, mask);
        // As in `free_raw`: the next allocation looks here first.
        map.cursor = w;
        self.n = 0;
    }
}

/// Mark the frames of `mask` in bitmap word `w` free (each must be in
/// use) and count them: the free count follows the bitmap, so a lost
/// frame shows in [`stats`].
fn clear_bits(map: &mut Bitmap, w: usize, mask: u64) {
    assert!(map.words[w] & mask == mask, "double free of a frame in {:#x}..{:#x}", w * 64 * 4096, (w + 1) * 64 * 4096);
    map.words[w] &= !mask;
    map.stats.free += mask.count_ones() as usize;
}

impl Default for FreeBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for FreeBatch {
    fn drop(&mut self) {
        if self.n > 0 {
            self.flush();
        }
    }
}

/// A reference to an allocated physical frame; the frame is freed when the
/// last reference is dropped.
#[must_use = "dropping a Frame frees it"]
pub struct Frame(PhysFrame);

impl Frame {
    /// The frame.
    pub fn frame(&self) -> PhysFrame {
        self.0
    }

    /// Its physical address.
    pub fn start_address(&self) -> PhysAddr {
        self.0.start_address()
    }

    /// Another reference to the same frame (copy-on-write sharing).
    pub fn share(&self) -> Frame {
        meta(self.0).refcount.fetch_add(1, Ordering::AcqRel);
        Frame(self.0)
    }

    /// Give up this handle without releasing the reference: it now belongs
    /// to whatever records the returned frame (a page-table entry).
    pub fn into_raw(self) -> PhysFrame {
        let f = self.0;
        core::mem::forget(self);
        f
    }

    /// Take back a reference given away by [`Frame::into_raw`].
    ///
    /// # Safety
    /// `frame` must carry a reference that nobody else will release.
    pub unsafe fn from_raw(frame: PhysFrame) -> Frame {
        Frame(frame)
    }

    /// Another reference to a frame known only by number (e.g. read from a
    /// page-table entry that keeps its own reference).
    ///
    /// # Safety
    /// `frame` must be allocated and stay so while this call runs (someone
    /// holds a reference).
    pub unsafe fn share_raw(frame: PhysFrame) -> Frame {
        meta(frame).refcount.fetch_add(1, Ordering::AcqRel);
        Frame(frame)
    }

    /// How many references this frame has.
    pub fn refcount(&self) -> u32 {
        refcount(self.0)
    }

    pub fn set_flags(&self, flags: FrameFlags) {
        meta(self.0).flags.store(flags.bits(), Ordering::Release);
    }
}

impl Drop for Frame {
    fn drop(&mut self) {
        let before = meta(self.0).refcount.fetch_sub(1, Ordering::AcqRel);
        assert!(before > 0, "frame {:#x} released with no references", self.0.start_address().as_u64());
        if before == 1 {
            free_raw(self.0);
        }
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Frame({:#x}, refs {})", self.0.start_address().as_u64(), self.refcount())
    }
}

/// A frame whose contents are unspecified.
pub fn alloc() -> Result<Frame, OutOfFrames> {
    alloc_raw().map(Frame)
}

/// A zero-filled frame.
pub fn alloc_zeroed() -> Result<Frame, OutOfFrames> {
    let f = alloc()?;
    // SAFETY: freshly allocated, owned only by `f`.
    unsafe { direct::zero_frame(f.frame()) };
    Ok(f)
}

/// The one shared zero frame, and the reference that keeps it alive.
static ZERO: Once<Frame> = Once::new();

/// The shared zero frame: mapped read-only wherever never-written
/// anonymous memory is read. Mappings take references like any frame; one
/// reference is held here forever, so it is never freed and never "the only
/// reference" — a write always copies it (COW), nobody writes it in place.
pub fn zero_frame() -> Result<Frame, OutOfFrames> {
    if let Some(z) = ZERO.get() {
        return Ok(z.share());
    }
    let f = alloc_zeroed()?;
    Ok(ZERO.call_once(|| f).share())
}

/// Whether `frame` is the shared zero frame.
pub fn is_zero_frame(frame: PhysFrame) -> bool {
    ZERO.get().is_some_and(|z| z.frame() == frame)
}

/// The reference count of any frame (0 = free).
pub fn refcount(frame: PhysFrame) -> u32 {
    meta(frame).refcount.load(Ordering::Acquire)
}

/// The flags of a frame.
pub fn flags(frame: PhysFrame) -> FrameFlags {
    FrameFlags::from_bits_truncate(meta(frame).flags.load(Ordering::Acquire))
}

/// The swap slot cached for `frame` (see [`FrameMeta`]'s `swap`).
pub fn swap_slot(frame: PhysFrame) -> Option<u64> {
    meta(frame).swap.load(Ordering::Acquire).checked_sub(1)
}

/// Record (or clear) the swap slot cached for `frame`; returns the old one,
/// whose reference the caller now owns.
pub fn set_swap_slot(frame: PhysFrame, slot: Option<u64>) -> Option<u64> {
    meta(frame).swap.swap(slot.map_or(0, |s| s + 1), Ordering::AcqRel).checked_sub(1)
}

/// Current counts.
pub fn stats() -> FrameStats {
    BITMAP.lock().as_ref().expect("frame allocator not initialised").stats
}

/// The allocator as the `x86_64` crate's page-table code wants it: frames it
/// takes for page tables are zeroed and owned by the table from then on.
pub struct PageTableFrames;

// SAFETY: frames come from the bitmap, each handed out once, zeroed.
unsafe impl FrameAllocator<Size4KiB> for PageTableFrames {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        let f = alloc_zeroed().ok()?;
        f.set_flags(FrameFlags::PAGE_TABLE);
        Some(f.into_raw())
    }
}

impl FrameDeallocator<Size4KiB> for PageTableFrames {
    unsafe fn deallocate_frame(&mut self, frame: PhysFrame<Size4KiB>) {
        // SAFETY: the page-table code returns a table frame it took from
        // `allocate_frame` above, whose single reference it held.
        drop(unsafe { Frame::from_raw(frame) });
    }
}
