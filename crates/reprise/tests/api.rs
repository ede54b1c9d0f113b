//! The HTTP API without a running guest: keys, accounts, zones, volumes,
//! bad input, the OpenAPI document, metrics and restarts of the daemon.

use reprise_client::Client;
use reprise_core::model::*;
use reprise_core::ErrorKind;
use reprise_testing::*;
use serde_json::json;

fn err_of<T: std::fmt::Debug>(r: reprise_core::Result<T>) -> reprise_core::Error {
    r.expect_err("the request must be refused")
}

fn volumes(c: &Client) -> Vec<Volume> {
    c.get("/api/v1/volumes").unwrap()
}

#[test]
fn every_call_needs_a_valid_key() {
    let d = TestDaemon::start();
    let anonymous = Client::new(&d.url, None);
    let e = err_of(anonymous.get::<Vec<Volume>>("/api/v1/volumes"));
    assert_eq!(
        (e.kind, e.code.as_str()),
        (ErrorKind::Unauthorized, "api_key_missing")
    );
    let wrong = Client::new(&d.url, Some("rpk_0000".into()));
    let e = err_of(wrong.get::<Vec<Volume>>("/api/v1/volumes"));
    assert_eq!(e.code, "api_key_invalid");
    // Health and the API description are public.
    let h: serde_json::Value = anonymous.get("/api/v1/health").unwrap();
    assert_eq!(h["status"], "ok");
    let me: Account = d.admin().get("/api/v1/whoami").unwrap();
    assert!(me.admin);
}

#[test]
fn admin_key_is_written_for_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let d = TestDaemon::start();
    let mode = std::fs::metadata(d.config.admin_key_path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // The catalog holds no key in clear (on PostgreSQL, the catalog's own
    // tests read the stored hashes).
    if d.config.catalog.url.is_none() {
        let db = std::fs::read(d.config.catalog_path()).unwrap();
        assert!(!db
            .windows(d.admin_key.len())
            .any(|w| w == d.admin_key.as_bytes()));
    }
}

#[test]
fn accounts_never_see_each_other() {
    let d = TestDaemon::start();
    let alice = d.account("alice");
    let bob = d.account("bob");
    let v: Volume = alice
        .post("/api/v1/volumes", &json!({"name": "db", "size": "64M"}))
        .unwrap();
    assert!(volumes(&bob).is_empty());
    for path in [
        format!("/api/v1/volumes/{}", v.id),
        "/api/v1/volumes/db".to_string(),
    ] {
        let e = err_of(bob.get::<Volume>(&path));
        assert_eq!(
            (e.kind, e.code.as_str()),
            (ErrorKind::NotFound, "volume_not_found")
        );
    }
    assert_eq!(
        err_of(bob.delete(&format!("/api/v1/volumes/{}", v.id))).code,
        "volume_not_found"
    );
    // Bob may use the same name: names are unique per account.
    let _: Volume = bob
        .post("/api/v1/volumes", &json!({"name": "db", "size": "64M"}))
        .unwrap();
    assert_eq!(volumes(&alice).len(), 1);
    // Non-admins cannot administer the region.
    let e =
        err_of(alice.post::<_, AccountCreated>("/api/v1/accounts", &json!({"name": "mallory"})));
    assert_eq!(
        (e.kind, e.code.as_str()),
        (ErrorKind::Forbidden, "admin_only")
    );
    let e = err_of(alice.post::<_, Zone>("/api/v1/zones", &json!({"name": "z9"})));
    assert_eq!(e.code, "admin_only");
    let seen: Vec<Account> = alice.get("/api/v1/accounts").unwrap();
    assert_eq!(seen.len(), 1);
    // Jobs are private too.
    let e = err_of(bob.job(&uuid_like()));
    assert_eq!(e.code, "job_not_found");
}

fn uuid_like() -> String {
    "00000000-0000-4000-8000-000000000000".into()
}

