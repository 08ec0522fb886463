//! Fault records: what the IOMMU says about a DMA it refused.
//!
//! Record layout (128 bits at FRO + 16 * i): low qword = faulting page
//! address (bits 63:12); high qword: bit 63 F (valid), bit 62 T (type:
//! 1 = read, 0 = write), bits 39:32 the reason, bits 15:0 the source id.
//! Bits 55:40 read as 0xffff for page-walk faults on QEMU: masked.
//!
//! QEMU has ONE record. While it is pending, further faults from the same
//! source are dropped without even the overflow flag, so the fault log is
//! not a complete channel: the edu driver treats "this transfer's source
//! had a pending fault" as "this transfer failed", and the caller re-checks.

use crate::pci::Bdf;
use core::fmt;

/// Read or write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Access::Read => "read",
            Access::Write => "write",
        })
    }
}

/// One decoded fault record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultRecord {
    /// The page the device tried to reach (an IOVA).
    pub addr: u64,
    pub access: Access,
    /// The fault reason code.
    pub reason: u8,
    pub source: Bdf,
}

impl FaultRecord {
    /// Decode a record; `None` if its F bit is clear.
    pub fn decode(lo: u64, hi: u64) -> Option<FaultRecord> {
        if hi & (1 << 63) == 0 {
            return None;
        }
        Some(FaultRecord {
            addr: lo & !0xfff,
            access: if hi & (1 << 62) != 0 { Access::Read } else { Access::Write },
            reason: ((hi >> 32) & 0xff) as u8,
            source: Bdf::from_source_id(hi as u16),
        })
    }

    /// The reason in words (VT-d spec, table of fault reasons).
    pub fn reason_text(&self) -> &'static str {
        match self.reason {
            0x1 => "root entry not present",
            0x2 => "context entry not present",
            0x3 => "invalid context entry",
            0x4 => "address beyond the address width",
            0x5 => "write to a non-writable or absent entry",
            0x6 => "read of an absent entry",
            0x7 => "page-table walk hit a bad address",
            0xa => "reserved bit set in a root entry",
            0xb => "reserved bit set in a context entry",
            0xc => "reserved bit set in a page-table entry",
            0xd => "translation type blocked",
            _ => "other",
        }
    }
}

impl fmt::Display for FaultRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DMA {} fault at {:#x} from {} (reason {:#x}: {})", self.access, self.addr, self.source, self.reason, self.reason_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_read_and_write_faults() {
        // As measured on QEMU: a read of an absent entry by 00:01.0.
        let r = FaultRecord::decode(0x1_2345_6000, 1 << 63 | 1 << 62 | 0xffff << 40 | 0x6 << 32 | 0x0008).unwrap();
        assert_eq!(r, FaultRecord { addr: 0x1_2345_6000, access: Access::Read, reason: 6, source: Bdf::new(0, 1, 0) });
        let w = FaultRecord::decode(0x7000, 1 << 63 | 0x5 << 32 | 0x0010).unwrap();
        assert_eq!((w.access, w.reason, w.source), (Access::Write, 5, Bdf::new(0, 2, 0)));
        assert!(FaultRecord::decode(0x7000, 0x5 << 32).is_none(), "F clear: no record");
        assert!(alloc::format!("{w}").contains("write fault at 0x7000 from 00:02.0"));
    }
}
