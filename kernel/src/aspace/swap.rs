//! The swap store: 4 KiB slots on the swap disk (virtio-blk through VT-d,
//! see [`crate::platform::disk`]); slot *n* is disk page *n*, so capacity is
//! the disk's size.
//!
//! Slot reference counts (fork shares a swapped page by sharing its slot)
//! are `u16`s kept in frames, 2048 slots per frame: a chunk's frame is taken
//! from the frame allocator when its first slot is used and given back when
//! its last is freed, so an idle store holds no memory at all. The only heap
//! state is the chunk directory, sized once by the disk (16 bytes per 8 MiB
//! of disk), never by what processes do.
//!
//! Swap cache: a page swapped back in keeps its slot while it stays clean —
//! the slot is recorded in the frame's metadata ([`frames::swap_slot`]) — so
//! swapping it out again rewrites nothing; [`SwapStats::writes`] counts real
//! disk writes to prove it.
//!
//! Locking: the store's lock, then the disk's (I/O runs without the store's
//! lock). Errors are values: a full disk is [`SwapError::Full`], never a panic.

use crate::mm::direct;
use crate::mm::frames::{self, Frame, FrameFlags};
use crate::platform::disk::{self, DiskError};
use alloc::vec::Vec;
use core::fmt;
use spin::{Mutex, Once};
use x86_64::structures::paging::PhysFrame;

/// Slots per chunk (one frame of `u16` counts).
const PER_CHUNK: u64 = 2048;

/// Why swap could not take or give a page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwapError {
    /// Every slot is in use.
    Full,
    /// No frame for the slot map.
    NoMemory,
    /// No swap disk.
    NoDisk,
    /// A slot's reference count is at its maximum (65535 sharers).
    TooShared,
    Disk(DiskError),
}

impl From<DiskError> for SwapError {
    fn from(e: DiskError) -> Self {
        SwapError::Disk(e)
    }
}

impl fmt::Display for SwapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full => f.write_str("swap is full"),
            Self::NoMemory => f.write_str("no frame for the swap slot map"),
            Self::NoDisk => f.write_str("no swap disk"),
            Self::TooShared => f.write_str("a swap slot has too many sharers"),
            Self::Disk(e) => write!(f, "{e}"),
        }
    }
}

#[derive(Clone, Copy, Default)]
struct Chunk {
    /// The frame of counts, present while `used > 0`.
    counts: Option<PhysFrame>,
    used: u16,
    /// Where to start looking for a free slot (next-fit within the chunk).
    hint: u16,
}

struct Store {
    chunks: Vec<Chunk>,
    /// One counts frame kept in reserve: swap-out runs when frames are
    /// scarce, and must not need a fresh frame to start a chunk then.
    spare: Option<PhysFrame>,
    capacity: u64,
    in_use: u64,
    /// Next-fit: the chunk to look in first.
    cursor: usize,
    writes: u64,
    reads: u64,
}

/// The machine's swap store.
pub struct SwapStore {
    inner: Once<Mutex<Store>>,
}

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SwapStats {
    /// Slots referenced by page tables or the swap cache.
    pub slots_in_use: u64,
    /// Slots the disk has room for (0 without a disk).
    pub capacity: u64,
    /// Frames holding slot counts (the reserve frame included).
    pub map_frames: u64,
    pub writes: u64,
    pub reads: u64,
}

fn counts<'a>(f: PhysFrame) -> &'a mut [u16; PER_CHUNK as usize] {
    // SAFETY: a counts frame belongs to one chunk of the store, which is only
    // reached under the store's lock; the direct map covers it; any bit
    // pattern is a valid `u16` array.
    unsafe { &mut *direct::phys_to_virt(f.start_address()).as_mut_ptr::<[u16; PER_CHUNK as usize]>() }
}

/// A zeroed frame for slot counts, owned by the store.
fn new_counts_frame() -> Result<PhysFrame, SwapError> {
    let f = frames::alloc_zeroed().map_err(|_| SwapError::NoMemory)?;
    f.set_flags(FrameFlags::PAGE_TABLE);
    Ok(f.into_raw())
}

impl Store {
    fn take(&mut self) -> Result<u64, SwapError> {
        if self.in_use >= self.capacity {
            return Err(SwapError::Full);
        }
        let n = self.chunks.len();
        for k in 0..n {
            let c = (self.cursor + k) % n;
            let size = (self.capacity - c as u64 * PER_CHUNK).min(PER_CHUNK);
            let chunk = &mut self.chunks[c];
            if chunk.used as u64 >= size {
                continue;
            }
            let f = match chunk.counts {
                Some(f) => f,
                None => {
                    let f = match self.spare.take() {
                        Some(f) => f,
                        None => new_counts_frame()?,
                    };
                    let chunk = &mut self.chunks[c];
                    chunk.counts = Some(f);
                    // Refill the reserve while frames may still be had.
                    self.spare = new_counts_frame().ok();
                    f
                }
            };
            let chunk = &mut self.chunks[c];
            let cs = &mut counts(f)[..size as usize];
            let h = chunk.hint as usize % cs.len();
            let i = (h..cs.len()).chain(0..h).find(|&i| cs[i] == 0).expect("a chunk with room has a free slot");
            cs[i] = 1;
            chunk.hint = (i + 1) as u16 % PER_CHUNK as u16;
            chunk.used += 1;
            self.in_use += 1;
            self.cursor = c;
            return Ok(c as u64 * PER_CHUNK + i as u64);
        }
        Err(SwapError::Full)
    }

