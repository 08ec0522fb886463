//! HMM's rules on the real device path (issue 10): honest prefault,
//! exclusive access as Linux defines it, RELEASE and the detach token.
//! Each is its own test kernel (`tests/hmm_rule_*.rs`).
use alloc::sync::Arc;
use alloc::vec::Vec;
use hmm::VaRange;
use kernel::aspace::{AddressSpace, Prot};
use kernel::hmmdev::{accels, ProcessHmm};
use kernel::mm::frames;

struct Proc {
    aspace: Arc<AddressSpace>,
    hmm: ProcessHmm,
}

fn process() -> Proc {
    let aspace = AddressSpace::new().unwrap();
    let hmm = ProcessHmm::attach(&aspace);
    Proc { aspace, hmm }
}

fn rw() -> Prot {
    Prot::READ | Prot::WRITE
}

const PAGES: u64 = 16;

/// After a fork, one device write to one page (16-page prefault): exactly
/// one frame is consumed (the COW copy of that page), the other 15 pages
/// stay shared with the child and clean, and the mirror holds them
/// read-only and clean; exactly one mirror entry is dirty.
pub fn fork_then_device_write_copies_one_page() {
    let p = process();
    let mut a = accels().unwrap()[0].lock();
    a.bind(&p.hmm).unwrap();
    assert_eq!(p.hmm.mm.prefault(), 16, "the default prefault window");
    let r = p.aspace.mmap(None, PAGES * 4096, rw(), false).unwrap();
    for (i, va) in r.page_addrs().enumerate() {
        p.aspace.copy_to_user(va, &[i as u8 + 1; 8]).unwrap();
    }
    // The device reads page 0: the whole window is mirrored read-only.
    assert_eq!(a.read(r.start(), 8).unwrap(), [1u8; 8]);
    let mirror = a.binding().unwrap().mirror.clone();
    assert_eq!(mirror.entries(r).len() as u64, PAGES, "prefault mirrored the resident neighbours");
    p.aspace.harvest(r); // the CPU collects dirty state: all clean now
    let child = p.aspace.fork().unwrap();
    // Warm the kernel heap so only page frames move below.
    drop(Vec::<u8>::with_capacity(64 * 1024));
    let (free, stats) = (frames::stats().free, p.aspace.stats());
    let target = r.start() + 3 * 4096;
    a.write(target, b"device").unwrap();
    let consumed = free - frames::stats().free;
    let after = p.aspace.stats();
    kernel::println!("frames consumed by one device write after fork: {consumed}; COW copies {}", after.cow_copies - stats.cow_copies);
    assert_eq!(after.cow_copies - stats.cow_copies, 1, "exactly one COW copy");
    assert_eq!(after.demand_zero, stats.demand_zero, "nothing demand-zeroed");
    assert_eq!(consumed, 1, "exactly one frame consumed");
    for (i, va) in r.page_addrs().enumerate() {
        let (pc, cc) = (p.aspace.walk(va).unwrap(), child.walk(va).unwrap());
        if va == target {
            assert_ne!(pc.frame, cc.frame, "the written page was copied");
            continue;
        }
        assert_eq!(pc.frame, cc.frame, "page {i} is still shared with the child");
        assert!(!pc.writable && !pc.dirty, "page {i} is still COW-protected and clean on the CPU side");
    }
    let entries = mirror.entries(r);
    let dirty: Vec<_> = entries.iter().filter(|(_, l)| l.dirty).map(|(va, _)| *va).collect();
    assert_eq!(dirty, [target], "the device write marked exactly the written page dirty");
    assert!(entries.iter().all(|(va, l)| *va == target || !l.write), "neighbours are mirrored read-only while COW-shared");
    let mut b = [0u8; 6];
    child.copy_from_user(target, &mut b).unwrap();
    assert_eq!(&b, &[4u8; 6], "the child keeps the old data");
    a.unbind();
}

