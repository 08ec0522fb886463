//! The property test: random sequences of CPU changes and device
//! faults/accesses against a plain model of the CPU side, with HMM's
//! invariants checked after every step:
//!
//! (a) no mirror entry grants more than the CPU mapping;
//! (b) no mirror entry remains for a range whose invalidation returned;
//! (c) no device write is lost: it is in the CPU page's data, and the page
//!     is dirty on the CPU side (or still marked dirty in the mirror);
//! (d) every entry points at the frame the CPU maps.
//!
//! `HMM_SOAK=1 cargo test -p hmm` runs 50x as many sequences.

extern crate std;
use std::vec;
use crate::cpu::{CpuFaultError, CpuPage, MirroredSpace};
use crate::event::Event;
use crate::mirror::{Device, DeviceDriver, Mirror, Update};
use crate::mm::Mm;
use crate::pt::{HeapMemory, SoftLayout};
use crate::VaRange;
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use proptest::prelude::*;
use spin::Mutex;
use x86_64::PhysAddr;

const PAGES: u64 = 24;
const BASE: u64 = 0x10_0000;

fn va(p: u64) -> u64 {
    BASE + p * 4096
}

#[derive(Clone, Copy, Debug)]
struct Page {
    frame: u64,
    writable: bool,
    /// Shared copy-on-write after a fork.
    cow: bool,
    dirty: bool,
}

#[derive(Default)]
struct State {
    /// Areas: page → writable.
    vma: BTreeMap<u64, bool>,
    resident: BTreeMap<u64, Page>,
    /// Swapped-out contents.
    swapped: BTreeMap<u64, u64>,
    /// Frame contents.
    memory: BTreeMap<u64, u64>,
    next_frame: u64,
}

/// The reference CPU side.
struct Space {
    st: Mutex<State>,
    mm: Mutex<Weak<Mm<SoftLayout, Arc<HeapMemory>, Space>>>,
}

