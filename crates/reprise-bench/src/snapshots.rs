//! Volume snapshots against their peers, measured as a user meets them:
//! an 8 GiB volume with 4 GiB written (half log-like text, half random),
//! snapshotted through a `reprise serve` process's API (jobs followed to
//! their end), unencrypted and encrypted; then 1 % of the volume rewritten
//! as scattered 64 KiB writes of fresh random data and snapshotted again;
//! then the second snapshot restored into a new volume. Every tool runs
//! three times from an empty repository with the page cache dropped before
//! each step; restic, borg and rustic get the same instants as raw image
//! files, and a local `qemu-img convert` of the volume (to a new qcow2, up
//! to a sync) is the I/O floor. Also: the daemon's memory while it backs
//! up and restores a 1 TiB sparse volume with 1 GiB of random data.

use crate::{median, Section};
use reprise_client::Client;
use reprise_core::model::{Job, Snapshot, SnapshotState, Volume};
use reprise_testing::{serve_process, DaemonProcess};
use serde_json::json;
use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

/// Runs per tool: 3, or `REPRISE_BENCH_RUNS` when trying a change quickly
/// (with `REPRISE_BENCH_PEERS=0` to leave restic, borg and rustic out).
fn runs() -> usize {
    reprise_testing::campaign::env_u64("REPRISE_BENCH_RUNS", 3) as usize
}
const PIECE: u64 = 64 << 10;

fn sh(program: &str, args: &[&str], env: &[(&str, &str)]) -> Duration {
    let started = Instant::now();
    let out = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    started.elapsed()
}

/// raw → qcow2 with the daemon's own qemu-img wrapper (64 KiB clusters).
fn to_qcow2(raw: &Path, qcow2: &Path) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(reprise_qemu::img::Binaries::default().convert_to_qcow2(raw, "raw", qcow2))
        .expect("qemu-img convert");
}

fn du(path: &Path) -> u64 {
    let out = Command::new("du")
        .args(["-sb"])
        .arg(path)
        .output()
        .expect("du");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A xorshift generator: the same data on every run of the benchmark.
fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

fn random_bytes(next: &mut impl FnMut() -> u64, len: u64) -> Vec<u8> {
    (0..len / 8).flat_map(|_| next().to_le_bytes()).collect()
}

/// Text that compresses like logs do (about 4:1 with zstd) at the start,
/// random data from the middle.
fn write_volume_data(raw: &Path, size: u64, text: u64, random: u64) {
    let f = std::fs::File::create(raw).unwrap();
    f.set_len(size).unwrap();
    let mut next = xorshift(0x2545f4914f6cdd1d);
    let mut buf = Vec::with_capacity(4 << 20);
    let mut written = 0;
    while written < text {
        buf.clear();
        while buf.len() < 4 << 20 {
            let n = next();
            let _ = writeln!(
                buf,
                "2026-11-22T07:{:02}:{:02}.{:06}Z host{} GET /api/v1/volumes/{:08x} 200 {} ms user={}",
                n % 60,
                (n >> 8) % 60,
                (n >> 16) % 1_000_000,
                n % 7,
                (n >> 24) as u32,
                (n >> 40) % 900,
                ["alice", "bob", "carol", "dave"][(n >> 60) as usize % 4]
            );
        }
        buf.truncate(4 << 20);
        std::os::unix::fs::FileExt::write_all_at(&f, &buf, written).unwrap();
        written += buf.len() as u64;
    }
    let mut at = size / 2;
    while at < size / 2 + random {
        let buf = random_bytes(&mut next, 4 << 20);
        std::os::unix::fs::FileExt::write_all_at(&f, &buf, at).unwrap();
        at += buf.len() as u64;
    }
    f.sync_all().unwrap();
}

/// The 1 % change: `count` distinct 64 KiB-aligned places in the written
/// data, each to get 64 KiB of fresh random bytes (a file of its own, as
/// `qemu-io write -s` takes them).
struct Change {
    writes: Vec<(u64, PathBuf)>,
}

impl Change {
    fn new(dir: &Path, size: u64, text: u64, random: u64, count: u64) -> Change {
        std::fs::create_dir_all(dir).unwrap();
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        let mut places = std::collections::BTreeSet::new();
        while (places.len() as u64) < count {
            let n = next();
            let place = if n % (text + random) < text {
                (n >> 8) % (text / PIECE)
            } else {
                size / 2 / PIECE + (n >> 8) % (random / PIECE)
            };
            places.insert(place * PIECE);
        }
        let writes = places
            .into_iter()
            .enumerate()
            .map(|(i, at)| {
                let file = dir.join(i.to_string());
                std::fs::write(&file, random_bytes(&mut next, PIECE)).unwrap();
                (at, file)
            })
            .collect();
        Change { writes }
    }

    fn bytes(&self) -> u64 {
        self.writes.len() as u64 * PIECE
    }

    /// Make the change in a qcow2 volume (not attached to a guest).
    fn apply(&self, qcow2: &str) {
        write_from_files(qcow2, &self.writes, "64k");
    }
}

/// Write `len` bytes from each file at its offset of a qcow2 volume (not
/// attached to a guest), in one `qemu-io` run.
fn write_from_files(qcow2: &str, writes: &[(u64, PathBuf)], len: &str) {
    let cmds: Vec<String> = writes
        .iter()
        .map(|(at, file)| format!("write -q -s {} {at} {len}", file.display()))
        .collect();
    let mut args = vec!["-f", "qcow2"];
    for c in &cmds {
        args.extend(["-c", c.as_str()]);
    }
    args.push(qcow2);
    sh("qemu-io", &args, &[]);
}

/// Start `reprise serve` on a data directory of its own under `dir`.
fn serve(dir: &Path, encrypt: bool) -> (DaemonProcess, Client) {
    let bin = std::env::current_exe()
        .expect("own path")
        .with_file_name("reprise");
    assert!(
        bin.exists(),
        "{} is missing: `cargo build --release -p reprise` (bench/run.sh does)",
        bin.display()
    );
    let data = dir.join("data");
    let config = dir.join("reprise.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\nlisten = \"127.0.0.1:0\"\n[region]\nencrypt = {encrypt}\n",
            data.display()
        ),
    )
    .unwrap();
    serve_process(bin.to_str().unwrap(), &config, &data)
}

