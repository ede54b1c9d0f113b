//! Writing a new qcow2 image directly, in any order, from many threads:
//! what a restore needs to turn a snapshot's chunks into a volume without
//! a raw image in between.
//!
//! The caller says up front which guest extents may hold data (a
//! snapshot's non-zero chunks); [`Layout`] then fixes every offset of the
//! file before a byte is written:
//!
//! ```text
//! header | L1 | refcount table | refcount blocks | L2 tables | data
//! ```
//!
//! Each extent gets host space of its own in guest order (so a restored
//! volume reads sequentially), the L2 tables exist only for the 512 MiB
//! ranges an extent touches, and the refcount blocks cover the whole file.
//! Because the place of everything is known, [`Builder::write`] can store an
//! extent's clusters, their L2 entries and their refcounts with positional
//! writes and no shared state: extents are written concurrently and out of
//! order, and memory does not grow with the volume.
//!
//! Invariants of the image written (version 3, 64 KiB clusters, 16-bit
//! refcounts, no snapshots, no backing file):
//! - a guest cluster that is all zeros is never allocated: its L2 entry
//!   stays 0 and its host cluster is a hole with refcount 0 (free space);
//! - every allocated cluster (metadata or data) has refcount 1 and every
//!   L1/L2 entry that points to one carries the "copied" flag, so
//!   `qemu-img check` finds nothing to say;
//! - until [`Builder::finish`] returns, the image is not durable; callers
//!   keep it out of sight (a `Creating` volume, a temporary name) until then.
//!
//! Data goes to the disk with [`direct`] I/O where the filesystem takes
//! it: each run is first allocated with `fallocate`, so the write is an
//! overwrite of allocated space, which ext4 and XFS let run concurrently
//! instead of one at a time under the inode's lock. Metadata stays
//! buffered; the one `fsync` of [`Builder::finish`] covers both.

use crate::direct;
use crate::header::MAGIC;
use reprise_core::{Error, Result};
use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;

pub const CLUSTER_BITS: u32 = 16;
pub const CLUSTER_SIZE: u64 = 1 << CLUSTER_BITS;
/// 16-bit refcounts (QEMU's default).
const REFCOUNT_ORDER: u32 = 4;
const REFCOUNT_BYTES: u64 = 2;
const REFCOUNTS_PER_BLOCK: u64 = CLUSTER_SIZE / REFCOUNT_BYTES;
const L2_ENTRIES: u64 = CLUSTER_SIZE / 8;
/// Bytes the guest sees through one L2 table.
const L2_SPAN: u64 = L2_ENTRIES * CLUSTER_SIZE;
const COPIED: u64 = 1 << 63;
const HEADER_LEN: u32 = 104;

/// Where everything of the new image goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub virtual_size: u64,
    /// Guest bytes each extent covers (a power of two, at least a cluster).
    pub extent_size: u64,
    /// The extents that may hold data, by index (guest offset = index ×
    /// extent size), sorted and distinct.
    extents: Vec<u64>,
    l1_offset: u64,
    l1_entries: u64,
    refcount_table_offset: u64,
    refcount_table_clusters: u64,
    refcount_blocks_offset: u64,
    refcount_blocks: u64,
    /// Per L1 entry, the host offset of its L2 table (0: none).
    l2_offsets: Vec<u64>,
    data_offset: u64,
    /// The file's length: the end of the last extent's space.
    pub file_len: u64,
}

fn clusters(bytes: u64) -> u64 {
    bytes.div_ceil(CLUSTER_SIZE)
}