#[test]
fn volumes_are_clean_qcow2_with_64k_clusters_and_only_grow() {
    let d = TestDaemon::start();
    let c = d.admin();
    let v: Volume = c
        .post("/api/v1/volumes", &json!({"name": "data", "size": "512M"}))
        .unwrap();
    assert_eq!(
        (v.state, v.kind, v.size_bytes),
        (VolumeState::Ready, VolumeKind::Data, 512 << 20)
    );
    assert!(v
        .path
        .starts_with(&d.config.default_zone_dir().to_string_lossy().into_owned()));
    let info = qemu_img_info(&v.path);
    assert_eq!(info["format"], "qcow2");
    assert_eq!(info["cluster-size"], 65536);
    assert_eq!(info["virtual-size"], 512u64 << 20);
    assert_eq!(qemu_img_check(&v.path), 0);

    let grown: Volume = c
        .post("/api/v1/volumes/data/resize", &json!({"size": "1G"}))
        .unwrap();
    assert_eq!(grown.size_bytes, 1 << 30);
    assert_eq!(qemu_img_info(&v.path)["virtual-size"], 1u64 << 30);

    let e = err_of(c.post::<_, Volume>("/api/v1/volumes/data/resize", &json!({"size": "512M"})));
    assert_eq!(e.code, "size_not_larger");
    assert!(e.message.contains("only grow"), "{}", e.message);
    assert_eq!(
        qemu_img_info(&v.path)["virtual-size"],
        1u64 << 30,
        "a refused shrink changes nothing"
    );

    c.delete("/api/v1/volumes/data").unwrap();
    assert!(!std::path::Path::new(&v.path).exists());
    assert!(volumes(&c).is_empty());
}

#[test]
fn bad_input_is_named_and_changes_nothing() {
    let d = TestDaemon::start();
    let c = d.admin();
    let _: Volume = c
        .post("/api/v1/volumes", &json!({"name": "db", "size": "64M"}))
        .unwrap();
    let files = || {
        std::fs::read_dir(d.config.default_zone_dir())
            .unwrap()
            .count()
    };
    let before = (volumes(&c), files());
    let cases = [
        (json!({"name": "x", "size": "ten"}), "size_invalid", "'ten'"),
        (json!({"name": "x", "size": "10Q"}), "size_invalid", "'10Q'"),
        (json!({"name": "x", "size": "0"}), "size_invalid", "zero"),
        (json!({"name": "x", "size": "1000"}), "size_invalid", "512"),
        (json!({"name": "x", "size": "65T"}), "size_invalid", "limit"),
        (json!({"name": "db", "size": "64M"}), "name_taken", "taken"),
        (json!({"name": "a b", "size": "64M"}), "name_invalid", "' '"),
        (
            json!({"name": "x", "size": "64M", "zone": "nowhere"}),
            "zone_not_found",
            "nowhere",
        ),
        (json!({"name": "x"}), "body_invalid", "size"),
        (
            json!({"name": "x", "size": "1G", "colour": "red"}),
            "body_invalid",
            "colour",
        ),
    ];
    for (body, code, words) in cases {
        let e = err_of(c.post::<_, Volume>("/api/v1/volumes", &body));
        assert_eq!(e.code, code, "{body}");
        assert!(e.message.contains(words), "{body}: {}", e.message);
    }
    let e = err_of(c.get::<Volume>("/api/v1/volumes/nope"));
    assert_eq!(
        (e.kind, e.code.as_str()),
        (ErrorKind::NotFound, "volume_not_found")
    );
    assert!(e.message.contains("'nope'"));
    let e = err_of(c.post::<_, Volume>("/api/v1/volumes/db/detach", &json!({})));
    assert_eq!(e.code, "volume_not_attached");
    let e = err_of(c.post::<_, Volume>("/api/v1/volumes/db/attach", &json!({"instance": "ghost"})));
    assert_eq!(e.code, "instance_not_found");
    let e = err_of(c.get::<serde_json::Value>("/api/v1/nothing-here"));
    assert_eq!(e.code, "route_not_found");
    assert_eq!((volumes(&c), files()), before, "nothing changed");
}

