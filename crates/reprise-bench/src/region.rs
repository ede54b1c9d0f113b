//! A region against the embedded default, through the daemons' API as a
//! client meets it: reads on SQLite, on PostgreSQL, and through another
//! host of a region (a request sent on to the resource's host); the time
//! for a stopped host to show `Down`; one host backing up into the
//! three-node Garage cluster, then two at once.
//!
//! Needs the PostgreSQL and the Garage cluster `bench/run.sh` starts.

use crate::{median, ms, percentile, Section};
use reprise_core::model::*;
use reprise_testing::{region_host, run_job, TestDaemon};
use serde_json::json;
use std::fmt::Write;
use std::process::Command;
use std::time::{Duration, Instant};

const READS: usize = 300;

/// `n` sequential requests of `path`: (median ms, p99 ms, requests/s).
fn reads(client: &reprise_client::Client, path: &str) -> (f64, f64, f64) {
    for _ in 0..20 {
        let _: serde_json::Value = client.get(path).unwrap();
    }
    let mut times = Vec::with_capacity(READS);
    let started = Instant::now();
    for _ in 0..READS {
        let t = Instant::now();
        let _: serde_json::Value = client.get(path).unwrap();
        times.push(ms(t.elapsed()));
    }
    let per_second = READS as f64 / started.elapsed().as_secs_f64();
    (median(&mut times), percentile(&mut times, 99.0), per_second)
}

/// Twenty volumes, a stopped instance and a running one (the test guest,
/// its agent answering): what the reads read.
fn populate(d: &TestDaemon, zone: &str) {
    let c = d.admin();
    for i in 0..20 {
        let _: Volume = c
            .post(
                "/api/v1/volumes",
                &json!({"name": format!("v{i}"), "size": "64M", "zone": zone}),
            )
            .unwrap();
    }
    run_job(
        &c,
        "/api/v1/instances",
        &json!({"name": "vm", "root_size": "64M", "no_start": true, "zone": zone}),
    );
    d.booted_guest(&c, "running", "running-data");
}

fn write_volume(path: &str, mib: u64, seed: u64) {
    let mut args = vec!["-f".to_string(), "qcow2".to_string()];
    for i in 0..mib / 4 {
        args.push("-c".into());
        args.push(format!(
            "write -P {} {} 4M",
            1 + (seed * 31 + i) % 250,
            i * (4 << 20)
        ));
    }
    args.push(path.into());
    assert!(Command::new("qemu-io")
        .args(&args)
        .status()
        .unwrap()
        .success());
}

