//! Reading one internal snapshot: which grains of it differ from a base
//! snapshot, and its guest bytes, through any [`Source`].
//!
//! A *grain* is a fixed run of guest bytes, a whole number of clusters (a
//! backup's chunk). Differences are found by comparing L1 entries, then L2
//! entries where the L1 entries differ: QEMU never rewrites in place a
//! cluster that two tables share, so equal entries mean equal data. The
//! "copied" flag follows refcounts, not data, and is ignored; unallocated
//! equals zero.
//!
//! A snapshot's tables never change while it exists, so the reader keeps
//! the few L2 tables it read last: reads go roughly in order and one table
//! covers hundreds of grains.

use crate::image::{Image, Source};
use crate::table::Mapping;
use reprise_core::Result;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

const COPIED: u64 = 1 << 63;
const L2_CACHED: usize = 8;

/// An L2 table's entries (`None`: the L1 entry maps no table).
type L2 = Arc<Option<Vec<u64>>>;

pub struct SnapshotReader<S: Source> {
    img: Image<S>,
    l1: Vec<u64>,
    l2_cache: Mutex<VecDeque<(usize, L2)>>,
}

impl<S: Source> SnapshotReader<S> {
    /// Read internal snapshot `tag` of `img`.
    pub fn open(img: Image<S>, tag: &str) -> Result<SnapshotReader<S>> {
        let l1 = img.snapshot_l1(tag)?;
        Ok(SnapshotReader {
            img,
            l1,
            l2_cache: Mutex::new(VecDeque::new()),
        })
    }

    pub fn image(&self) -> &Image<S> {
        &self.img
    }

    pub fn volume_size(&self) -> u64 {
        self.img.header.size
    }

    /// The grains of `grain` bytes holding a cluster whose mapping differs
    /// from the base snapshot's L1 table, or, without a base, holding any
    /// cluster that is not zero. Sorted, below the virtual size.
    pub fn changed_grains(&self, base: Option<&[u64]>, grain: u64) -> Result<Vec<u64>> {
        let mut out: Vec<u64> = Vec::new();
        self.visit_changed_grains(base, grain, |g| {
            if out.last() != Some(&g) {
                out.push(g);
            }
        })?;
        Ok(out)
    }

    /// [`SnapshotReader::changed_grains`] gathered by piece of `piece`
    /// bytes (at most 64 grains each): each changed piece with the mask of
    /// its changed grains (bit i: grain i of the piece). Memory follows the
    /// pieces, not the grains.
    pub fn changed_masks(
        &self,
        base: Option<&[u64]>,
        piece: u64,
        grain: u64,
    ) -> Result<Vec<(u64, u64)>> {
        let per_piece = piece / grain.max(1);
        if !piece.is_multiple_of(grain.max(1)) || !(1..=64).contains(&per_piece) {
            return Err(crate::unsupported(format!(
                "{grain}-byte grains in {piece}-byte pieces"
            )));
        }
        let mut out: Vec<(u64, u64)> = Vec::new();
        self.visit_changed_grains(base, grain, |g| {
            let (p, bit) = (g / per_piece, 1u64 << (g % per_piece));
            match out.last_mut() {
                Some((last, mask)) if *last == p => *mask |= bit,
                _ => out.push((p, bit)),
            }
        })?;
        Ok(out)
    }

    /// Call `changed` with each changed grain, in order (a grain once per
    /// changed cluster in it).
    fn visit_changed_grains(
        &self,
        base: Option<&[u64]>,
        grain: u64,
        mut changed: impl FnMut(u64),
    ) -> Result<()> {
        let cs = self.img.header.cluster_size();
        if grain == 0 || !grain.is_multiple_of(cs) {
            return Err(crate::unsupported(format!(
                "a cluster size of {cs} bytes with {grain}-byte chunks"
            )));
        }
        let clusters_per_grain = grain / cs;
        let per_l2 = self.img.header.l2_entries();
        let clusters = self.img.header.guest_clusters();
        for i in 0..clusters.div_ceil(per_l2) as usize {
            let new = self.l1.get(i).copied().unwrap_or(0);
            let old = base.map_or(0, |b| b.get(i).copied().unwrap_or(0));
            if old & !COPIED == new & !COPIED && (base.is_some() || new == 0) {
                continue;
            }
            let l2_new = self.l2(i)?;
            let l2_old = self.img.read_l2(old)?;
            let first = i as u64 * per_l2;
            for c in first..(first + per_l2).min(clusters) {
                let j = (c - first) as usize;
                let e_new = l2_new.as_ref().as_ref().map_or(0, |t| t[j]);
                let e_old = l2_old.as_ref().map_or(0, |t| t[j]);
                if e_old & !COPIED != e_new & !COPIED
                    && !(self.img.decode(e_old)?.is_zero() && self.img.decode(e_new)?.is_zero())
                {
                    changed(c / clusters_per_grain);
                }
            }
        }
        Ok(())
    }

    fn l2(&self, l1_index: usize) -> Result<L2> {
        {
            let cache = self.l2_cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((_, t)) = cache.iter().find(|(i, _)| *i == l1_index) {
                return Ok(t.clone());
            }
        }
        let entry = self.l1.get(l1_index).copied().unwrap_or(0);
        let table = Arc::new(self.img.read_l2(entry)?);
        let mut cache = self.l2_cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= L2_CACHED {
            cache.pop_front();
        }
        cache.push_back((l1_index, table.clone()));
        Ok(table)
    }

    /// Read guest bytes `offset..offset + buf.len()`: unmapped ranges and
    /// bytes past the virtual size read as zeros; host-contiguous data
    /// clusters are read in one call.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let cs = self.img.header.cluster_size();
        let per_l2 = self.img.header.l2_entries();
        // A run of host-contiguous data: (offset in buf, host offset, len).
        let mut run: Option<(usize, u64, usize)> = None;
        let mut cluster_buf = Vec::new();
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let cluster = pos / cs;
            let within = (pos % cs) as usize;
            let n = (cs as usize - within).min(buf.len() - done);
            let mapping = if pos >= self.volume_size() {
                Mapping::Zero
            } else {
                let table = self.l2((cluster / per_l2) as usize)?;
                let entry = table
                    .as_ref()
                    .as_ref()
                    .map_or(0, |t| t[(cluster % per_l2) as usize]);
                self.img.decode(entry)?
            };
            match mapping {
                Mapping::Data(host) => {
                    let host = host + within as u64;
                    run = match run {
                        Some((b, h, l)) if h + l as u64 == host && b + l == done => {
                            Some((b, h, l + n))
                        }
                        Some((b, h, l)) => {
                            self.img.read_host(h, &mut buf[b..b + l])?;
                            Some((done, host, n))
                        }
                        None => Some((done, host, n)),
                    }
                }
                m if m.is_zero() => buf[done..done + n].fill(0),
                m => {
                    cluster_buf.resize(cs as usize, 0);
                    self.img.read_cluster(m, &mut cluster_buf)?;
                    buf[done..done + n].copy_from_slice(&cluster_buf[within..within + n]);
                }
            }
            done += n;
        }
        if let Some((b, h, l)) = run {
            self.img.read_host(h, &mut buf[b..b + l])?;
        }
        Ok(())
    }
}
