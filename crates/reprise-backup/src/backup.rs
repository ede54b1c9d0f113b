//! One backup: a qcow2 internal snapshot into the region's store.
//!
//! Steps: find the 64 KiB grains that changed since the base
//! ([`SnapshotReader::changed_masks`]) and the chunk positions they fall
//! in; plan each position (a whole chunk, or a patch on its base chunk);
//! then for each, in parallel (at most [`Region::parallel`] at once, so
//! memory is bounded by that many pairs of chunk buffers whatever the
//! volume's size): read it, skip it if it is zeros, name it, take a
//! reference ([`Refs::hold`]), and if the store lacks it, compress, encrypt
//! and upload it. Positions not read keep their base chunk. Chunks are
//! uploaded unsynced and made durable together before `backup` returns
//! ([`reprise_store::Store::sync_written`]). The index and the manifest are
//! written by the snapshot's transaction ([`crate::snapshot`]) once the
//! references are recorded.
//!
//! The image's data is read with direct I/O ([`DirectFile`]), so the
//! positions' reads go to the disk together. Where direct I/O is refused,
//! reads go through the page cache and take turns: concurrent
//! reads of one cold file defeat the kernel's readahead (on this project's
//! test machine: eight 1 MiB reads at a time 480 MiB/s, one at a time
//! 1.5–2.5 GB/s).
//!
//! A position whose base holds data and where at most half of the grains
//! differ from the base's *whole* chunk is stored as a patch of those
//! grains only (see `reprise_chunks::chunk`): scattered small writes cost
//! what they changed, not a chunk each. The grains a patch replaces grow
//! with each increment (they are counted against the whole base chunk,
//! never against another patch); past half the chunk, the position is
//! read and stored whole again, which bounds both a patch's size and a
//! restore's cost (one more fetch) without chains.

use crate::{chunk_key, index_key, joined, manifest_key, Hold, Refs, Region};
use futures::StreamExt;
use reprise_chunks::chunk::{Patch, PATCH_GRAIN};
use reprise_chunks::index::PatchRef;
use reprise_chunks::{chunk, ChunkName, Index, Manifest};
use reprise_core::Result;
use reprise_qcow2::direct::DirectFile;
use reprise_qcow2::{Image, SnapshotReader};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

/// The snapshot the new one is taken incrementally from: its id, its
/// qcow2 tag (still in the image) and its index.
pub struct Base {
    pub snapshot_id: uuid::Uuid,
    pub tag: String,
    pub index: Index,
}

pub struct BackupResult {
    pub index: Index,
    /// Whether the base was used (false: every written cluster was read).
    pub incremental: bool,
    /// Guest bytes read from the image.
    pub read_bytes: u64,
    /// Stored size of every chunk this backup named (uploaded or found).
    pub chunk_sizes: HashMap<ChunkName, u64>,
    /// Stored bytes of the chunks this backup uploaded.
    pub new_bytes: u64,
    pub new_chunks: u64,
    /// References to every chunk of `index`: keep until the snapshot is
    /// recorded where garbage collection looks.
    pub hold: Hold,
}

