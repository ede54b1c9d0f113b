//! Recovery point benchmarks: creation latency against the volume's size,
//! memory points against RAM size, and guest reads with many points.

use crate::{median, ms, percentile, Section};
use reprise_client::Client;
use reprise_core::model::{Instance, Point, Volume};
use reprise_qemu::qmp::Qmp;
use reprise_testing::*;
use serde_json::json;
use std::fmt::Write;
use std::process::Command;
use std::time::{Duration, Instant};

pub fn run() -> Vec<Section> {
    vec![creation_latency(), memory_points(), reads_with_points()]
}

const MIB: u64 = 1 << 20;

/// Write 1 MiB every `step` bytes of a volume no QEMU holds yet.
fn prewrite(path: &str, size: u64, step: u64) -> u64 {
    let mut args = vec!["-f".to_string(), "qcow2".to_string()];
    let mut written = 0;
    for (i, off) in (0..size).step_by(step as usize).enumerate() {
        args.push("-c".into());
        args.push(format!("write -P {} {off} 1M", 1 + i % 250));
        written += MIB;
    }
    args.push(path.into());
    let ok = Command::new("qemu-io")
        .args(&args)
        .output()
        .expect("qemu-io");
    assert!(
        ok.status.success(),
        "qemu-io: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    written
}

fn volume(c: &Client, name: &str, size: &str) -> Volume {
    c.post("/api/v1/volumes", &json!({"name": name, "size": size}))
        .expect("volume")
}

fn guest(d: &TestDaemon, name: &str, memory: &str, volumes: &[&str]) -> Instance {
    let c = d.admin();
    let mut req = guest_instance(name, volumes);
    req.memory = Some(memory.into());
    run_job(&c, "/api/v1/instances", &req);
    let vm = instance(&c, name);
    d.wait_agent(&vm);
    vm
}

fn take(c: &Client, vm: &str, body: serde_json::Value) -> (Duration, Point) {
    let started = Instant::now();
    let job = run_job(c, &format!("/api/v1/instances/{vm}/points"), &body);
    let took = started.elapsed();
    let p = c
        .get(&format!("/api/v1/instances/{vm}/points/{}", job.target_id))
        .expect("point");
    (took, p)
}

fn delete_all(c: &Client, vm: &str) {
    let job = c
        .delete_job(&format!("/api/v1/instances/{vm}/points"))
        .expect("delete all");
    c.wait_job(&job.id.to_string(), Duration::from_secs(600), |_| {})
        .expect("deleted");
}

pub fn creation_latency() -> Section {
    const N: usize = 20;
    let d = TestDaemon::start();
    let c = d.admin();
    let mut body = String::from(
        "A disk-only recovery point of a running instance, quiesced through the guest agent, end to end through the API (request, job, freeze, QMP transaction, thaw, job done), 20 times per volume, one after the other; the freeze's guard is a process of its own, as in the product. The guest stall is the time its filesystems were frozen; \"outside the freeze\" is each point's time less its stall. Then 20 points with `quiesce: none`. Peers, same volume, same run: the QMP `transaction` alone (the floor), and a full copy of the volume with `qemu-img convert` (what a snapshot costs without copy-on-write). Goals: outside the freeze ≤ 15 ms, unquiesced ≤ 25 ms, flat from 1 GiB to 64 GiB.\n\n| volume | data written | point, median | point, p99 | guest stall, median | stall, p99 | outside the freeze, median | unquiesced point, median | QMP transaction alone, median | full copy (`qemu-img convert`) | full copy ÷ point |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let mut medians = Vec::new();
    let mut goals = Vec::new();
    for (label, size, text, step) in [
        ("1 GiB", 1u64 << 30, "1G", 4 * MIB),
        ("64 GiB", 64u64 << 30, "64G", 128 * MIB),
    ] {
        let name = format!("lat{}", size >> 30);
        let v = volume(&c, &format!("{name}-data"), text);
        let written = prewrite(&v.path, size, step);
        let vm = guest(&d, &name, "256M", &[&format!("{name}-data")]);
        let mut took = Vec::new();
        let mut stall = Vec::new();
        let mut outside = Vec::new();
        for i in 0..N {
            let (t, p) = take(&c, &name, json!({"name": format!("{name}-{i}")}));
            assert_eq!(
                p.consistency, "filesystem",
                "the benchmark guest is quiesced"
            );
            let frozen = p.frozen_ms.unwrap_or(0) as f64;
            took.push(ms(t));
            stall.push(frozen);
            outside.push(ms(t) - frozen);
        }
        let mut unquiesced = Vec::new();
        for i in 0..N {
            let body = json!({"name": format!("{name}-nq{i}"), "quiesce": "none"});
            let (t, p) = take(&c, &name, body);
            assert_eq!(p.consistency, "crash");
            unquiesced.push(ms(t));
        }
        delete_all(&c, &name);
        let node = reprise_qemu::cmdline::node_name(v.id);
        let raw: Vec<f64> = d.block_on(async {
            let mut q = Qmp::connect(vm.qmp_socket.as_ref(), Duration::from_secs(5)).await.unwrap();
            let mut out = Vec::new();
            for i in 0..N {
                let tag = format!("raw{i}");
                let t = Instant::now();
                q.execute(
                    "transaction",
                    json!({"actions": [{"type": "blockdev-snapshot-internal-sync", "data": {"device": node, "name": tag}}]}),
                )
                .await
                .unwrap();
                out.push(ms(t.elapsed()));
                q.execute("blockdev-snapshot-delete-internal-sync", json!({"device": node, "name": tag}))
                    .await
                    .unwrap();
            }
            out
        });
        let copy = d.dir.path().join("copy.qcow2");
        let t = Instant::now();
        let ok = Command::new("qemu-img")
            .args([
                "convert",
                "-U",
                "-O",
                "qcow2",
                &v.path,
                copy.to_str().unwrap(),
            ])
            .status()
            .unwrap();
        assert!(ok.success());
        let copy_ms = ms(t.elapsed());
        let _ = std::fs::remove_file(&copy);
        run_job(
            &c,
            &format!("/api/v1/instances/{name}/stop"),
            &json!({"force": true}),
        );
        let (mut took2, mut stall2, mut raw2) = (took.clone(), stall.clone(), raw.clone());
        let point_median = median(&mut took2);
        let (outside_median, unquiesced_median) = (median(&mut outside), median(&mut unquiesced));
        medians.push((label, point_median));
        goals.push((label, outside_median, unquiesced_median));
        let _ = writeln!(
            body,
            "| {label} | {} MiB | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.0} ms | {:.1}× |",
            written / MIB,
            point_median,
            percentile(&mut took, 99.0),
            median(&mut stall2),
            percentile(&mut stall, 99.0),
            outside_median,
            unquiesced_median,
            median(&mut raw2),
            copy_ms,
            copy_ms / point_median,
        );
    }
    if let [(small, a), (large, b)] = medians[..] {
        let _ = writeln!(
            body,
            "\nA point on the {large} volume takes {:.2}× the time of one on the {small} volume (medians).",
            b / a
        );
    }
    let verdict = |met: bool| if met { "met" } else { "missed" };
    let list = |pick: fn(&(&str, f64, f64)) -> f64| {
        let shown: Vec<String> = goals
            .iter()
            .map(|g| format!("{} {:.1} ms", g.0, pick(g)))
            .collect();
        shown.join(", ")
    };
    let _ = writeln!(
        body,
        "\nGoals (medians): outside the freeze ≤ 15 ms: {} ({}); unquiesced ≤ 25 ms: {} ({}).",
        verdict(goals.iter().all(|g| g.1 <= 15.0)),
        list(|g| g.1),
        verdict(goals.iter().all(|g| g.2 <= 25.0)),
        list(|g| g.2),
    );
    Section {
        title: "Recovery point creation (disk-only, running instance)".into(),
        body,
    }
}

pub fn memory_points() -> Section {
    use reprise_daemon::config::MemorySave;
    let mut body = String::from(
        "A recovery point with memory of a running instance whose RAM is a quarter filled with random data (64 MiB of it, copied), three times per size and method, end to end through the API, each method on a daemon of its own (`[snapshots] memory_save`): `background` (the guest paused while its disks' snapshots are cut and its devices saved, then running on while QEMU writes its RAM to a file: `background-snapshot`), the same with the guest's RAM on the host's 2 MiB huge pages (`[qemu] hugepages = true`, the pages reserved by the benchmark), and `snapshot-save` (the guest paused while RAM, devices and disks are saved). Paused is the time the guest did not run (QEMU's STOP to RESUME). Revert: back to the point from the running instance, end to end (background: the instance powered off, its disks put back, a fresh QEMU loading the state; snapshot-save: `snapshot-load` in the running QEMU), twice.\n\n| RAM | method | saved state | total, median | guest paused, median (min–max) | QEMU alone, paused | paused per GiB of RAM | revert, median |\n|---|---|---|---|---|---|---|---|\n",
    );
    let mut goal = Vec::new();
    for mem in [256u64, 1024, 4096] {
        for (method, save, huge_pages) in [
            ("background", MemorySave::Background, false),
            ("background, huge pages", MemorySave::Background, true),
            ("snapshot-save", MemorySave::SnapshotSave, false),
        ] {
            // The guest's RAM in 2 MiB pages, and a margin; given back
            // after the daemon (declared first, dropped last).
            let _pages = huge_pages.then(|| reserve_huge_pages(mem / 2 + 16));
            let d = TestDaemon::start_with(|c| {
                c.snapshots.memory_save = save;
                c.qemu.hugepages = huge_pages;
            });
            let c = d.admin();
            let name = format!("mem{mem}");
            volume(&c, &format!("{name}-data"), "64M");
            let vm = guest(&d, &name, &format!("{mem}M"), &[&format!("{name}-data")]);
            // A quarter of the RAM: 64 MiB of random data (random data is
            // slow to make under TCG), copied over (no page of it is zero,
            // and QEMU's migration skips only zero pages).
            let (code, out) = d.guest_sh(
                &vm,
                &format!(
                    "dd if=/dev/urandom of=/tmp/seed bs=1M count=64 2>&1 && for i in $(seq 2 {}); do cat /tmp/seed >> /tmp/fill; done",
                    mem / 4 / 64
                ),
            );
            assert_eq!(code, 0, "{out}");
            let mut total = Vec::new();
            let mut paused = Vec::new();
            let mut state = 0;
            for i in 0..3 {
                let (t, p) = take(
                    &c,
                    &name,
                    json!({"name": format!("{name}-{i}"), "memory": true}),
                );
                assert_eq!(p.memory_save.as_deref(), method.split(',').next());
                total.push(ms(t));
                paused.push(p.frozen_ms.unwrap_or(0) as f64);
                state = p.vm_state_bytes.unwrap_or(0);
            }
            let mut reverts = Vec::new();
            for _ in 0..2 {
                let started = Instant::now();
                run_job(
                    &c,
                    &format!("/api/v1/instances/{name}/points/{name}-2/revert"),
                    &json!({}),
                );
                reverts.push(ms(started.elapsed()));
            }
            delete_all(&c, &name);
            // The floor: QEMU alone on the same guest, over its QMP socket —
            // stop, then a background migration of RAM and devices (no disk
            // snapshot, no daemon), paused from STOP to RESUME.
            let floor = if save == MemorySave::Background {
                let vm = instance(&c, &name);
                let mut runs: Vec<f64> = (0..3).map(|_| qemu_alone_pause(&d, &vm)).collect();
                Some(median(&mut runs))
            } else {
                None
            };
            run_job(
                &c,
                &format!("/api/v1/instances/{name}/stop"),
                &json!({"force": true}),
            );
            let (low, high) = (
                paused.iter().cloned().fold(f64::MAX, f64::min),
                paused.iter().cloned().fold(0.0, f64::max),
            );
            let paused_median = median(&mut paused);
            if let Some(f) = floor {
                goal.push((huge_pages, mem, paused_median, f));
            }
            let floor = floor
                .map(|f| format!("{f:.0} ms"))
                .unwrap_or_else(|| "-".into());
            let _ = writeln!(
                body,
                "| {mem} MiB | {method} | {:.0} MiB | {:.0} ms | {:.0} ms ({:.0}–{:.0}) | {floor} | {:.0} ms | {:.0} ms |",
                state as f64 / MIB as f64,
                median(&mut total),
                paused_median,
                low,
                high,
                paused_median / (mem as f64 / 1024.0),
                median(&mut reverts),
            );
        }
    }
    for (huge_pages, ram) in [
        (false, "anonymous RAM (the default)"),
        (true, "RAM on huge pages (`[qemu] hugepages = true`)"),
    ] {
        let rows: Vec<_> = goal.iter().filter(|g| g.0 == huge_pages).collect();
        let worst = rows.iter().map(|g| g.2).fold(0.0, f64::max);
        let _ = writeln!(
            body,
            "\nGoal, {ram}: the guest paused ≤ 20 ms (median) at every size in the background: {} (worst median {worst:.0} ms; {}). What reprise adds to QEMU's own pause (its median minus QEMU alone's): {}.",
            if worst <= 20.0 { "met" } else { "missed" },
            rows.iter()
                .map(|g| format!("{} MiB: {:.0} ms", g.1, g.2))
                .collect::<Vec<_>>()
                .join(", "),
            rows.iter()
                .map(|g| format!("{} MiB: {:+.0} ms", g.1, g.2 - g.3))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Section {
        title: "Recovery points with memory".into(),
        body,
    }
}

/// QEMU's own pause for a background save of a running guest: `stop`,
/// then `migrate` with `background-snapshot` to /dev/null, STOP to RESUME.
fn qemu_alone_pause(d: &TestDaemon, vm: &Instance) -> f64 {
    d.block_on(async {
        let mut q = Qmp::connect(vm.qmp_socket.as_ref(), Duration::from_secs(5))
            .await
            .unwrap();
        q.execute(
            "migrate-set-capabilities",
            json!({"capabilities": [{"capability": "background-snapshot", "state": true}]}),
        )
        .await
        .unwrap();
        q.execute("stop", json!({})).await.unwrap();
        q.execute("migrate", json!({"uri": "exec:cat > /dev/null"}))
            .await
            .unwrap();
        q.wait_migration(Duration::from_secs(600)).await.unwrap();
        if q.run_state().await.unwrap() != "running" {
            q.execute("cont", json!({})).await.unwrap();
        }
        let at = |name: &str| {
            q.received_events()
                .find(|e| e.name == name)
                .map(|e| e.at_us)
                .unwrap_or(0)
        };
        (at("RESUME").saturating_sub(at("STOP"))) as f64 / 1000.0
    })
}

/// Reads per second in the guest: the median of three 5-second runs.
fn randread(d: &TestDaemon, vm: &Instance) -> f64 {
    let mut runs: Vec<f64> = (0..3)
        .map(|_| {
            let (code, out) = d.guest_sh(vm, "/bin/randread /dev/vda 5");
            assert_eq!(code, 0, "randread: {out}");
            out.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse().ok())
                .expect("reads per second")
        })
        .collect();
    median(&mut runs)
}

fn reads_with_points() -> Section {
    let d = TestDaemon::start();
    let c = d.admin();
    let v = volume(&c, "reads-data", "256M");
    prewrite(&v.path, 256 * MIB, MIB);
    let vm = guest(&d, "reads", "256M", &["reads-data"]);
    randread(&d, &vm); // warm the host's page cache under the qcow2
    let before = randread(&d, &vm);
    for i in 0..50 {
        let (code, _) = d.guest_sh(
            &vm,
            &format!(
                "dd if=/dev/urandom of=/dev/vda bs=1M seek={} count=1 oflag=direct conv=notrunc status=none",
                (i * 37) % 256
            ),
        );
        assert_eq!(code, 0);
        take(
            &c,
            "reads",
            json!({"name": format!("r{i}"), "quiesce": "none"}),
        );
    }
    let with_points = randread(&d, &vm);
    delete_all(&c, "reads");
    let after = randread(&d, &vm);
    let body = format!(
        "Random 4 KiB direct reads in the guest (`/bin/randread`; median of three 5-second runs, after a warm-up) over a fully written 256 MiB volume: before any point, with 50 recovery points (1 MiB rewritten between two points), and with the same data after deleting the points. The last row separates the points themselves from the data's new layout and from run-to-run noise under TCG.\n\n| points | reads/s in the guest | ratio to before |\n|---|---|---|\n| 0 (before) | {before:.0} | 1.00 |\n| 50 | {with_points:.0} | {:.2} |\n| 0 (after deleting them) | {after:.0} | {:.2} |\n",
        with_points / before,
        after / before,
    );
    Section {
        title: "Guest reads with 0 and 50 recovery points".into(),
        body,
    }
}
