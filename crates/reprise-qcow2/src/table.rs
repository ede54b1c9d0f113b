//! L1 and L2 table entries, decoded from their 64-bit values.
//!
//! L1 entry: bits 9–55 the L2 table's host offset (0: no L2 table), bit 63
//! "copied" (refcount is 1). L2 entry: bit 62 compressed, bit 63 copied;
//! a standard entry has bits 9–55 the data cluster's host offset and bit 0
//! "reads as zeros" (version 3); a compressed entry packs offset and size.

use crate::corrupt;
use reprise_core::Result;

pub const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const COMPRESSED: u64 = 1 << 62;
const ZERO: u64 = 1;
/// Bits that must be zero in a standard L2 entry (1–8 and 56–61).
const L2_RESERVED: u64 = 0x3f00_0000_0000_01fe;

/// Where the data of one guest cluster is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapping {
    /// Never written: reads as zeros (there is no backing file).
    Unallocated,
    /// Explicitly zero.
    Zero,
    /// A host cluster at this offset.
    Data(u64),
    /// Compressed data: `len` bytes at host offset `offset`.
    Compressed { offset: u64, len: u64 },
}

impl Mapping {
    /// Whether the guest sees only zeros here.
    pub fn is_zero(self) -> bool {
        matches!(self, Mapping::Unallocated | Mapping::Zero)
    }
}

/// The L2 table offset of an L1 entry (`None`: unallocated).
pub fn l1_l2_offset(entry: u64, cluster_size: u64) -> Result<Option<u64>> {
    let off = entry & OFFSET_MASK;
    if off == 0 {
        return Ok(None);
    }
    if !off.is_multiple_of(cluster_size) {
        return Err(corrupt(format!(
            "L2 table offset {off:#x} is not cluster aligned"
        )));
    }
    Ok(Some(off))
}

pub fn decode_l2(entry: u64, cluster_bits: u32) -> Result<Mapping> {
    if entry & COMPRESSED != 0 {
        let x = 62 - (cluster_bits - 8);
        let offset = entry & ((1u64 << x) - 1);
        let sectors = ((entry >> x) & ((1u64 << (cluster_bits - 8)) - 1)) + 1;
        let len = sectors * 512 - (offset & 511);
        return Ok(Mapping::Compressed { offset, len });
    }
    if entry & L2_RESERVED != 0 {
        return Err(corrupt(format!(
            "L2 entry {entry:#x} has reserved bits set"
        )));
    }
    if entry & ZERO != 0 {
        return Ok(Mapping::Zero);
    }
    let off = entry & OFFSET_MASK;
    if off == 0 {
        return Ok(Mapping::Unallocated);
    }
    if !off.is_multiple_of(1u64 << cluster_bits) {
        return Err(corrupt(format!(
            "data cluster offset {off:#x} is not cluster aligned"
        )));
    }
    Ok(Mapping::Data(off))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_each_kind_of_entry() {
        assert_eq!(decode_l2(0, 16).unwrap(), Mapping::Unallocated);
        assert_eq!(decode_l2(1, 16).unwrap(), Mapping::Zero);
        assert_eq!(
            decode_l2((1 << 63) | 0x70000 | 1, 16).unwrap(),
            Mapping::Zero
        );
        assert_eq!(
            decode_l2((1 << 63) | 0x70000, 16).unwrap(),
            Mapping::Data(0x70000)
        );
        let x = 62 - 8;
        let c = COMPRESSED | (2u64 << x) | 0x12345;
        assert_eq!(
            decode_l2(c, 16).unwrap(),
            Mapping::Compressed {
                offset: 0x12345,
                len: 3 * 512 - 0x145
            }
        );
        assert!(decode_l2(0x70000 | 0x2, 16).is_err(), "reserved bits");
        assert!(decode_l2(0x70200, 16).is_err(), "unaligned");
        assert_eq!(
            l1_l2_offset((1 << 63) | 0x40000, 65536).unwrap(),
            Some(0x40000)
        );
        assert!(l1_l2_offset(0x40200, 65536).is_err());
    }
}