/// Back up internal snapshot `tag` of the qcow2 image at `path`.
/// `progress(done, total)` is called in bytes read.
pub async fn backup(
    region: &Region,
    refs: &Arc<Refs>,
    path: PathBuf,
    tag: &str,
    base: Option<Base>,
    progress: impl Fn(u64, u64),
) -> Result<BackupResult> {
    let chunk_size = region.chunk_size;
    let tag_owned = tag.to_string();
    let base_tag = base.as_ref().map(|b| b.tag.clone());
    let (snap, base_l1) = joined(
        tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(&path).map_err(|e| {
                reprise_core::Error::unavailable(
                    "io_error",
                    format!("cannot open {}: {e}", path.display()),
                )
                .with_source(e)
            })?;
            // Read ahead generously: the image is read front to back.
            let _ = rustix::fs::fadvise(&file, 0, 0, rustix::fs::Advice::Sequential);
            let img = Image::open(DirectFile::new(file))?;
            let base_l1 = match &base_tag {
                Some(t) if img.snapshot(t).is_some() => Some(img.snapshot_l1(t)?),
                _ => None,
            };
            Ok((SnapshotReader::open(img, &tag_owned)?, base_l1))
        })
        .await,
    )?;
    let volume_size = snap.volume_size();
    // The base is usable only if its tag is still there and its index has
    // the same geometry.
    let base = base.filter(|b| {
        base_l1.is_some() && b.index.chunk_size == chunk_size && b.index.volume_size == volume_size
    });
    let start_index = match &base {
        Some(b) => b.index.clone(),
        None => Index::zeros(volume_size, chunk_size)?,
    };
    // Hold the base's chunks before relying on them being in the store.
    let known: std::collections::HashSet<ChunkName> = start_index.distinct().into_iter().collect();
    let mut hold = refs.hold(known.iter().copied()).await?;
    let snap = Arc::new(snap);
    let base_l1 = base.as_ref().and(base_l1);
    // Grains of 64 KiB when the image's clusters allow it and there is a
    // base to patch; otherwise whole chunks.
    let patching = base.is_some() && PATCH_GRAIN.is_multiple_of(snap.image().header.cluster_size());
    let grain = if patching {
        PATCH_GRAIN
    } else {
        chunk_size as u64
    };
    let changed = {
        let snap = snap.clone();
        joined(
            tokio::task::spawn_blocking(move || {
                snap.changed_masks(base_l1.as_deref(), chunk_size as u64, grain)
            })
            .await,
        )?
    };
    let per_chunk = chunk_size as u64 / grain;
    let plans: Vec<(u64, Plan)> = changed
        .into_iter()
        .map(|(pos, mask)| (pos, plan(&start_index, pos, mask, patching, per_chunk)))
        .collect();
    let total: u64 = plans
        .iter()
        .map(|(_, p)| match p {
            Plan::Whole => chunk_size as u64,
            Plan::Patch(r) => r.mask.count_ones() as u64 * PATCH_GRAIN,
        })
        .sum();
    progress(0, total);
    let known = Arc::new(known);
    let reading = Arc::new(std::sync::Mutex::new(()));

    let mut results = futures::stream::iter(plans)
        .map(|(pos, plan)| {
            let source = Source {
                snap: snap.clone(),
                reading: reading.clone(),
            };
            let region = region.clone();
            let refs = refs.clone();
            let known = known.clone();
            async move { back_up_position(&region, &refs, source, &known, pos, plan).await }
        })
        .buffer_unordered(region.parallel.max(1));

    let mut changes = Vec::new();
    let mut patches = BTreeMap::new();
    let mut read_bytes = 0;
    let mut chunk_sizes = HashMap::new();
    let mut new_bytes = 0;
    let mut new_chunks = 0;
    while let Some(done) = results.next().await {
        let done = done?;
        read_bytes += done.read;
        progress(read_bytes, total);
        if let Some(c) = &done.chunk {
            hold.absorb(done.hold.expect("a named chunk is held"));
            if let Some(size) = c.stored {
                chunk_sizes.insert(c.name, size);
            }
            if c.uploaded {
                new_bytes += c.stored.unwrap_or(0);
                new_chunks += 1;
            }
            if let Some(p) = c.patch {
                patches.insert(c.name, p);
            }
        }
        changes.push((done.pos, done.chunk.map(|c| c.name)));
    }
    changes.sort_by_key(|(p, _)| *p);
    region.store.sync_written().await?;
    Ok(BackupResult {
        index: start_index.updated(&changes, &patches),
        incremental: base.is_some(),
        read_bytes,
        chunk_sizes,
        new_bytes,
        new_chunks,
        hold,
    })
}

struct Done {
    pos: u64,
    read: u64,
    chunk: Option<Stored>,
    hold: Option<Hold>,
}

/// What a changed position becomes.
enum Plan {
    /// Read and stored whole.
    Whole,
    /// The grains of the mask read and stored as a patch on the base.
    Patch(PatchRef),
}

/// A patch when the base holds data at `pos` and the grains that differ
/// from its whole chunk (those its patch already replaced, and those
/// changed since) are at most half the chunk.
fn plan(base: &Index, pos: u64, changed: u64, patching: bool, per_chunk: u64) -> Plan {
    let Some(name) = base.at(pos).filter(|_| patching) else {
        return Plan::Whole;
    };
    let (whole, replaced) = match base.patches.get(&name) {
        Some(p) => (p.base, p.mask),
        None => (name, 0),
    };
    let mask = replaced | changed;
    if u64::from(mask.count_ones()) * 2 <= per_chunk {
        Plan::Patch(PatchRef { base: whole, mask })
    } else {
        Plan::Whole
    }
}

struct Stored {
    name: ChunkName,
    /// Set when it is a patch.
    patch: Option<PatchRef>,
    /// Its size in the store, when this backup learned it.
    stored: Option<u64>,
    uploaded: bool,
}

/// The image being backed up, and the turn to read it. Through the page
/// cache, reads take turns: concurrent reads of a cold file defeat its
/// readahead (8 at once ran at a quarter of one at a time's speed here).
/// Direct reads go to the disk as they are asked, and run together.
struct Source {
    snap: Arc<SnapshotReader<DirectFile>>,
    reading: Arc<std::sync::Mutex<()>>,
}

