//! Volume snapshots against their peers, on one point-in-time image: an
//! 8 GiB volume with 4 GiB written (half compressible text, half random),
//! a full copy, then an incremental one after 1 % of the volume changed.
//! reprise reads the qcow2 snapshot itself; restic, borg and rustic get the
//! same instant as a raw image file, and `qemu-img convert -c` copies the
//! qcow2 snapshot into a compressed qcow2. Also: the memory reprise uses to
//! back up a 1 TiB sparse volume.

use crate::Section;
use reprise_backup::backup::Base;
use reprise_backup::{backup, Refs, Region};
use reprise_store::Store;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

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

/// raw → qcow2 with the daemon's own qemu-img wrapper (64 KiB clusters), as
/// a volume is made and a restore finishes.
fn to_qcow2(rt: &tokio::runtime::Runtime, raw: &Path, qcow2: &Path) {
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

/// Text that compresses like logs do (about 4:1 with zstd), and random data.
fn write_volume_data(raw: &Path, size: u64, text: u64, random: u64) {
    let f = std::fs::File::create(raw).unwrap();
    f.set_len(size).unwrap();
    let mut x = 0x2545f4914f6cdd1du64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
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
        buf.clear();
        for _ in 0..(4 << 20) / 8 {
            buf.extend_from_slice(&next().to_le_bytes());
        }
        std::os::unix::fs::FileExt::write_all_at(&f, &buf, at).unwrap();
        at += buf.len() as u64;
    }
    f.sync_all().unwrap();
}

/// Back up the source directory into a repository as snapshot "s1" or
/// "s2"; `None` when the tool is not installed.
type Peer<'a> = Box<dyn Fn(&Path, &str) -> Option<Duration> + 'a>;

struct Row {
    tool: String,
    full: Option<Duration>,
    stored: Option<u64>,
    incremental: Option<Duration>,
    /// Restoring the second instant to a file (reprise: a qcow2 volume).
    restore: Option<Duration>,
    note: String,
}

