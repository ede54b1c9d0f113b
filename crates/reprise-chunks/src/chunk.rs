//! Chunks: the stored form of one piece of a volume.
//!
//! ```text
//! offset  size  field
//!      0     4  magic "RPCK"
//!      4     1  version (1)
//!      5     1  codec: 0 = stored as is, 1 = zstd
//!      6     2  flags: bit 0 = encrypted, bit 1 = a patch, bit 2 = the
//!               cipher is AES-256-GCM (only with bit 0); others zero
//!      8     4  plain length (bytes of volume data), at most MAX_CHUNK
//!     12     4  payload length
//!     16     n  payload: the (compressed) bytes, or when encrypted
//!               24 random bytes | ciphertext and 16-byte tag of them,
//!               with bytes 0..16 as associated data
//!   16+n    16  checksum: BLAKE3 of bytes 0..16+n, first 16 bytes
//! ```
//!
//! **Ciphers.** Chunks are written with AES-256-GCM (bits 0 and 2): the 24
//! random bytes are a salt, the chunk's own key is the keyed BLAKE3 hash
//! of the salt under the region's AES key, and the nonce is 12 zero bytes
//! (each key seals one chunk only). A key per chunk lifts GCM's limit on
//! random 96-bit nonces under one key; AES runs on the CPU's AES
//! instructions, three to four times as fast as XChaCha20-Poly1305 here.
//! Chunks written before (bit 0 alone) are XChaCha20-Poly1305 with the 24
//! bytes as its nonce; they are read as they are.
//!
//! The object's name is the keyed BLAKE3 hash of the plain bytes, so a
//! reader that knows the key also checks that the content is the one the
//! index asked for ([`decode_checked`]); the checksum lets anyone (a
//! verifier without the key, a scrubber) see that the object is intact.
//!
//! A **patch** (flag bit 1) holds, instead of a whole chunk, the grains of
//! 64 KiB that differ from another, whole chunk (its base): its plain bytes
//! are `base name (32) | grain mask (8, bit i = grain i) | the grains in
//! mask order` (each grain 64 KiB, or what is left of the chunk). A patch
//! is named by the keyed hash of those bytes under a domain of its own
//! ([`ChunkName::of_patch`]), so it cannot pass for a whole chunk; the
//! whole content it stands for is `Patch::apply` of its base. A patch's
//! base is always a whole chunk (depth one), so a restore costs at most one
//! more fetch per position.
//!
//! The 24 random bytes are drawn for each encryption: at that length a
//! repeat is not a practical risk, and no counter has to survive a crash.

use crate::{be_u32, corrupt};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use reprise_core::{Error, ErrorKind, Result};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};

pub const MAGIC: &[u8; 4] = b"RPCK";
pub const VERSION: u8 = 1;
pub const HEADER_LEN: usize = 16;
pub const CHECKSUM_LEN: usize = 16;
/// The largest chunk a snapshot may use (chunk sizes are 1–4 MiB).
pub const MAX_CHUNK: u32 = 4 << 20;

const CODEC_STORED: u8 = 0;
const CODEC_ZSTD: u8 = 1;
const FLAG_ENCRYPTED: u16 = 1;
const FLAG_PATCH: u16 = 2;
const FLAG_AES: u16 = 4;
/// The grain of a patch: what one bit of its mask covers.
pub const PATCH_GRAIN: u64 = 64 << 10;
const PATCH_HEAD: usize = 40;
/// Domain of patch names: no whole chunk's name is a patch's.
const PATCH_DOMAIN: &[u8] = b"reprise patch v1";
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// The region's key for chunk names (32 bytes, kept by its daemons).
#[derive(Clone)]
pub struct ChunkKey(pub [u8; 32]);

impl std::fmt::Debug for ChunkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChunkKey(..)")
    }
}

