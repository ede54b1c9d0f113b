//! The volume-snapshot engine: everything between a qcow2 internal snapshot
//! and the region's object store, with no knowledge of the catalog, the
//! API or QEMU processes.
//!
//! - [`snapshot`] is a snapshot's transaction, the one way a snapshot
//!   enters the store: [`backup`], then the caller records the references,
//!   then the index and manifest are written.
//! - [`backup`] reads the clusters of a qcow2 snapshot that differ from a
//!   base snapshot (or all written clusters), cuts them into fixed-size
//!   chunks, hashes, compresses (and encrypts) them and uploads the chunks
//!   the store lacks, in parallel with bounded memory.
//! - [`restore`] reads a snapshot back, and [`restore::verify`] checks every
//!   chunk of it.
//! - [`gc`] removes the chunks and snapshot objects nothing references.
//!
//! Object keys in the store:
//!
//! ```text
//! region                      the region's settings (RegionInfo)
//! chunks/<2 hex>/<64 hex>     one chunk, named by its keyed hash
//! snapshots/<uuid>/index      a snapshot's index
//! snapshots/<uuid>/manifest   a snapshot's manifest: written last
//! catalog                     the catalog the store belongs to (Binding)
//! ```
//!
//! Invariant: a manifest is written only after its index and every chunk
//! the index names are durable in the store, and [`Refs`] keeps garbage
//! collection from deleting a chunk that a backup in progress has decided
//! to reference (see `gc.rs` for the protocol).

pub mod backup;
pub mod binding;
pub mod gc;
pub mod restore;
pub mod snapshot;

use reprise_chunks::{ChunkName, Manifest, RegionInfo, RegionKeys};
use reprise_core::{Error, ErrorKind, Result};
use reprise_store::Store;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use uuid::Uuid;

pub use backup::{backup, BackupResult, Base};
pub use gc::{forget_orphans, gc, GcReport, Live};
pub use restore::{restore_qcow2, restore_raw, verify, VerifyReport};

/// The chunk size of new regions: 1 MiB (measured against 2 and 4 MiB in
/// `docs/BENCHMARKS.md`: the same throughput, finer increments).
pub const DEFAULT_CHUNK_SIZE: u32 = 1 << 20;

/// A region's store with its keys and settings.
#[derive(Clone, Debug)]
pub struct Region {
    pub store: Store,
    /// The region's id ([`RegionInfo::id`]).
    pub id: Uuid,
    pub keys: RegionKeys,
    pub chunk_size: u32,
    /// Whether unsealed (version 1) manifests are read: only in a region
    /// made before manifests were sealed.
    pub unsealed_manifests: bool,
    /// zstd level for chunks: 1, which on this project's benchmark data
    /// took a fifth less CPU than 3 for the same stored size.
    pub level: i32,
    /// Chunks in flight at once (each holds at most two chunk-sized buffers).
    pub parallel: usize,
    /// A pause after reading each chunk: a seam for tests, so a backup
    /// lasts long enough to be interrupted (zero in the product; the
    /// daemon sets it only from its `Seams`, never from a config file).
    pub chunk_pause: std::time::Duration,
    /// A sweep leaves unreferenced chunks written less than this long ago
    /// (by the store's clock): a second line of defence behind the holds,
    /// set from the daemon's `[gc] grace_minutes`.
    pub sweep_grace: std::time::Duration,
    /// A pause after each chunk a sweep deletes: the same kind of seam,
    /// so a sweep can be interrupted.
    pub sweep_pause: std::time::Duration,
}

pub fn chunk_key(name: &ChunkName) -> String {
    let hex = name.to_hex();
    format!("chunks/{}/{hex}", &hex[..2])
}

pub fn index_key(snapshot: Uuid) -> String {
    format!("snapshots/{snapshot}/index")
}

pub fn manifest_key(snapshot: Uuid) -> String {
    format!("snapshots/{snapshot}/manifest")
}

const REGION_KEY: &str = "region";

impl Region {
    /// Open a region's store: the first daemon writes its settings; every
    /// later one must bring the same secret and encryption setting.
    pub async fn open(store: Store, secret: &[u8; 32], encrypt: bool) -> Result<Region> {
        Self::open_pinned(store, secret, encrypt, false).await
    }

