//! The fault campaign: the daemon killed (SIGKILL) at a random moment of a
//! random operation on a running guest — a volume snapshot, a recovery
//! point made, reverted to or deleted, a volume restored from a snapshot,
//! a template from a snapshot or imported from a file, a detached volume
//! reverted to its snapshot, a snapshot deleted, a garbage collection, the
//! instance cloned —
//! then started again, round after round, and after each start everything
//! it says checked against what is on disk:
//!
//! - no job is left Queued or Running, and no resource in a passing state
//!   (BackingUp, Destroying, Creating, Reverting, Deleting, Snapshotting);
//! - the guest is not frozen;
//! - every volume that no QEMU holds is a clean qcow2 (`qemu-img check`),
//!   and no half-made file is left beside a volume;
//! - every recovery point shown Ready has its snapshot in each of its
//!   volumes, and every template shown can be read;
//! - the reverted volume holds its snapshot's bytes, whenever it is Ready;
//! - at the end, every BackedUp snapshot verifies (each chunk read back,
//!   decrypted and checked against its name).
//!
//! It prints its figures: rounds, kills per operation, the violations found
//! (the test fails on any). CI runs `REPRISE_FAULT_ROUNDS` rounds (6 by
//! default); `scripts/faults.sh N` runs a long campaign. The seed is
//! printed, and `REPRISE_FAULT_SEED` replays one.

