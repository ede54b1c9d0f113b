//! A volume's qcow2 can come from a tenant (an uploaded image is checked by
//! `qemu-img`, but the reader reads every volume's own tables): the reader
//! is fed thousands of copies of a small image QEMU wrote, damaged in its
//! header, snapshot table and L1/L2 tables, from a fixed seed. It may
//! accept a change (qcow2 has no checksum), but never panic, never read
//! past what it was given, and never allocate for sizes a header merely
//! claims; each refusal is `corrupt`, `invalid` (unsupported), or the
//! snapshot not found (its name damaged).
//!
//! `REPRISE_MUTATIONS=N` runs N cases instead of 2000.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reprise_core::ErrorKind;
use reprise_qcow2::{Image, SnapshotReader};
use std::process::Command;

fn qemu(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Open, find the snapshot, list what changed, read it all: the whole path
/// a backup takes through an image.
fn read_through(bytes: Vec<u8>) -> reprise_core::Result<u64> {
    let image = Image::open(bytes)?;
    let snapshot = SnapshotReader::open(image, "s1")?;
    let size = snapshot.volume_size();
    if size > 64 << 20 {
        // A header may claim any size; the reader must refuse to read
        // past the data, not allocate for the claim: read a window only.
        let mut buf = vec![0u8; 1 << 16];
        snapshot.read(size.saturating_sub(1 << 16), &mut buf)?;
        return Ok(size);
    }
    let grains = snapshot.changed_grains(None, 1 << 16)?;
    let mut buf = vec![0u8; 1 << 16];
    for g in grains {
        snapshot.read(g, &mut buf)?;
    }
    Ok(size)
}

#[test]
fn damaged_images_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.qcow2");
    let path = img.to_str().unwrap();
    qemu(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "cluster_size=65536",
            path,
            "8M",
        ],
    );
    qemu(
        "qemu-io",
        &[
            "-f",
            "qcow2",
            "-c",
            "write -P 7 0 1M",
            "-c",
            "write -P 9 5M 64k",
            path,
        ],
    );
    qemu("qemu-img", &["snapshot", "-c", "s1", path]);
    qemu(
        "qemu-io",
        &["-f", "qcow2", "-c", "write -P 3 512k 128k", path],
    );
    let valid = std::fs::read(&img).unwrap();
    assert_eq!(read_through(valid.clone()).unwrap(), 8 << 20);

    // Where the metadata is: the header, and the clusters the tables sit
    // in (everything but the data clusters, which any byte may fill).
    let image = Image::open(valid.clone()).unwrap();
    let l1 = image.header.l1_table_offset as usize;
    let table = image.header.snapshots_offset as usize;
    drop(image);
    let regions = [
        (0usize, 512usize),
        (l1, 512),
        (table, 512),
        (0x30000, 0x10000),
    ];
    let cases: usize = std::env::var("REPRISE_MUTATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2000);
    let mut rng = StdRng::seed_from_u64(7);
    let mut refused = 0;
    for n in 0..cases {
        let mut damaged = valid.clone();
        let (start, len) = regions[rng.gen_range(0..regions.len())];
        for _ in 0..rng.gen_range(1..6) {
            let i = (start + rng.gen_range(0..len)).min(damaged.len() - 1);
            damaged[i] = match rng.gen_range(0..4) {
                0 => damaged[i] ^ (1 << rng.gen_range(0..8)),
                1 => 0xff,
                2 => 0,
                _ => rng.gen(),
            };
        }
        if rng.gen_range(0..10) == 0 {
            damaged.truncate(rng.gen_range(0..damaged.len()));
        }
        match std::panic::catch_unwind(|| read_through(damaged)) {
            Err(_) => panic!("case {n} (seed 7): the reader panicked"),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                assert!(
                    matches!(
                        e.kind,
                        ErrorKind::Corrupt | ErrorKind::Invalid | ErrorKind::NotFound
                    ),
                    "case {n}: {e}"
                );
                refused += 1;
            }
        }
    }
    println!("{cases} damaged images: {refused} refused, none panicked");
    assert!(refused > 0);
}
