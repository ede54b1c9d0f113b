//! An open qcow2 image: the parsed header and snapshot table, and the reads
//! that follow tables through a [`Source`].

use crate::header::{Header, V3_LEN};
use crate::snapshot::{self, SnapshotEntry, FIXED_LEN, MAX_TABLE_BYTES};
use crate::table::{decode_l2, l1_l2_offset, Mapping};
use crate::{be_u64, corrupt};
use reprise_core::{Error, Result};
use std::collections::HashMap;

/// Where the bytes of an image come from.
pub trait Source {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()>;
    fn size(&self) -> Result<u64>;
}

pub(crate) fn io(e: std::io::Error) -> Error {
    Error::unavailable("io_error", format!("reading the image: {e}")).with_source(e)
}

impl Source for std::fs::File {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset).map_err(io)
    }
    fn size(&self) -> Result<u64> {
        self.metadata().map(|m| m.len()).map_err(io)
    }
}

impl Source for [u8] {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let start = usize::try_from(offset).map_err(|_| corrupt("offset beyond the image"))?;
        let src = self
            .get(start..start + buf.len())
            .ok_or_else(|| corrupt(format!("read at {offset:#x} beyond the end of the image")))?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn size(&self) -> Result<u64> {
        Ok(<[u8]>::len(self) as u64)
    }
}

impl Source for Vec<u8> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.as_slice().read_at(offset, buf)
    }
    fn size(&self) -> Result<u64> {
        Ok(self.as_slice().len() as u64)
    }
}

pub struct Image<S: Source> {
    src: S,
    pub header: Header,
    pub snapshots: Vec<SnapshotEntry>,
    file_len: u64,
}

impl<S: Source> Image<S> {
    /// Where the image's bytes come from.
    pub fn source(&self) -> &S {
        &self.src
    }

    /// Parse the header and the snapshot table.
    pub fn open(src: S) -> Result<Image<S>> {
        let file_len = src.size()?;
        let mut head = vec![0u8; (V3_LEN + 8).min(file_len as usize)];
        src.read_at(0, &mut head)?;
        let header = Header::parse(&head)?;
        let mut img = Image {
            src,
            header,
            snapshots: Vec::new(),
            file_len,
        };
        img.snapshots = img.read_snapshot_table()?;
        Ok(img)
    }

    fn check_range(&self, what: &str, offset: u64, len: u64) -> Result<()> {
        if offset
            .checked_add(len)
            .is_none_or(|end| end > self.file_len)
        {
            return Err(corrupt(format!(
                "{what} at {offset:#x} (+{len}) is beyond the end of the file ({} bytes)",
                self.file_len
            )));
        }
        Ok(())
    }

    fn read_vec(&self, what: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.check_range(what, offset, len)?;
        let mut buf = vec![0u8; len as usize];
        self.src.read_at(offset, &mut buf)?;
        Ok(buf)
    }

    fn read_snapshot_table(&self) -> Result<Vec<SnapshotEntry>> {
        let mut out = Vec::with_capacity(self.header.nb_snapshots as usize);
        let mut at = self.header.snapshots_offset;
        let end_cap = at.saturating_add(MAX_TABLE_BYTES);
        for _ in 0..self.header.nb_snapshots {
            let fixed = self.read_vec("snapshot table", at, FIXED_LEN as u64)?;
            let len = snapshot::entry_len(&fixed)? as u64;
            if at + len > end_cap {
                return Err(corrupt("snapshot table larger than 64 MiB"));
            }
            let bytes = self.read_vec("snapshot table", at, len)?;
            let entry = snapshot::parse_entry(&bytes)?;
            if entry.l1_size > crate::header::MAX_L1_ENTRIES {
                return Err(corrupt(format!(
                    "snapshot '{}' has an absurd L1 size",
                    entry.name
                )));
            }
            out.push(entry);
            at += len.next_multiple_of(8);
        }
        Ok(out)
    }

