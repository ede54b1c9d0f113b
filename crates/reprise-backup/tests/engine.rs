//! The engine against images QEMU wrote and against both kinds of store (a
//! local directory and the real S3 server the test scripts start): what
//! comes back equals `qemu-img convert` of the same snapshot, increments
//! read only what changed, equal data is stored once, garbage collection
//! removes exactly the unreferenced chunks and never one a running
//! snapshot's transaction needs, and verification names damaged and
//! missing chunks.

use reprise_backup::backup::Base;
use reprise_backup::snapshot::{take, Committed, Cut, Origin, References};
use reprise_backup::{
    chunk_key, gc, index_key, manifest_key, restore_qcow2, restore_raw, verify, Live, Refs, Region,
};
use reprise_chunks::{ChunkName, Index, RegionInfo};
use reprise_store::{S3Config, Store};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

const MIB: u64 = 1 << 20;

fn run(program: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Random bytes, text and zeros in 1 MiB blocks: like a real disk.
fn mixed_data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len);
    let text = b"reprise keeps copies of volumes in object storage. ";
    while out.len() < len {
        let block = out.len() / (1 << 20);
        match block % 4 {
            0 => (0..1 << 20).for_each(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                out.push(x as u8)
            }),
            1 | 2 => out.extend(text.iter().cycle().take(1 << 20)),
            _ => out.extend(std::iter::repeat_n(0, 1 << 20)),
        }
    }
    out.truncate(len);
    out
}

/// A qcow2 (64 KiB clusters) holding `data`, with internal snapshot `tag`.
fn image_with(dir: &Path, name: &str, data: &[u8], tag: &str) -> PathBuf {
    let raw = dir.join(format!("{name}.raw"));
    std::fs::write(&raw, data).unwrap();
    let img = dir.join(format!("{name}.qcow2"));
    run(
        "qemu-img",
        &[
            "convert",
            "-q",
            "-f",
            "raw",
            "-O",
            "qcow2",
            "-o",
            "cluster_size=65536",
            raw.to_str().unwrap(),
            img.to_str().unwrap(),
        ],
    );
    snapshot(&img, tag);
    img
}

fn snapshot(img: &Path, tag: &str) {
    run("qemu-img", &["snapshot", "-c", tag, img.to_str().unwrap()]);
}

fn write(img: &Path, pattern: u8, offset: u64, len: u64) {
    run(
        "qemu-io",
        &[
            "-f",
            "qcow2",
            "-c",
            &format!("write -P {pattern} {offset} {len}"),
            img.to_str().unwrap(),
        ],
    );
}

/// What QEMU itself reads from snapshot `tag`.
fn qemu_export(img: &Path, tag: &str, out: &Path) -> Vec<u8> {
    run(
        "qemu-img",
        &[
            "convert",
            "-q",
            "-f",
            "qcow2",
            "-O",
            "raw",
            "-l",
            &format!("snapshot.name={tag}"),
            img.to_str().unwrap(),
            out.to_str().unwrap(),
        ],
    );
    std::fs::read(out).unwrap()
}

/// A fresh region in each kind of store.
async fn regions(dir: &Path, encrypt: bool) -> Vec<(String, Region)> {
    let secret = [42u8; 32];
    let mut out = Vec::new();
    let local = Store::local(&dir.join("objects")).unwrap();
    out.push((
        "local".to_string(),
        Region::open(local, &secret, encrypt).await.unwrap(),
    ));
    if let Some(config) = S3Config::from_test_env() {
        let s3 = Store::s3(&config)
            .unwrap()
            .with_prefix(&format!("engine-{}", Uuid::new_v4()))
            .unwrap();
        out.push((
            "s3".to_string(),
            Region::open(s3, &secret, encrypt).await.unwrap(),
        ));
    }
    out
}

/// The catalog's part in a snapshot's transaction: the references each
/// snapshot recorded, which garbage collection keeps.
#[derive(Clone, Default)]
struct Catalog(Arc<Mutex<HashMap<Uuid, BTreeSet<ChunkName>>>>);

impl Catalog {
    fn record(&self) -> impl FnOnce(&References) -> reprise_core::Result<u64> + '_ {
        |r| {
            let mut recorded = self.0.lock().unwrap();
            recorded.insert(r.snapshot, r.chunks.clone());
            Ok(0)
        }
    }

    /// The catalog loses a snapshot's row (restored from an older copy,
    /// say): its objects stay in the store.
    fn forget(&self, snapshot: Uuid) {
        self.0.lock().unwrap().remove(&snapshot);
    }

    /// A snapshot deleted as the daemon deletes it: its objects, then its
    /// row; the sweep takes the chunks only it referenced.
    async fn delete(&self, region: &Region, snapshot: Uuid) {
        reprise_backup::backup::remove(region, snapshot)
            .await
            .unwrap();
        self.forget(snapshot);
    }

    fn live(&self) -> Live {
        let recorded = self.0.lock().unwrap();
        Live {
            chunks: recorded.values().flatten().copied().collect(),
            snapshots: recorded.keys().copied().collect(),
        }
    }
}

