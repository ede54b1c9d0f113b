//! The manifest of a snapshot: what it is a copy of and what it holds. It
//! is the last object a backup writes, once every chunk and the index are
//! durable, so a manifest in the store means a complete snapshot.
//!
//! Body: JSON (fields below) in an [`envelope`](crate::envelope) of kind
//! "RPMF". JSON keeps it readable with standard tools; the envelope gives
//! it a magic, a version and a checksum.
//!
//! Version 2 (written since 2026-12) is *sealed*: its checksum is keyed
//! with the region's seal key, so a manifest written by anyone without the
//! region's secret (the store may be shared and is not trusted) does not
//! open — and since a manifest pins its index by hash, neither does a
//! forged index. Version 1 (an unkeyed checksum) is read only in regions
//! made before sealing ([`RegionInfo::manifests_sealed`] false).

use crate::chunk::RegionKeys;
use crate::{corrupt, envelope};
use chrono::{DateTime, Utc};
use reprise_core::Result;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const MAGIC: &[u8; 4] = b"RPMF";
/// Manifests are written sealed (see the module's docs).
pub const VERSION: u16 = 2;
const UNSEALED: u16 = 1;
/// The region object's version.
const REGION_VERSION: u16 = 1;
const MAX_BODY: u64 = 64 << 10;
/// Bounds a manifest's geometry is checked against before anything is
/// sized from it (the index read is capped by volume and chunk size).
pub const MIN_CHUNK_SIZE: u32 = 4 << 10;
pub const MAX_VOLUME_SIZE: u64 = 1 << 50;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub snapshot_id: Uuid,
    pub name: String,
    pub volume_id: Uuid,
    pub volume_name: String,
    pub zone: String,
    pub volume_size: u64,
    pub chunk_size: u32,
    /// The snapshot this one was taken incrementally from, if any.
    pub base_snapshot_id: Option<Uuid>,
    /// `filesystem` or `crash`.
    pub consistency: String,
    pub created_at: DateTime<Utc>,
    /// BLAKE3 (hex) of the index object: the manifest pins its index.
    pub index_blake3: String,
    /// Distinct chunks the index references.
    pub chunk_count: u64,
    /// Bytes of the volume that are not zeros (whole chunks).
    pub written_bytes: u64,
    /// Bytes the referenced chunks take in the store.
    pub stored_bytes: u64,
    /// Bytes of chunks this snapshot added to the store.
    pub new_bytes: u64,
}

impl Manifest {
    /// The manifest, sealed with the region's key.
    pub fn encode(&self, keys: &RegionKeys) -> Vec<u8> {
        let body = serde_json::to_vec(self).expect("a manifest serialises");
        envelope::seal_with(MAGIC, VERSION, &body, Some(keys.seal_key()))
    }

    /// Open a manifest sealed with the region's key; an unsealed one
    /// (version 1) only if `unsealed_ok` (a region made before sealing).
    pub fn decode(object: &[u8], keys: &RegionKeys, unsealed_ok: bool) -> Result<Manifest> {
        let what = "snapshot manifest";
        let body = match envelope::claimed_version(object) {
            Some(UNSEALED) if unsealed_ok => envelope::open(MAGIC, what, object, MAX_BODY)?.1,
            Some(UNSEALED) => {
                return Err(corrupt(
                    "an unsealed snapshot manifest in a region whose manifests are sealed: \
                     not written by this region"
                        .to_string(),
                ))
            }
            Some(VERSION) | None => {
                envelope::open_with(MAGIC, what, object, MAX_BODY, Some(keys.seal_key()))?.1
            }
            Some(version) => {
                return Err(corrupt(format!(
                    "snapshot manifest version {version} is not supported"
                )))
            }
        };
        let m: Manifest = serde_json::from_slice(body)
            .map_err(|e| corrupt(format!("snapshot manifest: {e}")).with_source(e))?;
        let chunk_ok = m.chunk_size.is_power_of_two()
            && (MIN_CHUNK_SIZE..=crate::chunk::MAX_CHUNK).contains(&m.chunk_size);
        if !chunk_ok || m.volume_size > MAX_VOLUME_SIZE {
            return Err(corrupt(format!(
                "snapshot manifest of {}: a {}-byte volume in {}-byte chunks is out of bounds",
                m.snapshot_id, m.volume_size, m.chunk_size
            )));
        }
        Ok(m)
    }
}

