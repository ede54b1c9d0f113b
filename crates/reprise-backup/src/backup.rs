//! One backup: a qcow2 internal snapshot into the region's store.
//!
//! Steps: find the positions to read ([`SnapshotReader::changed_grains`]);
//! for each, in
//! parallel (at most [`Region::parallel`] at once, so memory is bounded by
//! that many pairs of chunk buffers whatever the volume's size): read it,
//! skip it if it is zeros, name it, take a reference ([`Refs::hold`]), and
//! if the store lacks it, compress, encrypt and upload it. Positions not
//! read keep their base chunk. The index and the manifest are written by
//! the snapshot's transaction ([`crate::snapshot`]) once the references
//! are recorded.

use crate::{chunk_key, index_key, joined, manifest_key, Hold, Refs, Region};
use futures::StreamExt;
use reprise_chunks::{chunk, ChunkName, Index, Manifest};
use reprise_core::Result;
use reprise_qcow2::{Image, SnapshotReader};
use std::collections::HashMap;
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
            let img = Image::open(file)?;
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
    let positions = {
        let snap = snap.clone();
        joined(
            tokio::task::spawn_blocking(move || {
                snap.changed_grains(base_l1.as_deref(), chunk_size as u64)
            })
            .await,
        )?
    };
    let total = positions.len() as u64 * chunk_size as u64;
    progress(0, total);
    let known = Arc::new(known);

    let mut results = futures::stream::iter(positions)
        .map(|pos| {
            let snap = snap.clone();
            let region = region.clone();
            let refs = refs.clone();
            let known = known.clone();
            async move { back_up_position(&region, &refs, &snap, &known, pos).await }
        })
        .buffer_unordered(region.parallel.max(1));

    let mut changes = Vec::new();
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
        }
        changes.push((done.pos, done.chunk.map(|c| c.name)));
    }
    changes.sort_by_key(|(p, _)| *p);
    Ok(BackupResult {
        index: start_index.updated(&changes),
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

struct Stored {
    name: ChunkName,
    /// Its size in the store, when this backup learned it.
    stored: Option<u64>,
    uploaded: bool,
}

async fn back_up_position(
    region: &Region,
    refs: &Arc<Refs>,
    snap: &Arc<SnapshotReader<std::fs::File>>,
    known: &std::collections::HashSet<ChunkName>,
    pos: u64,
) -> Result<Done> {
    let (plain, name) = {
        let snap = snap.clone();
        let key = region.keys.names.clone();
        let chunk_size = region.chunk_size as u64;
        joined(
            tokio::task::spawn_blocking(move || {
                let start = pos * chunk_size;
                let mut buf = vec![0; chunk_size.min(snap.volume_size() - start) as usize];
                snap.read(start, &mut buf)?;
                if chunk::is_zero(&buf) {
                    return Ok((buf, None));
                }
                let name = ChunkName::of(&key, &buf);
                Ok((buf, Some(name)))
            })
            .await,
        )?
    };
    let read = plain.len() as u64;
    if !region.chunk_pause.is_zero() {
        tokio::time::sleep(region.chunk_pause).await;
    }
    let Some(name) = name else {
        return Ok(Done {
            pos,
            read,
            chunk: None,
            hold: None,
        });
    };
    let hold = refs.hold([name]).await?;
    let stored = if known.contains(&name) {
        // The base references it: it is in the store, no request needed.
        Stored {
            name,
            stored: None,
            uploaded: false,
        }
    } else {
        let key = chunk_key(&name);
        match region.store.size(&key).await? {
            Some(size) => Stored {
                name,
                stored: Some(size),
                uploaded: false,
            },
            None => {
                let (level, keys) = (region.level, region.keys.clone());
                let object = joined(
                    tokio::task::spawn_blocking(move || chunk::encode(&plain, level, &keys)).await,
                )?;
                let size = object.len() as u64;
                let wrote = region.store.put_if_absent(&key, object).await?;
                Stored {
                    name,
                    stored: Some(size),
                    uploaded: wrote,
                }
            }
        }
    };
    Ok(Done {
        pos,
        read,
        chunk: Some(stored),
        hold: Some(hold),
    })
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