    /// [`Region::open`], where `unsealed_allowed` says, from outside the
    /// store (the daemon's config), whether this region predates sealed
    /// manifests. The region object's own word is not enough: it is not
    /// sealed, and whoever can write the store could otherwise turn a
    /// sealed region into one whose unsealed manifests are read — a
    /// manifest of theirs pinning one snapshot to another's index.
    pub async fn open_pinned(
        store: Store,
        secret: &[u8; 32],
        encrypt: bool,
        unsealed_allowed: bool,
    ) -> Result<Region> {
        let keys = RegionKeys::derive(secret, encrypt);
        let info = match store.get(REGION_KEY, 64 << 10).await {
            Ok(bytes) => RegionInfo::decode(&bytes)?,
            Err(e) if e.kind == ErrorKind::NotFound => {
                let info = RegionInfo {
                    chunk_size: DEFAULT_CHUNK_SIZE,
                    encrypted: encrypt,
                    key_check: keys.check_value(),
                    created_at: chrono::Utc::now(),
                    manifests_sealed: true,
                    orphans_kept: true,
                };
                store.put_if_absent(REGION_KEY, info.encode()).await?;
                // Another daemon may have won the race: read what is there.
                RegionInfo::decode(&store.get(REGION_KEY, 64 << 10).await?)?
            }
            Err(e) => return Err(e),
        };
        if info.key_check != keys.check_value() {
            return Err(Error::new(
                ErrorKind::Invalid,
                "region_key_wrong",
                format!(
                    "the region store {} was created with another key: give this daemon the region's key file",
                    store.label()
                ),
            ));
        }
        if info.encrypted != encrypt {
            return Err(Error::invalid(
                "config_invalid",
                format!(
                    "the region store {} is {}encrypted but the config says encrypt = {encrypt}",
                    store.label(),
                    if info.encrypted { "" } else { "not " }
                ),
            ));
        }
        if !info.manifests_sealed && !unsealed_allowed {
            return Err(Error::new(
                ErrorKind::Corrupt,
                "region_tampered",
                format!(
                    "the region object of {} says its manifests are not sealed, which only a region made before 2026-12 may say: someone who can write the store may have changed it. If this region is that old, set [region] legacy_unsealed_manifests = true",
                    store.label()
                ),
            ));
        }
        if !info.orphans_kept {
            // From now on older daemons, which would sweep what this
            // catalog does not know, refuse the region. Every daemon
            // writes the same bytes: the object is the same but this flag.
            let kept = RegionInfo {
                orphans_kept: true,
                ..info.clone()
            };
            store.put(REGION_KEY, kept.encode()).await?;
            tracing::info!(
                store = store.label(),
                "region object marked: snapshots the catalog does not know are kept"
            );
        }
        Ok(Region {
            store,
            id: info.id(),
            keys,
            unsealed_manifests: !info.manifests_sealed,
            chunk_size: info.chunk_size,
            level: 1,
            parallel: 8,
            chunk_pause: std::time::Duration::ZERO,
            sweep_pause: std::time::Duration::ZERO,
            sweep_grace: std::time::Duration::ZERO,
        })
    }

    pub async fn manifest(&self, snapshot: Uuid) -> Result<Manifest> {
        let bytes = self
            .store
            .get(&manifest_key(snapshot), 64 << 10)
            .await
            .map_err(|e| e.context(format!("snapshot {snapshot}")))?;
        let manifest = Manifest::decode(&bytes, &self.keys, self.unsealed_manifests)?;
        // A manifest copied over another snapshot's restores the wrong data.
        if manifest.snapshot_id != snapshot {
            return Err(reprise_chunks::corrupt(format!(
                "the manifest stored for snapshot {snapshot} is that of snapshot {}",
                manifest.snapshot_id
            )));
        }
        Ok(manifest)
    }

