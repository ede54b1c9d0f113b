//! Images written by [`reprise_qcow2::writer`], judged by QEMU's own tools:
//! `qemu-img check` finds nothing, `qemu-img compare` finds the intended
//! bytes, zero clusters are unallocated, and QEMU can go on writing to the
//! image (its refcounts are right) and still check it clean.

use rand::{Rng, SeedableRng};
use reprise_qcow2::writer::{Builder, Layout};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Content for an extent: some clusters random, some zero, some with a
/// single non-zero byte at the end (a cluster is zero only if all of it is).
fn content(rng: &mut rand::rngs::StdRng, len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    for cluster in data.chunks_mut(65536) {
        match rng.gen_range(0..4) {
            0 => {}
            1 => *cluster.last_mut().unwrap() = 7,
            _ => rng.fill(cluster),
        }
    }
    data
}

/// Write `extents` of `extent_size` (with content, in a shuffled order from
/// four threads) into a new image, and the same bytes into a raw file.
fn build(dir: &Path, size: u64, extent_size: u64, listed: Vec<u64>, written: &[u64], seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let raw = std::fs::File::create(dir.join("want.raw")).unwrap();
    raw.set_len(size).unwrap();
    let layout = Layout::new(size, extent_size, listed).unwrap();
    let img = std::fs::File::create_new(dir.join("made.qcow2")).unwrap();
    let builder = Builder::create(img, layout).unwrap();
    let mut jobs: Vec<(u64, Vec<u8>)> = written
        .iter()
        .map(|&e| {
            let len = extent_size.min(size - e * extent_size) as usize;
            let data = content(&mut rng, len);
            raw.write_all_at(&data, e * extent_size).unwrap();
            (e, data)
        })
        .collect();
    // Out of order, from several threads.
    for i in (1..jobs.len()).rev() {
        jobs.swap(i, rng.gen_range(0..=i));
    }
    std::thread::scope(|s| {
        for part in jobs.chunks(jobs.len().div_ceil(4).max(1)) {
            let builder = &builder;
            s.spawn(move || {
                for (e, data) in part {
                    builder.write(*e, data).unwrap();
                }
            });
        }
    });
    builder.finish().unwrap();
}

fn check_clean(img: &Path) {
    let out = run(
        "qemu-img",
        &["check", "--output=json", img.to_str().unwrap()],
    );
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    for key in ["corruptions", "leaks", "check-errors"] {
        assert_eq!(
            report.get(key).and_then(|v| v.as_u64()).unwrap_or(0),
            0,
            "{out}"
        );
    }
}

fn same_bytes(dir: &Path) {
    run(
        "qemu-img",
        &[
            "compare",
            "-q",
            "-f",
            "raw",
            "-F",
            "qcow2",
            dir.join("want.raw").to_str().unwrap(),
            dir.join("made.qcow2").to_str().unwrap(),
        ],
    );
}

#[test]
fn an_image_written_out_of_order_is_clean_and_holds_the_bytes() {
    let dir = tempfile::tempdir().unwrap();
    // 3 GiB + 5 KiB: the last extent is short and ends inside a cluster.
    let size = (3u64 << 30) + 5 * 1024;
    let listed: Vec<u64> = vec![0, 1, 2, 7, 511, 512, 513, 2000, 3072];
    let written = [0, 2, 7, 511, 512, 513, 2000, 3072];
    build(dir.path(), size, 1 << 20, listed, &written, 1);
    let img = dir.path().join("made.qcow2");
    check_clean(&img);
    same_bytes(dir.path());
    // Zero clusters were not allocated: the image holds fewer data bytes
    // than the extents written.
    let map = run("qemu-img", &["map", "--output=json", img.to_str().unwrap()]);
    let extents: Vec<serde_json::Value> = serde_json::from_str(&map).unwrap();
    let allocated: u64 = extents
        .iter()
        .filter(|e| e["data"].as_bool() == Some(true))
        .map(|e| e["length"].as_u64().unwrap())
        .sum();
    assert!(
        allocated > 0 && allocated < written.len() as u64 * (1 << 20),
        "{map}"
    );
    // QEMU allocates on top of it and finds its refcounts right.
    run(
        "qemu-io",
        &[
            "-f",
            "qcow2",
            "-c",
            "write -P 9 1048576 3M",
            "-c",
            "write -P 10 2097152000 64k",
            img.to_str().unwrap(),
        ],
    );
    check_clean(&img);
    let want = std::fs::File::options()
        .write(true)
        .open(dir.path().join("want.raw"))
        .unwrap();
    want.write_all_at(&[9u8; 3 << 20], 1 << 20).unwrap();
    want.write_all_at(&[10u8; 64 << 10], 2097152000).unwrap();
    same_bytes(dir.path());
}

#[test]
fn runs_are_split_where_a_refcount_block_ends() {
    // 2300 extents listed, so the data region passes the 2 GiB of file one
    // refcount block covers; only extents around that point are written
    // (the others stay holes).
    let dir = tempfile::tempdir().unwrap();
    let size = 2400u64 << 20;
    let listed: Vec<u64> = (0..2300).collect();
    let written: Vec<u64> = (2030..2060).chain([0, 2299]).collect();
    build(dir.path(), size, 1 << 20, listed, &written, 2);
    check_clean(&dir.path().join("made.qcow2"));
    same_bytes(dir.path());
}

#[test]
fn a_wrong_extent_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(4 << 20, 1 << 20, vec![1]).unwrap();
    let img = std::fs::File::create_new(dir.path().join("x.qcow2")).unwrap();
    let b = Builder::create(img, layout).unwrap();
    assert_eq!(b.write(2, &[1; 1 << 20]).unwrap_err().code, "qcow2_layout");
    assert_eq!(b.write(1, &[1; 100]).unwrap_err().code, "qcow2_layout");
}