use reprise_client::Client;
use reprise_core::model::*;
use reprise_testing::campaign::*;
use reprise_testing::*;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The operations a round may start (snapshots twice as often: the
/// others need one).
const OPS: &[&str] = &[
    "snapshot",
    "snapshot",
    "point",
    "revert",
    "delete point",
    "restore",
    "template",
    "import",
    "revert volume",
    "delete snapshot",
    "gc",
    "clone",
];

/// The detached volume the campaign reverts, and its one snapshot (never
/// deleted): its content is always that snapshot's.
const STILL: &str = "still";
const STILL_SNAPSHOT: &str = "still0";

struct Campaign {
    config: PathBuf,
    data: PathBuf,
    seams: Seams,
    violations: Vec<String>,
    /// The content of [`STILL`] (its snapshot's), once it exists.
    still: Option<blake3::Hash>,
}

impl Campaign {
    fn serve(&self) -> (DaemonProcess, Client) {
        serve_seamed_process(&self.config, &self.data, &self.seams)
    }

    fn violation(&mut self, round: usize, what: String) {
        eprintln!("round {round}: VIOLATION {what}");
        self.violations.push(format!("round {round}: {what}"));
    }

    /// Everything the daemon says, checked against the disks.
    fn check(&mut self, round: usize, c: &Client) {
        for j in c.jobs(1000).unwrap() {
            if matches!(j.state, JobState::Queued | JobState::Running) {
                self.violation(round, format!("job {} {} is {:?}", j.kind, j.id, j.state));
            }
        }
        for s in c.snapshots(&Default::default()).unwrap() {
            if !matches!(s.state, SnapshotState::BackedUp | SnapshotState::Error) {
                self.violation(round, format!("snapshot {} is {}", s.name, s.state));
            }
        }
        let instances = c.instances().unwrap();
        let running: Vec<uuid::Uuid> = instances
            .iter()
            .filter(|i| i.state == InstanceState::Running)
            .map(|i| i.id)
            .collect();
        for i in &instances {
            if !matches!(i.state, InstanceState::Running | InstanceState::Stopped) {
                self.violation(round, format!("instance {} is {}", i.name, i.state));
            }
            if i.state == InstanceState::Running && freeze_status(i).as_deref() == Some("frozen") {
                self.violation(round, format!("instance {} is frozen", i.name));
            }
            let points = c.points(&i.name).unwrap();
            // A machine state file belongs to a point of its instance.
            let states = self.data.join("points").join(i.id.to_string());
            for file in std::fs::read_dir(&states).into_iter().flatten().flatten() {
                let name = file.file_name().to_string_lossy().into_owned();
                let owner = name.strip_suffix(".state").unwrap_or(&name);
                if !points.iter().any(|p| p.id.to_string() == owner) {
                    self.violation(
                        round,
                        format!("state file {name} of no point left in {}", states.display()),
                    );
                }
            }
            for p in points {
                if !matches!(p.state, PointState::Ready | PointState::Error) {
                    self.violation(round, format!("point {} is {}", p.name, p.state));
                }
                if p.state == PointState::Ready
                    && p.memory_save.as_deref() == Some("background")
                    && !states.join(format!("{}.state", p.id)).exists()
                {
                    self.violation(
                        round,
                        format!("Ready point {} lacks its state file", p.name),
                    );
                }
                if p.state == PointState::Ready {
                    let tag = format!("reprise-{}", p.id);
                    for v in &p.volume_ids {
                        let path = c.volume(&v.to_string()).unwrap().path;
                        if !qcow2_tags(&path).contains(&tag) {
                            self.violation(
                                round,
                                format!("Ready point {} lacks {tag} in {path}", p.name),
                            );
                        }
                    }
                }
            }
        }
        for v in c.volumes(None, None).unwrap() {
            if v.state != VolumeState::Ready && v.state != VolumeState::Error {
                self.violation(round, format!("volume {} is {}", v.name, v.state));
            }
            for leftover in [".restoring.raw", ".reverting.qcow2"] {
                if Path::new(&format!("{}{leftover}", v.path)).exists() {
                    self.violation(
                        round,
                        format!("{}{leftover} left beside {}", v.path, v.name),
                    );
                }
            }
            let held = v.instance_id.is_some_and(|i| running.contains(&i));
            if !held && qemu_img_check(&v.path) != 0 {
                self.violation(round, format!("volume {} fails qemu-img check", v.name));
            }
        }
        for t in c.templates().unwrap() {
            if c.template(&t.id.to_string()).is_err() {
                self.violation(round, format!("template {} cannot be read", t.name));
            }
        }
        // Reverted or not, the volume holds its snapshot's bytes.
        if let (Some(expected), Ok(v)) = (self.still, c.volume(STILL)) {
            let dir = self.data.parent().expect("the campaign's directory");
            if v.state == VolumeState::Ready && content_digest(Path::new(&v.path), dir) != expected
            {
                self.violation(round, format!("{STILL} differs from {STILL_SNAPSHOT}"));
            }
        }
    }
}

/// Start `op` (round `n`); what it started, for the log.
fn start(c: &Client, op: &str, n: usize, dice: &mut Dice) -> String {
    let backed_up: Vec<Snapshot> = c
        .snapshots(&Default::default())
        .unwrap()
        .into_iter()
        .filter(|s| s.state == SnapshotState::BackedUp)
        .collect();
    let pick = |dice: &mut Dice| {
        backed_up[dice.below(backed_up.len() as u64) as usize]
            .name
            .clone()
    };
    let deletable: Vec<&Snapshot> = backed_up
        .iter()
        .filter(|s| s.name != STILL_SNAPSHOT)
        .collect();
    let r = match op {
        "snapshot" => c
            .start_job(
                "/api/v1/snapshots",
                &json!({"volume": "d", "name": format!("s{n}")}),
            )
            .map(|j| j.kind),
        // Half the points with memory (saved in the background here).
        "point" => c
            .start_job(
                "/api/v1/instances/vm/points",
                &json!({"name": format!("p{n}"), "memory": dice.below(2) == 0}),
            )
            .map(|j| j.kind),
        "revert" => match c
            .points("vm")
            .unwrap()
            .into_iter()
            .find(|p| p.state == PointState::Ready)
        {
            Some(p) => c.revert_point("vm", &p.name).map(|j| j.kind),
            None => return "revert: no point yet".into(),
        },
        "delete point" => {
            let ready: Vec<Point> = c
                .points("vm")
                .unwrap()
                .into_iter()
                .filter(|p| p.state == PointState::Ready)
                .collect();
            if ready.len() < 2 {
                return format!("{op}: keeps the last one");
            }
            let p = &ready[dice.below(ready.len() as u64) as usize];
            c.delete_point("vm", &p.name).map(|j| j.kind)
        }
        "import" => c
            .import_template(&ImportTemplate {
                name: format!("i{n}"),
                upload: None,
                file: Some(guest_dir().join("data.qcow2").display().to_string()),
            })
            .map(|j| j.kind),
        "revert volume" => c
            .revert_volume(
                STILL,
                &RevertVolume {
                    snapshot: STILL_SNAPSHOT.into(),
                },
            )
            .map(|j| j.kind),
        "gc" => c.collect_garbage().map(|j| j.kind),
        "clone" => c
            .clone_instance(
                "vm",
                &CloneInstance {
                    name: format!("c{n}"),
                    zone: None,
                },
            )
            .map(|j| j.kind),
        _ if backed_up.is_empty() => return format!("{op}: no snapshot yet"),
        "delete snapshot" if deletable.len() < 2 => return format!("{op}: keeps the last one"),
        "restore" => c
            .volume_from_snapshot(
                &pick(dice),
                &VolumeFromSnapshot {
                    name: format!("r{n}"),
                    zone: None,
                    host: None,
                },
            )
            .map(|j| j.kind),
        "template" => c
            .create_template(&CreateTemplate {
                name: format!("t{n}"),
                snapshot: pick(dice),
            })
            .map(|t| t.name),
        "delete snapshot" => {
            let s = deletable[dice.below(deletable.len() as u64) as usize];
            c.delete_snapshot(&s.name, false).map(|j| j.kind)
        }
        other => panic!("unknown operation {other}"),
    };
    match r {
        Ok(what) => format!("{op}: {what}"),
        Err(e) => format!("{op}: refused ({})", e.code),
    }
}

#[test]
fn the_daemon_killed_at_random_moments_loses_nothing() {
    let rounds = env_u64("REPRISE_FAULT_ROUNDS", 6) as usize;
    let seed = seed_from_env("REPRISE_FAULT_SEED");
    eprintln!("fault campaign: {rounds} rounds, seed {seed} (REPRISE_FAULT_SEED replays it)");
    let mut dice = Dice(seed);
    let dir = tempfile::Builder::new().prefix("rp").tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("reprise.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\nlisten = \"127.0.0.1:0\"\nimport_dirs = [\"{}\"]\n[gc]\ndelay_ms = 50\ngrace_minutes = 0\nmin_interval_minutes = 0\n[snapshots]\nundelete_days = 0\n",
            data.display(),
            guest_dir().display()
        ),
    )
    .unwrap();
    let _vms = KillInstancesOnDrop(data.join("run"));
    // Backups pause 30 ms a chunk and freezes hold 300 ms: windows wide
    // enough for kills to land inside them.
    let mut campaign = Campaign {
        config,
        data: data.clone(),
        seams: Seams {
            chunk_pause: Duration::from_millis(30),
            hold_frozen: Duration::from_millis(300),
            ..Default::default()
        },
        violations: Vec::new(),
        still: None,
    };
    let (mut daemon, mut c) = campaign.serve();
    let _: Volume = c
        .post("/api/v1/volumes", &json!({"name": "d", "size": "64M"}))
        .unwrap();
    run_job(&c, "/api/v1/instances", &guest_instance("vm", &["d"]));
    // Something for every operation to act on from the first round.
    run_job(
        &c,
        "/api/v1/snapshots",
        &json!({"volume": "d", "name": "s0"}),
    );
    run_job(&c, "/api/v1/instances/vm/points", &json!({"name": "p0"}));
    let still: Volume = c
        .post("/api/v1/volumes", &json!({"name": STILL, "size": "16M"}))
        .unwrap();
    let written = std::process::Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "write -P 0x5a 1M 3M", &still.path])
        .output()
        .unwrap();
    assert!(written.status.success(), "qemu-io writes {STILL}");
    run_job(
        &c,
        "/api/v1/snapshots",
        &json!({"volume": STILL, "name": STILL_SNAPSHOT}),
    );
    campaign.still = Some(content_digest(Path::new(&still.path), dir.path()));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let socket = |c: &Client| {
        let vm = c.instance("vm").unwrap();
        data.join("run").join(vm.id.to_string()).join("qga.sock")
    };
    let started = Instant::now();
    let mut kills: BTreeMap<&str, usize> = BTreeMap::new();
    for round in 1..=rounds {
        // New data in the guest, when it runs: increments have work.
        if c.instance("vm").unwrap().state == InstanceState::Running {
            let script = format!(
                "dd if=/dev/urandom of=/mnt/data/f{round} bs=64k count=64 2>/dev/null; sync"
            );
            rt.block_on(agent_sh(&socket(&c), &script));
        }
        let op = OPS[dice.below(OPS.len() as u64) as usize];
        let what = start(&c, op, round, &mut dice);
        // A clone backs up, then builds and boots its copy: its window is
        // longer.
        let window = if op == "clone" { 6000 } else { 1500 };
        let wait = Duration::from_millis(dice.below(window));
        std::thread::sleep(wait);
        daemon.child.kill().unwrap();
        daemon.child.wait().unwrap();
        let started_one = !what.contains(": no ") && !what.contains("keeps the last");
        *kills
            .entry(if started_one { op } else { "nothing started" })
            .or_default() += 1;
        eprintln!("round {round}: {what}; killed after {wait:?}");
        (daemon, c) = campaign.serve();
        campaign.check(round, &c);
        tidy(&c);
        // A revert may have left the instance stopped: it runs again.
        if c.instance("vm").unwrap().state == InstanceState::Stopped {
            let _ = c
                .start_instance("vm")
                .and_then(|j| c.wait_job(&j.id.to_string(), Duration::from_secs(120), |_| {}));
        }
    }
    // Every snapshot the daemon calls BackedUp reads back whole.
    let mut verified = 0;
    for s in c.snapshots(&Default::default()).unwrap() {
        if s.state != SnapshotState::BackedUp {
            continue;
        }
        let job = c.verify_snapshot(&s.name).unwrap();
        match c.wait_job(&job.id.to_string(), Duration::from_secs(120), |_| {}) {
            Ok(_) => verified += 1,
            Err(e) => campaign.violation(
                rounds,
                format!("snapshot {} does not verify: {e:?}", s.name),
            ),
        }
    }
    eprintln!(
        "fault campaign: {rounds} rounds in {:?}, kills per operation {kills:?}, {verified} snapshots verified, {} violations",
        started.elapsed(),
        campaign.violations.len()
    );
    assert!(campaign.violations.is_empty(), "{:#?}", campaign.violations);
}

