//! COW fork, swap, migration, dirty/accessed bits and the notifier path.
#![no_std]
#![no_main]

extern crate alloc;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use kernel::aspace::swap::SWAP;
use kernel::aspace::{AddressSpace, AspaceId, Change, ChangeKind, Listener, Prot};
use kernel::mm::frames;
use kernel::{tests, BootInfo};
use hmm::VaRange;
use spin::Mutex;

kernel::entry!(main);

fn main(_: &'static BootInfo) -> ! {
    kernel::testing::run(
        "aspace_events",
        tests![fork_is_copy_on_write, swap_out_and_back, clean_pages_are_not_rewritten, reclaim_by_clock, migration_preserves_data, dirty_and_accessed_bits, listener_sees_the_script],
    );
}

fn rw() -> Prot {
    Prot::READ | Prot::WRITE
}

fn read(a: &AddressSpace, addr: u64, n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    a.copy_from_user(addr, &mut b).unwrap();
    b
}

fn fork_is_copy_on_write() {
    let parent = AddressSpace::new().unwrap();
    let r = parent.mmap(None, 4 * 4096, rw(), false).unwrap();
    parent.copy_to_user(r.start(), &[1u8; 4 * 4096]).unwrap();
    let frame = parent.walk(r.start()).unwrap().frame;
    let free = frames::stats().free;
    let child = parent.fork().unwrap();
    // Sharing: same frames, count 2, both read-only, no data frame copied.
    assert_eq!(child.walk(r.start()).unwrap().frame, frame);
    assert_eq!(frames::refcount(frame), 2);
    assert!(!parent.walk(r.start()).unwrap().writable && !child.walk(r.start()).unwrap().writable);
    let tables = child.table_frames();
    assert_eq!(free - frames::stats().free, tables, "only the child's page tables were allocated");
    // Copying: the parent writes, gets its own frame; the child keeps the old data.
    parent.copy_to_user(r.start(), b"parent").unwrap();
    assert_ne!(parent.walk(r.start()).unwrap().frame, frame);
    assert_eq!(frames::refcount(frame), 1);
    assert_eq!(parent.stats().cow_copies, 1);
    assert_eq!(&read(&child, r.start(), 6), &[1u8; 6]);
    assert_eq!(&read(&parent, r.start(), 6), b"parent");
    // Reuse: the child's frame is now only its own — a write takes it over, no copy.
    child.copy_to_user(r.start(), b"child!").unwrap();
    assert_eq!(child.walk(r.start()).unwrap().frame, frame, "count 1: reused without a copy");
    assert_eq!(child.stats().cow_reuses, 1);
    assert_eq!(child.stats().cow_copies, 0);
    assert_eq!(&read(&parent, r.start(), 6), b"parent", "each sees only its own writes");
    assert_eq!(&read(&child, r.start(), 6), b"child!");
}

fn swap_out_and_back() {
    let a = AddressSpace::new().unwrap();
    let r = a.mmap(None, 16 * 4096, rw(), false).unwrap();
    let data: Vec<u8> = (0..16 * 4096).map(|i| (i * 7 + 3) as u8).collect();
    a.copy_to_user(r.start(), &data).unwrap();
    SWAP.init(); // the disk's bring-up is not what is counted
    let free = frames::stats().free;
    let map = SWAP.stats().map_frames;
    assert_eq!(a.swap_out(r), 16);
    let map_taken = (SWAP.stats().map_frames - map) as usize;
    assert_eq!(frames::stats().free, free + 16 - map_taken, "frames returned to the allocator (but the slot map's)");
    assert!(map_taken <= 2, "the slot map takes a frame per 2048 slots (and one in reserve)");
    assert_eq!(a.walk(r.start()), None);
    assert_eq!(read(&a, r.start(), data.len()), data, "identical after swap-in");
    assert_eq!(a.stats().swap_ins, 16);
}

fn clean_pages_are_not_rewritten() {
    let a = AddressSpace::new().unwrap();
    let r = a.mmap(None, 4 * 4096, rw(), false).unwrap();
    a.copy_to_user(r.start(), &[5u8; 4 * 4096]).unwrap();
    a.swap_out(r);
    let writes = SWAP.stats().writes;
    let _ = read(&a, r.start(), 4 * 4096); // swap in, clean
    a.swap_out(r);
    assert_eq!(SWAP.stats().writes, writes, "clean pages reuse their slots");
    assert_eq!(a.stats().swap_cache_hits, 4);
    a.copy_to_user(r.start(), &[6]).unwrap(); // swap in page 0 and dirty it
    a.swap_out(r);
    assert_eq!(SWAP.stats().writes, writes + 1, "only the dirtied page is rewritten");
    assert_eq!(read(&a, r.start(), 2), [6, 5]);
}

