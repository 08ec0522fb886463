//! HMM for hmmos: see the module docs.
#![no_std]

extern crate alloc;

pub mod pt;
pub mod range;

pub use range::{BadRange, VaRange, PAGE, USER_END};
