//! The qcow2 header (first cluster), parsed from bytes.
//!
//! ```text
//!  0 magic "QFI\xfb"          4 version (2|3)        8 backing_file_offset
//! 16 backing_file_size       20 cluster_bits        24 size (virtual)
//! 32 crypt_method            36 l1_size             40 l1_table_offset
//! 48 refcount_table_offset   56 refcount_table_clusters
//! 60 nb_snapshots            64 snapshots_offset
//! v3: 72 incompatible_features  80 compatible_features  88 autoclear_features
//!     96 refcount_order  100 header_length  104 compression_type
//! ```

use crate::{be_u32, be_u64, corrupt, unsupported};
use reprise_core::Result;

pub const MAGIC: u32 = 0x5146_49fb;
/// Bytes a header needs: 72 for version 2, 104 for version 3.
pub const V2_LEN: usize = 72;
pub const V3_LEN: usize = 104;

/// Caps on sizes read from the header, checked before any allocation.
pub const MAX_L1_ENTRIES: u32 = 32 << 20 >> 3; // QEMU's 32 MiB L1 limit
pub const MAX_SNAPSHOTS: u32 = 65536;
pub const MAX_REFCOUNT_TABLE_BYTES: u64 = 8 << 20;
/// Virtual sizes beyond 64 PiB are refused (QEMU's own limit is 2^63).
pub const MAX_VIRTUAL_SIZE: u64 = 1 << 56;

const INCOMPAT_DIRTY: u64 = 1 << 0;
const INCOMPAT_CORRUPT: u64 = 1 << 1;
const INCOMPAT_DATA_FILE: u64 = 1 << 2;
const INCOMPAT_COMPRESSION: u64 = 1 << 3;
const INCOMPAT_EXTL2: u64 = 1 << 4;
const INCOMPAT_KNOWN: u64 =
    INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub version: u32,
    pub cluster_bits: u32,
    pub size: u64,
    pub l1_size: u32,
    pub l1_table_offset: u64,
    pub refcount_table_offset: u64,
    pub refcount_table_clusters: u32,
    pub nb_snapshots: u32,
    pub snapshots_offset: u64,
    pub refcount_order: u32,
    /// Set while QEMU has the image open with lazy refcounts: refcounts may
    /// then be behind the tables.
    pub dirty: bool,
}

impl Header {
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// L2 entries per L2 table (one cluster of 8-byte entries).
    pub fn l2_entries(&self) -> u64 {
        self.cluster_size() / 8
    }

    /// Guest clusters in the virtual disk.
    pub fn guest_clusters(&self) -> u64 {
        self.size.div_ceil(self.cluster_size())
    }

    pub fn refcount_bits(&self) -> u32 {
        1 << self.refcount_order
    }

