//! The ACPI DMAR table, parsed by hand (the `acpi` crate has no DMAR
//! support): the remapping hardware units (DRHD) with their register base,
//! flags and device scopes. Every length is checked; a malformed table is
//! an error, never a panic or an out-of-bounds read.
//!
//! ```text
//!  header (36) | host address width - 1 (1) | flags (1) | reserved (10)
//!  then structures: type u16 | length u16 | body
//!    DRHD (type 0): flags u8 | reserved u8 | segment u16 | register base u64 | device scopes
//!      scope: type u8 | length u8 | reserved u16 | enumeration id u8 | start bus u8 | (dev, fn) pairs
//! ```

use alloc::vec::Vec;
use core::fmt;

/// One device scope entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceScope {
    /// 1 = PCI endpoint, 2 = PCI bridge, 3 = IOAPIC, 4 = HPET, 5 = ACPI namespace device.
    pub kind: u8,
    pub enumeration_id: u8,
    pub start_bus: u8,
    /// (device, function) hops from the start bus.
    pub path: Vec<(u8, u8)>,
}

/// A DMA remapping hardware unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drhd {
    /// Bit 0: INCLUDE_PCI_ALL (the unit covers every device not named elsewhere).
    pub flags: u8,
    pub segment: u16,
    pub register_base: u64,
    pub scopes: Vec<DeviceScope>,
}

impl Drhd {
    pub fn include_pci_all(&self) -> bool {
        self.flags & 1 != 0
    }
}

/// The parsed table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dmar {
    pub host_address_width: u8,
    pub flags: u8,
    pub units: Vec<Drhd>,
    /// Structures of other types (RMRR, ATSR, ...), skipped.
    pub other_structures: usize,
}

/// What was wrong with the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DmarError {
    BadSignature,
    /// The header's length disagrees with the bytes given, or is too short.
    BadLength { declared: usize, available: usize },
    BadChecksum,
    /// A structure at `offset` has an impossible length.
    BadStructure { offset: usize },
}

impl fmt::Display for DmarError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadSignature => f.write_str("not a DMAR table"),
            Self::BadLength { declared, available } => write!(f, "DMAR length {declared} but {available} bytes"),
            Self::BadChecksum => f.write_str("DMAR checksum mismatch"),
            Self::BadStructure { offset } => write!(f, "malformed DMAR structure at offset {offset}"),
        }
    }
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}

