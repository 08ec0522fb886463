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
use crate::mm::shootdown;
use crate::{cycles, println};

const PAGES: [u64; 3] = [1, 16, 512];
/// munmaps measured per figure (the mean is printed).
const REPEAT: u64 = 4;

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
    println!("\nTLB shootdown: one munmap of resident pages, the space loaded on this CPU and on k others (halted holders); instructions of all CPUs, mean of {REPEAT}:");
    let mut ok = true;
    println!("\n<!-- readme-tlb:begin -->");
    println!("| CPUs with the space loaded | pages | shootdown rounds | IPIs | instructions per munmap | per page |");
    println!("|---:|---:|---:|---:|---:|---:|");
    let Ok(a) = AddressSpace::new() else { return false };
    for &pages in &PAGES {
        match measure(&a, pages) {
            Ok((rounds, ipis, instr)) => println!("| 1 | {pages} | {rounds} | {ipis} | {} | {} |", super::thousands(instr), super::thousands(instr / pages)),
            Err(e) => {
                println!("| 1 | {pages} | failed: {e} | | | |");
                ok = false;
            }
        }
    }
    println!("<!-- readme-tlb:end -->");
    ok
}
