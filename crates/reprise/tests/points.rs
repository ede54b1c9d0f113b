//! Recovery points with the real test guest: memory points that resume,
//! quiesced disk-only points, the tree, the freeze watchdog, and the rules.

use reprise_client::Client;
use reprise_core::model::*;
use reprise_testing::*;
use serde_json::json;
use std::time::{Duration, Instant};

fn points(c: &Client, vm: &str) -> Vec<Point> {
    c.get(&format!("/api/v1/instances/{vm}/points")).unwrap()
}

fn take(c: &Client, vm: &str, body: serde_json::Value) -> Point {
    let job = run_job(c, &format!("/api/v1/instances/{vm}/points"), &body);
    c.get(&format!("/api/v1/instances/{vm}/points/{}", job.target_id))
        .unwrap()
}

/// A job's log, its messages only.
fn job_log(c: &Client, job: &Job) -> Vec<String> {
    c.job(&job.id.to_string())
        .unwrap()
        .log
        .into_iter()
        .map(|l| l.message)
        .collect()
}

fn revert(c: &Client, vm: &str, point: &str) -> Job {
    run_job(
        c,
        &format!("/api/v1/instances/{vm}/points/{point}/revert"),
        &json!({}),
    )
}

/// A guest with a data volume, booted, agent answering.
fn booted(d: &TestDaemon, name: &str) -> Instance {
    d.booted_guest(&d.admin(), name, &format!("{name}-data"))
}

fn last_seq(d: &TestDaemon, vm: &Instance, file: &str) -> u64 {
    let (_, out) = d.guest_sh(vm, &format!("tail -n1 {file}"));
    out.split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no SEQ in {out:?}"))
}

fn uptime(d: &TestDaemon, vm: &Instance) -> f64 {
    let (_, out) = d.guest_sh(vm, "cat /proc/uptime");
    out.split_whitespace().next().unwrap().parse().unwrap()
}

/// Test 1: a memory point resumes the guest where it was, in memory and on
/// disk, without a reboot: saved in the background (the default where the
/// host allows, as here), and with `snapshot-save`.
#[test]
fn a_memory_point_resumes_the_guest_without_a_reboot() {
    use reprise_daemon::config::MemorySave;
    for (save, method, loaded) in [
        (MemorySave::Auto, "background", "migrate-incoming"),
        (MemorySave::SnapshotSave, "snapshot-save", "snapshot-load"),
    ] {
        eprintln!("memory_save = {save:?}");
        memory_point_resumes(save, method, loaded);
    }
}

