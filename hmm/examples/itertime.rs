use hmm::pt::{Leaf, Node, PageTable, SoftLayout, TableMemory};
use hmm::VaRange;
use std::cell::RefCell;
use std::ptr::NonNull;
use std::time::Instant;
use x86_64::{PhysAddr, VirtAddr};
#[repr(C, align(4096))]
struct Frame([u8; 4096]);

/// A pool of pre-touched frames; "physical" address = pointer.
struct Pool {
    free: RefCell<Vec<u64>>,
    _backing: Vec<Frame>,
}

impl Pool {
    fn new(frames: usize) -> Pool {
        let mut backing: Vec<Frame> = (0..frames).map(|_| Frame([1; 4096])).collect();
        let free = backing.iter_mut().map(|f| f as *mut Frame as u64).collect();
        Pool { free: RefCell::new(free), _backing: backing }
    }
    fn take(&self) -> Option<u64> {
        let p = self.free.borrow_mut().pop()?;
        // SAFETY: a free frame of the pool, 4 KiB, owned by nobody.
        unsafe { std::ptr::write_bytes(p as *mut u8, 0, 4096) };
        Some(p)
    }
    fn give(&self, p: u64) {
        self.free.borrow_mut().push(p);
    }
}

// SAFETY: frames are zeroed, aligned, handed out once until given back.
unsafe impl TableMemory for Pool {
    fn alloc_table(&self) -> Option<PhysAddr> {
        self.take().map(PhysAddr::new)
    }
    unsafe fn free_table(&self, t: PhysAddr) {
        self.give(t.as_u64())
    }
    fn table(&self, t: PhysAddr) -> NonNull<Node> {
        NonNull::new(t.as_u64() as *mut Node).expect("not null")
    }
}


fn main() {
    let pool = Pool::new(8192);
    // Scramble the pool's free list as the criterion runs do.
    for round in 0..5u64 {
        let mut a = PageTable::<SoftLayout, _>::new(&pool).unwrap();
        a.populate(VirtAddr::new(0x1000_0000 + round * 4096 * 7), (0..262_144u64).map(|i| Leaf::writable(PhysAddr::new((i + 1) << 12)))).unwrap();
        let up = a.clear(VaRange::pages_from(0x1000_0000, 100_000).unwrap());
        a.release(up.retired);
    }
    for n in [512u64, 262_144] {
        let mut pt = PageTable::<SoftLayout, _>::new(&pool).unwrap();
        pt.populate(VirtAddr::new(0x1000_0000), (0..n).map(|i| Leaf::writable(PhysAddr::new((i + 1) << 12)))).unwrap();
        let mut best = f64::MAX;
        for _ in 0..20 {
            let t = Instant::now();
            let c = pt.iter(VaRange::pages_from(0x1000_0000, n).unwrap()).count();
            best = best.min(t.elapsed().as_secs_f64());
            assert_eq!(c as u64, n);
        }
        println!("pool n={n} {:.2} ns/page", best * 1e9 / n as f64);
    }
}
