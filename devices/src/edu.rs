//! The QEMU `edu` accelerator: identification, factorial, DMA.
//!
//! Registers (BAR0): 0x00 id (0x010000ed), 0x04 liveness (reads back the
//! NOT of what was written), 0x08 factorial, 0x20 status (bit 0: busy),
//! 0x24 interrupt status, 0x64 acknowledge; DMA: 0x80 source, 0x88
//! destination, 0x90 count, 0x98 command (bit 0 start, bit 1 direction
//! 1 = buffer → RAM, bit 2 interrupt 0x100 on completion). The device's
//! 4 KiB buffer sits at device address 0x40000.
//!
//! Rules this driver enforces *before* touching the device, because QEMU
//! aborts the whole VM otherwise: a transfer moves 1..=4095 bytes and stays
//! inside the buffer ([`DmaRequest::new`] is the only way to build one);
//! the 64-bit DMA registers are written with 64-bit accesses (a 32-bit write
//! to 0x80 clears the upper half).
//!
//! Protocol for a transfer: `start_dma(req)`; wait for the completion
//! interrupt (the kernel halts until the MSI arrives); `ack_interrupt()`;
//! then ask the IOMMU whether the device faulted — edu itself reports a
//! faulted DMA as a normal completion (a failed read leaves zeros).

use crate::mmio::Registers;
use crate::vtd::Iova;
use core::fmt;

pub const VENDOR_ID: u16 = 0x1234;
pub const DEVICE_ID: u16 = 0x11e8;
/// The ID register's value ("edu" 1.0).
pub const ID: u32 = 0x0100_00ed;
/// The device-side address of the DMA buffer.
pub const BUFFER: u64 = 0x40000;
/// The buffer's size.
pub const BUFFER_SIZE: u16 = 4096;
/// The largest transfer QEMU 7.2 accepts (count 4096 at offset 0 aborts).
pub const MAX_TRANSFER: u16 = 4095;

const REG_ID: usize = 0x00;
const REG_LIVENESS: usize = 0x04;
const REG_FACTORIAL: usize = 0x08;
const REG_STATUS: usize = 0x20;
const REG_IRQ_STATUS: usize = 0x24;
const REG_IRQ_ACK: usize = 0x64;
const REG_DMA_SRC: usize = 0x80;
const REG_DMA_DST: usize = 0x88;
const REG_DMA_COUNT: usize = 0x90;
const REG_DMA_CMD: usize = 0x98;
const CMD_START: u64 = 1;
const CMD_TO_RAM: u64 = 2;
const CMD_IRQ: u64 = 4;
/// Interrupt-status bit of a finished DMA.
pub const IRQ_DMA: u32 = 0x100;

/// Which way a transfer goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Process memory → device buffer (the device reads RAM).
    ToDevice,
    /// Device buffer → process memory (the device writes RAM).
    ToRam,
}

/// A transfer the device can do without aborting QEMU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DmaRequest {
    dir: Direction,
    ram: Iova,
    offset: u16,
    count: u16,
}

/// A refused request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DmaRequestError {
    ZeroCount,
    /// Leaves the 4 KiB buffer (or exceeds the 4095-byte limit).
    OutsideBuffer { offset: u16, count: u16 },
    /// The RAM side wraps around the address space.
    AddressWraps(Iova),
}

impl fmt::Display for DmaRequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ZeroCount => f.write_str("edu DMA of 0 bytes refused (QEMU would abort)"),
            Self::OutsideBuffer { offset, count } => {
                write!(f, "edu DMA of {count} bytes at buffer offset {offset} refused: must stay within {MAX_TRANSFER} bytes of the buffer (QEMU would abort)")
            }
            Self::AddressWraps(a) => write!(f, "edu DMA at {a} wraps around the address space"),
        }
    }
}

impl DmaRequest {
    /// `count` bytes between process address `ram` and the device buffer
    /// at `offset`. Refuses what would abort QEMU.
    pub fn new(dir: Direction, ram: Iova, offset: u16, count: u16) -> Result<Self, DmaRequestError> {
        if count == 0 {
            return Err(DmaRequestError::ZeroCount);
        }
        if offset as u32 + count as u32 > MAX_TRANSFER as u32 {
            return Err(DmaRequestError::OutsideBuffer { offset, count });
        }
        if ram.as_u64().checked_add(count as u64).is_none() {
            return Err(DmaRequestError::AddressWraps(ram));
        }
        Ok(DmaRequest { dir, ram, offset, count })
    }
    pub fn direction(&self) -> Direction {
        self.dir
    }
    pub fn ram(&self) -> Iova {
        self.ram
    }
    pub fn offset(&self) -> u16 {
        self.offset
    }
    pub fn count(&self) -> u16 {
        self.count
    }
    /// The pages of process memory the transfer touches.
    pub fn ram_pages(&self) -> (u64, u64) {
        (self.ram.as_u64() & !0xfff, (self.ram.as_u64() + self.count as u64).next_multiple_of(4096))
    }
}

/// What went wrong talking to the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EduError {
    /// The ID register did not read 0x010000ed.
    NotEdu(u32),
    /// The liveness register did not invert.
    NotAlive { wrote: u32, read: u32 },
    /// A DMA or factorial is still running.
    Busy,
    /// The device did not finish in time.
    Timeout,
}

