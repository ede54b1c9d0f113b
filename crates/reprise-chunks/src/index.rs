//! The index of one snapshot: which chunk holds each chunk-sized position
//! of the volume. Positions not listed are zeros, so a sparse volume has a
//! small index: a 1 TiB volume with 1 GiB written lists about a thousand
//! entries of 1 MiB, not a million.
//!
//! Body (in an [`envelope`](crate::envelope) of kind "RPIX", version 1,
//! or 2 when some positions hold patches):
//!
//! ```text
//!  0  4  chunk size (bytes, a power of two from 64 KiB to 4 MiB)
//!  4  8  volume size (bytes)
//! 12  8  entry count n
//! 20     n entries of 40 bytes, positions strictly increasing:
//!          8  position (chunk number from the start of the volume)
//!         32  the chunk's name
//! version 2 only:
//!        8  patch count m
//!           m patches of 72 bytes, names strictly increasing:
//!         32  the patch's name (one that entries use)
//!         32  its base: a whole chunk, never a patch
//!          8  its grain mask (non-zero, within the chunk)
//! ```
//!
//! The patch table says which names are patches and on what: a backup
//! learns from it what to patch next without fetching anything, and
//! [`Index::distinct`] lists the bases with the names, so holds, references
//! and garbage collection keep a patch's base as long as the patch.

use crate::chunk::{ChunkName, MAX_CHUNK, PATCH_GRAIN};
use crate::{be_u32, be_u64, corrupt, envelope};
use reprise_core::Result;
use std::collections::BTreeMap;

pub const MAGIC: &[u8; 4] = b"RPIX";
/// Written when there are no patches, so older readers still read it.
pub const VERSION: u16 = 1;
pub const VERSION_PATCHES: u16 = 2;
const MIN_CHUNK: u32 = 64 << 10;
/// Volumes of up to 64 PiB; the cap keeps a hostile index from asking for
/// more than that.
const MAX_VOLUME: u64 = 1 << 56;
const HEAD: usize = 20;
const ENTRY: usize = 40;
const PATCH_REF: usize = 72;

/// What the index knows of a patch: its base and the grains it replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatchRef {
    pub base: ChunkName,
    pub mask: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    pub chunk_size: u32,
    pub volume_size: u64,
    /// The positions that are not zeros, sorted, each once.
    pub entries: Vec<(u64, ChunkName)>,
    /// The names of `entries` that are patches (and no others).
    pub patches: BTreeMap<ChunkName, PatchRef>,
}

impl Index {
    /// How many chunk positions a volume of `volume_size` has.
    pub fn positions(volume_size: u64, chunk_size: u32) -> u64 {
        volume_size.div_ceil(chunk_size as u64)
    }

    /// The most bytes the stored index of a volume of `positions` chunk
    /// positions can take (every position a patch): a reader's cap.
    pub fn max_object_len(positions: u64) -> u64 {
        (envelope::HEADER_LEN + envelope::CHECKSUM_LEN + HEAD + 8) as u64
            + (ENTRY + PATCH_REF) as u64 * positions
    }

    /// An index of zeros for a volume.
    pub fn zeros(volume_size: u64, chunk_size: u32) -> Result<Index> {
        check_sizes(chunk_size, volume_size)?;
        Ok(Index {
            chunk_size,
            volume_size,
            entries: Vec::new(),
            patches: BTreeMap::new(),
        })
    }

    /// The distinct chunks it references.
    /// Every object the snapshot needs: the names of its positions and
    /// the bases of its patches.
    pub fn distinct(&self) -> std::collections::BTreeSet<ChunkName> {
        self.entries
            .iter()
            .map(|(_, n)| *n)
            .chain(self.patches.values().map(|p| p.base))
            .collect()
    }

    /// The name at position `pos`, if not zeros.
    pub fn at(&self, pos: u64) -> Option<ChunkName> {
        let i = self.entries.binary_search_by_key(&pos, |(p, _)| *p).ok()?;
        Some(self.entries[i].1)
    }