#[test]
fn bad_instance_requests_are_named_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = TestDaemon::start_with(|c| c.import_dirs.push(dir.path().into()));
    let c = d.admin();
    let g = guest();
    let kernel = g.kernel.to_string_lossy().into_owned();
    let vdi = dir.path().join("disk.vdi");
    assert!(std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "vdi", vdi.to_str().unwrap(), "64M"])
        .status()
        .unwrap()
        .success());
    let cases = [
        (json!({"name": "vm"}), "root_missing"),
        (
            json!({"name": "vm", "root_size": "1G", "image": "/x.img"}),
            "root_conflict",
        ),
        (json!({"name": "vm", "root_size": "big"}), "size_invalid"),
        (
            json!({"name": "vm", "root_size": "1G", "cpus": 0}),
            "cpus_invalid",
        ),
        (
            json!({"name": "vm", "root_size": "1G", "memory": "1M"}),
            "memory_invalid",
        ),
        (
            json!({"name": "vm", "kernel": "/no/such/kernel"}),
            "host_path_refused",
        ),
        (
            json!({"name": "vm", "kernel": "relative/kernel"}),
            "host_path_refused",
        ),
        (
            json!({"name": "vm", "append": "quiet", "root_size": "1G"}),
            "kernel_missing",
        ),
        (
            json!({"name": "vm", "kernel": kernel, "data_volumes": ["ghost"]}),
            "volume_not_found",
        ),
        (
            json!({"name": "vm", "image": vdi.to_str().unwrap()}),
            "image_format_unsupported",
        ),
        (
            json!({"name": "vm", "image": "/no/such.img"}),
            "host_path_refused",
        ),
        (
            json!({"name": "vm", "kernel": kernel, "zone": "nowhere"}),
            "zone_not_found",
        ),
    ];
    for (body, code) in cases {
        let e = err_of(c.start_job("/api/v1/instances", &body));
        assert_eq!(e.code, code, "{body}: {}", e.message);
    }
    let e = err_of(c.start_job("/api/v1/instances/ghost/start", &json!({})));
    assert_eq!(e.code, "instance_not_found");
    let list: Vec<Instance> = c.get("/api/v1/instances").unwrap();
    assert!(list.is_empty());
    assert!(volumes(&c).is_empty());
}

#[test]
fn an_image_with_a_backing_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = TestDaemon::start_with(|c| c.import_dirs.push(dir.path().into()));
    let base = dir.path().join("base.qcow2");
    let top = dir.path().join("top.qcow2");
    let run = |args: &[&str]| {
        assert!(std::process::Command::new("qemu-img")
            .args(args)
            .status()
            .unwrap()
            .success())
    };
    run(&["create", "-q", "-f", "qcow2", base.to_str().unwrap(), "64M"]);
    run(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        base.to_str().unwrap(),
        "-F",
        "qcow2",
        top.to_str().unwrap(),
    ]);
    let e = err_of(d.admin().start_job(
        "/api/v1/instances",
        &json!({"name": "vm", "image": top.to_str().unwrap(), "no_start": true}),
    ));
    assert_eq!(e.code, "image_unsafe");
    assert!(e.message.contains("backing file"));
}

