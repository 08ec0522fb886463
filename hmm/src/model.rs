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
use crate::event::Event;
use crate::mirror::{Device, Mirror};
use crate::mm::Mm;
use crate::pt::{HeapMemory, Leaf, SoftLayout};
use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicI64, Ordering};
use proptest::prelude::*;
use spin::Mutex;

pub(crate) use crate::model_space::{va, Driver, LimitedMemory, Page, Space, State, BASE, PAGES};

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
    /// Mirror, first page, pages.
    Exclusive(usize, u64, u64),
    /// The mirror is released during its own fault's CPU-side work.
    ReleaseDuringFault(usize, u64, bool),
    /// The next operation gets only this many table nodes.
    Starve(i64),
    /// A device fault across the 2 MiB boundary at page 8 with only this
    /// many table nodes: commits may fail midway.
    StarvedFault(usize, u64, u64, bool, i64),
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
        (0usize..MIRRORS, p.clone(), 1u64..4, any::<bool>()).prop_map(|(m, p, n, w)| Op::DevFault(m, p, n, w)),
        (0usize..MIRRORS, p.clone(), 1000u64..2000).prop_map(|(m, p, v)| Op::DevWrite(m, p, v)),
        (0usize..MIRRORS, p.clone()).prop_map(|(m, p)| Op::DevRead(m, p)),
        (0usize..MIRRORS, p.clone(), 1u64..4).prop_map(|(m, p, n)| Op::Exclusive(m, p, n)),
        (0usize..MIRRORS, p, any::<bool>()).prop_map(|(m, p, w)| Op::ReleaseDuringFault(m, p, w)),
        (0i64..3).prop_map(Op::Starve),
        (0usize..MIRRORS, 4u64..8, 2u64..6, any::<bool>(), 0i64..2).prop_map(|(m, p, n, w, b)| Op::StarvedFault(m, p, n, w, b)),
    ]
}

/// Mirrors in the model: devices 0 and 1 read-write, and a second, read-only
/// mirror on device 0 (several mirrors with different permissions on one
/// device: none may ever grant more than its own permission).
pub(crate) const MIRRORS: usize = 3;
const MIRROR_DEVICE: [usize; MIRRORS] = [0, 1, 0];
const MIRROR_ACCESS: [crate::MirrorAccess; MIRRORS] = [crate::MirrorAccess::ReadWrite, crate::MirrorAccess::ReadWrite, crate::MirrorAccess::ReadOnly];

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
        let mirrors = (0..MIRRORS).map(|i| mm.mirror_with(&devices[MIRROR_DEVICE[i]].0, mem.clone(), MIRROR_ACCESS[i]).unwrap()).collect();
        World { space, mm, mem, devices, mirrors, truth: BTreeMap::new(), dev_written: BTreeSet::new(), may_dirty: BTreeSet::new(), known: vec_of_empty(MIRRORS) }
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
            Op::Exclusive(m, p, n) => {
                let n = n.min(PAGES - p);
                // Also a commit that failed midway keeps (dirty) what it wrote.
                let res = self.mirrors[m].take_exclusive(Space::range(p, n));
                if res.map_or_else(|e| e.kind == crate::DeviceFaultKind::NoTableMemory, |_| true) {
                    self.may_dirty.extend(p..p + n);
                }
            }
            Op::ReleaseDuringFault(m, p, w) => self.release_during_fault(m, p, w),
            Op::Starve(n) => self.mem.budget.store(n, Ordering::SeqCst),
            Op::StarvedFault(m, p, n, w, budget) => {
                // Pages mapped, an entry below the boundary (its table node
                // exists), none above: the commit fails where it crosses.
                self.apply(&Op::Map(0, 16, true));
                self.apply(&Op::DevFault(m, p - 1, 1, false));
                self.apply(&Op::Unmap(8, 1));
                self.apply(&Op::Map(8, 1, true));
                self.mem.budget.store(budget, Ordering::SeqCst);
                self.apply(&Op::DevFault(m, p, n, w));
            }
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
        let (dev, driver) = &self.devices[MIRROR_DEVICE[m]];
        let released = driver.updates.lock().iter().any(|u| u.mirror == old.id() && u.event == Event::Release);
        assert!(released, "(i) RELEASE reached the driver");
        self.mem.budget.store(-1, Ordering::SeqCst);
        self.mirrors[m] = self.mm.mirror_with(dev, self.mem.clone(), MIRROR_ACCESS[m]).unwrap();
        let old_id = old.id();
        drop(old);
        assert!(driver.detached.lock().contains(&old_id), "the table was dropped only after the driver detached the device");
        driver.updates.lock().retain(|u| u.mirror != old_id);
        self.known[m].clear();
    }

    /// (h): follow the driver updates: faults tell the device to read the
    /// entries of their range; invalidations make it drop/downgrade them.
    fn learn_updates(&mut self) {
        for (_, driver) in self.devices.iter() {
            for u in core::mem::take(&mut *driver.updates.lock()) {
                let Some(i) = self.mirrors.iter().position(|m| m.id() == u.mirror) else { continue };
                let m = &self.mirrors[i];
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
                assert!(!l.write || !m.read_only(), "(a) read-only mirror {i} holds a writable entry for page {p}");
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
