//! Loading a program: the ELF file's `PT_LOAD` segments become areas of a
//! fresh address space with the segments' own protection (text r-x, rodata
//! r--, data rw-), and nothing more: no page is touched at load time.
//!
//! Every page is demand-paged through the one fault path
//! (`AddressSpace::handle_fault`): the [`ImageSource`] is the address
//! space's page source, so the first fault of a page — by the program, by
//! the kernel copying from it, or by a device through HMM — gets a fresh
//! frame filled with the page's bytes from the image (zeros past the file
//! bytes: .bss). A page of the image that is unmapped stops being backed by
//! it (the source listens for `Unmap`), so a later mapping there is plain
//! demand-zero memory.
//!
//! Every number from the file is checked with checked arithmetic: a
//! segment must lie in the user half, inside the file, and not share a
//! page with another segment.

use crate::aspace::{AddressSpace, AspaceId, Change, ChangeKind, Listener, PageSource, Prot};
use crate::sync::{LockRank, RankedMutex};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use hmm::VaRange;
use elf::abi::{EM_X86_64, ET_EXEC, PF_R, PF_W, PF_X, PT_LOAD};
use elf::endian::LittleEndian;
use elf::ElfBytes;

const PAGE: u64 = 4096;
/// Loadable segments at most.
const MAX_SEGMENTS: usize = 16;

/// Why an image could not be loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoadError {
    /// Not a parsable ELF file.
    Parse(alloc::string::String),
    /// Not an x86-64 executable.
    NotExecutable,
    /// A segment lies outside the user half, outside the file, or wraps.
    BadSegment { vaddr: u64, memsz: u64 },
    /// Two segments share a page (or overlap).
    Overlap { vaddr: u64 },
    TooManySegments,
    /// The entry point is not in an executable segment.
    BadEntry(u64),
    NoMemory,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Parse(e) => write!(f, "not an ELF file: {e}"),
            Self::NotExecutable => f.write_str("not an x86-64 ELF executable"),
            Self::BadSegment { vaddr, memsz } => write!(f, "segment {vaddr:#x}+{memsz:#x} is not inside the user half and the file"),
            Self::Overlap { vaddr } => write!(f, "segment at {vaddr:#x} shares a page with another"),
            Self::TooManySegments => write!(f, "more than {MAX_SEGMENTS} loadable segments"),
            Self::BadEntry(e) => write!(f, "entry point {e:#x} is not in an executable segment"),
            Self::NoMemory => f.write_str("out of memory"),
        }
    }
}

/// One loadable segment still backed by the image.
#[derive(Clone, Copy, Debug)]
struct Segment {
    /// The pages the image still backs (shrinks on munmap).
    pages: VaRange,
    /// Where the file bytes go, and which they are.
    vaddr: u64,
    file: &'static [u8],
}

/// A program's image as its address space's page source.
pub struct ImageSource {
    // Rank AddressSpace: a leaf taken only inside the address-space lock
    // (equal ranks may nest).
    segments: RankedMutex<Vec<Segment>>,
}

impl ImageSource {
    /// A copy for a forked child (which unmaps on its own from then on).
    pub fn duplicate(&self) -> Arc<ImageSource> {
        Arc::new(ImageSource { segments: RankedMutex::new(LockRank::AddressSpace, self.segments.lock().clone()) })
    }

    /// Back `aspace` with this image: page source, and the listener that
    /// forgets unmapped ranges.
    pub fn attach(self: &Arc<Self>, aspace: &AddressSpace) {
        aspace.set_page_source(Some(self.clone()));
        aspace.register_listener(self.clone());
    }
}

impl PageSource for ImageSource {
    fn fill(&self, va: u64, page: &mut [u8; 4096]) -> bool {
        let segs = self.segments.lock();
        let Some(s) = segs.iter().find(|s| s.pages.contains(va)) else { return false };
        // The page [va, va + 4096) meets the file bytes [vaddr, vaddr + len).
        let (lo, hi) = (va.max(s.vaddr), (va + PAGE).min(s.vaddr + s.file.len() as u64));
        if lo >= hi {
            return false; // .bss: demand-zero
        }
        let from = &s.file[(lo - s.vaddr) as usize..(hi - s.vaddr) as usize];
        page[(lo - va) as usize..(hi - va) as usize].copy_from_slice(from);
        true
    }
}

