//! A qcow2 reader for reprise: the header, the internal snapshot table, the
//! L1/L2 tables and the refcounts, enough to read any internal snapshot of
//! a volume while QEMU keeps running the live disk, and to account for the
//! space each snapshot holds. And a [`writer`] of new images, for restores.
//!
//! Layout of the crate: [`header`], [`snapshot`] and [`table`] parse bytes
//! and never do I/O (they are what a fuzzer feeds); [`Image`] does the reads,
//! through the [`Source`] trait, at the edges.
//!
//! What is read (qcow2 versions 2 and 3, as QEMU 7.2 writes them):
//! standard, zero and unallocated clusters; internal snapshots; refcounts of
//! 1 to 64 bits. What is refused with a clear error, never guessed:
//! encryption, backing files, external data files, extended L2 entries,
//! unknown incompatible features, images marked corrupt, compressed
//! clusters when their data is read, and any table or offset that points
//! outside what the header allows (sizes are capped before anything is
//! allocated).
//!
//! Reading a file that a running QEMU holds is safe for internal snapshots:
//! QEMU never writes in place to a cluster whose refcount is above one, so
//! the clusters a snapshot maps do not change under the reader. The live
//! disk's own tables may be stale in the file (QEMU caches metadata); the
//! reader is only used on snapshots for data.

pub mod direct;
pub mod header;
pub mod snapshot;
pub mod table;
pub mod writer;

mod image;
mod reader;

pub use header::Header;
pub use image::{Image, Source};
pub use reader::SnapshotReader;
pub use snapshot::SnapshotEntry;
pub use table::Mapping;

use reprise_core::{Error, ErrorKind};

/// The image uses something this reader does not support.
pub fn unsupported(what: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Invalid,
        "qcow2_unsupported",
        format!("qcow2: {what} is not supported"),
    )
}

/// The image's metadata is inconsistent.
pub fn corrupt(what: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Corrupt,
        "qcow2_corrupt",
        format!("qcow2: {what}"),
    )
}

/// Big-endian readers over a slice that has been length-checked.
pub(crate) fn be_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}
pub(crate) fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
pub(crate) fn be_u64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