/// A device read of one page of a fresh (never touched) mapping allocates
/// one frame, not the whole prefault window.
pub fn prefault_never_allocates_neighbours() {
    let p = process();
    let mut a = accels().unwrap()[0].lock();
    a.bind(&p.hmm).unwrap();
    let r = p.aspace.mmap(None, PAGES * 4096, rw(), false).unwrap();
    p.aspace.copy_to_user(r.start() + 5 * 4096, b"x").unwrap();
    assert_eq!(p.aspace.swap_out(VaRange::pages_from(r.start() + 5 * 4096, 1).unwrap()), 1);
    let before = p.aspace.stats();
    assert_eq!(a.read(r.start() + 2 * 4096, 4).unwrap(), [0u8; 4]);
    let after = p.aspace.stats();
    assert_eq!(after.demand_zero - before.demand_zero, 0, "a device read allocates nothing");
    assert_eq!(after.zero_page_maps - before.zero_page_maps, 1, "only the page the device touched maps the zero page");
    assert_eq!(after.swap_ins, before.swap_ins, "the swapped neighbour stayed in swap");
    assert_eq!(a.binding().unwrap().mirror.entries(r).len(), 1, "absent neighbours are not mirrored");
    a.unbind();
}

/// Exclusive access: the CPU entry becomes non-present naming the device,
/// the other device loses the page, a CPU *read* revokes it; fork,
/// swap-out and migration of an exclusive page revoke first.
pub fn exclusive_any_cpu_access_revokes() {
    let p = process();
    let (mut a0, mut a1) = (accels().unwrap()[0].lock(), accels().unwrap()[1].lock());
    a0.bind(&p.hmm).unwrap();
    a1.bind(&p.hmm).unwrap();
    let r = p.aspace.mmap(None, 4 * 4096, rw(), false).unwrap();
    let page = VaRange::pages_from(r.start(), 1).unwrap();
    let m0 = a0.binding().unwrap().mirror.clone();
    let owner = m0.device().0;
    assert_eq!(a1.read(r.start(), 4).unwrap(), [0u8; 4]);
    m0.take_exclusive(page).unwrap();
    assert_eq!(p.aspace.exclusive_owner(page.start()), Some(owner));
    assert!(a1.binding().unwrap().mirror.get(page.start()).is_none(), "the other device lost the page");
    a0.write(page.start(), b"atomic").unwrap();
    // A CPU read revokes.
    let mut b = [0u8; 6];
    p.aspace.copy_from_user(page.start(), &mut b).unwrap();
    assert_eq!(&b, b"atomic");
    assert_eq!(p.aspace.exclusive_owner(page.start()), None, "a CPU read revoked it");
    assert!(m0.get(page.start()).is_none(), "and the device's entry is gone");
    assert!(p.aspace.walk(page.start()).unwrap().dirty, "the device's write reached the CPU's dirty bit");
    // Fork, swap-out, migration, munmap revoke first.
    for what in ["fork", "swap-out", "migrate", "munmap"] {
        m0.take_exclusive(page).unwrap();
        assert!(m0.get(page.start()).unwrap().exclusive, "{what}: taken");
        let _child;
        match what {
            "fork" => _child = p.aspace.fork().unwrap(),
            "swap-out" => assert_eq!(p.aspace.swap_out(page), 1),
            "migrate" => drop(p.aspace.migrate(page.start()).unwrap()),
            _ => p.aspace.munmap(page.start(), 4096).unwrap(),
        }
        assert_eq!(p.aspace.exclusive_owner(page.start()), None, "{what} revoked exclusive access");
        assert!(m0.get(page.start()).is_none(), "{what}: the device's entry is gone");
        if what != "munmap" {
            assert_eq!(a0.read(page.start(), 6).unwrap(), b"atomic", "{what}: the data survived");
        }
    }
    a0.unbind();
    a1.unbind();
}

