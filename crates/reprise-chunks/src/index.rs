//! The index of one snapshot: which chunk holds each chunk-sized position
//! of the volume. Positions not listed are zeros, so a sparse volume has a
//! small index: a 1 TiB volume with 1 GiB written lists about a thousand
//! entries of 1 MiB, not a million.
//!
//! Body (in an [`envelope`](crate::envelope) of kind "RPIX", version 1):
//!
//! ```text
//!  0  4  chunk size (bytes, a power of two from 64 KiB to 4 MiB)
//!  4  8  volume size (bytes)
//! 12  8  entry count n
//! 20     n entries of 40 bytes, positions strictly increasing:
//!          8  position (chunk number from the start of the volume)
//!         32  the chunk's name
//! ```

use crate::chunk::{ChunkName, MAX_CHUNK};
use crate::{be_u32, be_u64, corrupt, envelope};
use reprise_core::Result;

pub const MAGIC: &[u8; 4] = b"RPIX";
pub const VERSION: u16 = 1;
const MIN_CHUNK: u32 = 64 << 10;
/// Volumes of up to 64 PiB; the cap keeps a hostile index from asking for
/// more than that.
const MAX_VOLUME: u64 = 1 << 56;
const HEAD: usize = 20;
const ENTRY: usize = 40;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    pub chunk_size: u32,
    pub volume_size: u64,
    /// The positions that are not zeros, sorted, each once.
    pub entries: Vec<(u64, ChunkName)>,
}

impl Index {
    /// How many chunk positions a volume of `volume_size` has.
    pub fn positions(volume_size: u64, chunk_size: u32) -> u64 {
        volume_size.div_ceil(chunk_size as u64)
    }

    /// An index of zeros for a volume.
    pub fn zeros(volume_size: u64, chunk_size: u32) -> Result<Index> {
        check_sizes(chunk_size, volume_size)?;
        Ok(Index {
            chunk_size,
            volume_size,
            entries: Vec::new(),
        })
    }

    /// The distinct chunks it references.
    pub fn distinct(&self) -> std::collections::BTreeSet<ChunkName> {
        self.entries.iter().map(|(_, n)| *n).collect()
    }

