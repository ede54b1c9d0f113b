//! The envelope of every object that is not a chunk (index, manifest):
//!
//! ```text
//! offset  size  field
//!      0     4  magic (per kind: "RPIX" index, "RPMF" manifest)
//!      4     2  version
//!      6     2  reserved, zero
//!      8     8  body length, at most the kind's cap
//!     16     n  body
//!   16+n    32  checksum: BLAKE3 of bytes 0..16+n, keyed with the
//!               region's seal key for kinds that are sealed (manifests
//!               from version 2), so only a holder of the region's
//!               secret can write one that opens
//! ```

use crate::{be_u64, corrupt};
use reprise_core::Result;

pub const HEADER_LEN: usize = 16;
pub const CHECKSUM_LEN: usize = 32;

/// Wrap `body` in an envelope of kind `magic`.
pub fn seal(magic: &[u8; 4], version: u16, body: &[u8]) -> Vec<u8> {
    seal_with(magic, version, body, None)
}

/// [`seal`], the checksum keyed with `key` when given.
pub fn seal_with(magic: &[u8; 4], version: u16, body: &[u8], key: Option<&[u8; 32]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len() + CHECKSUM_LEN);
    out.extend_from_slice(magic);
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&(body.len() as u64).to_be_bytes());
    out.extend_from_slice(body);
    let sum = checksum(&out, key);
    out.extend_from_slice(&sum);
    out
}

fn checksum(bytes: &[u8], key: Option<&[u8; 32]>) -> [u8; 32] {
    match key {
        Some(k) => *blake3::keyed_hash(k, bytes).as_bytes(),
        None => *blake3::hash(bytes).as_bytes(),
    }
}

/// The version an envelope claims, before anything is checked (to choose
/// how to check it).
pub fn claimed_version(object: &[u8]) -> Option<u16> {
    (object.len() >= HEADER_LEN).then(|| u16::from_be_bytes([object[4], object[5]]))
}

/// Check an envelope of kind `magic` and return its version and body;
/// `max_body` caps what it may claim.
pub fn open<'a>(
    magic: &[u8; 4],
    what: &str,
    object: &'a [u8],
    max_body: u64,
) -> Result<(u16, &'a [u8])> {
    open_with(magic, what, object, max_body, None)
}

/// [`open`], the checksum keyed with `key` when given.
pub fn open_with<'a>(
    magic: &[u8; 4],
    what: &str,
    object: &'a [u8],
    max_body: u64,
    key: Option<&[u8; 32]>,
) -> Result<(u16, &'a [u8])> {
    if object.len() < HEADER_LEN + CHECKSUM_LEN {
        return Err(corrupt(format!(
            "{what}: {} bytes is too short",
            object.len()
        )));
    }
    if &object[..4] != magic {
        return Err(corrupt(format!("not a {what} (bad magic)")));
    }
    let version = u16::from_be_bytes([object[4], object[5]]);
    if object[6..8] != [0, 0] {
        return Err(corrupt(format!("{what}: flags are not supported")));
    }
    let len = be_u64(object, 8);
    if len > max_body {
        return Err(corrupt(format!(
            "{what}: a body of {len} bytes is above the limit of {max_body}"
        )));
    }
    let len = len as usize;
    if object.len() != HEADER_LEN + len + CHECKSUM_LEN {
        return Err(corrupt(format!(
            "{what}: {} bytes but its header says {}",
            object.len(),
            HEADER_LEN + len + CHECKSUM_LEN
        )));
    }
    // Compared in constant time: a keyed checksum is a MAC.
    let expected = blake3::Hash::from(checksum(&object[..HEADER_LEN + len], key));
    let found: [u8; 32] = object[HEADER_LEN + len..].try_into().expect("32 bytes");
    if expected != blake3::Hash::from(found) {
        return Err(corrupt(format!(
            "{what}: checksum mismatch, the object is damaged{}",
            if key.is_some() {
                " or was not written with this region's key"
            } else {
                ""
            }
        )));
    }
    Ok((version, &object[HEADER_LEN..HEADER_LEN + len]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens() {
        let obj = seal(b"RPMF", 1, b"{\"a\":1}");
        let (v, body) = open(b"RPMF", "manifest", &obj, 1024).unwrap();
        assert_eq!((v, body), (1, &b"{\"a\":1}"[..]));
        assert!(open(b"RPIX", "index", &obj, 1024)
            .unwrap_err()
            .message
            .contains("bad magic"));
        assert!(open(b"RPMF", "manifest", &obj, 3)
            .unwrap_err()
            .message
            .contains("limit"));
        let mut bad = obj.clone();
        bad[17] ^= 0x20;
        assert!(open(b"RPMF", "manifest", &bad, 1024)
            .unwrap_err()
            .message
            .contains("checksum"));
        assert!(open(b"RPMF", "manifest", &obj[..obj.len() - 1], 1024).is_err());
    }
}
