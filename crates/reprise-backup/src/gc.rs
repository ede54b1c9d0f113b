//! Garbage collection: delete the chunks no snapshot (or template) needs,
//! and the objects of snapshots that never got their manifest.
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
//!
//! What the store holds that the catalog does not know is never
//! collected. A snapshot or template whose manifest is in the store but
//! whose id the live set lacks is an *orphan* (the catalog was restored
//! from an older copy, lost, or is another deployment's): its objects stay,
//! and every chunk its index names counts as live, until `reprise region
//! recover` gives it back a row or an admin forgets it explicitly
//! ([`forget_orphans`]). Only objects of a snapshot that never got its
//! manifest (a backup that failed or was cut short) are removed, and only
//! once older than the grace period. An orphan whose manifest or index
//! cannot be read stops the sweep from deleting any chunk: what it needs
//! cannot be told.

use crate::{Refs, Region};
use chrono::{DateTime, Utc};
use reprise_chunks::{ChunkName, Manifest};
use reprise_core::Result;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;
use uuid::Uuid;

/// What the catalog says is in use.
#[derive(Debug, Default)]
pub struct Live {
    pub chunks: HashSet<ChunkName>,
    pub snapshots: HashSet<Uuid>,
}

#[derive(Debug, Default, Clone)]
pub struct GcReport {
    pub chunks_examined: u64,
    pub chunks_deleted: u64,
    pub bytes_freed: u64,
    /// Objects of snapshots that never got their manifest, removed.
    pub snapshot_objects_deleted: u64,
    /// Unreferenced chunks left because they were written within the
    /// grace period ([`Region::sweep_grace`]).
    pub chunks_in_grace: u64,
    /// The chunks it deleted (the caller forgets their sizes).
    pub deleted: Vec<ChunkName>,
    /// Complete snapshots and templates the catalog does not know: kept,
    /// with every chunk they reference.
    pub orphans: Vec<Manifest>,
    /// Orphans whose manifest or index could not be read (id, why): while
    /// there is one, no chunk is deleted.
    pub unreadable: Vec<(Uuid, String)>,
}

/// The objects under `snapshots/<id>/` of one id.
#[derive(Debug, Default)]
struct Stored {
    keys: Vec<String>,
    manifest: bool,
    newest: Option<SystemTime>,
}

/// Every id with objects under `snapshots/`.
async fn stored_snapshots(region: &Region) -> Result<BTreeMap<Uuid, Stored>> {
    let mut out: BTreeMap<Uuid, Stored> = BTreeMap::new();
    for (key, _, modified) in region.store.list_modified("snapshots").await? {
        let mut parts = key.split('/');
        let (Some(_), Some(id), Some(file)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let Ok(id) = Uuid::parse_str(id) else {
            tracing::warn!(
                key,
                "an object under snapshots/ that is not a snapshot's: left alone"
            );
            continue;
        };
        let s = out.entry(id).or_default();
        s.manifest |= file == "manifest";
        s.newest = s.newest.max(Some(modified));
        s.keys.push(key);
    }
    Ok(out)
}

/// The manifest of an orphan and the chunks its index names.
async fn orphan(region: &Region, id: Uuid) -> Result<(Manifest, Vec<ChunkName>)> {
    let manifest = region.manifest(id).await?;
    let index = region.index(&manifest).await?;
    Ok((manifest, index.distinct().into_iter().collect()))
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
    let stored = stored_snapshots(region).await?;
    let unknown = |id: &Uuid| !live.snapshots.contains(id) && !held_snapshots.contains(id);
    let mut orphans_need: HashSet<ChunkName> = HashSet::new();
    for (id, objects) in stored.iter().filter(|(id, o)| unknown(id) && o.manifest) {
        match orphan(region, *id).await {
            Ok((manifest, chunks)) => {
                orphans_need.extend(chunks);
                report.orphans.push(manifest);
            }
            // The store could not be read: nothing is known; stop.
            Err(e) if e.kind.is_retryable() => return Err(e),
            Err(e) => {
                tracing::warn!(snapshot = %id, objects = objects.keys.len(), "an orphan that cannot be read: no chunk is deleted while it is there: {e}");
                report.unreadable.push((*id, e.message.clone()));
            }
        }
    }
    let chunks_listed = region.store.list_modified("chunks").await?;
    for (key, size, modified) in chunks_listed {
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
        if !report.unreadable.is_empty()
            || live.chunks.contains(&name)
            || held_chunks.contains(&name)
            || orphans_need.contains(&name)
        {
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
    // What a backup wrote before it failed, without its manifest: never a
    // snapshot, removed once it is older than the grace period.
    for (_, objects) in stored.iter().filter(|(id, o)| unknown(id) && !o.manifest) {
        if objects.newest.is_some_and(|t| t > grace_since) {
            continue;
        }
        for key in &objects.keys {
            region.store.delete(key).await?;
            report.snapshot_objects_deleted += 1;
        }
    }
    Ok(report)
}

/// Remove the orphans (complete snapshots and templates the catalog does
/// not know) made before `made_before`: an admin's explicit decision, never
/// a sweep's. One whose manifest cannot be read is dated by the store's
/// time of its manifest (else anyone who can write the store could stop
/// every chunk delete for ever). Their chunks go at the next sweep.
/// Returns their ids, with their manifests when readable.
pub async fn forget_orphans(
    region: &Region,
    refs: &Arc<Refs>,
    live: impl FnOnce() -> Result<Live>,
    made_before: DateTime<Utc>,
) -> Result<Vec<(Uuid, Option<Manifest>)>> {
    let _sweeping = refs.sweep.write().await;
    let _alone = refs.region_alone().await?;
    let (_, held_snapshots) = refs.held_now();
    let live = live()?;
    let mut forgotten = Vec::new();
    for (id, objects) in stored_snapshots(region).await? {
        if live.snapshots.contains(&id) || held_snapshots.contains(&id) || !objects.manifest {
            continue;
        }
        let (made, manifest) = match region.manifest(id).await {
            Ok(m) => (m.created_at, Some(m)),
            Err(e) if e.kind.is_retryable() => return Err(e),
            Err(_) => (
                objects
                    .newest
                    .map(DateTime::<Utc>::from)
                    .unwrap_or(made_before),
                None,
            ),
        };
        if made >= made_before {
            continue;
        }
        crate::backup::remove(region, id).await?;
        forgotten.push((id, manifest));
    }
    Ok(forgotten)
}
