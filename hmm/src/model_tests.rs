//! Deterministic scenarios on the model of `model.rs`: each pins one rule
//! (honest prefault, exclusive ordering, interval counts, release, partial
//! commits, the detach token).

extern crate std;
use crate::event::Event;
use crate::mirror::{Detached, Device, DeviceDriver, MirrorId, Update};
use crate::model::{va, Op, Space, World, BASE, PAGES};
use crate::mm::PrefaultPolicy;
use crate::{DeviceFaultKind, MirroredSpace};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

fn map(w: &mut World, p: u64, n: u64) {
    w.apply(&Op::Map(p, n, true));
}

/// The retry protocol: a write fault whose CPU-side fault-in breaks COW
/// (an invalidation of the faulting page in the middle of the fault)
/// retries once and ends with the new frame.
#[test]
fn fault_racing_an_overlapping_invalidation_retries() {
    let mut w = World::new(1);
    map(&mut w, 0, 1);
    w.apply(&Op::CpuWrite(0, 7));
    w.apply(&Op::Fork); // page 0 is now COW
    let out = w.mirrors[0].fault(va(0), 1, true).unwrap();
    assert_eq!(out.retries, 1, "the COW break during fault-in forced one retry");
    w.check();
    assert_eq!(w.mm.stats().retries, 1);
}

/// Per-interval counts: an invalidation outside the fault's window (here
/// a munmap elsewhere, injected while the fault works) does not force a
/// retry; one inside it does.
#[test]
fn only_overlapping_invalidations_force_a_retry() {
    let mut w = World::new(4);
    map(&mut w, 0, 16);
    for (victim, expect) in [(12u64, 0u64), (2, 1)] {
        let sp = w.space.clone();
        *w.space.hook.lock() = Some(alloc::boxed::Box::new(move || {
            let mut st = sp.st.lock();
            sp.notify(&mut st, Space::range(victim, 1), Event::Munmap, None, |st| {
                st.vma.remove(&victim);
                st.resident.remove(&victim);
            });
        }));
        let out = w.mirrors[0].fault(va(1), 1, false).unwrap(); // window: pages 0..4
        assert_eq!(out.retries, expect, "munmap of page {victim} during a fault on pages 0..4");
    }
}

/// A fault that finds an overlapping invalidation in progress waits for
/// its end before any CPU-side work.
#[test]
fn fault_waits_for_an_invalidation_in_progress() {
    let mut w = World::new(1);
    map(&mut w, 0, 4);
    let ended = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicBool::new(false));
    let (mm, e, s) = (w.mm.clone(), ended.clone(), started.clone());
    let t = std::thread::spawn(move || {
        let r = Space::range(0, 4);
        mm.invalidate_start(r, Event::Migrate, None);
        s.store(true, Ordering::SeqCst);
        std::thread::sleep(std::time::Duration::from_millis(50));
        e.store(true, Ordering::SeqCst);
        mm.invalidate_end(r, Event::Migrate);
    });
    while !started.load(Ordering::SeqCst) {
        std::hint::spin_loop();
    }
    let e = ended.clone();
    let worked_early = Arc::new(AtomicBool::new(false));
    let we = worked_early.clone();
    *w.space.hook.lock() = Some(alloc::boxed::Box::new(move || we.store(!e.load(Ordering::SeqCst), Ordering::SeqCst)));
    w.mirrors[0].fault(va(0), 1, false).unwrap();
    t.join().unwrap();
    assert!(!worked_early.load(Ordering::SeqCst), "the fault did CPU-side work while an overlapping invalidation was in progress");
}

/// The scenario: after a fork, one device write to one page with
/// a 16-page prefault consumes exactly one frame; the other pages stay
/// shared and clean on the CPU side and are mirrored read-only and clean.
#[test]
fn prefault_after_fork_copies_one_page_only() {
    let mut w = World::new(16);
    map(&mut w, 8, 16);
    for p in 8..24 {
        w.apply(&Op::CpuWrite(p, p));
    }
    w.apply(&Op::Fork);
    for pg in w.space.st.lock().resident.values_mut() {
        pg.dirty = false; // as if written back
    }
    let before = w.space.st.lock().clone();
    let out = w.mirrors[0].fault(va(11), 1, true).unwrap();
    let after = w.space.st.lock().clone();
    assert_eq!(after.next_frame - before.next_frame, 1, "exactly one frame consumed");
    assert_eq!(out.pages, 16, "the whole window is mirrored");
    for p in (8..24).filter(|&p| p != 11) {
        assert_eq!(before.resident[&p], after.resident[&p], "page {p} untouched: still shared and clean");
        let l = w.mirrors[0].get(va(p)).unwrap();
        assert!(!l.write && !l.dirty, "page {p} mirrored read-only and clean while COW-shared");
    }
    let l = w.mirrors[0].get(va(11)).unwrap();
    assert!(l.write && l.dirty, "the written page: writable, dirty");
    let dirty: Vec<_> = w.mirrors[0].entries(Space::range(0, PAGES)).into_iter().filter(|(_, l)| l.dirty).collect();
    assert_eq!(dirty.len(), 1, "a device write marks exactly the written page dirty");
}

