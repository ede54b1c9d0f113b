//! Chunks: the stored form of one piece of a volume.
//!
//! ```text
//! offset  size  field
//!      0     4  magic "RPCK"
//!      4     1  version (1)
//!      5     1  codec: 0 = stored as is, 1 = zstd
//!      6     2  reserved, zero (flags for encryption to come)
//!      8     4  plain length (bytes of volume data), at most MAX_CHUNK
//!     12     4  payload length
//!     16     n  payload
//!   16+n    16  checksum: BLAKE3 of bytes 0..16+n, first 16 bytes
//! ```
//!
//! The object's name is the keyed BLAKE3 hash of the plain bytes, so a
//! reader that knows the key also checks that the content is the one the
//! index asked for ([`decode_checked`]); the checksum lets anyone (a
//! verifier without the key, a scrubber) see that the object is intact.

use crate::{be_u32, corrupt};
use reprise_core::Result;

pub const MAGIC: &[u8; 4] = b"RPCK";
pub const VERSION: u8 = 1;
pub const HEADER_LEN: usize = 16;
pub const CHECKSUM_LEN: usize = 16;
/// The largest chunk a snapshot may use (chunk sizes are 1–4 MiB).
pub const MAX_CHUNK: u32 = 4 << 20;

const CODEC_STORED: u8 = 0;
const CODEC_ZSTD: u8 = 1;

/// The region's key for chunk names (32 bytes, kept by its daemons).
#[derive(Clone)]
pub struct ChunkKey(pub [u8; 32]);

impl std::fmt::Debug for ChunkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChunkKey(..)")
    }
}

/// A chunk's name: the keyed hash of its plain bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkName(pub [u8; 32]);

impl ChunkName {
    pub fn of(key: &ChunkKey, plain: &[u8]) -> ChunkName {
        ChunkName(*blake3::keyed_hash(&key.0, plain).as_bytes())
    }

    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn from_hex(text: &str) -> Result<ChunkName> {
        let bad = || corrupt(format!("'{text}' is not a chunk name"));
        if text.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, pair) in text.as_bytes().chunks(2).enumerate() {
            let s = std::str::from_utf8(pair).map_err(|_| bad())?;
            out[i] = u8::from_str_radix(s, 16).map_err(|_| bad())?;
        }
        Ok(ChunkName(out))
    }
}

impl std::fmt::Debug for ChunkName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChunkName({})", &self.to_hex()[..16])
    }
}

impl std::fmt::Display for ChunkName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Whether a piece of a volume is all zeros (such chunks are not stored).
pub fn is_zero(plain: &[u8]) -> bool {
    let words = plain.chunks_exact(8);
    let rest = words.remainder();
    rest.iter().all(|b| *b == 0)
        && words
            .into_iter()
            .all(|w| u64::from_ne_bytes(w.try_into().expect("8 bytes")) == 0)
}

fn checksum(bytes: &[u8]) -> [u8; CHECKSUM_LEN] {
    let h = blake3::hash(bytes);
    h.as_bytes()[..CHECKSUM_LEN].try_into().expect("16 bytes")
}

/// Encode a chunk's plain bytes, compressed with zstd at `level` when that
/// makes it smaller.
pub fn encode(plain: &[u8], level: i32) -> Result<Vec<u8>> {
    if plain.len() > MAX_CHUNK as usize {
        return Err(corrupt(format!(
            "a chunk of {} bytes is above the 4 MiB limit",
            plain.len()
        )));
    }
    let compressed = zstd::bulk::compress(plain, level)
        .map_err(|e| reprise_core::Error::internal(format!("zstd: {e}")))?;
    let (codec, payload): (u8, &[u8]) = if compressed.len() < plain.len() {
        (CODEC_ZSTD, &compressed)
    } else {
        (CODEC_STORED, plain)
    };
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len() + CHECKSUM_LEN);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(codec);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&(plain.len() as u32).to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    let sum = checksum(&out);
    out.extend_from_slice(&sum);
    Ok(out)
}