#[test]
fn an_instance_from_an_image_and_a_missing_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let d = TestDaemon::start_with(|c| {
        c.qemu.system = "/nonexistent/qemu-system-x86_64".into();
        c.import_dirs.push(dir.path().into());
    });
    let c = d.admin();
    let raw = dir.path().join("disk.raw");
    std::fs::write(&raw, vec![0xABu8; 1 << 20]).unwrap();
    // Starting needs QEMU: refused up front, nothing created.
    let e = err_of(c.start_job(
        "/api/v1/instances",
        &json!({"name": "vm", "image": raw.to_str().unwrap()}),
    ));
    assert_eq!(
        (e.kind, e.code.as_str()),
        (ErrorKind::Unavailable, "qemu_missing")
    );
    assert!(e.message.contains("/nonexistent/qemu-system-x86_64"));
    assert!(c
        .get::<Vec<Instance>>("/api/v1/instances")
        .unwrap()
        .is_empty());
    // Created stopped, the image is imported into a clean qcow2 root volume.
    run_job(
        &c,
        "/api/v1/instances",
        &json!({"name": "vm", "image": raw.to_str().unwrap(), "no_start": true}),
    );
    let vm = instance(&c, "vm");
    assert_eq!(vm.state, InstanceState::Stopped);
    let root: Volume = c
        .get(&format!("/api/v1/volumes/{}", vm.root_volume_id.unwrap()))
        .unwrap();
    assert_eq!(
        (root.kind, root.state, root.size_bytes),
        (VolumeKind::Root, VolumeState::Ready, 1 << 20)
    );
    assert_eq!(qemu_img_check(&root.path), 0);
    let same = std::process::Command::new("qemu-img")
        .args([
            "compare",
            "-q",
            "-f",
            "raw",
            "-F",
            "qcow2",
            raw.to_str().unwrap(),
            &root.path,
        ])
        .status()
        .unwrap();
    assert!(same.success(), "the root volume holds the image's bytes");
    let e = err_of(c.start_job("/api/v1/instances/vm/start", &json!({})));
    assert_eq!(e.code, "qemu_missing");
    assert_eq!(instance(&c, "vm").state, InstanceState::Stopped);
    let e = err_of(c.start_job("/api/v1/instances/vm/stop", &json!({})));
    assert_eq!(e.code, "instance_stopped");
    // The root volume goes with its instance, not on its own.
    let e = err_of(c.delete(&format!("/api/v1/volumes/{}", root.id)));
    assert_eq!(e.code, "volume_is_root");
    c.delete("/api/v1/instances/vm").unwrap();
    assert!(!std::path::Path::new(&root.path).exists());
    assert!(volumes(&c).is_empty());
}

#[test]
fn zones_have_their_own_storage() {
    let d = TestDaemon::start();
    let c = d.admin();
    let z: Zone = c.post("/api/v1/zones", &json!({"name": "zone2"})).unwrap();
    assert!(std::path::Path::new(&z.storage_dir).is_dir());
    let e = err_of(c.post::<_, Zone>("/api/v1/zones", &json!({"name": "zone2"})));
    assert_eq!(e.code, "name_taken");
    let e = err_of(c.post::<_, Zone>(
        "/api/v1/zones",
        &json!({"name": "z3", "storage_dir": "rel/dir"}),
    ));
    assert_eq!(e.code, "storage_dir_invalid");
    let zones: Vec<Zone> = c.get("/api/v1/zones").unwrap();
    assert_eq!(
        zones.iter().map(|z| z.name.as_str()).collect::<Vec<_>>(),
        ["zone1", "zone2"]
    );
    let v: Volume = c
        .post(
            "/api/v1/volumes",
            &json!({"name": "far", "size": "64M", "zone": "zone2"}),
        )
        .unwrap();
    assert!(v.path.starts_with(&z.storage_dir));
    let in_zone2: Vec<Volume> = c.get("/api/v1/volumes?zone=zone2").unwrap();
    let in_zone1: Vec<Volume> = c.get("/api/v1/volumes?zone=zone1").unwrap();
    assert_eq!((in_zone2.len(), in_zone1.len()), (1, 0));
}

/// The routes `http.rs` declares, read from its source.
fn routes_in_the_router() -> std::collections::BTreeSet<String> {
    let source = include_str!("../../reprise-daemon/src/http.rs");
    source
        .split(".route(")
        .skip(1)
        .filter_map(|rest| rest.trim_start().strip_prefix('"')?.split('"').next())
        .filter(|path| *path != "/metrics")
        .map(|path| format!("/api/v1{path}"))
        .collect()
}

