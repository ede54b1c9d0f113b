//! Garbage collection: delete the chunks no snapshot (or template) needs,
//! and the objects of snapshots that no longer exist.
//!
//! The protocol, in one daemon (and across a region's daemons below):
//!
//! 1. A backup *holds* a chunk ([`Refs::hold`]) before it relies on the
//!    chunk being in the store: before the HEAD that finds it present, and
//!    for its base's chunks before it skips them. The hold lasts until the
//!    snapshot's references are recorded in the catalog (or it failed).
//!    A snapshot's transaction also holds the snapshot's id while it
//!    records it and writes its index and manifest.
//! 2. A sweep takes the sweep lock exclusively, so no hold is taken while
//!    it runs; then — inside the lock — it reads the held chunks and
//!    snapshot ids *as of that moment*, then the live set (every chunk a
//!    recorded snapshot or template references, every snapshot id that
//!    exists); then it lists the store and deletes what is in neither. A
//!    hold released during the sweep still counts: its references were
//!    recorded just before, maybe after the live set was read.
//!
//! So a chunk deleted by a sweep was not held when the sweep began and
//! could not be held during it: any backup that wants it afterwards finds
//! it absent and uploads it again. A chunk a backup holds is never deleted.
//! A crash loses only holds, whose backups it also ends.
//!
//! Across the daemons of a region (one catalog, one store), the region's
//! sweep lock (a PostgreSQL advisory lock) stands for step 2's lock: a
//! daemon shares it for as long as it holds anything, and a sweep takes it
//! alone, after this daemon's own sweep lock. So a sweep starts only when
//! every other daemon's holds are released — their references recorded
//! in the shared catalog, which the live set then reads — and no other
//! daemon takes a hold until it ends. The lock lives as long as its
//! connection: a sweep checks it still holds it at least every 500 ms
//! before a delete, and a snapshot checks, before its references are
//! recorded, that its holds were never broken (else it fails and is taken
//! again).

use crate::{Refs, Region};
use reprise_chunks::ChunkName;
use reprise_core::Result;
use std::collections::HashSet;
use std::sync::Arc;
use uuid::Uuid;

/// What the catalog says is in use.
#[derive(Debug, Default)]
pub struct Live {
    pub chunks: HashSet<ChunkName>,
    pub snapshots: HashSet<Uuid>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    pub chunks_examined: u64,
    pub chunks_deleted: u64,
    pub bytes_freed: u64,
    pub snapshot_objects_deleted: u64,
    /// Unreferenced chunks left because they were written within the
    /// grace period ([`Region::sweep_grace`]).
    pub chunks_in_grace: u64,
    /// The chunks it deleted (the caller forgets their sizes).
    pub deleted: Vec<ChunkName>,
}

/// Sweep the store. `live` is called once the sweep holds the lock.
pub async fn gc(
    region: &Region,
    refs: &Arc<Refs>,
    live: impl FnOnce() -> Result<Live>,
) -> Result<GcReport> {
    let _sweeping = refs.sweep.write().await;
    // Other daemons' backups: none holds anything from here on.
    let alone = refs.region_alone().await?;
    let mut checked = std::time::Instant::now();
    // The holds as of now, read before the live set, and not as the sweep
    // goes: a hold released later was released after its references were
    // recorded, which the live set read below may already miss. No hold
    // can be taken while the sweep runs.
    let (held_chunks, held_snapshots) = refs.held_now();
    let live = live()?;
    let mut report = GcReport::default();
    let grace_since = std::time::SystemTime::now()
        .checked_sub(region.sweep_grace)
        .unwrap_or(std::time::UNIX_EPOCH);
    for (key, size, modified) in region.store.list_modified("chunks").await? {
        report.chunks_examined += 1;
        let Some(name) = key
            .rsplit('/')
            .next()
            .and_then(|n| ChunkName::from_hex(n).ok())
        else {
            tracing::warn!(
                key,
                "an object under chunks/ that is not a chunk: left alone"
            );
            continue;
        };
        if live.chunks.contains(&name) || held_chunks.contains(&name) {
            continue;
        }
        // The second line of defence: a chunk written lately is left to a
        // later sweep, should a backup rely on it that the holds missed.
        if modified > grace_since {
            report.chunks_in_grace += 1;
            continue;
        }
        // A lost lock lets other daemons hold chunks again: stop deleting.
        if let Some(alone) = &alone {
            if checked.elapsed() > std::time::Duration::from_millis(500) {
                alone.check().await?;
                checked = std::time::Instant::now();
            }
        }
        region.store.delete(&key).await?;
        report.chunks_deleted += 1;
        report.bytes_freed += size;
        report.deleted.push(name);
        if !region.sweep_pause.is_zero() {
            tokio::time::sleep(region.sweep_pause).await;
        }
    }
    for (key, _) in region.store.list("snapshots").await? {
        let id = key.split('/').nth(1).and_then(|s| Uuid::parse_str(s).ok());
        if id.is_some_and(|id| !live.snapshots.contains(&id) && !held_snapshots.contains(&id)) {
            region.store.delete(&key).await?;
            report.snapshot_objects_deleted += 1;
        }
    }
    Ok(report)
}
