//! A region on one machine: one PostgreSQL catalog, a three-node Garage
//! cluster as the store (each host talks to its own node), two or three
//! daemons each serving a zone. Any daemon answers; work on a
//! volume or instance runs on its host; a sweep on one host never takes a
//! chunk the other's backup relies on; a stopped host shows `Down`, its
//! instances `Unknown`, and its snapshots restore into the other zone; a
//! stopped Garage node stops nothing; a running guest's data crosses
//! zones; a leader killed mid-sweep has its sweep finished by the next.
//!
//! Needs the test PostgreSQL and Garage cluster (`scripts/test.sh` starts
//! both); on a machine without them the test says so and fails.

use reprise_core::model::*;
use reprise_testing::{
    chunk_pause, guest_instance, qemu_io_write, region_host, serve_seamed_process, sweep_pause,
    KillInstancesOnDrop, TestDaemon,
};
use std::process::Command;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(120);

/// [http] peer_read_secs of every host here ([`region_host`]).
const PEER_READ_SECS: u64 = 15;

fn wait_job(c: &reprise_client::Client, job: Job) -> Job {
    c.wait_job(&job.id.to_string(), WAIT, |_| {})
        .unwrap_or_else(|e| panic!("{} failed: {e:?}", job.kind))
}

fn hosts(d: &TestDaemon) -> Vec<Host> {
    d.admin().hosts().unwrap()
}

fn same_content(a: &str, b: &str) -> bool {
    Command::new("qemu-img")
        .args(["compare", "-q", a, b])
        .status()
        .unwrap()
        .success()
}