fn memory_point_resumes(save: reprise_daemon::config::MemorySave, method: &str, loaded: &str) {
    let d = TestDaemon::start_with(|c| c.snapshots.memory_save = save);
    let c = d.admin();
    let vm = booted(&d, "counter");
    let (code, _) = d.guest_sh(
        &vm,
        "setsid /bin/writer /mnt/data/count.log 0.05 </dev/null >/dev/null 2>&1 &",
    );
    assert_eq!(code, 0);
    std::thread::sleep(Duration::from_secs(3));
    let writer_pid = d.guest_sh(&vm, "cat /run/writer.pid").1;
    let up_before = uptime(&d, &vm);
    let before = last_seq(&d, &vm, "/mnt/data/count.log");
    let p = take(&c, "counter", json!({"name": "mem", "memory": true}));
    assert_eq!(
        (p.state, p.memory, p.consistency.as_str()),
        (PointState::Ready, true, "memory")
    );
    assert!(
        p.vm_state_bytes.unwrap() > 1 << 20,
        "the RAM is saved: {:?}",
        p.vm_state_bytes
    );
    assert!(p.frozen_ms.is_some(), "the pause is measured");
    assert_eq!(p.memory_save.as_deref(), Some(method));
    if method == "background" {
        assert!(
            p.frozen_ms.unwrap() < 200,
            "the guest ran on while its RAM was written: paused {:?} ms",
            p.frozen_ms
        );
    }
    let at_point = last_seq(&d, &vm, "/mnt/data/count.log");
    assert!(at_point >= before);
    std::thread::sleep(Duration::from_secs(3));
    let later = last_seq(&d, &vm, "/mnt/data/count.log");
    assert!(
        later > at_point + 10,
        "the counter runs on: {at_point} -> {later}"
    );

    let job = revert(&c, "counter", "mem");
    let reverted_at = std::time::Instant::now();
    assert!(
        job.log.iter().any(|l| l.message.contains(loaded)),
        "{:?}",
        job.log
    );
    let vm = instance(&c, "counter");
    assert_eq!(vm.state, InstanceState::Running);
    let resumed = last_seq(&d, &vm, "/mnt/data/count.log");
    assert!(
        resumed < later,
        "back to the earlier counter: {resumed} < {later}"
    );
    // The point's instant lies between the request and the job's end (in
    // the background the guest counts on while its RAM is written); the
    // resumed writer then counts on until the read, one line per 50 ms,
    // plus the lines of the client's last 150 ms poll and one in progress.
    let since_resume = reverted_at.elapsed().as_millis() as u64 / 50 + 5;
    assert!(
        resumed + 1 >= before && resumed <= at_point + since_resume,
        "{before} <= {resumed} <= {at_point} + {since_resume}"
    );
    assert!(uptime(&d, &vm) >= up_before, "no reboot: uptime went on");
    assert_eq!(
        d.guest_sh(&vm, "cat /run/writer.pid").1,
        writer_pid,
        "the same writer process"
    );
    let (code, _) = d.guest_sh(&vm, &format!("kill -0 {}", writer_pid.trim()));
    assert_eq!(code, 0, "the writer still runs");
    // On disk: the lines continue without a gap or a repeat.
    std::thread::sleep(Duration::from_secs(1));
    let (_, lines) = d.guest_sh(&vm, "awk '{print $2}' /mnt/data/count.log");
    let seqs: Vec<u64> = lines.lines().map(|l| l.trim().parse().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "contiguous counter on disk"
    );
    assert!(*seqs.last().unwrap() > resumed, "and it counts on");

    // A state saved in the background is a file of its own, counted in
    // the point's size, and goes with the point.
    let state = d.config.point_state_path(vm.id, p.id);
    assert_eq!(
        state.exists(),
        method == "background",
        "{}",
        state.display()
    );
    if method == "background" {
        let len = std::fs::metadata(&state).unwrap().len();
        assert_eq!(p.vm_state_bytes, Some(len));
        assert!(p.size_bytes.unwrap() >= len);
    }
    let job = c
        .delete_job("/api/v1/instances/counter/points/mem")
        .unwrap();
    c.wait_job(&job.id.to_string(), Duration::from_secs(60), |_| {})
        .unwrap();
    assert!(!state.exists());
    assert!(points(&c, "counter").is_empty());
}

/// Guest RAM on huge pages (`qemu.hugepages`): a point saved in the
/// background before the switch, from anonymous RAM, loads into a QEMU
/// whose RAM is on huge pages, and a point saved there loads back; the
/// guest's memory is the point's each time.
#[test]
fn memory_points_load_across_huge_pages() {
    use reprise_daemon::config::MemorySave;
    // The test guest's 256 MiB, and a margin.
    let _pages = reserve_huge_pages(128 + 16);
    let mut d = TestDaemon::start_with(|c| c.snapshots.memory_save = MemorySave::Background);
    let vm = booted(&d, "huge");
    let mark = |d: &TestDaemon, vm: &Instance, word: &str| {
        let (code, out) = d.guest_sh(vm, &format!("echo {word} > /run/mark"));
        assert_eq!(code, 0, "{out}");
    };
    let marked =
        |d: &TestDaemon, vm: &Instance| d.guest_sh(vm, "cat /run/mark").1.trim().to_string();
    mark(&d, &vm, "anonymous");
    let p = take(
        &d.admin(),
        "huge",
        json!({"name": "anonymous", "memory": true}),
    );
    assert_eq!(p.memory_save.as_deref(), Some("background"));
    mark(&d, &vm, "later");

    d.stop();
    d.config.qemu.hugepages = true;
    d.start_again();
    let c = d.admin();
    let free = free_huge_pages();
    revert(&c, "huge", "anonymous");
    let vm = instance(&c, "huge");
    assert_eq!(vm.state, InstanceState::Running);
    assert_eq!(
        marked(&d, &vm),
        "anonymous",
        "the guest's RAM is the point's"
    );
    let taken = free.saturating_sub(free_huge_pages());
    assert!(
        taken >= 128,
        "the new QEMU's RAM is on huge pages: {taken} taken"
    );

    mark(&d, &vm, "huge");
    let p = take(&c, "huge", json!({"name": "on-huge-pages", "memory": true}));
    assert_eq!(
        (p.state, p.memory_save.as_deref()),
        (PointState::Ready, Some("background"))
    );
    assert!(p.frozen_ms.is_some(), "the pause is measured");
    mark(&d, &vm, "later");
    revert(&c, "huge", "on-huge-pages");
    let vm = instance(&c, "huge");
    assert_eq!(vm.state, InstanceState::Running);
    assert_eq!(marked(&d, &vm), "huge", "the guest's RAM is the point's");
    assert!(free.saturating_sub(free_huge_pages()) >= 128);
}