    /// This index with the positions in `changes` replaced (`None`: now
    /// zeros), `patches` telling which new names are patches. `changes`
    /// must be sorted by position.
    pub fn updated(
        &self,
        changes: &[(u64, Option<ChunkName>)],
        patches: &BTreeMap<ChunkName, PatchRef>,
    ) -> Index {
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
        let used: std::collections::HashSet<ChunkName> = out.iter().map(|(_, n)| *n).collect();
        let patches = self
            .patches
            .iter()
            .chain(patches)
            .filter(|(name, _)| used.contains(name))
            .map(|(n, p)| (*n, *p))
            .collect();
        Index {
            chunk_size: self.chunk_size,
            volume_size: self.volume_size,
            entries: out,
            patches,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(
            HEAD + self.entries.len() * ENTRY + 8 + self.patches.len() * PATCH_REF,
        );
        body.extend_from_slice(&self.chunk_size.to_be_bytes());
        body.extend_from_slice(&self.volume_size.to_be_bytes());
        body.extend_from_slice(&(self.entries.len() as u64).to_be_bytes());
        for (pos, name) in &self.entries {
            body.extend_from_slice(&pos.to_be_bytes());
            body.extend_from_slice(&name.0);
        }
        if self.patches.is_empty() {
            return envelope::seal(MAGIC, VERSION, &body);
        }
        body.extend_from_slice(&(self.patches.len() as u64).to_be_bytes());
        for (name, p) in &self.patches {
            body.extend_from_slice(&name.0);
            body.extend_from_slice(&p.base.0);
            body.extend_from_slice(&p.mask.to_be_bytes());
        }
        envelope::seal(MAGIC, VERSION_PATCHES, &body)
    }

    pub fn decode(object: &[u8]) -> Result<Index> {
        let max_body = Self::max_object_len(Self::positions(MAX_VOLUME, MIN_CHUNK));
        let (version, body) = envelope::open(MAGIC, "snapshot index", object, max_body)?;
        if version != VERSION && version != VERSION_PATCHES {
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
        let entries_end = count
            .checked_mul(ENTRY as u64)
            .and_then(|n| n.checked_add(HEAD as u64))
            .filter(|&end| count <= positions && end <= body.len() as u64);
        let Some(entries_end) = entries_end.map(|e| e as usize) else {
            return Err(corrupt(format!(
                "snapshot index: {count} entries in {} bytes for a volume of {positions} positions",
                body.len() - HEAD
            )));
        };
        let mut entries = Vec::with_capacity(count as usize);
        let mut next = 0u64;
        for e in body[HEAD..entries_end].chunks_exact(ENTRY) {
            let pos = be_u64(e, 0);
            if pos < next || pos >= positions {
                return Err(corrupt(format!(
                    "snapshot index: position {pos} out of order or beyond the volume"
                )));
            }
            next = pos + 1;
            entries.push((pos, ChunkName(e[8..].try_into().expect("32 bytes"))));
        }
        let rest = &body[entries_end..];
        let patches = if version == VERSION {
            if !rest.is_empty() {
                return Err(corrupt(format!(
                    "snapshot index: {} bytes after its {count} entries",
                    rest.len()
                )));
            }
            BTreeMap::new()
        } else {
            Self::decode_patches(rest, chunk_size, &entries)?
        };
        Ok(Index {
            chunk_size,
            volume_size,
            entries,
            patches,
        })
    }

    /// The patch table of a version 2 body: sorted, each patch used by an
    /// entry, its base a whole chunk, its mask inside the chunk.
    fn decode_patches(
        rest: &[u8],
        chunk_size: u32,
        entries: &[(u64, ChunkName)],
    ) -> Result<BTreeMap<ChunkName, PatchRef>> {
        if rest.len() < 8 {
            return Err(corrupt("snapshot index: no patch count"));
        }
        let count = be_u64(rest, 0);
        if (rest.len() - 8) as u64 != count.saturating_mul(PATCH_REF as u64) {
            return Err(corrupt(format!(
                "snapshot index: {count} patches in {} bytes",
                rest.len() - 8
            )));
        }
        let grains = chunk_size as u64 / PATCH_GRAIN;
        let used: std::collections::HashSet<ChunkName> = entries.iter().map(|(_, n)| *n).collect();
        let mut patches = BTreeMap::new();
        for p in rest[8..].chunks_exact(PATCH_REF) {
            let name = ChunkName(p[..32].try_into().expect("32 bytes"));
            let base = ChunkName(p[32..64].try_into().expect("32 bytes"));
            let mask = be_u64(p, 64);
            let inside = grains >= 64 || mask >> grains == 0;
            if patches
                .last_key_value()
                .is_some_and(|(last, _)| *last >= name)
                || !used.contains(&name)
                || mask == 0
                || !inside
            {
                return Err(corrupt(format!(
                    "snapshot index: patch {name} is out of order, unused or has a bad mask"
                )));
            }
            patches.insert(name, PatchRef { base, mask });
        }
        if patches.values().any(|p| patches.contains_key(&p.base)) {
            return Err(corrupt("snapshot index: a patch's base is itself a patch"));
        }
        Ok(patches)
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
        let next = idx.updated(
            &[(0, Some(name(b"z"))), (3, None), (5, Some(name(b"d")))],
            &BTreeMap::new(),
        );
        assert_eq!(
            next.entries,
            vec![(0, name(b"z")), (1, name(b"a")), (5, name(b"d"))]
        );
        assert_eq!(idx.updated(&[], &BTreeMap::new()).entries, idx.entries);
    }

    #[test]
    fn patches_round_trip_keep_their_bases_and_go_with_their_last_use() {
        let mut idx = Index::zeros(8 << 20, 1 << 20).unwrap();
        idx.entries = vec![(1, name(b"a")), (3, name(b"b"))];
        assert_eq!(
            idx.encode()[4..6],
            VERSION.to_be_bytes(),
            "no patches: version 1"
        );
        let p = PatchRef {
            base: name(b"a"),
            mask: 0b101,
        };
        let next = idx.updated(&[(1, Some(name(b"p")))], &BTreeMap::from([(name(b"p"), p)]));
        assert_eq!(next.at(1), Some(name(b"p")));
        assert_eq!(next.patches.get(&name(b"p")), Some(&p));
        assert!(next.distinct().contains(&name(b"a")), "the base is kept");
        let back = Index::decode(&next.encode()).unwrap();
        assert_eq!(back, next);
        // Rewritten whole: the patch leaves the table, and its base the set.
        let later = next.updated(&[(1, Some(name(b"c")))], &BTreeMap::new());
        assert!(later.patches.is_empty());
        assert!(!later.distinct().contains(&name(b"a")));
    }

    #[test]
    fn refuses_bad_patch_tables() {
        let mut idx = Index::zeros(8 << 20, 1 << 20).unwrap();
        idx.entries = vec![(1, name(b"p")), (2, name(b"q"))];
        let good = PatchRef {
            base: name(b"a"),
            mask: 1,
        };
        for (why, patches) in [
            ("unused", vec![(name(b"z"), good)]),
            (
                "zero mask",
                vec![(name(b"p"), PatchRef { mask: 0, ..good })],
            ),
            (
                "mask beyond 16 grains",
                vec![(
                    name(b"p"),
                    PatchRef {
                        mask: 1 << 16,
                        ..good
                    },
                )],
            ),
            (
                "base is a patch",
                vec![
                    (name(b"p"), good),
                    (
                        name(b"q"),
                        PatchRef {
                            base: name(b"p"),
                            mask: 1,
                        },
                    ),
                ],
            ),
        ] {
            idx.patches = patches.into_iter().collect();
            assert!(Index::decode(&idx.encode()).is_err(), "{why}");
        }
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
        let newer = envelope::seal(MAGIC, 3, &body);
        assert!(Index::decode(&newer)
            .unwrap_err()
            .message
            .contains("version 3"));
    }
}
