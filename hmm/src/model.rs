//! The property test: random sequences of CPU changes and device
//! faults/accesses against a plain model of the CPU side, with HMM's
//! invariants checked after every step:
//!
//! (a) no mirror entry grants more than the CPU mapping;
//! (b) no mirror entry remains for a range whose invalidation returned;
//! (c) no device write is lost: it is in the CPU page's data, and the page
//!     is dirty on the CPU side (or still marked dirty in the mirror);
//! (d) every entry points at the frame the CPU maps;
//! (e) an exclusive entry exists only while the CPU entry is the
//!     non-present "exclusive to that device" entry — the CPU lost access
//!     first — and then no other device holds the page at all;
//! (f) a device fault changes no CPU state but that of the pages it asked
//!     for (no allocation, COW break, swap-in, dirtying or revocation of a
//!     neighbour), and consumes at most one frame per page asked for;
//! (g) only pages something wrote (or a device may write: write faults,
//!     exclusive access) are dirty, on either side;
//! (h) the driver heard of every entry in its table (also after a commit
//!     that failed midway for lack of table memory);
//! (i) a mirror released while one of its faults runs ends with no entry
//!     and the fault fails.
//!
//! `HMM_SOAK=1 cargo test -p hmm` runs 50x as many sequences.

extern crate std;
use std::vec;
use crate::cpu::{CpuFaultError, CpuPage, MirroredSpace};
use crate::event::Event;
use crate::mirror::{Detached, Device, DeviceDriver, DeviceId, Mirror, MirrorId, Update};
use crate::mm::Mm;
use crate::pt::{HeapMemory, Leaf, Node, SoftLayout, TableMemory};
use crate::VaRange;
use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicI64, Ordering};
use proptest::prelude::*;
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

    fn new_frame(st: &mut State, data: u64) -> u64 {
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
    fn detach(&self, mirror: MirrorId) -> Detached {
        self.detached.lock().push(mirror);
        // SAFETY: a software device: it reaches the table only through
        // this driver, which forgets the mirror here.
        unsafe { Detached::new(mirror) }
    }
}

#[derive(Clone, Debug)]
pub(crate) enum Op {
    Map(u64, u64, bool),
    Unmap(u64, u64),
    Protect(u64, u64),
    Fork,
    Migrate(u64),
    SwapOut(u64),
    CpuWrite(u64, u64),
    CpuRead(u64),
    /// Mirror, first page, pages, write.
    DevFault(usize, u64, u64, bool),
    DevWrite(usize, u64, u64),
    DevRead(usize, u64),
    Exclusive(usize, u64),
    /// The mirror is released during its own fault's CPU-side work.
    ReleaseDuringFault(usize, u64, bool),
    /// The next operation gets only this many table nodes.
    Starve(i64),
}

fn op() -> impl Strategy<Value = Op> {
    let p = 0..PAGES;
    prop_oneof![
        (p.clone(), 1u64..8, any::<bool>()).prop_map(|(p, n, w)| Op::Map(p, n, w)),
        (p.clone(), 1u64..6).prop_map(|(p, n)| Op::Unmap(p, n)),
        (p.clone(), 1u64..6).prop_map(|(p, n)| Op::Protect(p, n)),
        Just(Op::Fork),
        p.clone().prop_map(Op::Migrate),
        p.clone().prop_map(Op::SwapOut),
        (p.clone(), 1u64..1000).prop_map(|(p, v)| Op::CpuWrite(p, v)),
        p.clone().prop_map(Op::CpuRead),
        (0usize..2, p.clone(), 1u64..4, any::<bool>()).prop_map(|(m, p, n, w)| Op::DevFault(m, p, n, w)),
        (0usize..2, p.clone(), 1000u64..2000).prop_map(|(m, p, v)| Op::DevWrite(m, p, v)),
        (0usize..2, p.clone()).prop_map(|(m, p)| Op::DevRead(m, p)),
        (0usize..2, p.clone()).prop_map(|(m, p)| Op::Exclusive(m, p)),
        (0usize..2, p, any::<bool>()).prop_map(|(m, p, w)| Op::ReleaseDuringFault(m, p, w)),
        (0i64..3).prop_map(Op::Starve),
    ]
}

pub(crate) type TestMm = Mm<SoftLayout, Arc<LimitedMemory>, Space>;
pub(crate) type TestMirror = Mirror<SoftLayout, Arc<LimitedMemory>>;

