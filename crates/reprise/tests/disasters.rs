//! Disasters, as they happen to an operator, on each catalog engine
//! (SQLite and PostgreSQL): the catalog put back from an older copy, the
//! catalog lost, a second catalog pointed at the same store. In each, no
//! sweep deletes what the store holds, and `reprise region recover`
//! brings every snapshot back, restoring byte for byte.

use reprise_client::Client;
use reprise_core::model::*;
use reprise_testing::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const MIB: u64 = 1 << 20;

/// The catalog engines every disaster runs on.
fn engines() -> Vec<&'static str> {
    let mut out = vec!["sqlite"];
    if reprise_catalog::testing::postgres_url().is_some() {
        out.push("postgres");
    }
    out
}

/// A daemon on `engine`'s catalog, adjusted by `adjust`.
fn daemon(engine: &str, adjust: impl FnOnce(&mut reprise_daemon::config::Config)) -> TestDaemon {
    TestDaemon::start_with(|c| {
        if engine == "postgres" {
            let url = reprise_catalog::testing::postgres_url().expect("PostgreSQL");
            c.catalog.url = Some(reprise_catalog::testing::fresh_postgres_url(&url));
        }
        adjust(c)
    })
}

/// A copy of a stopped daemon's catalog: its SQLite files, or a dump of
/// its PostgreSQL schema (a nightly backup).
enum Saved {
    Sqlite(Vec<(PathBuf, Option<Vec<u8>>)>),
    Postgres(PathBuf),
}

fn sqlite_files(d: &TestDaemon) -> Vec<PathBuf> {
    let db = d.config.catalog_path();
    ["", "-wal", "-shm"]
        .iter()
        .map(|s| PathBuf::from(format!("{}{s}", db.display())))
        .collect()
}

/// The PostgreSQL server's URL and the schema a daemon's catalog is in.
fn postgres_schema(d: &TestDaemon) -> (String, String) {
    let url = d.config.catalog.url.clone().expect("a PostgreSQL catalog");
    let schema = url
        .split("application_name=")
        .nth(1)
        .expect("the test URL names its schema")
        .to_string();
    let base = url.split('?').next().unwrap().to_string();
    (base, schema)
}

