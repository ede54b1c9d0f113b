//! Reading a snapshot back from the store: into a new qcow2 volume, to a
//! raw image, and to check it.

use crate::{chunk_key, joined, Region};
use futures::StreamExt;
use reprise_chunks::chunk::Content;
use reprise_chunks::{chunk, ChunkName, Index};
use reprise_core::{Error, ErrorKind, Result};
use reprise_qcow2::writer::{Builder, Layout};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// Fetch one chunk (or patch) and check that it is the one named.
pub async fn fetch(region: &Region, name: ChunkName) -> Result<Content> {
    let object = region
        .store
        .get(&chunk_key(&name), (chunk::MAX_CHUNK as u64) * 2)
        .await
        .map_err(|e| e.context(format!("chunk {name}")))?;
    let keys = region.keys.clone();
    joined(
        tokio::task::spawn_blocking(move || {
            chunk::decode_checked(&object, &keys, &name)
                .map_err(|e| e.context(format!("chunk {name}")))
        })
        .await,
    )
}

/// The whole content an index puts at `pos`: its chunk, or its patch
/// applied to the patch's base. Refused as damaged unless the objects are
/// what the index says (a patch where the index has one, on the base it
/// names, a whole base) and the result has the position's length: the
/// index and the chunks come from a store other daemons write.
async fn fetch_at(region: &Region, index: &Index, pos: u64, name: ChunkName) -> Result<Vec<u8>> {
    let damaged = |why: String| Error::new(ErrorKind::Corrupt, "object_corrupt", why);
    let plain = match (fetch(region, name).await?, index.patches.get(&name)) {
        (Content::Whole(plain), None) => plain,
        (Content::Patch(p), Some(r)) if p.base == r.base && p.mask == r.mask => {
            let Content::Whole(base) = fetch(region, p.base).await? else {
                return Err(damaged(format!(
                    "patch {name} is on {}, which is a patch",
                    p.base
                )));
            };
            let patch = joined(tokio::task::spawn_blocking(move || p.apply(&base)).await);
            patch.map_err(|e| e.context(format!("patch {name}")))?
        }
        _ => {
            return Err(damaged(format!(
                "chunk {name} is not the kind of object the snapshot's index says"
            )))
        }
    };
    let chunk_size = index.chunk_size as u64;
    let expected = chunk_size.min(index.volume_size - pos * chunk_size);
    if plain.len() as u64 != expected {
        return Err(damaged(format!(
            "chunk {name} holds {} bytes where position {pos} of the snapshot needs {expected}",
            plain.len()
        )));
    }
    Ok(plain)
}

/// Write the snapshot's guest bytes to `file` as a raw image: the file is
/// set to the volume's size and only non-zero chunks are written (the rest
/// stays a hole). Chunks are fetched in parallel and written out of order.
pub async fn restore_raw(
    region: &Region,
    index: &Index,
    file: std::fs::File,
    progress: impl Fn(u64, u64),
) -> Result<()> {
    let io = |e: std::io::Error| {
        Error::unavailable("io_error", format!("writing the image: {e}")).with_source(e)
    };
    file.set_len(index.volume_size).map_err(io)?;
    let file = Arc::new(file);
    let total = index.entries.len() as u64;
    let chunk_size = index.chunk_size as u64;
    let mut writes = futures::stream::iter(index.entries.iter().copied())
        .map(|(pos, name)| {
            let file = file.clone();
            async move {
                let plain = fetch_at(region, index, pos, name).await?;
                joined(
                    tokio::task::spawn_blocking(move || {
                        file.write_all_at(&plain, pos * chunk_size).map_err(io)
                    })
                    .await,
                )
            }
        })
        .buffer_unordered(region.parallel.max(1));
    let mut done = 0;
    while let Some(r) = writes.next().await {
        r?;
        done += 1;
        progress(done, total);
    }
    file.sync_all().map_err(io)
}