/// Start a job and follow it to its end (long-polling); its time and job.
fn timed_job(c: &Client, path: &str, body: serde_json::Value) -> (Duration, Job) {
    let started = Instant::now();
    let mut job = c.start_job(path, &body).expect("job accepted");
    while !job.state.is_final() {
        job = c
            .get(&format!("/api/v1/jobs/{}?wait_ms=5000", job.id))
            .expect("job");
    }
    let t = started.elapsed();
    assert!(job.error.is_none(), "{path}: {:?}", job.error);
    (t, job)
}

fn snapshot(c: &Client, volume: &str, name: &str) -> (Duration, Snapshot) {
    let (t, job) = timed_job(
        c,
        "/api/v1/snapshots",
        json!({"volume": volume, "name": name}),
    );
    let s: Snapshot = c
        .get(&format!("/api/v1/snapshots/{}", job.target_id))
        .unwrap();
    assert_eq!(s.state, SnapshotState::BackedUp, "{name}");
    (t, s)
}

/// Times of one step over the runs.
#[derive(Default)]
struct Times(Vec<f64>);

impl Times {
    fn push(&mut self, d: Duration) {
        self.0.push(d.as_secs_f64());
    }
    fn median(&self) -> Option<f64> {
        (!self.0.is_empty()).then(|| median(&mut self.0.clone()))
    }
    fn cell(&self) -> String {
        let Some(m) = self.median() else {
            return "-".into();
        };
        let min = self.0.iter().copied().fold(f64::MAX, f64::min);
        let max = self.0.iter().copied().fold(0.0, f64::max);
        format!("{m:.2} s ({min:.2}–{max:.2})")
    }
}

#[derive(Default)]
struct Row {
    tool: String,
    settings: String,
    full: Times,
    stored: Option<u64>,
    incremental: Times,
    /// Bytes the increment added to the store.
    increment_stored: Option<u64>,
    restore: Times,
    note: String,
    /// For reprise: the daemon's CPU seconds in each full snapshot and
    /// each restore.
    full_cpu: Vec<f64>,
    restore_cpu: Vec<f64>,
}

fn mib(b: u64) -> String {
    format!("{:.0} MiB", b as f64 / MIB as f64)
}