/// Snapshot `tag` of `img` through the whole transaction.
async fn take_snapshot(
    region: &Region,
    refs: &Arc<Refs>,
    catalog: &Catalog,
    img: &Path,
    tag: &str,
    base: Option<Base>,
) -> Committed {
    let id = Uuid::new_v4();
    let cut = Cut {
        image: img.to_path_buf(),
        tag: tag.into(),
        base,
    };
    let origin = Origin {
        snapshot_id: id,
        name: format!("snap-{id}"),
        volume_id: Uuid::nil(),
        volume_name: "vol".into(),
        zone: "zone1".into(),
        consistency: "crash".into(),
        created_at: chrono::Utc::now(),
        owner: None,
    };
    take(region, refs, cut, origin, catalog.record(), |_, _| {})
        .await
        .unwrap()
}

/// A snapshot's bytes restored both ways: as a raw image and as the qcow2
/// a volume gets, which must check clean and hold the same bytes.
async fn restored(region: &Region, index: &Index, path: &Path) -> Vec<u8> {
    let file = std::fs::File::create(path).unwrap();
    restore_raw(region, index, file, |_, _| {}).await.unwrap();
    let raw = std::fs::read(path).unwrap();
    let qcow2 = path.with_extension("qcow2");
    let _ = std::fs::remove_file(&qcow2);
    let file = std::fs::File::create_new(&qcow2).unwrap();
    restore_qcow2(region, index, file, |_, _| {}).await.unwrap();
    run("qemu-img", &["check", "-q", qcow2.to_str().unwrap()]);
    let via_qemu = qemu_export_active(&qcow2, &path.with_extension("from-qcow2.raw"));
    assert!(
        via_qemu == raw,
        "the qcow2 restore holds the raw restore's bytes"
    );
    raw
}

/// The active layer of a qcow2, as QEMU reads it.
fn qemu_export_active(img: &Path, out: &Path) -> Vec<u8> {
    run(
        "qemu-img",
        &[
            "convert",
            "-f",
            "qcow2",
            "-O",
            "raw",
            img.to_str().unwrap(),
            out.to_str().unwrap(),
        ],
    );
    let bytes = std::fs::read(out).unwrap();
    let _ = std::fs::remove_file(out);
    bytes
}