#[test]
fn openapi_documents_every_route_the_daemon_serves() {
    let d = TestDaemon::start();
    let c = d.admin();
    let text = Client::new(&d.url, None)
        .get_text("/api/v1/openapi.json")
        .unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().unwrap();
    let documented: std::collections::BTreeSet<String> = paths.keys().cloned().collect();
    assert_eq!(
        documented,
        routes_in_the_router(),
        "documented paths = routed paths"
    );
    // Every error code is listed with its meaning.
    let codes = &doc["components"]["schemas"]["Error"]["properties"]["code"];
    assert!(codes["enum"]
        .as_array()
        .unwrap()
        .contains(&json!("volume_not_found")));
    assert!(codes["description"]
        .as_str()
        .unwrap()
        .contains("`object_corrupt` (Corrupt)"));
    // A standard validator accepts it (scripts/python-deps.sh installs it).
    let validator = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/python/bin/openapi-spec-validator");
    assert!(
        validator.exists(),
        "{} is missing: run scripts/python-deps.sh (scripts/test.sh does)",
        validator.display()
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &text).unwrap();
    let out = std::process::Command::new(&validator)
        .arg(file.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openapi-spec-validator: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            let url = format!(
                "{}{}",
                d.url,
                path.replace("{id}", "nothing")
                    .replace("{point}", "none")
                    .replace("{account}", "nobody")
                    .replace("{key}", "nokey")
                    .replace("{plan}", "noplan")
            );
            // A fresh connection per request: a pooled one that the server
            // closed after the previous answer would fail with an EOF.
            let req = ureq::AgentBuilder::new()
                .build()
                .request(&method.to_uppercase(), &url)
                .set("Authorization", &format!("Bearer {}", d.admin_key));
            let resp = if method == "post" {
                req.send_json(json!({}))
            } else {
                req.call()
            };
            let (status, body) = match resp {
                Ok(r) => (r.status(), String::new()),
                Err(ureq::Error::Status(s, r)) => (s, r.into_string().unwrap()),
                Err(e) => panic!("{method} {path}: {e}"),
            };
            assert_ne!(status, 405, "{method} {path} is documented but not routed");
            assert!(
                !body.contains("route_not_found"),
                "{method} {path} is documented but not routed"
            );
        }
    }
    let _ = c;
}

#[test]
fn metrics_count_requests_and_instances() {
    let d = TestDaemon::start();
    let _ = volumes(&d.admin());
    // The admin's key only.
    let e = err_of(Client::new(&d.url, None).get_text("/metrics"));
    assert_eq!(e.code, "api_key_missing");
    let e = err_of(d.account("alice").get_text("/metrics"));
    assert_eq!(
        (e.kind, e.code.as_str()),
        (ErrorKind::Forbidden, "admin_only")
    );
    let text = d.admin().get_text("/metrics").unwrap();
    assert!(
        text.contains("reprise_http_requests_total{method=\"GET\",status=\"200\"}"),
        "{text}"
    );
    assert!(
        text.contains("reprise_instances{state=\"Running\"} 0"),
        "{text}"
    );
}

#[test]
fn one_daemon_per_data_dir_and_restarts_fail_interrupted_jobs() {
    let mut d = TestDaemon::start();
    let mut second = d.config.clone();
    second.listen = "127.0.0.1:0".parse().unwrap();
    let e = d
        .block_on(reprise_daemon::start(second))
        .err()
        .expect("second daemon refused");
    assert_eq!(e.code, "data_dir_locked");

    // A job the daemon was running when it stopped.
    let admin: Account = d.admin().get("/api/v1/whoami").unwrap();
    let job = Job {
        id: uuid::Uuid::new_v4(),
        account_id: admin.id,
        kind: "instance.start".into(),
        target_kind: "instance".into(),
        target_id: uuid::Uuid::new_v4(),
        target_name: "vm".into(),
        state: JobState::Queued,
        progress_done: 0,
        progress_total: 1,
        error: None,
        log: vec![],
        host: "local".into(),
        created_at: chrono_now(),
        started_at: None,
        finished_at: None,
    };
    d.server().app.catalog.insert_job(&job).unwrap();
    d.server().app.catalog.job_started(job.id).unwrap();
    d.restart();
    let after = d.admin().job(&job.id.to_string()).unwrap();
    assert_eq!(after.state, JobState::Failed);
    assert_eq!(after.error.unwrap().code, "daemon_restarted");
    // The admin key survives restarts; the catalog is the same.
    assert_eq!(
        d.admin().get::<Account>("/api/v1/whoami").unwrap().id,
        admin.id
    );
}