pub fn run() -> Vec<Section> {
    let size: u64 = std::env::var("REPRISE_BENCH_VOLUME_GIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8)
        * GIB;
    let written = size / 2;
    let dir = tempfile::Builder::new()
        .prefix("reprise-bench")
        .tempdir_in("/var/tmp")
        .unwrap();
    let d = dir.path();
    let raw = d.join("vol.raw");
    eprintln!("snapshots: writing {} GiB of data", written / GIB);
    write_volume_data(&raw, size, written / 2, written / 2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let img = d.join("vol.qcow2");
    to_qcow2(&rt, &raw, &img);
    let imgs = img.to_str().unwrap();
    sh("qemu-img", &["snapshot", "-c", "s1", imgs], &[]);
    // 1 % of the volume rewritten, in 2 MiB pieces spread over the data.
    let pieces = (size / 100) / (2 * MIB);
    let mut args = vec!["-f".to_string(), "qcow2".to_string()];
    for i in 0..pieces {
        let off = (i * (written / pieces) + (if i % 2 == 0 { 0 } else { size / 2 })) / (64 << 10)
            * (64 << 10);
        let off = off.min(size - 2 * MIB);
        args.push("-c".into());
        args.push(format!("write -P {} {off} 2M", (i % 250) + 1));
    }
    args.push(imgs.into());
    let args_ref: Vec<&str> = args.iter().map(String::as_str).collect();
    sh("qemu-io", &args_ref, &[]);
    sh("qemu-img", &["snapshot", "-c", "s2", imgs], &[]);
    let raw2 = d.join("vol2.raw");
    sh(
        "qemu-img",
        &[
            "convert",
            "-q",
            "-f",
            "qcow2",
            "-O",
            "raw",
            "-l",
            "snapshot.name=s2",
            imgs,
            raw2.to_str().unwrap(),
        ],
        &[],
    );

    let mut rows = Vec::new();
    // reprise, at the default chunk size and the other sizes it could use.
    let mut chunk_sizes = Vec::new();
    for chunk_size in [1u32 << 20, 2 << 20, 4 << 20] {
        let store_dir = d.join(format!("reprise-{}", chunk_size >> 20));
        let mut region = rt
            .block_on(Region::open(
                Store::local(&store_dir).unwrap(),
                &[9; 32],
                false,
            ))
            .unwrap();
        region.chunk_size = chunk_size;
        let refs = Arc::new(Refs::default());
        drop_caches();
        let started = Instant::now();
        let full = rt
            .block_on(backup(&region, &refs, img.clone(), "s1", None, |_, _| {}))
            .unwrap();
        let full_t = started.elapsed();
        let stored = du(&store_dir);
        drop_caches();
        let started = Instant::now();
        let base = Base {
            snapshot_id: uuid::Uuid::nil(),
            tag: "s1".into(),
            index: full.index.clone(),
        };
        let inc = rt
            .block_on(backup(
                &region,
                &refs,
                img.clone(),
                "s2",
                Some(base),
                |_, _| {},
            ))
            .unwrap();
        let inc_t = started.elapsed();
        // Restore the second instant into a new qcow2 volume, as `volume
        // create --from-snapshot` does: chunks into a sparse raw image,
        // then qemu-img convert.
        let restore_t = if chunk_size == reprise_backup::DEFAULT_CHUNK_SIZE {
            let raw_out = d.join("restored.raw");
            let qcow_out = d.join("restored.qcow2");
            drop_caches();
            let started = Instant::now();
            let file = std::fs::File::create(&raw_out).unwrap();
            rt.block_on(reprise_backup::restore_raw(
                &region,
                &inc.index,
                file,
                |_, _| {},
            ))
            .unwrap();
            to_qcow2(&rt, &raw_out, &qcow_out);
            let t = started.elapsed();
            let same = Command::new("qemu-img")
                .args(["compare", "-q", "-f", "raw", "-F", "qcow2"])
                .arg(&raw2)
                .arg(&qcow_out)
                .status()
                .unwrap();
            assert!(same.success(), "the restored volume equals the instant");
            let _ = std::fs::remove_file(&raw_out);
            let _ = std::fs::remove_file(&qcow_out);
            Some(t)
        } else {
            None
        };
        let row = Row {
            tool: "reprise".into(),
            full: Some(full_t),
            stored: Some(stored),
            incremental: Some(inc_t),
            restore: restore_t,
            note: format!(
                "reads the qcow2 snapshot; the increment read {} MiB and stored {} MiB",
                inc.read_bytes / MIB,
                inc.new_bytes / MIB
            ),
        };
        chunk_sizes.push((chunk_size, full_t, inc_t, inc.read_bytes, inc.new_bytes));
        if chunk_size == reprise_backup::DEFAULT_CHUNK_SIZE {
            rows.push(row);
        }
        let _ = std::fs::remove_dir_all(&store_dir);
    }
    // qemu-img convert -c
    {
        let out = d.join("copy.qcow2");
        drop_caches();
        let t = sh(
            "qemu-img",
            &[
                "convert",
                "-q",
                "-c",
                "-f",
                "qcow2",
                "-O",
                "qcow2",
                "-l",
                "snapshot.name=s1",
                imgs,
                out.to_str().unwrap(),
            ],
            &[],
        );
        let stored = du(&out);
        // Its "restore": a plain copy of the same instant from the local
        // qcow2 into a new qcow2.
        let copy = d.join("plain-copy.qcow2");
        drop_caches();
        let restore = sh(
            "qemu-img",
            &[
                "convert",
                "-q",
                "-f",
                "qcow2",
                "-O",
                "qcow2",
                "-l",
                "snapshot.name=s2",
                imgs,
                copy.to_str().unwrap(),
            ],
            &[],
        );
        let _ = std::fs::remove_file(&copy);
        rows.push(Row {
            tool: "qemu-img convert -c".into(),
            full: Some(t),
            stored: Some(stored),
            incremental: None,
            restore: Some(restore),
            note: "no increments: every copy is whole".into(),
        });
    }
    // The file-based peers back up `vol.raw` twice: s1, then s2 in its place.
    let src = d.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let image_path = src.join("volume.img");
    let peers: Vec<(&str, Peer)> = vec![
        (
            "restic",
            Box::new(|repo: &Path, snap: &str| {
                let env = [
                    ("RESTIC_PASSWORD", "bench"),
                    ("RESTIC_REPOSITORY", repo.to_str().unwrap()),
                ];
                if snap == "s1" {
                    sh("restic", &["init", "-q"], &env);
                }
                if snap == "restore" {
                    let target = repo.with_extension("restored");
                    return Some(sh(
                        "restic",
                        &[
                            "restore",
                            "-q",
                            "--no-cache",
                            "latest",
                            "--target",
                            target.to_str().unwrap(),
                        ],
                        &env,
                    ));
                }
                Some(sh(
                    "restic",
                    &["backup", "-q", "--no-cache", src.to_str().unwrap()],
                    &env,
                ))
            }),
        ),
        (
            "borg",
            Box::new(|repo: &Path, snap: &str| {
                let env = [("BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK", "yes")];
                if snap == "restore" {
                    let target = repo.with_extension("restored");
                    std::fs::create_dir_all(&target).unwrap();
                    let cmd = format!(
                        "cd '{}' && borg extract '{}::s2'",
                        target.display(),
                        repo.display()
                    );
                    return Some(sh("sh", &["-c", &cmd], &env));
                }
                if snap == "s1" {
                    sh(
                        "borg",
                        &["init", "-e", "none", repo.to_str().unwrap()],
                        &env,
                    );
                }
                let archive = format!("{}::{snap}", repo.display());
                Some(sh(
                    "borg",
                    &[
                        "create",
                        "--compression",
                        "zstd,3",
                        &archive,
                        src.to_str().unwrap(),
                    ],
                    &env,
                ))
            }),
        ),
        (
            "rustic",
            Box::new(|repo: &Path, snap: &str| {
                Command::new("rustic").arg("--version").output().ok()?;
                let env = [
                    ("RUSTIC_PASSWORD", "bench"),
                    ("RUSTIC_REPOSITORY", repo.to_str().unwrap()),
                ];
                if snap == "s1" {
                    sh("rustic", &["init"], &env);
                }
                if snap == "restore" {
                    let target = repo.with_extension("restored");
                    return Some(sh(
                        "rustic",
                        &["restore", "latest", target.to_str().unwrap()],
                        &env,
                    ));
                }
                Some(sh("rustic", &["backup", src.to_str().unwrap()], &env))
            }),
        ),
    ];
    for (name, run) in peers {
        let repo = d.join(format!("repo-{name}"));
        let _ = std::fs::remove_file(&image_path);
        std::fs::hard_link(&raw, &image_path).unwrap();
        drop_caches();
        eprintln!("snapshots: {name}");
        let Some(full) = run(&repo, "s1") else {
            rows.push(Row {
                tool: name.into(),
                full: None,
                stored: None,
                incremental: None,
                restore: None,
                note: format!("not measured: `{name}` is not installed here"),
            });
            continue;
        };
        let stored = du(&repo);
        std::fs::remove_file(&image_path).unwrap();
        std::fs::hard_link(&raw2, &image_path).unwrap();
        drop_caches();
        let inc = run(&repo, "s2");
        drop_caches();
        let restore = run(&repo, "restore");
        let _ = std::fs::remove_dir_all(repo.with_extension("restored"));
        rows.push(Row {
            tool: name.into(),
            full: Some(full),
            stored: Some(stored),
            incremental: inc,
            restore,
            note: "given the instant as a raw image file".into(),
        });
        let _ = std::fs::remove_dir_all(&repo);
    }

    let mut body = format!(
        "A {} GiB volume with {} GiB written (half log-like text, half random), 64 KiB clusters. Full copy, then an incremental one after 1 % of the volume ({} pieces of 2 MiB) was rewritten. Page cache dropped before each run when allowed. Throughput is written data over time. Restore: the second instant back to a file (reprise: into a new qcow2 volume, as `volume create --from-snapshot` does; qemu-img: a plain copy of the local qcow2 snapshot).\n\n| tool | full | throughput | stored | incremental (1 %) | incremental / full | restore | restore throughput | note |\n|---|---|---|---|---|---|---|---|---|\n",
        size / GIB,
        written / GIB,
        pieces
    );
    for r in &rows {
        let secs = |d: &Option<Duration>| {
            d.map(|d| format!("{:.2} s", d.as_secs_f64()))
                .unwrap_or_else(|| "-".into())
        };
        let _ = writeln!(
            body,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.tool,
            secs(&r.full),
            r.full
                .map(|d| format!("{:.0} MiB/s", (written / MIB) as f64 / d.as_secs_f64()))
                .unwrap_or_else(|| "-".into()),
            r.stored
                .map(|b| format!("{:.0} MiB", b as f64 / MIB as f64))
                .unwrap_or_else(|| "-".into()),
            secs(&r.incremental),
            match (r.full, r.incremental) {
                (Some(f), Some(i)) => format!("{:.1} %", 100.0 * i.as_secs_f64() / f.as_secs_f64()),
                _ => "-".into(),
            },
            secs(&r.restore),
            r.restore
                .map(|d| format!("{:.0} MiB/s", (written / MIB) as f64 / d.as_secs_f64()))
                .unwrap_or_else(|| "-".into()),
            r.note
        );
    }
    let reprise = rows[0].full.unwrap().as_secs_f64();
    let fastest = rows[1..]
        .iter()
        .filter_map(|r| r.full.map(|d| (d.as_secs_f64(), r.tool.clone())))
        .min_by(|a, b| a.0.total_cmp(&b.0));
    if let Some((t, tool)) = fastest {
        let _ = writeln!(
            body,
            "\nFull copy: reprise is {:.2}× the fastest peer measured ({tool}). Goal: 2×.",
            t / reprise
        );
    }
    let reprise_restore = rows[0].restore.map(|d| d.as_secs_f64());
    for r in &rows[1..] {
        if let (Some(mine), Some(theirs)) = (reprise_restore, r.restore) {
            let _ = writeln!(
                body,
                "Restore: reprise takes {:.2}× the time of {}.",
                mine / theirs.as_secs_f64(),
                r.tool
            );
        }
    }
    let _ = writeln!(
        body,
        "\nChunk size (reprise, same image, same run):\n\n| chunk | full | incremental | increment read | increment stored |\n|---|---|---|---|---|"
    );
    for (cs, full, inc, read, new) in &chunk_sizes {
        let _ = writeln!(
            body,
            "| {} MiB | {:.2} s | {:.2} s | {} MiB | {} MiB |",
            cs >> 20,
            full.as_secs_f64(),
            inc.as_secs_f64(),
            read / MIB,
            new / MIB
        );
    }

    vec![Section {
        title: "Volume snapshots: full and incremental, against restic, borg, rustic and qemu-img"
            .into(),
        body,
    }]
}

use std::fmt::Write as _;

/// Memory: a backup of a 1 TiB sparse volume (1 GiB written), in a fresh
/// process of its own so its peak resident memory is the backup's.
pub fn memory() -> Vec<Section> {
    let out = Command::new(std::env::current_exe().expect("own path"))
        .arg("--sparse-memory")
        .output()
        .expect("child runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    vec![Section {
        title: "Volume snapshots: memory for a 1 TiB sparse volume".into(),
        body: String::from_utf8_lossy(&out.stdout).trim().to_string() + "\n",
    }]
}

/// The child's side of [`memory`]: prints one paragraph.
pub fn sparse_memory_child() {
    let dir = tempfile::Builder::new()
        .prefix("reprise-bench")
        .tempdir_in("/var/tmp")
        .unwrap();
    let d = dir.path();
    let img: PathBuf = d.join("huge.qcow2");
    let imgs = img.to_str().unwrap();
    sh(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", imgs, "1T"],
        &[],
    );
    let mut args = vec!["-f", "qcow2"];
    let cmds: Vec<String> = (0..16)
        .map(|i| format!("write -P {} {} 64M", i + 1, i * (60u64 << 30)))
        .collect();
    for c in &cmds {
        args.push("-c");
        args.push(c);
    }
    args.push(imgs);
    sh("qemu-io", &args, &[]);
    sh("qemu-img", &["snapshot", "-c", "s1", imgs], &[]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let region = rt
        .block_on(Region::open(
            Store::local(&d.join("store")).unwrap(),
            &[9; 32],
            false,
        ))
        .unwrap();
    let before = hwm_kib();
    let started = Instant::now();
    let done = rt
        .block_on(backup(
            &region,
            &Arc::new(Refs::default()),
            img.clone(),
            "s1",
            None,
            |_, _| {},
        ))
        .unwrap();
    let t = started.elapsed();
    let peak = hwm_kib();
    println!(
        "A 1 TiB qcow2 volume with 1 GiB written (16 extents of 64 MiB spread over it), backed up in a fresh process: {:.2} s; peak resident memory of the whole process {} MiB ({} MiB before the backup started). The index lists {} chunks. Memory follows the chunks in flight ({} at once, at most two 1 MiB buffers each), not the volume's size.",
        t.as_secs_f64(),
        peak / 1024,
        before / 1024,
        done.index.entries.len(),
        region.parallel
    );
}

fn hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Each run starts from cold caches when the machine allows it (root).
fn drop_caches() {
    let _ = Command::new("sync").status();
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
}