    fn count(&mut self, slot: u64) -> &mut u16 {
        let chunk = &self.chunks[(slot / PER_CHUNK) as usize];
        let f = chunk.counts.expect("a live slot's chunk has its counts");
        &mut counts(f)[(slot % PER_CHUNK) as usize]
    }

    fn release(&mut self, slot: u64) {
        let c = self.count(slot);
        assert!(*c > 0, "swap slot {slot} released with no references");
        *c -= 1;
        if *c == 0 {
            self.in_use -= 1;
            let chunk = &mut self.chunks[(slot / PER_CHUNK) as usize];
            chunk.used -= 1;
            if chunk.used == 0 {
                let f = chunk.counts.take().expect("counts");
                if self.spare.is_none() {
                    self.spare = Some(f); // all zero again: every count fell to 0
                } else {
                    // SAFETY: the chunk owned this frame's only reference.
                    drop(unsafe { Frame::from_raw(f) });
                }
            }
        }
    }
}

impl SwapStore {
    const fn new() -> Self {
        SwapStore { inner: Once::new() }
    }

    fn store(&self) -> &Mutex<Store> {
        self.inner.call_once(|| {
            let mut capacity = disk::disk().map(|d| d.lock().pages()).unwrap_or(0);
            let mut chunks = Vec::new();
            if chunks.try_reserve_exact(capacity.div_ceil(PER_CHUNK) as usize).is_err() {
                log::error!("swap: no memory for the slot directory of {capacity} slots; swap disabled");
                capacity = 0;
            }
            chunks.resize(capacity.div_ceil(PER_CHUNK) as usize, Chunk::default());
            Mutex::new(Store { chunks, spare: if capacity > 0 { new_counts_frame().ok() } else { None }, capacity, in_use: 0, cursor: 0, writes: 0, reads: 0 })
        })
    }

    /// Write `frame` to a new slot with one reference.
    pub fn write_new(&self, frame: PhysFrame) -> Result<u64, SwapError> {
        let mut slot = [0u64];
        match self.write_batch(&[frame], &mut slot) {
            (1, _) => Ok(slot[0]),
            (_, e) => Err(e.unwrap_or(SwapError::NoDisk)),
        }
    }

    /// Write `frames` to new slots (one reference each), stored in the
    /// same positions of `slots`; the disk has several requests in flight.
    /// Returns how many were written — always a prefix — and the error
    /// that stopped the rest (their slots are not taken).
    pub fn write_batch(&self, frames: &[PhysFrame], slots: &mut [u64]) -> (usize, Option<SwapError>) {
        let Ok(d) = disk::disk() else { return (0, Some(SwapError::NoDisk)) };
        let mut done = 0;
        for group in frames.chunks(disk::IN_FLIGHT) {
            let mut items = [(0u64, group[0]); disk::IN_FLIGHT];
            let mut k = 0;
            let mut stop = None;
            {
                let mut s = self.store().lock();
                for &f in group {
                    match s.take() {
                        Ok(slot) => {
                            items[k] = (slot, f);
                            k += 1;
                        }
                        Err(e) => {
                            stop = Some(e);
                            break;
                        }
                    }
                }
            }
            if k > 0 {
                let r = d.lock().write_pages(&items[..k]);
                if let Err(e) = r {
                    for &(slot, _) in &items[..k] {
                        self.release(slot);
                    }
                    return (done, Some(e.into()));
                }
                self.store().lock().writes += k as u64;
                for (i, &(slot, _)) in items[..k].iter().enumerate() {
                    slots[done + i] = slot;
                }
                done += k;
            }
            if stop.is_some() {
                return (done, stop);
            }
        }
        (done, None)
    }

    /// Bring the store (and the swap disk) up now rather than on first use,
    /// so later counts of free frames do not include the bring-up.
    pub fn init(&self) -> SwapStats {
        self.stats()
    }

    /// Fill `frame` from slot `slot`.
    pub fn read(&self, slot: u64, frame: PhysFrame) -> Result<(), SwapError> {
        let d = disk::disk().map_err(|_| SwapError::NoDisk)?;
        d.lock().read_page(slot, frame)?;
        self.store().lock().reads += 1;
        Ok(())
    }

    /// Another reference to `slot` (refused at 65535).
    pub fn share(&self, slot: u64) -> Result<(), SwapError> {
        let mut s = self.store().lock();
        let c = s.count(slot);
        *c = c.checked_add(1).ok_or(SwapError::TooShared)?;
        Ok(())
    }

    /// Drop a reference; the slot is freed with the last one.
    pub fn release(&self, slot: u64) {
        self.store().lock().release(slot)
    }

    /// Whether every slot is in use (only swap-cache hits can evict then).
    pub fn is_full(&self) -> bool {
        let s = self.store().lock();
        s.in_use >= s.capacity
    }

    pub fn stats(&self) -> SwapStats {
        let s = self.store().lock();
        SwapStats {
            slots_in_use: s.in_use,
            capacity: s.capacity,
            map_frames: s.chunks.iter().filter(|c| c.counts.is_some()).count() as u64 + s.spare.is_some() as u64,
            writes: s.writes,
            reads: s.reads,
        }
    }
}

/// The one swap store.
pub static SWAP: SwapStore = SwapStore::new();