impl fmt::Display for EduError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotEdu(id) => write!(f, "not an edu device (id {id:#x})"),
            Self::NotAlive { wrote, read } => write!(f, "edu liveness check failed: wrote {wrote:#x}, read {read:#x}"),
            Self::Busy => f.write_str("edu is busy"),
            Self::Timeout => f.write_str("edu did not finish in time"),
        }
    }
}

/// An edu device.
pub struct Edu<R: Registers> {
    regs: R,
}

impl<R: Registers> Edu<R> {
    /// Wrap BAR0's registers and check that it is an edu.
    pub fn new(regs: R) -> Result<Self, EduError> {
        let id = regs.read32(REG_ID);
        if id != ID {
            return Err(EduError::NotEdu(id));
        }
        Ok(Edu { regs })
    }

    /// The ID register.
    pub fn id(&self) -> u32 {
        self.regs.read32(REG_ID)
    }

    /// Write `value` to the liveness register and check it reads back inverted.
    pub fn check_alive(&self, value: u32) -> Result<(), EduError> {
        self.regs.write32(REG_LIVENESS, value);
        let read = self.regs.read32(REG_LIVENESS);
        if read == !value { Ok(()) } else { Err(EduError::NotAlive { wrote: value, read }) }
    }

    /// n! computed by the device (a self-test). Polls: the device computes
    /// it in a host thread, not in virtual time.
    pub fn factorial(&self, n: u32) -> Result<u32, EduError> {
        if self.regs.read32(REG_STATUS) & 1 != 0 {
            return Err(EduError::Busy);
        }
        self.regs.write32(REG_FACTORIAL, n);
        for _ in 0..10_000_000 {
            if self.regs.read32(REG_STATUS) & 1 == 0 {
                return Ok(self.regs.read32(REG_FACTORIAL));
            }
            core::hint::spin_loop();
        }
        Err(EduError::Timeout)
    }

    /// Whether a DMA is running.
    pub fn dma_busy(&self) -> bool {
        self.regs.read64(REG_DMA_CMD) & CMD_START != 0
    }

    /// Start a transfer, raising the completion interrupt when done.
    pub fn start_dma(&self, req: &DmaRequest) -> Result<(), EduError> {
        if self.dma_busy() {
            return Err(EduError::Busy); // writes while running are ignored by the device
        }
        let buf = BUFFER + req.offset as u64;
        let (src, dst, dir) = match req.dir {
            Direction::ToDevice => (req.ram.as_u64(), buf, 0),
            Direction::ToRam => (buf, req.ram.as_u64(), CMD_TO_RAM),
        };
        self.regs.write64(REG_DMA_SRC, src);
        self.regs.write64(REG_DMA_DST, dst);
        self.regs.write64(REG_DMA_COUNT, req.count as u64);
        self.regs.write64(REG_DMA_CMD, CMD_START | CMD_IRQ | dir);
        Ok(())
    }

    /// Read and acknowledge the interrupt status; returns what was pending.
    pub fn ack_interrupt(&self) -> u32 {
        let status = self.regs.read32(REG_IRQ_STATUS);
        if status != 0 {
            self.regs.write32(REG_IRQ_ACK, status);
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mmio::fake::FakeRegs;

    #[test]
    fn requests_that_would_abort_qemu_are_refused() {
        let r = |o, c| DmaRequest::new(Direction::ToDevice, Iova::new(0x1000), o, c);
        assert_eq!(r(0, 0), Err(DmaRequestError::ZeroCount));
        assert_eq!(r(0, 4096), Err(DmaRequestError::OutsideBuffer { offset: 0, count: 4096 }));
        assert_eq!(r(4000, 100), Err(DmaRequestError::OutsideBuffer { offset: 4000, count: 100 }));
        assert_eq!(r(u16::MAX, 1), Err(DmaRequestError::OutsideBuffer { offset: u16::MAX, count: 1 }));
        assert!(r(0, 4095).is_ok());
        assert!(r(2048, 2047).is_ok());
        assert!(DmaRequest::new(Direction::ToRam, Iova::new(u64::MAX - 10), 0, 100).is_err());
        assert_eq!(r(0, 1).unwrap().ram_pages(), (0x1000, 0x2000));
    }

    #[test]
    fn dma_uses_64_bit_writes_in_order() {
        let regs = FakeRegs::new(0x100);
        regs.set32(REG_ID, ID);
        let edu = Edu::new(&regs).unwrap();
        let req = DmaRequest::new(Direction::ToRam, Iova::new(0x1_2345_6000), 16, 100).unwrap();
        edu.start_dma(&req).unwrap();
        let w = regs.writes.borrow().clone();
        assert_eq!(w, [(0x80, BUFFER + 16), (0x88, 0x1_2345_6000), (0x90, 100), (0x98, 1 | 4 | 2)]);
        assert_eq!(edu.start_dma(&req), Err(EduError::Busy), "the fake's start bit stays set: busy");
    }

    #[test]
    fn identifies() {
        let regs = FakeRegs::new(0x100);
        assert_eq!(Edu::new(&regs).err(), Some(EduError::NotEdu(0)));
    }
}
