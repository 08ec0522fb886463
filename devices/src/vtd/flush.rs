//! IOTLB invalidation: what changed, and the fewest commands that cover it.
//!
//! A change to a domain's table produces an [`IotlbFlush`] token naming the
//! changed IOVA ranges (and holding any table nodes the change unlinked).
//! It is `#[must_use]`: the only way to get rid of it is
//! `Iommu::flush(domain, token)`, which issues the invalidations and only
//! then frees the unlinked nodes — the IOMMU may have cached them.
//!
//! Planning ([`plan`]): a page-selective invalidation covers a naturally
//! aligned block of 2^AM pages (IVA = block address, AM ≤ MAMV).
//! Invalidating more than changed is always correct — an evicted
//! translation is simply walked again — while every command costs a
//! register round trip. So the pages of a flush are covered by **at most
//! two** aligned blocks, whatever the range:
//!
//! ```text
//!  pages [s, e)       split at P, the most-aligned page boundary inside it
//!  ──────┬────────────┼───────────┬─────
//!        s            P           e
//!  block A = [P - 2^a, P)   2^a ≥ P - s   (aligned: P is a multiple of 2^a)
//!  block B = [P, P + 2^b)   2^b ≥ e - P   (aligned likewise)
//! ```
//!
//! A range inside one aligned block of its own size takes one command (a
//! munmap of an aligned 2^k-page range: exactly those pages). A block
//! larger than 2^MAMV pages becomes one domain-selective invalidation.
//! Several ranges in one token are covered as their hull.

use alloc::vec::Vec;
use hmm::pt::Retired;

/// Above this many page-selective commands, invalidate the whole domain
/// (with the two-block plan this triggers only through `threshold` < 2).
pub const DOMAIN_THRESHOLD: usize = 64;

/// One IOTLB invalidation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IotlbCommand {
    /// 2^`am` pages from `addr` (aligned to that size).
    Page { addr: u64, am: u8 },
    /// Everything cached for the domain.
    Domain,
}

/// Commands covering every page of `ranges` (`[start, end)`,
/// page-aligned): at most two aligned blocks (see the module docs), or one
/// domain-wide command when a block would exceed 2^`mamv` pages, when the
/// IOMMU has no page-selective invalidation, or beyond `threshold`.
pub fn plan(ranges: &[(u64, u64)], mamv: u8, psi: bool, threshold: usize) -> Plan {
    let mut cmds = Plan::default();
    let Some((s, e)) = hull(ranges) else { return cmds };
    if !psi {
        cmds.push(IotlbCommand::Domain);
        return cmds;
    }
    let (s, e) = (s / 4096, e / 4096);
    // The highest bit in which the first and last page differ: P, the
    // most-aligned boundary in (s, e), clears every bit below it.
    let diff = s ^ (e - 1);
    let blocks: [Option<(u64, u32)>; 2] = if diff == 0 {
        [Some((s, 0)), None]
    } else {
        let h = 63 - diff.leading_zeros();
        let p = (e - 1) >> h << h;
        let a = ceil_log2(p - s);
        let b = ceil_log2(e - p);
        if a == h && b == h && (p >> h) & 1 == 1 {
            // Both halves are full: the range fills one block of 2^(h+1).
            [Some((p - (1 << h), h + 1)), None]
        } else {
            [Some((p - (1 << a), a)), Some((p, b))]
        }
    };
    for (page, am) in blocks.into_iter().flatten() {
        if am > mamv as u32 || cmds.len() >= threshold {
            cmds.clear();
            cmds.push(IotlbCommand::Domain);
            return cmds;
        }
        cmds.push(IotlbCommand::Page { addr: page * 4096, am: am as u8 });
    }
    cmds
}

/// At most two commands, held inline: planning a flush allocates nothing
/// (it runs inside every invalidation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    cmds: [Option<IotlbCommand>; 2],
}