    pub fn snapshot(&self, name: &str) -> Option<&SnapshotEntry> {
        self.snapshots.iter().find(|s| s.name == name)
    }

    fn snapshot_or_err(&self, name: &str) -> Result<&SnapshotEntry> {
        self.snapshot(name)
            .ok_or_else(|| Error::not_found("snapshot", name).context("qcow2"))
    }

    /// An L1 table: `entries` big-endian u64 at `offset`.
    pub fn read_l1(&self, offset: u64, entries: u32) -> Result<Vec<u64>> {
        if entries == 0 {
            return Ok(Vec::new());
        }
        let bytes = self.read_vec("L1 table", offset, entries as u64 * 8)?;
        Ok(bytes.chunks_exact(8).map(|c| be_u64(c, 0)).collect())
    }

    /// The L1 table of the live disk.
    pub fn active_l1(&self) -> Result<Vec<u64>> {
        self.read_l1(self.header.l1_table_offset, self.header.l1_size)
    }

    /// The L1 table of an internal snapshot.
    pub fn snapshot_l1(&self, name: &str) -> Result<Vec<u64>> {
        let s = self.snapshot_or_err(name)?;
        self.read_l1(s.l1_table_offset, s.l1_size)
    }

    /// The raw entries of the L2 table an L1 entry points to (`None`: no
    /// table, every cluster it covers is unallocated).
    pub fn read_l2(&self, l1_entry: u64) -> Result<Option<Vec<u64>>> {
        let cs = self.header.cluster_size();
        let Some(off) = l1_l2_offset(l1_entry, cs)? else {
            return Ok(None);
        };
        let bytes = self.read_vec("L2 table", off, cs)?;
        Ok(Some(bytes.chunks_exact(8).map(|c| be_u64(c, 0)).collect()))
    }

    /// Decode an L2 entry and check its data lies inside the file.
    pub fn decode(&self, entry: u64) -> Result<Mapping> {
        let m = decode_l2(entry, self.header.cluster_bits)?;
        match m {
            Mapping::Data(off) => {
                self.check_range("data cluster", off, self.header.cluster_size())?
            }
            Mapping::Compressed { offset, len } => {
                self.check_range("compressed cluster", offset, len)?
            }
            _ => {}
        }
        Ok(m)
    }

    /// Read host bytes of data clusters (found through [`Image::decode`]),
    /// checked to lie inside the file.
    pub fn read_host(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.check_range("data clusters", offset, buf.len() as u64)?;
        self.src.read_at(offset, buf)
    }

    /// Read one whole guest cluster's data as mapped by `m` into `buf`
    /// (one cluster long). Compressed clusters are refused.
    pub fn read_cluster(&self, m: Mapping, buf: &mut [u8]) -> Result<()> {
        match m {
            Mapping::Unallocated | Mapping::Zero => {
                buf.fill(0);
                Ok(())
            }
            Mapping::Data(off) => self.src.read_at(off, buf),
            Mapping::Compressed { .. } => Err(crate::unsupported("reading compressed clusters")),
        }
    }

