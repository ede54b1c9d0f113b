//! What a backup reads from a qcow2 snapshot: the chunk positions whose
//! clusters differ from the base snapshot (or, without a base, that hold
//! any written cluster), and the bytes of one position.
//!
//! Only L1 and L2 tables are compared: QEMU never rewrites in place a
//! cluster that two tables share, so equal entries mean equal data. The
//! "copied" bit follows refcounts, not data, and is ignored.

use reprise_core::Result;
use reprise_qcow2::{Image, Mapping};
use std::collections::VecDeque;
use std::fs::File;
use std::sync::Mutex;

const COPIED: u64 = 1 << 63;

/// An L2 table's entries (`None`: the L1 entry maps no table).
type L2 = std::sync::Arc<Option<Vec<u64>>>;

pub struct Snapshot {
    pub img: Image<File>,
    pub l1: Vec<u64>,
    pub chunk_size: u64,
    /// The few L2 tables read last: positions are read roughly in order, and
    /// each table covers hundreds of them.
    l2_cache: Mutex<VecDeque<(usize, L2)>>,
}

impl Snapshot {
    pub fn open(img: Image<File>, tag: &str, chunk_size: u32) -> Result<Snapshot> {
        let cs = img.header.cluster_size();
        if !(chunk_size as u64).is_multiple_of(cs) {
            return Err(reprise_qcow2::unsupported(format!(
                "a cluster size of {cs} bytes (larger than the {chunk_size}-byte chunks)"
            )));
        }
        let l1 = img.snapshot_l1(tag)?;
        Ok(Snapshot {
            img,
            l1,
            chunk_size: chunk_size as u64,
            l2_cache: Mutex::new(VecDeque::new()),
        })
    }

    pub fn volume_size(&self) -> u64 {
        self.img.header.size
    }

    fn clusters_per_chunk(&self) -> u64 {
        self.chunk_size / self.img.header.cluster_size()
    }

    /// The positions a backup must read, sorted: with a base L1 table, those
    /// where any cluster's mapping differs from it; without, those with any
    /// cluster that is not zero.
    pub fn positions_to_read(&self, base: Option<&[u64]>) -> Result<Vec<u64>> {
        let per_l2 = self.img.header.l2_entries();
        let clusters = self.img.header.guest_clusters();
        let cpc = self.clusters_per_chunk();
        let mut out: Vec<u64> = Vec::new();
        let l1_count = clusters.div_ceil(per_l2) as usize;
        for i in 0..l1_count {
            let new = self.l1.get(i).copied().unwrap_or(0);
            let old = base.map(|b| b.get(i).copied().unwrap_or(0));
            if old.is_some_and(|o| o & !COPIED == new & !COPIED) {
                continue;
            }
            if old.is_none() && new == 0 {
                continue;
            }
            let l2_new = self.img.read_l2(new)?;
            let l2_old = match old {
                Some(o) => self.img.read_l2(o)?,
                None => None,
            };
            let first = i as u64 * per_l2;
            let last = (first + per_l2).min(clusters);
            for c in first..last {
                let j = (c - first) as usize;
                let e_new = l2_new.as_ref().map(|t| t[j]).unwrap_or(0);
                let changed = match old {
                    Some(_) => {
                        let e_old = l2_old.as_ref().map(|t| t[j]).unwrap_or(0);
                        e_old & !COPIED != e_new & !COPIED
                            && !(self.img.decode(e_old)?.is_zero()
                                && self.img.decode(e_new)?.is_zero())
                    }
                    None => !self.img.decode(e_new)?.is_zero(),
                };
                let pos = c / cpc;
                if changed && out.last() != Some(&pos) {
                    out.push(pos);
                }
            }
        }
        Ok(out)
    }

    fn l2(&self, l1_index: usize) -> Result<L2> {
        {
            let cache = self.l2_cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((_, t)) = cache.iter().find(|(i, _)| *i == l1_index) {
                return Ok(t.clone());
            }
        }
        let entry = self.l1.get(l1_index).copied().unwrap_or(0);
        let table = std::sync::Arc::new(self.img.read_l2(entry)?);
        let mut cache = self.l2_cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= 8 {
            cache.pop_front();
        }
        cache.push_back((l1_index, table.clone()));
        Ok(table)
    }

    /// The guest bytes of chunk `pos` (shorter at the end of the volume),
    /// with adjacent host clusters read in one call.
    pub fn read_chunk(&self, pos: u64, buf: &mut Vec<u8>) -> Result<()> {
        let cs = self.img.header.cluster_size();
        let per_l2 = self.img.header.l2_entries();
        let start = pos * self.chunk_size;
        let len = self.chunk_size.min(self.volume_size() - start) as usize;
        buf.clear();
        buf.resize(len, 0);
        let first = start / cs;
        let count = (len as u64).div_ceil(cs);
        // A run of host-contiguous data clusters: (offset in buf, host, len).
        let mut run: Option<(usize, u64, usize)> = None;
        for k in 0..count {
            let c = first + k;
            let at = (k * cs) as usize;
            let n = (cs as usize).min(len - at);
            let table = self.l2((c / per_l2) as usize)?;
            let entry = table
                .as_ref()
                .as_ref()
                .map(|t| t[(c % per_l2) as usize])
                .unwrap_or(0);
            match self.img.decode(entry)? {
                Mapping::Data(host) => {
                    run = match run {
                        Some((b, h, l)) if h + l as u64 == host && b + l == at => {
                            Some((b, h, l + n))
                        }
                        Some((b, h, l)) => {
                            self.img.read_host(h, &mut buf[b..b + l])?;
                            Some((at, host, n))
                        }
                        None => Some((at, host, n)),
                    }
                }
                m if m.is_zero() => {}
                m => {
                    let mut cluster = vec![0u8; cs as usize];
                    self.img.read_cluster(m, &mut cluster)?;
                    buf[at..at + n].copy_from_slice(&cluster[..n]);
                }
            }
        }
        if let Some((b, h, l)) = run {
            self.img.read_host(h, &mut buf[b..b + l])?;
        }
        Ok(())
    }
}