/// The region's own object (key `region`): the settings every daemon that
/// uses the store must share. Written once, when the first daemon opens an
/// empty store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionInfo {
    pub chunk_size: u32,
    pub encrypted: bool,
    /// [`RegionKeys::check_value`](crate::chunk::RegionKeys::check_value)
    /// of the region's secret: a daemon with another secret is refused.
    pub key_check: String,
    pub created_at: DateTime<Utc>,
    /// Whether every manifest of the region is sealed (regions made since
    /// 2026-12); older regions also read their unsealed manifests.
    #[serde(default)]
    pub manifests_sealed: bool,
}

pub const REGION_MAGIC: &[u8; 4] = b"RPRG";

impl RegionInfo {
    pub fn encode(&self) -> Vec<u8> {
        let body = serde_json::to_vec(self).expect("region info serialises");
        envelope::seal(REGION_MAGIC, REGION_VERSION, &body)
    }

    pub fn decode(object: &[u8]) -> Result<RegionInfo> {
        let (version, body) = envelope::open(REGION_MAGIC, "region object", object, MAX_BODY)?;
        if version != REGION_VERSION {
            return Err(corrupt(format!(
                "region object version {version} is not supported"
            )));
        }
        serde_json::from_slice(body)
            .map_err(|e| corrupt(format!("region object: {e}")).with_source(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trips_and_refuses_damage() {
        let m = Manifest {
            snapshot_id: Uuid::new_v4(),
            name: "db-20261122".into(),
            volume_id: Uuid::new_v4(),
            volume_name: "db".into(),
            zone: "zone1".into(),
            volume_size: 8 << 30,
            chunk_size: 1 << 20,
            base_snapshot_id: None,
            consistency: "filesystem".into(),
            created_at: Utc::now(),
            index_blake3: "00".repeat(32),
            chunk_count: 3,
            written_bytes: 3 << 20,
            stored_bytes: 1000,
            new_bytes: 1000,
        };
        let keys = RegionKeys::derive(&[7; 32], false);
        let obj = m.encode(&keys);
        assert_eq!(Manifest::decode(&obj, &keys, false).unwrap(), m);
        let mut bad = obj.clone();
        bad[20] ^= 1;
        assert_eq!(
            Manifest::decode(&bad, &keys, false).unwrap_err().code,
            "object_corrupt"
        );
        assert!(RegionInfo::decode(&obj).is_err(), "kinds are not mixed up");
        // Geometry out of bounds, under a valid envelope: refused before
        // anything is sized from it.
        for (volume_size, chunk_size) in [(8 << 30, 3), (8 << 30, 1 << 30), (u64::MAX, 1 << 20)] {
            let odd = Manifest {
                volume_size,
                chunk_size,
                ..m.clone()
            };
            let e = Manifest::decode(&odd.encode(&keys), &keys, false).unwrap_err();
            assert_eq!(e.code, "object_corrupt", "{volume_size} {chunk_size}");
        }
    }

    /// Without the region's secret, no manifest can be written that opens:
    /// not with another key, not unsealed (version 1) in a sealed region.
    #[test]
    fn only_the_regions_key_writes_a_manifest_that_opens() {
        let m = Manifest {
            snapshot_id: Uuid::new_v4(),
            name: "forged".into(),
            volume_id: Uuid::new_v4(),
            volume_name: "db".into(),
            zone: "zone1".into(),
            volume_size: 1 << 30,
            chunk_size: 1 << 20,
            base_snapshot_id: None,
            consistency: "crash".into(),
            created_at: Utc::now(),
            index_blake3: "11".repeat(32),
            chunk_count: 1,
            written_bytes: 1 << 20,
            stored_bytes: 10,
            new_bytes: 10,
        };
        let region = RegionKeys::derive(&[1; 32], true);
        let other = RegionKeys::derive(&[2; 32], true);
        let e = Manifest::decode(&m.encode(&other), &region, false).unwrap_err();
        assert_eq!(e.code, "object_corrupt");
        assert!(e.message.contains("this region's key"), "{}", e.message);
        let body = serde_json::to_vec(&m).unwrap();
        let unsealed = envelope::seal(MAGIC, UNSEALED, &body);
        let e = Manifest::decode(&unsealed, &region, false).unwrap_err();
        assert!(e.message.contains("unsealed"), "{}", e.message);
        // A region made before sealing still reads its own old manifests.
        assert_eq!(Manifest::decode(&unsealed, &region, true).unwrap(), m);
        assert_eq!(
            Manifest::decode(&m.encode(&region), &region, true).unwrap(),
            m,
            "and the sealed ones it writes now"
        );
    }
}