/// Test 2: a quiesced disk-only point: frozen during, thawed after; a
/// revert drops the later file, keeps the earlier ones, and the
/// filesystem checks clean.
#[test]
fn a_quiesced_disk_point_reverts_files_and_the_fs_is_clean() {
    let d = TestDaemon::start_seamed(hold_frozen(1500), |_| {});
    let c = d.admin();
    let vm = booted(&d, "files");
    d.guest_sh(&vm, "echo before > /mnt/data/before.txt && sync");
    start_ticker(&d, &vm);
    let job = run_job(
        &c,
        "/api/v1/instances/files/points",
        &json!({"name": "clean"}),
    );
    // The agent reported the freeze, the guest's writes stalled while the
    // point was cut, and the agent reports it thawed after.
    assert!(job
        .log
        .iter()
        .any(|l| l.message.contains("reports the guest frozen")));
    assert!(job.log.iter().any(|l| l.message.contains("were frozen")));
    let gap = max_tick_gap(&d, &vm);
    assert!(gap >= 1.4, "writes stalled {gap} s during a 1.5 s freeze");
    assert_eq!(freeze_status(&vm).as_deref(), Some("thawed"));
    let p = points(&c, "files").pop().unwrap();
    assert_eq!((p.consistency.as_str(), p.memory), ("filesystem", false));
    assert!(p.frozen_ms.unwrap() >= 1500, "{:?}", p.frozen_ms);

    d.guest_sh(&vm, "echo after > /mnt/data/after.txt && sync");
    let job = revert(&c, "files", "clean");
    assert!(job.log.iter().any(|l| l.message.contains("reboot")));
    let vm = wait_state(&c, "files", InstanceState::Running, Duration::from_secs(60));
    let (_, out) = d.guest_sh(&vm, "ls /mnt/data; cat /mnt/data/before.txt");
    assert!(
        out.contains("before.txt") && !out.contains("after.txt"),
        "{out}"
    );
    assert!(out.contains("before\n"), "{out}");
    // The reverted filesystem passes fsck.
    run_job(&c, "/api/v1/instances/files/stop", &json!({}));
    let data: Volume = c.get("/api/v1/volumes/files-data").unwrap();
    assert_eq!(qemu_img_check(&data.path), 0);
    let raw = d.dir.path().join("files.raw");
    let ok = std::process::Command::new("qemu-img")
        .args(["convert", "-O", "raw", &data.path, raw.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(ok.success());
    let fsck = std::process::Command::new("e2fsck")
        .args(["-fn", raw.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "fsck: {}",
        String::from_utf8_lossy(&fsck.stdout)
    );
}

/// Test 3: A, then B; revert to A; take C: A has children B and C; revert
/// to B works; deleting A keeps B and C usable.
#[test]
fn the_tree_keeps_every_branch() {
    let d = TestDaemon::start();
    let c = d.admin();
    let vm = booted(&d, "tree");
    d.guest_sh(&vm, "echo A > /mnt/data/mark && sync");
    let a = take(&c, "tree", json!({"name": "A"}));
    d.guest_sh(&vm, "echo B > /mnt/data/mark && sync");
    let b = take(&c, "tree", json!({"name": "B", "description": "after B"}));
    assert_eq!(b.parent_id, Some(a.id));
    revert(&c, "tree", "A");
    let vm = wait_state(&c, "tree", InstanceState::Running, Duration::from_secs(60));
    assert_eq!(d.guest_sh(&vm, "cat /mnt/data/mark").1.trim(), "A");
    d.guest_sh(&vm, "echo C > /mnt/data/mark && sync");
    let cpt = take(&c, "tree", json!({"name": "C"}));
    assert_eq!(cpt.parent_id, Some(a.id), "C branches from A");
    let all = points(&c, "tree");
    let children_of_a: Vec<&str> = all
        .iter()
        .filter(|p| p.parent_id == Some(a.id))
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(children_of_a, ["B", "C"]);
    assert_eq!(
        all.iter()
            .filter(|p| p.current)
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>(),
        ["C"]
    );
    assert!(
        all.iter().all(|p| p.size_bytes.is_some()),
        "the space each holds is shown"
    );

    revert(&c, "tree", "B");
    let vm = wait_state(&c, "tree", InstanceState::Running, Duration::from_secs(60));
    assert_eq!(d.guest_sh(&vm, "cat /mnt/data/mark").1.trim(), "B");

    delete_point(&c, "tree", "A");
    let left = points(&c, "tree");
    assert_eq!(
        left.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        ["B", "C"]
    );
    assert!(
        left.iter().all(|p| p.parent_id.is_none()),
        "A's children moved up to its parent"
    );
    revert(&c, "tree", "C");
    let vm = wait_state(&c, "tree", InstanceState::Running, Duration::from_secs(60));
    assert_eq!(d.guest_sh(&vm, "cat /mnt/data/mark").1.trim(), "C");
    revert(&c, "tree", "B");
    let vm = wait_state(&c, "tree", InstanceState::Running, Duration::from_secs(60));
    assert_eq!(d.guest_sh(&vm, "cat /mnt/data/mark").1.trim(), "B");
    let data: Volume = c.get("/api/v1/volumes/tree-data").unwrap();
    let tags = qemu_img_info(&data.path)["snapshots"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(tags, 2, "A's snapshot left the qcow2");
    let job = c.delete_job("/api/v1/instances/tree/points").unwrap();
    c.wait_job(&job.id.to_string(), Duration::from_secs(60), |_| {})
        .unwrap();
    assert!(points(&c, "tree").is_empty());
    assert!(qemu_img_info(&data.path)
        .get("snapshots")
        .is_none_or(|s| s.as_array().unwrap().is_empty()));
}

fn delete_point(c: &Client, vm: &str, point: &str) {
    let job = c
        .delete_job(&format!("/api/v1/instances/{vm}/points/{point}"))
        .unwrap();
    c.wait_job(&job.id.to_string(), Duration::from_secs(60), |_| {})
        .unwrap();
}

/// A guest loop that appends its uptime to a file every 50 ms and syncs:
/// a frozen filesystem shows as a gap between two lines.
fn start_ticker(d: &TestDaemon, vm: &Instance) {
    let (code, _) = d.guest_sh(
        vm,
        "setsid sh -c 'while :; do cut -d\" \" -f1 /proc/uptime >> /mnt/data/ticks; sync; sleep 0.05; done' </dev/null >/dev/null 2>&1 &",
    );
    assert_eq!(code, 0);
    std::thread::sleep(Duration::from_millis(500));
}

/// The longest pause between two ticks, in seconds.
fn max_tick_gap(d: &TestDaemon, vm: &Instance) -> f64 {
    std::thread::sleep(Duration::from_millis(300));
    let (_, out) = d.guest_sh(vm, "cat /mnt/data/ticks");
    let ticks: Vec<f64> = out.lines().filter_map(|l| l.trim().parse().ok()).collect();
    assert!(ticks.len() > 5, "the ticker ran: {out}");
    ticks.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max)
}

/// Test 4a: the freeze outlasts its bound (a hang between freeze and
/// snapshot): the watchdog thaws the guest within the bound, the VM runs,
/// and the point is crash-consistent — or an error when quiesce is required.
#[test]
fn the_watchdog_thaws_a_freeze_that_outlasts_its_bound() {
    let d = TestDaemon::start_seamed(hold_frozen(5000), |c| {
        c.snapshots.freeze_timeout_secs = 2;
    });
    let c = d.admin();
    let vm = booted(&d, "hang");
    start_ticker(&d, &vm);
    let job = c
        .start_job("/api/v1/instances/hang/points", &json!({"name": "late"}))
        .unwrap();
    let job = c
        .wait_job(&job.id.to_string(), Duration::from_secs(60), |_| {})
        .unwrap();
    assert!(job
        .log
        .iter()
        .any(|l| l.message.contains("crash-consistent")));
    // The guest's writes stalled about the bound (2 s), not the 5 s hold:
    // the watchdog thawed it while the daemon still held the snapshot back.
    let gap = max_tick_gap(&d, &vm);
    assert!((1.5..3.5).contains(&gap), "writes stalled {gap} s");
    let p = points(&c, "hang").pop().unwrap();
    assert_eq!(
        (p.state, p.consistency.as_str()),
        (PointState::Ready, "crash")
    );
    assert_eq!(instance(&c, "hang").state, InstanceState::Running);

    let job = c
        .start_job(
            "/api/v1/instances/hang/points",
            &json!({"name": "strict", "quiesce": "required"}),
        )
        .unwrap();
    let e = c
        .wait_job(&job.id.to_string(), Duration::from_secs(60), |_| {})
        .unwrap_err();
    assert_eq!(e.code, "quiesce_failed");
    let strict = points(&c, "hang")
        .into_iter()
        .find(|p| p.name == "strict")
        .unwrap();
    assert_eq!(strict.state, PointState::Error);
    assert!(strict.error.unwrap().contains("freeze bound"));
    let data: Volume = c.get("/api/v1/volumes/hang-data").unwrap();
    let tags = qemu_img_info(&data.path)["snapshots"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(tags, 1, "the failed point left no snapshot behind");
    assert_eq!(freeze_status(&vm).as_deref(), Some("thawed"));
    let (code, _) = d.guest_sh(&vm, "echo ok > /mnt/data/writable && sync");
    assert_eq!(code, 0, "the guest writes again");
}

/// Test 4b: the agent is killed while the guest is frozen; init restarts
/// it, the guest is thawed, the VM runs and the point is taken.
#[test]
fn a_killed_agent_does_not_leave_the_guest_frozen() {
    let d = TestDaemon::start_seamed(hold_frozen(2500), |c| {
        c.snapshots.freeze_timeout_secs = 6;
    });
    let c = d.admin();
    let vm = booted(&d, "killed");
    d.guest_sh(
        &vm,
        "(sleep 1; kill -9 $(pidof qemu-ga)) </dev/null >/dev/null 2>&1 &",
    );
    let job = c
        .start_job("/api/v1/instances/killed/points", &json!({"name": "k"}))
        .unwrap();
    let started = Instant::now();
    c.wait_job(&job.id.to_string(), Duration::from_secs(60), |_| {})
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(instance(&c, "killed").state, InstanceState::Running);
    let (code, out) = d.guest_sh(
        &vm,
        "echo ok > /mnt/data/after-kill && sync && cat /mnt/data/after-kill",
    );
    assert_eq!(
        (code, out.trim()),
        (0, "ok"),
        "the guest's filesystem is writable again"
    );
    let p = points(&c, "killed").pop().unwrap();
    // The freeze held through the snapshot (a dead agent does not thaw a
    // filesystem), and the restarted agent thawed it.
    assert_eq!(
        (p.state, p.consistency.as_str()),
        (PointState::Ready, "filesystem")
    );
}

/// Test 4c: an agent that does not answer (its channel is held): the point
/// is crash-consistent, or refused when quiesce is required.
#[test]
fn an_unanswering_agent_gives_a_crash_consistent_point() {
    let d = TestDaemon::start();
    let c = d.admin();
    let vm = booted(&d, "mute");
    // Another client holds the agent's only channel.
    let hold = std::os::unix::net::UnixStream::connect(&vm.guest_agent_socket).unwrap();
    let p = take(&c, "mute", json!({"name": "crashy"}));
    assert_eq!(
        (p.state, p.consistency.as_str(), p.frozen_ms),
        (PointState::Ready, "crash", None)
    );
    let job = c
        .start_job(
            "/api/v1/instances/mute/points",
            &json!({"name": "must", "quiesce": "required"}),
        )
        .unwrap();
    let e = c
        .wait_job(&job.id.to_string(), Duration::from_secs(60), |_| {})
        .unwrap_err();
    assert_eq!(e.code, "quiesce_failed");
    assert!(e.message.contains("required"));
    let p = take(&c, "mute", json!({"name": "off", "quiesce": "none"}));
    assert_eq!(p.consistency, "crash");
    drop(hold);
    assert_eq!(instance(&c, "mute").state, InstanceState::Running);
}

/// Test 5: the rules — a VPS plan's single point, the volume locks, the
/// operator's switch — each refused with its named error, nothing changed.
#[test]
fn plans_locks_and_the_snapshot_switch() {
    let d = TestDaemon::start_with(|c| {
        c.plans.insert(
            "vps".into(),
            reprise_core::plan::PlanLimits {
                max_recovery_points: Some(1),
                ..Default::default()
            },
        );
    });
    let c = d.admin();
    let _: Volume = c
        .post("/api/v1/volumes", &json!({"name": "spare", "size": "64M"}))
        .unwrap();
    let mut req = guest_instance("vps1", &[]);
    req.plan = Some("vps".into());
    req.no_start = true;
    let _: Volume = c
        .post(
            "/api/v1/volumes",
            &json!({"name": "vps1-data", "size": "64M"}),
        )
        .unwrap();
    req.data_volumes = vec!["vps1-data".into()];
    run_job(&c, "/api/v1/instances", &req);
    let mut bad = guest_instance("nope", &[]);
    bad.plan = Some("gold".into());
    assert_eq!(
        c.start_job("/api/v1/instances", &bad).unwrap_err().code,
        "plan_not_found"
    );

    // A stopped instance takes its point with qemu-img.
    let first = take(&c, "vps1", json!({"name": "only"}));
    assert_eq!(first.state, PointState::Ready);
    let e = c
        .start_job("/api/v1/instances/vps1/points", &json!({}))
        .unwrap_err();
    assert_eq!(e.code, "point_limit_reached");
    assert!(
        e.message
            .contains("delete the existing recovery point first"),
        "{}",
        e.message
    );

    let e = c
        .post::<_, Volume>("/api/v1/volumes/vps1-data/resize", &json!({"size": "128M"}))
        .unwrap_err();
    assert_eq!(e.code, "locked_by_points");
    assert!(
        e.message.contains("only"),
        "the error names the points: {}",
        e.message
    );
    let e = c
        .post::<_, Volume>("/api/v1/volumes/spare/attach", &json!({"instance": "vps1"}))
        .unwrap_err();
    assert_eq!(e.code, "locked_by_points");
    let e = c
        .post::<_, Volume>("/api/v1/volumes/vps1-data/detach", &json!({}))
        .unwrap_err();
    assert_eq!(e.code, "locked_by_points");
    let e = c.delete("/api/v1/instances/vps1").unwrap_err();
    assert_eq!(e.code, "locked_by_points");
    let e = c.delete("/api/v1/volumes/vps1-data").unwrap_err();
    assert_eq!(
        e.code, "locked_by_points",
        "an attached disk a point covers"
    );
    let data: Volume = c.get("/api/v1/volumes/vps1-data").unwrap();
    assert_eq!(
        (data.size_bytes, data.instance.as_deref()),
        (64 << 20, Some("vps1")),
        "nothing changed"
    );

    // The operator's switch, admin only.
    let alice = d.account("alice");
    let e = alice
        .post::<_, Instance>(
            "/api/v1/instances/vps1/settings",
            &json!({"snapshots_enabled": false}),
        )
        .unwrap_err();
    assert_eq!(e.code, "admin_only");
    let i: Instance = c
        .post(
            "/api/v1/instances/vps1/settings",
            &json!({"snapshots_enabled": false}),
        )
        .unwrap();
    assert!(!i.snapshots_enabled);
    delete_point(&c, "vps1", "only");
    let e = c
        .start_job("/api/v1/instances/vps1/points", &json!({}))
        .unwrap_err();
    assert_eq!(e.code, "snapshots_disabled");
    assert!(points(&c, "vps1").is_empty());
    let _: Instance = c
        .post(
            "/api/v1/instances/vps1/settings",
            &json!({"snapshots_enabled": true, "plan": ""}),
        )
        .unwrap();
    // Names: generated when blank, refused when taken, invalid named.
    let p = take(&c, "vps1", json!({"name": ""}));
    assert!(p.name.starts_with("vps1-20"), "{}", p.name);
    let e = c
        .start_job("/api/v1/instances/vps1/points", &json!({"name": p.name}))
        .unwrap_err();
    assert_eq!(e.code, "name_taken");
    let e = c
        .start_job("/api/v1/instances/vps1/points", &json!({"name": "a b"}))
        .unwrap_err();
    assert_eq!(e.code, "name_invalid");
    let e = c
        .start_job(
            "/api/v1/instances/vps1/points",
            &json!({"quiesce": "maybe"}),
        )
        .unwrap_err();
    assert_eq!(e.code, "quiesce_invalid");
    let e = c
        .start_job("/api/v1/instances/vps1/points", &json!({"memory": true}))
        .unwrap_err();
    assert_eq!(e.code, "instance_stopped");
    let e = c
        .start_job("/api/v1/instances/vps1/points/ghost/revert", &json!({}))
        .unwrap_err();
    assert_eq!(e.code, "point_not_found");
}

/// A stop requested while a point waits for the instance: the point runs
/// first (it was asked first) against the live QEMU, not with qemu-img on
/// disks QEMU still holds, and the stop follows.
#[test]
fn a_point_queued_before_a_stop_snapshots_the_live_instance() {
    let d = TestDaemon::start_seamed(hold_frozen(2000), |_| {});
    let c = d.admin();
    let vm = booted(&d, "queued");
    let first = c
        .start_job("/api/v1/instances/queued/points", &json!({"name": "first"}))
        .unwrap();
    let second = c
        .start_job(
            "/api/v1/instances/queued/points",
            &json!({"name": "second"}),
        )
        .unwrap();
    // The stop is recorded at once (Stopping) and waits for both points.
    let stop = c
        .start_job("/api/v1/instances/queued/stop", &json!({"force": true}))
        .unwrap();
    assert_eq!(instance(&c, "queued").state, InstanceState::Stopping);
    for job in [&first, &second, &stop] {
        let done = c
            .wait_job(&job.id.to_string(), Duration::from_secs(120), |_| {})
            .unwrap_or_else(|e| panic!("{}: {e:?}", job.kind));
        assert_eq!(done.state, JobState::Succeeded, "{}", job.kind);
    }
    for job in [&first, &second] {
        let log = job_log(&c, job);
        assert!(
            log.iter().any(|m| m.contains("reports the guest frozen")),
            "cut in the live guest: {log:?}"
        );
        assert!(
            !log.iter().any(|m| m.contains("with qemu-img")),
            "not with qemu-img under a live QEMU: {log:?}"
        );
    }
    let taken = points(&c, "queued");
    assert_eq!(taken.len(), 2);
    for p in &taken {
        assert_eq!(p.state, PointState::Ready, "{}: {:?}", p.name, p.error);
    }
    assert_eq!(instance(&c, "queued").state, InstanceState::Stopped);
    let data: Volume = c.get("/api/v1/volumes/queued-data").unwrap();
    let tags = qcow2_tags(&data.path);
    assert_eq!(tags.len(), 2, "both points in the data disk: {tags:?}");
    let _ = vm;
}

/// The raw content of a stopped disk, hashed.
fn disk_sha(path: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("d.raw");
    let ok = std::process::Command::new("qemu-img")
        .args(["convert", "-f", "qcow2", "-O", "raw", path])
        .arg(&raw)
        .status()
        .unwrap()
        .success();
    assert!(ok, "qemu-img convert {path}");
    let out = std::process::Command::new("sha256sum")
        .arg(&raw)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split(' ')
        .next()
        .unwrap()
        .to_string()
}

fn point_disks(c: &Client, p: &Point) -> Vec<String> {
    p.volume_ids
        .iter()
        .map(|id| {
            c.get::<Volume>(&format!("/api/v1/volumes/{id}"))
                .unwrap()
                .path
        })
        .collect()
}

/// A guest written after a disk-only point, stopped: the point, its disks
/// and their content now.
fn stopped_after_a_point(d: &TestDaemon, name: &str) -> (Point, Vec<String>, Vec<String>) {
    let c = d.admin();
    let disks = [format!("{name}-data"), format!("{name}-more")];
    for disk in &disks {
        let _: Volume = c
            .post("/api/v1/volumes", &json!({"name": disk, "size": "64M"}))
            .unwrap();
    }
    let names: Vec<&str> = disks.iter().map(String::as_str).collect();
    run_job(
        &c,
        "/api/v1/instances",
        &d.guest_instance_for(&c, name, &names),
    );
    let vm = instance(&c, name);
    d.wait_agent(&vm);
    let p = take(&c, name, json!({"name": "before"}));
    assert_eq!(p.state, PointState::Ready, "{:?}", p.error);
    let (code, _) = d.guest_sh(&vm, "echo after > /mnt/data/after.txt && sync");
    assert_eq!(code, 0);
    run_job(
        &c,
        &format!("/api/v1/instances/{name}/stop"),
        &json!({"force": true}),
    );
    let disks = point_disks(&c, &p);
    assert_eq!(disks.len(), 2, "two data disks");
    let now = disks.iter().map(|p| disk_sha(p)).collect();
    (p, disks, now)
}

fn undo_tags(disks: &[String]) -> Vec<String> {
    disks
        .iter()
        .flat_map(|d| qcow2_tags(d))
        .filter(|t| t.starts_with("reprise-undo-"))
        .collect()
}

/// A disk-only revert that cannot move one disk moves none: the disk that
/// had moved is put back, the instance stays stopped and says why.
#[test]
fn a_revert_that_fails_on_one_disk_leaves_every_disk_as_it_was() {
    let d = TestDaemon::start();
    let c = d.admin();
    let (p, disks, before) = stopped_after_a_point(&d, "pair");
    // The point's snapshot is gone from the last disk (damage).
    let tag = format!("reprise-{}", p.id);
    let ok = std::process::Command::new("qemu-img")
        .args(["snapshot", "-d", &tag, disks.last().unwrap()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let job = c
        .start_job(
            &format!("/api/v1/instances/pair/points/{}/revert", p.id),
            &json!({}),
        )
        .unwrap();
    let e = c
        .wait_job(&job.id.to_string(), Duration::from_secs(120), |_| {})
        .unwrap_err();
    assert!(format!("{e:?}").contains("qemu_img_failed"), "{e:?}");
    let log = job_log(&c, &job);
    assert!(
        log.iter().any(|m| m.contains("putting the others back")),
        "the first disk had moved and went back: {log:?}"
    );
    left_as_before(&c, "pair", &disks, &before, "failed and was undone");
}

/// Every disk as it was before the revert, no undo snapshot left, the
/// instance stopped and saying `why`.
fn left_as_before(c: &Client, vm: &str, disks: &[String], before: &[String], why: &str) {
    let after: Vec<String> = disks.iter().map(|p| disk_sha(p)).collect();
    assert_eq!(after, before, "every disk as it was");
    assert!(undo_tags(disks).is_empty(), "{:?}", undo_tags(disks));
    let vm = instance(c, vm);
    assert_eq!(vm.state, InstanceState::Stopped);
    assert!(
        vm.last_error.as_deref().is_some_and(|e| e.contains(why)),
        "{:?}",
        vm.last_error
    );
}

/// A daemon that stopped in the middle of a revert (one disk moved, the
/// other not) puts every disk back at its next start.
#[test]
fn a_revert_interrupted_half_way_is_undone_at_the_next_start() {
    let mut d = TestDaemon::start();
    let c = d.admin();
    let (p, disks, before) = stopped_after_a_point(&d, "half");
    let tag = format!("reprise-{}", p.id);
    let undo = format!("reprise-undo-{}", p.id);
    d.stop();
    // What a crash after the first disk moved leaves: every disk kept, the
    // first at the point, the point Reverting, the instance at no point.
    let img = |args: &[&str]| {
        assert!(std::process::Command::new("qemu-img")
            .args(args)
            .status()
            .unwrap()
            .success())
    };
    for disk in &disks {
        img(&["snapshot", "-c", &undo, disk]);
    }
    img(&["snapshot", "-a", &tag, &disks[0]]);
    assert_ne!(disk_sha(&disks[0]), before[0], "the first disk moved");
    let catalog = match &d.config.catalog.url {
        Some(url) => reprise_catalog::Catalog::connect(url, "local").unwrap(),
        None => reprise_catalog::Catalog::open(&d.config.catalog_path()).unwrap(),
    };
    catalog
        .set_point_state(p.id, PointState::Reverting, None)
        .unwrap();
    catalog.set_current_point(p.instance_id, None).unwrap();
    catalog.close();
    drop(catalog);
    d.start_again();
    left_as_before(&c, "half", &disks, &before, "was interrupted");
    let p = c
        .get::<Point>(&format!("/api/v1/instances/half/points/{}", p.id))
        .unwrap();
    assert_eq!(p.state, PointState::Ready, "the point itself is whole");
}

/// A guest found frozen when the daemon starts is thawed first of all:
/// even a start that then fails (a wrong region key) leaves it thawed.
#[test]
fn a_start_that_fails_still_thaws_a_frozen_guest() {
    let mut d = TestDaemon::start();
    let vm = booted(&d, "icy");
    d.stop();
    // Frozen behind the daemon's back, as a dead daemon could leave it.
    let socket = d.config.instance_run_dir(vm.id).join("qga.sock");
    d.block_on(async {
        let mut a = reprise_qemu::agent::Agent::connect(&socket, Duration::from_secs(5))
            .await
            .unwrap();
        a.freeze(Duration::from_secs(10)).await.unwrap();
    });
    let frozen = Instance {
        guest_agent_socket: socket.to_string_lossy().into_owned(),
        ..vm.clone()
    };
    assert_eq!(freeze_status(&frozen).as_deref(), Some("frozen"));
    let key_file = d.config.data_dir.join("region.key");
    let key = std::fs::read_to_string(&key_file).unwrap();
    std::fs::write(&key_file, format!("{}\n", "cd".repeat(32))).unwrap();
    let e = d
        .block_on(reprise_daemon::start(d.config.clone()))
        .err()
        .expect("a wrong region key stops the start");
    assert_eq!(e.code, "region_key_wrong");
    assert_eq!(
        freeze_status(&frozen).as_deref(),
        Some("thawed"),
        "thawed before the start failed"
    );
    std::fs::write(&key_file, key).unwrap();
    d.start_again();
}