/// Decode a stored chunk and check its checksum; returns the plain bytes.
pub fn decode(object: &[u8]) -> Result<Vec<u8>> {
    if object.len() < HEADER_LEN + CHECKSUM_LEN {
        return Err(corrupt(format!(
            "a chunk of {} bytes is too short",
            object.len()
        )));
    }
    if &object[..4] != MAGIC {
        return Err(corrupt("not a chunk (bad magic)"));
    }
    if object[4] != VERSION {
        return Err(corrupt(format!(
            "chunk version {} is not supported",
            object[4]
        )));
    }
    if object[6..8] != [0, 0] {
        return Err(corrupt(
            "chunk flags are not supported (encrypted by a newer reprise?)",
        ));
    }
    let plain_len = be_u32(object, 8);
    let payload_len = be_u32(object, 12) as usize;
    if plain_len > MAX_CHUNK {
        return Err(corrupt(format!(
            "chunk claims {plain_len} bytes, above the 4 MiB limit"
        )));
    }
    if object.len() != HEADER_LEN + payload_len + CHECKSUM_LEN {
        return Err(corrupt(format!(
            "chunk is {} bytes but its header says {}",
            object.len(),
            HEADER_LEN + payload_len + CHECKSUM_LEN
        )));
    }
    let body = &object[..HEADER_LEN + payload_len];
    if checksum(body) != object[HEADER_LEN + payload_len..] {
        return Err(corrupt("chunk checksum mismatch: the object is damaged"));
    }
    let payload = &object[HEADER_LEN..HEADER_LEN + payload_len];
    let plain = match object[5] {
        CODEC_STORED => payload.to_vec(),
        CODEC_ZSTD => zstd::bulk::decompress(payload, plain_len as usize)
            .map_err(|e| corrupt(format!("chunk does not decompress: {e}")))?,
        other => return Err(corrupt(format!("chunk codec {other} is not supported"))),
    };
    if plain.len() != plain_len as usize {
        return Err(corrupt(format!(
            "chunk decompressed to {} bytes, not the {plain_len} its header says",
            plain.len()
        )));
    }
    Ok(plain)
}

/// Decode and check that the content is the chunk named `name`.
pub fn decode_checked(object: &[u8], key: &ChunkKey, name: &ChunkName) -> Result<Vec<u8>> {
    let plain = decode(object)?;
    if ChunkName::of(key, &plain) != *name {
        return Err(corrupt(format!(
            "chunk {name} holds other data than its name says (wrong region key, or a damaged object)"
        )));
    }
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: ChunkKey = ChunkKey([7u8; 32]);

    fn text(n: usize) -> Vec<u8> {
        b"the quick brown fox jumps over the lazy dog. "
            .iter()
            .cycle()
            .take(n)
            .copied()
            .collect()
    }

    fn noise(n: usize) -> Vec<u8> {
        let mut x = 0x9e3779b97f4a7c15u64;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn round_trips_and_compresses_when_it_helps() {
        for plain in [text(1 << 20), noise(1 << 20), vec![], vec![1, 2, 3]] {
            let obj = encode(&plain, 3).unwrap();
            assert_eq!(decode(&obj).unwrap(), plain);
            let name = ChunkName::of(&KEY, &plain);
            assert_eq!(decode_checked(&obj, &KEY, &name).unwrap(), plain);
        }
        assert!(
            encode(&text(1 << 20), 3).unwrap().len() < 1 << 16,
            "text compresses"
        );
        let random = encode(&noise(1 << 20), 3).unwrap();
        assert_eq!(random[5], CODEC_STORED, "random data is stored as is");
        assert_eq!(random.len(), (1 << 20) + HEADER_LEN + CHECKSUM_LEN);
    }

    #[test]
    fn names_are_keyed_and_round_trip_as_hex() {
        let a = ChunkName::of(&KEY, b"data");
        assert_ne!(
            a,
            ChunkName::of(&ChunkKey([8u8; 32]), b"data"),
            "another region, another name"
        );
        assert_ne!(a, ChunkName::of(&KEY, b"datb"));
        assert_eq!(ChunkName::from_hex(&a.to_hex()).unwrap(), a);
        assert!(ChunkName::from_hex("xyz").is_err());
        assert!(ChunkName::from_hex(&"g".repeat(64)).is_err());
    }

    #[test]
    fn every_damage_is_named() {
        let obj = encode(&text(100_000), 3).unwrap();
        let mut cases: Vec<(Vec<u8>, &str)> = Vec::new();
        let mut flipped = obj.clone();
        flipped[HEADER_LEN + 10] ^= 1;
        cases.push((flipped, "checksum mismatch"));
        let mut magic = obj.clone();
        magic[0] = b'X';
        cases.push((magic, "bad magic"));
        let mut version = obj.clone();
        version[4] = 9;
        cases.push((version, "version 9"));
        let mut flags = obj.clone();
        flags[7] = 1;
        cases.push((flags, "flags"));
        let mut huge = obj.clone();
        huge[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
        cases.push((huge, "above the 4 MiB limit"));
        cases.push((obj[..obj.len() - 1].to_vec(), "header says"));
        cases.push((obj[..10].to_vec(), "too short"));
        for (bytes, words) in cases {
            let e = decode(&bytes).unwrap_err();
            assert_eq!(e.code, "object_corrupt");
            assert!(e.message.contains(words), "{words}: {}", e.message);
        }
        let other = ChunkName::of(&KEY, b"something else");
        let e = decode_checked(&obj, &KEY, &other).unwrap_err();
        assert!(e.message.contains("other data than its name says"));
    }

    #[test]
    fn zero_detection() {
        assert!(is_zero(&vec![0u8; 1 << 20]));
        assert!(is_zero(&[0u8; 13]));
        let mut v = vec![0u8; 4099];
        v[4098] = 1;
        assert!(!is_zero(&v));
        v[4098] = 0;
        v[3] = 1;
        assert!(!is_zero(&v));
    }
}
