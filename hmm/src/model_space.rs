//! The model's reference CPU side (`Space`), its table memory that can
//! run out (`LimitedMemory`) and a recording driver (`Driver`), for the
//! property test in `model.rs`.

extern crate std;
use crate::cpu::{CpuFaultError, CpuPage, MirroredSpace};
use crate::event::Event;
use crate::mirror::{Detached, DeviceDriver, DeviceId, MirrorId, Update};
use crate::model::TestMm;
use crate::pt::{HeapMemory, Node, TableMemory};
use crate::VaRange;
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::sync::Weak;
use alloc::vec::Vec;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicI64, Ordering};
use spin::Mutex;
use x86_64::PhysAddr;

pub(crate) const PAGES: u64 = 24;
/// Pages 0..8 and 8..24 sit in different leaf nodes (a 2 MiB boundary), so
/// a fault across page 8 may run out of table memory midway.
pub(crate) const BASE: u64 = 0x20_0000 - 8 * 4096;

pub(crate) fn va(p: u64) -> u64 {
    BASE + p * 4096
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Page {
    pub frame: u64,
    pub writable: bool,
    /// Shared copy-on-write after a fork.
    pub cow: bool,
    pub dirty: bool,
    /// The CPU entry is the non-present entry naming this device.
    pub excl: Option<DeviceId>,
}

#[derive(Default, Clone, PartialEq, Eq, Debug)]
pub(crate) struct State {
    /// Areas: page → writable.
    pub vma: BTreeMap<u64, bool>,
    pub resident: BTreeMap<u64, Page>,
    /// Swapped-out contents.
    pub swapped: BTreeMap<u64, u64>,
    /// Frame contents.
    pub memory: BTreeMap<u64, u64>,
    pub next_frame: u64,
}

type Hook = Box<dyn FnOnce() + Send>;

/// The reference CPU side.
pub(crate) struct Space {
    pub st: Mutex<State>,
    pub mm: Mutex<Weak<TestMm>>,
    /// Runs at the start of the next `fault_in` (a race injected there).
    pub hook: Mutex<Option<Hook>>,
}

impl Space {
    pub fn notify(&self, st: &mut State, r: VaRange, ev: Event, owner: Option<DeviceId>, change: impl FnOnce(&mut State)) {
        let mm = self.mm.lock().upgrade();
        if let Some(mm) = &mm {
            for d in mm.invalidate_start(r, ev, owner) {
                if let Some(p) = st.resident.get_mut(&((d - BASE) / 4096)) {
                    p.dirty = true;
                }
            }
        }
        change(st);
        if let Some(mm) = &mm {
            mm.invalidate_end(r, ev);
        }
    }

    pub fn new_frame(st: &mut State, data: u64) -> u64 {
        st.next_frame += 1;
        let f = st.next_frame;
        st.memory.insert(f, data);
        f
    }

    pub fn range(p: u64, n: u64) -> VaRange {
        VaRange::pages_from(va(p), n).unwrap()
    }

    /// A CPU access to a page a device holds exclusively: revoke (every
    /// device loses it) and restore the CPU entry.
    pub fn revoke(&self, st: &mut State, p: u64) {
        if st.resident.get(&p).is_some_and(|pg| pg.excl.is_some()) {
            self.notify(st, Self::range(p, 1), Event::Migrate, None, |st| {
                let w = st.vma.get(&p).copied().unwrap_or(false);
                let pg = st.resident.get_mut(&p).unwrap();
                pg.excl = None;
                pg.writable = w;
            });
        }
    }

    pub fn cpu_write(&self, p: u64, value: u64) {
        if self.st.lock().vma.get(&p) != Some(&true) {
            return; // not writable: the CPU's write would fault; nothing happens
        }
        let page = self.fault_in(va(p), true).unwrap();
        let mut st = self.st.lock();
        st.memory.insert(page.frame.as_u64() / 4096, value);
        st.resident.get_mut(&p).unwrap().dirty = true;
    }

    /// A CPU read: the value it sees, if the page is mapped.
    pub fn cpu_read(&self, p: u64) -> Option<u64> {
        self.st.lock().vma.get(&p)?;
        let page = self.fault_in(va(p), false).unwrap();
        Some(self.st.lock().memory[&(page.frame.as_u64() / 4096)])
    }
}

impl MirroredSpace for Space {
    fn walk(&self, addr: u64) -> Option<CpuPage> {
        let st = self.st.lock();
        let p = st.resident.get(&((addr - BASE) / 4096)).filter(|p| p.excl.is_none())?;
        Some(CpuPage { frame: PhysAddr::new(p.frame * 4096), writable: p.writable })
    }

    fn fault_in(&self, addr: u64, write: bool) -> Result<CpuPage, CpuFaultError> {
        let hook = self.hook.lock().take();
        if let Some(h) = hook {
            h();
        }
        if addr < BASE || addr >= va(PAGES) {
            return Err(CpuFaultError::NoVma);
        }
        let p = (addr - BASE) / 4096;
        let mut st = self.st.lock();
        let w = *st.vma.get(&p).ok_or(CpuFaultError::NoVma)?;
        if write && !w {
            return Err(CpuFaultError::Protection);
        }
        self.revoke(&mut st, p);
        if !st.resident.contains_key(&p) {
            let data = st.swapped.remove(&p).unwrap_or(0);
            let frame = Self::new_frame(&mut st, data);
            st.resident.insert(p, Page { frame, writable: w, cow: false, dirty: false, excl: None });
        }
        let page = st.resident[&p];
        if write && !page.writable {
            // COW break (or a write-protected page regaining write): the
            // device and CPU views of this page change.
            self.notify(&mut st, Self::range(p, 1), Event::Migrate, None, |st| {
                let page = st.resident[&p]; // as the invalidation left it
                let data = st.memory[&page.frame];
                let frame = if page.cow { Self::new_frame(st, data) } else { page.frame };
                st.resident.insert(p, Page { frame, writable: true, cow: false, ..page });
            });
        }
        let page = st.resident[&p];
        Ok(CpuPage { frame: PhysAddr::new(page.frame * 4096), writable: page.writable })
    }

    fn set_dirty(&self, addr: u64) {
        if let Some(p) = self.st.lock().resident.get_mut(&((addr - BASE) / 4096)) {
            p.dirty = true;
        }
    }

    fn extent(&self, addr: u64) -> Option<VaRange> {
        let st = self.st.lock();
        let p = (addr - BASE) / 4096;
        st.vma.get(&p)?;
        let (mut s, mut e) = (p, p + 1);
        while s > 0 && st.vma.contains_key(&(s - 1)) {
            s -= 1;
        }
        while st.vma.contains_key(&e) {
            e += 1;
        }
        Some(Self::range(s, e - s))
    }

    fn make_exclusive(&self, r: VaRange, owner: DeviceId) -> Result<Vec<CpuPage>, CpuFaultError> {
        let first = (r.start() - BASE) / 4096;
        let pages = first..first + r.pages();
        for p in pages.clone() {
            if self.st.lock().resident.get(&p).is_some_and(|pg| pg.excl == Some(owner)) {
                continue; // already ours
            }
            self.fault_in(va(p), true)?;
        }
        let mut st = self.st.lock();
        self.notify(&mut st, r, Event::Exclusive, Some(owner), |st| {
            for p in pages.clone() {
                st.resident.get_mut(&p).unwrap().excl = Some(owner);
            }
        });
        Ok(pages.map(|p| CpuPage { frame: PhysAddr::new(st.resident[&p].frame * 4096), writable: true }).collect())
    }
}

/// Heap table memory that can be told to run out.
#[derive(Default)]
pub(crate) struct LimitedMemory {
    pub heap: HeapMemory,
    /// Allocations left; negative: unlimited.
    pub budget: AtomicI64,
}

// SAFETY: forwards to `HeapMemory`, refusing allocations over budget.
unsafe impl TableMemory for LimitedMemory {
    fn alloc_table(&self) -> Option<PhysAddr> {
        if self.budget.load(Ordering::SeqCst) == 0 {
            return None;
        }
        if self.budget.load(Ordering::SeqCst) > 0 {
            self.budget.fetch_sub(1, Ordering::SeqCst);
        }
        self.heap.alloc_table()
    }
    unsafe fn free_table(&self, t: PhysAddr) {
        // SAFETY: forwarded contract.
        unsafe { self.heap.free_table(t) }
    }
    fn table(&self, t: PhysAddr) -> NonNull<Node> {
        self.heap.table(t)
    }
}

type UpdateHook = Box<dyn Fn(&Update) + Send + Sync>;

pub(crate) struct Driver {
    pub updates: Mutex<Vec<Update>>,
    /// Mirrors the driver said were detached.
    pub detached: Mutex<Vec<MirrorId>>,
    /// Called on every update (to observe ordering).
    pub on_update: Mutex<Option<UpdateHook>>,
}

impl DeviceDriver for Driver {
    fn update(&self, u: &Update) {
        if let Some(h) = &*self.on_update.lock() {
            h(u);
        }
        self.updates.lock().push(*u);
    }
    fn detach(&self, mirror: MirrorId) -> Option<Detached> {
        self.detached.lock().push(mirror);
        // SAFETY: a software device: it reaches the table only through
        // this driver, which forgets the mirror here.
        Some(unsafe { Detached::new(mirror) })
    }
}
