use super::*;
use db::DbExt;
use reprise_core::model::*;

/// An empty catalog on each engine, with an admin and a zone.
fn catalogs_with_zone() -> Vec<(Catalog, Account, Zone)> {
    testing::catalogs()
        .into_iter()
        .map(|(_, c)| {
            let admin = c.create_account("admin", true).unwrap().account;
            let zone = c.create_zone(admin.id, "zone1", "/srv/zone1").unwrap();
            (c, admin, zone)
        })
        .collect()
}

fn volume_row(account: Uuid, zone: &Zone, name: &str) -> VolumeRow {
    let id = Uuid::new_v4();
    VolumeRow {
        id,
        account_id: account,
        name: name.into(),
        zone_id: zone.id,
        zone: zone.name.clone(),
        kind: VolumeKind::Data,
        state: VolumeState::Ready,
        size_bytes: 1 << 30,
        path: format!("/srv/zone1/{id}.qcow2"),
        instance_id: None,
        instance: None,
        slot: None,
        created_at: now(),
        host: "local".into(),
    }
}

fn instance_row(account: Uuid, zone: &Zone, name: &str, plan: Option<&str>) -> InstanceRow {
    InstanceRow {
        id: Uuid::new_v4(),
        account_id: account,
        name: name.into(),
        zone_id: zone.id,
        zone: zone.name.clone(),
        state: InstanceState::Stopped,
        cpus: 1,
        memory_bytes: 256 << 20,
        root_volume_id: None,
        kernel: None,
        initrd: None,
        append: None,
        accel: None,
        pid: None,
        last_error: None,
        created_at: now(),
        current_point_id: None,
        snapshots_enabled: true,
        plan: plan.map(str::to_string),
        host: "local".into(),
    }
}

#[test]
fn migrations_reach_the_latest_version_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog.db");
    let c = Catalog::open(&path).unwrap();
    assert_eq!(c.schema_version().unwrap(), migrations::LATEST);
    c.create_account("a", false).unwrap();
    drop(c);
    let c = Catalog::open(&path).unwrap();
    assert_eq!(c.list_accounts().unwrap().len(), 1);
}

#[test]
fn keys_are_stored_hashed_and_found_by_hash() {
    for (_, c) in testing::catalogs() {
        let made = c.create_account("alice", false).unwrap();
        assert!(made.api_key.starts_with("rpk_"));
        let (found, first_key) = c.account_by_key(&made.api_key).unwrap().unwrap();
        assert_eq!(found, made.account);
        assert!(c.account_by_key("rpk_wrong").unwrap().is_none());
        let stored: String = c
            .conn()
            .query_row("SELECT hash FROM api_keys", db::params![], |r| r.get(0))
            .unwrap();
        assert_ne!(stored, made.api_key);
        assert_eq!(
            c.create_account("alice", false).unwrap_err().code,
            "name_taken"
        );

        // Several keys, each revocable; a rotation replaces one under its name.
        let second = c.create_key(found.id, "ci").unwrap();
        assert_eq!(second.key.prefix, &second.api_key[..8]);
        assert_eq!(c.create_key(found.id, "ci").unwrap_err().code, "name_taken");
        let names: Vec<String> = c
            .list_keys(found.id)
            .unwrap()
            .into_iter()
            .map(|k| k.name)
            .collect();
        assert_eq!(names, ["default", "ci"]);
        c.revoke_key(first_key).unwrap();
        assert!(c.account_by_key(&made.api_key).unwrap().is_none());
        let rotated = c.rotate_key(second.key.id).unwrap();
        assert_eq!(rotated.key.name, "ci");
        assert!(c.account_by_key(&second.api_key).unwrap().is_none());
        assert_eq!(
            c.account_by_key(&rotated.api_key).unwrap().unwrap().1,
            rotated.key.id
        );
        assert_eq!(
            c.key(found.id, "default").unwrap_err().code,
            "key_not_found"
        );
    }
}

#[test]
fn a_cloudstack_pair_is_found_by_its_api_key_and_is_no_bearer_key() {
    for (_, c) in testing::catalogs() {
        let made = c.create_account("alice", false).unwrap();
        let key = c
            .create_cloudstack_key(made.account.id, "cs", "AKpublic", "rcs1.sealed")
            .unwrap();
        assert_eq!(key.cloudstack_api_key.as_deref(), Some("AKpublic"));
        let (account, id, sealed) = c.account_by_cloudstack_key("AKpublic").unwrap().unwrap();
        assert_eq!(
            (account.id, id, sealed.as_str()),
            (made.account.id, key.id, "rcs1.sealed")
        );
        assert!(c.account_by_cloudstack_key("AKother").unwrap().is_none());
        // Neither the public key nor the sealed secret is a bearer key.
        assert!(c.account_by_key("AKpublic").unwrap().is_none());
        assert!(c.account_by_key("rcs1.sealed").unwrap().is_none());
        let listed = c.list_keys(made.account.id).unwrap();
        assert_eq!(
            listed
                .iter()
                .filter(|k| k.cloudstack_api_key.is_some())
                .count(),
            1
        );
        // An apiKey names one pair.
        assert!(c
            .create_cloudstack_key(made.account.id, "cs2", "AKpublic", "x")
            .is_err());
        c.revoke_key(key.id).unwrap();
        assert!(c.account_by_cloudstack_key("AKpublic").unwrap().is_none());
    }
}