pub(crate) struct World {
    pub space: Arc<Space>,
    pub mm: Arc<TestMm>,
    pub mem: Arc<LimitedMemory>,
    pub devices: Vec<(Arc<Device>, Arc<Driver>)>,
    pub mirrors: Vec<Arc<TestMirror>>,
    /// The last value written to each page, by anyone.
    truth: BTreeMap<u64, u64>,
    /// Pages a device wrote (their dirtiness must reach the CPU).
    dev_written: BTreeSet<u64>,
    /// Pages that may be dirty: written, or given to a device for writing.
    may_dirty: BTreeSet<u64>,
    /// Per mirror: the entries its device was told about (h).
    known: Vec<BTreeMap<u64, Leaf>>,
}

impl World {
    pub fn new(prefault: u64) -> World {
        let space = Arc::new(Space { st: Mutex::new(State::default()), mm: Mutex::new(Weak::new()), hook: Mutex::new(None) });
        let mm = TestMm::new(Arc::downgrade(&space));
        mm.set_prefault(prefault);
        *space.mm.lock() = Arc::downgrade(&mm);
        let mem = Arc::new(LimitedMemory { heap: HeapMemory::new(), budget: AtomicI64::new(-1) });
        let devices: Vec<_> = (0..2)
            .map(|_| {
                let driver = Arc::new(Driver { updates: Mutex::new(Vec::new()), detached: Mutex::new(Vec::new()), on_update: Mutex::new(None) });
                (Device::register(driver.clone()), driver)
            })
            .collect();
        let mirrors = devices.iter().map(|(d, _)| mm.mirror(d, mem.clone()).unwrap()).collect();
        World { space, mm, mem, devices, mirrors, truth: BTreeMap::new(), dev_written: BTreeSet::new(), may_dirty: BTreeSet::new(), known: vec_of_empty(2) }
    }

