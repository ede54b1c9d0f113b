//! The daemon killed (SIGKILL) or stopped (SIGSTOP) in the middle of an
//! operation, then started again: the guest is not left frozen (its
//! freeze's guard thaws it, without the daemon), no half-made point
//! remains, no job stays Running, and the instance is re-attached, not
//! lost or duplicated.

use reprise_core::model::*;
use reprise_testing::*;
use serde_json::json;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A daemon in its own process (with `hold` of the guest frozen before
/// each cut, and `bound` seconds of freeze at most) whose point job `p` on
/// instance `vm` has just frozen the guest.
struct FrozenInAPoint {
    config: PathBuf,
    data: PathBuf,
    daemon: DaemonProcess,
    c: reprise_client::Client,
    vm: Instance,
    job: Job,
    _vms: KillInstancesOnDrop,
    _dir: tempfile::TempDir,
}

fn frozen_in_a_point(bound_secs: u64, hold_ms: u64) -> FrozenInAPoint {
    let dir = tempfile::Builder::new().prefix("rp").tempdir().unwrap();
    let data: PathBuf = dir.path().join("data");
    let config = dir.path().join("reprise.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\nlisten = \"127.0.0.1:0\"\nimport_dirs = [\"{}\"]\n[snapshots]\nfreeze_timeout_secs = {bound_secs}\n",
            data.display(),
            guest_dir().display()
        ),
    )
    .unwrap();
    let vms = KillInstancesOnDrop(data.join("run"));
    let (daemon, c) = serve_seamed_process(&config, &data, &hold_frozen(hold_ms));
    let _: Volume = c
        .post("/api/v1/volumes", &json!({"name": "d", "size": "64M"}))
        .unwrap();
    run_job(&c, "/api/v1/instances", &guest_instance("vm", &["d"]));
    let vm = instance(&c, "vm");
    let agent_ready = Instant::now();
    while freeze_status(&vm).is_none() {
        assert!(
            agent_ready.elapsed() < Duration::from_secs(90),
            "the agent never answered"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The guest notes its uptime every 50 ms on the disk that is frozen:
    // the longest gap between two notes is how long it stayed frozen.
    guest_sh(
        &vm,
        "setsid sh -c 'while :; do read up rest < /proc/uptime; echo $up >> /mnt/data/ticks; \
         usleep 50000; done' </dev/null >/dev/null 2>&1 &",
    );
    let job = c
        .start_job("/api/v1/instances/vm/points", &json!({"name": "p"}))
        .unwrap();
    // The job's log says when the guest is frozen (the seam holds it).
    let deadline = Instant::now() + Duration::from_secs(20);
    while !c
        .job(&job.id.to_string())
        .unwrap()
        .log
        .iter()
        .any(|l| l.message.contains("holding the guest frozen"))
    {
        assert!(Instant::now() < deadline, "the guest was never frozen");
        std::thread::sleep(Duration::from_millis(50));
    }
    FrozenInAPoint {
        config,
        data,
        daemon,
        c,
        vm,
        job,
        _vms: vms,
        _dir: dir,
    }
}

#[test]
fn a_daemon_killed_while_the_guest_is_frozen() {
    // The guest stays frozen 20 s before the cut: the kill lands inside.
    // (Fields moved out one by one: the rest, its directory included, lives
    // to the end of the test.)
    let f = frozen_in_a_point(60, 20_000);
    let (config, data, vm, job) = (
        f.config.clone(),
        f.data.clone(),
        f.vm.clone(),
        f.job.clone(),
    );
    let mut daemon = f.daemon;
    daemon.child.kill().unwrap();
    daemon.child.wait().unwrap();
    // The freeze's guard, a process of its own, saw the daemon go and
    // thawed the guest at once, with no daemon at all.
    let killed = Instant::now();
    while freeze_status(&vm).as_deref() != Some("thawed") {
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "the guest stayed frozen after the daemon died"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("thawed {:?} after the daemon was killed", killed.elapsed());

    let (_daemon, c) = serve_process(env!("CARGO_BIN_EXE_reprise"), &config, &data);
    assert_eq!(
        freeze_status(&vm).as_deref(),
        Some("thawed"),
        "still thawed"
    );
    let again = instance(&c, "vm");
    assert_eq!(
        (again.state, again.pid),
        (InstanceState::Running, vm.pid),
        "re-attached"
    );
    let points: Vec<Point> = c.get("/api/v1/instances/vm/points").unwrap();
    assert!(points.is_empty(), "no half-made point: {points:?}");
    let job = c.job(&job.id.to_string()).unwrap();
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.error.unwrap().code, "daemon_restarted");
    let d: Volume = c.get("/api/v1/volumes/d").unwrap();
    assert!(
        qemu_img_info(&d.path).get("snapshots").is_none(),
        "no stray snapshot in the qcow2"
    );
}

/// A daemon stopped (SIGSTOP) while the guest is frozen cannot thaw it:
/// the freeze's guard does, at the bound, and the point the daemon
/// finishes once it runs again says it is only crash-consistent.
#[test]
fn a_daemon_stopped_while_the_guest_is_frozen() {
    // The guest stays frozen 8 s before the cut: past the 3 s bound.
    let f = frozen_in_a_point(3, 8_000);
    let (c, vm, job) = (&f.c, f.vm.clone(), f.job.clone());
    let daemon = &f.daemon;
    let pid = daemon.child.id().to_string();
    let signal = |sig: &str| {
        assert!(std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success())
    };
    // Stopped for 7 s: the stopped daemon still holds its descriptor of
    // the agent's connection, so the guest's own notes tell when it thawed.
    signal("-STOP");
    std::thread::sleep(Duration::from_secs(7));
    signal("-CONT");
    let done = c
        .wait_job(&job.id.to_string(), Duration::from_secs(60), |_| {})
        .unwrap();
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(freeze_status(&vm).as_deref(), Some("thawed"));
    let ticks: Vec<f64> = guest_sh(&vm, "cat /mnt/data/ticks")
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    let frozen = ticks.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    eprintln!("the guest stayed frozen {frozen:.2} s of the daemon's 7 s stop");
    assert!(
        (2.5..5.0).contains(&frozen),
        "frozen {frozen:.2} s: thawed by the 3 s bound, not when the daemon ran again"
    );
    let p: Point = c.get("/api/v1/instances/vm/points/p").unwrap();
    assert_eq!(p.state, PointState::Ready);
    assert_eq!(p.consistency, "crash", "cut after the bound");
}

/// The region part of a config file for one of the test stores.
fn region_toml(s3: &Option<reprise_store::S3Config>) -> String {
    match s3 {
        None => String::new(),
        Some(s) => format!(
            "[region]\nstore = \"s3\"\nprefix = \"crash-{}\"\n[region.s3]\nendpoint = \"{}\"\nbucket = \"{}\"\nregion = \"{}\"\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\n",
            uuid::Uuid::new_v4(),
            s.endpoint,
            s.bucket,
            s.region,
            s.access_key_id,
            s.secret_access_key
        ),
    }
}

#[test]
fn a_daemon_killed_during_a_backup_leaves_no_half_snapshot() {
    for (kind, s3) in region_stores() {
        let dir = tempfile::Builder::new().prefix("rp").tempdir().unwrap();
        let data: PathBuf = dir.path().join("data");
        let config = dir.path().join("reprise.toml");
        let region = region_toml(&s3);
        std::fs::write(
            &config,
            format!(
                "data_dir = \"{}\"\nlisten = \"127.0.0.1:0\"\n{region}",
                data.display()
            ),
        )
        .unwrap();
        // A second after each chunk: the kill lands inside the backup.
        let (mut daemon, c) = serve_seamed_process(&config, &data, &chunk_pause(1000));
        let v: Volume = c
            .post("/api/v1/volumes", &json!({"name": "d", "size": "64M"}))
            .unwrap();
        let status = std::process::Command::new("qemu-io")
            .args(["-f", "qcow2", "-c", "write -P 7 0 40M", &v.path])
            .output()
            .unwrap()
            .status;
        assert!(status.success());
        let job = c
            .start_job("/api/v1/snapshots", &json!({"volume": "d", "name": "s"}))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s: Snapshot = c.get("/api/v1/snapshots/s").unwrap();
            if s.progress_done > 0 {
                assert!(s.progress_done < s.progress_total, "{kind}: still running");
                break;
            }
            assert!(Instant::now() < deadline, "{kind}: no progress");
            std::thread::sleep(Duration::from_millis(20));
        }
        daemon.child.kill().unwrap();
        daemon.child.wait().unwrap();

        let (_daemon, c) = serve_process(env!("CARGO_BIN_EXE_reprise"), &config, &data);
        let s: Snapshot = c.get("/api/v1/snapshots/s").unwrap();
        assert_eq!(
            s.state,
            SnapshotState::Error,
            "{kind}: never BackedUp half-made"
        );
        assert!(s.error.unwrap().contains("daemon stopped"), "{kind}");
        assert_eq!(
            c.job(&job.id.to_string()).unwrap().error.unwrap().code,
            "daemon_restarted"
        );
        assert!(
            qemu_img_info(&v.path).get("snapshots").is_none(),
            "{kind}: its tag is gone from the volume"
        );
        // A new snapshot works, and a collection removes the orphans.
        let job = c
            .start_job(
                "/api/v1/snapshots",
                &json!({"volume": "d", "name": "again"}),
            )
            .unwrap();
        let done = c
            .wait_job(&job.id.to_string(), Duration::from_secs(120), |_| {})
            .unwrap();
        assert_eq!(done.state, JobState::Succeeded);
        let again: Snapshot = c.get("/api/v1/snapshots/again").unwrap();
        assert_eq!(again.state, SnapshotState::BackedUp, "{kind}");
        assert_eq!(again.base_id, None, "{kind}: the failed one is no base");
        let job = c
            .start_job("/api/v1/snapshots/again/verify", &json!({}))
            .unwrap();
        c.wait_job(&job.id.to_string(), Duration::from_secs(60), |_| {})
            .unwrap();
    }
}

/// Run `script` in the guest through its agent's socket; its output.
fn guest_sh(vm: &Instance, script: &str) -> String {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (code, out) = rt.block_on(agent_sh(
        std::path::Path::new(&vm.guest_agent_socket),
        script,
    ));
    assert_eq!(code, 0, "{script}: {out}");
    out
}