impl Layout {
    /// Plan an image of `virtual_size` bytes whose data can only be in the
    /// given extents (indexes of `extent_size`-byte pieces of the guest).
    pub fn new(virtual_size: u64, extent_size: u64, extents: Vec<u64>) -> Result<Layout> {
        if !extent_size.is_power_of_two() || !(CLUSTER_SIZE..=L2_SPAN).contains(&extent_size) {
            return Err(invalid(format!(
                "extent size {extent_size} is not a power of two from 64 KiB to 512 MiB"
            )));
        }
        if virtual_size > crate::header::MAX_VIRTUAL_SIZE {
            return Err(invalid(format!("virtual size {virtual_size} is too large")));
        }
        let positions = virtual_size.div_ceil(extent_size);
        if extents.windows(2).any(|w| w[0] >= w[1])
            || extents.last().is_some_and(|&e| e >= positions)
        {
            return Err(invalid(
                "extents must be sorted, distinct and inside the volume".into(),
            ));
        }
        let l1_entries = virtual_size.div_ceil(L2_SPAN);
        if l1_entries > crate::header::MAX_L1_ENTRIES as u64 {
            return Err(invalid(format!(
                "virtual size {virtual_size} needs too large an L1"
            )));
        }
        let l1_offset = CLUSTER_SIZE;
        let refcount_table_offset = l1_offset + clusters(l1_entries * 8).max(1) * CLUSTER_SIZE;
        // The L2 tables: one per 512 MiB range an extent touches (an
        // extent never spans two, as both are powers of two).
        let mut l2_ranges: Vec<u64> = extents.iter().map(|e| e * extent_size / L2_SPAN).collect();
        l2_ranges.dedup();
        let l2_tables = l2_ranges.len() as u64;
        let data_clusters = extents.len() as u64 * (extent_size / CLUSTER_SIZE);
        // The refcount blocks must cover every cluster of the file,
        // themselves and the table included: grow both until they do.
        let mut blocks = 1u64;
        let mut table_clusters = 1u64;
        loop {
            let total = 1
                + clusters(l1_entries * 8).max(1)
                + table_clusters
                + blocks
                + l2_tables
                + data_clusters;
            let need_blocks = total.div_ceil(REFCOUNTS_PER_BLOCK);
            let need_table = clusters(need_blocks * 8).max(1);
            if need_blocks <= blocks && need_table <= table_clusters {
                break;
            }
            blocks = blocks.max(need_blocks);
            table_clusters = table_clusters.max(need_table);
        }
        let refcount_blocks_offset = refcount_table_offset + table_clusters * CLUSTER_SIZE;
        let l2_start = refcount_blocks_offset + blocks * CLUSTER_SIZE;
        let mut l2_offsets = vec![0; l1_entries as usize];
        for (i, range) in l2_ranges.iter().enumerate() {
            l2_offsets[*range as usize] = l2_start + i as u64 * CLUSTER_SIZE;
        }
        let data_offset = l2_start + l2_tables * CLUSTER_SIZE;
        Ok(Layout {
            virtual_size,
            extent_size,
            file_len: data_offset + data_clusters * CLUSTER_SIZE,
            extents,
            l1_offset,
            l1_entries,
            refcount_table_offset,
            refcount_table_clusters: table_clusters,
            refcount_blocks_offset,
            refcount_blocks: blocks,
            l2_offsets,
            data_offset,
        })
    }

    /// The header cluster's first bytes.
    fn header(&self) -> Vec<u8> {
        let mut h = Vec::with_capacity(HEADER_LEN as usize + 8);
        h.extend_from_slice(&MAGIC.to_be_bytes());
        h.extend_from_slice(&3u32.to_be_bytes()); // version
        h.extend_from_slice(&0u64.to_be_bytes()); // backing file offset
        h.extend_from_slice(&0u32.to_be_bytes()); // backing file size
        h.extend_from_slice(&CLUSTER_BITS.to_be_bytes());
        h.extend_from_slice(&self.virtual_size.to_be_bytes());
        h.extend_from_slice(&0u32.to_be_bytes()); // no encryption
        h.extend_from_slice(&(self.l1_entries as u32).to_be_bytes());
        h.extend_from_slice(&self.l1_offset.to_be_bytes());
        h.extend_from_slice(&self.refcount_table_offset.to_be_bytes());
        h.extend_from_slice(&(self.refcount_table_clusters as u32).to_be_bytes());
        h.extend_from_slice(&0u32.to_be_bytes()); // snapshots
        h.extend_from_slice(&0u64.to_be_bytes()); // snapshots offset
        h.extend_from_slice(&0u64.to_be_bytes()); // incompatible features
        h.extend_from_slice(&0u64.to_be_bytes()); // compatible features
        h.extend_from_slice(&0u64.to_be_bytes()); // autoclear features
        h.extend_from_slice(&REFCOUNT_ORDER.to_be_bytes());
        h.extend_from_slice(&HEADER_LEN.to_be_bytes());
        h.extend_from_slice(&[0; 8]); // end of header extensions
        h
    }