/// RELEASE reaches the driver even for a mirror holding only its private
/// bounce page; the driver detached the device before the table was freed
/// (unbind does it first: no late detach was needed).
pub fn release_reaches_the_driver() {
    let p = process();
    let mut a = accels().unwrap()[0].lock();
    a.bind(&p.hmm).unwrap();
    let updates = a.driver().updates.load(core::sync::atomic::Ordering::Relaxed);
    a.unbind();
    assert_eq!(a.driver().updates.load(core::sync::atomic::Ordering::Relaxed), updates + 1, "RELEASE for a mirror with no user entries");
    assert_eq!(a.driver().late_detaches.load(core::sync::atomic::Ordering::Relaxed), 0, "unbind detached the device before the table went");
    drop(p);
}

/// Sequence counts per interval: a device fault whose CPU-side work
/// reclaims (swaps out) pages of the same process *outside* its prefault
/// window does not retry — only overlapping invalidations count.
pub fn reclaim_outside_the_window_forces_no_retry() {
    let p = process();
    let mut a = accels().unwrap()[0].lock();
    a.bind(&p.hmm).unwrap();
    let x = p.aspace.mmap(None, 8 * 4096, rw(), false).unwrap();
    for va in x.page_addrs() {
        p.aspace.copy_to_user(va, &[9]).unwrap();
    }
    let y = p.aspace.mmap(Some(0x2000_0000), 32 * 4096, rw(), true).unwrap(); // apart from X: another area
    // Warm the mirror's table nodes for Y (window 16..32).
    assert_eq!(a.read(y.start() + 16 * 4096, 1).unwrap(), [0]);
    let mut hoard = Vec::new();
    while let Ok(f) = frames::alloc() {
        hoard.push(f);
    }
    // Frames left: below the reclaim threshold, above the floor kept for
    // the kernel (swap's slot maps and heap growth need a few).
    for _ in 0..kernel::aspace::USER_FLOOR + 8 {
        drop(hoard.pop());
    }
    let (hmm_before, cpu_before) = (p.hmm.mm.stats(), p.aspace.stats());
    let got = a.read(y.start() + 3 * 4096, 1);
    let (hmm_after, cpu_after) = (p.hmm.mm.stats(), p.aspace.stats());
    drop(hoard);
    assert_eq!(got.unwrap(), [0]);
    kernel::println!("reclaim during the fault: {} pages swapped out, {} retries", cpu_after.swap_outs - cpu_before.swap_outs, hmm_after.retries - hmm_before.retries);
    assert!(cpu_after.swap_outs > cpu_before.swap_outs, "the fault reclaimed pages of the same process");
    assert!(hmm_after.invalidations > hmm_before.invalidations, "with invalidations");
    assert_eq!(hmm_after.retries, hmm_before.retries, "none overlapped the fault's window: no retry");
    a.unbind();
}

