//! HMM — heterogeneous memory management — for hmmos.
//!
//! A device that works on process virtual addresses *mirrors* the process's
//! address space: it sees the same pages at the same addresses, with
//! permissions never above the CPU's, and loses them the moment the CPU
//! side changes. This crate holds the rules, with no hardware in it:
//!
//! * [`pt`]: the per-mirror page table (a 4-level radix tree whose entry
//!   layout is a parameter, so an IOMMU can walk it directly);
//! * [`mirror`]: devices, mirrors, and the driver's `update` callback with
//!   the event → action table;
//! * [`mm`]: per-address-space state — mirrors, invalidation;
//! * `interval`: per-interval sequence counts (the retry protocol);
//! * [`fault`]: device faults (honest prefault) and exclusive access;
//! * [`cpu`]: the address-space trait the kernel implements;
//! * [`event`]: events and their masks (`new = old & mask`).
//!
//! ```text
//!   CPU side (kernel)                HMM                       device
//!   ─────────────────                ───                       ──────
//!   munmap/mprotect/fork/...  ─► Mm::invalidate_start ─► Mirror table ∧= mask
//!                                                       ─► driver.update: IOTLB flush
//!                             ◄─ dirty pages reported
//!   change PTEs, flush TLB    ─► Mm::invalidate_end
//!   free old frames
//!
//!   device touches a page ─► IOMMU fault ─► Mirror::fault ─► space.fault_round: one lock,
//!                                                          those pages faulted in,
//!                                                          neighbours walked (no change),
//!                                                          ─► commit in batches (retry on race)
//!                                          ◄── replay the transfer
//! ```
#![no_std]

extern crate alloc;

pub mod cpu;
pub mod event;
pub mod fault;
pub(crate) mod interval;
pub mod mirror;
pub mod mm;
pub mod pt;
pub mod range;
pub mod snapshot;

pub use cpu::{CpuFaultError, CpuPage, FaultRound, MirroredSpace, RoundBatch, RoundPage, ROUND_BATCH};
pub use event::{Event, PteMask};
pub use snapshot::{CpuPageState, PageView};
pub use mirror::{Detached, Device, DeviceDriver, DeviceId, Mirror, MirrorAccess, MirrorId, Update};
pub use mm::{DeviceFaultError, DeviceFaultKind, FaultOutcome, Mm, PrefaultPolicy, StatsSnapshot, DEFAULT_PREFAULT_PAGES, MAX_FAULT_PAGES};
pub use range::{BadRange, VaRange, PAGE, USER_END};

#[cfg(test)]
mod model;
#[cfg(test)]
mod model_space;
#[cfg(test)]
mod model_tests;
