//! Threads share one address space. Argument `share`: three threads bump
//! their own counters in a shared array; `exit-while-waiting`: a thread
//! blocks in wait() for a long-sleeping child while the main thread exits —
//! the whole process must end at once.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};
use user::{println, Buf};

user::entry!(main);

static COUNTS: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];
static DONE: AtomicU64 = AtomicU64::new(0);
const ROUNDS: u64 = 500;

extern "C" fn worker(i: u64) -> ! {
    for _ in 0..ROUNDS {
        COUNTS[i as usize].fetch_add(1, Ordering::Relaxed);
        user::yield_now();
    }
    DONE.fetch_add(1, Ordering::SeqCst);
    user::thread_exit()
}

extern "C" fn waiter(_: u64) -> ! {
    let _ = user::wait(-1); // the child sleeps for a minute
    user::thread_exit()
}

fn main(args: &[u8]) -> i32 {
    let stacks = Buf::rw(3 * 16 * 4096).expect("mmap");
    match args {
        b"share" => {
            for i in 0..3 {
                user::thread(worker, stacks.at((i + 1) * 16 * 4096), i).expect("thread");
            }
            while DONE.load(Ordering::SeqCst) < 3 {
                user::yield_now();
            }
            let ok = COUNTS.iter().all(|c| c.load(Ordering::Relaxed) == ROUNDS);
            println!("threads: 3 threads x {ROUNDS} rounds in one address space: {}", if ok { "all counted" } else { "WRONG" });
            if ok { 0 } else { 1 }
        }
        b"exit-while-waiting" => {
            match user::fork() {
                Ok(0) => {
                    user::sleep_ms(60_000);
                    user::exit(0)
                }
                Ok(_) => {}
                Err(_) => return 2,
            }
            user::thread(waiter, stacks.at(16 * 4096), 0).expect("thread");
            user::sleep_ms(20); // the waiter blocks in wait()
            user::exit(5)
        }
        _ => 3,
    }
}
