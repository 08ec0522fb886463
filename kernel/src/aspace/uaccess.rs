//! Reading and writing process memory from the kernel, with that
//! process's page table loaded: `copy_to_user` / `copy_from_user` that
//! resolve faults (demand-zero, COW, swap-in) and return an error for an
//! access the process may not make — never a kernel crash.

use super::{Access, AccessError, AddressSpace};
use crate::arch::extable;
use x86_64::registers::control::Cr3;

/// Load `pml4` into CR3 for the duration of a copy, restoring the previous
/// table afterwards (even on error). Already loaded (a nested copy, or a
/// [`Loaded`] guard): nothing is written — a CR3 write would flush the TLB
/// for nothing.
struct Activated {
    previous: Option<x86_64::structures::paging::PhysFrame>,
}

/// An address space loaded in this CPU's CR3 until dropped (the previous
/// table comes back): kernel code — tests among it — that touches user
/// memory directly, with the TLB caching it as user code's accesses would.
pub struct Loaded<'a> {
    _active: Activated,
    _space: core::marker::PhantomData<&'a AddressSpace>,
}

impl AddressSpace {
    /// Load this address space on this CPU until the guard drops. The
    /// address space cannot be dropped meanwhile (the guard borrows it).
    pub fn load(&self) -> Loaded<'_> {
        Loaded { _active: Activated::new(self.pml4()), _space: core::marker::PhantomData }
    }
}

impl Activated {
    fn new(pml4: x86_64::structures::paging::PhysFrame) -> Self {
        let previous = Cr3::read().0;
        if previous == pml4 {
            return Activated { previous: None };
        }
        // SAFETY: the PML4's kernel half is the kernel's own, so the running
        // code, stack and data stay mapped; the user half is this process's.
        // (Through `load_root`: shootdowns must know this CPU has it.)
        unsafe { crate::mm::shootdown::load_root(pml4) };
        Activated { previous: Some(previous) }
    }
}

impl Drop for Activated {
    fn drop(&mut self) {
        if let Some(previous) = self.previous {
            // SAFETY: restoring the table that was loaded before.
            unsafe { crate::mm::shootdown::load_root(previous) };
        }
    }
}

impl AddressSpace {
    /// The first address of `[start, end)` inside a PROT_NONE area, if any.
    fn no_access_in(&self, start: u64, end: u64) -> Option<u64> {
        let r = hmm::VaRange::new(start & !0xfff, end.next_multiple_of(4096)).ok()?;
        let inner = self.lock();
        let found = inner.vmas.overlapping(r).find(|v| v.prot.is_empty()).map(|v| v.range.start().max(start));
        found
    }

    fn copy(&self, addr: u64, len: usize, access: Access, mut step: impl FnMut(usize, usize) -> Result<(), (usize, extable::FaultInfo)>) -> Result<(), AccessError> {
        if addr.checked_add(len as u64).is_none_or(|end| end > crate::mm::USER_END) {
            return Err(AccessError { addr, access, reason: super::AccessFailure::NoVma });
        }
        // PROT_NONE pages stay present (supervisor-only): the kernel's own
        // access would not fault there, so refuse such areas up front (one
        // check per area, not per byte).
        if len > 0 {
            if let Some(at) = self.no_access_in(addr, addr + len as u64) {
                return Err(AccessError { addr: at, access, reason: super::AccessFailure::Protection });
            }
        }
        let _active = Activated::new(self.pml4());
        let mut done = 0;
        let mut last_fault = None;
        while done < len {
            match step(done, len - done) {
                Ok(()) => return Ok(()),
                Err((copied, fault)) => {
                    done += copied;
                    let at = fault.addr.as_u64();
                    // The same fault twice means resolving did not help: report it.
                    if last_fault == Some(at) {
                        return Err(AccessError { addr: at, access, reason: super::AccessFailure::Protection });
                    }
                    last_fault = Some(at);
                    self.handle_fault(at, access)?;
                }
            }
        }
        Ok(())
    }

    /// Write `data` into the process at `addr`.
    pub fn copy_to_user(&self, addr: u64, data: &[u8]) -> Result<(), AccessError> {
        self.copy(addr, data.len(), Access::Write, |off, n| {
            // SAFETY: the destination is process memory (user half, this
            // PML4 loaded); faults are caught by the exception table.
            unsafe { extable::copy_bytes((addr as usize + off) as *mut u8, data[off..].as_ptr(), n) }
        })
    }

    /// Read process memory at `addr` into `buf`.
    pub fn copy_from_user(&self, addr: u64, buf: &mut [u8]) -> Result<(), AccessError> {
        let len = buf.len();
        let dst = buf.as_mut_ptr();
        self.copy(addr, len, Access::Read, |off, n| {
            // SAFETY: the source is process memory; `dst[off..off + n]` is
            // within `buf`; faults are caught by the exception table.
            unsafe { extable::copy_bytes(dst.add(off), (addr as usize + off) as *const u8, n) }
        })
    }
}