    fn l1(&self) -> Vec<u8> {
        self.l2_offsets
            .iter()
            .flat_map(|&o| if o == 0 { 0 } else { o | COPIED }.to_be_bytes())
            .collect()
    }

    fn refcount_table(&self) -> Vec<u8> {
        (0..self.refcount_blocks)
            .flat_map(|b| (self.refcount_blocks_offset + b * CLUSTER_SIZE).to_be_bytes())
            .collect()
    }

    /// Host offset of the first byte of extent `extent` (an index of
    /// [`Layout::new`]'s list), if the layout has it.
    fn extent_host(&self, extent: u64) -> Option<u64> {
        let slot = self.extents.binary_search(&extent).ok()? as u64;
        Some(self.data_offset + slot * self.extent_size)
    }

    /// The file offset of the refcount of the host cluster at `host`.
    fn refcount_at(&self, host: u64) -> u64 {
        let cluster = host / CLUSTER_SIZE;
        self.refcount_blocks_offset
            + (cluster / REFCOUNTS_PER_BLOCK) * CLUSTER_SIZE
            + (cluster % REFCOUNTS_PER_BLOCK) * REFCOUNT_BYTES
    }

    /// The file offset of the L2 entry of the guest cluster at `guest`.
    fn l2_entry_at(&self, guest: u64) -> u64 {
        self.l2_offsets[(guest / L2_SPAN) as usize] + (guest % L2_SPAN) / CLUSTER_SIZE * 8
    }
}

fn invalid(message: String) -> Error {
    Error::invalid("qcow2_layout", format!("qcow2: {message}"))
}

/// A qcow2 image being written to a new file after a [`Layout`].
pub struct Builder {
    file: File,
    /// The same file opened for direct I/O, where the filesystem allows it.
    direct: Option<File>,
    layout: Layout,
}

/// Write `bytes` at `offset` with direct I/O; `Ok(false)`: not possible.
fn write_direct(direct: &File, bytes: &[u8], offset: u64) -> std::io::Result<bool> {
    if !direct::fits(offset, bytes.len()) {
        return Ok(false);
    }
    // Allocated (unwritten) space: the direct write that follows is an
    // overwrite, which the filesystem lets run beside the others.
    let allocate = rustix::fs::fallocate(
        direct.as_fd(),
        rustix::fs::FallocateFlags::empty(),
        offset,
        bytes.len() as u64,
    );
    Ok(allocate.is_ok() && direct::write_at(direct, bytes, offset)?)
}

impl Builder {
    /// Write the image's metadata to `file` (empty, just created) and make
    /// it as long as the layout says; data is added by [`Builder::write`].
    pub fn create(file: File, layout: Layout) -> Result<Builder> {
        file.set_len(layout.file_len).map_err(io)?;
        file.write_all_at(&layout.header(), 0).map_err(io)?;
        file.write_all_at(&layout.l1(), layout.l1_offset)
            .map_err(io)?;
        file.write_all_at(&layout.refcount_table(), layout.refcount_table_offset)
            .map_err(io)?;
        // Every metadata cluster (they are contiguous, from 0 to the data)
        // is in use once.
        let metadata: Vec<u8> = (0..layout.data_offset / CLUSTER_SIZE)
            .flat_map(|_| 1u16.to_be_bytes())
            .collect();
        file.write_all_at(&metadata, layout.refcount_blocks_offset)
            .map_err(io)?;
        let direct = direct::reopen(&file, true);
        Ok(Builder {
            file,
            direct,
            layout,
        })
    }