    /// A snapshot's index, checked against the hash its manifest pins. Its
    /// size is capped by what the manifest's volume can need.
    pub async fn index(&self, manifest: &Manifest) -> Result<reprise_chunks::Index> {
        // A region has one chunk size: an index cut otherwise is not its own.
        if manifest.chunk_size != self.chunk_size {
            return Err(reprise_chunks::corrupt(format!(
                "snapshot {} claims {}-byte chunks in a region of {}-byte chunks",
                manifest.snapshot_id, manifest.chunk_size, self.chunk_size
            )));
        }
        let positions = manifest
            .volume_size
            .div_ceil(manifest.chunk_size.max(1) as u64);
        let cap = reprise_chunks::Index::max_object_len(positions);
        let bytes = self
            .store
            .get(&index_key(manifest.snapshot_id), cap)
            .await?;
        if blake3::hash(&bytes).to_hex().as_str() != manifest.index_blake3 {
            return Err(reprise_chunks::corrupt(format!(
                "the index of snapshot {} does not match its manifest",
                manifest.snapshot_id
            )));
        }
        reprise_chunks::Index::decode(&bytes)
    }
}

/// The chunks that backups in progress have decided to reference, the
/// snapshots whose objects are being written, and the lock that makes a
/// garbage-collection sweep exclusive with taking either (the protocol is
/// in `gc.rs`); in a region, also the region's sweep lock, which this
/// daemon shares while it holds anything.
#[derive(Default)]
pub struct Refs {
    sweep: tokio::sync::RwLock<()>,
    held: Mutex<Held>,
    region: Option<Arc<dyn RegionSweepLock>>,
    /// Taken while the region's lock is being shared: one request at a time.
    sharing: tokio::sync::Mutex<()>,
}

/// The region's sweep lock, for daemons that share a region's store: its
/// calls block (they are run off the async runtime). A generation names
/// one unbroken holding of the lock.
pub trait RegionSweepLock: Send + Sync + 'static {
    /// Share it, waiting while a sweep holds it.
    fn share(&self) -> Result<u64>;
    /// Stop sharing it.
    fn unshare(&self);
    /// Take it alone, waiting until no other daemon shares it.
    fn exclusive(&self) -> Result<u64>;
    fn unexclusive(&self);
    /// Whether it was held without a break since `generation` was given.
    fn still_held(&self, generation: u64) -> bool;
}

#[derive(Default)]
struct Held {
    chunks: HashMap<ChunkName, usize>,
    snapshots: HashMap<Uuid, usize>,
    /// Live [`Hold`]s: the region's lock is shared while there are any.
    holds: usize,
    /// The generation of the region's lock they share.
    generation: u64,
}

/// References held by one snapshot's transaction until they are recorded
/// where garbage collection looks; dropping it releases them.
pub struct Hold {
    refs: Arc<Refs>,
    chunks: Vec<ChunkName>,
    snapshots: Vec<Uuid>,
    /// The generation of the region's lock it was taken under.
    generation: u64,
}

fn count_in<K: std::hash::Hash + Eq + Copy>(map: &mut HashMap<K, usize>, keys: &[K]) {
    for k in keys {
        *map.entry(*k).or_default() += 1;
    }
}

fn count_out<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, keys: &[K]) {
    for k in keys {
        if let Some(c) = map.get_mut(k) {
            *c -= 1;
            if *c == 0 {
                map.remove(k);
            }
        }
    }
}

impl Refs {
    /// References kept for the sweeps of this daemon and, through
    /// `region`, of every daemon sharing the region's store.
    pub fn shared_with(region: Arc<dyn RegionSweepLock>) -> Refs {
        Refs {
            region: Some(region),
            ..Default::default()
        }
    }

    /// Reference `names` before relying on their presence in the store.
    pub async fn hold(
        self: &Arc<Refs>,
        names: impl IntoIterator<Item = ChunkName>,
    ) -> Result<Hold> {
        self.hold_both(names.into_iter().collect(), Vec::new())
            .await
    }

    /// Keep a snapshot's objects from being swept while they are written
    /// and until the snapshot is recorded.
    pub async fn hold_snapshot(self: &Arc<Refs>, id: Uuid) -> Result<Hold> {
        self.hold_both(Vec::new(), vec![id]).await
    }

    async fn hold_both(
        self: &Arc<Refs>,
        chunks: Vec<ChunkName>,
        snapshots: Vec<Uuid>,
    ) -> Result<Hold> {
        let _no_sweep = self.sweep.read().await;
        let generation = self.share_region().await?;
        let mut held = self.lock();
        count_in(&mut held.chunks, &chunks);
        count_in(&mut held.snapshots, &snapshots);
        Ok(Hold {
            refs: self.clone(),
            chunks,
            snapshots,
            generation,
        })
    }

