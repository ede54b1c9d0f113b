//! The reader against images QEMU itself wrote: snapshot data read by the
//! reader equals what `qemu-img convert` extracts from the same snapshot,
//! and the space a snapshot alone holds follows the writes made after it.

use reprise_qcow2::{Image, Mapping};
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

/// The guest bytes of an L1 table, read through the reader.
fn read_all(img: &Image<std::fs::File>, l1: &[u64]) -> Vec<u8> {
    let cs = img.header.cluster_size() as usize;
    let per_l2 = img.header.l2_entries() as usize;
    let mut out = vec![0u8; img.header.size as usize];
    for (i, &e) in l1.iter().enumerate() {
        let Some(l2) = img.read_l2(e).unwrap() else {
            continue;
        };
        for (j, &entry) in l2.iter().enumerate() {
            let start = (i * per_l2 + j) * cs;
            if start >= out.len() {
                break;
            }
            let m = img.decode(entry).unwrap();
            if let Mapping::Data(_) = m {
                img.read_cluster(m, &mut out[start..start + cs]).unwrap();
            }
        }
    }
    out
}

#[test]
fn snapshot_data_equals_qemu_img_convert() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.qcow2");
    let p = img.to_str().unwrap();
    qemu(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "cluster_size=65536",
            p,
            "16M",
        ],
    );
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
        let ours = read_all(&image, &image.snapshot_l1(name).unwrap());
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
    let img = dir.path().join("disk.qcow2");
    let p = img.to_str().unwrap();
    qemu(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "cluster_size=65536",
            p,
            "64M",
        ],
    );
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
