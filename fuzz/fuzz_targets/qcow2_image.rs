//! A qcow2 image as a tenant may upload it: the header, the snapshot
//! table, the L1 and L2 tables and the clusters of every snapshot are
//! parsed and read. Any input must end in a value or a named error —
//! never a panic, an overflow, or an allocation sized by the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reprise_qcow2::{Image, SnapshotReader};

fuzz_target!(|data: &[u8]| {
    let Ok(img) = Image::open(data.to_vec()) else {
        return;
    };
    let _ = img.active_l1();
    let tags: Vec<String> = img.snapshots.iter().map(|s| s.name.clone()).collect();
    for tag in tags.iter().take(4) {
        let _ = img.exclusive_bytes(tag);
    }
    let Some(tag) = tags.first() else {
        return;
    };
    let Ok(reader) = SnapshotReader::open(img, tag) else {
        return;
    };
    let size = reader.volume_size();
    let cluster = 1u64 << reader.image().header.cluster_bits;
    if let Ok(grains) = reader.changed_grains(None, cluster) {
        let mut buf = vec![0u8; cluster as usize];
        for g in grains.iter().take(16) {
            let offset = g * cluster;
            if offset + cluster <= size {
                let _ = reader.read(offset, &mut buf);
            }
        }
    }
});