/// Everything derived from a region's 32-byte secret: the key that names
/// chunks, the cipher when the region encrypts, and a check value that
/// tells a wrong secret apart before any chunk is read.
#[derive(Clone)]
pub struct RegionKeys {
    pub names: ChunkKey,
    cipher: Option<Ciphers>,
    check: [u8; 32],
    /// Keys the checksum of manifests (see `manifest`).
    seal: [u8; 32],
    /// Seals catalog backups (see `catalog_backup`), whether or not the
    /// region encrypts chunks: they hold key hashes and sealed secrets.
    backups: [u8; 32],
}

/// The ciphers of an encrypting region: AES-256-GCM for what is written,
/// XChaCha20-Poly1305 for chunks written before.
#[derive(Clone)]
struct Ciphers {
    /// Keys each chunk's AES key: `keyed_hash(aes_root, salt)`.
    aes_root: [u8; 32],
    xchacha: XChaCha20Poly1305,
}

impl Ciphers {
    /// The AES-256-GCM key of the chunk sealed with `salt`.
    fn aes(&self, salt: &[u8]) -> LessSafeKey {
        let key = blake3::keyed_hash(&self.aes_root, salt);
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key.as_bytes()).expect("a 32-byte key"))
    }
}

/// The nonce of every AES chunk key's only use.
fn aes_nonce() -> Nonce {
    Nonce::assume_unique_for_key([0; 12])
}

impl std::fmt::Debug for RegionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RegionKeys(encrypted: {})", self.encrypts())
    }
}

impl RegionKeys {
    pub fn derive(secret: &[u8; 32], encrypt: bool) -> RegionKeys {
        let names = blake3::derive_key("reprise 2026-11 chunk names", secret);
        let cipher = encrypt.then(|| {
            let k = blake3::derive_key("reprise 2026-11 chunk encryption", secret);
            Ciphers {
                aes_root: blake3::derive_key("reprise 2026-12 chunk keys aes-256-gcm", secret),
                xchacha: XChaCha20Poly1305::new(&k.into()),
            }
        });
        RegionKeys {
            names: ChunkKey(names),
            cipher,
            check: blake3::derive_key("reprise 2026-11 key check", secret),
            seal: blake3::derive_key("reprise 2026-12 manifest seal", secret),
            backups: blake3::derive_key("reprise 2026-12 catalog backups", secret),
        }
    }

    /// The key of a manifest's checksum.
    pub fn seal_key(&self) -> &[u8; 32] {
        &self.seal
    }

    /// The AES-256-GCM key of catalog backups.
    pub fn backup_key(&self) -> &[u8; 32] {
        &self.backups
    }

    pub fn encrypts(&self) -> bool {
        self.cipher.is_some()
    }