fn chrono_now() -> chrono::DateTime<chrono::Utc> {
    reprise_catalog::now()
}

#[test]
fn the_region_key_is_made_once_kept_private_and_checked() {
    let mut d = TestDaemon::start();
    let key_file = d.config.data_dir.join("region.key");
    let text = std::fs::read_to_string(&key_file).expect("region key made at first start");
    assert_eq!(text.trim().len(), 64);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    d.stop();

    // Another key for the same store is refused before anything is read.
    std::fs::write(&key_file, format!("{}\n", "ab".repeat(32))).unwrap();
    let e = d
        .block_on(reprise_daemon::start(d.config.clone()))
        .err()
        .expect("a daemon with another key is refused");
    assert_eq!(e.code, "region_key_wrong", "{}", e.message);
    // So is a change of the encryption setting of an existing store.
    std::fs::write(&key_file, &text).unwrap();
    let mut encrypted = d.config.clone();
    encrypted.region.encrypt = true;
    let e = d
        .block_on(reprise_daemon::start(encrypted))
        .err()
        .expect("encryption cannot be switched on an existing store");
    assert_eq!(e.code, "config_invalid", "{}", e.message);
    std::fs::write(&key_file, "not hex").unwrap();
    let e = d
        .block_on(reprise_daemon::start(d.config.clone()))
        .err()
        .unwrap();
    assert!(e.message.contains("64 hex digits"), "{}", e.message);
    std::fs::write(&key_file, &text).unwrap();
    d.start_again();
}

#[test]
fn an_unreachable_region_store_stops_snapshots_not_the_daemon() {
    let started = std::time::Instant::now();
    let d = TestDaemon::start_with(|c| {
        c.region.store = "s3".into();
        c.region.s3 = Some(reprise_store::S3Config {
            endpoint: "http://127.0.0.1:9".into(),
            bucket: "nowhere".into(),
            region: "garage".into(),
            access_key_id: "GK00".into(),
            secret_access_key: "00".into(),
        });
    });
    eprintln!(
        "started in {:?} with the store unreachable",
        started.elapsed()
    );
    let c = d.admin();
    let v: Volume = c
        .post("/api/v1/volumes", &json!({"name": "v", "size": "16M"}))
        .unwrap();
    let job = c
        .start_job("/api/v1/snapshots", &json!({"volume": "v", "name": "s"}))
        .unwrap();
    let e = c
        .wait_job(
            &job.id.to_string(),
            std::time::Duration::from_secs(120),
            |_| {},
        )
        .unwrap_err();
    assert!(
        format!("{e:?}").contains("object_store_unavailable"),
        "{e:?}"
    );
    let s: Snapshot = c.get("/api/v1/snapshots/s").unwrap();
    assert_eq!(s.state, SnapshotState::Error);
    assert!(
        qemu_img_info(&v.path).get("snapshots").is_none(),
        "nothing was cut"
    );
    assert_eq!(
        c.get::<Volume>("/api/v1/volumes/v").unwrap().state,
        VolumeState::Ready
    );
}

