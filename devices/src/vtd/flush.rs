//! IOTLB invalidation: what changed, and the fewest commands that cover it.
//!
//! A change to a domain's table produces an [`IotlbFlush`] token naming the
//! changed IOVA ranges (and holding any table nodes the change unlinked).
//! It is `#[must_use]`: the only way to get rid of it is
//! `Iommu::flush(domain, token)`, which issues the invalidations and only
//! then frees the unlinked nodes — the IOMMU may have cached them.
//!
//! Planning ([`plan`]): each range is cut into naturally aligned blocks of
//! 2^k pages (k ≤ MAMV), one page-selective invalidation each (IVA = block
//! address, AM = k). A munmap of an aligned 2^k-page range is therefore one
//! command. If a flush would take more than [`DOMAIN_THRESHOLD`] commands,
//! one domain-selective invalidation is cheaper.

use alloc::vec::Vec;
use hmm::pt::Retired;

/// Above this many page-selective commands, invalidate the whole domain.
pub const DOMAIN_THRESHOLD: usize = 64;

/// One IOTLB invalidation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IotlbCommand {
    /// 2^`am` pages from `addr` (aligned to that size).
    Page { addr: u64, am: u8 },
    /// Everything cached for the domain.
    Domain,
}

/// Commands covering exactly the pages of `ranges` (`[start, end)`,
/// page-aligned), or one domain-wide command beyond `threshold`.
pub fn plan(ranges: &[(u64, u64)], mamv: u8, psi: bool, threshold: usize) -> Vec<IotlbCommand> {
    let mut cmds = Vec::new();
    if !psi {
        return if ranges.iter().any(|(s, e)| s < e) { alloc::vec![IotlbCommand::Domain] } else { cmds };
    }
    for &(start, end) in ranges {
        let (mut page, end_page) = (start / 4096, end / 4096);
        while page < end_page {
            let align = if page == 0 { 63 } else { page.trailing_zeros() as u8 };
            let fit = (63 - (end_page - page).leading_zeros()) as u8; // floor(log2(remaining))
            let am = align.min(fit).min(mamv);
            cmds.push(IotlbCommand::Page { addr: page * 4096, am });
            page += 1 << am;
            if cmds.len() > threshold {
                return alloc::vec![IotlbCommand::Domain];
            }
        }
    }
    cmds
}

/// A domain's table changed: the IOTLB must be told before the old
/// translations (and unlinked table nodes) may be reused.
#[must_use = "the IOTLB may still hold the old translations: pass this to Iommu::flush"]
#[derive(Debug)]
pub struct IotlbFlush {
    pub(crate) ranges: Vec<(u64, u64)>,
    /// Only not-present → present changes: no flush needed unless the
    /// IOMMU caches not-present entries (CAP.CM).
    pub(crate) only_new: bool,
    pub(crate) retired: Retired,
}

impl IotlbFlush {
    pub(crate) fn new() -> Self {
        IotlbFlush { ranges: Vec::new(), only_new: true, retired: Retired::default() }
    }

    pub(crate) fn changed(&mut self, start: u64, end: u64) {
        self.only_new = false;
        self.add(start, end);
    }

    pub(crate) fn added(&mut self, start: u64, end: u64) {
        self.add(start, end);
    }

    fn add(&mut self, start: u64, end: u64) {
        match self.ranges.last_mut() {
            Some(last) if last.1 == start => last.1 = end,
            _ => self.ranges.push((start, end)),
        }
    }

    /// Merge another token (same domain) into this one.
    pub fn merge(&mut self, mut other: IotlbFlush) {
        self.only_new &= other.only_new;
        for (s, e) in other.ranges.drain(..) {
            self.add(s, e);
        }
        self.retired.merge(core::mem::take(&mut other.retired));
    }

    /// The changed ranges.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges
    }

    /// Nothing to flush at all.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty() && self.retired.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const P: u64 = 4096;

    #[test]
    fn aligned_power_of_two_is_one_command() {
        for k in 0..=18u8 {
            let start = 0x4000_0000u64;
            let cmds = plan(&[(start, start + (P << k))], 18, true, DOMAIN_THRESHOLD);
            assert_eq!(cmds, [IotlbCommand::Page { addr: start, am: k }], "2^{k} pages");
        }
    }

    #[test]
    fn unaligned_and_big_ranges() {
        assert_eq!(
            plan(&[(3 * P, 8 * P)], 18, true, DOMAIN_THRESHOLD),
            [IotlbCommand::Page { addr: 3 * P, am: 0 }, IotlbCommand::Page { addr: 4 * P, am: 2 }]
        );
        // Beyond MAMV, blocks of 2^MAMV.
        assert_eq!(plan(&[(0, P << 20)], 18, true, DOMAIN_THRESHOLD).len(), 4);
        // Many scattered pages: one domain-wide flush.
        let scattered: Vec<(u64, u64)> = (0..100).map(|i| (i * 2 * P, i * 2 * P + P)).collect();
        assert_eq!(plan(&scattered, 18, true, DOMAIN_THRESHOLD), [IotlbCommand::Domain]);
        assert_eq!(plan(&[(0, P)], 18, false, DOMAIN_THRESHOLD), [IotlbCommand::Domain], "no PSI");
        assert!(plan(&[], 18, true, DOMAIN_THRESHOLD).is_empty());
    }

    proptest! {
        /// The commands cover exactly the requested pages, each command is
        /// naturally aligned, and the count stays logarithmic.
        #[test]
        fn covers_exactly(start in 0u64..1 << 24, len in 1u64..1 << 16, mamv in 0u8..=18) {
            let (s, e) = (start * P, (start + len) * P);
            let cmds = plan(&[(s, e)], mamv, true, usize::MAX);
            let mut next = s;
            for c in &cmds {
                let IotlbCommand::Page { addr, am } = *c else { panic!("domain-wide") };
                prop_assert_eq!(addr, next, "contiguous, in order");
                prop_assert!(am <= mamv);
                prop_assert_eq!(addr % (P << am), 0, "naturally aligned");
                next = addr + (P << am);
            }
            prop_assert_eq!(next, e, "nothing missed, nothing extra");
            if mamv == 18 && len < 1 << 18 {
                prop_assert!(cmds.len() <= 2 * 18);
            }
        }
    }
}