    pub fn apply(&mut self, op: &Op) {
        let sp = self.space.clone();
        match *op {
            Op::Map(p, n, w) => {
                let mut st = sp.st.lock();
                for q in p..(p + n).min(PAGES) {
                    st.vma.entry(q).or_insert(w);
                }
            }
            Op::Unmap(p, n) => {
                let n = n.min(PAGES - p);
                let mut st = sp.st.lock();
                sp.notify(&mut st, Space::range(p, n), Event::Munmap, None, |st| {
                    for q in p..p + n {
                        st.vma.remove(&q);
                        st.resident.remove(&q);
                        st.swapped.remove(&q);
                    }
                });
                for q in p..p + n {
                    self.truth.remove(&q);
                    self.dev_written.remove(&q);
                    self.may_dirty.remove(&q);
                }
            }
            Op::Protect(p, n) => {
                let n = n.min(PAGES - p);
                let mut st = sp.st.lock();
                sp.notify(&mut st, Space::range(p, n), Event::WriteProtect, None, |st| {
                    for q in p..p + n {
                        if let Some(w) = st.vma.get_mut(&q) {
                            *w = false;
                        }
                        if let Some(pg) = st.resident.get_mut(&q) {
                            pg.writable = false;
                        }
                    }
                });
            }
            Op::Fork => {
                let mut st = sp.st.lock();
                // Exclusive pages are revoked first.
                for p in 0..PAGES {
                    sp.revoke(&mut st, p);
                }
                sp.notify(&mut st, Space::range(0, PAGES), Event::Fork, None, |st| {
                    for pg in st.resident.values_mut() {
                        pg.writable = false;
                        pg.cow = true;
                    }
                });
            }
            Op::Migrate(p) => {
                let mut st = sp.st.lock();
                if st.resident.contains_key(&p) {
                    sp.revoke(&mut st, p);
                    sp.notify(&mut st, Space::range(p, 1), Event::Migrate, None, |st| {
                        // Read the page inside the change: the invalidation
                        // may just have marked it dirty.
                        let pg = st.resident[&p];
                        let data = st.memory[&pg.frame];
                        let frame = Space::new_frame(st, data);
                        st.resident.insert(p, Page { frame, ..pg });
                    });
                }
            }
            Op::SwapOut(p) => {
                let mut st = sp.st.lock();
                if st.resident.contains_key(&p) {
                    sp.revoke(&mut st, p);
                    sp.notify(&mut st, Space::range(p, 1), Event::Migrate, None, |st| {
                        let pg = st.resident.remove(&p).unwrap();
                        let data = st.memory[&pg.frame];
                        st.swapped.insert(p, data);
                    });
                    // The page's contents (device writes included) are now in
                    // swap; swapped back in it is clean. The data check (c)
                    // still follows the write.
                    self.dev_written.remove(&p);
                }
            }
            Op::CpuWrite(p, v) => {
                let writable = sp.st.lock().vma.get(&p) == Some(&true);
                sp.cpu_write(p, v);
                if writable {
                    self.truth.insert(p, v);
                    self.may_dirty.insert(p);
                }
            }
            Op::CpuRead(p) => {
                if let Some(seen) = sp.cpu_read(p) {
                    assert_eq!(seen, self.truth.get(&p).copied().unwrap_or(0), "CPU read of page {p} sees the current data");
                }
            }
            Op::DevFault(m, p, n, w) => {
                let n = n.min(PAGES - p);
                let before = sp.st.lock().clone();
                let res = self.mirrors[m].fault(va(p), n, w);
                let after = sp.st.lock().clone();
                self.check_only_asked_pages_changed(&before, &after, p..p + n);
                // Out of table memory midway, the pages written before the
                // failure stay committed (and dirty): see fault.rs, "Commit".
                if w && (res.is_ok() || res.is_err_and(|e| e.kind == crate::mm::DeviceFaultKind::NoTableMemory)) {
                    self.may_dirty.extend(p..p + n);
                }
            }
            Op::DevWrite(m, p, v) => {
                // The device writes only through a valid, writable entry.
                if let Some(l) = self.mirrors[m].get(va(p)).filter(|l| l.write) {
                    sp.st.lock().memory.insert(l.addr.as_u64() / 4096, v);
                    self.mirrors[m].set_dirty(va(p));
                    self.truth.insert(p, v);
                    self.dev_written.insert(p);
                    self.may_dirty.insert(p);
                }
            }
            Op::DevRead(m, p) => {
                if let Some(l) = self.mirrors[m].get(va(p)) {
                    let seen = sp.st.lock().memory[&(l.addr.as_u64() / 4096)];
                    assert_eq!(seen, self.truth.get(&p).copied().unwrap_or(0), "device read of page {p} sees the current data");
                }
            }
            Op::Exclusive(m, p) => {
                if self.mirrors[m].take_exclusive(Space::range(p, 1)).is_ok() {
                    self.may_dirty.insert(p);
                }
            }
            Op::ReleaseDuringFault(m, p, w) => self.release_during_fault(m, p, w),
            Op::Starve(n) => self.mem.budget.store(n, Ordering::SeqCst),
        }
        if !matches!(op, Op::Starve(_)) {
            self.mem.budget.store(-1, Ordering::SeqCst);
        }
        self.learn_updates();
    }

    /// (i): release mirror `m` from inside its own fault; then replace it.
    fn release_during_fault(&mut self, m: usize, p: u64, w: bool) {
        let (mm, victim) = (self.mm.clone(), self.mirrors[m].clone());
        *self.space.hook.lock() = Some(Box::new(move || mm.unmirror(&victim)));
        let res = self.mirrors[m].fault(va(p), 1, w);
        if let Some(h) = self.space.hook.lock().take() {
            h(); // the fault never reached the CPU side: release now
        }
        let old = self.mirrors[m].clone();
        assert!(res.is_err(), "(i) a fault whose mirror was released meanwhile must fail: {res:?}");
        assert!(!old.is_alive());
        assert!(old.entries(Space::range(0, PAGES)).is_empty(), "(i) a released mirror has no entries");
        let (dev, driver) = &self.devices[m];
        let released = driver.updates.lock().iter().any(|u| u.mirror == old.id() && u.event == Event::Release);
        assert!(released, "(i) RELEASE reached the driver");
        self.mem.budget.store(-1, Ordering::SeqCst);
        self.mirrors[m] = self.mm.mirror(dev, self.mem.clone()).unwrap();
        let old_id = old.id();
        drop(old);
        assert!(driver.detached.lock().contains(&old_id), "the table was dropped only after the driver detached the device");
        driver.updates.lock().retain(|u| u.mirror != old_id);
        self.known[m].clear();
    }