    /// Store the guest bytes of extent `extent`: `data` is the extent's
    /// content (shorter only for the volume's last extent). Clusters of
    /// zeros stay unallocated. Safe to call from many threads at once for
    /// different extents.
    pub fn write(&self, extent: u64, data: &[u8]) -> Result<()> {
        let l = &self.layout;
        let Some(host) = l.extent_host(extent) else {
            return Err(invalid(format!("extent {extent} is not in the layout")));
        };
        let guest = extent * l.extent_size;
        let expected = l.extent_size.min(l.virtual_size - guest);
        if data.len() as u64 != expected {
            return Err(invalid(format!(
                "extent {extent} has {} bytes where {expected} were expected",
                data.len()
            )));
        }
        // Runs of non-zero clusters, each written with one data write, one
        // write of its L2 entries and one of its refcounts (a run never
        // crosses an L2 table, and is split where a refcount block ends).
        let cluster_count = data.len().div_ceil(CLUSTER_SIZE as usize);
        let cluster = |i: usize| {
            &data[i * CLUSTER_SIZE as usize..((i + 1) * CLUSTER_SIZE as usize).min(data.len())]
        };
        let mut i = 0;
        while i < cluster_count {
            if cluster(i).iter().all(|&b| b == 0) {
                i += 1;
                continue;
            }
            let start = i;
            i += 1;
            while i < cluster_count
                && !cluster(i).iter().all(|&b| b == 0)
                && !(host / CLUSTER_SIZE + i as u64).is_multiple_of(REFCOUNTS_PER_BLOCK)
            {
                i += 1;
            }
            let run_host = host + start as u64 * CLUSTER_SIZE;
            let run_guest = guest + start as u64 * CLUSTER_SIZE;
            let bytes =
                &data[start * CLUSTER_SIZE as usize..(i * CLUSTER_SIZE as usize).min(data.len())];
            self.write_data(bytes, run_host)?;
            let n = (i - start) as u64;
            let entries: Vec<u8> = (0..n)
                .flat_map(|k| ((run_host + k * CLUSTER_SIZE) | COPIED).to_be_bytes())
                .collect();
            self.file
                .write_all_at(&entries, l.l2_entry_at(run_guest))
                .map_err(io)?;
            let refcounts: Vec<u8> = (0..n).flat_map(|_| 1u16.to_be_bytes()).collect();
            self.file
                .write_all_at(&refcounts, l.refcount_at(run_host))
                .map_err(io)?;
        }
        Ok(())
    }

    fn write_data(&self, bytes: &[u8], offset: u64) -> Result<()> {
        if let Some(direct) = &self.direct {
            if write_direct(direct, bytes, offset).map_err(io)? {
                return Ok(());
            }
        }
        self.file.write_all_at(bytes, offset).map_err(io)
    }

    /// Make the image durable (its data, metadata and length).
    pub fn finish(self) -> Result<()> {
        self.file.sync_all().map_err(io)
    }
}

fn io(e: std::io::Error) -> Error {
    Error::unavailable("io_error", format!("writing the qcow2 image: {e}")).with_source(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layout_places_metadata_before_data_in_guest_order() {
        let l = Layout::new(8 << 30, 1 << 20, vec![0, 1, 600, 8191]).unwrap();
        assert_eq!(l.l1_entries, 16);
        // Three L2 tables: ranges 0, 1 (extent 600 is at 600 MiB) and 15.
        assert_eq!(l.l2_offsets.iter().filter(|&&o| o != 0).count(), 3);
        assert_eq!(l.extent_host(0), Some(l.data_offset));
        assert_eq!(l.extent_host(600), Some(l.data_offset + 2 * (1 << 20)));
        assert_eq!(l.extent_host(2), None);
        assert_eq!(l.file_len, l.data_offset + 4 * (1 << 20));
    }

    #[test]
    fn refcount_blocks_cover_the_whole_file() {
        // 4 TiB of data: 64 Mi clusters need 2048 blocks and a table of
        // its own clusters.
        let extents: Vec<u64> = (0..(4u64 << 40) / (4 << 20)).collect();
        let l = Layout::new(4 << 40, 4 << 20, extents).unwrap();
        assert!(l.refcount_blocks * REFCOUNTS_PER_BLOCK >= l.file_len / CLUSTER_SIZE);
        assert!(l.refcount_table_clusters * CLUSTER_SIZE / 8 >= l.refcount_blocks);
    }

    #[test]
    fn bad_plans_are_refused() {
        assert!(Layout::new(1 << 30, 3 << 20, vec![]).is_err());
        assert!(Layout::new(1 << 30, 1 << 20, vec![2, 1]).is_err());
        assert!(Layout::new(1 << 30, 1 << 20, vec![1024]).is_err());
        assert!(Layout::new(1 << 30, 32 << 10, vec![]).is_err());
    }
}
