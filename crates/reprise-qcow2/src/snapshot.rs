//! Entries of the internal snapshot table, parsed from bytes.
//!
//! ```text
//!  0 l1_table_offset u64     8 l1_size u32        12 id_str_size u16
//! 14 name_size u16          16 date_sec u32       20 date_nsec u32
//! 24 vm_clock_nsec u64      32 vm_state_size u32  36 extra_data_size u32
//! 40 extra data: vm_state_size_large u64, disk_size u64, icount u64 (as long as it goes)
//!    then id_str, then name; the entry is padded to a multiple of 8 bytes
//! ```

use crate::{be_u16, be_u32, be_u64, corrupt};
use reprise_core::Result;

pub const FIXED_LEN: usize = 40;
/// QEMU's own cap on the whole table.
pub const MAX_TABLE_BYTES: u64 = 64 << 20;
const MAX_EXTRA: u32 = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotEntry {
    pub l1_table_offset: u64,
    pub l1_size: u32,
    pub id: String,
    pub name: String,
    pub date_sec: u32,
    pub date_nsec: u32,
    pub vm_clock_nsec: u64,
    /// Bytes of saved VM state (RAM and devices); 0 for a disk-only snapshot.
    pub vm_state_size: u64,
    /// The disk's virtual size when the snapshot was taken (version 3).
    pub disk_size: Option<u64>,
}

/// The length of the entry whose first [`FIXED_LEN`] bytes are `fixed`,
/// without the padding to 8 bytes (QEMU does not write the last entry's
/// padding); the next entry starts at `entry_len(..).next_multiple_of(8)`.
pub fn entry_len(fixed: &[u8]) -> Result<usize> {
    if fixed.len() < FIXED_LEN {
        return Err(corrupt("snapshot table entry cut short"));
    }
    let extra = be_u32(fixed, 36);
    if extra > MAX_EXTRA {
        return Err(corrupt(format!("snapshot extra data of {extra} bytes")));
    }
    Ok(FIXED_LEN + extra as usize + be_u16(fixed, 12) as usize + be_u16(fixed, 14) as usize)
}

/// Parse one entry; `b` holds at least [`entry_len`] bytes.
pub fn parse_entry(b: &[u8]) -> Result<SnapshotEntry> {
    let len = entry_len(b)?;
    if b.len() < len {
        return Err(corrupt("snapshot table entry cut short"));
    }
    let extra = be_u32(b, 36) as usize;
    let id_len = be_u16(b, 12) as usize;
    let name_len = be_u16(b, 14) as usize;
    let ex = &b[FIXED_LEN..FIXED_LEN + extra];
    let vm_state_small = be_u32(b, 32) as u64;
    let vm_state_size = if ex.len() >= 8 {
        be_u64(ex, 0)
    } else {
        vm_state_small
    };
    let disk_size = (ex.len() >= 16).then(|| be_u64(ex, 8));
    let at = FIXED_LEN + extra;
    let text = |s: &[u8]| String::from_utf8_lossy(s).into_owned();
    Ok(SnapshotEntry {
        l1_table_offset: be_u64(b, 0),
        l1_size: be_u32(b, 8),
        id: text(&b[at..at + id_len]),
        name: text(&b[at + id_len..at + id_len + name_len]),
        date_sec: be_u32(b, 16),
        date_nsec: be_u32(b, 20),
        vm_clock_nsec: be_u64(b, 24),
        vm_state_size,
        disk_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn entry(name: &str, vm_state: u64) -> Vec<u8> {
        let mut b = vec![0u8; FIXED_LEN];
        b[0..8].copy_from_slice(&0x50000u64.to_be_bytes());
        b[8..12].copy_from_slice(&2u32.to_be_bytes());
        b[12..14].copy_from_slice(&1u16.to_be_bytes());
        b[14..16].copy_from_slice(&(name.len() as u16).to_be_bytes());
        b[16..20].copy_from_slice(&1_700_000_000u32.to_be_bytes());
        b[36..40].copy_from_slice(&16u32.to_be_bytes());
        b.extend_from_slice(&vm_state.to_be_bytes());
        b.extend_from_slice(&(1u64 << 30).to_be_bytes());
        b.push(b'1');
        b.extend_from_slice(name.as_bytes());
        b.resize(b.len().next_multiple_of(8), 0);
        b
    }

    #[test]
    fn parses_an_entry_with_extra_data() {
        let b = entry("before-upgrade", 300 << 20);
        assert_eq!(entry_len(&b).unwrap().next_multiple_of(8), b.len());
        let e = parse_entry(&b).unwrap();
        assert_eq!(e.name, "before-upgrade");
        assert_eq!(e.id, "1");
        assert_eq!((e.l1_table_offset, e.l1_size), (0x50000, 2));
        assert_eq!((e.vm_state_size, e.disk_size), (300 << 20, Some(1 << 30)));
    }

    #[test]
    fn refuses_cut_or_absurd_entries() {
        let b = entry("x", 0);
        assert!(parse_entry(&b[..b.len() - 8]).is_err());
        assert!(
            parse_entry(&b[..entry_len(&b).unwrap()]).is_ok(),
            "padding is optional"
        );
        assert!(parse_entry(&b[..20]).is_err());
        let mut huge = b.clone();
        huge[36..40].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(entry_len(&huge).unwrap_err().message.contains("extra data"));
    }
}
