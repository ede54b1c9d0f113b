//! Volume snapshots end to end, against the local directory and the real
//! S3 server: exact copies of a running guest's volume, increments that
//! read only what changed across VM and daemon restarts, deduplication,
//! garbage collection during a backup, verification, and the rules.

use reprise_client::Client;
use reprise_core::model::*;
use reprise_testing::*;
use serde_json::json;
use std::process::Command;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

fn snapshot(c: &Client, body: serde_json::Value) -> Snapshot {
    let job = run_job(c, "/api/v1/snapshots", &body);
    c.get(&format!("/api/v1/snapshots/{}", job.target_id))
        .unwrap()
}

fn delete(c: &Client, snapshot: &str) {
    let job = c
        .delete_job(&format!("/api/v1/snapshots/{snapshot}"))
        .unwrap();
    c.wait_job(&job.id.to_string(), Duration::from_secs(120), |_| {})
        .unwrap();
}

fn volume(c: &Client, name: &str) -> Volume {
    c.get(&format!("/api/v1/volumes/{name}")).unwrap()
}

/// The snapshot's data read back from the store equals what QEMU reads
/// from the volume's internal snapshot.
fn assert_exact(d: &TestDaemon, s: &Snapshot, path: &str, kind: &str) {
    let dir = tempfile::tempdir().unwrap();
    let expected = qemu_export(
        path,
        &format!("reprise-vs-{}", s.id),
        &dir.path().join("e.raw"),
    );
    let got = restore_snapshot(d, s.id, &dir.path().join("r.raw"));
    assert!(
        got == expected,
        "{kind}: snapshot {} differs from qemu-img's export",
        s.name
    );
}

#[test]
fn snapshots_of_a_running_guest_are_exact_and_incremental_across_restarts() {
    for (kind, s3) in region_stores() {
        let mut d = TestDaemon::start_with(|c| use_store(c, &s3));
        let c = d.admin();
        let vm = d.booted_guest(&c, "vm", "data");
        let (code, _) = d.guest_sh(
            &vm,
            "dd if=/dev/urandom of=/mnt/data/blob bs=1M count=16 2>/dev/null && sync && md5sum /mnt/data/blob",
        );
        assert_eq!(code, 0);
        let path = volume(&c, "data").path;

        // Full: BackedUp, filesystem-consistent, exact.
        let s1 = snapshot(&c, json!({"volume": "data", "name": "first"}));
        assert_eq!(s1.state, SnapshotState::BackedUp, "{kind}: {:?}", s1.error);
        assert_eq!(s1.consistency, "filesystem", "{kind}");
        assert_eq!(s1.base_id, None);
        assert!(s1.written_bytes.unwrap() >= 16 * MIB, "{kind}: {s1:?}");
        assert!(
            s1.stored_bytes.unwrap() >= 16 * MIB,
            "{kind}: random data does not compress"
        );
        assert_eq!(s1.progress_done, s1.progress_total);
        assert_eq!(volume(&c, "data").state, VolumeState::Ready);
        assert_exact(&d, &s1, &path, kind);

        // ~1% changed: only the touched chunks are read and stored.
        let change = "dd if=/dev/urandom of=/mnt/data/small bs=64k count=10 2>/dev/null && sync";
        assert_eq!(d.guest_sh(&vm, change).0, 0);
        let s2 = snapshot(&c, json!({"volume": "data"}));
        assert!(s2.name.starts_with("data-"), "generated name: {}", s2.name);
        assert_eq!(s2.base_id, Some(s1.id), "{kind}");
        let (read, new) = (s2.read_bytes.unwrap(), s2.new_bytes.unwrap());
        assert!(read <= 6 * MIB, "{kind}: an increment reads {read} bytes");
        assert!(new <= 3 * MIB, "{kind}: an increment stores {new} bytes");
        assert_exact(&d, &s2, &path, kind);
        assert_eq!(
            qcow2_tags(&path),
            vec![format!("reprise-vs-{}", s2.id)],
            "{kind}: only the base of the next increment stays in the volume"
        );

        // A VM restart and a daemon restart lose nothing of the increment.
        run_job(&c, "/api/v1/instances/vm/restart", &json!({}));
        d.restart();
        let vm = instance(&c, "vm");
        d.wait_agent(&vm);
        assert_eq!(d.guest_sh(&vm, change).0, 0);
        let s3 = snapshot(&c, json!({"volume": "data", "name": "third"}));
        assert_eq!(s3.base_id, Some(s2.id), "{kind}");
        assert!(s3.read_bytes.unwrap() <= 6 * MIB, "{kind}: {s3:?}");
        assert_exact(&d, &s3, &path, kind);

        // Delete the middle one: gone, and the others still verify.
        delete(&c, &s2.id.to_string());
        let list: Vec<Snapshot> = c.get("/api/v1/snapshots").unwrap();
        let names: Vec<&str> = list.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["first", "third"], "{kind}");
        for s in ["first", "third"] {
            run_job(&c, &format!("/api/v1/snapshots/{s}/verify"), &json!({}));
            let v: Snapshot = c.get(&format!("/api/v1/snapshots/{s}")).unwrap();
            assert!(v.verified_at.is_some(), "{kind}: {s} verified");
        }
        // A damaged chunk is named, and the snapshot flagged.
        let region = d.block_on(d.server().app.region()).expect("region");
        let index = d.block_on(async {
            let m = region.manifest(s1.id).await.unwrap();
            region.index(&m).await.unwrap()
        });
        let victim = index.entries[0].1;
        d.block_on(async {
            let key = reprise_backup::chunk_key(&victim);
            let mut bytes = region.store.get(&key, 8 * MIB).await.unwrap();
            let at = bytes.len() / 2;
            bytes[at] ^= 1;
            region.store.put(&key, bytes).await.unwrap();
        });
        let job = c
            .start_job("/api/v1/snapshots/first/verify", &json!({}))
            .unwrap();
        let err = c
            .wait_job(&job.id.to_string(), Duration::from_secs(60), |_| {})
            .unwrap_err();
        assert!(
            format!("{err:?}").contains("snapshot_damaged"),
            "{kind}: {err:?}"
        );
        let flagged: Snapshot = c.get("/api/v1/snapshots/first").unwrap();
        assert_eq!(flagged.state, SnapshotState::Error, "{kind}");
        assert!(
            flagged
                .error
                .as_deref()
                .unwrap_or("")
                .contains(&victim.to_hex()),
            "{kind}: the chunk is named: {:?}",
            flagged.error
        );
        run_job(&c, "/api/v1/instances/vm/stop", &json!({}));
    }
}