impl Space {
    fn notify(&self, st: &mut State, r: VaRange, ev: Event, keep_excl: bool, change: impl FnOnce(&mut State)) {
        let mm = self.mm.lock().upgrade();
        if let Some(mm) = &mm {
            for d in mm.invalidate_start(r, ev, keep_excl) {
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

    fn range(p: u64, n: u64) -> VaRange {
        VaRange::pages_from(va(p), n).unwrap()
    }

    fn cpu_write(&self, p: u64, value: u64) {
        let st = self.st.lock();
        if st.vma.get(&p) != Some(&true) {
            return; // not writable: the CPU's write would fault; nothing happens
        }
        drop(st);
        let page = self.fault_in(va(p), true).unwrap();
        let mut st = self.st.lock();
        st.memory.insert(page.frame.as_u64() / 4096, value);
        st.resident.get_mut(&p).unwrap().dirty = true;
    }
}

impl MirroredSpace for Space {
    fn walk(&self, addr: u64) -> Option<CpuPage> {
        let st = self.st.lock();
        st.resident.get(&((addr - BASE) / 4096)).map(|p| CpuPage { frame: PhysAddr::new(p.frame * 4096), writable: p.writable })
    }

    fn fault_in(&self, addr: u64, write: bool) -> Result<CpuPage, CpuFaultError> {
        if addr < BASE || addr >= va(PAGES) {
            return Err(CpuFaultError::NoVma);
        }
        let p = (addr - BASE) / 4096;
        let mut st = self.st.lock();
        let w = *st.vma.get(&p).ok_or(CpuFaultError::NoVma)?;
        if write && !w {
            return Err(CpuFaultError::Protection);
        }
        if !st.resident.contains_key(&p) {
            let data = st.swapped.remove(&p).unwrap_or(0);
            let frame = Self::new_frame(&mut st, data);
            st.resident.insert(p, Page { frame, writable: w, cow: false, dirty: false });
        }
        let page = st.resident[&p];
        if write && !page.writable {
            // COW break (or a write-protected page regaining write): the
            // device and CPU views of this page change.
            self.notify(&mut st, Self::range(p, 1), Event::Migrate, false, |st| {
                let page = st.resident[&p]; // as the invalidation left it
                let data = st.memory[&page.frame];
                let frame = if page.cow { Self::new_frame(st, data) } else { page.frame };
                st.resident.insert(p, Page { frame, writable: true, cow: false, dirty: page.dirty });
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

    fn protect_for_exclusive(&self, r: VaRange) {
        let mut st = self.st.lock();
        let first = (r.start() - BASE) / 4096;
        self.notify(&mut st, r, Event::WriteProtect, true, |st| {
            for p in first..first + r.pages() {
                if let Some(pg) = st.resident.get_mut(&p) {
                    pg.writable = false;
                }
            }
        });
    }
}

struct Driver {
    updates: Mutex<Vec<Update>>,
}

impl DeviceDriver for Driver {
    fn update(&self, u: &Update) {
        self.updates.lock().push(*u);
    }
}

#[derive(Clone, Debug)]
enum Op {
    Map(u64, u64, bool),
    Unmap(u64, u64),
    Protect(u64, u64),
    Fork,
    Migrate(u64),
    SwapOut(u64),
    CpuWrite(u64, u64),
    DevFault(usize, u64, bool),
    DevWrite(usize, u64, u64),
    DevRead(usize, u64),
    Exclusive(usize, u64),
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
        (0usize..2, p.clone(), any::<bool>()).prop_map(|(m, p, w)| Op::DevFault(m, p, w)),
        (0usize..2, p.clone(), 1000u64..2000).prop_map(|(m, p, v)| Op::DevWrite(m, p, v)),
        (0usize..2, p.clone()).prop_map(|(m, p)| Op::DevRead(m, p)),
        (0usize..2, p).prop_map(|(m, p)| Op::Exclusive(m, p)),
    ]
}

type TestMm = Mm<SoftLayout, Arc<HeapMemory>, Space>;

struct World {
    space: Arc<Space>,
    mm: Arc<TestMm>,
    mirrors: Vec<Arc<Mirror<SoftLayout, Arc<HeapMemory>>>>,
    /// The last value written to each page, by anyone.
    truth: BTreeMap<u64, u64>,
    /// Pages a device wrote (their dirtiness must reach the CPU).
    dev_written: BTreeSet<u64>,
}

impl World {
    fn new(prefault: u64) -> World {
        let space = Arc::new(Space { st: Mutex::new(State::default()), mm: Mutex::new(Weak::new()) });
        let mm = TestMm::new(Arc::downgrade(&space));
        mm.set_prefault(prefault);
        *space.mm.lock() = Arc::downgrade(&mm);
        let mem = Arc::new(HeapMemory::new());
        let mirrors = (0..2)
            .map(|_| {
                let dev = Device::register(Arc::new(Driver { updates: Mutex::new(Vec::new()) }));
                mm.mirror(&dev, mem.clone()).unwrap()
            })
            .collect();
        World { space, mm, mirrors, truth: BTreeMap::new(), dev_written: BTreeSet::new() }
    }

    fn apply(&mut self, op: &Op) {
        let sp = &self.space;
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
                sp.notify(&mut st, Space::range(p, n), Event::Munmap, false, |st| {
                    for q in p..p + n {
                        st.vma.remove(&q);
                        st.resident.remove(&q);
                        st.swapped.remove(&q);
                    }
                });
                for q in p..p + n {
                    self.truth.remove(&q);
                    self.dev_written.remove(&q);
                }
            }
            Op::Protect(p, n) => {
                let n = n.min(PAGES - p);
                let mut st = sp.st.lock();
                sp.notify(&mut st, Space::range(p, n), Event::WriteProtect, false, |st| {
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
                sp.notify(&mut st, Space::range(0, PAGES), Event::Fork, false, |st| {
                    for pg in st.resident.values_mut() {
                        pg.writable = false;
                        pg.cow = true;
                    }
                });
            }
            Op::Migrate(p) => {
                let mut st = sp.st.lock();
                if st.resident.contains_key(&p) {
                    sp.notify(&mut st, Space::range(p, 1), Event::Migrate, false, |st| {
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
                    sp.notify(&mut st, Space::range(p, 1), Event::Migrate, false, |st| {
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
                }
            }
            Op::DevFault(m, p, w) => {
                let _ = self.mm.fault(&self.mirrors[m], va(p), 1, w);
            }
            Op::DevWrite(m, p, v) => {
                // The device writes only through a valid, writable entry.
                if let Some(l) = self.mirrors[m].get(va(p)).filter(|l| l.write) {
                    sp.st.lock().memory.insert(l.addr.as_u64() / 4096, v);
                    self.mirrors[m].set_dirty(va(p));
                    self.truth.insert(p, v);
                    self.dev_written.insert(p);
                }
            }
            Op::DevRead(m, p) => {
                if let Some(l) = self.mirrors[m].get(va(p)) {
                    let seen = sp.st.lock().memory[&(l.addr.as_u64() / 4096)];
                    assert_eq!(seen, self.truth.get(&p).copied().unwrap_or(0), "device read of page {p} sees the current data");
                }
            }
            Op::Exclusive(m, p) => {
                let _ = self.mm.take_exclusive(&self.mirrors[m], Space::range(p, 1));
            }
        }
    }

    fn check(&self) {
        let st = self.space.st.lock();
        for m in &self.mirrors {
            for (addr, l) in m.entries(Space::range(0, PAGES)) {
                let p = (addr - BASE) / 4096;
                let cpu = st.resident.get(&p).unwrap_or_else(|| panic!("(b) entry for page {p} survives a CPU change that removed it"));
                assert_eq!(l.addr.as_u64() / 4096, cpu.frame, "(d) entry for page {p} points at the CPU's frame");
                assert!(!l.write || cpu.writable || l.exclusive, "(a) entry for page {p} grants write the CPU does not have");
                assert!(!l.exclusive || self.mirrors.iter().filter(|o| o.get(addr).is_some_and(|x| x.write)).count() == 1, "exclusive write is exclusive");
            }
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

/// The retry protocol, deterministically: a write fault whose CPU-side
/// fault-in breaks COW (an invalidation in the middle of the fault) retries
/// and ends with the new frame.
#[test]
fn fault_racing_an_invalidation_retries() {
    let mut w = World::new(1);
    w.apply(&Op::Map(0, 1, true));
    w.apply(&Op::CpuWrite(0, 7));
    w.apply(&Op::Fork); // page 0 is now COW
    let m = w.mirrors[0].clone();
    let out = w.mm.fault(&m, va(0), 1, true).unwrap();
    assert_eq!(out.retries, 1, "the COW break during fault-in forced one retry");
    w.check();
    assert_eq!(w.mm.stats().retries, 1);
}

#[test]
fn released_mirrors_refuse_faults_and_report_dirty() {
    let mut w = World::new(1);
    w.apply(&Op::Map(0, 4, true));
    w.apply(&Op::DevFault(0, 1, true));
    w.apply(&Op::DevWrite(0, 1, 1234));
    let m = w.mirrors[0].clone();
    w.mm.unmirror(&m);
    assert!(!m.is_alive());
    assert_eq!(m.entries(Space::range(0, PAGES)).len(), 0, "released: no entries");
    assert!(w.space.st.lock().resident[&1].dirty, "the device's write reached the CPU's dirty state");
    assert_eq!(w.mm.fault(&m, va(0), 1, false).unwrap_err().kind, crate::DeviceFaultKind::Released);
    assert_eq!(w.mm.mirrors().len(), 1);
    // Unregistering the other device releases its mirror too.
    let m1 = w.mirrors[1].clone();
    m1.device.unregister();
    assert!(!m1.is_alive());
    assert!(w.mm.mirrors().is_empty());
}

#[test]
fn prefault_populates_a_batch_within_the_mapping() {
    let w = World::new(16);
    {
        let mut st = w.space.st.lock();
        for p in 0..20 {
            st.vma.insert(p, true);
        }
    }
    let out = w.mm.fault(&w.mirrors[0], va(3), 1, false).unwrap();
    assert_eq!(out.pages, 16, "the aligned 16-page window around the fault");
    let out = w.mm.fault(&w.mirrors[0], va(17), 1, false).unwrap();
    assert_eq!(out.pages, 4, "clipped to the end of the mapping");
    let entries = w.mirrors[0].entries(Space::range(0, PAGES));
    assert!(entries.iter().all(|(_, l)| !l.write), "a read fault grants read only");
}

#[test]
fn exclusive_access_is_revoked_by_a_cpu_write() {
    let mut w = World::new(1);
    w.apply(&Op::Map(0, 2, true));
    w.apply(&Op::DevFault(1, 0, false)); // the other device reads
    let (m0, m1) = (w.mirrors[0].clone(), w.mirrors[1].clone());
    w.mm.take_exclusive(&m0, Space::range(0, 1)).unwrap();
    let l = m0.get(va(0)).unwrap();
    assert!(l.exclusive && l.write);
    assert!(!w.space.walk(va(0)).unwrap().writable, "the CPU lost write access");
    w.check();
    w.apply(&Op::CpuWrite(0, 5));
    assert!(m0.get(va(0)).is_none(), "a CPU write revoked the exclusive entry");
    assert!(m1.get(va(0)).is_none());
    w.check();
}