impl Plan {
    fn push(&mut self, c: IotlbCommand) {
        let slot = self.cmds.iter_mut().find(|s| s.is_none()).expect("a plan holds at most two commands");
        *slot = Some(c);
    }
    fn clear(&mut self) {
        self.cmds = [None; 2];
    }
    pub fn len(&self) -> usize {
        self.cmds.iter().flatten().count()
    }
    pub fn is_empty(&self) -> bool {
        self.cmds[0].is_none()
    }
    /// The commands, in order.
    pub fn iter(&self) -> impl Iterator<Item = IotlbCommand> + '_ {
        self.cmds.iter().flatten().copied()
    }
}

impl<const N: usize> PartialEq<[IotlbCommand; N]> for Plan {
    fn eq(&self, other: &[IotlbCommand; N]) -> bool {
        self.iter().eq(other.iter().copied())
    }
}

/// The smallest range holding every non-empty range, if any.
fn hull(ranges: &[(u64, u64)]) -> Option<(u64, u64)> {
    ranges.iter().filter(|(s, e)| s < e).fold(None, |acc, &(s, e)| match acc {
        None => Some((s, e)),
        Some((a, b)) => Some((a.min(s), b.max(e))),
    })
}

/// The smallest k with 2^k ≥ n (n ≥ 1).
fn ceil_log2(n: u64) -> u32 {
    64 - (n - 1).leading_zeros()
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
        // The issue's example: pages [3, 4099) took 13 commands; now 2.
        assert_eq!(
            plan(&[(3 * P, 4099 * P)], 18, true, DOMAIN_THRESHOLD),
            [IotlbCommand::Page { addr: 0, am: 12 }, IotlbCommand::Page { addr: 4096 * P, am: 2 }]
        );
        // Beyond MAMV: one domain-wide command.
        assert_eq!(plan(&[(0, P << 20)], 18, true, DOMAIN_THRESHOLD), [IotlbCommand::Domain]);
        // Scattered pages: their hull, one block.
        let scattered: Vec<(u64, u64)> = (0..100).map(|i| (i * 2 * P, i * 2 * P + P)).collect();
        assert_eq!(plan(&scattered, 18, true, DOMAIN_THRESHOLD), [IotlbCommand::Page { addr: 0, am: 8 }]);
        assert_eq!(plan(&[(0, P)], 18, false, DOMAIN_THRESHOLD), [IotlbCommand::Domain], "no PSI");
        assert!(plan(&[], 18, true, DOMAIN_THRESHOLD).is_empty());
    }

    proptest! {
        /// At most two commands; together they cover every requested page;
        /// each is naturally aligned with AM ≤ MAMV; they over-invalidate at
        /// most 4× the range. Otherwise one domain-wide command, only when
        /// a block would exceed 2^MAMV pages.
        #[test]
        fn covers_every_page_in_two(start in 0u64..1 << 30, len in 1u64..1 << 20, mamv in 0u8..=18) {
            let (s, e) = (start * P, (start + len) * P);
            let cmds = plan(&[(s, e)], mamv, true, DOMAIN_THRESHOLD);
            prop_assert!(!cmds.is_empty() && cmds.len() <= 2);
            if cmds == [IotlbCommand::Domain] {
                prop_assert!(len > 1 << mamv || (start ^ (start + len - 1)) >> mamv != 0, "domain-wide only when no block of 2^MAMV fits");
                return Ok(());
            }
            let mut covered = 0;
            for c in cmds.iter() {
                let IotlbCommand::Page { addr, am } = c else { panic!("mixed") };
                prop_assert!(am <= mamv);
                prop_assert_eq!(addr % (P << am), 0, "naturally aligned");
                covered += P << am;
            }
            for page in start..start + len {
                let a = page * P;
                prop_assert!(cmds.iter().any(|c| matches!(c, IotlbCommand::Page { addr, am } if (addr..addr + (P << am)).contains(&a))), "page {:#x} missed", a);
            }
            prop_assert!(covered <= 4 * len * P, "over-invalidation bounded");
        }
    }
}