async fn stored_chunks(region: &Region) -> HashSet<ChunkName> {
    region
        .store
        .list("chunks")
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| ChunkName::from_hex(k.rsplit('/').next().unwrap()).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_then_incremental_then_dedup_then_gc() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = mixed_data(64 * MIB as usize, 7);
    let img = image_with(d, "a", &data, "s1");
    for (kind, region) in regions(d, false).await {
        let refs = Arc::new(Refs::default());
        let catalog = Catalog::default();
        // Full: every written chunk read, the result equals QEMU's export.
        let full = take_snapshot(&region, &refs, &catalog, &img, "s1", None).await;
        assert_eq!(full.manifest.base_snapshot_id, None);
        let zero_quarters = 16 * MIB; // one block in four is zeros
        assert_eq!(
            full.read_bytes,
            64 * MIB - zero_quarters,
            "{kind}: zeros are not read"
        );
        let expected = qemu_export(&img, "s1", &d.join("s1.raw"));
        assert_eq!(
            restored(&region, &full.index, &d.join("r1.raw")).await,
            expected,
            "{kind}"
        );
        assert!(
            full.manifest.new_bytes < 48 * MIB / 2,
            "{kind}: text compresses: {}",
            full.manifest.new_bytes
        );
        let id1 = full.manifest.snapshot_id;
        assert_eq!(region.manifest(id1).await.unwrap(), full.manifest);

        // Incremental after changing ~1%: only the touched chunks are read.
        let img_b = d.join(format!("{kind}-b.qcow2"));
        std::fs::copy(&img, &img_b).unwrap();
        write(&img_b, 0x5a, 10 * MIB + 4096, 512 << 10);
        write(&img_b, 0x00, 40 * MIB, 128 << 10);
        snapshot(&img_b, "s2");
        let base = Base {
            snapshot_id: id1,
            tag: "s1".into(),
            index: full.index.clone(),
        };
        let inc = take_snapshot(&region, &refs, &catalog, &img_b, "s2", Some(base)).await;
        assert_eq!(inc.manifest.base_snapshot_id, Some(id1), "{kind}");
        // The 512 KiB write (not grain-aligned) touches 9 of its chunk's 16
        // grains: more than half, so the chunk is read whole; the 128 KiB
        // one touches 2: only they are read, and stored as a patch.
        assert_eq!(
            inc.read_bytes,
            MIB + 128 * 1024,
            "{kind}: what changed is read"
        );
        assert_eq!(inc.index.patches.len(), 1, "{kind}");
        assert_eq!(
            inc.index.patches.values().next().unwrap().mask,
            0b11,
            "{kind}"
        );
        assert!(inc.new_chunks <= 2, "{kind}: {}", inc.new_chunks);
        let expected2 = qemu_export(&img_b, "s2", &d.join("s2.raw"));
        assert_eq!(
            restored(&region, &inc.index, &d.join("r2.raw")).await,
            expected2,
            "{kind}"
        );
        let id2 = inc.manifest.snapshot_id;

        // Another volume with the first one's data: nothing new is stored.
        let img_c = image_with(d, &format!("{kind}-c"), &data, "c1");
        let dup = take_snapshot(&region, &refs, &catalog, &img_c, "c1", None).await;
        assert_eq!(
            (dup.new_chunks, dup.manifest.new_bytes),
            (0, 0),
            "{kind}: deduplicated"
        );
        assert_eq!(dup.index.entries, full.index.entries, "{kind}");

        // Delete snapshot 1 and the duplicate: GC removes exactly the
        // chunks only they referenced, and their objects.
        catalog.delete(&region, id1).await;
        catalog.delete(&region, dup.manifest.snapshot_id).await;
        let before = stored_chunks(&region).await;
        let keep = inc.index.distinct();
        let report = gc(&region, &refs, || Ok(catalog.live())).await.unwrap();
        let after = stored_chunks(&region).await;
        assert_eq!(
            after,
            keep.iter().copied().collect::<HashSet<_>>(),
            "{kind}"
        );
        assert_eq!(
            report.chunks_deleted as usize,
            before.len() - after.len(),
            "{kind}"
        );
        // The chunk rewritten whole was text, whose old version other
        // positions still hold; the other one's old version is now its
        // patch's base: nothing goes.
        assert_eq!(report.chunks_deleted, 0, "{kind}");
        assert_eq!(
            (report.snapshot_objects_deleted, report.orphans.len()),
            (0, 0),
            "{kind}: the deletes removed their objects"
        );
        assert!(region.manifest(id1).await.is_err());
        let clean = verify(&region, id2, |_, _| {}).await.unwrap();
        assert!(clean.is_clean(), "{kind}: {}", clean.summary());

        // Damage one chunk and remove another: verify names both.
        let mut names: Vec<ChunkName> = keep.iter().copied().collect();
        names.sort();
        let (damaged, missing) = (names[0], names[1]);
        let mut bytes = region
            .store
            .get(&chunk_key(&damaged), 8 * MIB)
            .await
            .unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0xff;
        region.store.put(&chunk_key(&damaged), bytes).await.unwrap();
        region.store.delete(&chunk_key(&missing)).await.unwrap();
        let report = verify(&region, id2, |_, _| {}).await.unwrap();
        assert_eq!(report.missing, vec![missing], "{kind}");
        assert_eq!(report.damaged.len(), 1, "{kind}");
        assert_eq!(report.damaged[0].0, damaged, "{kind}");
        assert!(
            report.summary().contains(&missing.to_hex()),
            "{}",
            report.summary()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_collection_running_during_a_backup_never_breaks_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = mixed_data(48 * MIB as usize, 11);
    let img = image_with(d, "v", &data, "s1");
    for (kind, mut region) in regions(d, false).await {
        region.parallel = 2;
        let refs = Arc::new(Refs::default());
        let catalog = Catalog::default();
        // A first snapshot, then deleted: its chunks are garbage exactly
        // when a second snapshot of the same data wants them.
        let first = take_snapshot(&region, &refs, &catalog, &img, "s1", None).await;
        catalog.delete(&region, first.manifest.snapshot_id).await;
        let running = {
            let (region, refs, img, catalog) =
                (region.clone(), refs.clone(), img.clone(), catalog.clone());
            tokio::spawn(
                async move { take_snapshot(&region, &refs, &catalog, &img, "s1", None).await },
            )
        };
        let mut sweeps = 0;
        let mut deleted = 0;
        while !running.is_finished() {
            // Holds protect the chunks until the references are recorded.
            let r = gc(&region, &refs, || Ok(catalog.live())).await.unwrap();
            deleted += r.chunks_deleted;
            sweeps += 1;
        }
        let second = running.await.unwrap();
        let id = second.manifest.snapshot_id;
        let report = verify(&region, id, |_, _| {}).await.unwrap();
        assert!(
            report.is_clean(),
            "{kind} after {sweeps} sweeps ({deleted} deleted): {}",
            report.summary()
        );
        assert!(sweeps >= 2, "{kind}: sweeps ran during the backup");
        let expected = qemu_export(&img, "s1", &d.join("e.raw"));
        assert_eq!(
            restored(&region, &second.index, &d.join("r.raw")).await,
            expected,
            "{kind}"
        );
        // Recorded, the chunks stay with no hold; forgotten, they go.
        let r = gc(&region, &refs, || Ok(catalog.live())).await.unwrap();
        assert_eq!(r.chunks_deleted, 0, "{kind}");
        catalog.delete(&region, id).await;
        let r = gc(&region, &refs, || Ok(catalog.live())).await.unwrap();
        assert_eq!(
            r.chunks_deleted as usize,
            second.index.distinct().len(),
            "{kind}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_regions_round_trip_and_refuse_a_wrong_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = mixed_data(8 * MIB as usize, 3);
    let img = image_with(d, "e", &data, "s1");
    for (kind, region) in regions(d, true).await {
        let refs = Arc::new(Refs::default());
        let catalog = Catalog::default();
        let done = take_snapshot(&region, &refs, &catalog, &img, "s1", None).await;
        let expected = qemu_export(&img, "s1", &d.join("e.raw"));
        assert_eq!(
            restored(&region, &done.index, &d.join("r.raw")).await,
            expected,
            "{kind}"
        );
        // No chunk holds the text in clear.
        for name in done.index.distinct() {
            let obj = region.store.get(&chunk_key(&name), 8 * MIB).await.unwrap();
            assert!(
                !obj.windows(24).any(|w| w == b"reprise keeps copies of "),
                "{kind}"
            );
        }
        let wrong = Region::open(region.store.clone(), &[1u8; 32], true)
            .await
            .unwrap_err();
        assert_eq!(wrong.code, "region_key_wrong", "{kind}: {}", wrong.message);
        let unencrypted = Region::open(region.store.clone(), &[42u8; 32], false)
            .await
            .unwrap_err();
        assert_eq!(unencrypted.code, "config_invalid", "{kind}");
    }
}

/// The window the GC test above found: a snapshot's references recorded
/// and its holds released just after a sweep read the live set. The sweep
/// must still spare what the holds guarded when it began.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_released_during_a_sweep_still_counts() {
    let dir = tempfile::tempdir().unwrap();
    let region = regions(dir.path(), false).await.remove(0).1;
    let refs = Arc::new(Refs::default());
    let name = ChunkName([7; 32]);
    let snapshot = Uuid::new_v4();
    region
        .store
        .put(&chunk_key(&name), b"chunk".to_vec())
        .await
        .unwrap();
    region
        .store
        .put(&index_key(snapshot), b"index".to_vec())
        .await
        .unwrap();
    let mut hold = refs.hold([name]).await.unwrap();
    hold.absorb(refs.hold_snapshot(snapshot).await.unwrap());
    // The live set the sweep reads misses both; the hold goes as it reads.
    let report = gc(&region, &refs, move || {
        drop(hold);
        Ok(Live::default())
    })
    .await
    .unwrap();
    assert_eq!(
        (report.chunks_deleted, report.snapshot_objects_deleted),
        (0, 0)
    );
    assert!(region.store.exists(&chunk_key(&name)).await.unwrap());
    assert!(region.store.exists(&index_key(snapshot)).await.unwrap());
    // The next sweep, with nothing held or live, removes them (an index
    // without its manifest is what a failed backup leaves).
    let report = gc(&region, &refs, || Ok(Live::default())).await.unwrap();
    assert_eq!(
        (report.chunks_deleted, report.snapshot_objects_deleted),
        (1, 1)
    );
}

/// A catalog that lost a snapshot's row (restored from an older copy, lost,
/// another deployment's) never makes a sweep delete it: its manifest and
/// index stay, and so does every chunk it references, until an admin
/// forgets it explicitly. An orphan that cannot be read stops every chunk
/// delete. Objects of a backup that never got its manifest still go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_catalog_forgot_is_never_swept() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let a = image_with(d, "a", &mixed_data(8 * MIB as usize, 3), "s");
    let b = image_with(d, "b", &mixed_data(8 * MIB as usize, 4), "s");
    for (kind, region) in regions(d, false).await {
        let refs = Arc::new(Refs::default());
        let catalog = Catalog::default();
        let kept = take_snapshot(&region, &refs, &catalog, &a, "s", None).await;
        let lost = take_snapshot(&region, &refs, &catalog, &b, "s", None).await;
        let lost_id = lost.manifest.snapshot_id;
        catalog.forget(lost_id);
        let only_lost: HashSet<ChunkName> = lost
            .index
            .distinct()
            .difference(&kept.index.distinct())
            .copied()
            .collect();
        assert!(!only_lost.is_empty(), "{kind}");
        let before = stored_chunks(&region).await;
        let r = gc(&region, &refs, || Ok(catalog.live())).await.unwrap();
        assert_eq!(
            (r.chunks_deleted, r.snapshot_objects_deleted),
            (0, 0),
            "{kind}"
        );
        let orphans: Vec<Uuid> = r.orphans.iter().map(|m| m.snapshot_id).collect();
        assert_eq!(orphans, vec![lost_id], "{kind}");
        assert_eq!(stored_chunks(&region).await, before, "{kind}");
        let expected = qemu_export(&b, "s", &d.join(format!("{kind}-b.raw")));
        let index = region
            .index(&region.manifest(lost_id).await.unwrap())
            .await
            .unwrap();
        assert!(
            restored(&region, &index, &d.join(format!("{kind}-rb.raw"))).await == expected,
            "{kind}: the orphan restores whole"
        );

        // An orphan that cannot be read: nothing it might need is deleted.
        let junk = Uuid::new_v4();
        region
            .store
            .put(&manifest_key(junk), b"not a manifest".to_vec())
            .await
            .unwrap();
        catalog.delete(&region, kept.manifest.snapshot_id).await;
        let r = gc(&region, &refs, || Ok(catalog.live())).await.unwrap();
        assert_eq!(r.chunks_deleted, 0, "{kind}");
        assert_eq!(r.unreadable.len(), 1, "{kind}");
        assert_eq!(r.unreadable[0].0, junk, "{kind}");
        assert!(region.store.exists(&manifest_key(junk)).await.unwrap());

        // Forgotten on purpose, by date (the unreadable one by the store's
        // time of its manifest): only then do their chunks go.
        let long_ago = chrono::Utc::now() - chrono::Duration::days(1);
        let none = reprise_backup::forget_orphans(&region, &refs, || Ok(catalog.live()), long_ago)
            .await
            .unwrap();
        assert!(none.is_empty(), "{kind}: made today, not before yesterday");
        let soon = chrono::Utc::now() + chrono::Duration::seconds(1);
        let forgotten = reprise_backup::forget_orphans(&region, &refs, || Ok(catalog.live()), soon)
            .await
            .unwrap();
        let mut ids: Vec<(Uuid, bool)> =
            forgotten.iter().map(|(id, m)| (*id, m.is_some())).collect();
        ids.sort();
        let mut want = vec![(lost_id, true), (junk, false)];
        want.sort();
        assert_eq!(ids, want, "{kind}: the unreadable one dated by the store");
        assert!(!region.store.exists(&index_key(lost_id)).await.unwrap());
        let r = gc(&region, &refs, || Ok(catalog.live())).await.unwrap();
        assert!(r.orphans.is_empty(), "{kind}");
        assert!(
            stored_chunks(&region).await.is_empty(),
            "{kind}: both snapshots gone, every chunk with them"
        );
    }
}

/// A sweep leaves unreferenced chunks written within its grace period (a
/// second line of defence behind the holds) and takes the older ones; with
/// no grace, it takes them all. Aged by the file's time on the local
/// store; an S3 server's objects are all young here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_leaves_the_chunks_written_within_its_grace() {
    let dir = tempfile::tempdir().unwrap();
    for (kind, mut region) in regions(dir.path(), false).await {
        let refs = Arc::new(Refs::default());
        let (old, young) = (ChunkName([1; 32]), ChunkName([2; 32]));
        for name in [&old, &young] {
            region
                .store
                .put(&chunk_key(name), b"chunk".to_vec())
                .await
                .unwrap();
        }
        let aged = kind == "local";
        if aged {
            let file = find_file(&dir.path().join("objects"), &chunk_key(&old)).unwrap();
            let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
            std::fs::File::options()
                .write(true)
                .open(file)
                .unwrap()
                .set_modified(two_hours_ago)
                .unwrap();
        }
        region.sweep_grace = Duration::from_secs(3600);
        let r = gc(&region, &refs, || Ok(Live::default())).await.unwrap();
        let taken = u64::from(aged);
        assert_eq!(
            (r.chunks_deleted, r.chunks_in_grace),
            (taken, 2 - taken),
            "{kind}"
        );
        assert!(
            region.store.exists(&chunk_key(&young)).await.unwrap(),
            "{kind}"
        );
        region.sweep_grace = Duration::ZERO;
        let r = gc(&region, &refs, || Ok(Live::default())).await.unwrap();
        assert_eq!(
            (r.chunks_deleted, r.chunks_in_grace),
            (2 - taken, 0),
            "{kind}"
        );
        assert!(stored_chunks(&region).await.is_empty(), "{kind}");
    }
}

/// The file under `dir` that holds the object at `key`.
fn find_file(dir: &Path, key: &str) -> Option<PathBuf> {
    let leaf = key.rsplit('/').next()?;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = find_file(&path, key) {
                return Some(found);
            }
        } else if path.file_name().is_some_and(|n| n == leaf) {
            return Some(path);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_copied_over_another_snapshots_is_refused_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let img_a = image_with(d, "a", &mixed_data(4 * MIB as usize, 5), "s1");
    let img_b = image_with(d, "b", &mixed_data(4 * MIB as usize, 6), "s1");
    for (kind, region) in regions(d, true).await {
        let (refs, catalog) = (Arc::new(Refs::default()), Catalog::default());
        let a = take_snapshot(&region, &refs, &catalog, &img_a, "s1", None).await;
        let b = take_snapshot(&region, &refs, &catalog, &img_b, "s1", None).await;
        let (a_id, b_id) = (a.manifest.snapshot_id, b.manifest.snapshot_id);
        // An intact envelope with a valid checksum, under the wrong name.
        let a_manifest = region
            .store
            .get(&manifest_key(a_id), 1 << 20)
            .await
            .unwrap();
        region
            .store
            .put(&manifest_key(b_id), a_manifest)
            .await
            .unwrap();
        let e = region.manifest(b_id).await.unwrap_err();
        assert_eq!(
            (e.kind, e.code.as_str()),
            (reprise_core::ErrorKind::Corrupt, "object_corrupt"),
            "{kind}: {}",
            e.message
        );
        assert!(
            e.message.contains(&a_id.to_string()),
            "{kind}: {}",
            e.message
        );
        assert!(verify(&region, b_id, |_, _| {}).await.is_err(), "{kind}");
        assert!(region.manifest(a_id).await.is_ok(), "{kind}");

        // Whoever can write to the store but lacks the region's secret
        // cannot forge one either: b's manifest, rewritten to pin a's
        // index under b's id, with a valid unkeyed checksum.
        let mut forged = b.manifest.clone();
        forged.index_blake3 = a.manifest.index_blake3.clone();
        let a_index = region.store.get(&index_key(a_id), 1 << 20).await.unwrap();
        region.store.put(&index_key(b_id), a_index).await.unwrap();
        let body = serde_json::to_vec(&forged).unwrap();
        for version in [1u16, 2] {
            let object =
                reprise_chunks::envelope::seal(reprise_chunks::manifest::MAGIC, version, &body);
            region.store.put(&manifest_key(b_id), object).await.unwrap();
            let e = region.manifest(b_id).await.unwrap_err();
            assert_eq!(e.code, "object_corrupt", "{kind} v{version}: {}", e.message);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_sparse_volume_costs_little() {
    // 1 TiB virtual, 4 MiB written: the plan walks L1/L2 tables only, and
    // the index lists four entries.
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("huge.qcow2");
    run(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", img.to_str().unwrap(), "1T"],
    );
    write(&img, 0x33, 0, 2 * MIB);
    write(&img, 0x44, 700 << 30, 2 * MIB);
    snapshot(&img, "s1");
    let region = regions(dir.path(), false).await.remove(0).1;
    let refs = Arc::new(Refs::default());
    let done = take_snapshot(&region, &refs, &Catalog::default(), &img, "s1", None).await;
    assert_eq!(done.read_bytes, 4 * MIB);
    assert_eq!(done.index.entries.len(), 4);
    assert_eq!(done.index.distinct().len(), 2, "equal chunks share a name");
    assert!(done.index.encode().len() < 1024);
}

/// Scattered 64 KiB writes cost what they changed: each increment reads
/// and stores only the grains that differ from the whole base chunk (a
/// patch), restores give QEMU's bytes, a chunk more than half rewritten
/// is stored whole again, and garbage collection keeps a patch's base
/// after the snapshot that brought it is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scattered_writes_are_stored_as_patches() {
    const GRAIN: u64 = 64 << 10;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let img = image_with(d, "scatter", &mixed_data(32 * MIB as usize, 3), "s1");
    for (kind, region) in regions(d, true).await {
        let (refs, catalog) = (Arc::new(Refs::default()), Catalog::default());
        let mut prev = take_snapshot(&region, &refs, &catalog, &img, "s1", None).await;
        let mut ids = vec![prev.manifest.snapshot_id];
        // Chunks 0, 1, 2, 5, 6, 9, 10, 13 hold data (one in four is zeros;
        // the text ones are equal: each gets a pattern of its own).
        let chunks = [0u64, 1, 2, 5, 6, 9, 10, 13];
        for round in 1..=3u64 {
            let tag = format!("s{}", round + 1);
            let img_round = d.join(format!("{kind}-{tag}.qcow2"));
            std::fs::copy(&img, &img_round).unwrap();
            // Round r rewrites grain r of each chunk (and, in round 3,
            // eight more grains of chunk 0: more than half of it).
            for &c in &chunks {
                write(&img, (round * 16 + c) as u8, c * MIB + round * GRAIN, GRAIN);
            }
            if round == 3 {
                write(&img, 0x77, 8 * GRAIN, 8 * GRAIN);
            }
            snapshot(&img, &tag);
            let base = Base {
                snapshot_id: prev.manifest.snapshot_id,
                tag: format!("s{round}"),
                index: prev.index.clone(),
            };
            let inc = take_snapshot(&region, &refs, &catalog, &img, &tag, Some(base)).await;
            let changed = chunks.len() as u64 * GRAIN;
            let replaced = round * changed; // grains 1..=round of each chunk
            if round < 3 {
                assert_eq!(
                    inc.read_bytes, replaced,
                    "{kind} {tag}: only the grains are read"
                );
                assert_eq!(inc.index.patches.len(), chunks.len(), "{kind} {tag}");
            } else {
                // Chunk 0 (11 grains differ) is read whole, the others as
                // patches of 3 grains.
                assert_eq!(inc.read_bytes, MIB + 7 * 3 * GRAIN, "{kind} {tag}");
                let whole = inc.index.at(0).unwrap();
                assert!(
                    !inc.index.patches.contains_key(&whole),
                    "{kind}: chunk 0 whole again"
                );
                assert_eq!(inc.index.patches.len(), chunks.len() - 1, "{kind} {tag}");
            }
            assert!(
                inc.manifest.new_bytes <= replaced + MIB + 4096,
                "{kind} {tag}: stored {} for {replaced} bytes of grains",
                inc.manifest.new_bytes
            );
            let expected = qemu_export(&img, &tag, &d.join(format!("{tag}.raw")));
            assert!(
                restored(&region, &inc.index, &d.join(format!("r-{tag}.raw"))).await == expected,
                "{kind} {tag}: restored bytes equal QEMU's"
            );
            ids.push(inc.manifest.snapshot_id);
            prev = inc;
            std::fs::remove_file(&img_round).unwrap();
        }
        // The full snapshot and the first two increments go: the patches
        // of the last still need the full one's chunks, which stay.
        for id in &ids[..3] {
            catalog.delete(&region, *id).await;
        }
        gc(&region, &refs, || Ok(catalog.live())).await.unwrap();
        let last = *ids.last().unwrap();
        let report = verify(&region, last, |_, _| {}).await.unwrap();
        assert!(report.is_clean(), "{kind}: {}", report.summary());
        let expected = qemu_export(&img, "s4", &d.join("s4-again.raw"));
        assert!(
            restored(&region, &prev.index, &d.join("r-again.raw")).await == expected,
            "{kind}: the last increment restores after its bases' snapshots are gone"
        );
        // The next kind of store starts from the same image.
        for tag in ["s2", "s3", "s4"] {
            run("qemu-img", &["snapshot", "-d", tag, img.to_str().unwrap()]);
        }
        let fresh = image_with(d, "scatter", &mixed_data(32 * MIB as usize, 3), "s1");
        assert_eq!(fresh, img);
    }
}

/// Whether a snapshot restores (manifest, index, every chunk) into a file.
async fn restores(region: &Region, id: Uuid, dir: &Path) -> bool {
    let Ok(manifest) = region.manifest(id).await else {
        return false;
    };
    let Ok(index) = region.index(&manifest).await else {
        return false;
    };
    let path = dir.join("tamper-restore.qcow2");
    let _ = std::fs::remove_file(&path);
    let file = std::fs::File::create_new(&path).unwrap();
    restore_qcow2(region, &index, file, |_, _| {}).await.is_ok()
}

/// An index that puts a chunk where its length does not fit (the short
/// last chunk of a volume at a full-size position) is refused as damaged:
/// the index and the chunks come from a store other tenants' daemons write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_of_the_wrong_length_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = mixed_data(2 * MIB as usize + 4096, 5);
    let img = image_with(d, "short", &data, "s1");
    let region = &regions(d, false).await[0].1;
    let (refs, catalog) = (Arc::new(Refs::default()), Catalog::default());
    let done = take_snapshot(region, &refs, &catalog, &img, "s1", None).await;
    let (last_pos, short) = *done.index.entries.last().unwrap();
    assert_eq!(last_pos, 2);
    let forged = Index {
        entries: vec![(0, short)],
        ..done.index.clone()
    };
    let file = std::fs::File::create_new(d.join("forged.qcow2")).unwrap();
    let e = restore_qcow2(region, &forged, file, |_, _| {})
        .await
        .unwrap_err();
    assert_eq!(
        (e.kind, e.code.as_str()),
        (reprise_core::ErrorKind::Corrupt, "object_corrupt"),
        "{e}"
    );
    assert!(e.message.contains(&short.to_hex()), "{e}");
}

/// Whether verify says something is wrong with a snapshot.
async fn verify_objects(region: &Region, id: Uuid) -> bool {
    match verify(region, id, |_, _| {}).await {
        Ok(report) => !report.is_clean(),
        Err(e) => matches!(
            e.kind,
            reprise_core::ErrorKind::Corrupt | reprise_core::ErrorKind::NotFound
        ),
    }
}

/// Every kind of stored object (manifest, index, chunk, the region's own
/// object), tampered every way — a bit flipped, cut short, swapped with
/// another snapshot's object of the same kind, deleted — is caught: verify
/// reports the snapshot and a restore refuses it; a tampered region object
/// stops the region from opening. None is ever read as good data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tampered_object_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let img_a = image_with(d, "a", &mixed_data(4 * MIB as usize, 11), "s1");
    let img_b = image_with(d, "b", &mixed_data(4 * MIB as usize, 12), "s1");
    for (kind, region) in regions(d, true).await {
        let (refs, catalog) = (Arc::new(Refs::default()), Catalog::default());
        let a = take_snapshot(&region, &refs, &catalog, &img_a, "s1", None).await;
        let b = take_snapshot(&region, &refs, &catalog, &img_b, "s1", None).await;
        let (a_id, b_id) = (a.manifest.snapshot_id, b.manifest.snapshot_id);
        let a_chunk = *a.index.distinct().iter().next().unwrap();
        let b_chunk = *b.index.distinct().iter().next().unwrap();
        assert!(restores(&region, a_id, d).await, "{kind}: intact first");
        let store = &region.store;
        let (mut trials, mut caught) = (0, 0);
        for (what, key, other) in [
            ("manifest", manifest_key(a_id), manifest_key(b_id)),
            ("index", index_key(a_id), index_key(b_id)),
            ("chunk", chunk_key(&a_chunk), chunk_key(&b_chunk)),
        ] {
            let good = store.get(&key, 64 << 20).await.unwrap();
            let mut flipped = good.clone();
            let middle = flipped.len() / 2;
            flipped[middle] ^= 0x10;
            let cut = good[..good.len() - 7].to_vec();
            let swapped = store.get(&other, 64 << 20).await.unwrap();
            for (how, bad) in [
                ("flipped", Some(flipped)),
                ("cut short", Some(cut)),
                ("swapped", Some(swapped)),
                ("deleted", None),
            ] {
                match bad {
                    Some(bytes) => store.put(&key, bytes).await.unwrap(),
                    None => store.delete(&key).await.unwrap(),
                }
                trials += 1;
                let flagged = verify_objects(&region, a_id).await;
                let refused = !restores(&region, a_id, d).await;
                assert!(
                    flagged && refused,
                    "{kind}: {what} {how}: verify {flagged}, restore refused {refused}"
                );
                caught += 1;
                store.put(&key, good.clone()).await.unwrap();
            }
        }
        assert!(restores(&region, a_id, d).await, "{kind}: whole again");
        // The region's own object.
        let good = store.get("region", 1 << 20).await.unwrap();
        let mut flipped = good.clone();
        flipped[20] ^= 0x10;
        let other_region = {
            let spare = Store::local(&d.join(format!("spare-{kind}"))).unwrap();
            Region::open(spare.clone(), &[7u8; 32], true).await.unwrap();
            spare.get("region", 1 << 20).await.unwrap()
        };
        // Rewritten whole to say the region predates sealed manifests:
        // its checksum is right, but the seal is pinned outside the store.
        let unsealed = RegionInfo {
            manifests_sealed: false,
            ..RegionInfo::decode(&good).unwrap()
        }
        .encode();
        for (how, bad) in [
            ("flipped", flipped),
            ("cut short", good[..good.len() - 7].to_vec()),
            ("another region's", other_region),
            ("saying it is unsealed", unsealed.clone()),
        ] {
            store.put("region", bad).await.unwrap();
            trials += 1;
            let e = Region::open(store.clone(), &[42u8; 32], true)
                .await
                .err()
                .unwrap_or_else(|| panic!("{kind}: region object {how} opened"));
            assert!(
                e.kind == reprise_core::ErrorKind::Corrupt || e.code == "region_key_wrong",
                "{kind}: region object {how}: {e:?}"
            );
            caught += 1;
        }
        // A region that is that old is opened only when the config says so.
        store.put("region", unsealed).await.unwrap();
        let legacy = Region::open_pinned(store.clone(), &[42u8; 32], true, true)
            .await
            .unwrap();
        assert!(legacy.unsealed_manifests, "{kind}");
        store.put("region", good).await.unwrap();
        eprintln!("{kind}: {caught} of {trials} tamperings caught");
    }
}