    /// The refcounts of this image, read on demand.
    pub fn refcounts(&self) -> Result<Refcounts<'_, S>> {
        let h = &self.header;
        let bytes = self.read_vec(
            "refcount table",
            h.refcount_table_offset,
            h.refcount_table_clusters as u64 * h.cluster_size(),
        )?;
        Ok(Refcounts {
            img: self,
            table: bytes.chunks_exact(8).map(|c| be_u64(c, 0)).collect(),
            blocks: HashMap::new(),
        })
    }

    /// Bytes that only snapshot `name` holds: its L1 table, and the L2
    /// tables and data clusters it maps whose refcount is 1 (no other
    /// snapshot and not the live disk reference them). Deleting the
    /// snapshot frees about this much.
    pub fn exclusive_bytes(&self, name: &str) -> Result<u64> {
        let s = self.snapshot_or_err(name)?;
        let cs = self.header.cluster_size();
        let l1 = self.read_l1(s.l1_table_offset, s.l1_size)?;
        let mut refs = self.refcounts()?;
        let mut total = (l1.len() as u64 * 8).div_ceil(cs) * cs;
        for &e in &l1 {
            let Some(l2_off) = l1_l2_offset(e, cs)? else {
                continue;
            };
            let shared_table = refs.get(l2_off)? > 1;
            if !shared_table {
                total += cs;
            }
            let Some(l2) = self.read_l2(e)? else { continue };
            for &entry in &l2 {
                match self.decode(entry)? {
                    Mapping::Data(off) if !shared_table && refs.get(off)? == 1 => total += cs,
                    Mapping::Compressed { offset, len }
                        if !shared_table && refs.get(offset)? == 1 =>
                    {
                        total += len
                    }
                    _ => {}
                }
            }
        }
        Ok(total)
    }
}

/// Refcount lookups, with the refcount blocks read once each.
pub struct Refcounts<'a, S: Source> {
    img: &'a Image<S>,
    table: Vec<u64>,
    blocks: HashMap<u64, Vec<u8>>,
}

impl<S: Source> Refcounts<'_, S> {
    /// The refcount of the host cluster containing `host_offset`.
    pub fn get(&mut self, host_offset: u64) -> Result<u64> {
        let h = &self.img.header;
        let cs = h.cluster_size();
        let bits = h.refcount_bits() as u64;
        let per_block = cs * 8 / bits;
        let cluster = host_offset / cs;
        let Some(&block_entry) = self.table.get((cluster / per_block) as usize) else {
            return Ok(0);
        };
        let block_off = block_entry & crate::table::OFFSET_MASK;
        if block_off == 0 {
            return Ok(0);
        }
        if !self.blocks.contains_key(&block_off) {
            let b = self.img.read_vec("refcount block", block_off, cs)?;
            self.blocks.insert(block_off, b);
        }
        let block = &self.blocks[&block_off];
        let i = cluster % per_block;
        Ok(read_packed(block, i, bits))
    }
}

/// Entry `i` of a refcount block of `bits`-bit entries (big-endian for 8
/// bits and up; for fewer, packed from the least significant bit).
fn read_packed(block: &[u8], i: u64, bits: u64) -> u64 {
    if bits >= 8 {
        let n = (bits / 8) as usize;
        let at = i as usize * n;
        block[at..at + n]
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | *b as u64)
    } else {
        let bit = i * bits;
        let byte = block[(bit / 8) as usize];
        ((byte >> (bit % 8)) as u64) & ((1 << bits) - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_refcounts() {
        let block = [0x00, 0x01, 0x00, 0x02, 0b1110_0100];
        assert_eq!(read_packed(&block, 0, 16), 1);
        assert_eq!(read_packed(&block, 1, 16), 2);
        assert_eq!(read_packed(&block[4..], 0, 2), 0);
        assert_eq!(read_packed(&block[4..], 1, 2), 1);
        assert_eq!(read_packed(&block[4..], 2, 2), 2);
        assert_eq!(read_packed(&block[4..], 3, 2), 3);
    }

    #[test]
    fn garbage_is_refused_not_trusted() {
        let mut bytes = crate::header::tests::sample();
        bytes.resize(0x20000, 0);
        // L1 at 0x30000 lies beyond this 128 KiB file.
        let e = Image::open(bytes.clone())
            .and_then(|i| i.active_l1())
            .unwrap_err();
        assert!(e.message.contains("beyond the end"), "{}", e.message);
        // A snapshot table that runs off the file.
        bytes[60..64].copy_from_slice(&3u32.to_be_bytes());
        bytes[64..72].copy_from_slice(&0x10000u64.to_be_bytes());
        bytes.truncate(0x10010);
        assert!(Image::open(bytes).is_err());
    }
}
