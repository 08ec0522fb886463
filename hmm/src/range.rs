//! Page-aligned ranges of the user address space, `[start, end)`.
//!
//! Mirrored addresses are process virtual addresses (IOVA == VA), all in
//! the lower canonical half, so the end may be 2^47 itself — which no
//! canonical `VirtAddr` can hold. Hence a type of our own.

use core::fmt;
use x86_64::VirtAddr;

/// Bytes per page.
pub const PAGE: u64 = 4096;
/// One past the highest user address: ranges end at most here.
pub const USER_END: u64 = 1 << 47;

/// A non-empty or empty page-aligned range in the user half.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VaRange {
    start: u64,
    end: u64,
}

/// Why a range was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadRange {
    pub start: u64,
    pub end: u64,
}

impl fmt::Display for BadRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad range {:#x}..{:#x} (must be page-aligned, start <= end <= {USER_END:#x})", self.start, self.end)
    }
}

impl VaRange {
    /// `[start, end)`; both page-aligned, `start <= end <= 2^47`.
    #[inline]
    pub fn new(start: u64, end: u64) -> Result<Self, BadRange> {
        if !start.is_multiple_of(PAGE) || !end.is_multiple_of(PAGE) || start > end || end > USER_END {
            return Err(BadRange { start, end });
        }
        Ok(VaRange { start, end })
    }

    /// `pages` pages from `start`.
    #[inline]
    pub fn pages_from(start: u64, pages: u64) -> Result<Self, BadRange> {
        let end = pages.checked_mul(PAGE).and_then(|b| start.checked_add(b)).ok_or(BadRange { start, end: u64::MAX })?;
        Self::new(start, end)
    }

    /// The single page containing `addr` (which must be a user address).
    #[inline]
    pub fn page_of(addr: u64) -> Result<Self, BadRange> {
        let start = addr & !(PAGE - 1);
        Self::new(start, start + PAGE)
    }

    #[inline]
    pub fn start(&self) -> u64 {
        self.start
    }
    #[inline]
    pub fn end(&self) -> u64 {
        self.end
    }
    /// The start as a virtual address (always canonical: below 2^47).
    #[inline]
    pub fn start_addr(&self) -> VirtAddr {
        VirtAddr::new(self.start)
    }
    #[inline]
    pub fn pages(&self) -> u64 {
        (self.end - self.start) / PAGE
    }
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
    #[inline]
    pub fn contains(&self, addr: u64) -> bool {
        (self.start..self.end).contains(&addr)
    }
    /// Whether the two share a page (an empty range overlaps nothing).
    #[inline]
    pub fn overlaps(&self, other: &VaRange) -> bool {
        !self.is_empty() && !other.is_empty() && self.start < other.end && other.start < self.end
    }
    /// The common part, if any.
    #[inline]
    pub fn intersect(&self, other: &VaRange) -> Option<VaRange> {
        let (s, e) = (self.start.max(other.start), self.end.min(other.end));
        (s < e).then_some(VaRange { start: s, end: e })
    }
    /// Page start addresses.
    #[inline]
    pub fn page_addrs(&self) -> impl Iterator<Item = u64> {
        (self.start..self.end).step_by(PAGE as usize)
    }
}

impl fmt::Debug for VaRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}..{:#x}", self.start, self.end)
    }
}

impl fmt::Display for VaRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}..{:#x} ({} pages)", self.start, self.end, self.pages())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates() {
        assert!(VaRange::new(0x1000, 0x3000).is_ok());
        assert!(VaRange::new(0x1001, 0x3000).is_err());
        assert!(VaRange::new(0x3000, 0x1000).is_err());
        assert!(VaRange::new(0, USER_END).is_ok());
        assert!(VaRange::new(0, USER_END + PAGE).is_err());
        assert!(VaRange::pages_from(!0xfff, 2).is_err());
        assert_eq!(VaRange::page_of(0x1234).unwrap(), VaRange::new(0x1000, 0x2000).unwrap());
    }

    #[test]
    fn set_operations() {
        let a = VaRange::new(0x1000, 0x5000).unwrap();
        let b = VaRange::new(0x4000, 0x9000).unwrap();
        assert!(a.overlaps(&b));
        assert_eq!(a.intersect(&b), Some(VaRange::new(0x4000, 0x5000).unwrap()));
        assert_eq!(a.intersect(&VaRange::new(0x5000, 0x6000).unwrap()), None);
        assert_eq!(a.pages(), 4);
        assert_eq!(a.page_addrs().collect::<alloc::vec::Vec<_>>(), [0x1000, 0x2000, 0x3000, 0x4000]);
    }
}