pub fn run() -> Vec<Section> {
    let size: u64 = std::env::var("REPRISE_BENCH_VOLUME_GIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8)
        * GIB;
    let written = size / 2;
    let (text, random) = (written / 2, written / 2);
    let dir = tempfile::Builder::new()
        .prefix("reprise-bench")
        .tempdir_in("/var/tmp")
        .unwrap();
    let d = dir.path();
    let raw = d.join("vol.raw");
    eprintln!("snapshots: writing {} GiB of data", written / GIB);
    write_volume_data(&raw, size, text, random);
    let img = d.join("vol.qcow2");
    to_qcow2(&raw, &img);
    let change = Change::new(&d.join("change"), size, text, random, size / 100 / PIECE);
    // The second instant, as a raw image for the peers and for checking
    // every restore.
    let raw2 = d.join("vol2.raw");
    {
        let copy = d.join("vol2.qcow2");
        std::fs::copy(&img, &copy).unwrap();
        change.apply(copy.to_str().unwrap());
        sh(
            "qemu-img",
            &[
                "convert",
                "-q",
                "-f",
                "qcow2",
                "-O",
                "raw",
                copy.to_str().unwrap(),
                raw2.to_str().unwrap(),
            ],
            &[],
        );
        std::fs::remove_file(&copy).unwrap();
    }
    let cache = if drop_caches() {
        "dropped before every step"
    } else {
        "warm (dropping it needs root)"
    };

    let mut rows = Vec::new();
    let mut peak_rss = 0u64;
    for encrypt in [false, true] {
        let mut row = Row {
            tool: "reprise".into(),
            settings: format!(
                "through `reprise serve`; zstd 1, 1 MiB chunks; {}",
                if encrypt {
                    "encrypted (AES-256-GCM)"
                } else {
                    "unencrypted"
                }
            ),
            ..Row::default()
        };
        for run in 0..runs() {
            eprintln!("snapshots: reprise, encrypted {encrypt}, run {}", run + 1);
            let run_dir = tempfile::Builder::new()
                .prefix("run")
                .tempdir_in(d)
                .unwrap();
            let (daemon, c) = serve(run_dir.path(), encrypt);
            let v: Volume = c
                .post(
                    "/api/v1/volumes",
                    &json!({"name": "bench", "size": format!("{}G", size / GIB)}),
                )
                .unwrap();
            sh(
                "qemu-img",
                &[
                    "convert",
                    "-q",
                    "-n",
                    "--target-is-zero",
                    "-f",
                    "qcow2",
                    "-O",
                    "qcow2",
                    img.to_str().unwrap(),
                    &v.path,
                ],
                &[],
            );
            drop_caches();
            let cpu = daemon.cpu_seconds();
            let (t, full) = snapshot(&c, "bench", "s1");
            row.full.push(t);
            row.full_cpu.push(daemon.cpu_seconds() - cpu);
            row.stored = full.new_bytes;
            change.apply(&v.path);
            drop_caches();
            let (t, inc) = snapshot(&c, "bench", "s2");
            row.incremental.push(t);
            row.increment_stored = inc.new_bytes;
            row.note = format!("the increment read {}", mib(inc.read_bytes.unwrap_or(0)));
            drop_caches();
            let cpu = daemon.cpu_seconds();
            let (t, job) = timed_job(
                &c,
                &format!("/api/v1/snapshots/{}/volumes", inc.id),
                json!({"name": "restored"}),
            );
            row.restore.push(t);
            row.restore_cpu.push(daemon.cpu_seconds() - cpu);
            let restored: Volume = c
                .get(&format!("/api/v1/volumes/{}", job.target_id))
                .unwrap();
            sh("qemu-img", &["check", "-q", &restored.path], &[]);
            sh(
                "qemu-img",
                &[
                    "compare",
                    "-q",
                    "-f",
                    "raw",
                    "-F",
                    "qcow2",
                    raw2.to_str().unwrap(),
                    &restored.path,
                ],
                &[],
            );
            peak_rss = peak_rss.max(daemon.memory().1);
        }
        row.note = format!(
            "{}; the daemon's CPU time: {:.1} s in the full, {:.1} s in the restore (medians)",
            row.note,
            median(&mut row.full_cpu),
            median(&mut row.restore_cpu)
        );
        rows.push(row);
    }

    // The I/O floor: a local copy of the same volume into a new qcow2.
    let mut floor = Row {
        tool: "qemu-img convert".into(),
        settings: "the volume copied to a new qcow2 on the same disk, uncompressed, then synced"
            .into(),
        note: "the I/O floor: no increments, every copy is whole".into(),
        ..Row::default()
    };
    for _ in 0..runs() {
        let out = d.join("copy.qcow2");
        drop_caches();
        let started = Instant::now();
        sh(
            "qemu-img",
            &[
                "convert",
                "-q",
                "-f",
                "qcow2",
                "-O",
                "qcow2",
                "-o",
                "cluster_size=65536",
                img.to_str().unwrap(),
                out.to_str().unwrap(),
            ],
            &[],
        );
        sh("sync", &["-f", out.to_str().unwrap()], &[]);
        floor.full.push(started.elapsed());
        floor.stored = Some(du(&out));
        std::fs::remove_file(&out).unwrap();
    }
    floor.restore = Times(floor.full.0.clone());

    if reprise_testing::campaign::env_u64("REPRISE_BENCH_PEERS", 1) != 0 {
        rows.extend(peers(d, &raw, &raw2));
    }
    rows.push(floor);
    vec![report(rows, size, written, &change, cache, peak_rss)]
}

/// restic, borg and rustic back up the instant as a raw image file
/// (`volume.img`, s1 then s2 in its place), three times each from an empty
/// repository; their restore writes the second instant to a file, synced.
fn peers(d: &Path, raw: &Path, raw2: &Path) -> Vec<Row> {
    let src = d.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let image = src.join("volume.img");
    let srcs = src.to_str().unwrap().to_string();
    type Step<'a> = Box<dyn Fn(&Path, &str) -> Duration + 'a>;
    let peers: Vec<(&str, &str, Step)> = vec![
        (
            "restic",
            "restic 0.14 (Debian), repository v2: AES-256 encryption, compression auto (zstd)",
            Box::new(|repo: &Path, step: &str| {
                let env = [
                    ("RESTIC_PASSWORD", "bench"),
                    ("RESTIC_REPOSITORY", repo.to_str().unwrap()),
                ];
                match step {
                    "init" => sh("restic", &["init", "-q"], &env),
                    "restore" => sh(
                        "restic",
                        &[
                            "restore",
                            "-q",
                            "--no-cache",
                            "latest",
                            "--target",
                            repo.with_extension("out").to_str().unwrap(),
                        ],
                        &env,
                    ),
                    _ => sh("restic", &["backup", "-q", "--no-cache", &srcs], &env),
                }
            }),
        ),
        (
            "borg",
            "borg 1.2 (Debian): repokey-blake2 encryption, zstd 3",
            Box::new(|repo: &Path, step: &str| {
                let env = [("BORG_PASSPHRASE", "bench")];
                let r = repo.to_str().unwrap();
                match step {
                    "init" => sh("borg", &["init", "-e", "repokey-blake2", r], &env),
                    "restore" => {
                        let out = repo.with_extension("out");
                        std::fs::create_dir_all(&out).unwrap();
                        let cmd = format!("cd '{}' && borg extract '{r}::s2'", out.display());
                        sh("sh", &["-c", &cmd], &env)
                    }
                    snap => sh(
                        "borg",
                        &[
                            "create",
                            "--compression",
                            "zstd,3",
                            &format!("{r}::{snap}"),
                            &srcs,
                        ],
                        &env,
                    ),
                }
            }),
        ),
        (
            "rustic",
            "rustic (crates.io): encrypted, zstd 3 (its defaults)",
            Box::new(|repo: &Path, step: &str| {
                let env = [
                    ("RUSTIC_PASSWORD", "bench"),
                    ("RUSTIC_REPOSITORY", repo.to_str().unwrap()),
                ];
                match step {
                    "init" => sh("rustic", &["init"], &env),
                    "restore" => sh(
                        "rustic",
                        &[
                            "restore",
                            "latest",
                            repo.with_extension("out").to_str().unwrap(),
                        ],
                        &env,
                    ),
                    _ => sh("rustic", &["backup", &srcs], &env),
                }
            }),
        ),
    ];
    let mut rows = Vec::new();
    for (name, settings, step) in peers {
        let mut row = Row {
            tool: name.into(),
            settings: settings.into(),
            note: "given the instants as a raw image file".into(),
            ..Row::default()
        };
        if Command::new(name).arg("--version").output().is_err() {
            row.note = format!("not measured: `{name}` is not installed here");
            rows.push(row);
            continue;
        }
        for run in 0..runs() {
            eprintln!("snapshots: {name}, run {}", run + 1);
            let repo = d.join(format!("repo-{name}"));
            step(&repo, "init");
            let _ = std::fs::remove_file(&image);
            std::fs::hard_link(raw, &image).unwrap();
            drop_caches();
            let started = Instant::now();
            step(&repo, "s1");
            row.full.push(started.elapsed());
            let stored = du(&repo);
            row.stored = Some(stored);
            std::fs::remove_file(&image).unwrap();
            std::fs::hard_link(raw2, &image).unwrap();
            drop_caches();
            let started = Instant::now();
            step(&repo, "s2");
            row.incremental.push(started.elapsed());
            row.increment_stored = Some(du(&repo).saturating_sub(stored));
            drop_caches();
            let out = repo.with_extension("out");
            let started = Instant::now();
            step(&repo, "restore");
            sh("sync", &["-f", out.to_str().unwrap()], &[]);
            row.restore.push(started.elapsed());
            let _ = std::fs::remove_dir_all(&out);
            let _ = std::fs::remove_dir_all(&repo);
        }
        rows.push(row);
    }
    rows
}

/// The section: the table, then each goal next to its figure.
fn report(
    rows: Vec<Row>,
    size: u64,
    written: u64,
    change: &Change,
    cache: &str,
    peak_rss: u64,
) -> Section {
    let mut body = format!(
        "A {} GiB volume with {} GiB written (half log-like text, half random), 64 KiB clusters. A full snapshot; then {} scattered 64 KiB writes of fresh random data ({}, 1 % of the volume) and an incremental snapshot; then the second instant restored (reprise: into a new volume, `qemu-img check` clean and `qemu-img compare` equal to the instant; the others: to a file, synced). reprise is a `reprise serve` process on this machine with a local-directory region store, driven through its HTTP API, each step a job followed to its end. Each tool ran {} times from an empty repository: median (min–max). Page cache: {cache}.\n\n| tool | settings | full | stored | incremental | increment stored | restore | note |\n|---|---|---|---|---|---|---|---|\n",
        size / GIB,
        written / GIB,
        change.writes.len(),
        mib(change.bytes()),
        runs(),
    );
    for r in &rows {
        let _ = writeln!(
            body,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            r.tool,
            r.settings,
            r.full.cell(),
            r.stored.map(mib).unwrap_or_else(|| "-".into()),
            r.incremental.cell(),
            r.increment_stored.map(mib).unwrap_or_else(|| "-".into()),
            r.restore.cell(),
            r.note
        );
    }
    let met = |ok: bool| if ok { "met" } else { "missed" };
    let (plain, encrypted) = (&rows[0], &rows[1]);
    let floor = rows.last().expect("the floor row");
    let peers: Vec<&Row> = rows[2..rows.len() - 1]
        .iter()
        .filter(|r| r.full.median().is_some())
        .collect();
    let floor_t = floor.full.median().unwrap();
    let _ = writeln!(
        body,
        "\nGoals (medians; the floor is the local `qemu-img convert`, {floor_t:.2} s):\n"
    );
    let full_e = encrypted.full.median().unwrap();
    let _ = writeln!(
        body,
        "- Full snapshot, encrypted, ≤ 1.5× the floor: {:.2}× — {} (unencrypted: {:.2}×).",
        full_e / floor_t,
        met(full_e / floor_t <= 1.5),
        plain.full.median().unwrap() / floor_t
    );
    if let Some(fastest) = peers.iter().min_by(|a, b| {
        a.full
            .median()
            .unwrap()
            .total_cmp(&b.full.median().unwrap())
    }) {
        let ratio = fastest.full.median().unwrap() / full_e;
        let _ = writeln!(
            body,
            "- Full snapshot, encrypted, ≥ 2.5× faster than the fastest peer ({}): {ratio:.2}× — {}.",
            fastest.tool,
            met(ratio >= 2.5)
        );
    }
    for r in [plain, encrypted] {
        let t = r.restore.median().unwrap();
        let slower: Vec<String> = peers
            .iter()
            .filter(|p| p.restore.median().unwrap() <= t)
            .map(|p| p.tool.clone())
            .collect();
        let _ = writeln!(
            body,
            "- Restore ({}) ≤ 1.5× the floor: {:.2}× — {}; faster than every peer: {}.",
            if std::ptr::eq(r, plain) {
                "unencrypted"
            } else {
                "encrypted"
            },
            t / floor_t,
            met(t / floor_t <= 1.5),
            if slower.is_empty() {
                "met".to_string()
            } else {
                format!("missed (not faster than {})", slower.join(", "))
            }
        );
    }
    let inc_stored = encrypted.increment_stored.unwrap_or(0) as f64 / change.bytes() as f64;
    let inc_t = encrypted.incremental.median().unwrap();
    let _ = writeln!(
        body,
        "- Increment stores ≤ 2× the bytes changed: {inc_stored:.1}× — {}; takes ≤ 1 s: {inc_t:.2} s — {}.",
        met(inc_stored <= 2.0),
        met(inc_t <= 1.0)
    );
    // What bounds the full snapshot and the restore here: the processor
    // time they need spread over every core, against the disk's floor.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for (what, cpu) in [
        ("encrypted full snapshot", &encrypted.full_cpu),
        ("encrypted restore", &encrypted.restore_cpu),
    ] {
        let mut cpu = cpu.clone();
        let least = median(&mut cpu) / cores as f64;
        let _ = writeln!(
            body,
            "- The {what} took {:.1} CPU-seconds of the daemon (median): on this machine's {cores} cores, at least {least:.2} s even with no core ever idle, {:.2}× the floor.",
            least * cores as f64,
            least / floor_t
        );
    }
    let _ = writeln!(
        body,
        "\nThe daemon's peak resident memory over these runs: {}.",
        mib(peak_rss)
    );
    Section {
        title: "Volume snapshots: full and incremental, against restic, borg, rustic and qemu-img"
            .into(),
        body,
    }
}