/// The console's files are served without a key (they hold no data), with
/// a policy that allows only this origin's scripts and forbids framing; an
/// unknown file is a 404, and the API behind them still wants a key.
#[test]
fn the_console_is_served_beside_the_api() {
    let d = TestDaemon::start();
    let get = |path: &str| match ureq::get(&format!("{}{path}", d.url)).call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("GET {path}: {e}"),
    };
    let page = get("/");
    assert_eq!(page.status(), 200);
    assert_eq!(page.content_type(), "text/html");
    let policy = page.header("content-security-policy").unwrap().to_string();
    assert!(policy.contains("default-src 'self'") && policy.contains("frame-ancestors 'none'"));
    assert!(page.into_string().unwrap().contains("/console/console.js"));
    for (file, marker) in [
        ("console.js", "import { WORDS }"),
        ("i18n.js", "Copies instantanées"),
        ("console.css", "@media"),
    ] {
        let r = get(&format!("/console/{file}"));
        assert_eq!(r.status(), 200, "{file}");
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        assert!(r.into_string().unwrap().contains(marker), "{file}");
    }
    assert_eq!(get("/console/../../etc/passwd").status(), 404);
    assert_eq!(get("/console/nothing.js").status(), 404);
    assert_eq!(get("/api/v1/volumes").status(), 401);
}

/// What a crash leaves beside a volume (a restore's raw image, a revert's
/// copy) goes at the next start, and so does a template it left half-made;
/// the volume stays.
#[test]
fn a_crash_s_leftovers_beside_volumes_go_at_the_next_start() {
    let mut d = TestDaemon::start();
    let c = d.admin();
    let v: Volume = c
        .post("/api/v1/volumes", &json!({"name": "v", "size": "16M"}))
        .unwrap();
    d.stop();
    let leftovers = [
        format!("{}.restoring.raw", v.path),
        format!("{}.reverting.qcow2", v.path),
        format!("{}.reverting.qcow2.restoring.raw", v.path),
    ];
    for l in &leftovers {
        std::fs::write(l, b"half-made").unwrap();
    }
    // A template recorded, its manifest never written.
    let catalog = match &d.config.catalog.url {
        Some(url) => reprise_catalog::Catalog::connect(url, "local").unwrap(),
        None => reprise_catalog::Catalog::open(&d.config.catalog_path()).unwrap(),
    };
    let admin = catalog.account("admin").unwrap();
    let half = Template {
        id: uuid::Uuid::new_v4(),
        name: "half".into(),
        account_id: admin.id,
        source_snapshot_id: None,
        source_snapshot: "upload:x".into(),
        size_bytes: 1 << 20,
        chunk_count: 1,
        created_at: reprise_catalog::now(),
        purge_after: None,
    };
    catalog.insert_template(&half, &[[3; 32]]).unwrap();
    catalog.close();
    drop(catalog);
    d.start_again();
    assert!(
        d.server()
            .app
            .catalog
            .unfinished_templates()
            .unwrap()
            .is_empty(),
        "the unfinished template is forgotten"
    );
    for l in &leftovers {
        assert!(!std::path::Path::new(l).exists(), "{l} is still there");
    }
    assert_eq!(qemu_img_check(&v.path), 0, "the volume is intact");
    assert_eq!(
        c.get::<Volume>("/api/v1/volumes/v").unwrap().state,
        VolumeState::Ready
    );
}

