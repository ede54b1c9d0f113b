//! The objects a volume snapshot is made of in the region's object store,
//! as bytes. Nothing here does I/O; the store and the pipeline that move
//! these objects live elsewhere.
//!
//! - A **chunk** ([`chunk`]) is one fixed-size piece of a volume's guest
//!   address space, zstd-compressed when that helps, named by a keyed
//!   BLAKE3 hash of its plain bytes ([`ChunkName`]): identical data anywhere
//!   in the region has one name and is stored once, and the key (which stays
//!   with the region's daemons) keeps names from revealing content. All-zero
//!   chunks are never stored. A **patch** is a chunk object holding only
//!   the 64 KiB grains that differ from a whole base chunk (what an
//!   increment of scattered writes stores).
//! - An **index** ([`index`]) lists, for one snapshot, the name of the chunk
//!   at every position of the volume (or "zero"), and which are patches.
//! - A **manifest** ([`manifest`]) describes a snapshot and pins its index;
//!   written last, its presence means the snapshot is complete. The
//!   region's own object ([`manifest::RegionInfo`]) fixes the chunk size,
//!   whether chunks are encrypted, and a check of the region's key.
//! - Every object carries a magic, a version, its lengths and a checksum,
//!   and every decoder caps sizes before it allocates: a corrupt or hostile
//!   object is an error that says what is wrong, never garbage and never an
//!   allocation the object asked for.

pub mod catalog_backup;
pub mod chunk;
pub mod envelope;
pub mod index;
pub mod manifest;

pub use chunk::{ChunkKey, ChunkName, RegionKeys};
pub use index::Index;
pub use manifest::{Manifest, RegionInfo};

use reprise_core::{Error, ErrorKind};

/// An object that is not what it claims: wrong magic, checksum, lengths.
pub fn corrupt(what: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Corrupt, "object_corrupt", what.to_string())
}

pub(crate) fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

pub(crate) fn be_u64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