fn reclaim_by_clock() {
    let a = AddressSpace::new().unwrap();
    let r = a.mmap(None, 8 * 4096, rw(), false).unwrap();
    a.copy_to_user(r.start(), &[1u8; 8 * 4096]).unwrap();
    a.harvest(r); // clear accessed bits
    let _ = read(&a, r.start() + 3 * 4096, 1); // page 3 is recently used
    let freed = a.reclaim(7);
    assert_eq!(freed, 7);
    assert!(a.walk(r.start() + 3 * 4096).is_some(), "the recently used page got a second chance");
    assert_eq!(read(&a, r.start(), 8 * 4096), vec![1u8; 8 * 4096]);
}

fn migration_preserves_data() {
    let a = AddressSpace::new().unwrap();
    let r = a.mmap(None, 4096, rw(), false).unwrap();
    let data: Vec<u8> = (0..4096).map(|i| (i ^ 0x5a) as u8).collect();
    a.copy_to_user(r.start(), &data).unwrap();
    let free = frames::stats().free;
    let (old, new) = a.migrate(r.start()).unwrap();
    assert_ne!(old, new);
    assert_eq!(a.walk(r.start()).unwrap().frame, new);
    assert_eq!(frames::refcount(old), 0, "old frame freed");
    assert_eq!(frames::stats().free, free);
    assert_eq!(read(&a, r.start(), 4096), data);
    assert!(a.migrate(r.end()).is_err(), "nothing resident there");
}

fn dirty_and_accessed_bits() {
    let a = AddressSpace::new().unwrap();
    let r = a.mmap(None, 3 * 4096, rw(), false).unwrap();
    a.copy_to_user(r.start(), &[1]).unwrap();
    let _ = read(&a, r.start() + 4096, 1);
    let bits = a.harvest(r);
    assert_eq!(bits.len(), 2);
    assert!(bits[0].dirty && bits[0].accessed);
    assert!(!bits[1].dirty && bits[1].accessed);
    let bits = a.harvest(r);
    assert!(bits.iter().all(|b| !b.dirty && !b.accessed), "cleared (with a TLB flush)");
    a.copy_to_user(r.start() + 4096, &[2]).unwrap();
    assert!(a.harvest(r)[1].dirty, "a new write after clearing is seen");
}

/// Records every notification.
#[derive(Default)]
struct Recorder {
    log: Mutex<Vec<(bool, Change)>>,
}

impl Listener for Recorder {
    fn invalidate_start(&self, _: AspaceId, c: &Change, _: &mut dyn FnMut(u64)) {
        self.log.lock().push((true, *c));
    }
    fn invalidate_end(&self, _: AspaceId, c: &Change) {
        self.log.lock().push((false, *c));
    }
}

fn listener_sees_the_script() {
    let rec = Arc::new(Recorder::default());
    let a = AddressSpace::new().unwrap();
    let id = a.register_listener(rec.clone());
    let r = a.mmap(Some(0x2000_0000), 8 * 4096, rw(), true).unwrap();
    a.copy_to_user(r.start(), &[1u8; 8 * 4096]).unwrap(); // new translations: no notification
    let pages = |s: u64, n: u64| VaRange::pages_from(r.start() + s * 4096, n).unwrap();
    a.mprotect(r.start(), 2 * 4096, Prot::READ).unwrap();
    let child = a.fork().unwrap();
    a.copy_to_user(r.start() + 4 * 4096, &[2]).unwrap(); // COW break of page 4
    a.swap_out(pages(6, 1));
    a.migrate(r.start() + 5 * 4096).unwrap();
    a.harvest(pages(7, 1));
    a.munmap(r.start() + 3 * 4096, 4096).unwrap();
    drop(child);
    let expected = [
        Change { range: pages(0, 2), kind: ChangeKind::Protect },
        Change { range: pages(2, 6), kind: ChangeKind::CowWriteProtect },
        Change { range: pages(4, 1), kind: ChangeKind::CowBreak },
        Change { range: pages(6, 1), kind: ChangeKind::SwapOut },
        Change { range: pages(5, 1), kind: ChangeKind::Migrate },
        Change { range: pages(7, 1), kind: ChangeKind::DirtyClear },
        Change { range: pages(3, 1), kind: ChangeKind::Unmap },
    ];
    let log = rec.log.lock().clone();
    let want: Vec<(bool, Change)> = expected.iter().flat_map(|c| [(true, *c), (false, *c)]).collect();
    assert_eq!(log, want, "exactly these, in order, each start paired with its end");
    // The read-only area was not write-protected again by fork: no change there.
    assert!(a.unregister_listener(id));
    drop(a);
    assert_eq!(rec.log.lock().len(), want.len(), "unregistered: exit not heard");
    // A listener still registered hears the exit.
    let b = AddressSpace::new().unwrap();
    b.register_listener(rec.clone());
    drop(b);
    let log = rec.log.lock();
    assert_eq!(log[log.len() - 2].1.kind, ChangeKind::Exit);
    assert_eq!(log[log.len() - 1].1.kind, ChangeKind::Exit);
}