/// Memory: a `reprise serve` process backs up and restores a 1 TiB sparse
/// volume with 1 GiB of random data (16 extents of 64 MiB spread over it);
/// its peak resident memory is read from `/proc` after each step.
pub fn memory() -> Vec<Section> {
    let dir = tempfile::Builder::new()
        .prefix("reprise-bench")
        .tempdir_in("/var/tmp")
        .unwrap();
    let d = dir.path();
    let (daemon, c) = serve(d, true);
    let (_, started_peak) = daemon.memory();
    let v: Volume = c
        .post("/api/v1/volumes", &json!({"name": "huge", "size": "1T"}))
        .unwrap();
    let mut next = xorshift(0x51_7cc1_b727_220a);
    let extents: Vec<(u64, PathBuf)> = (0..16u64)
        .map(|i| {
            let file = d.join(format!("extent{i}"));
            std::fs::write(&file, random_bytes(&mut next, 64 * MIB)).unwrap();
            (i * (60 * GIB), file)
        })
        .collect();
    write_from_files(&v.path, &extents, "64M");
    for (_, file) in &extents {
        std::fs::remove_file(file).unwrap();
    }
    let (backup_t, s) = snapshot(&c, "huge", "s1");
    let (_, backup_peak) = daemon.memory();
    let (restore_t, job) = timed_job(
        &c,
        &format!("/api/v1/snapshots/{}/volumes", s.id),
        json!({"name": "back"}),
    );
    let (_, restore_peak) = daemon.memory();
    let back: Volume = c
        .get(&format!("/api/v1/volumes/{}", job.target_id))
        .unwrap();
    sh(
        "qemu-img",
        &[
            "compare", "-q", "-f", "qcow2", "-F", "qcow2", &v.path, &back.path,
        ],
        &[],
    );
    let goal = 256 * MIB;
    let worst = backup_peak.max(restore_peak);
    let body = format!(
        "A 1 TiB volume with 1 GiB of random data (16 extents of 64 MiB spread over it), backed up (encrypted) and restored into a new volume (`qemu-img compare` equal) by a `reprise serve` process through its API: backup {:.2} s, restore {:.2} s. The daemon's peak resident memory: {} at start, {} after the backup, {} after the restore (goal: under {}: {}). The index lists {} chunks; memory follows the chunks in flight, not the volume's size.\n",
        backup_t.as_secs_f64(),
        restore_t.as_secs_f64(),
        mib(started_peak),
        mib(backup_peak),
        mib(restore_peak),
        mib(goal),
        if worst < goal { "met" } else { "missed" },
        s.chunk_count.unwrap_or(0),
    );
    vec![Section {
        title: "Volume snapshots: memory for a 1 TiB sparse volume".into(),
        body,
    }]
}

/// Each step starts from cold caches when the machine allows it (root);
/// whether it did.
fn drop_caches() -> bool {
    let _ = Command::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}