#[test]
fn a_v4_catalog_keeps_its_keys_through_the_tenancy_migration() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    for step in &migrations::SQLITE[..4] {
        conn.execute_batch(step).unwrap();
    }
    conn.pragma_update(None, "user_version", 4).unwrap();
    let admin = Uuid::new_v4();
    let zone = Uuid::new_v4();
    conn.execute(
        "INSERT INTO accounts (id, name, admin, key_hash, created_at) VALUES (?1, 'admin', 1, ?2, '2026-01-01T00:00:00Z')",
        rusqlite::params![admin.to_string(), hash_key("rpk_old")],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO zones (id, account_id, name, storage_dir, created_at) VALUES (?1, ?2, 'zone1', '/z', '2026-01-01T00:00:00Z')",
        rusqlite::params![zone.to_string(), admin.to_string()],
    )
    .unwrap();
    drop(conn);
    let c = Catalog::open(&path).unwrap();
    assert_eq!(c.schema_version().unwrap(), migrations::LATEST);
    let (a, key) = c.account_by_key("rpk_old").unwrap().unwrap();
    assert_eq!((a.id, a.admin, key), (admin, true, admin));
    assert_eq!(c.zone("zone1").unwrap().id, zone, "references survive");
    let fk: bool = c
        .conn()
        .query_row("PRAGMA foreign_keys", db::params![], |r| r.get(0))
        .unwrap();
    assert!(fk, "foreign keys are on again");
}

#[test]
fn plans_are_put_assigned_and_kept_while_used() {
    for (c, _admin, _zone) in catalogs_with_zone() {
        let vps = reprise_core::plan::Plan {
            name: "vps".into(),
            limits: reprise_core::plan::PlanLimits {
                max_recovery_points: Some(1),
                ..Default::default()
            },
        };
        c.put_plan(&vps).unwrap();
        assert_eq!(c.plan("vps").unwrap(), vps);
        assert_eq!(c.plan("gold").unwrap_err().code, "plan_not_found");
        let alice = c
            .create_account_with_plan("alice", false, Some("vps"))
            .unwrap()
            .account;
        assert_eq!(alice.plan.as_deref(), Some("vps"));
        assert_eq!(
            c.create_account_with_plan("bob", false, Some("gold"))
                .unwrap_err()
                .code,
            "plan_not_found"
        );
        assert_eq!(c.delete_plan("vps").unwrap_err().code, "plan_in_use");
        c.set_account_plan(alice.id, None).unwrap();
        c.delete_plan("vps").unwrap();
        assert!(c.list_plans().unwrap().is_empty());
    }
}

#[test]
fn names_are_unique_per_account_and_invisible_across_accounts() {
    for (c, admin, zone) in catalogs_with_zone() {
        let bob = c.create_account("bob", false).unwrap().account;
        c.insert_volume(&volume_row(admin.id, &zone, "db")).unwrap();
        // Same name in another account is fine…
        c.insert_volume(&volume_row(bob.id, &zone, "db")).unwrap();
        // …twice in one account is not.
        let err = c
            .insert_volume(&volume_row(bob.id, &zone, "db"))
            .unwrap_err();
        assert_eq!(err.code, "name_taken");
        let admins = c.volume(admin.id, "db").unwrap();
        assert_eq!(
            c.volume(bob.id, &admins.id.to_string()).unwrap_err().code,
            "volume_not_found"
        );
        assert_eq!(
            c.list_volumes(bob.id, &VolumeFilter::default())
                .unwrap()
                .len(),
            1
        );
    }
}

#[test]
fn a_volume_is_attached_once_and_transitions_are_guarded() {
    for (c, admin, zone) in catalogs_with_zone() {
        let inst = instance_row(admin.id, &zone, "vm", None);
        c.insert_instance(&inst).unwrap();
        assert_eq!(c.instance(admin.id, "vm").unwrap(), inst, "rows round-trip");
        let v = volume_row(admin.id, &zone, "data");
        c.insert_volume(&v).unwrap();
        c.attach_volume(v.id, inst.id, 0).unwrap();
        assert_eq!(
            c.attach_volume(v.id, inst.id, 1).unwrap_err().code,
            "volume_attached"
        );
        assert_eq!(c.instance_volumes(inst.id).unwrap()[0].slot, Some(0));
        // Read in one statement, the same as read in two; by name or id.
        let second = volume_row(admin.id, &zone, "logs");
        c.insert_volume(&second).unwrap();
        c.attach_volume(second.id, inst.id, 1).unwrap();
        let two = (inst.clone(), c.instance_volumes(inst.id).unwrap());
        assert_eq!(two.1.len(), 2);
        assert_eq!(c.instance_with_volumes(admin.id, "vm").unwrap(), two);
        assert_eq!(
            c.instance_with_volumes(admin.id, &inst.id.to_string())
                .unwrap(),
            two
        );
        assert_eq!(
            c.instance_with_volumes(admin.id, "nope").unwrap_err().code,
            "instance_not_found"
        );
        c.detach_volume(second.id).unwrap();
        c.detach_volume(v.id).unwrap();
        assert_eq!(
            c.instance_with_volumes(admin.id, "vm").unwrap(),
            (inst.clone(), vec![])
        );
        c.attach_volume(v.id, inst.id, 0).unwrap();
        assert!(c
            .transition_instance(inst.id, &reprise_core::lifecycle::instance::BOOT)
            .unwrap());
        assert!(!c
            .transition_instance(inst.id, &reprise_core::lifecycle::instance::BOOT)
            .unwrap());
        c.delete_instance(inst.id).unwrap();
        let v = c.volume(admin.id, "data").unwrap();
        assert_eq!(v.instance_id, None, "data volumes survive their instance");
    }
}

