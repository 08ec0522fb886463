//! Makes one access it may not make, chosen by its argument — the kernel
//! must end this process (and only this process) with a report.
#![no_std]
#![no_main]

use user::println;

user::entry!(main);

fn main(args: &[u8]) -> i32 {
    let what = core::str::from_utf8(args).unwrap_or("");
    println!("segv: trying `{what}`");
    // SAFETY (each): deliberately invalid accesses; the kernel must stop us.
    unsafe {
        match what {
            "null" => {
                core::ptr::read_volatile(core::ptr::null::<u64>());
            }
            "kernel" => {
                core::ptr::read_volatile(0xffff_ffff_8000_0000u64 as *const u64);
            }
            "text-write" => {
                core::ptr::write_volatile(main as *const () as *mut u8, 0xcc);
            }
            "ro-write" => {
                let a = user::mmap(0, 4096, abi::PROT_READ, 0).expect("mmap");
                core::ptr::write_volatile(a as *mut u8, 1);
            }
            "exec-data" => {
                let a = user::mmap(0, 4096, abi::PROT_READ | abi::PROT_WRITE, 0).expect("mmap");
                core::ptr::write_volatile(a as *mut u8, 0xc3); // ret
                let f: extern "C" fn() = core::mem::transmute(a as usize);
                f();
            }
            "stack" => {
                #[allow(unconditional_recursion)]
                fn recurse(n: u64) -> u64 {
                    let pad = [n; 512];
                    core::hint::black_box(&pad);
                    recurse(n + 1) + pad[3]
                }
                recurse(0);
            }
            "unmapped" => {
                let a = user::mmap(0, 8192, abi::PROT_READ | abi::PROT_WRITE, 0).expect("mmap");
                user::munmap(a, 8192).expect("munmap");
                core::ptr::write_volatile(a as *mut u8, 1);
            }
            "ud2" => core::arch::asm!("ud2"),
            "privileged" => core::arch::asm!("cli"),
            _ => {
                println!("segv: unknown case");
                return 2;
            }
        }
    }
    println!("segv: survived `{what}` (wrong!)");
    0
}
