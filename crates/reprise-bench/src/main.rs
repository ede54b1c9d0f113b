//! The benchmark runner. `bench/run.sh` runs it in release mode; it
//! measures on this machine, in one run, reprise and the peers it is
//! compared with, and rewrites `docs/BENCHMARKS.md` with the figures.
//! Figures are what this run measured: nothing is copied from elsewhere.

mod deploy;
mod points;
mod recover;
mod region;
mod snapshots;

use std::fmt::Write;
use std::time::Duration;

/// A section of the report.
pub struct Section {
    pub title: String,
    pub body: String,
}

pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The nearest-rank percentile.
pub fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0)
        >> 20;
    let qemu = std::process::Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default();
    let accel = reprise_qemu::accel::choose(
        reprise_qemu::AccelSetting::Auto,
        reprise_qemu::accel::HostFacts::probe(),
    )
    .map(|a| a.as_str())
    .unwrap_or("?");
    format!("{cpu}, {cores} cores, {mem_gib} GiB; {qemu}; guests run under {accel}")
}

fn main() {
    // Freezes are guarded by a process of their own, as in the product:
    // this executable, run as one.
    reprise_daemon::quiesce::guard_if_asked();
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "docs/BENCHMARKS.md".into());
    // `REPRISE_BENCH=points` (or only its memory points: `=memory-points`,
    // or its disk-only points: `=disk-points`),
    // `=snapshots` (or only the 1 TiB volume's memory: `=memory`), `=deploy`,
    // `=region` or `=recover` measures one group; the other sections of the report are
    // kept as they were, in their places.
    let only = std::env::var("REPRISE_BENCH").unwrap_or_default();
    let started = std::time::Instant::now();
    let mut sections = Vec::new();
    if only.is_empty() || only == "points" {
        sections.extend(points::run());
    }
    if only == "memory-points" {
        sections.push(points::memory_points());
    }
    if only == "disk-points" {
        sections.push(points::creation_latency());
    }
    if only.is_empty() || only == "snapshots" {
        sections.extend(snapshots::run());
    }
    if only.is_empty() || only == "snapshots" || only == "memory" {
        sections.extend(snapshots::memory());
    }
    if only.is_empty() || only == "deploy" {
        sections.extend(deploy::run());
    }
    if only.is_empty() || only == "region" {
        sections.extend(region::run());
    }
    if only.is_empty() || only == "recover" {
        sections.extend(recover::run());
    }
    let stamp = format!(
        "_Measured by `bench/run.sh` at commit {} on {} UTC in a {:.0} s run, on: {}._\n",
        commit(),
        reprise_core_time(),
        started.elapsed().as_secs_f64(),
        machine()
    );
    for s in &mut sections {
        s.body = format!("{stamp}\n{}", s.body);
    }
    // Sections measured now replace their old text in place; new ones go
    // at the end.
    let mut doc_sections: Vec<Section> = std::fs::read_to_string(&out)
        .unwrap_or_default()
        .split("\n## ")
        .skip(1)
        .filter_map(|part| {
            let (title, body) = part.split_once("\n\n")?;
            Some(Section {
                title: title.to_string(),
                body: body.to_string(),
            })
        })
        .collect();
    for s in sections {
        match doc_sections.iter_mut().find(|old| old.title == s.title) {
            Some(old) => *old = s,
            None => doc_sections.push(s),
        }
    }
    let mut doc = String::new();
    let _ = writeln!(doc, "# Benchmarks\n");
    let _ = writeln!(
        doc,
        "Every section was measured in one run, reprise and its peers side by side, on the machine and date it names. Run `bench/run.sh` to measure again on your machine.\n"
    );
    for s in doc_sections {
        let _ = writeln!(doc, "## {}\n\n{}", s.title, s.body.trim_end());
        let _ = writeln!(doc);
    }
    std::fs::write(&out, &doc).expect("write the report");
    println!("{doc}");
    eprintln!("wrote {out}");
}

/// The commit measured (`+` when the tree had changes besides).
fn commit() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let head = git(&["rev-parse", "--short", "HEAD"]);
    let dirty = !git(&["status", "--porcelain", "--untracked-files=no"]).is_empty();
    format!("{head}{}", if dirty { "+" } else { "" })
}

fn reprise_core_time() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    out
}