#[test]
fn a_deferred_request_waits_with_its_job_until_its_host_runs_it() {
    for (c, admin, _) in catalogs_with_zone() {
        let job = Job {
            id: Uuid::new_v4(),
            account_id: admin.id,
            kind: "snapshot.create".into(),
            target_kind: "volume".into(),
            target_id: Uuid::new_v4(),
            target_name: "data".into(),
            state: JobState::Queued,
            progress_done: 0,
            progress_total: 0,
            error: None,
            log: vec![],
            host: "local".into(),
            created_at: now(),
            started_at: None,
            finished_at: None,
        };
        let request = DeferredRequest {
            job_id: job.id,
            method: "POST".into(),
            path: "/api/v1/snapshots?x=1".into(),
            caller: format!("{} {}", admin.id, Uuid::new_v4()),
            body: r#"{"volume":"data"}"#.into(),
        };
        c.defer(&job, &request).unwrap();
        assert_eq!(c.deferred_requests().unwrap(), vec![request.clone()]);
        // Not settled as interrupted at a start: it waits to be run.
        assert!(c.unfinished_jobs().unwrap().is_empty());
        let started = Job {
            progress_total: 4,
            target_id: Uuid::new_v4(),
            ..job.clone()
        };
        // Another account's job, or a job kept for another host, is not
        // taken (a forged request naming a waiting job), and stays kept.
        let stranger = Job {
            account_id: Uuid::new_v4(),
            ..started.clone()
        };
        assert!(!c.requeue_job(&stranger).unwrap());
        let elsewhere = Job {
            host: "another-host".into(),
            ..started.clone()
        };
        assert!(!c.requeue_job(&elsewhere).unwrap());
        assert_eq!(c.deferred_requests().unwrap().len(), 1, "still kept");
        assert!(c.requeue_job(&started).unwrap());
        // Taken by its host: its request is gone, it can no longer be
        // cancelled, nor taken twice.
        assert!(c.deferred_requests().unwrap().is_empty());
        let why = Error::conflict("job_cancelled", "cancelled");
        assert!(!c.cancel_deferred(job.id, &why).unwrap());
        assert!(!c.requeue_job(&started).unwrap());
        c.forget_deferred(job.id).unwrap();
        let got = c.job(None, &job.id.to_string()).unwrap();
        assert_eq!(got.state, JobState::Queued);
        assert_eq!((got.progress_total, got.target_id), (4, started.target_id));
        // Once it runs, it is an ordinary job.
        c.job_started(job.id).unwrap();
        assert!(
            !c.requeue_job(&started).unwrap(),
            "only a Queued job is taken"
        );
        assert_eq!(c.unfinished_jobs().unwrap().len(), 1);

        // Another waits and is cancelled: Cancelled with the reason, its
        // request forgotten, and its host can no longer take it.
        let waiting = Job {
            id: Uuid::new_v4(),
            ..job.clone()
        };
        let request = DeferredRequest {
            job_id: waiting.id,
            ..request
        };
        c.defer(&waiting, &request).unwrap();
        assert!(c.cancel_deferred(waiting.id, &why).unwrap());
        assert!(c.deferred_requests().unwrap().is_empty());
        let got = c.job(None, &waiting.id.to_string()).unwrap();
        assert_eq!(got.state, JobState::Cancelled);
        assert_eq!(got.error.map(|e| e.code), Some("job_cancelled".into()));
        assert!(got.finished_at.is_some());
        assert!(!c.requeue_job(&waiting).unwrap());
        assert!(!c.cancel_deferred(waiting.id, &why).unwrap());
    }
}

#[test]
fn jobs_keep_progress_log_and_error() {
    for (c, admin, _) in catalogs_with_zone() {
        let job = Job {
            id: Uuid::new_v4(),
            account_id: admin.id,
            kind: "instance.start".into(),
            target_kind: "instance".into(),
            target_id: Uuid::new_v4(),
            target_name: "vm".into(),
            state: JobState::Queued,
            progress_done: 0,
            progress_total: 3,
            error: None,
            log: vec![],
            host: "local".into(),
            created_at: now(),
            started_at: None,
            finished_at: None,
        };
        c.insert_job(&job).unwrap();
        // Another host's job is that host's to settle.
        c.insert_job(&Job {
            id: Uuid::new_v4(),
            host: "host2".into(),
            ..job.clone()
        })
        .unwrap();
        c.job_started(job.id).unwrap();
        c.job_progress(job.id, 2, 3).unwrap();
        c.job_log(job.id, "launched QEMU").unwrap();
        assert_eq!(c.unfinished_jobs().unwrap().len(), 1);
        let err = Error::unavailable("qemu_failed", "boom");
        c.job_finished(job.id, JobState::Failed, Some(&err))
            .unwrap();
        let got = c.job(Some(admin.id), &job.id.to_string()).unwrap();
        assert_eq!(got.state, JobState::Failed);
        assert_eq!(got.progress_done, 2);
        assert_eq!(got.error.unwrap().code, "qemu_failed");
        assert_eq!(got.log[0].message, "launched QEMU");
        assert!(c.unfinished_jobs().unwrap().is_empty());
        let other = c.create_account("eve", false).unwrap().account;
        assert_eq!(
            c.job(Some(other.id), &job.id.to_string()).unwrap_err().code,
            "job_not_found"
        );
        // Jobs that ended long enough ago are forgotten with their logs;
        // one still queued (host2's) stays whatever its age.
        assert_eq!(c.prune_jobs(now() - chrono::Duration::hours(1)).unwrap(), 0);
        assert_eq!(c.prune_jobs(now() + chrono::Duration::hours(1)).unwrap(), 1);
        assert_eq!(
            c.job(Some(admin.id), &job.id.to_string()).unwrap_err().code,
            "job_not_found"
        );
        assert_eq!(c.list_jobs(admin.id, 10).unwrap().len(), 1);
    }
}