#[test]
fn detached_volumes_deduplicate_gc_runs_during_a_backup_and_bad_input_changes_nothing() {
    for (kind, s3) in region_stores() {
        let d = TestDaemon::start_seamed(chunk_pause(1000), |c| use_store(c, &s3));
        let c = d.admin();
        for name in ["a", "b"] {
            let v: Volume = c
                .post("/api/v1/volumes", &json!({"name": name, "size": "32M"}))
                .unwrap();
            qemu_io_write(&v.path, 0x61, 0, 8 * MIB);
            qemu_io_write(&v.path, 0x62, 16 * MIB, 4 * MIB);
        }
        let first = snapshot(&c, json!({"volume": "a"}));
        assert_eq!(
            first.state,
            SnapshotState::BackedUp,
            "{kind}: {:?}",
            first.error
        );
        assert_eq!(first.written_bytes, Some(12 * MIB), "{kind}");
        assert_eq!(
            first.chunk_count,
            Some(2),
            "{kind}: equal chunks are stored once"
        );
        assert_eq!(first.dedup_ratio, Some(6.0), "{kind}");

        // While b backs up (slowly), a collection runs: b still ends whole,
        // and nothing it referenced is lost.
        let job = c
            .start_job("/api/v1/snapshots", &json!({"volume": "b", "name": "b1"}))
            .unwrap();
        let started = Instant::now();
        loop {
            let s: Snapshot = c.get("/api/v1/snapshots/b1").unwrap();
            if s.progress_total > 0 || started.elapsed() > Duration::from_secs(30) {
                assert_eq!(s.state, SnapshotState::BackingUp, "{kind}");
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The rules hold while it runs.
        let e = c
            .post::<_, serde_json::Value>("/api/v1/volumes/b/resize", &json!({"size": "64M"}))
            .unwrap_err();
        assert!(
            format!("{e:?}").contains("snapshot_in_progress"),
            "{kind}: {e:?}"
        );
        let e = c
            .start_job("/api/v1/snapshots", &json!({"volume": "b"}))
            .unwrap_err();
        assert!(
            format!("{e:?}").contains("snapshot_in_progress"),
            "{kind}: {e:?}"
        );
        run_job(&c, "/api/v1/gc", &json!({}));
        c.wait_job(&job.id.to_string(), Duration::from_secs(120), |_| {})
            .unwrap();
        let b1: Snapshot = c.get("/api/v1/snapshots/b1").unwrap();
        assert_eq!(b1.state, SnapshotState::BackedUp, "{kind}");
        assert_eq!(
            b1.new_bytes,
            Some(0),
            "{kind}: b holds a's data: nothing new stored"
        );
        run_job(&c, "/api/v1/snapshots/b1/verify", &json!({}));
        assert_exact(&d, &b1, &volume(&c, "b").path, kind);

        // A base cannot go while a backup reads it: the delete is refused
        // by name, the base stays whole, and the next snapshot is still an
        // increment of it.
        qemu_io_write(&volume(&c, "b").path, 0x63, 0, MIB);
        let job = c
            .start_job("/api/v1/snapshots", &json!({"volume": "b", "name": "b2"}))
            .unwrap();
        let started = Instant::now();
        while c
            .get::<Snapshot>("/api/v1/snapshots/b2")
            .unwrap()
            .progress_total
            == 0
        {
            assert!(started.elapsed() < Duration::from_secs(30), "{kind}");
            std::thread::sleep(Duration::from_millis(20));
        }
        let e = c.delete_job("/api/v1/snapshots/b1").unwrap_err();
        assert_eq!(e.code, "snapshot_is_base", "{kind}: {e:?}");
        assert!(e.message.contains("'b1'"), "{kind}: {}", e.message);
        let still: Snapshot = c.get("/api/v1/snapshots/b1").unwrap();
        assert_eq!(still.state, SnapshotState::BackedUp, "{kind}");
        c.wait_job(&job.id.to_string(), Duration::from_secs(120), |_| {})
            .unwrap();
        let b2: Snapshot = c.get("/api/v1/snapshots/b2").unwrap();
        assert_eq!(
            (b2.state, b2.base_id, b2.read_bytes),
            (SnapshotState::BackedUp, Some(b1.id), Some(MIB)),
            "{kind}: an increment of b1"
        );
        assert_exact(&d, &b2, &volume(&c, "b").path, kind);

        // Bad input: named, and nothing changes.
        let before: Vec<Snapshot> = c.get("/api/v1/snapshots").unwrap();
        for (body, code) in [
            (json!({"volume": "nope"}), "volume_not_found"),
            (json!({"volume": "a", "name": "bad name!"}), "name_invalid"),
            (json!({"volume": "a", "name": first.name}), "name_taken"),
            (
                json!({"volume": "a", "quiesce": "sometimes"}),
                "quiesce_invalid",
            ),
            (json!({"volume": "a", "size": 3}), "body_invalid"),
        ] {
            let e = c.start_job("/api/v1/snapshots", &body).unwrap_err();
            assert!(format!("{e:?}").contains(code), "{kind}: {body}: {e:?}");
        }
        let other = d.account("other");
        let e = other
            .start_job("/api/v1/snapshots", &json!({"volume": "a"}))
            .unwrap_err();
        assert!(format!("{e:?}").contains("volume_not_found"), "{e:?}");
        assert!(other
            .get::<Vec<Snapshot>>("/api/v1/snapshots")
            .unwrap()
            .is_empty());
        let e = other.start_job("/api/v1/gc", &json!({})).unwrap_err();
        assert!(format!("{e:?}").contains("admin_only"), "{e:?}");
        let after: Vec<Snapshot> = c.get("/api/v1/snapshots").unwrap();
        assert_eq!(before, after, "{kind}");

        // Deleting them all (b1 first: no backup reads it now) frees
        // exactly their chunks.
        for s in ["b1", "b2", first.name.as_str()] {
            delete(&c, s);
        }
        run_job(&c, "/api/v1/gc", &json!({}));
        let left = stored_chunks(&d);
        assert!(left.is_empty(), "{kind}: {left:?}");
    }
}

#[test]
fn a_volume_made_from_a_snapshot_in_another_zone_holds_the_guests_file() {
    for (kind, s3) in region_stores() {
        let d = TestDaemon::start_with(|c| use_store(c, &s3));
        let c = d.admin();
        let zone2 = d.dir.path().join("zone2");
        let _: Zone = c
            .post(
                "/api/v1/zones",
                &json!({"name": "zone2", "storage_dir": zone2.to_str().unwrap()}),
            )
            .unwrap();
        let src = d.booted_guest(&c, "src", "data");
        let (code, sum) = d.guest_sh(
            &src,
            "dd if=/dev/urandom of=/mnt/data/known bs=1M count=5 2>/dev/null && sync && md5sum /mnt/data/known",
        );
        assert_eq!(code, 0);
        let s = snapshot(&c, json!({"volume": "data", "name": "golden"}));
        assert_eq!(s.state, SnapshotState::BackedUp, "{kind}");

        // Restored in zone2: Ready, clean, and equal to the snapshot.
        let job = run_job(
            &c,
            "/api/v1/snapshots/golden/volumes",
            &json!({"name": "copy", "zone": "zone2"}),
        );
        assert_eq!(job.kind, "volume.restore");
        let copy = volume(&c, "copy");
        assert_eq!(
            (copy.state, copy.zone.as_str(), copy.size_bytes),
            (VolumeState::Ready, "zone2", 64 * MIB),
            "{kind}"
        );
        assert!(copy.path.starts_with(zone2.to_str().unwrap()));
        assert_eq!(
            qemu_img_check(&copy.path),
            0,
            "{kind}: qemu-img check is clean"
        );
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("source.raw");
        qemu_export(
            &volume(&c, "data").path,
            &format!("reprise-vs-{}", s.id),
            &source,
        );
        let same = Command::new("qemu-img")
            .args(["compare", "-U", "-q", "-f", "raw", "-F", "qcow2"])
            .arg(&source)
            .arg(&copy.path)
            .status()
            .unwrap();
        assert!(same.success(), "{kind}: qemu-img compare finds them equal");

        // A guest in zone2 reads the file, byte for byte.
        let mut req = guest_instance("dst", &["copy"]);
        req.zone = Some("zone2".into());
        run_job(&c, "/api/v1/instances", &req);
        let dst = instance(&c, "dst");
        d.wait_agent(&dst);
        let (code, sum2) = d.guest_sh(&dst, "md5sum /mnt/data/known");
        assert_eq!(code, 0, "{kind}: {sum2}");
        assert_eq!(sum2, sum, "{kind}: the file came through whole");

        // A failed restore leaves nothing: a chunk is missing here.
        let region = d.block_on(d.server().app.region()).expect("region");
        let victim = d.block_on(async {
            let m = region.manifest(s.id).await.unwrap();
            region.index(&m).await.unwrap().entries[0].1
        });
        d.block_on(region.store.delete(&reprise_backup::chunk_key(&victim)))
            .unwrap();
        let job = c
            .start_job(
                "/api/v1/snapshots/golden/volumes",
                &json!({"name": "broken", "zone": "zone2"}),
            )
            .unwrap();
        let e = c
            .wait_job(&job.id.to_string(), Duration::from_secs(60), |_| {})
            .unwrap_err();
        assert!(
            format!("{e:?}").contains("object_not_found"),
            "{kind}: {e:?}"
        );
        assert!(
            c.get::<Volume>("/api/v1/volumes/broken").is_err(),
            "{kind}: no half-made volume"
        );
        let files: Vec<_> = std::fs::read_dir(&zone2).unwrap().collect();
        assert_eq!(files.len(), 1, "{kind}: only the copy's file: {files:?}");
        // Bad input is named.
        for (body, code) in [
            (json!({"name": "copy"}), "name_taken"),
            (json!({"name": "x", "zone": "nowhere"}), "zone_not_found"),
            (json!({"name": "x", "size": "1G"}), "body_invalid"),
        ] {
            let e = c
                .start_job("/api/v1/snapshots/golden/volumes", &body)
                .unwrap_err();
            assert!(format!("{e:?}").contains(code), "{kind}: {body}: {e:?}");
        }
        for vm in ["src", "dst"] {
            run_job(&c, &format!("/api/v1/instances/{vm}/stop"), &json!({}));
        }
    }
}

#[test]
fn reverting_a_volume_drops_the_later_writes_and_keeps_its_snapshots() {
    let d = TestDaemon::start();
    let c = d.admin();
    let vm = d.booted_guest(&c, "vm", "data");
    let (_, before) = d.guest_sh(
        &vm,
        "echo release-1 > /mnt/data/app.conf && sync && md5sum /mnt/data/app.conf",
    );
    snapshot(&c, json!({"volume": "data", "name": "pre-upgrade"}));
    d.guest_sh(
        &vm,
        "echo release-2 > /mnt/data/app.conf && echo new > /mnt/data/later && sync",
    );
    snapshot(&c, json!({"volume": "data", "name": "post-upgrade"}));

    // Refused while the instance runs; named.
    let e = c
        .start_job(
            "/api/v1/volumes/data/revert",
            &json!({"snapshot": "pre-upgrade"}),
        )
        .unwrap_err();
    assert!(format!("{e:?}").contains("instance_running"), "{e:?}");
    run_job(&c, "/api/v1/instances/vm/stop", &json!({}));
    let e = c
        .start_job("/api/v1/volumes/data/revert", &json!({"snapshot": "nope"}))
        .unwrap_err();
    assert!(format!("{e:?}").contains("snapshot_not_found"), "{e:?}");

    let job = run_job(
        &c,
        "/api/v1/volumes/data/revert",
        &json!({"snapshot": "pre-upgrade"}),
    );
    assert_eq!(job.kind, "volume.revert");
    let v = volume(&c, "data");
    assert_eq!(v.state, VolumeState::Ready);
    assert_eq!(qemu_img_check(&v.path), 0);
    run_job(&c, "/api/v1/instances/vm/start", &json!({}));
    let vm = instance(&c, "vm");
    d.wait_agent(&vm);
    let (_, after) = d.guest_sh(&vm, "md5sum /mnt/data/app.conf; ls /mnt/data");
    assert!(
        after.starts_with(before.trim()),
        "the file is back: {after}"
    );
    assert!(!after.contains("later"), "the later write is gone: {after}");
    // Both snapshots stay; the next one reads everything again (the base
    // went with the old file) but stores little.
    let list: Vec<Snapshot> = c.get("/api/v1/snapshots").unwrap();
    assert_eq!(list.len(), 2);
    let next = snapshot(&c, json!({"volume": "data"}));
    assert_eq!(next.base_id, None);
    assert!(next.new_bytes.unwrap() < 2 * MIB, "{next:?}");
    run_job(&c, "/api/v1/instances/vm/stop", &json!({}));
}

#[test]
fn a_template_outlives_its_snapshot_and_deploys_three_instances() {
    let d = TestDaemon::start();
    let c = d.admin();
    let builder = d.booted_guest(&c, "builder", "base");
    let (_, sum) = d.guest_sh(
        &builder,
        "dd if=/dev/urandom of=/mnt/data/app.bin bs=1M count=3 2>/dev/null && sync && md5sum /mnt/data/app.bin",
    );
    run_job(&c, "/api/v1/instances/builder/stop", &json!({}));
    snapshot(&c, json!({"volume": "base", "name": "gold-snap"}));
    let t: Template = c
        .post(
            "/api/v1/templates",
            &json!({"name": "golden", "snapshot": "gold-snap"}),
        )
        .unwrap();
    assert_eq!(
        (t.size_bytes, t.source_snapshot.as_str()),
        (64 * MIB, "gold-snap")
    );
    assert!(t.chunk_count > 0);
    // Bad input is named and changes nothing.
    for (body, code) in [
        (
            json!({"name": "golden", "snapshot": "gold-snap"}),
            "name_taken",
        ),
        (
            json!({"name": "other", "snapshot": "nope"}),
            "snapshot_not_found",
        ),
        (
            json!({"name": "bad name", "snapshot": "gold-snap"}),
            "name_invalid",
        ),
    ] {
        let e = c
            .post::<_, Template>("/api/v1/templates", &body)
            .unwrap_err();
        assert!(format!("{e:?}").contains(code), "{body}: {e:?}");
    }
    assert_eq!(
        c.get::<Vec<Template>>("/api/v1/templates").unwrap().len(),
        1
    );

    // The snapshot goes; the template stays whole.
    delete(&c, "gold-snap");
    let t: Template = c.get("/api/v1/templates/golden").unwrap();
    assert_eq!(t.source_snapshot_id, None);

    let mut bad = guest_instance("x", &[]);
    bad.template = Some("golden".into());
    bad.root_size = Some("1G".into());
    let e = c.start_job("/api/v1/instances", &bad).unwrap_err();
    assert!(format!("{e:?}").contains("root_conflict"), "{e:?}");
    bad.root_size = None;
    bad.template = Some("nope".into());
    let e = c.start_job("/api/v1/instances", &bad).unwrap_err();
    assert!(format!("{e:?}").contains("template_not_found"), "{e:?}");

    for i in 1..=3 {
        let name = format!("web{i}");
        let mut req = guest_instance(&name, &[]);
        req.template = Some("golden".into());
        let started = Instant::now();
        run_job(&c, "/api/v1/instances", &req);
        let vm = instance(&c, &name);
        let waited = d.wait_agent(&vm);
        let (code, got) = d.guest_sh(&vm, "md5sum /mnt/data/app.bin");
        assert_eq!((code, got.as_str()), (0, sum.as_str()), "{name}");
        eprintln!(
            "{name}: agent answering {:?} after instance create (agent wait {waited:?})",
            started.elapsed()
        );
        let root = volume(&c, &format!("{name}-root"));
        assert_eq!(qemu_img_check(&root.path), 0, "{name}");
        run_job(&c, &format!("/api/v1/instances/{name}/stop"), &json!({}));
    }

    // Deleting the template frees its chunks; the instances keep theirs.
    let job = c.delete_job("/api/v1/templates/golden").unwrap();
    c.wait_job(&job.id.to_string(), Duration::from_secs(60), |_| {})
        .unwrap();
    // Deletes ask for a collection in the background; the admin's runs now.
    run_job(&c, "/api/v1/gc", &json!({}));
    let left = stored_chunks(&d);
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(qemu_img_check(&volume(&c, "web1-root").path), 0);
}

/// The chunk objects (name, size) in the daemon's region store.
fn stored_chunks(d: &TestDaemon) -> Vec<(String, u64)> {
    d.block_on(async {
        let region = d.server().app.region().await.unwrap();
        region.store.list("chunks").await
    })
    .unwrap()
}

fn qemu_img(args: &[&str]) {
    let out = Command::new("qemu-img").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn images_are_imported_as_templates_and_deploy_equal_root_volumes() {
    let dir = tempfile::tempdir().unwrap();
    let d = TestDaemon::start_with(|c| c.import_dirs.push(dir.path().into()));
    let c = d.admin();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();

    // A raw image and a qcow2 image: imported, deployed, equal to the file.
    let mut data = vec![0u8; 16 << 20];
    for (i, b) in data[..4 << 20].iter_mut().enumerate() {
        *b = (i * 7 % 251) as u8;
    }
    std::fs::write(p("disk.raw"), &data).unwrap();
    qemu_img(&[
        "convert",
        "-q",
        "-f",
        "raw",
        "-O",
        "qcow2",
        &p("disk.raw"),
        &p("disk.qcow2"),
    ]);
    for (name, file, format) in [
        ("from-raw", "disk.raw", "raw"),
        ("from-qcow2", "disk.qcow2", "qcow2"),
    ] {
        let job = run_job(
            &c,
            "/api/v1/templates/import",
            &json!({"name": name, "file": p(file)}),
        );
        assert_eq!(job.kind, "template.import");
        let t: Template = c.get(&format!("/api/v1/templates/{name}")).unwrap();
        assert_eq!(t.size_bytes, 16 << 20);
        assert_eq!(t.source_snapshot, format!("image:{file}"), "{t:?}");
        let vm = format!("vm-{name}");
        let mut req = guest_instance(&vm, &[]);
        req.template = Some(name.into());
        req.no_start = true;
        run_job(&c, "/api/v1/instances", &req);
        let root = volume(&c, &format!("{vm}-root"));
        assert_eq!(qemu_img_check(&root.path), 0);
        let same = Command::new("qemu-img")
            .args([
                "compare",
                "-q",
                "-f",
                format,
                "-F",
                "qcow2",
                &p(file),
                &root.path,
            ])
            .status()
            .unwrap();
        assert!(same.success(), "{name}: the deployed root equals the image");
    }

    // Hostile images are refused at every entry: see tests/tenancy.rs.
}

#[test]
fn a_clone_in_another_zone_runs_on_copies_taken_at_one_instant() {
    let d = TestDaemon::start();
    let c = d.admin();
    let zone2 = d.dir.path().join("zone2");
    let _: Zone = c
        .post(
            "/api/v1/zones",
            &json!({"name": "zone2", "storage_dir": zone2.to_str().unwrap()}),
        )
        .unwrap();
    for v in ["logs", "db"] {
        let _: Volume = c
            .post("/api/v1/volumes", &json!({"name": v, "size": "32M"}))
            .unwrap();
    }
    run_job(
        &c,
        "/api/v1/instances",
        &guest_instance("prod", &["logs", "db"]),
    );
    let prod = instance(&c, "prod");
    d.wait_agent(&prod);
    let (_, sum) = d.guest_sh(
        &prod,
        "dd if=/dev/urandom of=/mnt/data/incident bs=1M count=2 2>/dev/null && sync && md5sum /mnt/data/incident",
    );
    let e = c
        .start_job("/api/v1/instances/prod/clone", &json!({"name": "prod"}))
        .unwrap_err();
    assert!(format!("{e:?}").contains("name_taken"), "{e:?}");

    let job = run_job(
        &c,
        "/api/v1/instances/prod/clone",
        &json!({"name": "debug", "zone": "zone2"}),
    );
    assert_eq!(job.kind, "instance.clone");
    assert!(
        job.log.iter().any(|l| l.message.contains("at one instant")),
        "{:?}",
        job.log
    );
    let debug = instance(&c, "debug");
    assert_eq!(
        (debug.state, debug.zone.as_str()),
        (InstanceState::Running, "zone2")
    );
    assert_eq!(debug.volumes.len(), 2);
    d.wait_agent(&debug);
    let (code, got) = d.guest_sh(&debug, "md5sum /mnt/data/incident");
    assert_eq!(
        (code, got.as_str()),
        (0, sum.as_str()),
        "the clone sees the file"
    );
    // The source runs on, untouched; the snapshots are listed like any.
    assert_eq!(instance(&c, "prod").state, InstanceState::Running);
    let snaps: Vec<Snapshot> = c.get("/api/v1/snapshots").unwrap();
    assert_eq!(snaps.len(), 2);
    assert!(snaps.iter().all(|s| s.state == SnapshotState::BackedUp));
    for vm in ["prod", "debug"] {
        run_job(&c, &format!("/api/v1/instances/{vm}/stop"), &json!({}));
    }
}

/// An S3 that answers `503` to a few connections in the middle of a
/// backup (as a busy one does) costs retries, not the snapshot: it ends
/// `BackedUp` and reads back exact.
#[test]
fn a_busy_s3_in_the_middle_of_a_backup_is_retried() {
    let Some(s3) = reprise_store::S3Config::from_test_env() else {
        return; // REPRISE_TEST_S3=off, said out loud
    };
    let proxy = s3_proxy::S3Proxy::start(&s3.endpoint);
    let through_proxy = reprise_store::S3Config {
        endpoint: proxy.endpoint.clone(),
        ..s3
    };
    let d = TestDaemon::start_with(|c| use_store(c, &Some(through_proxy)));
    let c = d.admin();
    let v: Volume = c
        .post("/api/v1/volumes", &json!({"name": "v", "size": "64M"}))
        .unwrap();
    // Distinct chunks, each uploaded on its own: many connections.
    let ok = Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "write -P 3 0 40M", &v.path])
        .output()
        .unwrap();
    assert!(ok.status.success());
    let pattern_breaks: Vec<String> = (0..40)
        .map(|i| format!("write -P {} {}M 4k", 10 + i, i))
        .collect();
    for cmd in &pattern_breaks {
        assert!(Command::new("qemu-io")
            .args(["-f", "qcow2", "-c", cmd, &v.path])
            .output()
            .unwrap()
            .status
            .success());
    }
    proxy.refuse(4);
    let s = snapshot(&c, json!({"volume": "v", "name": "s"}));
    assert_eq!(s.state, SnapshotState::BackedUp, "{:?}", s.error);
    assert!(proxy.refused() > 0, "the proxy refused no connection");
    assert_exact(&d, &s, &v.path, "s3 behind a busy proxy");
}

/// Snapshot policies on running guests, one firing every minute: a volume
/// policy with keep-last 2 took three quiesced snapshots and left the two
/// newest, each exact; a recovery-point policy under a plan of one point
/// replaced its point and said so; a snapshot taken by hand stayed.
#[test]
fn policies_take_and_prune_on_their_schedule() {
    let d = TestDaemon::start();
    let c = d.admin();
    let _: serde_json::Value = c
        .post(
            "/api/v1/plans",
            &json!({"name": "one-point", "max_recovery_points": 1}),
        )
        .unwrap();
    let web = d.booted_guest(&c, "web", "data");
    let db = d.booted_guest(&c, "db", "dbdata");
    let _: AccountDetails = c
        .post(
            "/api/v1/accounts/admin/settings",
            &json!({"plan": "one-point"}),
        )
        .unwrap();
    let manual = snapshot(&c, json!({"volume": "data", "name": "by-hand"}));
    // Bad policies are refused, naming the problem.
    for (body, code) in [
        (
            json!({"volume": "data", "schedule": "daily 25:00"}),
            "schedule_invalid",
        ),
        (
            json!({"volume": "data", "schedule": "hourly 00", "timezone": "Mars/Olympus"}),
            "timezone_invalid",
        ),
        (json!({"schedule": "hourly 00"}), "policy_target_invalid"),
        (
            json!({"volume": "data", "schedule": "hourly 00", "memory": true}),
            "policy_target_invalid",
        ),
        (
            json!({"volume": "data", "schedule": "hourly 00", "keep": {"last": -1}}),
            "body_invalid",
        ),
    ] {
        let e = c.post::<_, Policy>("/api/v1/policies", &body).unwrap_err();
        assert_eq!(e.code, code, "{body}: {e}");
    }
    let snaps: Policy = c
        .post(
            "/api/v1/policies",
            &json!({"volume": "data", "schedule": "cron * * * * *", "timezone": "Europe/Paris",
                    "keep": {"last": 2}, "quiesce": "required"}),
        )
        .unwrap();
    assert_eq!(
        (snaps.name.as_str(), snaps.interval_type.as_deref()),
        ("data-cron", None)
    );
    let points: Policy = c
        .post(
            "/api/v1/policies",
            &json!({"instance": "db", "schedule": "* * * * *", "keep": {"last": 1}}),
        )
        .unwrap();
    // The daily form speaks CloudStack too.
    let daily: Policy = c
        .post(
            "/api/v1/policies",
            &json!({"volume": "dbdata", "schedule": "daily 02:30", "timezone": "Europe/Paris", "enabled": false}),
        )
        .unwrap();
    assert_eq!(
        (
            daily.interval_type.as_deref(),
            daily.cloudstack_schedule.as_deref()
        ),
        (Some("DAILY"), Some("30:02"))
    );

    // Three runs of the snapshot policy, each writing new data first.
    let started = Instant::now();
    let taken = |c: &Client| -> usize {
        let jobs: Vec<Job> = c.get("/api/v1/jobs?limit=200").unwrap();
        jobs.iter()
            // The policy's are named after the volume; "by-hand" is not.
            .filter(|j| {
                j.kind == "snapshot.create"
                    && j.state == JobState::Succeeded
                    && j.target_name == "data"
            })
            .count()
    };
    let mut seen = 0;
    while seen < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "three runs in five minutes"
        );
        let now = taken(&c);
        if now > seen {
            seen = now;
            let (code, _) = d.guest_sh(
                &web,
                &format!(
                    "dd if=/dev/urandom of=/mnt/data/run{seen} bs=1M count=2 2>/dev/null && sync"
                ),
            );
            assert_eq!(code, 0);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    // Its retention ran after the third: the two newest stay, quiesced
    // and exact; the hand-made one too.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mine = loop {
        let mine = c
            .snapshots(&SnapshotFilter {
                policy: Some("data-cron".into()),
                ..Default::default()
            })
            .unwrap();
        if mine.len() == 2
            && c.policy("data-cron")
                .unwrap()
                .last_result
                .is_some_and(|r| r.contains("removed"))
        {
            break mine;
        }
        assert!(
            Instant::now() < deadline,
            "retention left {} snapshots",
            mine.len()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let path = volume(&c, "data").path;
    for s in &mine {
        assert_eq!(
            (s.state, s.consistency.as_str()),
            (SnapshotState::BackedUp, "filesystem")
        );
        assert_eq!(s.policy_id, Some(snaps.id));
        // Two more runs of a minute each remove it, at the latest.
        let expires = s.expires_at.expect("a policy's snapshot says when it goes");
        assert!(expires > s.created_at && expires < s.created_at + chrono::Duration::minutes(4));
        let verified = run_job(
            &c,
            &format!("/api/v1/snapshots/{}/verify", s.id),
            &json!({}),
        );
        assert_eq!(verified.state, JobState::Succeeded);
    }
    // The newest is still tagged in the volume (the next one's base):
    // its bytes are QEMU's.
    let newest = mine.iter().max_by_key(|s| s.created_at).unwrap();
    assert_exact(&d, newest, &path, "policy");
    let by_hand = c.snapshot("by-hand").unwrap();
    assert_eq!((by_hand.id, by_hand.expires_at), (manual.id, None));
    let sim = c.simulate_policy("data-cron").unwrap();
    assert_eq!(sim.items.len(), 2);
    assert!(sim.items.iter().all(|i| i.keep && i.kept_by == ["last"]));
    assert_eq!(sim.untouched, 1);

    // The points policy: one point at a time, the plan's limit; the run
    // that met it replaced the old point and said so.
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        let p = c.policy(&points.id.to_string()).unwrap();
        if p.last_result
            .as_deref()
            .is_some_and(|r| r.contains("replaced recovery point"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no replacing run: {:?}",
            p.last_result
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Stopped, so that no run is in flight while its points are read: a
    // run that had begun ends with one point, Ready.
    c.update_policy(
        "db-cron",
        &UpdatePolicy {
            enabled: Some(false),
            ..Default::default()
        },
    )
    .unwrap();
    // A run claimed in the tick before has started its job within a tick.
    std::thread::sleep(Duration::from_secs(3));
    let deadline = Instant::now() + Duration::from_secs(90);
    let pts = loop {
        let jobs: Vec<Job> = c.get("/api/v1/jobs?limit=50").unwrap();
        let busy = jobs
            .iter()
            .any(|j| j.kind.starts_with("point.") && !j.state.is_final());
        let pts: Vec<Point> = c.get("/api/v1/instances/db/points").unwrap();
        if !busy && pts.len() == 1 && pts[0].state == PointState::Ready {
            break pts;
        }
        assert!(Instant::now() < deadline, "points: {pts:?}");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(pts[0].policy_id, Some(points.id));
    let of_policy = c.points_of_policy("db", "db-cron").unwrap();
    assert_eq!((of_policy.len(), of_policy[0].id), (1, pts[0].id));
    // The instance's snapshots: the policy's two and the hand-made one.
    let of_web = c
        .snapshots(&SnapshotFilter {
            instance: Some("web".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(of_web.len(), 3);

    // Switched off, a policy stops; deleted, its snapshots stay.
    let off = c
        .update_policy(
            "data-cron",
            &UpdatePolicy {
                enabled: Some(false),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(!off.enabled);
    c.delete_policy("data-cron").unwrap();
    assert_eq!(
        c.snapshots(&SnapshotFilter {
            volume: Some("data".into()),
            ..Default::default()
        })
        .unwrap()
        .len(),
        3
    );
    assert_eq!(c.policy("data-cron").unwrap_err().code, "policy_not_found");
    let _ = db;
}

/// A daemon that was down through three hourly slots runs the policy once
/// when it is back; a run the plan refuses is recorded as failed, takes
/// nothing, and the policy waits for its next slot.
#[test]
fn missed_slots_run_once_and_failures_are_recorded() {
    let d = TestDaemon::start();
    let c = d.admin();
    let admin: Account = c.get("/api/v1/whoami").unwrap();
    let _: Volume = c
        .post("/api/v1/volumes", &json!({"name": "v", "size": "64M"}))
        .unwrap();
    let p: Policy = c
        .post(
            "/api/v1/policies",
            &json!({"volume": "v", "schedule": "hourly 00", "keep": {"last": 5}}),
        )
        .unwrap();
    let catalog = &d.server().app.catalog;
    let back_in_time = |hours: i64| {
        let mut row = catalog.policy(admin.id, &p.id.to_string()).unwrap();
        row.next_run_at = Some(chrono::Utc::now() - chrono::Duration::hours(hours));
        catalog.update_policy(&row).unwrap();
    };
    let ran = |before: Option<chrono::DateTime<chrono::Utc>>| -> Policy {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let now = c.policy("v-hourly").unwrap();
            if now.last_result.is_some() && now.last_run_at != before {
                return now;
            }
            assert!(Instant::now() < deadline, "the policy never ran");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    back_in_time(3);
    let after = ran(None);
    let mine = SnapshotFilter {
        policy: Some("v-hourly".into()),
        ..Default::default()
    };
    // One run, not three; the next slot is the coming hour.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        c.snapshots(&mine).unwrap().len(),
        1,
        "{:?}",
        after.last_result
    );
    let next = after.next_run_at.unwrap();
    let now = chrono::Utc::now();
    assert!(
        next > now && next <= now + chrono::Duration::hours(1),
        "{next}"
    );
    assert_eq!(chrono::Timelike::minute(&next), 0);
    assert!(after.last_result.unwrap().starts_with("took snapshot"));

    // The plan allows one snapshot: the next run fails, says why, and
    // the policy goes on to its next slot.
    let _: serde_json::Value = c
        .post(
            "/api/v1/plans",
            &json!({"name": "one-snapshot", "max_snapshots": 1}),
        )
        .unwrap();
    let _: AccountDetails = c
        .post(
            "/api/v1/accounts/admin/settings",
            &json!({"plan": "one-snapshot"}),
        )
        .unwrap();
    back_in_time(1);
    let failed = ran(after.last_run_at);
    let said = failed.last_result.unwrap();
    assert!(
        said.starts_with("failed:") && said.contains("snapshot"),
        "{said}"
    );
    assert!(failed.next_run_at.unwrap() > chrono::Utc::now());
    assert_eq!(c.snapshots(&mine).unwrap().len(), 1);
}