fn pg(tool: &str, args: &[&str]) {
    let out = Command::new(format!("/usr/lib/postgresql/15/bin/{tool}"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool}: {e}"));
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn save_catalog(d: &TestDaemon, dir: &Path) -> Saved {
    match d.config.catalog.url {
        None => Saved::Sqlite(
            sqlite_files(d)
                .into_iter()
                .map(|p| {
                    let bytes = std::fs::read(&p).ok();
                    (p, bytes)
                })
                .collect(),
        ),
        Some(_) => {
            let (url, schema) = postgres_schema(d);
            let dump = dir.join(format!("{schema}.sql"));
            pg(
                "pg_dump",
                &["-d", &url, "-n", &schema, "-f", dump.to_str().unwrap()],
            );
            Saved::Postgres(dump)
        }
    }
}

/// Lose a stopped daemon's catalog: its files deleted, or its schema
/// dropped and made again empty.
fn lose_catalog(d: &TestDaemon) {
    match d.config.catalog.url {
        None => {
            for p in sqlite_files(d) {
                let _ = std::fs::remove_file(p);
            }
        }
        Some(_) => {
            let (url, schema) = postgres_schema(d);
            pg(
                "psql",
                &[
                    "-q",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-d",
                    &url,
                    "-c",
                    &format!("DROP SCHEMA {schema} CASCADE; CREATE SCHEMA {schema}"),
                ],
            );
        }
    }
}

/// Put a saved catalog back in place of a stopped daemon's.
fn put_back(d: &TestDaemon, saved: &Saved) {
    match saved {
        Saved::Sqlite(files) => {
            for (p, bytes) in files {
                let _ = std::fs::remove_file(p);
                if let Some(b) = bytes {
                    std::fs::write(p, b).unwrap();
                }
            }
        }
        Saved::Postgres(dump) => {
            let (url, schema) = postgres_schema(d);
            let drop = format!("DROP SCHEMA {schema} CASCADE");
            pg(
                "psql",
                &["-q", "-v", "ON_ERROR_STOP=1", "-d", &url, "-c", &drop],
            );
            let file = dump.to_str().unwrap();
            pg(
                "psql",
                &["-q", "-v", "ON_ERROR_STOP=1", "-d", &url, "-f", file],
            );
        }
    }
}

/// What the guest would read from a volume's file.
fn raw(path: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("v.raw");
    let ok = Command::new("qemu-img")
        .args(["convert", "-U", "-q", "-O", "raw", path])
        .arg(&out)
        .status()
        .unwrap()
        .success();
    assert!(ok, "qemu-img convert {path}");
    std::fs::read(out).unwrap()
}

/// A 32 MiB volume holding `pattern` over `len` bytes at `offset`; its
/// path filled in where a tenant is not shown it.
fn volume_with(
    d: &TestDaemon,
    c: &Client,
    name: &str,
    pattern: u8,
    offset: u64,
    len: u64,
) -> Volume {
    let mut v: Volume = c
        .post("/api/v1/volumes", &json!({"name": name, "size": "32M"}))
        .unwrap();
    if v.path.is_empty() {
        let file = d.config.default_zone_dir().join(format!("{}.qcow2", v.id));
        v.path = file.to_string_lossy().into_owned();
    }
    qemu_io_write(&v.path, pattern, offset, len);
    v
}

fn take(c: &Client, volume: &str, name: &str) -> Snapshot {
    let job = run_job(
        c,
        "/api/v1/snapshots",
        &json!({"volume": volume, "name": name}),
    );
    let s: Snapshot = c
        .get(&format!("/api/v1/snapshots/{}", job.target_id))
        .unwrap();
    assert_eq!(s.state, SnapshotState::BackedUp, "{:?}", s.error);
    s
}

fn names(c: &Client) -> Vec<String> {
    let list: Vec<Snapshot> = c.get("/api/v1/snapshots").unwrap();
    list.into_iter().map(|s| s.name).collect()
}

/// Restore snapshot `s` into a new volume and compare its bytes.
fn restores_to(d: &TestDaemon, c: &Client, s: &str, expected: &[u8]) {
    let name = format!("back-{}", uuid::Uuid::new_v4().simple());
    run_job(
        c,
        &format!("/api/v1/snapshots/{s}/volumes"),
        &json!({ "name": name }),
    );
    let v: Volume = c.get(&format!("/api/v1/volumes/{name}")).unwrap();
    let path = d.config.default_zone_dir().join(format!("{}.qcow2", v.id));
    let path = path.to_str().unwrap();
    assert_eq!(qemu_img_check(path), 0);
    assert!(raw(path) == expected, "snapshot {s} restores other bytes");
    c.delete(&format!("/api/v1/volumes/{name}")).unwrap();
}

/// Run a job to its end; its error code, if it failed.
fn job_outcome(c: &Client, path: &str, body: serde_json::Value) -> (Job, Option<String>) {
    let job = c.start_job(path, &body).unwrap();
    let id = job.id.to_string();
    let err = c
        .wait_job(&id, Duration::from_secs(300), |_| {})
        .err()
        .map(|e| e.code.to_string());
    (c.get(&format!("/api/v1/jobs/{id}")).unwrap(), err)
}

fn log_of(job: &Job) -> String {
    job.log
        .iter()
        .map(|l| l.message.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

fn recover(c: &Client, dry_run: bool) -> String {
    let (job, err) = job_outcome(c, "/api/v1/region/recover", json!({"dry_run": dry_run}));
    assert_eq!(err, None, "{}", log_of(&job));
    log_of(&job)
}

fn stored_manifest(d: &TestDaemon, id: uuid::Uuid) -> bool {
    let region = d.block_on(d.server().app.region()).unwrap();
    d.block_on(region.manifest(id)).is_ok()
}

/// The by-hand case of the issue: one snapshot, the catalog copied aside,
/// more snapshots and a template, the old catalog put back. A sweep is
/// refused (it once deleted the newer snapshots' objects); recover brings
/// them back, each restores byte for byte, and sweeps run again without
/// touching them.
#[test]
fn a_catalog_put_back_from_an_older_copy_sweeps_nothing_and_recovers_the_rest() {
    for engine in engines() {
        let mut d = daemon(engine, |_| {});
        let c = d.admin();
        let a = volume_with(&d, &c, "a", 0x61, 0, 8 * MIB);
        let b = volume_with(&d, &c, "b", 0x62, 4 * MIB, 8 * MIB);
        let s1 = take(&c, "a", "a1");
        let a1 = raw(&a.path);

        d.stop();
        let copies = tempfile::tempdir().unwrap();
        let saved = save_catalog(&d, copies.path());
        d.start_again();
        qemu_io_write(&a.path, 0x63, 16 * MIB, 2 * MIB);
        let a2 = raw(&a.path);
        let s2 = take(&c, "a", "a2");
        assert_eq!(s2.base_id, Some(s1.id), "{engine}: an increment");
        let s3 = take(&c, "b", "b1");
        let b1 = raw(&b.path);
        let t: Template = c
            .post(
                "/api/v1/templates",
                &json!({"name": "tb", "snapshot": "b1"}),
            )
            .unwrap();

        d.stop();
        put_back(&d, &saved);
        d.start_again();
        assert_eq!(names(&c), vec!["a1"], "{engine}: the old catalog");
        let (job, err) = job_outcome(&c, "/api/v1/gc", json!({}));
        assert_eq!(
            err.as_deref(),
            Some("catalog_behind_store"),
            "{engine}: {}",
            log_of(&job)
        );
        for id in [s2.id, s3.id, t.id] {
            assert!(stored_manifest(&d, id), "{engine}: {id} is still stored");
        }

        let dry = recover(&c, true);
        for line in [
            "would add snapshot 'a2'",
            "would add snapshot 'b1'",
            "would add template 'tb'",
        ] {
            assert!(dry.contains(line), "{engine}: {line}: {dry}");
        }
        assert_eq!(names(&c), vec!["a1"], "{engine}: a dry run adds nothing");

        let done = recover(&c, false);
        assert!(
            done.contains("2 snapshots and 1 templates added"),
            "{engine}: {done}"
        );
        assert_eq!(names(&c), vec!["a1", "a2", "b1"], "{engine}");
        let tb: Template = c.get("/api/v1/templates/tb").unwrap();
        assert_eq!(tb.source_snapshot_id, Some(s3.id), "{engine}");
        // Sweeps run again, and take nothing anyone needs.
        let (job, err) = job_outcome(&c, "/api/v1/gc", json!({}));
        assert_eq!(err, None, "{engine}: {}", log_of(&job));
        for (s, bytes) in [("a1", &a1), ("a2", &a2), ("b1", &b1)] {
            restores_to(&d, &c, s, bytes);
        }
        let again = recover(&c, false);
        assert!(
            again.contains("0 snapshots and 0 templates added"),
            "{engine}: {again}"
        );
    }
}

/// The catalog is lost (a host's disk, a dropped database): the daemon
/// starts on an empty one, refuses to sweep a store bound to another
/// catalog, and recover gives every tenant its snapshots and templates
/// back — its account re-created without keys until the admin makes one,
/// the admin's own snapshots to the new admin.
#[test]
fn a_lost_catalog_is_rebuilt_from_the_store() {
    for engine in engines() {
        let mut d = daemon(engine, |_| {});
        let c = d.admin();
        let alice = d.account("alice");
        let av = volume_with(&d, &alice, "av", 0x71, MIB, 5 * MIB);
        let alice1 = raw(&av.path);
        take(&alice, "av", "alice-1");
        let _: Template = alice
            .post(
                "/api/v1/templates",
                &json!({"name": "golden", "snapshot": "alice-1"}),
            )
            .unwrap();
        let v = volume_with(&d, &c, "v", 0x72, 0, 3 * MIB);
        let mine = raw(&v.path);
        take(&c, "v", "mine");

        d.stop();
        lose_catalog(&d);
        d.start_again();
        let c = d.admin();
        assert!(names(&c).is_empty(), "{engine}: a new, empty catalog");
        let (job, err) = job_outcome(&c, "/api/v1/gc", json!({}));
        assert_eq!(
            err.as_deref(),
            Some("store_bound_elsewhere"),
            "{engine}: {}",
            log_of(&job)
        );

        let done = recover(&c, false);
        assert!(
            done.contains("re-created account 'alice'"),
            "{engine}: {done}"
        );
        assert_eq!(
            names(&c),
            vec!["mine"],
            "{engine}: the admin's, to the admin"
        );
        restores_to(&d, &c, "mine", &mine);
        let keys: Vec<ApiKey> = c.get("/api/v1/accounts/alice/keys").unwrap();
        assert!(
            keys.is_empty(),
            "{engine}: no key until the admin makes one"
        );
        let made: ApiKeyCreated = c
            .post("/api/v1/accounts/alice/keys", &json!({"name": "default"}))
            .unwrap();
        let alice = Client::new(&d.url, Some(made.api_key));
        assert_eq!(names(&alice), vec!["alice-1"], "{engine}");
        let templates: Vec<Template> = alice.get("/api/v1/templates").unwrap();
        assert_eq!(templates.len(), 1, "{engine}");
        assert_eq!(templates[0].name, "golden", "{engine}");
        restores_to(&d, &alice, "alice-1", &alice1);
        let (job, err) = job_outcome(&c, "/api/v1/gc", json!({}));
        assert_eq!(err, None, "{engine}: {}", log_of(&job));
        restores_to(&d, &alice, "alice-1", &alice1);
    }
}

/// Another deployment pointed at the same store (its own catalog, the
/// region's key): it may neither sweep the store nor write into it (the
/// store's sweeps would not see its backups in progress), and the store's
/// own catalog goes on; a recover would make the other the store's.
#[test]
fn a_second_catalog_on_the_same_store_deletes_nothing_of_the_first() {
    for engine in engines() {
        let first = daemon(engine, |_| {});
        let c1 = first.admin();
        let a = volume_with(&first, &c1, "a", 0x41, 0, 6 * MIB);
        let a1 = raw(&a.path);
        take(&c1, "a", "a1");
        let second = daemon(engine, |c| {
            c.region.path = Some(first.config.region_store_dir());
            c.region.key_file = Some(first.config.region_key_path());
        });
        let c2 = second.admin();
        volume_with(&second, &c2, "b", 0x42, 2 * MIB, 6 * MIB);
        let (job, err) = job_outcome(&c2, "/api/v1/snapshots", json!({"volume": "b"}));
        assert_eq!(
            err.as_deref(),
            Some("store_bound_elsewhere"),
            "{engine}: {}",
            log_of(&job)
        );
        let (job, err) = job_outcome(&c2, "/api/v1/gc", json!({}));
        assert_eq!(
            err.as_deref(),
            Some("store_bound_elsewhere"),
            "{engine}: {}",
            log_of(&job)
        );
        let (job, err) = job_outcome(&c1, "/api/v1/gc", json!({}));
        assert_eq!(err, None, "{engine}: {}", log_of(&job));
        restores_to(&first, &c1, "a1", &a1);
        take(&c1, "a", "a2");
        let (job, err) = job_outcome(&c1, "/api/v1/snapshots/a1/verify", json!({}));
        assert_eq!(err, None, "{engine}: {}", log_of(&job));
    }
}

/// A snapshot deleted by mistake: it stays whole in the undelete window
/// (no sweep takes its chunks), and comes back byte for byte; protected
/// ones refuse every delete; the admin may purge at once; the window's
/// end removes it for good. Templates have the same window.
#[test]
fn a_snapshot_deleted_by_mistake_comes_back_whole() {
    for engine in engines() {
        let d = daemon(engine, |c| c.snapshots.undelete_days = 7);
        let c = d.admin();
        let a = volume_with(&d, &c, "a", 0x51, 0, 4 * MIB);
        let a1 = raw(&a.path);
        let job = run_job(
            &c,
            "/api/v1/snapshots",
            &json!({"volume": "a", "name": "s1", "protect": true}),
        );
        let s1: Snapshot = c
            .get(&format!("/api/v1/snapshots/{}", job.target_id))
            .unwrap();
        assert!(s1.protected, "{engine}");
        let _: Template = c
            .post(
                "/api/v1/templates",
                &json!({"name": "t1", "snapshot": "s1"}),
            )
            .unwrap();

        // Protected: every delete is refused by name, and nothing changes.
        let e = c.delete_job("/api/v1/snapshots/s1").unwrap_err();
        assert_eq!(e.code, "snapshot_protected", "{engine}: {e:?}");
        let e = c.delete_job("/api/v1/snapshots/s1?purge=true").unwrap_err();
        assert_eq!(e.code, "snapshot_protected", "{engine}: {e:?}");
        let e = c
            .delete(&format!("/api/v1/accounts/{}?purge=true", "nobody"))
            .unwrap_err();
        assert_eq!(e.code, "account_not_found", "{engine}");
        let unprotected: Snapshot = c
            .post(
                "/api/v1/snapshots/s1/protection",
                &json!({"protected": false}),
            )
            .unwrap();
        assert!(!unprotected.protected, "{engine}");

        // Deleted: out of the list, in the deleted list, still stored.
        let del = c.delete_job("/api/v1/snapshots/s1").unwrap();
        c.wait_job(&del.id.to_string(), Duration::from_secs(60), |_| {})
            .unwrap();
        assert!(names(&c).is_empty(), "{engine}");
        let deleted: Vec<Snapshot> = c.get("/api/v1/snapshots?deleted=true").unwrap();
        assert_eq!(deleted.len(), 1, "{engine}");
        assert_eq!(deleted[0].state, SnapshotState::Deleted, "{engine}");
        let until = deleted[0].purge_after.expect("purge_after");
        let days = (until - chrono::Utc::now()).num_hours();
        assert!((167..=168).contains(&days), "{engine}: {days} hours");
        let (job, err) = job_outcome(&c, "/api/v1/gc", json!({}));
        assert_eq!(err, None, "{engine}: {}", log_of(&job));
        assert!(stored_manifest(&d, s1.id), "{engine}: kept through a sweep");
        // Its name is free meanwhile; an undelete then says why it waits.
        take(&c, "a", "s1");
        let e = c
            .post::<_, Snapshot>(&format!("/api/v1/snapshots/{}/undelete", s1.id), &json!({}))
            .unwrap_err();
        assert_eq!(e.code, "name_taken", "{engine}: {e:?}");
        let purge = c.delete_job("/api/v1/snapshots/s1?purge=true").unwrap();
        c.wait_job(&purge.id.to_string(), Duration::from_secs(60), |_| {})
            .unwrap();
        let back: Snapshot = c
            .post(&format!("/api/v1/snapshots/{}/undelete", s1.id), &json!({}))
            .unwrap();
        assert_eq!(back.state, SnapshotState::BackedUp, "{engine}");
        assert_eq!(names(&c), vec!["s1"], "{engine}");
        restores_to(&d, &c, "s1", &a1);

        // A template deleted comes back too.
        let del = c.delete_job("/api/v1/templates/t1").unwrap();
        c.wait_job(&del.id.to_string(), Duration::from_secs(60), |_| {})
            .unwrap();
        assert!(
            c.get::<Template>("/api/v1/templates/t1").is_err(),
            "{engine}"
        );
        let gone: Vec<Template> = c.get("/api/v1/templates?deleted=true").unwrap();
        assert_eq!(gone.len(), 1, "{engine}");
        let t: Template = c.post("/api/v1/templates/t1/undelete", &json!({})).unwrap();
        assert_eq!(t.name, "t1", "{engine}");

        // The window's end removes it for good, its objects first.
        let del = c.delete_job("/api/v1/snapshots/s1").unwrap();
        c.wait_job(&del.id.to_string(), Duration::from_secs(60), |_| {})
            .unwrap();
        let app = &d.server().app;
        let later = chrono::Utc::now() + chrono::Duration::days(8);
        assert_eq!(app.catalog.snapshots_to_purge(later).unwrap().len(), 1);
        let tomorrow = chrono::Utc::now() + chrono::Duration::days(1);
        assert!(app.catalog.snapshots_to_purge(tomorrow).unwrap().is_empty());
        d.block_on(reprise_daemon::ops::deletes::purge_expired(app, later))
            .unwrap();
        assert!(!stored_manifest(&d, s1.id), "{engine}: purged");
        let deleted: Vec<Snapshot> = c.get("/api/v1/snapshots?deleted=true").unwrap();
        assert!(deleted.is_empty(), "{engine}");
    }
}

/// Protected recovery points refuse deletes; plans cap how many an
/// account protects.
#[test]
fn protection_holds_for_points_and_is_capped_by_the_plan() {
    let d = daemon("sqlite", |_| {});
    let c = d.admin();
    let _: reprise_core::plan::Plan = c
        .post(
            "/api/v1/plans",
            &json!({"name": "careful", "max_protected": 1}),
        )
        .unwrap();
    let made: AccountCreated = c
        .post(
            "/api/v1/accounts",
            &json!({"name": "bob", "plan": "careful"}),
        )
        .unwrap();
    let bob = Client::new(&d.url, Some(made.api_key));
    run_job(
        &bob,
        "/api/v1/instances",
        &json!({"name": "vm", "root_size": "64M", "no_start": true}),
    );
    run_job(
        &bob,
        "/api/v1/instances/vm/points",
        &json!({"name": "p1", "protect": true}),
    );
    let e = bob
        .delete_job("/api/v1/instances/vm/points/p1")
        .unwrap_err();
    assert_eq!(e.code, "point_protected", "{e:?}");
    let e = bob.delete_job("/api/v1/instances/vm/points").unwrap_err();
    assert_eq!(e.code, "point_protected", "{e:?}");
    assert!(e.message.contains("'p1'"), "{}", e.message);
    // One protected already: the plan refuses a second.
    volume_with(&d, &bob, "v", 0x11, 0, MIB);
    take(&bob, "v", "s1");
    let e = bob
        .post::<_, Snapshot>(
            "/api/v1/snapshots/s1/protection",
            &json!({"protected": true}),
        )
        .unwrap_err();
    assert_eq!(e.code, "protected_limit_reached", "{e:?}");
    let e = c.delete("/api/v1/accounts/bob?purge=true").unwrap_err();
    assert_eq!(e.code, "account_has_protected", "{e:?}");
    let p: Point = bob
        .post(
            "/api/v1/instances/vm/points/p1/protection",
            &json!({"protected": false}),
        )
        .unwrap();
    assert!(!p.protected);
    let s: Snapshot = bob
        .post(
            "/api/v1/snapshots/s1/protection",
            &json!({"protected": true}),
        )
        .unwrap();
    assert!(s.protected);
    let job = bob.delete_job("/api/v1/instances/vm/points/p1").unwrap();
    bob.wait_job(&job.id.to_string(), Duration::from_secs(60), |_| {})
        .unwrap();
}

/// The catalog lost, with a backup of it in the store: the backup brings
/// back accounts (their keys work again), volumes, policies; recover
/// brings the snapshots, those taken after the backup included; the
/// volume's next snapshot is taken as before.
#[test]
fn a_lost_catalog_comes_back_from_its_backup_and_the_store() {
    for engine in engines() {
        let mut d = daemon(engine, |_| {});
        let c = d.admin();
        let made: AccountCreated = c
            .post("/api/v1/accounts", &json!({"name": "alice"}))
            .unwrap();
        let alice_key = made.api_key.clone();
        let alice = Client::new(&d.url, Some(made.api_key));
        let av = volume_with(&d, &alice, "av", 0x31, 0, 2 * MIB);
        take(&alice, "av", "a1");
        let _: Policy = alice
            .post(
                "/api/v1/policies",
                &json!({"name": "nightly", "volume": "av", "schedule": "daily 02:30", "enabled": false}),
            )
            .unwrap();
        let (job, err) = job_outcome(&c, "/api/v1/catalog/backups", json!({}));
        assert_eq!(err, None, "{engine}: {}", log_of(&job));
        qemu_io_write(&av.path, 0x32, 8 * MIB, MIB);
        let a2_bytes = raw(&av.path);
        take(&alice, "av", "a2");

        d.stop();
        lose_catalog(&d);
        d.start_again();
        let c = d.admin();
        let backups: Vec<CatalogBackup> = c.get("/api/v1/catalog/backups").unwrap();
        assert_eq!(backups.len(), 1, "{engine}");
        let (job, err) = job_outcome(&c, "/api/v1/catalog/restore", json!({}));
        assert_eq!(err, None, "{engine}: {}", log_of(&job));
        assert!(log_of(&job).contains("region recover"), "{engine}");
        // The tenant's own key works again, and its rows are back.
        let alice = Client::new(&d.url, Some(alice_key));
        let v: Volume = alice.get("/api/v1/volumes/av").unwrap();
        assert_eq!(v.id, av.id, "{engine}");
        let _: Policy = alice.get("/api/v1/policies/nightly").unwrap();
        assert!(
            names(&alice).is_empty(),
            "{engine}: snapshots come from the store"
        );
        let done = recover(&c, false);
        assert!(done.contains("2 snapshots"), "{engine}: {done}");
        assert_eq!(names(&alice), vec!["a1", "a2"], "{engine}");
        restores_to(&d, &alice, "a2", &a2_bytes);
        // Snapshots go on; a second restore is refused, naming why.
        qemu_io_write(&av.path, 0x33, 12 * MIB, MIB);
        let a3_bytes = raw(&av.path);
        take(&alice, "av", "a3");
        restores_to(&d, &alice, "a3", &a3_bytes);
        let (_, err) = job_outcome(&c, "/api/v1/catalog/restore", json!({}));
        assert_eq!(err.as_deref(), Some("catalog_not_empty"), "{engine}");
        let (_, err) = job_outcome(&c, "/api/v1/catalog/restore", json!({"name": "nope"}));
        assert_eq!(err.as_deref(), Some("backup_not_found"), "{engine}");
    }
}

/// Run `sql` on a stopped daemon's catalog, as an old copy of it would
/// hold it.
fn edit_catalog(d: &TestDaemon, sql: &str) {
    match d.config.catalog.url {
        None => {
            let script = "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\nc.executescript(sys.argv[2])\nc.commit()";
            let ok = Command::new("python3")
                .args(["-c", script])
                .arg(d.config.catalog_path())
                .arg(sql)
                .status()
                .unwrap()
                .success();
            assert!(ok, "python3 sqlite3: {sql}");
        }
        Some(_) => {
            let (url, schema) = postgres_schema(d);
            let sql = format!("SET search_path TO {schema}; {sql}");
            pg(
                "psql",
                &["-q", "-v", "ON_ERROR_STOP=1", "-d", &url, "-c", &sql],
            );
        }
    }
}

/// A catalog put back from a copy taken while a backup ran, and a template
/// was being made: the start settles both by the store — whole there, so
/// BackedUp and Ready, never removed.
#[test]
fn a_backup_cut_short_in_an_old_copy_is_whole_in_the_store_and_kept() {
    for engine in engines() {
        let mut d = daemon(engine, |_| {});
        let c = d.admin();
        let a = volume_with(&d, &c, "a", 0x21, 0, 3 * MIB);
        let a1 = raw(&a.path);
        let s = take(&c, "a", "a1");
        let t: Template = c
            .post(
                "/api/v1/templates",
                &json!({"name": "t1", "snapshot": "a1"}),
            )
            .unwrap();
        d.stop();
        edit_catalog(
            &d,
            &format!(
                "UPDATE snapshots SET state = 'BackingUp', completed_at = NULL WHERE id = '{}';
                 DELETE FROM snapshot_chunks WHERE snapshot_id = '{}';
                 UPDATE templates SET state = 'Creating' WHERE id = '{}';",
                s.id, s.id, t.id
            ),
        );
        d.start_again();
        let back: Snapshot = c.get("/api/v1/snapshots/a1").unwrap();
        assert_eq!(
            back.state,
            SnapshotState::BackedUp,
            "{engine}: {:?}",
            back.error
        );
        assert_eq!(back.chunk_count, s.chunk_count, "{engine}");
        let _: Template = c.get("/api/v1/templates/t1").unwrap();
        let (job, err) = job_outcome(&c, "/api/v1/gc", json!({}));
        assert_eq!(err, None, "{engine}: {}", log_of(&job));
        restores_to(&d, &c, "a1", &a1);
    }
}