#[test]
fn a_plan_limit_holds_in_the_transaction_that_records() {
    for (c, admin, zone) in catalogs_with_zone() {
        c.put_plan(&reprise_core::plan::Plan {
            name: "vps".into(),
            limits: reprise_core::plan::PlanLimits {
                max_recovery_points: Some(1),
                ..Default::default()
            },
        })
        .unwrap();
        let inst = instance_row(admin.id, &zone, "vps", Some("vps"));
        c.insert_instance(&inst).unwrap();
        let point = |name: &str| Point {
            id: Uuid::new_v4(),
            name: name.into(),
            description: String::new(),
            account_id: admin.id,
            instance_id: inst.id,
            instance: inst.name.clone(),
            parent_id: None,
            current: false,
            state: PointState::Creating,
            memory: false,
            memory_save: None,
            consistency: "crash".into(),
            frozen_ms: None,
            volume_ids: vec![],
            size_bytes: None,
            vm_state_bytes: None,
            error: None,
            policy_id: None,
            expires_at: None,
            created_at: now(),
            protected: false,
        };
        let one_point = reprise_core::plan::Demand {
            recovery_points: 1,
            ..Default::default()
        };
        let scope = Scope {
            instance: Some(inst.id),
            volume: None,
        };
        c.admit(admin.id, scope, &one_point, |conn| {
            write::insert_point(conn, &point("one"))
        })
        .unwrap();
        let e = c
            .admit(admin.id, scope, &one_point, |conn| {
                write::insert_point(conn, &point("two"))
            })
            .unwrap_err();
        assert_eq!(e.code, "point_limit_reached");
        assert!(e.message.contains("'vps'"), "{}", e.message);
        assert!(c.point(inst.id, "two").is_err(), "nothing written");
        // The instance's plan gone, the account has none: no limit.
        c.set_instance_settings(inst.id, None, Some(None)).unwrap();
        c.admit(admin.id, scope, &one_point, |conn| {
            write::insert_point(conn, &point("three"))
        })
        .unwrap();
        assert_eq!(c.usage(admin.id, scope).unwrap().most_recovery_points, 2);
        let first = c.point(inst.id, "one").unwrap();
        c.point_taken(first.id, inst.id, "filesystem", Some(40), None)
            .unwrap();
        let third = c.point(inst.id, "three").unwrap();
        assert_eq!(
            c.instance_by_id(inst.id).unwrap().current_point_id,
            Some(first.id)
        );
        c.remove_point(first.id).unwrap();
        assert_eq!(c.instance_by_id(inst.id).unwrap().current_point_id, None);
        assert_eq!(c.list_points(Some(inst.id)).unwrap(), vec![third]);
    }
}

fn snapshot_of(v: &VolumeRow, name: &str, base: Option<Uuid>) -> Snapshot {
    Snapshot {
        id: Uuid::new_v4(),
        name: name.into(),
        account_id: v.account_id,
        volume_id: v.id,
        volume: v.name.clone(),
        zone: v.zone.clone(),
        state: SnapshotState::BackingUp,
        size_bytes: v.size_bytes,
        consistency: "crash".into(),
        base_id: base,
        progress_done: 0,
        progress_total: 0,
        written_bytes: None,
        stored_bytes: None,
        new_bytes: None,
        read_bytes: None,
        chunk_count: None,
        dedup_ratio: None,
        error: None,
        policy_id: None,
        expires_at: None,
        created_at: now(),
        completed_at: None,
        verified_at: None,
        protected: false,
        deleted_at: None,
        purge_after: None,
    }
}

#[test]
fn one_backup_per_volume_references_and_bases() {
    for (c, admin, zone) in catalogs_with_zone() {
        let v = volume_row(admin.id, &zone, "db");
        c.insert_volume(&v).unwrap();
        let first = snapshot_of(&v, "s1", None);
        assert!(c.insert_snapshot(&first).unwrap());
        assert!(
            !c.insert_snapshot(&snapshot_of(&v, "s2", None)).unwrap(),
            "a second backup of the volume is refused while one runs"
        );
        c.record_snapshot_chunks(
            first.id,
            &[[1; 32], [2; 32]],
            &[([1; 32], 100), ([2; 32], 50)],
        )
        .unwrap();
        let stats = BackupStats {
            chunk_count: 2,
            positions: 3,
            stored_bytes: c.snapshot_stored_bytes(first.id).unwrap(),
            ..Default::default()
        };
        assert_eq!(stats.stored_bytes, 150);
        assert_eq!(c.snapshot_backed_up(first.id, v.id, &stats).unwrap(), None);
        assert_eq!(c.volume_snapshot_base(v.id).unwrap(), Some(first.id));
        let shown = c.snapshot(admin.id, "s1").unwrap();
        assert_eq!(shown.state, SnapshotState::BackedUp);
        assert_eq!(shown.dedup_ratio, Some(1.5));

        // The next one is incremental to the first, which cannot go meanwhile.
        let second = snapshot_of(&v, "s2", Some(first.id));
        assert!(c.insert_snapshot(&second).unwrap());
        assert!(c.snapshot_is_running_base(first.id).unwrap());
        assert!(
            !c.start_snapshot_purge(first.id).unwrap(),
            "the base of a running backup is not deleted"
        );
        assert_eq!(
            c.snapshot_by_id(first.id).unwrap().state,
            SnapshotState::BackedUp
        );
        c.record_snapshot_chunks(second.id, &[[2; 32], [3; 32]], &[([3; 32], 10)])
            .unwrap();
        let (live, ids) = c.live_references().unwrap();
        assert_eq!(live.len(), 3);
        assert_eq!(ids.len(), 2);
        assert_eq!(
            c.snapshot_backed_up(second.id, v.id, &BackupStats::default())
                .unwrap(),
            Some(first.id),
            "the previous base is returned, for its tag to go"
        );
        assert!(!c.snapshot_is_running_base(first.id).unwrap());

        // A verdict never lands over a delete that started meanwhile.
        use reprise_core::lifecycle::snapshot::{DAMAGED, VERIFIED};
        assert!(c.start_snapshot_purge(first.id).unwrap());
        assert!(!c.settle_snapshot(first.id, &DAMAGED, Some("x")).unwrap());
        assert!(!c.settle_snapshot(first.id, &VERIFIED, None).unwrap());
        let s = c.snapshot_by_id(first.id).unwrap();
        assert_eq!((s.state, s.error), (SnapshotState::Destroying, None));
        assert!(c
            .settle_snapshot(second.id, &DAMAGED, Some("chunk missing"))
            .unwrap());
        assert!(c.settle_snapshot(second.id, &VERIFIED, None).unwrap());

        // Removing the first leaves the second's references whole.
        c.remove_snapshot(first.id).unwrap();
        let (live, _) = c.live_references().unwrap();
        assert_eq!(live, [[2u8; 32], [3u8; 32]].into_iter().collect());
        c.remove_snapshot(second.id).unwrap();
        assert_eq!(c.volume_snapshot_base(v.id).unwrap(), None);
        assert!(c.list_snapshots(None).unwrap().is_empty());
    }
}

