//! An object in the region's store, which anyone who can write the store
//! (another tenant of a shared bucket) controls. The first byte chooses:
//! the rest as it is, decoded as every kind of object; or the rest as the
//! body of a well-formed envelope of one kind (its checksum right, sealed
//! with the region's key where that kind is), so the parsers behind the
//! checksum are reached too. Any input must end in a value or a named
//! error — never a panic, nor an allocation sized by the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reprise_chunks::chunk::RegionKeys;
use reprise_chunks::manifest::{Binding, BINDING_MAGIC, REGION_MAGIC};
use reprise_chunks::{catalog_backup, chunk, envelope, index, manifest, Index, Manifest, RegionInfo};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let keys = RegionKeys::derive(&[7u8; 32], mode & 0x80 != 0);
    let seal = Some(keys.seal_key());
    let object = match mode & 0x7f {
        0 => body.to_vec(),
        1 => envelope::seal(index::MAGIC, index::VERSION, body),
        2 => envelope::seal(index::MAGIC, index::VERSION_PATCHES, body),
        3 => envelope::seal_with(manifest::MAGIC, manifest::VERSION, body, seal),
        4 => envelope::seal(manifest::MAGIC, 1, body),
        5 => envelope::seal(REGION_MAGIC, 1, body),
        6 => envelope::seal_with(BINDING_MAGIC, 1, body, seal),
        _ => envelope::seal_with(catalog_backup::MAGIC, 1, body, seal),
    };
    let _ = chunk::decode(&object, &keys);
    let _ = Index::decode(&object);
    let _ = Manifest::decode(&object, &keys, true);
    let _ = Manifest::decode(&object, &keys, false);
    let _ = RegionInfo::decode(&object);
    let _ = Binding::decode(&object, &keys);
    let _ = catalog_backup::decode(&object, &keys);
});