/// The other half of the interval rule: an invalidation *inside* the
/// round's interval that lands between the CPU-side walk and the commit
/// makes the commit retry, so no mirror entry names a frame the CPU no
/// longer maps. The round (pages 448..584 of a 2 MiB block pair) hands
/// pages over in batches of 64; pages 512..519 are present and sit in the
/// second batch when page 520 — never touched — is faulted in under
/// memory pressure: reclaim spares the faulting block (448..511) and
/// swaps out 512..519, whose frames are freed. Committing that batch
/// without re-checking the interval's count would map freed frames into
/// the device.
pub fn reclaim_inside_the_round_forces_a_retry() {
    let p = process();
    let mut a = accels().unwrap()[0].lock();
    a.bind(&p.hmm).unwrap();
    let mirror = a.binding().unwrap().mirror.clone();
    let block = 0x4000_0000u64; // 2 MiB aligned
    let z = p.aspace.mmap(Some(block + 448 * 4096), 136 * 4096, rw(), true).unwrap();
    let present = VaRange::new(z.start(), block + 520 * 4096).unwrap();
    // 56 resident pages below, first in the clock's order: with 512..519
    // they fill one reclaim batch (64), which leaves frames enough for the
    // retry's swap-ins (so it converges instead of evicting them again).
    let w = p.aspace.mmap(Some(0x1000_0000), 56 * 4096, rw(), true).unwrap();
    for va in present.page_addrs().chain(w.page_addrs()) {
        p.aspace.copy_to_user(va, &[7]).unwrap();
    }
    // Table nodes for both blocks first (the commit must not need frames).
    p.hmm.mm.set_prefault(1);
    mirror.fault(z.start(), 1, false).unwrap();
    mirror.fault(block + 512 * 4096, 1, false).unwrap();
    let mut hoard = Vec::new();
    while let Ok(f) = frames::alloc() {
        hoard.push(f);
    }
    // One frame below the reclaim threshold: the first fault that needs a
    // frame (page 520) reclaims.
    while frames::stats().free < kernel::aspace::RECLAIM_LOW - 1 {
        drop(hoard.pop());
    }
    let (hmm_before, cpu_before) = (p.hmm.mm.stats(), p.aspace.stats());
    let res = mirror.fault(z.start(), z.pages(), false);
    let (hmm_after, cpu_after) = (p.hmm.mm.stats(), p.aspace.stats());
    drop(hoard);
    res.unwrap();
    kernel::println!("reclaim inside the round: {} pages swapped out, {} retries", cpu_after.swap_outs - cpu_before.swap_outs, hmm_after.retries - hmm_before.retries);
    assert!(cpu_after.swap_outs > cpu_before.swap_outs, "the round's own pages were reclaimed during it");
    let mut stale = 0;
    for va in z.page_addrs() {
        if let Some(l) = mirror.get(va) {
            let cpu = p.aspace.walk(va).map(|c| c.frame.start_address());
            if cpu != Some(l.addr) {
                kernel::println!("  {va:#x}: mirror {:#x}, CPU {cpu:x?}", l.addr.as_u64());
                stale += 1;
            }
        }
    }
    assert_eq!(stale, 0, "mirror entries naming frames the CPU no longer maps");
    assert!(hmm_after.retries > hmm_before.retries, "the commit saw the bump and retried");
    a.unbind();
}

/// A fault commit that runs out of table memory midway (the pages after a
/// 2 MiB boundary need a new table node) still tells the driver about the
/// entries it already upgraded: the IOTLB is flushed, so the device cannot
/// keep the old read-only translations.
pub fn partial_commit_still_flushes() {
    let p = process();
    let mut a = accels().unwrap()[0].lock();
    a.bind(&p.hmm).unwrap();
    let boundary = 0x3000_0000u64; // 2 MiB aligned
    let r = p.aspace.mmap(Some(boundary - 2 * 4096), 4 * 4096, rw(), true).unwrap();
    for va in r.page_addrs() {
        p.aspace.copy_to_user(va, &[3]).unwrap();
    }
    assert_eq!(a.read(boundary - 4096, 1).unwrap(), [3]); // mirrors the two pages below the boundary, read-only
    let mirror = a.binding().unwrap().mirror.clone();
    assert_eq!(mirror.entries(r).len(), 2);
    let flushes = a.driver().flushes.load(core::sync::atomic::Ordering::Relaxed);
    let mut hoard = Vec::new();
    while let Ok(f) = frames::alloc() {
        hoard.push(f);
    }
    let res = mirror.fault(r.start(), 4, true);
    drop(hoard);
    let err = res.unwrap_err();
    assert_eq!(err.kind, hmm::DeviceFaultKind::NoTableMemory, "{err}");
    assert!(mirror.get(r.start()).unwrap().write, "the entries below the boundary were upgraded");
    assert!(a.driver().flushes.load(core::sync::atomic::Ordering::Relaxed) > flushes, "and the driver flushed the IOTLB for them");
    a.write(r.start(), b"ok").unwrap();
    let mut b = [0u8; 2];
    p.aspace.copy_from_user(r.start(), &mut b).unwrap();
    assert_eq!(&b, b"ok", "the device writes through the upgraded entry");
    a.unbind();
}