pub fn run() -> Vec<Section> {
    let base = reprise_catalog::testing::postgres_url()
        .expect("the region benchmark needs REPRISE_TEST_POSTGRES (bench/run.sh starts it)");
    let s3 = reprise_store::S3Config::from_env("REPRISE_TEST_CLUSTER");
    let nodes: Vec<String> = std::env::var("REPRISE_TEST_CLUSTER_NODES")
        .expect("the Garage cluster bench/run.sh starts")
        .split(' ')
        .map(str::to_string)
        .collect();
    let node = |i: usize| reprise_store::S3Config {
        endpoint: nodes[i].clone(),
        ..s3.clone()
    };

    // Reads: the embedded default, one daemon on PostgreSQL, and a region
    // of two where h2 answers for what lives on h1.
    let sqlite = TestDaemon::start();
    populate(&sqlite, "zone1");
    let single_pg = TestDaemon::start_with(|c| {
        c.catalog.url = Some(reprise_catalog::testing::fresh_postgres_url(&base));
    });
    populate(&single_pg, "zone1");
    let catalog = reprise_catalog::testing::fresh_postgres_url(&base);
    let host = |name: &str, zone: &str, s3, first| {
        region_host(&catalog, name, zone, s3, first, Default::default(), 6)
    };
    let mut h1 = host("h1", "zone1", node(0), None);
    let h2 = host("h2", "zone2", node(1), Some(&h1.config));
    populate(&h1, "zone1");

    let ops = [
        ("list volumes (21)", "/api/v1/volumes"),
        ("show a volume", "/api/v1/volumes/v7"),
        ("show a stopped instance", "/api/v1/instances/vm"),
        (
            "show a running instance (asks its agent)",
            "/api/v1/instances/running",
        ),
    ];
    let mut table = String::from(
        "| request | SQLite (embedded) | PostgreSQL, one daemon | PostgreSQL, through another host | PostgreSQL / SQLite | another host / SQLite |\n|---|---|---|---|---|---|\n",
    );
    for (what, path) in ops {
        let a = reads(&sqlite.admin(), path);
        let b = reads(&single_pg.admin(), path);
        let c = reads(&h2.admin(), path);
        let cell = |r: (f64, f64, f64)| format!("{:.2} ms (p99 {:.2}; {:.0}/s)", r.0, r.1, r.2);
        let _ = writeln!(
            table,
            "| {what} | {} | {} | {} | {:.1}× | {:.1}× |",
            cell(a),
            cell(b),
            cell(c),
            b.0 / a.0,
            c.0 / a.0
        );
    }

    // Backups into the cluster: one host, then both at once, each its own
    // 256 MiB-written volume.
    let mut backup_rows = String::new();
    let volume_on = |d: &TestDaemon, name: &str, zone: &str, seed: u64| -> Volume {
        let v: Volume = d
            .admin()
            .post(
                "/api/v1/volumes",
                &json!({"name": name, "size": "1G", "zone": zone}),
            )
            .unwrap();
        write_volume(&v.path, 256, seed);
        v
    };
    volume_on(&h1, "b1", "zone1", 1);
    volume_on(&h2, "b2", "zone2", 2);
    let started = Instant::now();
    run_job(&h1.admin(), "/api/v1/snapshots", &json!({"volume": "b1"}));
    let one = started.elapsed();
    volume_on(&h1, "c1", "zone1", 3);
    volume_on(&h2, "c2", "zone2", 4);
    let started = Instant::now();
    let (j1, j2) = std::thread::scope(|s| {
        let a = s.spawn(|| {
            let t = Instant::now();
            run_job(&h1.admin(), "/api/v1/snapshots", &json!({"volume": "c1"}));
            t.elapsed()
        });
        let b = s.spawn(|| {
            let t = Instant::now();
            run_job(&h2.admin(), "/api/v1/snapshots", &json!({"volume": "c2"}));
            t.elapsed()
        });
        (a.join().unwrap(), b.join().unwrap())
    });
    let both = started.elapsed();
    let mib = 256.0;
    let _ = writeln!(
        backup_rows,
        "| one host | {:.1} s | {:.0} MiB/s |\n| two hosts at once | {:.1} s (h1 {:.1} s, h2 {:.1} s) | {:.0} MiB/s together |",
        one.as_secs_f64(),
        mib / one.as_secs_f64(),
        both.as_secs_f64(),
        j1.as_secs_f64(),
        j2.as_secs_f64(),
        2.0 * mib / both.as_secs_f64()
    );

    // A host's death: h1 stops (its heartbeats with it); how long until h2
    // shows it Down, with the default 6 s lease, three times.
    let mut downs = Vec::new();
    for _ in 0..3 {
        h1.stop();
        let stopped = Instant::now();
        loop {
            let hosts: Vec<Host> = h2.admin().get("/api/v1/hosts").unwrap();
            if hosts
                .iter()
                .any(|h| h.name == "h1" && h.state == HostState::Down)
            {
                break;
            }
            assert!(
                stopped.elapsed() < Duration::from_secs(30),
                "h1 never shown Down"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        downs.push(stopped.elapsed().as_secs_f64());
        h1.start_again();
    }
    let down_list = downs
        .iter()
        .map(|s| format!("{s:.1} s"))
        .collect::<Vec<_>>()
        .join(", ");
    let worst = downs.iter().cloned().fold(0.0, f64::max);

    let body = format!(
        "Reads are {READS} sequential requests of one client after 20 of warm-up, through the HTTP API of a daemon on loopback (median, 99th percentile, requests per second); the catalogs hold 21 volumes and two instances, one stopped, one running the test guest. \"Through another host\" asks h2 about what lives on h1: lists and the shows of a volume and of a stopped instance come from the shared catalog; a running instance's show is sent on to h1, which asks the guest agent there. PostgreSQL 15 on loopback, defaults. Goal: every read within 2× of the embedded default.\n\n{table}\nBackups: a 1 GiB volume with 256 MiB written (4 MiB runs of one byte each: cheap to compress), snapshotted through the API into a three-node Garage cluster on this machine (replication 3, one node per zone; each host talks to its own node), unencrypted.\n\n| backing up | time | throughput |\n|---|---|---|\n{backup_rows}\nA host's death: h1's daemon stopped, h2 polled every 50 ms until it showed h1 `Down`, with the default 6 s lease (heartbeat every 2 s): {down_list} (goal: within 10 s; worst {worst:.1} s).\n"
    );
    vec![Section {
        title: "A region: reads, backups, a host's death".into(),
        body,
    }]
}