    /// (h): follow the driver updates: faults tell the device to read the
    /// entries of their range; invalidations make it drop/downgrade them.
    fn learn_updates(&mut self) {
        for (i, (_, driver)) in self.devices.iter().enumerate() {
            let m = &self.mirrors[i];
            for u in core::mem::take(&mut *driver.updates.lock()) {
                if u.mirror != m.id() {
                    continue;
                }
                let known = &mut self.known[i];
                match u.event {
                    Event::DeviceRfault | Event::DeviceWfault => {
                        known.retain(|va, _| !u.range.contains(*va));
                        known.extend(m.entries(u.range));
                    }
                    _ if !u.mask.valid => known.retain(|va, _| !u.range.contains(*va)),
                    _ => {
                        for (va, l) in known.iter_mut() {
                            if u.range.contains(*va) {
                                l.write &= u.mask.write;
                                l.exclusive &= u.mask.write;
                            }
                        }
                    }
                }
            }
        }
    }

    /// (f): only the pages asked for changed on the CPU side, and at most
    /// one new frame each.
    fn check_only_asked_pages_changed(&self, before: &State, after: &State, asked: core::ops::Range<u64>) {
        for q in (0..PAGES).filter(|q| !asked.contains(q)) {
            assert_eq!(before.resident.get(&q), after.resident.get(&q), "(f) a device fault changed neighbour page {q}'s CPU entry");
            assert_eq!(before.swapped.get(&q), after.swapped.get(&q), "(f) a device fault swapped neighbour page {q} in");
        }
        assert!(after.next_frame - before.next_frame <= asked.end - asked.start, "(f) a device fault consumed more frames than pages asked for");
    }

    pub fn check(&mut self) {
        self.learn_updates();
        let st = self.space.st.lock();
        for (i, m) in self.mirrors.iter().enumerate() {
            let entries = m.entries(Space::range(0, PAGES));
            for &(addr, l) in &entries {
                let p = (addr - BASE) / 4096;
                let cpu = st.resident.get(&p).unwrap_or_else(|| panic!("(b) entry for page {p} survives a CPU change that removed it"));
                assert_eq!(l.addr.as_u64() / 4096, cpu.frame, "(d) entry for page {p} points at the CPU's frame");
                assert!(!l.write || cpu.writable || cpu.excl == Some(m.device()), "(a) entry for page {p} grants write the CPU does not have");
                assert!(!l.exclusive || cpu.excl == Some(m.device()), "(e) exclusive entry for page {p} while the CPU still has access");
                if let Some(owner) = cpu.excl {
                    assert!(owner == m.device(), "(e) page {p} is exclusive to another device, yet mirrored here");
                }
                assert!(!l.dirty || self.may_dirty.contains(&p), "(g) entry for page {p} is dirty though nothing wrote it");
                let told = self.known[i].get(&addr).map(|k| (k.addr, k.write, k.exclusive));
                assert_eq!(told, Some((l.addr, l.write, l.exclusive)), "(h) the driver was not told about the entry for page {p}");
            }
        }
        for (&p, pg) in &st.resident {
            assert!(!pg.dirty || self.may_dirty.contains(&p), "(g) CPU page {p} is dirty though nothing wrote it");
        }
        for (&p, &v) in &self.truth {
            let data = match st.resident.get(&p) {
                Some(pg) => st.memory[&pg.frame],
                None => st.swapped.get(&p).copied().unwrap_or(0),
            };
            assert_eq!(data, v, "(c) the last write to page {p} is in memory");
        }
        for &p in &self.dev_written {
            if let Some(pg) = st.resident.get(&p) {
                let in_mirror = self.mirrors.iter().any(|m| m.get(va(p)).is_some_and(|l| l.dirty));
                assert!(pg.dirty || in_mirror, "(c) page {p} written by a device is dirty on the CPU side");
            }
        }
    }
}

fn vec_of_empty(n: usize) -> Vec<BTreeMap<u64, Leaf>> {
    (0..n).map(|_| BTreeMap::new()).collect()
}

fn cases() -> u32 {
    if std::env::var("HMM_SOAK").is_ok() { 100_000 } else { 2_000 }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]
    #[test]
    fn hmm_invariants_hold(ops in proptest::collection::vec(op(), 1..40), prefault in prop_oneof![Just(1u64), Just(4), Just(16)]) {
        let mut w = World::new(prefault);
        for o in &ops {
            w.apply(o);
            w.check();
        }
    }
}