    /// Count one more hold, sharing the region's lock first if it is the
    /// only one.
    async fn share_region(&self) -> Result<u64> {
        let Some(region) = &self.region else {
            self.lock().holds += 1;
            return Ok(0);
        };
        {
            let mut held = self.lock();
            if held.holds > 0 {
                held.holds += 1;
                return Ok(held.generation);
            }
        }
        let _one = self.sharing.lock().await;
        {
            let mut held = self.lock();
            if held.holds > 0 {
                held.holds += 1;
                return Ok(held.generation);
            }
        }
        let region = region.clone();
        let generation = joined(tokio::task::spawn_blocking(move || region.share()).await)?;
        let mut held = self.lock();
        held.holds += 1;
        held.generation = generation;
        Ok(generation)
    }

    /// Take the region's sweep lock alone (none on one host): every other
    /// daemon's holds are released and recorded, and none is taken until
    /// the guard drops.
    pub(crate) async fn region_alone(&self) -> Result<Option<RegionAlone>> {
        let Some(region) = self.region.clone() else {
            return Ok(None);
        };
        let lock = region.clone();
        let generation = joined(tokio::task::spawn_blocking(move || lock.exclusive()).await)?;
        Ok(Some(RegionAlone { region, generation }))
    }

    /// Fail unless the region's lock was held without a break since
    /// `hold` was taken: a break let other daemons sweep meanwhile.
    pub async fn check_unbroken(&self, hold: &Hold) -> Result<()> {
        let Some(region) = self.region.clone() else {
            return Ok(());
        };
        still_held(
            region,
            hold.generation,
            "the connection that kept the region's other daemons from sweeping this \
             snapshot's chunks was lost while it was taken: take it again",
        )
        .await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Everything held now: what a sweep spares, as of its start.
    fn held_now(&self) -> (HashSet<ChunkName>, HashSet<Uuid>) {
        let held = self.lock();
        (
            held.chunks.keys().copied().collect(),
            held.snapshots.keys().copied().collect(),
        )
    }
}

/// The region's sweep lock, held alone until dropped.
pub(crate) struct RegionAlone {
    region: Arc<dyn RegionSweepLock>,
    generation: u64,
}

impl RegionAlone {
    /// Fail unless it is still held without a break.
    pub(crate) async fn check(&self) -> Result<()> {
        still_held(
            self.region.clone(),
            self.generation,
            "the connection that kept the region's other daemons' backups out of this sweep \
             was lost: the sweep stopped, the next one goes on",
        )
        .await
    }
}

/// Fail with `sweep_lock_lost` (saying `lost`) unless the region's lock
/// taken under `generation` is still held (a round trip, off the runtime).
async fn still_held(region: Arc<dyn RegionSweepLock>, generation: u64, lost: &str) -> Result<()> {
    let held =
        joined(tokio::task::spawn_blocking(move || Ok(region.still_held(generation))).await)?;
    if held {
        Ok(())
    } else {
        Err(Error::unavailable("sweep_lock_lost", lost))
    }
}

impl Drop for RegionAlone {
    fn drop(&mut self) {
        self.region.unexclusive();
    }
}

impl Hold {
    /// Move another hold's references into this one.
    pub fn absorb(&mut self, mut other: Hold) {
        self.chunks.append(&mut other.chunks);
        self.snapshots.append(&mut other.snapshots);
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut held = self.refs.lock();
        count_out(&mut held.chunks, &self.chunks);
        count_out(&mut held.snapshots, &self.snapshots);
        held.holds -= 1;
        if held.holds == 0 {
            // Sent while counted out under the lock: a later share is
            // asked after it, in order.
            if let Some(region) = &self.refs.region {
                region.unshare();
            }
        }
    }
}

/// Map a failed blocking task to an error.
pub(crate) fn joined<T>(r: std::result::Result<Result<T>, tokio::task::JoinError>) -> Result<T> {
    r.map_err(|e| Error::internal(format!("worker: {e}")).with_source(e))?
}