    /// A value stored with the region, equal only for the same secret.
    pub fn check_value(&self) -> String {
        self.check.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A chunk's name: the keyed hash of its plain bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkName(pub [u8; 32]);

impl ChunkName {
    pub fn of(key: &ChunkKey, plain: &[u8]) -> ChunkName {
        ChunkName(*blake3::keyed_hash(&key.0, plain).as_bytes())
    }

    /// The name of a patch whose plain bytes are `payload`.
    pub fn of_patch(key: &ChunkKey, payload: &[u8]) -> ChunkName {
        let mut h = blake3::Hasher::new_keyed(&key.0);
        h.update(PATCH_DOMAIN);
        h.update(payload);
        ChunkName(*h.finalize().as_bytes())
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
/// makes it smaller, and encrypted when the region's keys say so.
pub fn encode(plain: &[u8], level: i32, keys: &RegionKeys) -> Result<Vec<u8>> {
    encode_flagged(plain, level, keys, 0)
}

fn encode_flagged(plain: &[u8], level: i32, keys: &RegionKeys, kind: u16) -> Result<Vec<u8>> {
    if plain.len() > MAX_CHUNK as usize {
        return Err(corrupt(format!(
            "a chunk of {} bytes is above the 4 MiB limit",
            plain.len()
        )));
    }
    let compressed = zstd::bulk::compress(plain, level)
        .map_err(|e| Error::internal(format!("zstd: {e}")).with_source(e))?;
    let (codec, body): (u8, &[u8]) = if compressed.len() < plain.len() {
        (CODEC_ZSTD, &compressed)
    } else {
        (CODEC_STORED, plain)
    };
    let flags = kind
        | if keys.encrypts() {
            FLAG_ENCRYPTED | FLAG_AES
        } else {
            0
        };
    let payload_len = match keys.cipher {
        Some(_) => NONCE_LEN + body.len() + TAG_LEN,
        None => body.len(),
    };
    let mut out = Vec::with_capacity(HEADER_LEN + payload_len + CHECKSUM_LEN);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(codec);
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&(plain.len() as u32).to_be_bytes());
    out.extend_from_slice(&(payload_len as u32).to_be_bytes());
    match &keys.cipher {
        Some(ciphers) => {
            // Sealed in place, in the object's own buffer: no copy of the
            // chunk is made for the ciphertext.
            let salt: [u8; NONCE_LEN] = rand::random();
            let header: [u8; HEADER_LEN] = out[..HEADER_LEN].try_into().expect("16 bytes");
            out.extend_from_slice(&salt);
            out.extend_from_slice(body);
            let tag = ciphers
                .aes(&salt)
                .seal_in_place_separate_tag(
                    aes_nonce(),
                    Aad::from(header),
                    &mut out[HEADER_LEN + NONCE_LEN..],
                )
                .map_err(|_| Error::internal("chunk encryption failed"))?;
            out.extend_from_slice(tag.as_ref());
        }
        None => out.extend_from_slice(body),
    }
    let sum = checksum(&out);
    out.extend_from_slice(&sum);
    Ok(out)
}

/// Decode a stored chunk and check its checksum; returns the plain bytes
/// (of a whole chunk, or of a patch).
pub fn decode(object: &[u8], keys: &RegionKeys) -> Result<Vec<u8>> {
    let mut object = object.to_vec();
    let opened = open(&mut object, keys)?;
    let mut plain = vec![0; opened.plain_len];
    opened.plain_into(&mut plain)?;
    Ok(plain)
}

/// A chunk object whose header and checksum are checked and whose payload
/// is decrypted.
struct Opened<'a> {
    codec: u8,
    plain_len: usize,
    is_patch: bool,
    /// The (compressed) bytes: in the object itself, or for a chunk of
    /// the older cipher, decrypted apart.
    body: std::borrow::Cow<'a, [u8]>,
}

/// Check `object` and open it: an AES chunk is decrypted in place, so
/// `object` is spent.
fn open<'a>(object: &'a mut [u8], keys: &RegionKeys) -> Result<Opened<'a>> {
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
    let codec = object[5];
    let flags = u16::from_be_bytes([object[6], object[7]]);
    if flags & !(FLAG_ENCRYPTED | FLAG_PATCH | FLAG_AES) != 0
        || (flags & FLAG_AES != 0 && flags & FLAG_ENCRYPTED == 0)
    {
        return Err(corrupt(format!("chunk flags {flags:#x} are not supported")));
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
    let (sealed, sum) = object.split_at_mut(HEADER_LEN + payload_len);
    if checksum(sealed) != *sum {
        return Err(corrupt("chunk checksum mismatch: the object is damaged"));
    }
    let (header, payload) = sealed.split_at_mut(HEADER_LEN);
    let body = match (flags & FLAG_ENCRYPTED != 0, &keys.cipher) {
        (false, _) => std::borrow::Cow::Borrowed(&*payload),
        (true, None) => {
            return Err(Error::new(
                ErrorKind::Invalid,
                "region_key_wrong",
                "the chunk is encrypted but this region is configured without encryption",
            ))
        }
        (true, Some(ciphers)) => {
            if payload.len() < NONCE_LEN + TAG_LEN {
                return Err(corrupt("encrypted chunk too short for its nonce and tag"));
            }
            let (salt, ciphertext) = payload.split_at_mut(NONCE_LEN);
            let key_wrong = || {
                Error::new(
                    ErrorKind::Invalid,
                    "region_key_wrong",
                    "the chunk is intact but does not decrypt with this region's key: the key is wrong",
                )
            };
            if flags & FLAG_AES != 0 {
                let opened = ciphers
                    .aes(salt)
                    .open_in_place(aes_nonce(), Aad::from(&*header), ciphertext)
                    .map_err(|_| key_wrong())?;
                std::borrow::Cow::Borrowed(&*opened)
            } else {
                let payload = Payload {
                    msg: &*ciphertext,
                    aad: &*header,
                };
                let opened = ciphers
                    .xchacha
                    .decrypt(XNonce::from_slice(salt), payload)
                    .map_err(|_| key_wrong())?;
                std::borrow::Cow::Owned(opened)
            }
        }
    };
    Ok(Opened {
        codec,
        plain_len: plain_len as usize,
        is_patch: flags & FLAG_PATCH != 0,
        body,
    })
}

impl Opened<'_> {
    /// Write the plain bytes into `out`, which is exactly as long.
    fn plain_into(&self, out: &mut [u8]) -> Result<()> {
        let written = match self.codec {
            CODEC_STORED if self.body.len() == out.len() => {
                out.copy_from_slice(&self.body);
                out.len()
            }
            CODEC_STORED => self.body.len(),
            CODEC_ZSTD => zstd::bulk::decompress_to_buffer(&self.body, out)
                .map_err(|e| corrupt(format!("chunk does not decompress: {e}")).with_source(e))?,
            other => return Err(corrupt(format!("chunk codec {other} is not supported"))),
        };
        if written != out.len() {
            return Err(corrupt(format!(
                "chunk decompressed to {written} bytes, not the {} its header says",
                out.len()
            )));
        }
        Ok(())
    }
}