impl Source {
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let _turn = (!self.snap.image().source().is_direct())
            .then(|| self.reading.lock().unwrap_or_else(|e| e.into_inner()));
        self.snap.read(offset, buf)
    }
}

async fn back_up_position(
    region: &Region,
    refs: &Arc<Refs>,
    source: Source,
    known: &std::collections::HashSet<ChunkName>,
    pos: u64,
    plan: Plan,
) -> Result<Done> {
    let (read, piece) = {
        let key = region.keys.names.clone();
        let chunk_size = region.chunk_size as u64;
        joined(
            tokio::task::spawn_blocking(move || {
                read_position(&source, &key, chunk_size, pos, plan)
            })
            .await,
        )?
    };
    if !region.chunk_pause.is_zero() {
        tokio::time::sleep(region.chunk_pause).await;
    }
    let Some(piece) = piece else {
        return Ok(Done {
            pos,
            read,
            chunk: None,
            hold: None,
        });
    };
    let (name, patch) = (piece.name, piece.patch.clone());
    let hold = refs.hold([name]).await?;
    let stored = if known.contains(&name) {
        // The base references it: it is in the store, no request needed.
        None
    } else {
        let key = chunk_key(&name);
        match region.store.size(&key).await? {
            Some(size) => Some((size, false)),
            None => {
                let (level, keys) = (region.level, region.keys.clone());
                let object = joined(
                    tokio::task::spawn_blocking(move || match piece.patch {
                        Some((p, _)) => p.encode(level, &keys).map(|(_, o)| o),
                        None => chunk::encode(&piece.plain, level, &keys),
                    })
                    .await,
                )?;
                let size = object.len() as u64;
                let wrote = region.store.put_if_absent_unsynced(&key, object).await?;
                Some((size, wrote))
            }
        }
    };
    Ok(Done {
        pos,
        read,
        chunk: Some(Stored {
            name,
            patch: patch.map(|(_, r)| r),
            stored: stored.map(|(size, _)| size),
            uploaded: stored.is_some_and(|(_, wrote)| wrote),
        }),
        hold: Some(hold),
    })
}

/// A position read and named: a whole chunk, or a patch.
struct Piece {
    name: ChunkName,
    plain: Vec<u8>,
    patch: Option<(Patch, PatchRef)>,
}

/// Read what `plan` says of position `pos`; `None` for a whole chunk of
/// zeros. Returns the guest bytes read too.
fn read_position(
    source: &Source,
    key: &chunk::ChunkKey,
    chunk_size: u64,
    pos: u64,
    plan: Plan,
) -> Result<(u64, Option<Piece>)> {
    let start = pos * chunk_size;
    let len = chunk_size.min(source.snap.volume_size() - start);
    match plan {
        Plan::Whole => {
            let mut plain = vec![0; len as usize];
            source.read(start, &mut plain)?;
            if chunk::is_zero(&plain) {
                return Ok((len, None));
            }
            let name = ChunkName::of(key, &plain);
            Ok((
                len,
                Some(Piece {
                    name,
                    plain,
                    patch: None,
                }),
            ))
        }
        Plan::Patch(r) => {
            let mut data = Vec::new();
            for i in (0..64).filter(|i| r.mask >> i & 1 == 1) {
                let at = i * PATCH_GRAIN;
                let n = PATCH_GRAIN.min(len.saturating_sub(at)) as usize;
                let from = data.len();
                data.resize(from + n, 0);
                source.read(start + at, &mut data[from..])?;
            }
            let patch = Patch {
                base: r.base,
                mask: r.mask,
                data,
            };
            let name = patch.name(key);
            Ok((
                patch.data.len() as u64,
                Some(Piece {
                    name,
                    plain: Vec::new(),
                    patch: Some((patch, r)),
                }),
            ))
        }
    }
}

/// Write a snapshot's index, then its manifest (which pins the index's
/// hash): from here on the snapshot is complete in the store. The caller
/// must have checked that every chunk is durable (a finished [`backup`]).
pub(crate) async fn commit(region: &Region, index: &Index, manifest: &mut Manifest) -> Result<()> {
    let object = index.encode();
    manifest.index_blake3 = blake3::hash(&object).to_hex().to_string();
    region
        .store
        .put(&index_key(manifest.snapshot_id), object)
        .await?;
    region
        .store
        .put(
            &manifest_key(manifest.snapshot_id),
            manifest.encode(&region.keys),
        )
        .await
}

/// Remove a snapshot's objects, manifest first (so it stops being a
/// complete snapshot before anything else goes).
pub async fn remove(region: &Region, snapshot: uuid::Uuid) -> Result<()> {
    region.store.delete(&manifest_key(snapshot)).await?;
    region.store.delete(&index_key(snapshot)).await
}