impl Listener for ImageSource {
    fn invalidate_start(&self, _: AspaceId, c: &Change, _: &mut dyn FnMut(u64)) {
        if c.kind != ChangeKind::Unmap {
            return;
        }
        // Cut the unmapped range out of every segment (at most two pieces each).
        let mut segs = self.segments.lock();
        let mut kept = Vec::new();
        for s in segs.iter() {
            let (a, b) = (s.pages.start(), s.pages.end());
            let (u0, u1) = (c.range.start(), c.range.end());
            if u1 <= a || u0 >= b {
                kept.push(*s);
                continue;
            }
            if a < u0 {
                kept.push(Segment { pages: VaRange::new(a, u0).expect("inside"), ..*s });
            }
            if u1 < b {
                kept.push(Segment { pages: VaRange::new(u1, b).expect("inside"), ..*s });
            }
        }
        *segs = kept;
    }
    fn invalidate_end(&self, _: AspaceId, _: &Change) {}
}

/// Map `image`'s segments into `aspace`; returns the entry point and the
/// source that pages them in.
pub fn load(aspace: &AddressSpace, image: &'static [u8]) -> Result<(u64, Arc<ImageSource>), LoadError> {
    let mut backed = Vec::new();
    let file = ElfBytes::<LittleEndian>::minimal_parse(image).map_err(|e| LoadError::Parse(alloc::format!("{e}")))?;
    if file.ehdr.e_machine != EM_X86_64 || file.ehdr.e_type != ET_EXEC || file.ehdr.class != elf::file::Class::ELF64 {
        return Err(LoadError::NotExecutable);
    }
    let segments = file.segments().ok_or(LoadError::NotExecutable)?;
    let entry = file.ehdr.e_entry;
    let mut entry_ok = false;
    let mut count = 0;
    for ph in segments.iter().filter(|p| p.p_type == PT_LOAD) {
        count += 1;
        if count > MAX_SEGMENTS {
            return Err(LoadError::TooManySegments);
        }
        let bad = LoadError::BadSegment { vaddr: ph.p_vaddr, memsz: ph.p_memsz };
        let end = ph.p_vaddr.checked_add(ph.p_memsz).ok_or(bad.clone())?;
        let file_end = ph.p_offset.checked_add(ph.p_filesz).ok_or(bad.clone())?;
        if ph.p_memsz == 0 || ph.p_filesz > ph.p_memsz || file_end > image.len() as u64 || ph.p_vaddr < crate::mm::USER_MIN || end > crate::mm::USER_END {
            return Err(bad);
        }
        let start = ph.p_vaddr & !(PAGE - 1);
        let len = end.next_multiple_of(PAGE) - start;
        let mut prot = Prot::empty();
        if ph.p_flags & PF_R != 0 {
            prot |= Prot::READ;
        }
        if ph.p_flags & PF_W != 0 {
            prot |= Prot::WRITE | Prot::READ;
        }
        if ph.p_flags & PF_X != 0 {
            prot |= Prot::EXEC | Prot::READ;
        }
        if prot.is_empty() {
            return Err(bad);
        }
        if prot.contains(Prot::EXEC) && (ph.p_vaddr..end).contains(&entry) {
            entry_ok = true;
        }
        aspace.mmap(Some(start), len, prot, true).map_err(|e| match e {
            crate::aspace::MmapError::Overlap => LoadError::Overlap { vaddr: ph.p_vaddr },
            _ => bad.clone(),
        })?;
        let file = &image[ph.p_offset as usize..file_end as usize];
        backed.push(Segment { pages: VaRange::new(start, start + len).map_err(|_| bad.clone())?, vaddr: ph.p_vaddr, file });
    }
    if !entry_ok {
        return Err(LoadError::BadEntry(entry));
    }
    Ok((entry, Arc::new(ImageSource { segments: RankedMutex::new(LockRank::AddressSpace, backed) })))
}