/// What [`decode_checked`] found in a chunk object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A whole chunk: its plain bytes are the first this many of the
    /// caller's buffer.
    Whole(usize),
    Patch(Patch),
}

/// Decode `object` (spent: it is decrypted in place) into `out` and check
/// that the content is the chunk (or patch) named `name`. `out` must hold
/// [`MAX_CHUNK`] bytes; a restore passes the same buffer for every chunk,
/// so nothing is allocated per chunk.
pub fn decode_checked(
    object: &mut [u8],
    keys: &RegionKeys,
    name: &ChunkName,
    out: &mut [u8],
) -> Result<Decoded> {
    let opened = open(object, keys)?;
    let Some(plain) = out.get_mut(..opened.plain_len) else {
        return Err(Error::internal(format!(
            "a buffer of {} bytes is too small for a chunk",
            out.len()
        )));
    };
    opened.plain_into(plain)?;
    let named = if opened.is_patch {
        ChunkName::of_patch(&keys.names, plain)
    } else {
        ChunkName::of(&keys.names, plain)
    };
    if named != *name {
        return Err(corrupt(format!(
            "chunk {name} holds other data than its name says (wrong region key, or a damaged object)"
        )));
    }
    if opened.is_patch {
        Patch::parse(plain).map(Decoded::Patch)
    } else {
        Ok(Decoded::Whole(plain.len()))
    }
}

/// The grains of a chunk that differ from its base (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patch {
    pub base: ChunkName,
    /// Bit i: grain i of the chunk is in `data`.
    pub mask: u64,
    /// The grains, in mask order.
    pub data: Vec<u8>,
}

impl Patch {
    fn payload(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(PATCH_HEAD + self.data.len());
        out.extend_from_slice(&self.base.0);
        out.extend_from_slice(&self.mask.to_be_bytes());
        out.extend_from_slice(&self.data);
        out
    }

    fn parse(plain: &[u8]) -> Result<Patch> {
        if plain.len() < PATCH_HEAD {
            return Err(corrupt("a patch too short for its base and mask"));
        }
        Ok(Patch {
            base: ChunkName(plain[..32].try_into().expect("32 bytes")),
            mask: u64::from_be_bytes(plain[32..40].try_into().expect("8 bytes")),
            data: plain[PATCH_HEAD..].to_vec(),
        })
    }