/// Absent and swapped neighbours are not faulted in; the optional
/// populating policy read-faults absent ones (no dirt, no COW break).
#[test]
fn prefault_mirrors_only_what_the_cpu_has_unless_asked_to_populate() {
    let mut w = World::new(16);
    map(&mut w, 8, 16);
    w.apply(&Op::CpuWrite(12, 5));
    w.apply(&Op::SwapOut(12));
    w.apply(&Op::CpuWrite(13, 6));
    let out = w.mirrors[0].fault(va(9), 1, false).unwrap();
    assert_eq!(out.pages, 2, "the faulting page and the one resident neighbour");
    assert!(w.space.st.lock().swapped.contains_key(&12), "the swapped neighbour stays in swap");
    assert_eq!(w.space.st.lock().resident.len(), 2, "no absent neighbour was allocated");
    w.mm.set_prefault_policy(PrefaultPolicy::Populate);
    let out = w.mirrors[1].fault(va(9), 1, false).unwrap();
    assert_eq!(out.pages, 16, "populate: every page of the window");
    let st = w.space.st.lock().clone();
    assert!(st.resident.iter().all(|(&p, pg)| !pg.dirty || p == 13), "populate dirties nothing");
    assert!(st.resident.values().all(|pg| !pg.cow), "and breaks no COW");
    w.check();
}

/// Exclusive access as Linux defines it: the CPU entry becomes non-present
/// (naming the owner) before the device's entry is written; other devices
/// lose the page; any CPU access — a read too — revokes it.
#[test]
fn exclusive_cpu_loses_access_first_and_any_cpu_access_revokes() {
    let mut w = World::new(1);
    map(&mut w, 0, 2);
    w.apply(&Op::CpuWrite(0, 9));
    w.apply(&Op::DevFault(1, 0, 1, false)); // the other device reads
    let (m0, m1) = (w.mirrors[0].clone(), w.mirrors[1].clone());
    // The ordering, seen from the owner's driver: when it hears of its new
    // entry, the CPU entry is already the exclusive one.
    let sp = w.space.clone();
    let seen = Arc::new(AtomicUsize::new(0));
    let s2 = seen.clone();
    *w.devices[0].1.on_update.lock() = Some(alloc::boxed::Box::new(move |u: &Update| {
        if u.event == Event::DeviceWfault {
            let excl = sp.st.lock().resident[&0].excl;
            s2.store(if excl.is_some() { 1 } else { 2 }, Ordering::SeqCst);
        }
    }));
    m0.take_exclusive(Space::range(0, 1)).unwrap();
    assert_eq!(seen.load(Ordering::SeqCst), 1, "the CPU lost access before the device's entry was announced");
    let l = m0.get(va(0)).unwrap();
    assert!(l.exclusive && l.write);
    assert!(w.space.walk(va(0)).is_none(), "the CPU entry is non-present");
    assert_eq!(w.space.st.lock().resident[&0].excl, Some(m0.device()), "and names the owner");
    assert!(m1.get(va(0)).is_none(), "the other device lost the page");
    w.check();
    // Taking it again is idempotent (no revocation of its own access).
    m0.take_exclusive(Space::range(0, 1)).unwrap();
    assert!(m0.get(va(0)).unwrap().exclusive);
    w.apply(&Op::CpuRead(0));
    assert!(m0.get(va(0)).is_none(), "a CPU read revoked the exclusive entry");
    assert_eq!(w.space.st.lock().resident[&0].excl, None, "and restored the CPU entry");
    assert!(w.space.walk(va(0)).unwrap().writable);
    w.check();
}

/// Fork, swap-out and migration of an exclusive page revoke first.
#[test]
fn fork_swap_and_migration_revoke_exclusive_access() {
    for op in [Op::Fork, Op::SwapOut(0), Op::Migrate(0), Op::Unmap(0, 1)] {
        let mut w = World::new(1);
        map(&mut w, 0, 2);
        w.apply(&Op::Exclusive(0, 0, 1));
        assert!(w.mirrors[0].get(va(0)).unwrap().exclusive);
        w.apply(&op);
        w.check();
        assert!(w.mirrors[0].get(va(0)).is_none(), "{op:?}: the device's exclusive entry is gone");
        assert!(w.space.st.lock().resident.get(&0).is_none_or(|p| p.excl.is_none()), "{op:?}: the CPU entry is a normal one");
    }
}

