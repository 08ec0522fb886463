//! Faults from ring 3 on every path: writes 16 pages (demand-zero), naps
//! while the kernel swaps them out, reads them back (swap-in), then forks
//! and writes (copy-on-write in both). Exits 0 if every byte was right.
#![no_std]
#![no_main]

use user::{println, Buf};

user::entry!(main);

const PAGES: usize = 16;

fn expected(i: usize) -> u8 {
    (i * 7 + i / 4096) as u8
}

fn main(_: &[u8]) -> i32 {
    let mut b = Buf::rw(PAGES as u64 * 4096).expect("mmap");
    for (i, x) in b.bytes_mut().iter_mut().enumerate() {
        *x = expected(i);
    }
    // The kernel swaps us out meanwhile (it looks after 50 ms; the wide
    // margin keeps a loaded host from reordering the two).
    user::sleep_ms(2000);
    let intact = b.bytes().iter().enumerate().all(|(i, &x)| x == expected(i));
    println!("swapper: pattern after swap-out and back: {}", if intact { "intact" } else { "CORRUPT" });
    let child = match user::fork() {
        Ok(0) => {
            b.bytes_mut()[0] = 0xee;
            user::exit(if b.bytes()[4096] == expected(4096) && b.bytes()[0] == 0xee { 0 } else { 1 })
        }
        Ok(c) => c,
        Err(_) => return 2,
    };
    b.bytes_mut()[1] = 0xdd;
    let (_, status) = user::wait(child as i64).expect("wait");
    let ok = intact && status == 0 && b.bytes()[0] == 0 && b.bytes()[1] == 0xdd;
    if ok { 0 } else { 1 }
}
