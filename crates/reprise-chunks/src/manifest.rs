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
    /// Whose it is and what it is, for a catalog that lost its row
    /// (written since 2026-12-07; absent in older manifests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
}

/// What an object under `snapshots/<id>/` stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoredKind {
    Snapshot,
    Template,
}

/// What a catalog needs to re-create the row of a snapshot or a template
/// from its manifest alone (`reprise region recover`). Sealed with the
/// manifest: nobody without the region's secret can claim a snapshot for
/// another account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Owner {
    pub kind: StoredKind,
    pub account_id: Uuid,
    pub account_name: String,
    /// The region's admin account: a catalog made anew gives it back to
    /// its own admin.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub admin: bool,
    /// The instance the volume was attached to when it was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_name: Option<String>,
    /// The policy that took it (none: taken by hand).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_id: Option<Uuid>,
    /// A template's source: the snapshot it was made from (none for an
    /// imported image) and what the catalog showed of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_snapshot_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The catalog that recorded it.
    pub catalog_id: Uuid,
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
    /// Whether the region's daemons keep the snapshots their catalog does
    /// not know (since 2026-12-07: a sweep never removes a manifest, nor
    /// a chunk one needs). Set on every region a daemon of that age
    /// opens, so an older daemon, which would sweep them, refuses the
    /// region (an unknown field) instead.
    #[serde(default)]
    pub orphans_kept: bool,
}

pub const REGION_MAGIC: &[u8; 4] = b"RPRG";

impl RegionInfo {
    pub fn encode(&self) -> Vec<u8> {
        let body = serde_json::to_vec(self).expect("region info serialises");
        envelope::seal(REGION_MAGIC, REGION_VERSION, &body)
    }

    /// The region's id: derived from what its object fixed when it was
    /// made (the key check and the creation time), so every daemon and
    /// every later rewrite of the object agree on it.
    pub fn id(&self) -> Uuid {
        let mut h = blake3::Hasher::new_derive_key("reprise 2026-12 region id");
        h.update(self.key_check.as_bytes());
        h.update(self.created_at.to_rfc3339().as_bytes());
        let bytes: [u8; 16] = h.finalize().as_bytes()[..16].try_into().expect("16 bytes");
        uuid::Builder::from_random_bytes(bytes).into_uuid()
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

/// The store's record of the catalog it belongs to (key `catalog`): the
/// region, the catalog's id, and the highest generation that catalog has
/// written here (it advances with every snapshot and template recorded).
/// A sweep runs only for the catalog named here, at a generation no lower:
/// a catalog restored from an older copy, or another deployment's catalog
/// pointed at the same store, is refused before it deletes anything (see
/// `reprise_backup::binding`).
///
/// JSON in an envelope of kind "RPCB", sealed with the region's key like
/// a manifest: whoever can write the store but lacks the secret cannot
/// bind it to another catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    pub region_id: Uuid,
    pub catalog_id: Uuid,
    pub generation: u64,
    pub written_at: DateTime<Utc>,
    /// The host whose daemon wrote it.
    pub written_by: String,
}

pub const BINDING_MAGIC: &[u8; 4] = b"RPCB";
const BINDING_VERSION: u16 = 1;

impl Binding {
    pub fn encode(&self, keys: &RegionKeys) -> Vec<u8> {
        let body = serde_json::to_vec(self).expect("a binding serialises");
        envelope::seal_with(BINDING_MAGIC, BINDING_VERSION, &body, Some(keys.seal_key()))
    }

    pub fn decode(object: &[u8], keys: &RegionKeys) -> Result<Binding> {
        let what = "the store's catalog binding";
        let (version, body) =
            envelope::open_with(BINDING_MAGIC, what, object, MAX_BODY, Some(keys.seal_key()))?;
        if version != BINDING_VERSION {
            return Err(corrupt(format!(
                "{what}: version {version} is not supported"
            )));
        }
        serde_json::from_slice(body).map_err(|e| corrupt(format!("{what}: {e}")).with_source(e))
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
            owner: None,
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
            owner: Some(Owner {
                kind: StoredKind::Snapshot,
                account_id: Uuid::new_v4(),
                account_name: "alice".into(),
                admin: false,
                instance_id: None,
                instance_name: None,
                policy_id: None,
                source_snapshot_id: None,
                source: None,
                catalog_id: Uuid::new_v4(),
            }),
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

    /// A binding opens only under the region's key, and the region's id
    /// does not change when its object is rewritten.
    #[test]
    fn bindings_are_sealed_and_region_ids_stable() {
        let keys = RegionKeys::derive(&[3; 32], false);
        let b = Binding {
            region_id: Uuid::new_v4(),
            catalog_id: Uuid::new_v4(),
            generation: 12,
            written_at: Utc::now(),
            written_by: "host1".into(),
        };
        let obj = b.encode(&keys);
        assert_eq!(Binding::decode(&obj, &keys).unwrap(), b);
        let other = RegionKeys::derive(&[4; 32], false);
        assert_eq!(
            Binding::decode(&obj, &other).unwrap_err().code,
            "object_corrupt"
        );
        let info = RegionInfo {
            chunk_size: 1 << 20,
            encrypted: false,
            key_check: keys.check_value(),
            created_at: Utc::now(),
            manifests_sealed: true,
            orphans_kept: false,
        };
        let rewritten = RegionInfo {
            orphans_kept: true,
            ..info.clone()
        };
        let again = RegionInfo::decode(&rewritten.encode()).unwrap();
        assert_eq!(info.id(), again.id());
        let younger = RegionInfo {
            created_at: info.created_at + chrono::Duration::seconds(1),
            ..info.clone()
        };
        assert_ne!(info.id(), younger.id());
    }
}