    /// Parse and validate a header from the first bytes of an image (at
    /// least [`V3_LEN`] bytes, or the whole file if shorter).
    pub fn parse(b: &[u8]) -> Result<Header> {
        if b.len() < V2_LEN {
            return Err(corrupt("file too short for a header"));
        }
        if be_u32(b, 0) != MAGIC {
            return Err(corrupt("not a qcow2 image (bad magic)"));
        }
        let version = be_u32(b, 4);
        if version != 2 && version != 3 {
            return Err(unsupported(format!("version {version}")));
        }
        if be_u64(b, 8) != 0 {
            return Err(unsupported("a backing file"));
        }
        let cluster_bits = be_u32(b, 20);
        if !(9..=21).contains(&cluster_bits) {
            return Err(corrupt(format!(
                "cluster_bits {cluster_bits} out of range 9..=21"
            )));
        }
        if be_u32(b, 32) != 0 {
            return Err(unsupported("encryption"));
        }
        let mut h = Header {
            version,
            cluster_bits,
            size: be_u64(b, 24),
            l1_size: be_u32(b, 36),
            l1_table_offset: be_u64(b, 40),
            refcount_table_offset: be_u64(b, 48),
            refcount_table_clusters: be_u32(b, 56),
            nb_snapshots: be_u32(b, 60),
            snapshots_offset: be_u64(b, 64),
            refcount_order: 4,
            dirty: false,
        };
        if version == 3 {
            if b.len() < V3_LEN {
                return Err(corrupt("file too short for a version 3 header"));
            }
            let incompat = be_u64(b, 72);
            if incompat & !INCOMPAT_KNOWN != 0 {
                return Err(unsupported(format!(
                    "incompatible feature bits {:#x}",
                    incompat & !INCOMPAT_KNOWN
                )));
            }
            if incompat & INCOMPAT_CORRUPT != 0 {
                return Err(corrupt("the image is marked corrupt"));
            }
            if incompat & INCOMPAT_DATA_FILE != 0 {
                return Err(unsupported("an external data file"));
            }
            if incompat & INCOMPAT_EXTL2 != 0 {
                return Err(unsupported("extended L2 entries (subclusters)"));
            }
            h.dirty = incompat & INCOMPAT_DIRTY != 0;
            h.refcount_order = be_u32(b, 96);
            if h.refcount_order > 6 {
                return Err(corrupt(format!(
                    "refcount_order {} above 6",
                    h.refcount_order
                )));
            }
            let header_length = be_u32(b, 100) as usize;
            if header_length < V3_LEN {
                return Err(corrupt(format!("header_length {header_length} below 104")));
            }
            if incompat & INCOMPAT_COMPRESSION != 0 {
                let ctype = b.get(104).copied().unwrap_or(0);
                if ctype != 0 {
                    return Err(unsupported(format!("compression type {ctype} (only zlib)")));
                }
            }
        }
        h.validate()?;
        Ok(h)
    }

    /// Check that the tables the header points at lie inside a file of
    /// `file_len` bytes: an image cut short (or lying) is corrupt, not an
    /// empty disk.
    pub fn check_within(&self, file_len: u64) -> Result<()> {
        let cs = self.cluster_size();
        if self.refcount_table_clusters == 0 || self.refcount_table_offset == 0 {
            return Err(corrupt("no refcount table"));
        }
        if self.l1_size > 0 && self.l1_table_offset == 0 {
            return Err(corrupt("the L1 table overlaps the header"));
        }
        let tables = [
            ("L1 table", self.l1_table_offset, self.l1_size as u64 * 8),
            (
                "refcount table",
                self.refcount_table_offset,
                self.refcount_table_clusters as u64 * cs,
            ),
            (
                "snapshot table",
                self.snapshots_offset,
                // Each entry is at least 40 bytes.
                self.nb_snapshots as u64 * 40,
            ),
        ];
        for (name, off, len) in tables {
            if len == 0 {
                continue;
            }
            match off.checked_add(len) {
                Some(end) if end <= file_len => {}
                _ => {
                    return Err(corrupt(format!(
                        "the {name} ({len} bytes at {off:#x}) lies beyond the end of the file ({file_len} bytes)"
                    )))
                }
            }
        }
        Ok(())
    }

