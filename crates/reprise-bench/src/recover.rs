//! `reprise region recover` at scale: a catalog lost under a store of
//! more than a hundred snapshots (ten volumes, twelve increments each,
//! two accounts), rebuilt from the store alone, through the daemon's API
//! as an operator meets it — on the local directory and on the three-node
//! Garage cluster `bench/run.sh` starts.

use crate::{median, Section};
use reprise_core::model::*;
use reprise_testing::{run_job, use_store, TestDaemon};
use serde_json::json;
use std::fmt::Write;
use std::process::Command;
use std::time::{Duration, Instant};

const VOLUMES: usize = 10;
const SNAPSHOTS_PER_VOLUME: usize = 12;
const RUNS: usize = 3;

fn write(path: &str, pattern: u64, offset: u64) {
    let ok = Command::new("qemu-io")
        .args(["-f", "qcow2", "-c"])
        .arg(format!("write -P {} {offset} 1M", 1 + pattern % 250))
        .arg(path)
        .status()
        .unwrap()
        .success();
    assert!(ok, "qemu-io on {path}");
}

/// Lose the daemon's catalog (its SQLite files) and start it on a new one.
fn lose_catalog(d: &mut TestDaemon) {
    d.stop();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", d.config.catalog_path().display()));
    }
    d.start_again();
}

/// The recover job, timed from the request to its end.
fn recover(d: &TestDaemon, dry_run: bool) -> (Duration, String) {
    let c = d.admin();
    let started = Instant::now();
    let job = run_job(&c, "/api/v1/region/recover", &json!({ "dry_run": dry_run }));
    let took = started.elapsed();
    let said = job
        .log
        .iter()
        .rev()
        .find(|l| l.message.starts_with("recovered:") || l.message.starts_with("dry run:"))
        .map(|l| l.message.clone())
        .unwrap_or_default();
    (took, said)
}

/// One store's row of the table, and what the recover's log said.
fn one_store(kind: &str, s3: Option<reprise_store::S3Config>) -> (String, String) {
    let mut d = TestDaemon::start_with(|c| {
        c.catalog.url = None;
        use_store(c, &s3);
    });
    let admin = d.admin();
    let made: AccountCreated = admin
        .post("/api/v1/accounts", &json!({"name": "tenant"}))
        .unwrap();
    let tenant = reprise_client::Client::new(&d.url, Some(made.api_key));
    let started = Instant::now();
    for v in 0..VOLUMES {
        let c = if v % 2 == 0 { &admin } else { &tenant };
        let name = format!("v{v}");
        let vol: Volume = c
            .post("/api/v1/volumes", &json!({"name": name, "size": "64M"}))
            .unwrap();
        let path = d
            .config
            .default_zone_dir()
            .join(format!("{}.qcow2", vol.id));
        let path = path.to_str().unwrap();
        for s in 0..SNAPSHOTS_PER_VOLUME {
            write(path, (v * 100 + s) as u64, (s as u64 % 32) << 20);
            run_job(
                c,
                "/api/v1/snapshots",
                &json!({"volume": name, "name": format!("{name}-s{s}")}),
            );
        }
    }
    let taken = started.elapsed();
    let total = VOLUMES * SNAPSHOTS_PER_VOLUME;
    let mut dry = Vec::new();
    let mut full = Vec::new();
    let mut summary = String::new();
    for _ in 0..RUNS {
        lose_catalog(&mut d);
        dry.push(recover(&d, true).0.as_secs_f64());
        let (took, last) = recover(&d, false);
        full.push(took.as_secs_f64());
        summary = last;
        let back: Vec<Snapshot> = d.admin().get("/api/v1/snapshots").unwrap();
        assert_eq!(
            back.len(),
            total / 2,
            "{kind}: the admin's snapshots are back"
        );
    }
    let range = |v: &mut Vec<f64>| {
        let med = median(v);
        let (lo, hi) = (v[0], v[v.len() - 1]);
        format!("{med:.2} s ({lo:.2}–{hi:.2})")
    };
    let per = median(&mut full.clone()) * 1000.0 / total as f64;
    let row = format!(
        "| {kind} | {total} | {} | {} | {per:.1} ms | {:.0} s |\n",
        range(&mut dry),
        range(&mut full),
        taken.as_secs_f64()
    );
    (
        row,
        format!("- {kind}, the last recover's own words: \"{summary}\"\n"),
    )
}

pub fn run() -> Vec<Section> {
    let mut body = String::new();
    let _ = writeln!(
        body,
        "A catalog lost under a store of {} snapshots ({VOLUMES} volumes of 64 MiB, {SNAPSHOTS_PER_VOLUME} increments each, half the admin's and half a tenant's), then `reprise region recover` through the daemon, timed from the request to the job's end; {RUNS} runs, each on a catalog made anew (median, min–max). Each snapshot costs a manifest and an index read (eight at a time) and one catalog transaction.\n",
        VOLUMES * SNAPSHOTS_PER_VOLUME
    );
    let _ = writeln!(
        body,
        "| store | snapshots | dry run | recover | per snapshot | taking them |\n|---|---|---|---|---|---|"
    );
    let mut notes = String::new();
    let mut stores = vec![("local directory", None)];
    if std::env::var("REPRISE_TEST_CLUSTER_ENDPOINT").is_ok() {
        let s3 = reprise_store::S3Config::from_env("REPRISE_TEST_CLUSTER");
        stores.push(("Garage, three nodes", Some(s3)));
    }
    for (kind, s3) in stores {
        let (row, note) = one_store(kind, s3);
        body.push_str(&row);
        notes.push_str(&note);
    }
    let _ = write!(body, "\n{notes}");
    vec![Section {
        title: "Recovering a lost catalog from the store".into(),
        body,
    }]
}
