//! VT-d register offsets and the capability registers, decoded.

/// Version.
pub const VER: usize = 0x00;
/// Capability.
pub const CAP: usize = 0x08;
/// Extended capability.
pub const ECAP: usize = 0x10;
/// Global command / status.
pub const GCMD: usize = 0x18;
pub const GSTS: usize = 0x1c;
/// Root table address (legacy mode: low bits 0).
pub const RTADDR: usize = 0x20;
/// Context command.
pub const CCMD: usize = 0x28;
/// Fault status, event control/data/address.
pub const FSTS: usize = 0x34;
pub const FECTL: usize = 0x38;
pub const FEDATA: usize = 0x3c;
pub const FEADDR: usize = 0x40;
pub const FEUADDR: usize = 0x44;

/// GCMD/GSTS bits.
pub const GCMD_TE: u32 = 1 << 31;
pub const GCMD_SRTP: u32 = 1 << 30;
/// GSTS bits that are one-shot commands and must not be written back.
pub const GSTS_KEEP_MASK: u32 = 0x96ff_ffff;

/// FSTS bits.
pub const FSTS_PFO: u32 = 1 << 0;
pub const FSTS_PPF: u32 = 1 << 1;
/// All write-1-to-clear FSTS bits.
pub const FSTS_CLEAR: u32 = 0x7d;
/// FECTL interrupt mask.
pub const FECTL_IM: u32 = 1 << 31;

/// The capability register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cap(pub u64);

impl Cap {
    fn bits(&self, lo: u32, hi: u32) -> u64 {
        (self.0 >> lo) & ((1 << (hi - lo + 1)) - 1)
    }
    /// Supported adjusted guest address widths (bit 1: 39-bit/3-level, bit 2: 48-bit/4-level).
    pub fn sagaw(&self) -> u64 {
        self.bits(8, 12)
    }
    pub fn supports_4_level(&self) -> bool {
        self.sagaw() & 0b100 != 0
    }
    /// Maximum guest address width.
    pub fn mgaw(&self) -> u32 {
        self.bits(16, 21) as u32 + 1
    }
    /// Offset of the first fault-recording register.
    pub fn fault_offset(&self) -> usize {
        self.bits(24, 33) as usize * 16
    }
    /// Number of fault-recording registers.
    pub fn fault_records(&self) -> usize {
        self.bits(40, 47) as usize + 1
    }
    /// Page-selective invalidation supported.
    pub fn psi(&self) -> bool {
        self.0 & (1 << 39) != 0
    }
    /// Maximum address-mask value for page-selective invalidation.
    pub fn mamv(&self) -> u8 {
        self.bits(48, 53) as u8
    }
    /// Caching mode: not-present entries may be cached (needs flushes on map).
    pub fn caching_mode(&self) -> bool {
        self.0 & (1 << 7) != 0
    }
    /// Required write-buffer flushing.
    pub fn rwbf(&self) -> bool {
        self.0 & (1 << 4) != 0
    }
    /// Number of domain ids: 2^(4 + 2*ND).
    pub fn domains(&self) -> u32 {
        1 << (4 + 2 * self.bits(0, 2))
    }
}

/// The extended capability register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ecap(pub u64);

impl Ecap {
    /// Offset of the IOTLB registers (IVA at +0, IOTLB at +8).
    pub fn iotlb_offset(&self) -> usize {
        ((self.0 >> 8) & 0x3ff) as usize * 16
    }
    /// Queued invalidation supported.
    pub fn qi(&self) -> bool {
        self.0 & (1 << 1) != 0
    }
    /// Device-TLB supported.
    pub fn device_tlb(&self) -> bool {
        self.0 & (1 << 2) != 0
    }
    /// Interrupt remapping supported.
    pub fn ir(&self) -> bool {
        self.0 & (1 << 3) != 0
    }
    /// Pass-through supported.
    pub fn pass_through(&self) -> bool {
        self.0 & (1 << 6) != 0
    }
}

impl core::fmt::Display for Cap {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "CAP {:#018x}: 4-level {}, MGAW {}, {} fault record(s) at {:#x}, PSI {}, MAMV {}, CM {}, RWBF {}, {} domain ids",
            self.0,
            self.supports_4_level(),
            self.mgaw(),
            self.fault_records(),
            self.fault_offset(),
            self.psi(),
            self.mamv(),
            self.caching_mode(),
            self.rwbf(),
            self.domains()
        )
    }
}

impl core::fmt::Display for Ecap {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "ECAP {:#010x}: IOTLB regs at {:#x}, QI {}, IR {}, PT {}, device-TLB {}",
            self.0,
            self.iotlb_offset(),
            self.qi(),
            self.ir(),
            self.pass_through(),
            self.device_tlb()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The values measured on QEMU 7.2's intel-iommu (aw-bits=48, TCG).
    #[test]
    fn decodes_qemu_values() {
        let cap = Cap(0x00d2_008c_222f_0606);
        assert!(cap.supports_4_level());
        assert_eq!(cap.mgaw(), 48);
        assert_eq!(cap.fault_offset(), 0x220);
        assert_eq!(cap.fault_records(), 1);
        assert!(cap.psi());
        assert_eq!(cap.mamv(), 18);
        assert!(!cap.caching_mode());
        assert!(!cap.rwbf());
        let ecap = Ecap(0xf0_0f4a);
        assert_eq!(ecap.iotlb_offset(), 0xf0);
        assert!(ecap.qi());
        assert!(ecap.pass_through());
        assert!(!ecap.device_tlb());
    }
}