/// A CloudStack call signed with `pair`, as CloudStack's clients sign.
fn cloudstack(url: &str, pair: &ApiKeyCreated, params: &[(&str, &str)]) -> serde_json::Value {
    use reprise_cloudstack::sign;
    let mut all: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    all.push(("apiKey".into(), pair.api_key.clone()));
    all.push(("response".into(), "json".into()));
    let secret = pair.secret_key.as_deref().unwrap();
    let signature = sign::sign(&sign::signed_string(&all, sign::Variant::Java), secret);
    all.push(("signature".into(), signature));
    let mut req = ureq::get(&format!("{url}/client/api"));
    for (k, v) in &all {
        req = req.query(k, v);
    }
    match req.call() {
        Ok(r) => r.into_json().unwrap(),
        Err(ureq::Error::Status(code, r)) => panic!("{code}: {}", r.into_string().unwrap()),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn two_hosts_share_one_catalog_and_one_store() {
    let base = reprise_catalog::testing::postgres_url()
        .expect("this test needs REPRISE_TEST_POSTGRES (scripts/test.sh starts PostgreSQL)");
    let cluster = Cluster::from_env();
    let catalog = reprise_catalog::testing::fresh_postgres_url(&base);
    // h1's backups pause after each chunk: long enough to sweep during one.
    // Leases of 3 s: a stopped host shows Down quickly.
    let mut h1 = region_host(
        &catalog,
        "h1",
        "zone1",
        cluster.node(0),
        None,
        chunk_pause(150),
        3,
    );
    let h2 = region_host(
        &catalog,
        "h2",
        "zone2",
        cluster.node(1),
        Some(&h1.config),
        Default::default(),
        3,
    );

    // A second daemon as an existing host is refused.
    let refused = reprise_daemon::config::Config {
        data_dir: h2.dir.path().join("third"),
        listen: "127.0.0.1:0".parse().unwrap(),
        catalog: h1.config.catalog.clone(),
        host: h1.config.host.clone(),
        region: h2.config.region.clone(),
        ..Default::default()
    };
    let e = h2
        .block_on(reprise_daemon::start(refused))
        .err()
        .expect("a second h1 is refused");
    assert_eq!(e.code, "catalog_in_use", "{e}");

    // Both hosts, as either daemon sees them.
    for d in [&h1, &h2] {
        let seen = hosts(d);
        let names: Vec<(&str, HostState)> =
            seen.iter().map(|h| (h.name.as_str(), h.state)).collect();
        assert_eq!(names, [("h1", HostState::Up), ("h2", HostState::Up)]);
        assert_eq!(seen[1].zones, ["zone2"]);
        // The first host leads the region's periodic work.
        assert_eq!((seen[0].leader, seen[1].leader), (true, false));
    }

    // Asked of h2, a volume of zone1 is made on h1, in h1's zone directory.
    let via_h2 = h2.admin();
    let v = via_h2
        .create_volume(&CreateVolume {
            name: "data".into(),
            size: "64M".into(),
            zone: Some("zone1".into()),
            host: None,
        })
        .unwrap();
    assert_eq!((v.host.as_str(), v.zone.as_str()), ("h1", "zone1"));
    assert!(v
        .path
        .starts_with(&h1.config.data_dir.to_string_lossy().into_owned()));
    qemu_io_write(&v.path, 0xab, 0, 40 << 20);
    qemu_io_write(&v.path, 0x5c, 50 << 20, 2 << 20);
    // A host that does not serve the zone is refused when named.
    let e = via_h2
        .create_volume(&CreateVolume {
            name: "wrong".into(),
            size: "16M".into(),
            zone: Some("zone1".into()),
            host: Some("h2".into()),
        })
        .unwrap_err();
    assert_eq!(e.code, "zone_not_served", "{e}");

    // A host that heartbeats but never answers (a wedged daemon): what is
    // sent on to it fails within [http] peer_read_secs as host_unreachable,
    // instead of holding the caller for ever.
    let wedged = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let as_h3 = reprise_catalog::Catalog::connect(&catalog, "h3").unwrap();
    as_h3
        .register_host(
            "h3",
            &format!("http://{}", wedged.local_addr().unwrap()),
            &["zone3".into()],
        )
        .unwrap();
    via_h2
        .create_zone(&CreateZone {
            name: "zone3".into(),
            storage_dir: None,
        })
        .unwrap();
    as_h3.heartbeat("h3").unwrap();
    // Asked by a tenant, whose error names neither the host nor where it is.
    let made: AccountCreated = via_h2
        .post("/api/v1/accounts", &serde_json::json!({"name": "tess"}))
        .unwrap();
    let tess = reprise_client::Client::new(&h2.url, Some(made.api_key));
    // A tenant naming a host is refused before the host is looked up: it
    // learns neither that h3 exists nor what it serves.
    for host in ["h3", "nowhere"] {
        let e = tess
            .create_volume(&CreateVolume {
                name: "placed".into(),
                size: "16M".into(),
                zone: Some("zone3".into()),
                host: Some(host.into()),
            })
            .unwrap_err();
        assert_eq!(e.code, "admin_only", "{host}: {e}");
    }
    let asked = std::time::Instant::now();
    let e = tess
        .create_volume(&CreateVolume {
            name: "on-h3".into(),
            size: "16M".into(),
            zone: Some("zone3".into()),
            host: None,
        })
        .unwrap_err();
    assert_eq!(e.code, "host_unreachable", "{e}");
    let address = wedged.local_addr().unwrap().to_string();
    assert!(
        !e.message.contains(&address) && !e.message.contains("h3"),
        "a tenant reads no host: {}",
        e.message
    );
    let waited = asked.elapsed();
    assert!(
        waited >= Duration::from_secs(PEER_READ_SECS)
            && waited < Duration::from_secs(PEER_READ_SECS + 5),
        "a wedged host was given up after {waited:?}"
    );
    drop(wedged);

    // A snapshot asked of h2 is taken by h1 (it reads h1's file). While it
    // backs up, h2 sweeps the store: the sweep waits for the backup's
    // references, so the snapshot verifies whole.
    let job = via_h2
        .create_snapshot(&CreateSnapshot {
            volume: "data".into(),
            name: Some("s1".into()),
            quiesce: None,
            protect: false,
        })
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let backing_up = via_h2.snapshot("s1").unwrap();
    assert_eq!(backing_up.state, SnapshotState::BackingUp);
    let gc = via_h2
        .start_job("/api/v1/gc", &serde_json::json!({}))
        .unwrap();
    let gc = wait_job(&via_h2, gc);
    let job = wait_job(&via_h2, job);
    assert_eq!((job.host.as_str(), gc.host.as_str()), ("h1", "h2"));
    // Nothing else is in this region's store: every chunk the sweep could
    // have removed was the backup's.
    let log: Vec<&str> = gc.log.iter().map(|l| l.message.as_str()).collect();
    assert!(
        log.iter().any(|l| l.contains("removed 0 (0 bytes)")),
        "the sweep took nothing of the backup: {log:?}"
    );
    let verified = wait_job(&via_h2, via_h2.verify_snapshot("s1").unwrap());
    assert_eq!(verified.state, JobState::Succeeded);
    assert_eq!(
        via_h2.snapshot("s1").unwrap().state,
        SnapshotState::BackedUp
    );

    // An instance of zone1 lives on h1.
    let inst = wait_job(
        &via_h2,
        via_h2
            .create_instance(&CreateInstance {
                name: "vm".into(),
                zone: Some("zone1".into()),
                root_size: Some("16M".into()),
                no_start: true,
                ..Default::default()
            })
            .unwrap(),
    );
    assert_eq!(inst.host, "h1");
    // Stopped, it is all in the catalog: h2 shows it as h1 would, but
    // for h1's file paths, which h2 does not know.
    let shown = via_h2.instance("vm").unwrap();
    let on_h1 = h1.admin().instance("vm").unwrap();
    assert!(shown.console_log.is_empty() && !on_h1.console_log.is_empty());
    assert_eq!(
        shown,
        Instance {
            qmp_socket: String::new(),
            guest_agent_socket: String::new(),
            console_log: String::new(),
            ..on_h1
        }
    );
    assert_eq!(
        (
            shown.host.as_str(),
            shown.guest_agent.unwrap().status.as_str()
        ),
        ("h1", "not_running")
    );
    // A recovery point asked of h2 is taken on h1; its size is read there.
    wait_job(
        &via_h2,
        via_h2
            .start_job(
                "/api/v1/instances/vm/points",
                &serde_json::json!({"name": "p1"}),
            )
            .unwrap(),
    );
    let points: Vec<Point> = via_h2.get("/api/v1/instances/vm/points").unwrap();
    assert_eq!(points.len(), 1);
    assert!(points[0].size_bytes.is_some(), "{points:?}");
    // The same through the CloudStack API of h2: the command runs as a
    // native request inside h2, sent on to h1 under the caller's identity.
    let pair: ApiKeyCreated = via_h2
        .post(
            "/api/v1/accounts/admin/keys",
            &serde_json::json!({"name": "cs", "cloudstack": true}),
        )
        .unwrap();
    let started = cloudstack(
        &h2.url,
        &pair,
        &[
            ("command", "createVMSnapshot"),
            ("virtualmachineid", &inst.target_id.to_string()),
            ("name", "p2"),
        ],
    );
    let jobid = started["createvmsnapshotresponse"]["jobid"]
        .as_str()
        .unwrap()
        .to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let result = loop {
        let r = cloudstack(
            &h2.url,
            &pair,
            &[("command", "queryAsyncJobResult"), ("jobid", &jobid)],
        )["queryasyncjobresultresponse"]
            .clone();
        if r["jobstatus"] != 0 || std::time::Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(result["jobstatus"], 1, "{result}");
    assert_eq!(result["jobresult"]["vmsnapshot"]["name"], "p2", "{result}");
    assert_eq!(
        via_h2
            .get::<Job>(&format!("/api/v1/jobs/{jobid}"))
            .unwrap()
            .host,
        "h1"
    );

    // An image uploaded to h2; an instance made from it, asked of h1, is
    // made beside the upload, on h2, in h2's zone.
    let image = h2.dir.path().join("disk.raw");
    std::fs::write(&image, vec![0x3cu8; 1 << 20]).unwrap();
    let up = h2.admin().upload(&image, |_, _| {}).unwrap();
    let beside = wait_job(
        &h1.admin(),
        h1.admin()
            .create_instance(&CreateInstance {
                name: "from-image".into(),
                image_upload: Some(up.id.to_string()),
                no_start: true,
                ..Default::default()
            })
            .unwrap(),
    );
    assert_eq!(beside.host, "h2");
    let made = via_h2.instance("from-image").unwrap();
    assert_eq!((made.host.as_str(), made.zone.as_str()), ("h2", "zone2"));

    // A tenant sees no host.
    let tenant = h2.account("ann");
    let mine = tenant
        .create_volume(&CreateVolume {
            name: "t".into(),
            size: "8M".into(),
            zone: Some("zone1".into()),
            host: None,
        })
        .unwrap();
    assert!(mine.host.is_empty() && mine.path.is_empty());
    let e = tenant
        .create_volume(&CreateVolume {
            name: "t2".into(),
            size: "8M".into(),
            zone: Some("zone1".into()),
            host: Some("h1".into()),
        })
        .unwrap_err();
    assert_eq!(e.code, "admin_only", "{e}");
    let also_mine = tenant
        .create_volume(&CreateVolume {
            name: "t-zone2".into(),
            size: "8M".into(),
            zone: Some("zone2".into()),
            host: None,
        })
        .unwrap();

    // h1 stops: within its lease h2 shows it Down, its instance Unknown;
    // work on its volume is refused by name; its snapshot restores into
    // zone2, on h2, with the same bytes.
    h1.stop();
    let stopped = Instant::now();
    while hosts(&h2)[0].state != HostState::Down {
        assert!(
            stopped.elapsed() < Duration::from_secs(10),
            "h1 never shown Down"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("h1 shown Down {:?} after it stopped", stopped.elapsed());
    // h2 takes the lead over once h1's lease ran out.
    while !hosts(&h2)[1].leader {
        assert!(
            stopped.elapsed() < Duration::from_secs(10),
            "h2 never took the lead"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let listed = via_h2.instances().unwrap();
    assert_eq!(listed[0].state, InstanceState::Unknown);
    // Shown from the catalog; changed by nothing.
    let shown = via_h2.instance("vm").unwrap();
    assert_eq!(
        (shown.state, shown.guest_agent),
        (InstanceState::Unknown, None)
    );
    // Work on its volume that can wait is kept for it: a Queued job that
    // says what it waits for. A delete, which answers at once, is refused.
    let waiting = via_h2
        .create_snapshot(&CreateSnapshot {
            volume: "data".into(),
            name: Some("waited".into()),
            quiesce: None,
            protect: false,
        })
        .unwrap();
    assert_eq!(
        (
            waiting.state,
            waiting.host.as_str(),
            waiting.target_name.as_str()
        ),
        (JobState::Queued, "h1", "data")
    );
    let doomed = via_h2
        .revert_volume(
            "data",
            &RevertVolume {
                snapshot: "no-such-snapshot".into(),
            },
        )
        .unwrap();
    // A third waits and is cancelled: it ends Cancelled by name, and no
    // longer counts; it cannot be cancelled twice.
    let cancelled = via_h2
        .create_snapshot(&CreateSnapshot {
            volume: "data".into(),
            name: Some("never".into()),
            quiesce: None,
            protect: false,
        })
        .unwrap();
    let cancelled = via_h2.cancel_job(&cancelled.id.to_string()).unwrap();
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert_eq!(
        cancelled.error.as_ref().map(|e| e.code.as_str()),
        Some("job_cancelled")
    );
    let e = via_h2.cancel_job(&cancelled.id.to_string()).unwrap_err();
    assert_eq!(e.code, "job_not_cancellable", "{e}");
    std::thread::sleep(Duration::from_millis(500));
    let shown = via_h2.job(&waiting.id.to_string()).unwrap();
    assert_eq!(shown.state, JobState::Queued);
    assert!(
        shown.log[0].message.contains("host 'h1' is down"),
        "{:?}",
        shown.log
    );
    let e = via_h2.delete_volume("data").unwrap_err();
    assert_eq!(e.code, "host_down", "{e}");
    // A purge of ann, whose volume waits on h1, is refused before it
    // changes anything: her key still works.
    let e = via_h2.purge_account("ann").unwrap_err();
    assert_eq!(e.code, "host_down", "{e}");
    assert!(e.message.contains("'h1'"), "{e}");
    assert_eq!(tenant.volumes(None, None).unwrap().len(), 2);
    let restored = wait_job(
        &via_h2,
        via_h2
            .volume_from_snapshot(
                "s1",
                &VolumeFromSnapshot {
                    name: "rescued".into(),
                    zone: Some("zone2".into()),
                    host: None,
                },
            )
            .unwrap(),
    );
    let rescued = via_h2.volume(&restored.target_id.to_string()).unwrap();
    assert_eq!(rescued.host, "h2");
    assert!(same_content(&rescued.path, &v.path));

    // h1 comes back and rejoins: Up, its instance Stopped as it was; h2
    // keeps the lead it renews.
    h1.start_again();
    let back = hosts(&h2);
    assert_eq!(back[0].state, HostState::Up);
    assert_eq!((back[0].leader, back[1].leader), (false, true));
    assert_eq!(via_h2.instance("vm").unwrap().state, InstanceState::Stopped);
    // What waited for it runs, in the jobs its client holds: the snapshot
    // is made; the revert to a snapshot that does not exist fails by name.
    let done = wait_job(&via_h2, waiting);
    assert_eq!(done.kind, "snapshot.create");
    assert!(
        done.started_at.is_some() && done.log.len() > 1,
        "the kept job is the one that ran: {done:?}"
    );
    assert_eq!(
        via_h2.snapshot("waited").unwrap().state,
        SnapshotState::BackedUp
    );
    let e = via_h2
        .wait_job(&doomed.id.to_string(), WAIT, |_| {})
        .unwrap_err();
    assert!(e.code.contains("not_found"), "{e}");
    // The cancelled one never ran.
    let e = via_h2.snapshot("never").unwrap_err();
    assert!(e.code.contains("not_found"), "{e}");
    let still = via_h2.job(&cancelled.id.to_string()).unwrap();
    assert_eq!((still.state, still.started_at), (JobState::Cancelled, None));
    // A job its host has run cannot be cancelled.
    let e = via_h2.cancel_job(&done.id.to_string()).unwrap_err();
    assert_eq!(e.code, "job_not_cancellable", "{e}");
    via_h2.delete_volume("data").unwrap();
    assert!(!std::path::Path::new(&v.path).exists());

    // A purge through h2 deletes ann's volume on h1 (sent to h1's daemon)
    // and the one on h2, then ann.
    let files = [
        h1.config
            .default_zone_dir()
            .join(format!("{}.qcow2", mine.id)),
        h2.config
            .default_zone_dir()
            .join(format!("{}.qcow2", also_mine.id)),
    ];
    assert!(files.iter().all(|f| f.exists()), "{files:?}");
    let purged = wait_job(&via_h2, via_h2.purge_account("ann").unwrap());
    assert_eq!(purged.state, JobState::Succeeded, "{purged:?}");
    assert!(files.iter().all(|f| !f.exists()), "{files:?}");
    let e = via_h2.account("ann").unwrap_err();
    assert!(e.code.contains("not_found"), "{e}");

    // The third Garage node stops: a backup on h1 (through node 0) and a
    // restore on h2 (through node 1) go on, on two copies of three.
    cluster.stop(2);
    let v2 = via_h2
        .create_volume(&CreateVolume {
            name: "data2".into(),
            size: "16M".into(),
            zone: Some("zone1".into()),
            host: None,
        })
        .unwrap();
    qemu_io_write(&v2.path, 0x77, 1 << 20, 3 << 20);
    wait_job(
        &via_h2,
        via_h2
            .create_snapshot(&CreateSnapshot {
                volume: "data2".into(),
                name: Some("s2".into()),
                quiesce: None,
                protect: false,
            })
            .unwrap(),
    );
    let job = wait_job(
        &via_h2,
        via_h2
            .volume_from_snapshot(
                "s2",
                &VolumeFromSnapshot {
                    name: "copy2".into(),
                    zone: Some("zone2".into()),
                    host: None,
                },
            )
            .unwrap(),
    );
    let copy = via_h2.volume(&job.target_id.to_string()).unwrap();
    assert!(same_content(&copy.path, &v2.path));
    cluster.start(2);
}

/// Three hosts, h1 a process of its own so that it can be killed: a
/// running guest's volume, snapshotted on h1, becomes (asked of h3) a
/// volume of zone2 on h2, which a guest booted there reads byte for byte.
/// Then h1, the region's leader, is killed (-9) in the middle of a sweep:
/// h2 and h3 answer, h1 shows `Down`, the new leader sweeps again, every
/// snapshot verifies and restores in zone2; h1 started again rejoins with
/// nothing lost or duplicated, its guest still running.
#[test]
fn a_guest_s_data_crosses_zones_and_the_leader_dies_mid_sweep() {
    let base = reprise_catalog::testing::postgres_url()
        .expect("this test needs REPRISE_TEST_POSTGRES (scripts/test.sh starts PostgreSQL)");
    let cluster = Cluster::from_env();
    let catalog_url = reprise_catalog::testing::fresh_postgres_url(&base);
    let catalog = reprise_catalog::Catalog::connect(&catalog_url, "test").unwrap();
    let dir = tempfile::Builder::new().prefix("rp").tempdir().unwrap();
    let data = dir.path().join("h1");
    let config = dir.path().join("h1.toml");
    let s3 = cluster.node(0);
    std::fs::write(
        &config,
        format!(
            r#"data_dir = "{data}"
listen = "127.0.0.1:0"
default_zone = "zone1"
import_dirs = ["{guests}"]
[catalog]
url = "{catalog_url}"
[host]
name = "h1"
zones = ["zone1"]
lease_secs = 3
[region]
store = "s3"
prefix = "test-{prefix}"
[region.s3]
endpoint = "{endpoint}"
bucket = "{bucket}"
region = "{region}"
access_key_id = "{key}"
secret_access_key = "{secret}"
[gc]
delay_ms = 200
grace_minutes = 0
min_interval_minutes = 0
[snapshots]
undelete_days = 0
"#,
            data = data.display(),
            guests = reprise_testing::guest_dir().display(),
            prefix = uuid::Uuid::new_v4(),
            endpoint = s3.endpoint,
            bucket = s3.bucket,
            region = s3.region,
            key = s3.access_key_id,
            secret = s3.secret_access_key,
        ),
    )
    .unwrap();
    let h1_config = reprise_daemon::config::Config::load(&config).unwrap();
    let _vms = KillInstancesOnDrop(data.join("run"));
    // h1's sweeps pause after each chunk they delete: long enough to be
    // killed in the middle of one.
    let (mut h1, _) = serve_seamed_process(&config, &data, &sweep_pause(250));
    let other = |name: &str, node: usize| {
        let first = Some(&h1_config);
        region_host(
            &catalog_url,
            name,
            "zone2",
            cluster.node(node),
            first,
            Default::default(),
            3,
        )
    };
    let h2 = other("h2", 1);
    let h3 = other("h3", 2);
    let leaders = |d: &TestDaemon| -> Vec<bool> { hosts(d).iter().map(|h| h.leader).collect() };
    assert_eq!(
        leaders(&h3),
        [true, false, false],
        "h1 started first, leads"
    );

    // A guest on h1, its data volume made and the guest booted by
    // requests to h3; a file written in it, snapshotted while it runs.
    let via_h3 = h3.admin();
    via_h3
        .create_volume(&CreateVolume {
            name: "data".into(),
            size: "64M".into(),
            zone: Some("zone1".into()),
            host: None,
        })
        .unwrap();
    let in_zone = |zone: &str, req: CreateInstance| CreateInstance {
        zone: Some(zone.into()),
        ..req
    };
    let job = wait_job(
        &via_h3,
        via_h3
            .create_instance(&in_zone("zone1", guest_instance("vm1", &["data"])))
            .unwrap(),
    );
    assert_eq!(job.host, "h1");
    let vm1 = via_h3.instance("vm1").unwrap();
    h2.wait_agent(&vm1);
    let (code, written) = h2.guest_sh(
        &vm1,
        "dd if=/dev/urandom of=/mnt/data/blob bs=64k count=64 2>/dev/null && sync && md5sum /mnt/data/blob",
    );
    assert_eq!(code, 0, "{written}");
    let snapshot = |name: &str| {
        let job = via_h3
            .create_snapshot(&CreateSnapshot {
                volume: "data".into(),
                name: Some(name.into()),
                quiesce: None,
                protect: false,
            })
            .unwrap();
        let job = wait_job(&via_h3, job);
        assert_eq!(job.host, "h1");
    };
    snapshot("s1");

    // Made into a volume of zone2 on h2, by a request to h3; a guest
    // booted on h2 reads the file.
    let job = wait_job(
        &via_h3,
        via_h3
            .volume_from_snapshot(
                "s1",
                &VolumeFromSnapshot {
                    name: "copy".into(),
                    zone: Some("zone2".into()),
                    host: Some("h2".into()),
                },
            )
            .unwrap(),
    );
    assert_eq!(job.host, "h2");
    let job = wait_job(
        &via_h3,
        via_h3
            .create_instance(&in_zone("zone2", guest_instance("vm2", &["copy"])))
            .unwrap(),
    );
    assert_eq!(job.host, "h2");
    let vm2 = via_h3.instance("vm2").unwrap();
    h2.wait_agent(&vm2);
    assert_eq!(
        h2.guest_sh(&vm2, "md5sum /mnt/data/blob"),
        (0, written.clone())
    );

    // Garbage for a sweep: a second snapshot of 24 MiB more, deleted.
    let (code, out) = h2.guest_sh(
        &vm1,
        "dd if=/dev/urandom of=/mnt/data/more bs=1M count=24 2>/dev/null && sync",
    );
    assert_eq!(code, 0, "{out}");
    snapshot("s2");
    wait_job(&via_h3, via_h3.delete_snapshot("s2", false).unwrap());
    let store = h2.block_on(h2.server().app.region()).unwrap();
    let chunks_in_store = || h2.block_on(store.store.list("chunks")).unwrap().len();
    let live_chunks = || catalog.live_references().unwrap().0.len();
    // h1 sweeps (the delete ran there); killed once it has deleted some.
    let garbage = chunks_in_store() - live_chunks();
    assert!(garbage >= 20, "{garbage} chunks to sweep");
    let asked = Instant::now();
    while chunks_in_store() > live_chunks() + garbage - 3 {
        assert!(asked.elapsed() < Duration::from_secs(30), "h1 never swept");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(catalog.sweeps_cut_short().unwrap(), ["h1"]);
    h1.child.kill().unwrap();
    h1.child.wait().unwrap();
    let killed = Instant::now();
    assert!(chunks_in_store() > live_chunks(), "killed mid-sweep");

    // h2 and h3 answer; h1 shows Down within its lease; a new leader
    // sweeps what h1 left.
    while hosts(&h2)[0].state != HostState::Down {
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "h1 never shown Down"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(hosts(&h3)[0].state, HostState::Down);
    while chunks_in_store() > live_chunks() || !catalog.sweeps_cut_short().unwrap().is_empty() {
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "nobody took the sweep over: {:?}",
            catalog.sweeps_cut_short()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let now_leading = leaders(&h2);
    assert!(
        !now_leading[0] && (now_leading[1] ^ now_leading[2]),
        "{now_leading:?}"
    );
    println!(
        "the sweep was taken over {:?} after h1 was killed",
        killed.elapsed()
    );
    let verified = wait_job(&via_h3, via_h3.verify_snapshot("s1").unwrap());
    assert_eq!(verified.state, JobState::Succeeded);
    // h1's snapshot restores into zone2 while it is down.
    let job = wait_job(
        &via_h3,
        via_h3
            .volume_from_snapshot(
                "s1",
                &VolumeFromSnapshot {
                    name: "rescued".into(),
                    zone: Some("zone2".into()),
                    host: None,
                },
            )
            .unwrap(),
    );
    let rescued = via_h3.volume(&job.target_id.to_string()).unwrap();
    assert_ne!(rescued.host, "h1");
    assert_eq!(
        via_h3.instance("vm1").unwrap().state,
        InstanceState::Unknown
    );

    // h1 starts again: Up, its guest still running with its file; nothing
    // lost or duplicated. (Its backups now pause 100 ms a chunk, for the
    // stopped backup below.)
    let (h1, via_h1) = serve_seamed_process(&config, &data, &chunk_pause(100));
    assert_eq!(hosts(&h2)[0].state, HostState::Up);
    let vm1 = via_h1.instance("vm1").unwrap();
    assert_eq!(vm1.state, InstanceState::Running);
    assert_eq!(h2.guest_sh(&vm1, "md5sum /mnt/data/blob"), (0, written));
    let names = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let volumes = names(
        via_h1
            .volumes(None, None)
            .unwrap()
            .into_iter()
            .map(|v| v.name)
            .collect(),
    );
    assert_eq!(volumes, ["copy", "data", "rescued"]);
    let instances = names(
        via_h1
            .instances()
            .unwrap()
            .into_iter()
            .map(|i| i.name)
            .collect(),
    );
    assert_eq!(instances, ["vm1", "vm2"]);
    let snapshots: Vec<Snapshot> = via_h1.get("/api/v1/snapshots").unwrap();
    let states: Vec<(&str, SnapshotState)> = snapshots
        .iter()
        .map(|s| (s.name.as_str(), s.state))
        .collect();
    assert_eq!(states, [("s1", SnapshotState::BackedUp)]);
    assert_eq!(chunks_in_store(), live_chunks(), "no chunk lost or left");

    // A backup on h1 stopped (SIGSTOP) in its middle while h3 sweeps: the
    // stopped daemon keeps its share of the sweep lock on its open catalog
    // connection, so the sweep waits; once h1 goes on, its snapshot ends
    // BackedUp and whole, and the sweep took none of its chunks.
    let paused = via_h1
        .create_volume(&CreateVolume {
            name: "paused".into(),
            size: "32M".into(),
            zone: Some("zone1".into()),
            host: None,
        })
        .unwrap();
    qemu_io_write(&paused.path, 0x3c, 0, 24 << 20);
    let backup = via_h1
        .create_snapshot(&CreateSnapshot {
            volume: "paused".into(),
            name: Some("s-stopped".into()),
            quiesce: None,
            protect: false,
        })
        .unwrap();
    let asked = Instant::now();
    while via_h3
        .snapshot("s-stopped")
        .map_or(true, |s| s.progress_done == 0)
    {
        assert!(
            asked.elapsed() < Duration::from_secs(30),
            "the backup never began"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = h1.child.id().to_string();
    let signal = |sig: &str| {
        assert!(Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success());
    };
    signal("-STOP");
    let gc = via_h3.collect_garbage().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let waiting = via_h3.job(&gc.id.to_string()).unwrap();
    signal("-CONT");
    assert!(
        matches!(waiting.state, JobState::Queued | JobState::Running),
        "the sweep did not wait for the stopped backup: {waiting:?}"
    );
    let backup = wait_job(&via_h3, backup);
    let gc = wait_job(&via_h3, gc);
    assert_eq!((backup.host.as_str(), gc.host.as_str()), ("h1", "h3"));
    // The sweep could take the lock only once the backup released its
    // holds, just before the snapshot is BackedUp; the backup's job goes
    // on a little after (the store learns the catalog's generation).
    let stopped = via_h3.snapshot("s-stopped").unwrap();
    assert!(
        gc.finished_at >= stopped.completed_at,
        "the sweep ended before the backup it waited for: {gc:?}"
    );
    println!("the sweep waiting for a stopped backup: {:?}", gc.log);
    let verified = wait_job(&via_h3, via_h3.verify_snapshot("s-stopped").unwrap());
    assert_eq!(verified.state, JobState::Succeeded);
    assert_eq!(chunks_in_store(), live_chunks(), "no chunk lost or left");
}

/// The tests share one Garage cluster and one stops a node of it, so they
/// take turns.
static CLUSTER_TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The test's Garage cluster (`scripts/s3.sh` with three nodes), held by
/// one test at a time.
struct Cluster {
    _turn: std::sync::MutexGuard<'static, ()>,
    s3: reprise_store::S3Config,
    nodes: Vec<String>,
    dir: std::path::PathBuf,
    garage: String,
}

impl Cluster {
    fn from_env() -> Cluster {
        let var = |name: &str| {
            std::env::var(format!("REPRISE_TEST_CLUSTER_{name}")).unwrap_or_else(|_| {
                panic!("REPRISE_TEST_CLUSTER_{name} is not set: scripts/test.sh starts the test's Garage cluster")
            })
        };
        Cluster {
            _turn: CLUSTER_TURN.lock().unwrap_or_else(|e| e.into_inner()),
            s3: reprise_store::S3Config::from_env("REPRISE_TEST_CLUSTER"),
            nodes: var("NODES").split(' ').map(str::to_string).collect(),
            dir: var("DIR").into(),
            garage: var("GARAGE"),
        }
    }

    /// The store as reached through node `i`.
    fn node(&self, i: usize) -> reprise_store::S3Config {
        reprise_store::S3Config {
            endpoint: self.nodes[i].clone(),
            ..self.s3.clone()
        }
    }

    fn stop(&self, i: usize) {
        let pid_file = self.dir.join(format!("node{i}/pid"));
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        Command::new("kill").arg(pid.trim()).status().unwrap();
        while Command::new("kill")
            .args(["-0", pid.trim()])
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success()
        {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Start node `i` again: it outlives the test, as the others do, and
    /// is stopped with them by its pid file (scripts/s3.sh stop).
    #[allow(clippy::zombie_processes)]
    fn start(&self, i: usize) {
        let node = self.dir.join(format!("node{i}"));
        let child = Command::new(&self.garage)
            .arg("-c")
            .arg(node.join("garage.toml"))
            .arg("server")
            .env("RUST_LOG", "warn")
            .stdout(std::fs::File::create(node.join("garage.log")).unwrap())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::fs::write(node.join("pid"), child.id().to_string()).unwrap();
    }
}
