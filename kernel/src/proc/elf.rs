//! Loading a program: the ELF file's `PT_LOAD` segments become areas of a
//! fresh address space with the segments' own protection.
//!
//! Each segment's pages are mapped writable first, the file bytes copied in
//! with `copy_to_user` — which takes the demand-zero faults through
//! `AddressSpace::handle_fault` like any other access — and then the area
//! gets its final protection (text r-x, rodata r--, data rw-). The part of
//! a segment past its file bytes (.bss) is never touched: it is
//! demand-zero on the program's first access.
//!
//! Every number from the file is checked with checked arithmetic: a
//! segment must lie in the user half, inside the file, and not share a
//! page with another segment.

use crate::aspace::{AddressSpace, Prot};
use core::fmt;
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

/// Load `image` into `aspace`; returns the entry point.
pub fn load(aspace: &AddressSpace, image: &[u8]) -> Result<u64, LoadError> {
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
        aspace.mmap(Some(start), len, Prot::READ | Prot::WRITE, true).map_err(|e| match e {
            crate::aspace::MmapError::Overlap => LoadError::Overlap { vaddr: ph.p_vaddr },
            _ => bad.clone(),
        })?;
        let bytes = &image[ph.p_offset as usize..file_end as usize];
        aspace.copy_to_user(ph.p_vaddr, bytes).map_err(|_| LoadError::NoMemory)?;
        if prot != Prot::READ | Prot::WRITE {
            aspace.mprotect(start, len, prot).map_err(|_| LoadError::NoMemory)?;
        }
    }
    if !entry_ok {
        return Err(LoadError::BadEntry(entry));
    }
    Ok(entry)
}
