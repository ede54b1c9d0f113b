//! Reading a snapshot back from the store: into a new qcow2 volume, to a
//! raw image, and to check it.
//!
//! Each chunk is decoded into its thread's buffer (see [`with_plain`]) and
//! written from there: a restore allocates no memory per chunk, and the
//! qcow2 writer's direct I/O takes the bytes without another copy.

use crate::{chunk_key, joined, Region};
use futures::StreamExt;
use reprise_chunks::chunk::{self, Decoded, MAX_CHUNK};
use reprise_chunks::index::PatchRef;
use reprise_chunks::{ChunkName, Index, RegionKeys};
use reprise_core::{Error, ErrorKind, Result};
use reprise_qcow2::direct;
use reprise_qcow2::writer::{Builder, Layout};
use std::cell::RefCell;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

thread_local! {
    static PLAIN: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Run `f` on this thread's buffer for a chunk's plain bytes: [`MAX_CHUNK`]
/// bytes aligned for direct I/O, reused by every chunk the thread decodes
/// (pages it never touches are never given memory).
fn with_plain<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    PLAIN.with_borrow_mut(|buf| f(direct::aligned_part(buf, MAX_CHUNK as usize)))
}

/// The stored object of chunk (or patch) `name`.
async fn get(region: &Region, name: ChunkName) -> Result<Vec<u8>> {
    region
        .store
        .get(&chunk_key(&name), (chunk::MAX_CHUNK as u64) * 2)
        .await
        .map_err(|e| e.context(format!("chunk {name}")))
}

/// What one position of an index needs from the store: its object and,
/// for a patch, the base's.
struct Position {
    name: ChunkName,
    object: Vec<u8>,
    patch: Option<(PatchRef, Vec<u8>)>,
    /// The bytes the position holds (the chunk size, less at the end).
    len: usize,
}

async fn fetch_position(
    region: &Region,
    index: &Index,
    pos: u64,
    name: ChunkName,
) -> Result<Position> {
    let chunk_size = index.chunk_size as u64;
    let len = chunk_size.min(index.volume_size - pos * chunk_size) as usize;
    let object = get(region, name).await?;
    let patch = match index.patches.get(&name) {
        Some(r) => Some((*r, get(region, r.base).await?)),
        None => None,
    };
    Ok(Position {
        name,
        object,
        patch,
        len,
    })
}

/// Decode the whole content of a position into `out` and return its
/// length: its chunk, or its patch applied to the patch's base. Refused as
/// damaged unless the objects are what the index says (a patch where the
/// index has one, on the base it names, a whole base) and the result has
/// the position's length: the index and the chunks come from a store
/// other daemons write.
fn decode_position(keys: &RegionKeys, mut at: Position, out: &mut [u8]) -> Result<usize> {
    let name = at.name;
    let damaged = |why: String| Error::new(ErrorKind::Corrupt, "object_corrupt", why);
    let in_chunk = |e: Error| e.context(format!("chunk {name}"));
    let decoded = chunk::decode_checked(&mut at.object, keys, &name, out).map_err(in_chunk)?;
    let len = match (decoded, at.patch) {
        (Decoded::Whole(n), None) => n,
        (Decoded::Patch(p), Some((r, mut base))) if p.base == r.base && p.mask == r.mask => {
            let in_base = |e: Error| e.context(format!("chunk {}", r.base));
            let Decoded::Whole(n) =
                chunk::decode_checked(&mut base, keys, &r.base, out).map_err(in_base)?
            else {
                return Err(damaged(format!(
                    "patch {name} is on {}, which is a patch",
                    r.base
                )));
            };
            p.apply(&mut out[..n])
                .map_err(|e| e.context(format!("patch {name}")))?;
            n
        }
        _ => {
            return Err(damaged(format!(
                "chunk {name} is not the kind of object the snapshot's index says"
            )))
        }
    };
    if len != at.len {
        return Err(damaged(format!(
            "chunk {name} holds {len} bytes where its position in the snapshot needs {}",
            at.len
        )));
    }
    Ok(len)
}

/// Where a restore puts a position's bytes.
type Write = Arc<dyn Fn(u64, &[u8]) -> Result<()> + Send + Sync>;

/// Fetch every position of `index` (in parallel, `region.parallel` at a
/// time), decode it and hand its bytes to `write(position, bytes)` on a
/// blocking thread, in whatever order they come; `progress(done, total)`
/// after each.
async fn restore_with(
    region: &Region,
    index: &Index,
    write: Write,
    progress: impl Fn(u64, u64),
) -> Result<()> {
    let total = index.entries.len() as u64;
    let mut writes = futures::stream::iter(index.entries.iter().copied())
        .map(|(pos, name)| {
            let write = write.clone();
            let keys = region.keys.clone();
            async move {
                let at = fetch_position(region, index, pos, name).await?;
                joined(
                    tokio::task::spawn_blocking(move || {
                        with_plain(|out| {
                            let len = decode_position(&keys, at, out)?;
                            write(pos, &out[..len])
                        })
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
    Ok(())
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
    let chunk_size = index.chunk_size as u64;
    let target = file.clone();
    let write =
        move |pos: u64, bytes: &[u8]| target.write_all_at(bytes, pos * chunk_size).map_err(io);
    restore_with(region, index, Arc::new(write), progress).await?;
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
    let layout = Layout::new(
        index.volume_size,
        index.chunk_size as u64,
        index.entries.iter().map(|(pos, _)| *pos).collect(),
    )?;
    let builder = Arc::new(joined(
        tokio::task::spawn_blocking(move || Builder::create(file, layout)).await,
    )?);
    let target = builder.clone();
    let write = move |pos: u64, bytes: &[u8]| target.write(pos, bytes);
    restore_with(region, index, Arc::new(write), progress).await?;
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
        .map(|name| async move { (name, check_chunk(region, name).await) })
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

/// Fetch chunk (or patch) `name` and check that it is the one named.
async fn check_chunk(region: &Region, name: ChunkName) -> Result<()> {
    let mut object = get(region, name).await?;
    let keys = region.keys.clone();
    joined(
        tokio::task::spawn_blocking(move || {
            with_plain(|out| chunk::decode_checked(&mut object, &keys, &name, out))
                .map(drop)
                .map_err(|e| e.context(format!("chunk {name}")))
        })
        .await,
    )
}
