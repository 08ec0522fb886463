//! The frame allocator: no frame handed out twice, reserved memory never
//! handed out, exhaustion is an error, freeing really frees, and reference
//! counts keep shared frames alive.
#![no_std]
#![no_main]

extern crate alloc;
use alloc::vec;
use alloc::vec::Vec;
use kernel::mm::frames::{self, Frame, OutOfFrames};
use kernel::{tests, BootInfo};
use pvh::MemoryKind;

kernel::entry!(main);

fn main(_: &'static BootInfo) -> ! {
    kernel::testing::run("frames", tests![alloc_free_roundtrip, refcounts_keep_shared_frames, exhaustion_is_an_error_and_nothing_twice]);
}

fn alloc_free_roundtrip() {
    let before = frames::stats();
    let f: Vec<Frame> = (0..100).map(|_| frames::alloc().unwrap()).collect();
    assert_eq!(frames::stats().free, before.free - 100);
    assert!(f.iter().all(|f| f.refcount() == 1));
    drop(f);
    assert_eq!(frames::stats(), before, "freeing returns every frame");
    let z = frames::alloc_zeroed().unwrap();
    let mut buf = [0xffu8; 4096];
    kernel::mm::direct::read_frame(z.frame(), 0, &mut buf);
    assert!(buf.iter().all(|&b| b == 0), "alloc_zeroed zeroes");
}

fn refcounts_keep_shared_frames() {
    let before = frames::stats();
    let a = frames::alloc().unwrap();
    let b = a.share();
    assert_eq!(a.refcount(), 2);
    assert_eq!(a.frame(), b.frame());
    drop(a);
    assert_eq!(b.refcount(), 1);
    assert_eq!(frames::stats().free, before.free - 1, "a shared frame stays allocated while referenced");
    let raw = b.into_raw();
    assert_eq!(frames::refcount(raw), 1, "into_raw keeps the reference");
    // SAFETY: the reference given away by into_raw just above.
    drop(unsafe { Frame::from_raw(raw) });
    assert_eq!(frames::refcount(raw), 0);
    assert_eq!(frames::stats(), before);
}

fn exhaustion_is_an_error_and_nothing_twice() {
    let boot = kernel::boot_info();
    let before = frames::stats();
    let top = boot.top_of_ram();
    let mut seen = vec![0u64; (top / 4096).div_ceil(64) as usize];
    let mut held = Vec::with_capacity(before.free);
    let (img_start, img_end) = kernel::mm::kpt::kernel_image_phys();
    let pml4 = kernel::mm::kpt::pml4_frame().start_address().as_u64();
    let err = loop {
        match frames::alloc() {
            Ok(f) => {
                let a = f.start_address().as_u64();
                let n = (a / 4096) as usize;
                assert!(seen[n / 64] & (1 << (n % 64)) == 0, "frame {a:#x} handed out twice");
                seen[n / 64] |= 1 << (n % 64);
                assert!(a >= 1 << 20, "frame {a:#x} in the first MiB (firmware)");
                assert!(!(img_start.as_u64()..img_end.as_u64()).contains(&a), "frame {a:#x} inside the kernel image");
                assert_ne!(a, pml4, "the kernel PML4 handed out");
                let usable = boot.memory_map().iter().any(|r| r.kind == MemoryKind::Usable && a >= r.start.as_u64() && a + 4096 <= r.end());
                assert!(usable, "frame {a:#x} is not usable RAM per the memory map");
                held.push(f);
            }
            Err(e) => break e,
        }
    };
    assert_eq!(err, OutOfFrames);
    assert_eq!(held.len(), before.free, "every free frame could be allocated");
    assert_eq!(frames::stats().free, 0);
    assert!(frames::alloc_zeroed().is_err(), "still exhausted");
    kernel::println!("(allocated all {} free frames, then got `{err}`)", held.len());
    drop(held);
    assert_eq!(frames::stats(), before, "all frames back after freeing");
}