/// Keep the newest few restored volumes and templates, and the newest
/// clone (their numbers are their rounds): a long campaign's checks stay as
/// fast as a short one's, and its clones' guests do not pile up.
fn tidy(c: &Client) {
    const KEEP: usize = 4;
    let round_of = |name: &str, prefixes: &[char]| {
        name.strip_prefix(prefixes)
            .and_then(|n| n.parse::<usize>().ok())
    };
    let mut clones: Vec<(usize, Instance)> = c
        .instances()
        .unwrap()
        .into_iter()
        .filter_map(|i| Some((round_of(&i.name, &['c'])?, i)))
        .collect();
    clones.sort_by_key(|(n, _)| *n);
    for (_, i) in clones.iter().rev().skip(1) {
        if i.state == InstanceState::Running {
            let _ = c
                .stop_instance(&i.name, &StopInstance { force: true })
                .and_then(|j| c.wait_job(&j.id.to_string(), Duration::from_secs(120), |_| {}));
        }
        let _ = c.delete_instance(&i.name);
    }
    // A clone's data volumes (`cN-d`) outlive it.
    for v in c.volumes(None, None).unwrap() {
        let of_deleted_clone = v.instance_id.is_none()
            && v.name
                .strip_suffix("-d")
                .and_then(|n| round_of(n, &['c']))
                .is_some();
        if of_deleted_clone {
            let _ = c.delete_volume(&v.name);
        }
    }
    let mut restored: Vec<(usize, String)> = c
        .volumes(None, None)
        .unwrap()
        .into_iter()
        .filter(|v| v.instance_id.is_none())
        .filter_map(|v| Some((round_of(&v.name, &['r'])?, v.name)))
        .collect();
    restored.sort();
    for (_, name) in restored.iter().rev().skip(KEEP) {
        let _ = c.delete_volume(name);
    }
    let mut templates: Vec<(usize, String)> = c
        .templates()
        .unwrap()
        .into_iter()
        .filter_map(|t| Some((round_of(&t.name, &['t', 'i'])?, t.name)))
        .collect();
    templates.sort();
    for (_, name) in templates.iter().rev().skip(KEEP) {
        if let Ok(job) = c.delete_template(name) {
            let _ = c.wait_job(&job.id.to_string(), Duration::from_secs(120), |_| {});
        }
    }
}

