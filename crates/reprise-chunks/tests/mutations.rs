//! Objects in a region's store are hostile input: another tenant's daemon,
//! a bad disk or an attacker with write access to the bucket may have
//! changed any byte. Every decoder is fed thousands of damaged copies of
//! valid objects (bits flipped, bytes set, cut short, grown, spliced) and
//! random bytes, from a fixed seed: none may panic, none may accept a
//! changed object, and each refusal is `corrupt`.
//!
//! `REPRISE_MUTATIONS=N` runs N cases per format instead of 3000 (the long
//! run beside CI).

use chrono::Utc;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reprise_chunks::{chunk, ChunkName, Index, Manifest, RegionInfo, RegionKeys};
use reprise_core::{ErrorKind, Result};
use uuid::Uuid;

fn cases() -> usize {
    std::env::var("REPRISE_MUTATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3000)
}

/// One damaged copy of `valid`.
fn mutate(valid: &[u8], rng: &mut StdRng) -> Vec<u8> {
    let mut b = valid.to_vec();
    match rng.gen_range(0..7) {
        0 => {
            let bit = rng.gen_range(0..b.len() * 8);
            b[bit / 8] ^= 1 << (bit % 8);
        }
        1 => {
            for _ in 0..rng.gen_range(1..8) {
                let i = rng.gen_range(0..b.len());
                b[i] = rng.gen();
            }
        }
        2 => b.truncate(rng.gen_range(0..b.len())),
        3 => {
            let extra: Vec<u8> = (0..rng.gen_range(1..64)).map(|_| rng.gen()).collect();
            b.extend(extra);
        }
        4 => {
            // A run of the object copied over another place of it.
            let len = rng.gen_range(1..=b.len().min(32));
            let from = rng.gen_range(0..=b.len() - len);
            let to = rng.gen_range(0..=b.len() - len);
            let run = b[from..from + len].to_vec();
            b[to..to + len].copy_from_slice(&run);
        }
        5 => {
            // Header fields: the first 32 bytes are where lengths live.
            let i = rng.gen_range(0..b.len().min(32));
            b[i] = [0u8, 0xff, 0x7f, 0x80, 1][rng.gen_range(0..5)];
        }
        _ => {
            b = (0..rng.gen_range(0..valid.len() * 2 + 1))
                .map(|_| rng.gen())
                .collect()
        }
    }
    b
}

/// Feed `decode` damaged copies of each of `valid`: never a panic, never
/// a changed object accepted, every refusal `corrupt`.
fn hammer<T>(what: &str, valid: &[Vec<u8>], decode: impl Fn(&[u8]) -> Result<T>, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut refused = 0;
    for n in 0..cases() {
        let original = &valid[n % valid.len()];
        let damaged = mutate(original, &mut rng);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decode(&damaged)));
        match outcome {
            Err(_) => panic!("{what}: the decoder panicked on case {n} (seed {seed})"),
            Ok(Ok(_)) => assert_eq!(
                &damaged, original,
                "{what}: case {n} (seed {seed}) accepted a changed object"
            ),
            Ok(Err(e)) => {
                assert_eq!(e.kind, ErrorKind::Corrupt, "{what}: case {n}: {e}");
                refused += 1;
            }
        }
    }
    assert!(refused > cases() * 9 / 10, "{what}: only {refused} refused");
}

fn keys(encrypt: bool) -> RegionKeys {
    RegionKeys::derive(&[7u8; 32], encrypt)
}

#[test]
fn damaged_chunks_are_refused() {
    let mut rng = StdRng::seed_from_u64(1);
    for encrypt in [false, true] {
        let k = keys(encrypt);
        let plains: Vec<Vec<u8>> = vec![
            b"text that compresses well, ".repeat(200),
            (0..3000).map(|_| rng.gen()).collect(),
            vec![0x41; 64],
        ];
        let valid: Vec<Vec<u8>> = plains
            .iter()
            .map(|p| chunk::encode(p, 3, &k).unwrap())
            .collect();
        hammer(
            &format!("chunk (encrypted: {encrypt})"),
            &valid,
            |b| chunk::decode(b, &k),
            10 + u64::from(encrypt),
        );
        // Checked against its name, too: the name is the content's.
        let named: Vec<(Vec<u8>, ChunkName)> = plains
            .iter()
            .zip(&valid)
            .map(|(p, v)| (v.clone(), ChunkName::of(&k.names, p)))
            .collect();
        let (object, name) = &named[0];
        hammer(
            &format!("named chunk (encrypted: {encrypt})"),
            std::slice::from_ref(object),
            |b| chunk::decode_checked(&mut b.to_vec(), &k, name, &mut vec![0; 1 << 20]),
            20 + u64::from(encrypt),
        );
    }
}

#[test]
fn damaged_indexes_are_refused() {
    let mut rng = StdRng::seed_from_u64(2);
    let mut index = Index::zeros(64 << 20, 1 << 20).unwrap();
    for pos in [0u64, 3, 17, 63] {
        let mut name = [0u8; 32];
        rng.fill(&mut name);
        index.entries.push((pos, ChunkName(name)));
    }
    let empty = Index::zeros(8 << 20, 1 << 20).unwrap();
    hammer(
        "index",
        &[index.encode(), empty.encode()],
        Index::decode,
        30,
    );
}

#[test]
fn damaged_manifests_and_region_objects_are_refused() {
    let manifest = Manifest {
        snapshot_id: Uuid::from_u128(1),
        name: "db-20261203".into(),
        volume_id: Uuid::from_u128(2),
        volume_name: "db".into(),
        zone: "zone1".into(),
        volume_size: 8 << 30,
        chunk_size: 1 << 20,
        base_snapshot_id: Some(Uuid::from_u128(3)),
        consistency: "filesystem".into(),
        created_at: Utc::now(),
        index_blake3: "ab".repeat(32),
        chunk_count: 4,
        written_bytes: 4 << 20,
        stored_bytes: 1 << 20,
        new_bytes: 1 << 20,
        owner: Some(reprise_chunks::manifest::Owner {
            kind: reprise_chunks::manifest::StoredKind::Snapshot,
            account_id: Uuid::from_u128(4),
            account_name: "alice".into(),
            admin: false,
            instance_id: Some(Uuid::from_u128(5)),
            instance_name: Some("web".into()),
            policy_id: None,
            source_snapshot_id: None,
            source: None,
            catalog_id: Uuid::from_u128(6),
        }),
    };
    for encrypt in [false, true] {
        let k = keys(encrypt);
        hammer(
            &format!("manifest (encrypted region: {encrypt})"),
            &[manifest.encode(&k)],
            |b| Manifest::decode(b, &k, false),
            40 + u64::from(encrypt),
        );
    }
    let region = RegionInfo {
        chunk_size: 1 << 20,
        encrypted: true,
        key_check: keys(true).check_value(),
        created_at: Utc::now(),
        manifests_sealed: true,
        orphans_kept: true,
    };
    hammer("region object", &[region.encode()], RegionInfo::decode, 50);
    let binding = reprise_chunks::manifest::Binding {
        region_id: region.id(),
        catalog_id: Uuid::from_u128(6),
        generation: 9,
        written_at: Utc::now(),
        written_by: "host1".into(),
    };
    let k = keys(true);
    hammer(
        "catalog binding",
        &[binding.encode(&k)],
        |b| reprise_chunks::manifest::Binding::decode(b, &k),
        60,
    );
}
