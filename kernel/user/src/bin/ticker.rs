//! Sleeps and wakes: argument = number of 20 ms naps (default 5). Exits 0.
#![no_std]
#![no_main]

user::entry!(main);

fn main(args: &[u8]) -> i32 {
    let n = user::parse_u64(args).unwrap_or(5);
    for _ in 0..n {
        user::sleep_ms(20);
    }
    user::println!("ticker pid {}: {n} naps done", user::getpid());
    0
}