#[test]
fn released_mirrors_refuse_faults_and_report_dirty() {
    let mut w = World::new(1);
    map(&mut w, 0, 4);
    w.apply(&Op::DevFault(0, 1, 1, true));
    w.apply(&Op::DevWrite(0, 1, 1234));
    let m = w.mirrors[0].clone();
    w.mm.unmirror(&m);
    assert!(!m.is_alive());
    assert_eq!(m.entries(Space::range(0, PAGES)).len(), 0, "released: no entries");
    assert!(w.space.st.lock().resident[&1].dirty, "the device's write reached the CPU's dirty state");
    assert_eq!(m.fault(va(0), 1, false).unwrap_err().kind, DeviceFaultKind::Released);
    assert_eq!(w.mm.mirrors().len(), super::model::MIRRORS - 1, "only the released mirror left the list");
    // Unregistering the other device releases its mirror too.
    let m1 = w.mirrors[1].clone();
    m1.device.unregister();
    assert!(!m1.is_alive());
    let left: Vec<_> = w.mm.mirrors().iter().map(|m| m.id()).collect();
    assert_eq!(left, [w.mirrors[2].id()], "only device 0's second (read-only) mirror is left");
}

/// RELEASE reaches the driver even for a mirror without user entries.
#[test]
fn release_always_reaches_the_driver() {
    let w = World::new(1);
    let m = w.mirrors[0].clone();
    w.mm.unmirror(&m);
    let ups = w.devices[0].1.updates.lock();
    assert!(ups.iter().any(|u| u.mirror == m.id() && u.event == Event::Release), "RELEASE for an empty mirror: {ups:?}");
}

/// A mirror released while its fault works on the CPU side: the fault
/// fails, nothing is committed.
#[test]
fn release_racing_a_fault() {
    let mut w = World::new(4);
    map(&mut w, 0, 4);
    w.apply(&Op::ReleaseDuringFault(0, 1, true));
    w.check();
    assert!(w.mirrors[0].fault(va(1), 1, true).is_ok(), "the replacement mirror works");
}

/// A commit that runs out of table memory midway still tells the driver
/// about the entries it already upgraded.
#[test]
fn partial_commit_is_reported() {
    let mut w = World::new(1);
    map(&mut w, 4, 8);
    w.mirrors[0].fault(va(6), 2, false).unwrap(); // pages 6, 7: read-only, in the first leaf node
    w.devices[0].1.updates.lock().clear();
    w.mem.budget.store(0, Ordering::SeqCst);
    let e = w.mirrors[0].fault(va(6), 4, true).unwrap_err(); // 8, 9 need a new leaf node
    w.mem.budget.store(-1, Ordering::SeqCst);
    assert_eq!(e.kind, DeviceFaultKind::NoTableMemory);
    assert!(w.mirrors[0].get(va(6)).unwrap().write, "page 6 was upgraded before the failure");
    let ups = w.devices[0].1.updates.lock();
    assert!(ups.iter().any(|u| u.event == Event::DeviceWfault && u.replaced && u.range.contains(va(6))), "the driver heard of the upgrade (it must flush): {ups:?}");
}

struct OrderDriver {
    mem: Arc<crate::model::LimitedMemory>,
    live_at_detach: AtomicUsize,
    lie: bool,
}
impl DeviceDriver for OrderDriver {
    fn update(&self, _: &Update) {}
    fn detach(&self, mirror: MirrorId) -> Option<Detached> {
        self.live_at_detach.store(self.mem.heap.live(), Ordering::SeqCst);
        // SAFETY: a software device (the test checks the ordering); `lie`
        // names another mirror on purpose.
        Some(unsafe { Detached::new(if self.lie { MirrorId(u32::MAX) } else { mirror }) })
    }
}

/// The table is freed only after the driver's `detach`, and only against
/// a token for that mirror.
#[test]
fn table_is_freed_only_after_the_driver_detached() {
    for lie in [false, true] {
        let w = World::new(1);
        let d = Arc::new(OrderDriver { mem: w.mem.clone(), live_at_detach: AtomicUsize::new(0), lie });
        let dev = Device::register(d.clone());
        let m = w.mm.mirror(&dev, w.mem.clone()).unwrap();
        let live = w.mem.heap.live();
        w.mm.unmirror(&m);
        drop(m);
        assert_eq!(d.live_at_detach.load(Ordering::SeqCst), live, "detach came while the table was still allocated");
        let freed = live - w.mem.heap.live();
        assert_eq!(freed, if lie { 0 } else { 1 }, "lie={lie}: freed only against the right token");
    }
}

#[test]
fn base_is_page_aligned() {
    assert!(BASE.is_multiple_of(4096));
}

/// Writable, clean neighbours of a device write are mirrored with the
/// CPU's write access but stay clean: only the written page is dirty.
#[test]
fn device_write_dirties_exactly_the_written_page() {
    let mut w = World::new(4);
    map(&mut w, 8, 4);
    for p in 8..12 {
        w.apply(&Op::CpuRead(p)); // resident, writable, clean
    }
    w.apply(&Op::DevFault(0, 9, 1, true));
    let entries = w.mirrors[0].entries(Space::range(0, PAGES));
    assert_eq!(entries.len(), 4);
    for (addr, l) in entries {
        let p = (addr - BASE) / 4096;
        assert!(l.write, "page {p}: the CPU allows write, so may the device");
        assert_eq!(l.dirty, p == 9, "page {p}: dirty only if written");
    }
    assert!(w.space.st.lock().resident.values().all(|pg| !pg.dirty), "nothing dirty on the CPU side yet");
    w.check();
}
