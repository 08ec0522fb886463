//! The swap store: RAM-backed 4 KiB slots with reference counts (fork
//! shares swapped pages by sharing slots).
//!
//! Swap cache: a page swapped back in keeps its slot while it stays clean
//! (the address space remembers it), so swapping it out again rewrites
//! nothing — [`SwapStats::writes`] counts real slot writes to prove it.

use alloc::boxed::Box;
use alloc::vec::Vec;
use spin::Mutex;

struct Slot {
    data: Box<[u8; 4096]>,
    refs: u32,
}

#[derive(Default)]
struct Store {
    slots: Vec<Option<Slot>>,
    free: Vec<u64>,
    writes: u64,
    reads: u64,
}

/// The machine's swap store.
pub struct SwapStore {
    inner: Mutex<Store>,
}

/// Counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SwapStats {
    pub slots_in_use: usize,
    pub writes: u64,
    pub reads: u64,
}

impl SwapStore {
    const fn new() -> Self {
        SwapStore { inner: Mutex::new(Store { slots: Vec::new(), free: Vec::new(), writes: 0, reads: 0 }) }
    }

    /// A new slot holding `data`, one reference.
    pub fn write_new(&self, data: &[u8; 4096]) -> u64 {
        let mut s = self.inner.lock();
        s.writes += 1;
        let slot = Slot { data: Box::new(*data), refs: 1 };
        match s.free.pop() {
            Some(i) => {
                s.slots[i as usize] = Some(slot);
                i
            }
            None => {
                s.slots.push(Some(slot));
                s.slots.len() as u64 - 1
            }
        }
    }

    /// Copy slot `i` out.
    pub fn read(&self, i: u64, out: &mut [u8; 4096]) {
        let mut s = self.inner.lock();
        s.reads += 1;
        out.copy_from_slice(&s.slots[i as usize].as_ref().expect("live slot").data[..]);
    }

    /// Another reference to slot `i`.
    pub fn share(&self, i: u64) {
        self.inner.lock().slots[i as usize].as_mut().expect("live slot").refs += 1;
    }

    /// Drop a reference; the slot is freed with the last one.
    pub fn release(&self, i: u64) {
        let mut s = self.inner.lock();
        let slot = s.slots[i as usize].as_mut().expect("live slot");
        slot.refs -= 1;
        if slot.refs == 0 {
            s.slots[i as usize] = None;
            s.free.push(i);
        }
    }

    pub fn stats(&self) -> SwapStats {
        let s = self.inner.lock();
        SwapStats { slots_in_use: s.slots.iter().filter(|x| x.is_some()).count(), writes: s.writes, reads: s.reads }
    }
}

/// The one swap store.
pub static SWAP: SwapStore = SwapStore::new();