/// A qcow2 metadata update cut by a crash or a power cut (an internal
/// snapshot made or deleted by `qemu-img snapshot`) leaves refcounts above
/// the references — leaks — and `COPIED` flags out of step with them, which
/// `qemu-img check` calls corrupt. The volumes of the jobs a start finds
/// interrupted are repaired; their data stays.
#[test]
fn the_qcow2_left_by_an_interrupted_job_is_repaired_at_the_next_start() {
    let mut d = TestDaemon::start();
    let c = d.admin();
    // A detached volume, and a stopped instance's root volume.
    let v: Volume = c
        .post("/api/v1/volumes", &json!({"name": "v", "size": "16M"}))
        .unwrap();
    let image = guest_dir().join("data.qcow2").display().to_string();
    let made = c
        .create_instance(&CreateInstance {
            name: "i".into(),
            image: Some(image),
            no_start: true,
            ..Default::default()
        })
        .unwrap();
    c.wait_job(
        &made.id.to_string(),
        std::time::Duration::from_secs(60),
        |_| {},
    )
    .unwrap();
    let root = c.volume("i-root").unwrap();
    let point = c
        .create_point(
            "i",
            &CreatePoint {
                name: Some("p".into()),
                ..Default::default()
            },
        )
        .unwrap();
    c.wait_job(
        &point.id.to_string(),
        std::time::Duration::from_secs(60),
        |_| {},
    )
    .unwrap();
    let point = c.point("i", "p").unwrap();
    let wrote = std::process::Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "write -P 0x5a 0 4M", &v.path])
        .output()
        .unwrap();
    assert!(wrote.status.success());
    let scratch = tempfile::tempdir().unwrap();
    let digest = |path: &str| campaign::content_digest(std::path::Path::new(path), scratch.path());
    let before = [digest(&v.path), digest(&root.path)];
    d.stop();
    // What a cut `qemu-img snapshot -c` leaves: the refcounts of the
    // clusters raised (to 2), the snapshot that would hold them never
    // written. 16-bit refcounts, one block: bump clusters 3 to 70.
    use std::io::{Read, Seek, SeekFrom, Write};
    let plant = |path: &str| {
        let mut image = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let be64 = |image: &mut std::fs::File, at: u64| {
            let mut b = [0u8; 8];
            image.seek(SeekFrom::Start(at)).unwrap();
            image.read_exact(&mut b).unwrap();
            u64::from_be_bytes(b)
        };
        let table = be64(&mut image, 48);
        let block = be64(&mut image, table);
        for cluster in 3..70u64 {
            image.seek(SeekFrom::Start(block + cluster * 2)).unwrap();
            let mut r = [0u8; 2];
            image.read_exact(&mut r).unwrap();
            if u16::from_be_bytes(r) == 1 {
                image.seek(SeekFrom::Start(block + cluster * 2)).unwrap();
                image.write_all(&2u16.to_be_bytes()).unwrap();
            }
        }
        // Corrupt (2: COPIED flags out of step) or leaking (3) as it goes.
        assert!(
            matches!(qemu_img_check(path), 2 | 3),
            "{path}: damage planted"
        );
    };
    plant(&v.path);
    plant(&root.path);
    // Jobs on them, Running when the daemon stopped: a volume's revert and
    // the delete of the instance's point.
    let catalog = match &d.config.catalog.url {
        Some(url) => reprise_catalog::Catalog::connect(url, "local").unwrap(),
        None => reprise_catalog::Catalog::open(&d.config.catalog_path()).unwrap(),
    };
    let admin = catalog.account("admin").unwrap();
    let running = |kind: &str, target_kind: &str, target_id: uuid::Uuid| Job {
        id: uuid::Uuid::new_v4(),
        account_id: admin.id,
        kind: kind.into(),
        target_kind: target_kind.into(),
        target_id,
        target_name: "x".into(),
        state: JobState::Running,
        progress_done: 0,
        progress_total: 1,
        error: None,
        log: vec![],
        host: d.config.host.name.clone(),
        created_at: reprise_catalog::now(),
        started_at: Some(reprise_catalog::now()),
        finished_at: None,
    };
    let jobs = [
        running("volume.revert", "volume", v.id),
        running("point.delete", "recovery_point", point.id),
    ];
    for job in &jobs {
        catalog.insert_job(job).unwrap();
    }
    catalog.close();
    drop(catalog);
    d.start_again();
    for job in &jobs {
        let settled = c.job(&job.id.to_string()).unwrap();
        assert_eq!(settled.error.unwrap().code, "daemon_restarted");
    }
    for (path, before) in [&v.path, &root.path].into_iter().zip(before) {
        assert_eq!(qemu_img_check(path), 0, "{path}: the metadata is repaired");
        assert_eq!(digest(path), before, "{path}: the data is what it was");
    }
}