impl Dmar {
    /// Parse the whole table (`bytes` = the table, header included).
    pub fn parse(bytes: &[u8]) -> Result<Dmar, DmarError> {
        if bytes.len() < 48 || &bytes[0..4] != b"DMAR" {
            return Err(if bytes.len() >= 4 && &bytes[0..4] != b"DMAR" { DmarError::BadSignature } else { DmarError::BadLength { declared: 0, available: bytes.len() } });
        }
        let declared = u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize;
        if declared < 48 || declared > bytes.len() {
            return Err(DmarError::BadLength { declared, available: bytes.len() });
        }
        let bytes = &bytes[..declared];
        if bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)) != 0 {
            return Err(DmarError::BadChecksum);
        }
        let mut dmar = Dmar { host_address_width: bytes[36] + 1, flags: bytes[37], units: Vec::new(), other_structures: 0 };
        let mut off = 48;
        while off < bytes.len() {
            if off + 4 > bytes.len() {
                return Err(DmarError::BadStructure { offset: off });
            }
            let (kind, len) = (u16_at(bytes, off), u16_at(bytes, off + 2) as usize);
            if len < 4 || off + len > bytes.len() {
                return Err(DmarError::BadStructure { offset: off });
            }
            let s = &bytes[off..off + len];
            if kind == 0 {
                dmar.units.push(Self::drhd(s, off)?);
            } else {
                dmar.other_structures += 1;
            }
            off += len;
        }
        Ok(dmar)
    }

    fn drhd(s: &[u8], at: usize) -> Result<Drhd, DmarError> {
        if s.len() < 16 {
            return Err(DmarError::BadStructure { offset: at });
        }
        let mut unit = Drhd { flags: s[4], segment: u16_at(s, 6), register_base: u64::from_le_bytes(s[8..16].try_into().unwrap()), scopes: Vec::new() };
        let mut off = 16;
        while off < s.len() {
            if off + 6 > s.len() {
                return Err(DmarError::BadStructure { offset: at + off });
            }
            let len = s[off + 1] as usize;
            if len < 6 || off + len > s.len() || !(len - 6).is_multiple_of(2) {
                return Err(DmarError::BadStructure { offset: at + off });
            }
            let path = s[off + 6..off + len].chunks(2).map(|p| (p[0], p[1])).collect();
            unit.scopes.push(DeviceScope { kind: s[off], enumeration_id: s[off + 4], start_bus: s[off + 5], path });
            off += len;
        }
        Ok(unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    /// A DMAR like QEMU's: one unit at 0xfed90000, scopes for 00:01.0 and 00:02.0.
    fn table() -> Vec<u8> {
        let mut t = vec![0u8; 48];
        t[0..4].copy_from_slice(b"DMAR");
        t[36] = 47 - 1 + 1 - 1; // HAW 47 → stored as 46
        t[36] = 46;
        let mut drhd = vec![0u8, 0, 0, 0, 0, 0, 0, 0];
        drhd.extend_from_slice(&0xfed9_0000u64.to_le_bytes());
        for dev in [1u8, 2] {
            drhd.extend_from_slice(&[1, 8, 0, 0, 0, 0, dev, 0]);
        }
        let len = drhd.len() as u16;
        drhd[2..4].copy_from_slice(&len.to_le_bytes());
        t.extend_from_slice(&drhd);
        t.extend_from_slice(&[1, 0, 8, 0, 0, 0, 0, 0]); // an RMRR-typed filler
        let total = t.len() as u32;
        t[4..8].copy_from_slice(&total.to_le_bytes());
        let sum = t.iter().fold(0u8, |a, b| a.wrapping_add(*b));
        t[9] = 0u8.wrapping_sub(sum);
        t
    }

    #[test]
    fn parses_units_and_scopes() {
        let d = Dmar::parse(&table()).unwrap();
        assert_eq!(d.host_address_width, 47);
        assert_eq!(d.units.len(), 1);
        let u = &d.units[0];
        assert_eq!(u.register_base, 0xfed9_0000);
        assert!(!u.include_pci_all());
        assert_eq!(u.scopes.iter().map(|s| s.path.clone()).collect::<Vec<_>>(), [vec![(1, 0)], vec![(2, 0)]]);
        assert_eq!(d.other_structures, 1);
    }

    #[test]
    fn malformed_tables_are_errors() {
        let good = table();
        let mut bad = good.clone();
        bad[0] = b'X';
        assert_eq!(Dmar::parse(&bad), Err(DmarError::BadSignature));
        assert!(matches!(Dmar::parse(&good[..40]), Err(DmarError::BadLength { .. })));
        let mut bad = good.clone();
        bad[20] ^= 1;
        assert_eq!(Dmar::parse(&bad), Err(DmarError::BadChecksum));
        // A structure claiming more bytes than the table has.
        let mut bad = good.clone();
        bad[50] = 0xff;
        bad[9] = bad[9].wrapping_sub(0xff - good[50]);
        assert!(matches!(Dmar::parse(&bad), Err(DmarError::BadStructure { offset: 48 })));
        // A zero-length structure would loop forever: refused.
        let mut bad = good.clone();
        let l = good[50];
        bad[50] = 0;
        bad[9] = bad[9].wrapping_add(l);
        assert!(matches!(Dmar::parse(&bad), Err(DmarError::BadStructure { .. })));
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_garbage(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200), declared in 0u32..300) {
            let mut b = bytes;
            if b.len() >= 8 {
                b[0..4].copy_from_slice(b"DMAR");
                b[4..8].copy_from_slice(&declared.to_le_bytes());
            }
            let _ = Dmar::parse(&b);
        }
    }
}
