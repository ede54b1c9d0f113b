//! A backup of the catalog's own rows, kept in the region's store
//! (`catalog-backups/<UTC time>-<catalog id>`): what the store cannot
//! tell of itself — accounts and their key hashes, plans, zones, volumes,
//! instances, recovery points, policies, templates. Snapshots are not in
//! it: `reprise region recover` finds them in their own manifests.
//!
//! ```text
//! envelope "RPKB", version 1, checksum keyed with the region's seal key
//! body:  nonce (12 random bytes) | AES-256-GCM(zstd(JSON)) with its 16-byte tag
//! ```
//!
//! Always encrypted, under a key derived from the region's secret
//! (`RegionKeys::backup_key`), whatever the region's `encrypt`: it holds
//! key hashes and sealed CloudStack secrets. A random 96-bit nonce per
//! backup: a region writes a few a day, far from GCM's limit. The JSON is
//! the caller's (the catalog's dump); this module only seals and opens.

use crate::chunk::RegionKeys;
use crate::{corrupt, envelope};
use reprise_core::{Error, ErrorKind, Result};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};

pub const MAGIC: &[u8; 4] = b"RPKB";
const VERSION: u16 = 1;
/// The most a backup's body may claim: far above a catalog of 100 000
/// volumes, far below what a forged length could make a reader allocate.
pub const MAX_BODY: u64 = 1 << 30;
const NONCE_LEN: usize = 12;

fn cipher(keys: &RegionKeys) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, keys.backup_key()).expect("a 32-byte key"))
}

/// Seal `json` (the catalog's dump) as a backup object.
pub fn encode(json: &[u8], keys: &RegionKeys) -> Result<Vec<u8>> {
    let mut data = zstd::encode_all(json, 3)
        .map_err(|e| Error::internal(format!("compressing a catalog backup: {e}")))?;
    let nonce: [u8; NONCE_LEN] = rand::random();
    cipher(keys)
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(MAGIC),
            &mut data,
        )
        .map_err(|_| Error::internal("sealing a catalog backup"))?;
    let mut body = nonce.to_vec();
    body.extend_from_slice(&data);
    Ok(envelope::seal_with(
        MAGIC,
        VERSION,
        &body,
        Some(keys.seal_key()),
    ))
}

/// Open a backup object: its JSON, or why not (`object_corrupt` when it
/// was damaged or written under another region's secret).
pub fn decode(object: &[u8], keys: &RegionKeys) -> Result<Vec<u8>> {
    let what = "catalog backup";
    let (version, body) =
        envelope::open_with(MAGIC, what, object, MAX_BODY, Some(keys.seal_key()))?;
    if version != VERSION {
        return Err(corrupt(format!(
            "{what}: version {version} is not supported"
        )));
    }
    if body.len() < NONCE_LEN + 16 {
        return Err(corrupt(format!("{what}: too short")));
    }
    let (nonce, sealed) = body.split_at(NONCE_LEN);
    let mut data = sealed.to_vec();
    let nonce: [u8; NONCE_LEN] = nonce.try_into().expect("12 bytes");
    let plain = cipher(keys)
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(MAGIC),
            &mut data,
        )
        .map_err(|_| corrupt(format!("{what}: does not open under this region's key")))?;
    // Capped: a sealed backup is the region's own, but a bug is not.
    let mut out = Vec::new();
    let mut reader = zstd::Decoder::new(&plain[..])
        .map_err(|e| Error::new(ErrorKind::Corrupt, "object_corrupt", format!("{what}: {e}")))?;
    std::io::Read::read_to_end(
        &mut std::io::Read::take(&mut reader, MAX_BODY * 8),
        &mut out,
    )
    .map_err(|e| corrupt(format!("{what}: {e}")))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_opens_only_under_its_regions_key_and_whole() {
        let keys = RegionKeys::derive(&[9; 32], false);
        let json = br#"{"tables": {"accounts": [["a", "alice"]]}}"#.repeat(50);
        let obj = encode(&json, &keys).unwrap();
        assert_eq!(decode(&obj, &keys).unwrap(), json);
        assert!(
            !obj.windows(7).any(|w| w == b"accounts"[..7].as_ref()),
            "encrypted even in an unencrypted region"
        );
        let other = RegionKeys::derive(&[8; 32], false);
        assert_eq!(decode(&obj, &other).unwrap_err().code, "object_corrupt");
        for at in [5, 20, obj.len() / 2, obj.len() - 40] {
            let mut bad = obj.clone();
            bad[at] ^= 1;
            assert_eq!(
                decode(&bad, &keys).unwrap_err().kind,
                ErrorKind::Corrupt,
                "{at}"
            );
        }
    }
}