/// An unreliable S3 under a run of backups and restores: the proxy in
/// front of Garage refuses (a bare 503), cuts in the middle (a request or
/// an answer half-sent), slows (100–600 ms), answers an S3 error with its
/// XML body (500 InternalError, 503 SlowDown) or drips the answer (16 KiB
/// every 10 ms), each to 5 % of the new connections. Every snapshot ends BackedUp or Error with a named
/// reason; every restore succeeds with the recorded bytes or fails
/// named; at the end, the S3 calm, every BackedUp snapshot verifies and
/// restores byte for byte. CI runs `REPRISE_S3_FAULT_ROUNDS` rounds (12
/// by default); `scripts/faults.sh` runs 200.
#[test]
fn an_unreliable_s3_loses_nothing() {
    let Some(s3) = reprise_store::S3Config::from_test_env() else {
        eprintln!("REPRISE_TEST_S3=off: the unreliable-S3 campaign does not run");
        return;
    };
    let rounds = env_u64("REPRISE_S3_FAULT_ROUNDS", 12);
    let seed = seed_from_env("REPRISE_FAULT_SEED");
    eprintln!("unreliable S3: {rounds} rounds, seed {seed} (REPRISE_FAULT_SEED replays it)");
    let mut dice = Dice(seed.max(1));
    let proxy = s3_proxy::S3Proxy::start(&s3.endpoint);
    // One request per connection from the first (no fault yet): none
    // passes on a connection made before the faults begin.
    proxy.chaos(seed, 0);
    let through_proxy = reprise_store::S3Config {
        endpoint: proxy.endpoint.clone(),
        ..s3
    };
    let d = TestDaemon::start_with(|c| use_store(c, &Some(through_proxy)));
    let c = d.admin();
    let work = tempfile::tempdir().unwrap();
    let v: Volume = c
        .post("/api/v1/volumes", &json!({"name": "v", "size": "16M"}))
        .unwrap();
    proxy.chaos(seed, 50);
    let mut recorded: BTreeMap<uuid::Uuid, blake3::Hash> = BTreeMap::new();
    let mut violations = Vec::new();
    let (mut backed_up, mut failed, mut restored, mut restore_failed) = (0, 0, 0, 0);
    let restore = |c: &Client,
                   id: uuid::Uuid,
                   expected: blake3::Hash,
                   name: &str,
                   violations: &mut Vec<String>| {
        let job = c.volume_from_snapshot(
            &id.to_string(),
            &VolumeFromSnapshot {
                name: name.into(),
                zone: None,
                host: None,
            },
        );
        let done =
            job.and_then(|j| c.wait_job(&j.id.to_string(), Duration::from_secs(120), |_| {}));
        match done {
            Ok(_) => {
                let r = c.volume(name).unwrap();
                if content_digest(Path::new(&r.path), work.path()) != expected {
                    violations.push(format!("restore {name} of {id} differs"));
                }
                true
            }
            Err(e) if e.message.is_empty() || e.code.is_empty() => {
                violations.push(format!("restore {name} failed unnamed: {e:?}"));
                false
            }
            Err(_) => false,
        }
    };
    for n in 0..rounds {
        let at = dice.below(15);
        let write = format!("write -P {} {at}M 1M", 1 + n % 250);
        assert!(std::process::Command::new("qemu-io")
            .args(["-f", "qcow2", "-c", &write, &v.path])
            .status()
            .unwrap()
            .success());
        let job = c.create_snapshot(&CreateSnapshot {
            volume: "v".into(),
            name: Some(format!("s{n}")),
            quiesce: None,
            protect: false,
        });
        let _ = job.and_then(|j| c.wait_job(&j.id.to_string(), Duration::from_secs(120), |_| {}));
        let s = c.snapshot(&format!("s{n}")).unwrap();
        match s.state {
            SnapshotState::BackedUp => {
                backed_up += 1;
                recorded.insert(s.id, content_digest(Path::new(&v.path), work.path()));
            }
            SnapshotState::Error if s.error.as_deref().is_some_and(|e| !e.is_empty()) => {
                failed += 1
            }
            other => violations.push(format!("snapshot s{n} is {other} ({:?})", s.error)),
        }
        if n % 3 == 2 && !recorded.is_empty() {
            let ids: Vec<uuid::Uuid> = recorded.keys().copied().collect();
            let id = ids[dice.below(ids.len() as u64) as usize];
            if restore(&c, id, recorded[&id], &format!("r{n}"), &mut violations) {
                restored += 1;
            } else {
                restore_failed += 1;
            }
        }
    }
    let faults = proxy.faults();
    let load = |n: &std::sync::atomic::AtomicUsize| n.load(std::sync::atomic::Ordering::SeqCst);
    let (drawn, refused, cut, slowed, erred, dripped) = (
        load(&faults.drawn),
        load(&faults.refused),
        load(&faults.cut),
        load(&faults.slowed),
        load(&faults.erred),
        load(&faults.dripped),
    );
    proxy.calm();
    // The S3 calm: everything shown BackedUp is whole.
    for (&id, &expected) in &recorded {
        let verified = c
            .verify_snapshot(&id.to_string())
            .and_then(|j| c.wait_job(&j.id.to_string(), Duration::from_secs(120), |_| {}));
        if let Err(e) = verified {
            violations.push(format!("BackedUp snapshot {id} fails verify: {e:?}"));
        }
        let name = format!("final-{}", &id.simple().to_string()[..8]);
        if !restore(&c, id, expected, &name, &mut violations) {
            violations.push(format!(
                "BackedUp snapshot {id} does not restore with the S3 calm"
            ));
        }
    }
    eprintln!(
        "unreliable S3: {rounds} rounds; snapshots {backed_up} BackedUp, {failed} Error (named); restores during faults {restored} exact, {restore_failed} failed (named); of {drawn} connections (one request each) {refused} refused, {cut} cut, {slowed} slowed, {erred} answered 500 InternalError or 503 SlowDown, {dripped} dripped; every BackedUp verified and restored exact after; {} violations",
        violations.len()
    );
    assert!(
        refused + cut + slowed + erred + dripped > 0,
        "the proxy injected no fault"
    );
    assert!(violations.is_empty(), "{violations:#?}");
}