    fn validate(&self) -> Result<()> {
        let cs = self.cluster_size();
        if self.size > MAX_VIRTUAL_SIZE {
            return Err(unsupported(format!(
                "a virtual size of {} bytes",
                self.size
            )));
        }
        if self.l1_size > MAX_L1_ENTRIES {
            return Err(corrupt(format!("L1 size {} above the limit", self.l1_size)));
        }
        let needed = self.guest_clusters().div_ceil(self.l2_entries());
        if (self.l1_size as u64) < needed {
            return Err(corrupt(format!(
                "L1 table of {} entries cannot map {} bytes",
                self.l1_size, self.size
            )));
        }
        if self.nb_snapshots > MAX_SNAPSHOTS {
            return Err(corrupt(format!(
                "{} snapshots, above the limit",
                self.nb_snapshots
            )));
        }
        if self.refcount_table_clusters as u64 * cs > MAX_REFCOUNT_TABLE_BYTES {
            return Err(corrupt("refcount table larger than 8 MiB"));
        }
        for (name, off) in [
            ("L1 table", self.l1_table_offset),
            ("refcount table", self.refcount_table_offset),
            ("snapshot table", self.snapshots_offset),
        ] {
            if off % cs != 0 {
                return Err(corrupt(format!(
                    "{name} offset {off:#x} is not cluster aligned"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal valid v3 header: 64 KiB clusters, 1 GiB.
    pub fn sample() -> Vec<u8> {
        let mut b = vec![0u8; 112];
        b[0..4].copy_from_slice(&MAGIC.to_be_bytes());
        b[4..8].copy_from_slice(&3u32.to_be_bytes());
        b[20..24].copy_from_slice(&16u32.to_be_bytes());
        b[24..32].copy_from_slice(&(1u64 << 30).to_be_bytes());
        b[36..40].copy_from_slice(&2u32.to_be_bytes());
        b[40..48].copy_from_slice(&0x30000u64.to_be_bytes());
        b[48..56].copy_from_slice(&0x10000u64.to_be_bytes());
        b[56..60].copy_from_slice(&1u32.to_be_bytes());
        b[96..100].copy_from_slice(&4u32.to_be_bytes());
        b[100..104].copy_from_slice(&112u32.to_be_bytes());
        b
    }

    #[test]
    fn parses_a_v3_header() {
        let h = Header::parse(&sample()).unwrap();
        assert_eq!((h.version, h.cluster_size(), h.size), (3, 65536, 1 << 30));
        assert_eq!(
            (h.l2_entries(), h.guest_clusters(), h.refcount_bits()),
            (8192, 16384, 16)
        );
    }

    fn patched(at: usize, bytes: &[u8]) -> Vec<u8> {
        let mut b = sample();
        b[at..at + bytes.len()].copy_from_slice(bytes);
        b
    }

    #[test]
    fn refuses_what_it_cannot_read_safely() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (patched(0, b"QFI\0"), "bad magic"),
            (patched(4, &4u32.to_be_bytes()), "version 4"),
            (patched(8, &0x200u64.to_be_bytes()), "backing file"),
            (patched(20, &30u32.to_be_bytes()), "cluster_bits"),
            (patched(32, &1u32.to_be_bytes()), "encryption"),
            (
                patched(72, &(1u64 << 2).to_be_bytes()),
                "external data file",
            ),
            (patched(72, &(1u64 << 1).to_be_bytes()), "marked corrupt"),
            (patched(72, &(1u64 << 4).to_be_bytes()), "extended L2"),
            (
                patched(72, &(1u64 << 9).to_be_bytes()),
                "incompatible feature",
            ),
            (patched(36, &1u32.to_be_bytes()), "cannot map"),
            (patched(36, &u32::MAX.to_be_bytes()), "L1 size"),
            (patched(60, &u32::MAX.to_be_bytes()), "snapshots"),
            (patched(40, &0x30001u64.to_be_bytes()), "aligned"),
            (patched(96, &7u32.to_be_bytes()), "refcount_order"),
            (sample()[..50].to_vec(), "too short"),
        ];
        for (bytes, words) in cases {
            let e = Header::parse(&bytes).unwrap_err();
            assert!(e.message.contains(words), "{words}: {}", e.message);
            assert!(e.code.starts_with("qcow2_"));
        }
    }

    #[test]
    fn tables_must_lie_inside_the_file() {
        let h = Header::parse(&sample()).unwrap();
        // L1 at 0x30000 (2 entries), refcount table at 0x10000 (1 cluster).
        h.check_within(0x30010).unwrap();
        for (len, words) in [(200, "beyond the end"), (0x30008, "L1 table")] {
            let e = h.check_within(len).unwrap_err();
            assert!(e.message.contains(words), "{words}: {}", e.message);
            assert_eq!(e.code, "qcow2_corrupt");
        }
        let e = Header::parse(&patched(56, &0u32.to_be_bytes()))
            .unwrap()
            .check_within(1 << 20)
            .unwrap_err();
        assert!(e.message.contains("no refcount table"), "{}", e.message);
        let e = Header::parse(&patched(40, &0u64.to_be_bytes()))
            .unwrap()
            .check_within(1 << 20)
            .unwrap_err();
        assert!(e.message.contains("overlaps"), "{}", e.message);
    }
}