    /// This index with the positions in `changes` replaced (`None`: now
    /// zeros). `changes` must be sorted by position.
    pub fn updated(&self, changes: &[(u64, Option<ChunkName>)]) -> Index {
        let mut out = Vec::with_capacity(self.entries.len() + changes.len());
        let mut old = self.entries.iter().peekable();
        for &(pos, name) in changes {
            while let Some(&&(p, n)) = old.peek() {
                if p >= pos {
                    break;
                }
                out.push((p, n));
                old.next();
            }
            if old.peek().is_some_and(|(p, _)| *p == pos) {
                old.next();
            }
            if let Some(n) = name {
                out.push((pos, n));
            }
        }
        out.extend(old.copied());
        Index {
            chunk_size: self.chunk_size,
            volume_size: self.volume_size,
            entries: out,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(HEAD + self.entries.len() * ENTRY);
        body.extend_from_slice(&self.chunk_size.to_be_bytes());
        body.extend_from_slice(&self.volume_size.to_be_bytes());
        body.extend_from_slice(&(self.entries.len() as u64).to_be_bytes());
        for (pos, name) in &self.entries {
            body.extend_from_slice(&pos.to_be_bytes());
            body.extend_from_slice(&name.0);
        }
        envelope::seal(MAGIC, VERSION, &body)
    }

    pub fn decode(object: &[u8]) -> Result<Index> {
        let max_body = (HEAD + ENTRY) as u64 * Self::positions(MAX_VOLUME, MIN_CHUNK);
        let (version, body) = envelope::open(MAGIC, "snapshot index", object, max_body)?;
        if version != VERSION {
            return Err(corrupt(format!(
                "snapshot index version {version} is not supported"
            )));
        }
        if body.len() < HEAD {
            return Err(corrupt("snapshot index: body too short"));
        }
        let chunk_size = be_u32(body, 0);
        let volume_size = be_u64(body, 4);
        let count = be_u64(body, 12);
        check_sizes(chunk_size, volume_size)?;
        let positions = Self::positions(volume_size, chunk_size);
        if count > positions || (body.len() - HEAD) as u64 != count * ENTRY as u64 {
            return Err(corrupt(format!(
                "snapshot index: {count} entries in {} bytes for a volume of {positions} positions",
                body.len() - HEAD
            )));
        }
        let mut entries = Vec::with_capacity(count as usize);
        let mut next = 0u64;
        for e in body[HEAD..].chunks_exact(ENTRY) {
            let pos = be_u64(e, 0);
            if pos < next || pos >= positions {
                return Err(corrupt(format!(
                    "snapshot index: position {pos} out of order or beyond the volume"
                )));
            }
            next = pos + 1;
            entries.push((pos, ChunkName(e[8..].try_into().expect("32 bytes"))));
        }
        Ok(Index {
            chunk_size,
            volume_size,
            entries,
        })
    }
}

fn check_sizes(chunk_size: u32, volume_size: u64) -> Result<()> {
    if !chunk_size.is_power_of_two() || !(MIN_CHUNK..=MAX_CHUNK).contains(&chunk_size) {
        return Err(corrupt(format!(
            "chunk size {chunk_size} is not a power of two from 64 KiB to 4 MiB"
        )));
    }
    if volume_size > MAX_VOLUME {
        return Err(corrupt(format!(
            "volume size {volume_size} is above the limit"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::ChunkKey;

    fn name(s: &[u8]) -> ChunkName {
        ChunkName::of(&ChunkKey([1; 32]), s)
    }

    #[test]
    fn round_trips_sparse_entries() {
        let mut idx = Index::zeros((10 << 20) + 5, 1 << 20).unwrap();
        assert_eq!(Index::positions(idx.volume_size, idx.chunk_size), 11);
        idx.entries = vec![(0, name(b"a")), (7, name(b"a")), (10, name(b"b"))];
        let back = Index::decode(&idx.encode()).unwrap();
        assert_eq!(back, idx);
        assert_eq!(back.distinct().len(), 2);
    }

    #[test]
    fn updates_replace_add_and_clear_positions() {
        let mut idx = Index::zeros(8 << 20, 1 << 20).unwrap();
        idx.entries = vec![(1, name(b"a")), (3, name(b"b")), (5, name(b"c"))];
        let next = idx.updated(&[(0, Some(name(b"z"))), (3, None), (5, Some(name(b"d")))]);
        assert_eq!(
            next.entries,
            vec![(0, name(b"z")), (1, name(b"a")), (5, name(b"d"))]
        );
        assert_eq!(idx.updated(&[]).entries, idx.entries);
    }

    #[test]
    fn refuses_inconsistent_indexes() {
        assert!(Index::zeros(1 << 30, 3000).is_err());
        assert!(Index::zeros(1 << 30, 8 << 20).is_err());
        let mut idx = Index::zeros(4 << 20, 1 << 20).unwrap();
        idx.entries = vec![(2, name(b"a")), (3, name(b"b"))];
        let obj = idx.encode();
        let body = obj[envelope::HEADER_LEN..obj.len() - envelope::CHECKSUM_LEN].to_vec();
        // Positions out of order, with a valid checksum.
        let mut swapped = body.clone();
        swapped[HEAD..HEAD + 8].copy_from_slice(&3u64.to_be_bytes());
        let e = Index::decode(&envelope::seal(MAGIC, VERSION, &swapped)).unwrap_err();
        assert!(e.message.contains("out of order"), "{}", e.message);
        // More entries claimed than the body holds.
        let mut lying = body.clone();
        lying[12..20].copy_from_slice(&3u64.to_be_bytes());
        let e = Index::decode(&envelope::seal(MAGIC, VERSION, &lying)).unwrap_err();
        assert!(e.message.contains("entries"), "{}", e.message);
        // A position beyond the volume.
        let mut beyond = body.clone();
        beyond[HEAD + ENTRY..HEAD + ENTRY + 8].copy_from_slice(&4u64.to_be_bytes());
        assert!(Index::decode(&envelope::seal(MAGIC, VERSION, &beyond)).is_err());
        let newer = envelope::seal(MAGIC, 2, &body);
        assert!(Index::decode(&newer)
            .unwrap_err()
            .message
            .contains("version 2"));
    }
}
