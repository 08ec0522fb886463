//! Shootdown cost (`cargo run -- --bench`): one munmap of 1, 16 and 512
//! resident pages of an address space loaded on this CPU and on k other
//! CPUs (holder tasks halted with it in CR3), for every k the machine has.
//!
//! Under `-icount shift=0` single-threaded TCG runs the CPUs in turn on one
//! virtual clock, so a TSC difference on CPU 0 counts the instructions of
//! *every* CPU in between: the munmap's own and the targets' IPI handlers
//! (the holders are halted, idle CPUs too). Rounds and IPIs come from
//! `mm::shootdown::stats`.

use crate::aspace::{AddressSpace, Prot};
use crate::cpus::{self, CpuId};
use crate::mm::shootdown;
use crate::{cycles, println, sched};
use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use spin::Mutex;

const PAGES: [u64; 3] = [1, 16, 512];
/// munmaps measured per figure (the mean is printed).
const REPEAT: u64 = 4;

static SPACE: Mutex<Option<Arc<AddressSpace>>> = Mutex::new(None);
static HOLDING: AtomicUsize = AtomicUsize::new(0);
static STOP: AtomicBool = AtomicBool::new(false);

/// A task that keeps the bench's address space loaded on its CPU, halted.
fn holder(_: u64) {
    let Some(a) = SPACE.lock().clone() else { return };
    {
        let _loaded = a.load();
        HOLDING.fetch_add(1, Ordering::SeqCst);
        while !STOP.load(Ordering::SeqCst) {
            x86_64::instructions::interrupts::enable_and_hlt();
        }
    }
    HOLDING.fetch_sub(1, Ordering::SeqCst);
}

fn wait_until(done: impl Fn() -> bool) -> bool {
    let t0 = sched::ticks();
    while !done() {
        if sched::ticks() - t0 > 500 {
            return false;
        }
        sched::sleep_ms(1);
    }
    true
}

/// (rounds, IPIs, instructions) of one munmap of `pages`, mean of REPEAT.
fn measure(a: &AddressSpace, pages: u64) -> Result<(u64, u64, u64), &'static str> {
    let (mut rounds, mut ipis, mut instr) = (0, 0, 0);
    for _ in 0..REPEAT {
        let r = a.mmap(None, pages * 4096, Prot::READ | Prot::WRITE, false).map_err(|_| "mmap")?;
        for va in r.page_addrs() {
            a.copy_to_user(va, &[1]).map_err(|_| "touch")?;
        }
        let _loaded = a.load();
        let t0 = shootdown::stats();
        let (c, res) = cycles::measure(|| a.munmap(r.start(), pages * 4096));
        res.map_err(|_| "munmap")?;
        let t1 = shootdown::stats();
        rounds += t1.rounds - t0.rounds;
        ipis += t1.ipis - t0.ipis;
        instr += c;
    }
    Ok((rounds / REPEAT, ipis / REPEAT, instr / REPEAT))
}

pub(super) fn run() -> bool {
    sched::init(); // the holders are tasks (and its log line stays out of the table)
    let online: alloc::vec::Vec<CpuId> = cpus::online().iter().collect();
    println!("\nTLB shootdown: one munmap of resident pages, the space loaded on this CPU and on k others (halted holders); instructions of all CPUs, mean of {REPEAT}:");
    let mut ok = true;
    println!("\n<!-- readme-tlb:begin -->");
    println!("| CPUs with the space loaded | pages | shootdown rounds | IPIs | instructions per munmap | per page |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for k in 0..online.len() {
        let Ok(a) = AddressSpace::new() else { return false };
        *SPACE.lock() = Some(a.clone());
        STOP.store(false, Ordering::SeqCst);
        for &c in &online[1..=k] {
            if sched::spawn_kernel(alloc::format!("tlb-holder{}", c.index()), holder, 0, Some(c)).is_err() {
                ok = false;
            }
        }
        if !wait_until(|| HOLDING.load(Ordering::SeqCst) == k) {
            println!("  holders did not start");
            return false;
        }
        for &pages in &PAGES {
            match measure(&a, pages) {
                Ok((rounds, ipis, instr)) => println!("| {} | {pages} | {rounds} | {ipis} | {} | {} |", k + 1, super::thousands(instr), super::thousands(instr / pages)),
                Err(e) => {
                    println!("| {} | {pages} | failed: {e} | | | |", k + 1);
                    ok = false;
                }
            }
        }
        STOP.store(true, Ordering::SeqCst);
        ok &= wait_until(|| HOLDING.load(Ordering::SeqCst) == 0);
        *SPACE.lock() = None;
    }
    println!("<!-- readme-tlb:end -->");
    ok
}
