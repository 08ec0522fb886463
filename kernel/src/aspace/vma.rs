//! Virtual memory areas: non-overlapping page ranges with a protection and
//! a backing (anonymous, zero-filled). Kept sorted in a `BTreeMap` by start;
//! adjacent areas with the same protection are merged.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::cell::Cell;
use core::fmt;
use hmm::VaRange;

bitflags::bitflags! {
    /// What a process may do with an area.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Prot: u8 {
        const READ = 1;
        const WRITE = 2;
        const EXEC = 4;
    }
}

impl Prot {
    /// Parse `r`, `rw`, `rx`, `rwx`, `none`.
    pub fn parse(s: &str) -> Option<Prot> {
        if s == "none" {
            return Some(Prot::empty());
        }
        let mut p = Prot::empty();
        for c in s.chars() {
            p |= match c {
                'r' => Prot::READ,
                'w' => Prot::WRITE,
                'x' => Prot::EXEC,
                _ => return None,
            };
        }
        Some(p)
    }
}

impl fmt::Display for Prot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = |p: Prot, ch: char| if self.contains(p) { ch } else { '-' };
        write!(f, "{}{}{}", c(Prot::READ, 'r'), c(Prot::WRITE, 'w'), c(Prot::EXEC, 'x'))
    }
}

/// One area.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vma {
    pub range: VaRange,
    pub prot: Prot,
}

/// The areas of one address space.
#[derive(Default)]
pub struct Vmas {
    by_start: BTreeMap<u64, Vma>,
    /// The area `find` found last (Linux's per-mm VMA cache): a device
    /// fault round, and the CPU faults of one loop, ask for the same area
    /// again and again. Cleared by every change of the areas; the owner's
    /// lock serialises all access (a `Cell`: `find` takes `&self`).
    hint: Cell<Option<Vma>>,
}

impl Vmas {
    /// The area containing `addr`.
    pub fn find(&self, addr: u64) -> Option<Vma> {
        if let Some(v) = self.hint.get().filter(|v| v.range.contains(addr)) {
            return Some(v);
        }
        let v = self.by_start.range(..=addr).next_back().map(|(_, v)| *v).filter(|v| v.range.contains(addr));
        if v.is_some() {
            self.hint.set(v);
        }
        v
    }

    /// Whether any area overlaps `r`: the last area starting below its
    /// end does, or none does (areas are disjoint and sorted). One search.
    pub fn overlaps(&self, r: VaRange) -> bool {
        !r.is_empty() && self.by_start.range(..r.end()).next_back().is_some_and(|(_, v)| v.range.end() > r.start())
    }

    /// Areas overlapping `r`, in order.
    pub fn overlapping(&self, r: VaRange) -> impl Iterator<Item = Vma> + '_ {
        let first = self.by_start.range(..r.start()).next_back().map(|(s, _)| *s).unwrap_or(0);
        self.by_start.range(first..r.end()).map(|(_, v)| *v).filter(move |v| v.range.overlaps(&r))
    }

    pub fn iter(&self) -> impl Iterator<Item = Vma> + '_ {
        self.by_start.values().copied()
    }

    pub fn len(&self) -> usize {
        self.by_start.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_start.is_empty()
    }

    /// Add an area (caller checked it overlaps nothing); merges neighbours.
    pub fn insert(&mut self, vma: Vma) {
        self.hint.set(None);
        self.by_start.insert(vma.range.start(), vma);
        self.merge_around(vma.range);
    }

    /// Cut `r` out of every area (splitting as needed). Nothing is
    /// allocated but a split's new area (munmap's path).
    pub fn remove(&mut self, r: VaRange) {
        self.cut(r, &mut |_| {});
    }

    /// [`Vmas::remove`], handing each piece removed to `removed` (last
    /// first). Each round takes the last area starting below `r`'s end —
    /// one search — while it overlaps `r`; the pieces left beside `r`
    /// overlap it no more, so it ends.
    /// An area that starts at or before `r` is the last one to look at
    /// (areas are disjoint and sorted), so the common one-area cut is one
    /// search; a left remainder keeps its key and is shortened in place.
    fn cut(&mut self, r: VaRange, removed: &mut dyn FnMut(Vma)) {
        self.hint.set(None);
        while let Some((_, slot)) = self.by_start.range_mut(..r.end()).next_back() {
            let v = *slot;
            if !v.range.overlaps(&r) {
                break;
            }
            let cut = v.range.intersect(&r).expect("overlapping");
            if v.range.start() < cut.start() {
                slot.range = VaRange::new(v.range.start(), cut.start()).expect("sub-range");
            } else {
                self.by_start.remove(&v.range.start());
            }
            if cut.end() < v.range.end() {
                let right = VaRange::new(cut.end(), v.range.end()).expect("sub-range");
                self.by_start.insert(right.start(), Vma { range: right, prot: v.prot });
            }
            removed(Vma { range: cut, prot: v.prot });
            if v.range.start() <= r.start() {
                break;
            }
        }
    }

    /// Give `r` protection `prot` (split at its edges, merge afterwards).
    /// Returns the pieces with their old protection.
    pub fn protect(&mut self, r: VaRange, prot: Prot) -> Vec<Vma> {
        self.hint.set(None);
        let mut old = Vec::new();
        self.cut(r, &mut |v| old.push(v));
        for piece in &old {
            self.by_start.insert(piece.range.start(), Vma { range: piece.range, prot });
        }
        self.merge_around(r);
        old
    }

    /// Whether `r` is covered by areas with no gap.
    pub fn covers(&self, r: VaRange) -> bool {
        let mut at = r.start();
        for v in self.overlapping(r) {
            if v.range.start() > at {
                return false;
            }
            at = v.range.end();
        }
        at >= r.end()
    }

    /// Merge adjacent areas with equal protection, from the area before
    /// `r` to the one starting at its end, in one pass.
    fn merge_around(&mut self, r: VaRange) {
        self.hint.set(None);
        let from = self.by_start.range(..r.start()).next_back().map(|(s, _)| *s).unwrap_or(r.start());
        let starts: Vec<u64> = self.by_start.range(from..=r.end()).map(|(s, _)| *s).collect();
        let mut prev: Option<Vma> = None;
        for s in starts {
            let v = self.by_start[&s];
            match prev {
                Some(p) if p.range.end() == v.range.start() && p.prot == v.prot => {
                    self.by_start.remove(&s);
                    let merged = Vma { range: VaRange::new(p.range.start(), v.range.end()).expect("adjacent"), prot: p.prot };
                    self.by_start.insert(merged.range.start(), merged);
                    prev = Some(merged);
                }
                _ => prev = Some(v),
            }
        }
    }
}