    pub fn name(&self, key: &ChunkKey) -> ChunkName {
        ChunkName::of_patch(key, &self.payload())
    }

    /// Its name and its stored form.
    pub fn encode(&self, level: i32, keys: &RegionKeys) -> Result<(ChunkName, Vec<u8>)> {
        let payload = self.payload();
        let name = ChunkName::of_patch(&keys.names, &payload);
        Ok((name, encode_flagged(&payload, level, keys, FLAG_PATCH)?))
    }

    /// Turn `whole`, the base's plain bytes, into the chunk's: the grains
    /// of the mask replaced by the patch's. The mask must fit the base and
    /// the data the mask; `whole` is unchanged when they do not.
    pub fn apply(&self, whole: &mut [u8]) -> Result<()> {
        let grains = (whole.len() as u64).div_ceil(PATCH_GRAIN);
        if grains < 64 && self.mask >> grains != 0 {
            return Err(corrupt(format!(
                "a patch's grains {:#x} go beyond its {}-byte base",
                self.mask,
                whole.len()
            )));
        }
        let whole_len = whole.len();
        let grain_range = |i: u64| {
            let start = (i * PATCH_GRAIN) as usize;
            start..(start + PATCH_GRAIN as usize).min(whole_len)
        };
        let needed: usize = (0..grains)
            .filter(|i| self.mask >> i & 1 == 1)
            .map(|i| grain_range(i).len())
            .sum();
        if needed != self.data.len() {
            return Err(corrupt(format!(
                "a patch holds {} bytes where its mask says {needed}",
                self.data.len()
            )));
        }
        let mut at = 0usize;
        for i in (0..grains).filter(|i| self.mask >> i & 1 == 1) {
            let range = grain_range(i);
            let len = range.len();
            whole[range].copy_from_slice(&self.data[at..at + len]);
            at += len;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: ChunkKey = ChunkKey([7u8; 32]);

    fn plain_keys() -> RegionKeys {
        RegionKeys {
            names: KEY,
            cipher: None,
            check: [0; 32],
            seal: [0; 32],
            backups: [0; 32],
        }
    }

    /// [`decode_checked`] of a copy of `object` into a buffer of its own.
    fn checked(object: &[u8], keys: &RegionKeys, name: &ChunkName) -> Result<Whole> {
        let mut out = vec![0; MAX_CHUNK as usize];
        Ok(
            match decode_checked(&mut object.to_vec(), keys, name, &mut out)? {
                Decoded::Whole(n) => Whole::Bytes(out[..n].to_vec()),
                Decoded::Patch(p) => Whole::Patch(p),
            },
        )
    }

    #[derive(Debug, PartialEq)]
    enum Whole {
        Bytes(Vec<u8>),
        Patch(Patch),
    }

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
            let obj = encode(&plain, 3, &plain_keys()).unwrap();
            assert_eq!(decode(&obj, &plain_keys()).unwrap(), plain);
            let name = ChunkName::of(&KEY, &plain);
            assert_eq!(
                checked(&obj, &plain_keys(), &name).unwrap(),
                Whole::Bytes(plain.clone())
            );
        }
        assert!(
            encode(&text(1 << 20), 3, &plain_keys()).unwrap().len() < 1 << 16,
            "text compresses"
        );
        let random = encode(&noise(1 << 20), 3, &plain_keys()).unwrap();
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
    fn patches_name_themselves_apart_and_rebuild_the_chunk() {
        let keys = RegionKeys::derive(&[3; 32], true);
        let base = noise(1 << 20);
        let base_name = ChunkName::of(&keys.names, &base);
        // Grains 1 and 15 replaced.
        let mut whole = base.clone();
        whole[PATCH_GRAIN as usize..2 * PATCH_GRAIN as usize].fill(7);
        whole[15 * PATCH_GRAIN as usize..].fill(9);
        let mut data = vec![7u8; PATCH_GRAIN as usize];
        data.extend(vec![9u8; PATCH_GRAIN as usize]);
        let patch = Patch {
            base: base_name,
            mask: 1 << 1 | 1 << 15,
            data,
        };
        let (name, object) = patch.encode(3, &keys).unwrap();
        assert!(
            object.len() < 3 * PATCH_GRAIN as usize,
            "only the grains are stored"
        );
        assert_ne!(name, ChunkName::of(&keys.names, &whole));
        let Whole::Patch(back) = checked(&object, &keys, &name).unwrap() else {
            panic!("a patch decodes as a patch");
        };
        assert_eq!(back, patch);
        let mut rebuilt = base.clone();
        back.apply(&mut rebuilt).unwrap();
        assert_eq!(rebuilt, whole);
        // Its bytes under a whole chunk's name, and bad shapes, are refused.
        let as_whole = ChunkName::of(&keys.names, &patch.payload());
        assert!(checked(&object, &keys, &as_whole).is_err());
        let short = Patch {
            data: vec![7; 100],
            ..patch.clone()
        };
        let mut untouched = base.clone();
        assert!(short.apply(&mut untouched).is_err());
        assert_eq!(untouched, base);
        let beyond = Patch {
            mask: 1 << 20,
            data: vec![1; PATCH_GRAIN as usize],
            ..patch.clone()
        };
        let mut untouched = base.clone();
        assert!(beyond.apply(&mut untouched).is_err());
        assert_eq!(untouched, base);
        let long = Patch {
            data: vec![7; 3 * PATCH_GRAIN as usize],
            ..patch
        };
        let mut untouched = base.clone();
        assert!(long.apply(&mut untouched).is_err());
        assert_eq!(untouched, base);
    }

    #[test]
    fn every_damage_is_named() {
        let obj = encode(&text(100_000), 3, &plain_keys()).unwrap();
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
        flags[7] = 4;
        cases.push((flags, "flags"));
        let mut huge = obj.clone();
        huge[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
        cases.push((huge, "above the 4 MiB limit"));
        cases.push((obj[..obj.len() - 1].to_vec(), "header says"));
        cases.push((obj[..10].to_vec(), "too short"));
        for (bytes, words) in cases {
            let e = decode(&bytes, &plain_keys()).unwrap_err();
            assert_eq!(e.code, "object_corrupt");
            assert!(e.message.contains(words), "{words}: {}", e.message);
        }
        let other = ChunkName::of(&KEY, b"something else");
        let e = checked(&obj, &plain_keys(), &other).unwrap_err();
        assert!(e.message.contains("other data than its name says"));
    }

    #[test]
    fn encrypted_chunks_hide_data_never_repeat_a_nonce_and_name_a_wrong_key() {
        let keys = RegionKeys::derive(&[5; 32], true);
        let plain = text(200_000);
        let a = encode(&plain, 3, &keys).unwrap();
        let b = encode(&plain, 3, &keys).unwrap();
        assert_eq!(u16::from_be_bytes([a[6], a[7]]), FLAG_ENCRYPTED | FLAG_AES);
        assert_ne!(
            a[HEADER_LEN..HEADER_LEN + NONCE_LEN],
            b[HEADER_LEN..HEADER_LEN + NONCE_LEN],
            "a fresh nonce per encryption"
        );
        assert!(!a.windows(20).any(|w| w == &plain[..20]), "no plain text");
        let name = ChunkName::of(&keys.names, &plain);
        assert_eq!(
            checked(&a, &keys, &name).unwrap(),
            Whole::Bytes(plain.clone())
        );
        let wrong = RegionKeys::derive(&[6; 32], true);
        assert_eq!(decode(&a, &wrong).unwrap_err().code, "region_key_wrong");
        let unencrypted = RegionKeys::derive(&[5; 32], false);
        assert_eq!(
            decode(&a, &unencrypted).unwrap_err().code,
            "region_key_wrong"
        );
        assert_ne!(keys.check_value(), wrong.check_value());
        assert_eq!(keys.check_value(), unencrypted.check_value());
        // Damage is still found by the checksum first, with or without key.
        let mut bad = a.clone();
        bad[HEADER_LEN + 40] ^= 1;
        assert!(decode(&bad, &keys)
            .unwrap_err()
            .message
            .contains("checksum"));
    }

    /// A chunk as reprise wrote them before AES: XChaCha20-Poly1305 under
    /// the region's cipher key, the 24 bytes its nonce.
    fn xchacha_chunk(secret: &[u8; 32], plain: &[u8]) -> Vec<u8> {
        use chacha20poly1305::aead::AeadInPlace;
        let k = blake3::derive_key("reprise 2026-11 chunk encryption", secret);
        let cipher = XChaCha20Poly1305::new(&k.into());
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&[VERSION, CODEC_STORED]);
        out.extend_from_slice(&FLAG_ENCRYPTED.to_be_bytes());
        out.extend_from_slice(&(plain.len() as u32).to_be_bytes());
        out.extend_from_slice(&((NONCE_LEN + plain.len() + TAG_LEN) as u32).to_be_bytes());
        let header = out.clone();
        let nonce = [9u8; NONCE_LEN];
        let mut sealed = plain.to_vec();
        let tag = cipher
            .encrypt_in_place_detached(XNonce::from_slice(&nonce), &header, &mut sealed)
            .unwrap();
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out.extend_from_slice(&tag);
        let sum = checksum(&out);
        out.extend_from_slice(&sum);
        out
    }

    #[test]
    fn chunks_sealed_before_aes_still_read() {
        let keys = RegionKeys::derive(&[5; 32], true);
        let plain = noise(100_000);
        let old = xchacha_chunk(&[5; 32], &plain);
        let name = ChunkName::of(&keys.names, &plain);
        assert_eq!(
            checked(&old, &keys, &name).unwrap(),
            Whole::Bytes(plain.clone())
        );
        let wrong = RegionKeys::derive(&[6; 32], true);
        assert_eq!(decode(&old, &wrong).unwrap_err().code, "region_key_wrong");
        // The AES bit names the cipher: flipped (checksum recomputed), the
        // tag no longer verifies; alone, without bit 0, it is refused.
        let mut relabelled = old.clone();
        relabelled[7] |= FLAG_AES as u8;
        let end = relabelled.len() - CHECKSUM_LEN;
        let sum = checksum(&relabelled[..end]);
        relabelled[end..].copy_from_slice(&sum);
        assert_eq!(
            decode(&relabelled, &keys).unwrap_err().code,
            "region_key_wrong"
        );
        let mut aes_alone = encode(&plain, 3, &plain_keys()).unwrap();
        aes_alone[7] = FLAG_AES as u8;
        assert!(decode(&aes_alone, &plain_keys())
            .unwrap_err()
            .message
            .contains("flags"));
    }

    #[test]
    fn each_aes_chunk_has_its_own_key() {
        let keys = RegionKeys::derive(&[5; 32], true);
        let ciphers = keys.cipher.as_ref().unwrap();
        let plain = text(4096);
        let a = encode(&plain, 0, &keys).unwrap();
        let b = encode(&plain, 0, &keys).unwrap();
        // Same plain bytes, same (zero) nonce: the ciphertexts differ only
        // because the salts, hence the keys, do.
        let body = HEADER_LEN + NONCE_LEN..a.len() - CHECKSUM_LEN - TAG_LEN;
        assert_ne!(a[body.clone()], b[body]);
        let (sa, sb) = (
            &a[HEADER_LEN..HEADER_LEN + NONCE_LEN],
            &b[HEADER_LEN..HEADER_LEN + NONCE_LEN],
        );
        assert_ne!(
            blake3::keyed_hash(&ciphers.aes_root, sa),
            blake3::keyed_hash(&ciphers.aes_root, sb)
        );
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
