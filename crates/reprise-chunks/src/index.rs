//! The index of one snapshot: for every chunk-sized position of the
//! volume, the name of the chunk that holds it, or nothing for zeros.
//!
//! Body (in an [`envelope`](crate::envelope) of kind "RPIX", version 1):
//!
//! ```text
//!  0  4  chunk size (bytes, a power of two from 64 KiB to 4 MiB)
//!  4  8  volume size (bytes)
//! 12  n  one entry per position, ceil(volume size / chunk size) of them:
//!        32 bytes, the chunk's name; all zeros for a zero chunk
//! ```
//!
//! A name of 32 zero bytes stands for "zeros": a keyed BLAKE3 hash equal to
//! it is not a risk worth a byte per entry.

use crate::chunk::{ChunkName, MAX_CHUNK};
use crate::{be_u32, be_u64, corrupt, envelope};
use reprise_core::Result;

pub const MAGIC: &[u8; 4] = b"RPIX";
pub const VERSION: u16 = 1;
const MIN_CHUNK: u32 = 64 << 10;
/// Volumes of up to 64 PiB; the cap keeps a hostile index from asking for
/// more than that.
const MAX_VOLUME: u64 = 1 << 56;
const ZERO: [u8; 32] = [0; 32];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    pub chunk_size: u32,
    pub volume_size: u64,
    /// One per position; `None` is a zero chunk.
    pub chunks: Vec<Option<ChunkName>>,
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
            chunks: vec![None; Self::positions(volume_size, chunk_size) as usize],
        })
    }

    /// The distinct chunks it references.
    pub fn distinct(&self) -> std::collections::BTreeSet<ChunkName> {
        self.chunks.iter().flatten().copied().collect()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(12 + self.chunks.len() * 32);
        body.extend_from_slice(&self.chunk_size.to_be_bytes());
        body.extend_from_slice(&self.volume_size.to_be_bytes());
        for c in &self.chunks {
            body.extend_from_slice(c.as_ref().map(|n| &n.0).unwrap_or(&ZERO));
        }
        envelope::seal(MAGIC, VERSION, &body)
    }

    pub fn decode(object: &[u8]) -> Result<Index> {
        let max_body = 12 + Self::positions(MAX_VOLUME, MIN_CHUNK) * 32;
        let (version, body) = envelope::open(MAGIC, "snapshot index", object, max_body)?;
        if version != VERSION {
            return Err(corrupt(format!(
                "snapshot index version {version} is not supported"
            )));
        }
        if body.len() < 12 {
            return Err(corrupt("snapshot index: body too short"));
        }
        let chunk_size = be_u32(body, 0);
        let volume_size = be_u64(body, 4);
        check_sizes(chunk_size, volume_size)?;
        let n = Self::positions(volume_size, chunk_size);
        if (body.len() as u64 - 12) != n * 32 {
            return Err(corrupt(format!(
                "snapshot index: {} entries for a volume that has {n} positions",
                (body.len() - 12) / 32
            )));
        }
        let chunks = body[12..]
            .chunks_exact(32)
            .map(|e| (e != ZERO).then(|| ChunkName(e.try_into().expect("32 bytes"))))
            .collect();
        Ok(Index {
            chunk_size,
            volume_size,
            chunks,
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

    #[test]
    fn round_trips_with_zeros_and_names() {
        let key = ChunkKey([1; 32]);
        let mut idx = Index::zeros((10 << 20) + 5, 1 << 20).unwrap();
        assert_eq!(idx.chunks.len(), 11);
        idx.chunks[0] = Some(ChunkName::of(&key, b"a"));
        idx.chunks[7] = Some(ChunkName::of(&key, b"a"));
        idx.chunks[10] = Some(ChunkName::of(&key, b"b"));
        let back = Index::decode(&idx.encode()).unwrap();
        assert_eq!(back, idx);
        assert_eq!(back.distinct().len(), 2);
    }

    #[test]
    fn refuses_inconsistent_indexes() {
        assert!(Index::zeros(1 << 30, 3000).is_err());
        assert!(Index::zeros(1 << 30, 8 << 20).is_err());
        let idx = Index::zeros(4 << 20, 1 << 20).unwrap();
        let obj = idx.encode();
        // Claim a bigger volume than the entries cover, with a valid checksum.
        let mut body = obj[envelope::HEADER_LEN..obj.len() - envelope::CHECKSUM_LEN].to_vec();
        body[4..12].copy_from_slice(&(8u64 << 20).to_be_bytes());
        let lying = envelope::seal(MAGIC, VERSION, &body);
        let e = Index::decode(&lying).unwrap_err();
        assert!(e.message.contains("positions"), "{}", e.message);
        let newer = envelope::seal(MAGIC, 2, &body);
        assert!(Index::decode(&newer)
            .unwrap_err()
            .message
            .contains("version 2"));
    }
}
