//! A snapshot's transaction: the one sequence on which garbage
//! collection's safety rests (see `gc.rs`), written once for every caller
//! (volume snapshots, templates, imports, the tests).
//!
//! 1. Every chunk the snapshot will name is held ([`Refs::hold`]): a
//!    backup holds each as it decides to use it, a copy holds them all
//!    before it looks at its source. So are the snapshot's own objects
//!    ([`Refs::hold_snapshot`]): a sweep that read the live set before the
//!    record must not delete the manifest written after it.
//! 2. The caller's recorder writes the references where garbage
//!    collection looks (the catalog); it may refuse, and then nothing was
//!    written to the store.
//! 3. The index, then the manifest, go to the store: from here on the
//!    snapshot is complete.
//! 4. The hold is released: the recorded references now keep the chunks.
//!
//! A failure at step 3 removes what step 3 wrote; the caller undoes its
//! own record (it knows what it wrote).
//!
//! Durability, the commit order: every chunk, then the index, then the
//! manifest is durable when its `put` returns (the store's contract); the
//! caller marks the snapshot `BackedUp` in the catalog (a durable commit:
//! SQLite `synchronous=FULL`, or PostgreSQL) only after this returns. A
//! power cut at any point leaves either a snapshot not yet `BackedUp`
//! (settled as failed at the next start, its objects collected) or one
//! whose every object is on disk.

use crate::backup::{backup, commit, remove, Base};
use crate::{Refs, Region};
use chrono::{DateTime, Utc};
use reprise_chunks::manifest::Owner;
use reprise_chunks::{ChunkName, Index, Manifest};
use reprise_core::Result;
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use uuid::Uuid;

/// The internal qcow2 snapshot a new snapshot is read from.
pub struct Cut {
    pub image: PathBuf,
    pub tag: String,
    /// The previous snapshot of the same volume, still tagged in the image:
    /// only what changed since it is read.
    pub base: Option<Base>,
}

/// What the manifest says of where a snapshot comes from.
pub struct Origin {
    pub snapshot_id: Uuid,
    pub name: String,
    pub volume_id: Uuid,
    pub volume_name: String,
    pub zone: String,
    pub consistency: String,
    pub created_at: DateTime<Utc>,
    /// Whose it is, sealed into the manifest (see [`Owner`]).
    pub owner: Option<Owner>,
}

/// The references a snapshot is about to rely on, for the recorder.
pub struct References<'a> {
    pub snapshot: Uuid,
    pub volume_size: u64,
    /// Every distinct chunk of the snapshot.
    pub chunks: &'a BTreeSet<ChunkName>,
    /// The stored size of the chunks whose size this transaction learned.
    pub sizes: &'a HashMap<ChunkName, u64>,
}

/// A snapshot complete in the store.
pub struct Committed {
    pub manifest: Manifest,
    pub index: Index,
    /// Guest bytes read from the image (0 for a copy).
    pub read_bytes: u64,
    /// Chunks this snapshot uploaded.
    pub new_chunks: u64,
}

/// Records a snapshot's references where garbage collection looks, or
/// refuses; returns the stored bytes of all its chunks as it counts them.
pub trait Recorder: FnOnce(&References) -> Result<u64> {}
impl<F: FnOnce(&References) -> Result<u64>> Recorder for F {}

/// Back up `cut` into the store as snapshot `origin.snapshot_id`.
/// `progress(done, total)` is called in bytes read.
pub async fn take(
    region: &Region,
    refs: &Arc<Refs>,
    cut: Cut,
    origin: Origin,
    record: impl Recorder,
    progress: impl Fn(u64, u64),
) -> Result<Committed> {
    let base_id = cut.base.as_ref().map(|b| b.snapshot_id);
    let done = backup(region, refs, cut.image, &cut.tag, cut.base, progress).await?;
    let manifest = Manifest {
        snapshot_id: origin.snapshot_id,
        name: origin.name,
        volume_id: origin.volume_id,
        volume_name: origin.volume_name,
        zone: origin.zone,
        volume_size: done.index.volume_size,
        chunk_size: done.index.chunk_size,
        base_snapshot_id: base_id.filter(|_| done.incremental),
        consistency: origin.consistency,
        created_at: origin.created_at,
        index_blake3: String::new(),
        chunk_count: 0,
        written_bytes: done.index.entries.len() as u64 * done.index.chunk_size as u64,
        stored_bytes: 0,
        new_bytes: done.new_bytes,
        owner: origin.owner,
    };
    let committed = Committed {
        manifest,
        index: done.index,
        read_bytes: done.read_bytes,
        new_chunks: done.new_chunks,
    };
    finish(region, refs, committed, &done.chunk_sizes, record).await
    // `done.hold` is released here, after the references are recorded.
}

/// Store a new snapshot `to` (named `name`, owned by `owner`) with the
/// data of the complete snapshot `from`: no chunk is copied, only its
/// index and manifest.
pub async fn copy(
    region: &Region,
    refs: &Arc<Refs>,
    from: Uuid,
    to: Uuid,
    name: &str,
    owner: Option<Owner>,
    record: impl Recorder,
) -> Result<Committed> {
    let mut manifest = region.manifest(from).await?;
    let index = region.index(&manifest).await?;
    let _hold = refs.hold(index.distinct()).await?;
    manifest.snapshot_id = to;
    manifest.name = name.to_string();
    manifest.new_bytes = 0;
    manifest.owner = owner;
    manifest.created_at = Utc::now();
    let committed = Committed {
        manifest,
        index,
        read_bytes: 0,
        new_chunks: 0,
    };
    finish(region, refs, committed, &HashMap::new(), record).await
}

/// Steps 2 and 3 of the transaction; the caller holds the chunks.
async fn finish(
    region: &Region,
    refs: &Arc<Refs>,
    mut snapshot: Committed,
    sizes: &HashMap<ChunkName, u64>,
    record: impl Recorder,
) -> Result<Committed> {
    let objects = refs.hold_snapshot(snapshot.manifest.snapshot_id).await?;
    // Every hold of this snapshot shares the generation of this one (the
    // region's lock stayed shared while any was held).
    refs.check_unbroken(&objects).await?;
    let chunks = snapshot.index.distinct();
    snapshot.manifest.chunk_count = chunks.len() as u64;
    snapshot.manifest.stored_bytes = record(&References {
        snapshot: snapshot.manifest.snapshot_id,
        volume_size: snapshot.index.volume_size,
        chunks: &chunks,
        sizes,
    })?;
    if let Err(e) = commit(region, &snapshot.index, &mut snapshot.manifest).await {
        let _ = remove(region, snapshot.manifest.snapshot_id).await;
        return Err(e);
    }
    Ok(snapshot)
}
