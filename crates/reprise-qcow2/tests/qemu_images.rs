//! The reader against images QEMU itself wrote: snapshot data read by the
//! reader equals what `qemu-img convert` extracts from the same snapshot,
//! and the space a snapshot alone holds follows the writes made after it.

use reprise_qcow2::{Image, SnapshotReader};
use std::path::Path;
use std::process::Command;

fn qemu(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn write(img: &Path, pattern: u8, offset: u64, len: u64) {
    qemu(
        "qemu-io",
        &[
            "-f",
            "qcow2",
            "-c",
            &format!("write -P {pattern} {offset} {len}"),
            img.to_str().unwrap(),
        ],
    );
}

/// A new qcow2 of `size` with 64 KiB clusters in `dir`.
fn new_image(dir: &Path, size: &str) -> std::path::PathBuf {
    let img = dir.join("disk.qcow2");
    qemu(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "cluster_size=65536",
            img.to_str().unwrap(),
            size,
        ],
    );
    img
}

fn reader(img: &Path, tag: &str) -> SnapshotReader<std::fs::File> {
    let image = Image::open(std::fs::File::open(img).unwrap()).unwrap();
    SnapshotReader::open(image, tag).unwrap()
}

/// The guest bytes of an internal snapshot, read through the reader.
fn read_all(snapshot: &SnapshotReader<std::fs::File>) -> Vec<u8> {
    let mut out = vec![0u8; snapshot.volume_size() as usize];
    snapshot.read(0, &mut out).unwrap();
    out
}

#[test]
fn snapshot_data_equals_qemu_img_convert() {
    let dir = tempfile::tempdir().unwrap();
    let img = new_image(dir.path(), "16M");
    let p = img.to_str().unwrap();
    write(&img, 0x11, 0, 3 << 20);
    write(&img, 0x22, 9 << 20, 100_000);
    qemu("qemu-img", &["snapshot", "-c", "first", p]);
    write(&img, 0x33, 1 << 20, 1 << 20); // overwrite 1 MiB after the snapshot
    qemu("qemu-io", &["-f", "qcow2", "-c", "write -z 0 65536", p]);
    qemu("qemu-img", &["snapshot", "-c", "second", p]);

    let image = Image::open(std::fs::File::open(&img).unwrap()).unwrap();
    assert_eq!(
        image
            .snapshots
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["first", "second"]
    );
    assert_eq!(image.snapshot("first").unwrap().vm_state_size, 0);
    for name in ["first", "second"] {
        let ours = read_all(&reader(&img, name));
        let raw = dir.path().join(format!("{name}.raw"));
        qemu(
            "qemu-img",
            &[
                "convert",
                "-U",
                "-l",
                &format!("snapshot.name={name}"),
                "-O",
                "raw",
                p,
                raw.to_str().unwrap(),
            ],
        );
        let theirs = std::fs::read(&raw).unwrap();
        assert_eq!(ours.len(), theirs.len());
        assert!(
            ours == theirs,
            "snapshot {name}: the reader and qemu-img disagree"
        );
    }
    let e = image.snapshot_l1("third").unwrap_err();
    assert_eq!(e.code, "snapshot_not_found");
}

#[test]
fn exclusive_bytes_follow_the_writes_after_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let img = new_image(dir.path(), "64M");
    let p = img.to_str().unwrap();
    write(&img, 0x11, 0, 8 << 20);
    qemu("qemu-img", &["snapshot", "-c", "a", p]);
    let open = || Image::open(std::fs::File::open(&img).unwrap()).unwrap();
    // Right after the snapshot, everything is shared with the live disk:
    // only its L1 table is its own.
    assert_eq!(open().exclusive_bytes("a").unwrap(), 65536);
    // Overwrite 2 MiB: the old 2 MiB now belong to the snapshot alone.
    write(&img, 0x22, 0, 2 << 20);
    let held = open().exclusive_bytes("a").unwrap();
    assert!(
        (2 << 20..=(2 << 20) + 3 * 65536).contains(&held),
        "held {held}"
    );
    // A second snapshot shares those clusters with the live disk too.
    qemu("qemu-img", &["snapshot", "-c", "b", p]);
    assert_eq!(open().exclusive_bytes("b").unwrap(), 65536);
    qemu("qemu-img", &["check", "-q", p]);
}

#[test]
fn changed_clusters_are_exactly_the_rewritten_ones() {
    let dir = tempfile::tempdir().unwrap();
    let img = new_image(dir.path(), "1G");
    let p = img.to_str().unwrap();
    write(&img, 0x11, 0, 64 << 20);
    write(&img, 0x12, 900 << 20, 8 << 20);
    qemu("qemu-img", &["snapshot", "-c", "base", p]);
    // About 1 % of the written data changes, plus a new area and a discard.
    write(&img, 0x21, 5 << 20, 512 << 10);
    write(&img, 0x22, 700 << 20, 128 << 10);
    qemu("qemu-io", &["-f", "qcow2", "-c", "discard 900M 1M", p]);
    qemu("qemu-img", &["snapshot", "-c", "next", p]);
    write(&img, 0x33, 0, 1 << 20); // after "next": not part of the diff

    let (base, next) = (reader(&img, "base"), reader(&img, "next"));
    let base_l1 = base.image().snapshot_l1("base").unwrap();
    let cs = 65536u64;
    let changed = next.changed_grains(Some(&base_l1), cs).unwrap();
    let mut want: Vec<u64> = (5 * 16..5 * 16 + 8).collect(); // 512 KiB at 5 MiB
    want.extend(700 * 16..700 * 16 + 2); // 128 KiB at 700 MiB
    want.extend(900 * 16..900 * 16 + 16); // the discarded MiB
    assert_eq!(changed, want);
    let next_l1 = next.image().snapshot_l1("next").unwrap();
    assert!(next.changed_grains(Some(&next_l1), cs).unwrap().is_empty());
    // Grains of several clusters: each changed cluster's grain, once.
    let mib_grains = next.changed_grains(Some(&base_l1), 1 << 20).unwrap();
    assert_eq!(mib_grains, [5, 700, 900]);
    // The same grains gathered by MiB: each MiB with the mask of its grains.
    let masks = next.changed_masks(Some(&base_l1), 1 << 20, cs).unwrap();
    assert_eq!(masks, [(5, 0xff), (700, 0b11), (900, 0xffff)]);
    assert!(
        next.changed_masks(None, 8 << 20, cs).is_err(),
        "128 grains a piece"
    );
    // Without a base: every grain with data.
    let written = base.changed_grains(None, 1 << 20).unwrap();
    assert_eq!(written, (0..64).chain(900..908).collect::<Vec<u64>>());
    assert!(
        next.changed_grains(None, 1000).is_err(),
        "grain not a whole number of clusters"
    );
    // Reading only the changed clusters of "next" over "base" gives "next".
    let mut rebuilt = read_all(&base);
    for c in &changed {
        let at = (c * cs) as usize;
        next.read(c * cs, &mut rebuilt[at..at + cs as usize])
            .unwrap();
    }
    assert!(rebuilt == read_all(&next), "base + changed clusters = next");
    // Unaligned reads cross cluster and L2 boundaries.
    let mut piece = vec![0u8; 200_000];
    next.read((5 << 20) - 100_000, &mut piece).unwrap();
    assert!(piece[..100_000].iter().all(|b| *b == 0x11));
    assert!(piece[100_000..].iter().all(|b| *b == 0x21));
}