/// Garbage collection racing backups at seeded instants. Each round
/// writes new data into a detached volume (4 MiB at random places) and
/// starts its snapshot (an increment on the last one), its backup paused
/// 40 ms a chunk and the
/// sweep 5 ms a deleted chunk so that the race has room; at a random
/// moment inside it, a collection starts, an older snapshot is deleted
/// (at times the running backup's base, which must be refused by name
/// while it serves), or both. Every snapshot must end BackedUp, verify
/// (every chunk read back) and restore to the bytes recorded for it; a
/// refused delete must name its reason and leave the snapshot BackedUp.
/// CI runs `REPRISE_GC_RACE_ROUNDS` rounds (10 by default);
/// `scripts/faults.sh` runs 200.
#[test]
fn collections_racing_backups_lose_no_chunk() {
    let rounds = env_u64("REPRISE_GC_RACE_ROUNDS", 10);
    let seed = seed_from_env("REPRISE_FAULT_SEED");
    eprintln!(
        "collections racing backups: {rounds} rounds, seed {seed} (REPRISE_FAULT_SEED replays it)"
    );
    let mut dice = Dice(seed);
    let seams = Seams {
        chunk_pause: Duration::from_millis(40),
        sweep_pause: Duration::from_millis(5),
        ..Default::default()
    };
    let d = TestDaemon::start_seamed(seams, |_| {});
    let c = d.admin();
    let work = tempfile::tempdir().unwrap();
    let v: Volume = c
        .post("/api/v1/volumes", &json!({"name": "v", "size": "32M"}))
        .unwrap();
    let wait = |job: reprise_core::Result<Job>| {
        job.and_then(|j| c.wait_job(&j.id.to_string(), Duration::from_secs(120), |_| {}))
    };
    let mut live: BTreeMap<String, blake3::Hash> = BTreeMap::new();
    let mut violations = Vec::new();
    let mut actions: BTreeMap<&str, usize> = BTreeMap::new();
    let (mut deleted, mut restored, mut inside) = (0, 0, 0);
    let mut refused: BTreeMap<String, usize> = BTreeMap::new();
    for n in 0..rounds {
        for k in 0..4 {
            let write = format!("write -P {} {}M 1M", 1 + (n * 4 + k) % 250, dice.below(32));
            let ok = std::process::Command::new("qemu-io")
                .args(["-f", "qcow2", "-c", &write, &v.path])
                .status()
                .unwrap();
            assert!(ok.success(), "qemu-io {write}");
        }
        let expected = content_digest(Path::new(&v.path), work.path());
        let name = format!("s{n}");
        let backup = c.create_snapshot(&CreateSnapshot {
            volume: "v".into(),
            name: Some(name.clone()),
            quiesce: None,
            protect: false,
        });
        std::thread::sleep(Duration::from_millis(dice.below(250)));
        let running = backup
            .as_ref()
            .ok()
            .and_then(|j| c.job(&j.id.to_string()).ok())
            .is_some_and(|j| matches!(j.state, JobState::Queued | JobState::Running));
        inside += usize::from(running);
        let older: Vec<String> = live.keys().cloned().collect();
        // The newest older snapshot is the running backup's base.
        let victim = match dice.below(3) {
            _ if older.is_empty() => None,
            0 => older.last().cloned(),
            _ => Some(older[dice.below(older.len() as u64) as usize].clone()),
        };
        let action = match dice.below(3) {
            0 => "collect",
            1 if victim.is_some() => "delete",
            2 if victim.is_some() => "delete and collect",
            _ => "collect",
        };
        *actions.entry(action).or_default() += 1;
        let collection = action.contains("collect").then(|| c.collect_garbage());
        if action.contains("delete") {
            let victim = victim.expect("a snapshot to delete");
            match wait(c.delete_snapshot(&victim, false)) {
                Ok(_) => {
                    deleted += 1;
                    live.remove(&victim);
                }
                Err(e) if e.code.is_empty() => violations.push(format!(
                    "round {n}: delete of {victim} failed unnamed: {e:?}"
                )),
                Err(e) => {
                    *refused.entry(e.code).or_default() += 1;
                    let s = c.snapshot(&victim).unwrap();
                    if s.state != SnapshotState::BackedUp {
                        violations.push(format!(
                            "round {n}: {victim}, its delete refused, is {}",
                            s.state
                        ));
                    }
                }
            }
        }
        if let Some(Err(e)) = collection.map(wait) {
            violations.push(format!("round {n}: the collection failed: {e:?}"));
        }
        if let Err(e) = wait(backup) {
            violations.push(format!("round {n}: {name} failed: {e:?}"));
            continue;
        }
        live.insert(name.clone(), expected);
        if let Err(e) = wait(c.verify_snapshot(&name)) {
            violations.push(format!("round {n}: {name} does not verify: {e:?}"));
        }
        // An older snapshot now and then, restored whole.
        if n % 3 == 2 {
            let names: Vec<&String> = live.keys().collect();
            let pick = names[dice.below(names.len() as u64) as usize].clone();
            let target = format!("r{n}");
            let made = wait(c.volume_from_snapshot(
                &pick,
                &VolumeFromSnapshot {
                    name: target.clone(),
                    zone: None,
                    host: None,
                },
            ));
            match made {
                Ok(_) => {
                    let r = c.volume(&target).unwrap();
                    if content_digest(Path::new(&r.path), work.path()) != live[&pick] {
                        violations.push(format!("round {n}: {pick} restores other bytes"));
                    }
                    restored += 1;
                    c.delete_volume(&target).unwrap();
                }
                Err(e) => violations.push(format!("round {n}: {pick} does not restore: {e:?}")),
            }
        }
    }
    // At the end, after one more collection, every snapshot kept is whole.
    if let Err(e) = wait(c.collect_garbage()) {
        violations.push(format!("the last collection failed: {e:?}"));
    }
    for name in live.keys() {
        if let Err(e) = wait(c.verify_snapshot(name)) {
            violations.push(format!("at the end, {name} does not verify: {e:?}"));
        }
    }
    eprintln!(
        "collections racing backups: {rounds} rounds, actions {actions:?} ({inside} while the backup ran); {deleted} deletes done, refused by name {refused:?}, {restored} restores exact; {} snapshots kept all verify; {} violations",
        live.len(),
        violations.len()
    );
    assert!(violations.is_empty(), "{violations:#?}");
}