/// Write the snapshot's guest bytes into `file` (new and empty) as a
/// qcow2 image with 64 KiB clusters, directly from the chunks: they are
/// fetched, checked and decompressed in parallel and stored out of order,
/// each at the place the layout planned for it, zero clusters left
/// unallocated (see [`reprise_qcow2::writer`]). The image is durable when
/// this returns.
pub async fn restore_qcow2(
    region: &Region,
    index: &Index,
    file: std::fs::File,
    progress: impl Fn(u64, u64),
) -> Result<()> {
    let chunk_size = index.chunk_size as u64;
    let layout = Layout::new(
        index.volume_size,
        chunk_size,
        index.entries.iter().map(|(pos, _)| *pos).collect(),
    )?;
    let builder = Arc::new(joined(
        tokio::task::spawn_blocking(move || Builder::create(file, layout)).await,
    )?);
    let total = index.entries.len() as u64;
    let mut writes = futures::stream::iter(index.entries.iter().copied())
        .map(|(pos, name)| {
            let builder = builder.clone();
            async move {
                let plain = fetch_at(region, index, pos, name).await?;
                joined(tokio::task::spawn_blocking(move || builder.write(pos, &plain)).await)
            }
        })
        .buffer_unordered(region.parallel.max(1));
    let mut done = 0;
    while let Some(r) = writes.next().await {
        r?;
        done += 1;
        progress(done, total);
    }
    drop(writes);
    let builder = Arc::into_inner(builder).expect("every write has finished");
    joined(tokio::task::spawn_blocking(move || builder.finish()).await)
}

/// What a verification found.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct VerifyReport {
    pub chunks_checked: u64,
    pub missing: Vec<ChunkName>,
    /// Chunks present but damaged (or not decryptable), with the reason.
    pub damaged: Vec<(ChunkName, String)>,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty() && self.damaged.is_empty()
    }

    /// One sentence naming what is wrong (first few chunks).
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if !self.missing.is_empty() {
            let names: Vec<String> = self.missing.iter().take(3).map(|n| n.to_hex()).collect();
            parts.push(format!(
                "{} chunk(s) missing ({}{})",
                self.missing.len(),
                names.join(", "),
                if self.missing.len() > 3 { ", …" } else { "" }
            ));
        }
        if !self.damaged.is_empty() {
            let names: Vec<String> = self
                .damaged
                .iter()
                .take(3)
                .map(|(n, why)| format!("{n}: {why}"))
                .collect();
            parts.push(format!(
                "{} chunk(s) damaged ({})",
                self.damaged.len(),
                names.join("; ")
            ));
        }
        if parts.is_empty() {
            format!("all {} chunks are intact", self.chunks_checked)
        } else {
            parts.join("; ")
        }
    }
}

/// Re-read every chunk of a snapshot and check it; the index itself must
/// match its manifest (an error otherwise).
pub async fn verify(
    region: &Region,
    snapshot: uuid::Uuid,
    progress: impl Fn(u64, u64),
) -> Result<VerifyReport> {
    let manifest = region.manifest(snapshot).await?;
    let index = region.index(&manifest).await?;
    let names: Vec<ChunkName> = index.distinct().into_iter().collect();
    let total = names.len() as u64;
    let mut checks = futures::stream::iter(names)
        .map(|name| async move { (name, fetch(region, name).await) })
        .buffer_unordered(region.parallel.max(1));
    let mut report = VerifyReport::default();
    while let Some((name, r)) = checks.next().await {
        report.chunks_checked += 1;
        match r {
            Ok(_) => {}
            Err(e) if e.kind == ErrorKind::NotFound => report.missing.push(name),
            Err(e) if e.kind == ErrorKind::Corrupt => report.damaged.push((name, e.message)),
            Err(e) => return Err(e),
        }
        progress(report.chunks_checked, total);
    }
    report.missing.sort();
    report.damaged.sort_by_key(|d| d.0);
    Ok(report)
}