#[test]
fn a_postgres_catalog_serves_one_daemon_at_a_time() {
    let Some(url) = testing::postgres_url() else {
        return;
    };
    let url = testing::fresh_postgres_url(&url);
    let first = Catalog::connect(&url, "local").unwrap();
    assert_eq!(first.engine(), "postgres");
    first.create_account("a", false).unwrap();
    let refused = Catalog::connect(&url, "local")
        .err()
        .expect("a second daemon");
    assert_eq!(refused.code, "catalog_in_use", "{}", refused.message);
    assert!(!refused.message.contains('@'), "{}", refused.message);
    // A daemon that stops closes its catalog: the next one takes it.
    first.close();
    let e = first.list_accounts().unwrap_err();
    assert_eq!(e.code, "catalog_unavailable", "closed");
    let again = Catalog::connect(&url, "local").unwrap();
    assert_eq!(again.schema_version().unwrap(), migrations::LATEST);
    assert_eq!(again.list_accounts().unwrap().len(), 1, "kept");
}

/// A key found is remembered a moment: a change made through the same
/// catalog is seen at once, one made by another daemon within
/// `KEY_FRESH`.
#[test]
fn a_key_revoked_by_another_daemon_stops_working_within_its_freshness() {
    let Some(url) = testing::postgres_url() else {
        return;
    };
    let url = testing::fresh_postgres_url(&url);
    let h1 = Catalog::connect(&url, "h1").unwrap();
    let h2 = Catalog::connect(&url, "h2").unwrap();
    let made = h1.create_account("a", false).unwrap();
    let (_, key) = h2.account_by_key(&made.api_key).unwrap().unwrap();
    h1.put_plan(&reprise_core::plan::Plan {
        name: "small".into(),
        limits: Default::default(),
    })
    .unwrap();
    h2.set_account_plan(made.account.id, Some("small")).unwrap();
    let (seen, _) = h2.account_by_key(&made.api_key).unwrap().unwrap();
    assert_eq!(
        seen.plan.as_deref(),
        Some("small"),
        "changed here: seen at once"
    );
    h1.revoke_key(key).unwrap();
    assert!(h1.account_by_key(&made.api_key).unwrap().is_none());
    let revoked = std::time::Instant::now();
    while h2.account_by_key(&made.api_key).unwrap().is_some() {
        assert!(
            revoked.elapsed() < KEY_FRESH + std::time::Duration::from_millis(500),
            "h2 still takes the key {:?} after its revocation",
            revoked.elapsed()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn both_engines_number_their_migrations_alike() {
    assert_eq!(migrations::SQLITE.len(), migrations::POSTGRES.len());
}

/// The server cuts the daemon's connection: the statement in flight fails
/// as unavailable and changes nothing; the next one connects again.
#[test]
fn a_lost_postgres_connection_fails_one_statement_then_reconnects() {
    let Some(server) = testing::postgres_url() else {
        return;
    };
    let url = testing::fresh_postgres_url(&server);
    let c = Catalog::connect(&url, "local").unwrap();
    c.create_account("a", false).unwrap();
    let name = url.rsplit("application_name=").next().unwrap().to_string();
    let mut admin = ::postgres::Client::connect(&server, ::postgres::NoTls).unwrap();
    let cut = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            &[&name],
        )
        .unwrap();
    assert_eq!(cut.len(), 1, "the catalog's one connection");
    let e = c.create_account("b", false).unwrap_err();
    assert_eq!(e.code, "catalog_unavailable", "{}", e.message);
    let names: Vec<String> = c
        .list_accounts()
        .unwrap()
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(
        names,
        ["a"],
        "reconnected, and the failed write left nothing"
    );

    // Cut inside a transaction: the statements after the cut fail too
    // (they would otherwise run alone on the new connection), and so does
    // the commit; nothing of the transaction stays.
    let insert = "INSERT INTO plans (name, limits, created_at) VALUES (?1, '{}', '2026-01-01')";
    {
        let conn = c.conn();
        let tx = conn.transaction().unwrap();
        tx.execute(insert, db::params!["first"]).unwrap();
        let cut = admin
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
                &[&name],
            )
            .unwrap();
        assert_eq!(cut.len(), 1);
        assert!(tx.execute(insert, db::params!["second"]).is_err());
        let e = tx.execute(insert, db::params!["third"]).unwrap_err();
        assert_eq!(e.kind, db::DbErrorKind::Unavailable, "{e}");
        assert!(tx.commit().is_err(), "the commit says it did not commit");
    }
    assert!(c.list_plans().unwrap().is_empty(), "none of it stayed");
}

/// A template is unseen until its objects are written, its chunks count
/// for garbage collection from the start, and one a crash left unfinished
/// is found.
#[test]
fn a_template_is_seen_only_once_ready() {
    for (c, admin, _) in catalogs_with_zone() {
        let t = Template {
            id: Uuid::new_v4(),
            name: "golden".into(),
            account_id: admin.id,
            source_snapshot_id: None,
            source_snapshot: "upload:disk.raw".into(),
            size_bytes: 1 << 30,
            chunk_count: 1,
            created_at: now(),
            purge_after: None,
        };
        c.insert_template(&t, &[[9; 32]]).unwrap();
        assert_eq!(
            c.template(admin.id, "golden").unwrap_err().code,
            "template_not_found"
        );
        assert!(c.list_templates(admin.id).unwrap().is_empty());
        assert_eq!(c.unfinished_templates().unwrap(), [t.id]);
        let (live, _) = c.live_references().unwrap();
        assert!(
            live.contains(&[9; 32]),
            "its chunk is live while it is made"
        );
        c.template_ready(t.id).unwrap();
        assert_eq!(c.template(admin.id, "golden").unwrap(), t);
        assert!(c.unfinished_templates().unwrap().is_empty());
    }
}

#[test]
fn hosts_register_beat_and_own_what_lives_on_them() {
    for (c, admin, zone) in catalogs_with_zone() {
        // A row made before hosts existed goes to the first host that starts.
        let mut old = volume_row(admin.id, &zone, "old");
        old.host = String::new();
        c.insert_volume(&old).unwrap();
        let first = c.register_host("local", "http://127.0.0.1:1", &[]).unwrap();
        assert_eq!(c.volume(admin.id, "old").unwrap().host, "local");
        let mut elsewhere = volume_row(admin.id, &zone, "elsewhere");
        elsewhere.host = "host2".into();
        c.insert_volume(&elsewhere).unwrap();
        c.register_host("host2", "http://127.0.0.1:2", &["zone1".to_string()])
            .unwrap();
        // Only this host's rows are its own.
        let local: Vec<String> = c
            .local_volumes()
            .unwrap()
            .into_iter()
            .map(|v| v.name)
            .collect();
        assert_eq!(local, vec!["old"]);
        let usage = c.host_usage().unwrap();
        assert_eq!(usage["host2"].volumes, 1);
        assert_eq!(usage["host2"].volume_bytes, 1 << 30);
        let beat = c.heartbeat("local").unwrap();
        let hosts = c.list_hosts().unwrap();
        assert_eq!(hosts.len(), 2);
        assert_eq!(hosts[0].name, "host2");
        assert_eq!(hosts[0].zones, vec!["zone1".to_string()]);
        assert_eq!(hosts[1].heartbeat_at, beat);
        assert_eq!(hosts[1].started_at, first.started_at);
        assert_eq!(c.host("nope").unwrap_err().code, "host_not_found");
    }
}

#[test]
fn a_lease_is_taken_from_its_holder_only_once_expired() {
    use std::time::Duration;
    for (c, _, _) in catalogs_with_zone() {
        assert!(c
            .take_lease("region", "h1", Duration::from_millis(300))
            .unwrap());
        assert!(!c
            .take_lease("region", "h2", Duration::from_secs(5))
            .unwrap());
        // Its holder renews it.
        assert!(c
            .take_lease("region", "h1", Duration::from_millis(300))
            .unwrap());
        assert_eq!(c.lease("region").unwrap().unwrap().0, "h1");
        std::thread::sleep(Duration::from_millis(400));
        assert!(c
            .take_lease("region", "h2", Duration::from_secs(5))
            .unwrap());
        assert!(!c
            .take_lease("region", "h1", Duration::from_secs(5))
            .unwrap());
        assert_eq!(c.lease("region").unwrap().unwrap().0, "h2");
        assert_eq!(c.lease("other").unwrap(), None);
        // Periodic work: first due one period after it is asked for, then
        // claimed once per period, by one claimer.
        assert!(!c.claim_due("gc", "h1", Duration::from_millis(300)).unwrap());
        assert!(!c.claim_due("gc", "h2", Duration::from_millis(300)).unwrap());
        std::thread::sleep(Duration::from_millis(400));
        assert!(c.claim_due("gc", "h2", Duration::from_millis(300)).unwrap());
        assert!(!c.claim_due("gc", "h1", Duration::from_millis(300)).unwrap());
        // Spaced work: the first at once, then at most once per spacing.
        let spacing = Duration::from_millis(300);
        assert!(c.claim_spaced("sweep", spacing).unwrap());
        assert!(!c.claim_spaced("sweep", spacing).unwrap());
        std::thread::sleep(Duration::from_millis(400));
        assert!(c.claim_spaced("sweep", spacing).unwrap());
        assert!(!c.claim_spaced("sweep", spacing).unwrap());
    }
}

#[test]
fn a_sweep_cut_short_stays_marked_until_one_taker_ends_it() {
    for (c, _, _) in catalogs_with_zone() {
        c.sweep_began("h1").unwrap();
        c.sweep_began("h2").unwrap();
        assert!(c.sweep_ended("h2").unwrap());
        // h1 never ended its sweep: it is marked, and taken over once.
        assert_eq!(c.sweeps_cut_short().unwrap(), ["h1"]);
        assert!(c.sweep_ended("h1").unwrap());
        assert!(!c.sweep_ended("h1").unwrap());
        assert!(c.sweeps_cut_short().unwrap().is_empty());
        // The leader's own lease is not a sweep.
        c.take_lease("region-leader", "h1", std::time::Duration::from_secs(5))
            .unwrap();
        assert!(c.sweeps_cut_short().unwrap().is_empty());
    }
}

#[test]
fn a_policy_run_is_claimed_once_and_only_on_its_host() {
    use chrono::Duration;
    for (c, admin, zone) in catalogs_with_zone() {
        c.register_host("local", "http://127.0.0.1:1", &[]).unwrap();
        let v = volume_row(admin.id, &zone, "db");
        c.insert_volume(&v).unwrap();
        let mut elsewhere = volume_row(admin.id, &zone, "far");
        elsewhere.host = "host2".into();
        c.insert_volume(&elsewhere).unwrap();
        let t0 = now();
        let policy = |name: &str, volume: Uuid| Policy {
            id: Uuid::new_v4(),
            name: name.into(),
            account_id: admin.id,
            volume_id: Some(volume),
            volume: None,
            instance_id: None,
            instance: None,
            schedule: "hourly 00".into(),
            interval_type: None,
            cloudstack_schedule: None,
            timezone: "UTC".into(),
            keep: reprise_core::retention::Keep {
                last: 2,
                ..Default::default()
            },
            quiesce: None,
            memory: false,
            enabled: true,
            next_run_at: Some(t0),
            last_run_at: None,
            last_result: None,
            created_at: t0,
        };
        let p = policy("db-hourly", v.id);
        c.insert_policy(&p).unwrap();
        c.insert_policy(&policy("far-hourly", elsewhere.id))
            .unwrap();
        let later = t0 + Duration::seconds(1);
        // Only this host's policy is due here.
        let due = c.due_policies(later).unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(
            (due[0].name.as_str(), due[0].volume.as_deref()),
            ("db-hourly", Some("db"))
        );
        assert_eq!(due[0].keep.last, 2);
        let next = Some(t0 + Duration::hours(1));
        assert!(c.claim_policy_run(p.id, t0, later, next).unwrap());
        // A second claim of the same slot (another tick, another daemon) loses.
        assert!(!c.claim_policy_run(p.id, t0, later, next).unwrap());
        assert!(
            c.due_policies(later).unwrap().is_empty(),
            "running, and not due"
        );
        c.end_interrupted_policy_runs().unwrap();
        let after = c.policy(admin.id, "db-hourly").unwrap();
        assert_eq!(after.next_run_at, next);
        assert_eq!(after.last_run_at, Some(later));
        assert!(after.last_result.unwrap().starts_with("interrupted"));
        c.policy_run_ended(p.id, "took snapshot 's1'").unwrap();
        assert_eq!(c.list_policies(admin.id, Some(v.id)).unwrap().len(), 1);
        // A volume's policies go with it.
        c.delete_volume(v.id).unwrap();
        assert_eq!(
            c.policy(admin.id, "db-hourly").unwrap_err().code,
            "policy_not_found"
        );
    }
}

#[test]
fn a_job_keeps_at_most_a_few_kilobytes_of_any_text() {
    use crate::jobs::{capped, JOB_TEXT_MAX};
    // Two-byte characters: the cut falls inside one and moves back.
    let huge = "é".repeat(3 << 20);
    let cut = capped(&huge);
    assert!(cut.len() < JOB_TEXT_MAX + 64, "{}", cut.len());
    assert!(cut.ends_with(&format!("({} more bytes cut)", huge.len() - JOB_TEXT_MAX)));
    assert_eq!(capped("short"), "short");
    for (c, admin, _) in catalogs_with_zone() {
        let job = Job {
            id: Uuid::new_v4(),
            account_id: admin.id,
            kind: "point.create".into(),
            target_kind: "instance".into(),
            target_id: Uuid::new_v4(),
            target_name: "vm".into(),
            state: JobState::Running,
            progress_done: 0,
            progress_total: 1,
            error: None,
            log: vec![],
            host: "local".into(),
            created_at: now(),
            started_at: None,
            finished_at: None,
        };
        c.insert_job(&job).unwrap();
        c.job_log(job.id, &huge).unwrap();
        c.job_finished(
            job.id,
            JobState::Failed,
            Some(&Error::unavailable("guest_agent_error", huge.clone())),
        )
        .unwrap();
        let got = c.job(Some(admin.id), &job.id.to_string()).unwrap();
        assert!(got.log[0].message.len() < JOB_TEXT_MAX + 64);
        assert!(got.error.unwrap().message.len() < JOB_TEXT_MAX + 64);
    }
}

/// The generation advances with every snapshot and template recorded;
/// a catalog marked behind stays so until it recovers; the identity
/// survives as the catalog's own.
#[test]
fn the_generation_advances_with_what_the_store_records() {
    for (c, admin, zone) in catalogs_with_zone() {
        let first = c.identity().unwrap();
        assert_eq!(first.generation, 0);
        assert_eq!(c.identity().unwrap().catalog_id, first.catalog_id);
        let v = volume_row(admin.id, &zone, "db");
        c.insert_volume(&v).unwrap();
        let s = snapshot_of(&v, "s1", None);
        assert!(c.insert_snapshot(&s).unwrap());
        assert_eq!(c.record_snapshot_chunks(s.id, &[[1; 32]], &[]).unwrap(), 1);
        let t = Template {
            id: Uuid::new_v4(),
            name: "t1".into(),
            account_id: admin.id,
            source_snapshot_id: Some(s.id),
            source_snapshot: "s1".into(),
            size_bytes: 1 << 30,
            chunk_count: 1,
            created_at: now(),
            purge_after: None,
        };
        assert_eq!(c.insert_template(&t, &[[1; 32]]).unwrap(), 2);
        c.mark_behind("the store saw 9").unwrap();
        c.mark_behind("a later reason does not replace the first")
            .unwrap();
        let behind = c.identity().unwrap();
        assert_eq!(behind.behind.as_deref(), Some("the store saw 9"));
        let first_region = Uuid::new_v4();
        c.set_region(first_region).unwrap();
        c.set_region(Uuid::new_v4()).unwrap();
        assert_eq!(
            c.identity().unwrap().region_id,
            Some(first_region),
            "the first stays"
        );
        let region = Uuid::new_v4();
        let after = c.recovered(region, 10).unwrap();
        assert_eq!(
            (after.generation, after.region_id, after.behind),
            (10, Some(region), None)
        );
        assert_eq!(after.catalog_id, first.catalog_id);
        assert_eq!(c.recovered(region, 3).unwrap().generation, 10, "never back");
    }
}

/// Rows brought back from the store: once each, under a free name, with
/// their chunk references; accounts re-created without keys.
#[test]
fn recovered_rows_are_added_once_under_free_names() {
    for (c, admin, zone) in catalogs_with_zone() {
        let gone = Uuid::new_v4();
        assert_eq!(
            c.recover_account(gone, "alice", None).unwrap().as_deref(),
            Some("alice")
        );
        assert_eq!(c.recover_account(gone, "alice", None).unwrap(), None);
        let twin = Uuid::new_v4();
        let renamed = c.recover_account(twin, "alice", None).unwrap().unwrap();
        assert!(renamed.starts_with("alice-"), "{renamed}");
        assert!(c.list_keys(gone).unwrap().is_empty(), "no key");
        let v = volume_row(admin.id, &zone, "db");
        let taken = snapshot_of(&v, "s1", None);
        c.insert_volume(&v).unwrap();
        assert!(c.insert_snapshot(&taken).unwrap());
        let mut found = snapshot_of(&v, "s1", None);
        found.state = SnapshotState::BackedUp;
        let row = RecoveredSnapshot {
            snapshot: found.clone(),
            positions: 4,
            chunks: vec![[5; 32], [6; 32]],
        };
        assert!(c.recover_snapshot(&row).unwrap());
        assert!(!c.recover_snapshot(&row).unwrap(), "idempotent");
        let back = c.snapshot_by_id(found.id).unwrap();
        assert_eq!(back.state, SnapshotState::BackedUp);
        assert!(back.name.starts_with("s1-"), "{}", back.name);
        let (live, ids) = c.live_references().unwrap();
        assert!(live.contains(&[5; 32]) && live.contains(&[6; 32]));
        assert!(ids.contains(&found.id));
        assert!(c.stored_ids().unwrap().contains(&found.id));
    }
}

/// A dump restores into a catalog made anew: the tenant and its key come
/// back, its volume lands in this catalog's zone of the same name, the
/// dumped admin's rows go to this admin; a second restore is refused.
#[test]
fn a_dump_restores_into_a_catalog_made_anew() {
    let engines: Vec<_> = testing::catalogs()
        .into_iter()
        .zip(testing::catalogs())
        .collect();
    for ((engine, old), (_, new)) in engines {
        let admin = old.create_account("admin", true).unwrap().account;
        let zone = old.create_zone(admin.id, "zone1", "/srv/zone1").unwrap();
        let alice = old.create_account("alice", false).unwrap();
        let v = volume_row(alice.account.id, &zone, "db");
        old.insert_volume(&v).unwrap();
        let mine = volume_row(admin.id, &zone, "admins");
        old.insert_volume(&mine).unwrap();
        let dump = old.dump().unwrap();

        let new_admin = new.create_account("admin", true).unwrap().account;
        let new_zone = new
            .create_zone(new_admin.id, "zone1", "/srv/zone1")
            .unwrap();
        let restored = new.restore_dump(&dump).unwrap();
        let volumes = restored.tables.iter().find(|t| t.0 == "volumes").unwrap();
        assert_eq!((volumes.1, volumes.2), (2, 0), "{engine}: {restored:?}");
        let (found, _) = new.account_by_key(&alice.api_key).unwrap().unwrap();
        assert_eq!(found.id, alice.account.id, "{engine}: the key works again");
        let back = new.volume(alice.account.id, "db").unwrap();
        assert_eq!(back.zone_id, new_zone.id, "{engine}: this catalog's zone1");
        assert!(
            new.volume(new_admin.id, "admins").is_ok(),
            "{engine}: to this admin"
        );
        let e = new.restore_dump(&dump).unwrap_err();
        assert_eq!(e.code, "catalog_not_empty", "{engine}");
        let mut newer = dump.clone();
        newer["schema_version"] = serde_json::json!(999);
        let e = new.restore_dump(&newer).unwrap_err();
        assert_eq!(e.code, "backup_invalid", "{engine}");
    }
}
