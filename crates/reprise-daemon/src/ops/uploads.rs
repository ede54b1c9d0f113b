//! Uploads: how a tenant brings a file (an image, a kernel, an initrd) to
//! the daemon instead of naming one on its host.
//!
//! `POST /uploads {name, size_bytes}` announces it (at most
//! `uploads.max_bytes`, and `uploads.max_per_account` of them per
//! account); `PUT /uploads/{id}/data?offset=N` sends bytes from `N`,
//! which must be where the upload stands (`received_bytes`), so an
//! interrupted upload resumes where it stopped. When all bytes are in, the
//! upload is `Complete` with its SHA-256 and never written again; imports
//! and boots then take it by id (see [`crate::import`]). An upload left
//! `Receiving` and untouched for `uploads.expire_hours` is removed.
//!
//! The bytes live in `DATA_DIR/uploads/<id>` (mode 0600); the row records
//! how many are written, and is raised only after they are. A PUT starts
//! by cutting the file back to that count, so bytes written but not
//! recorded (a crash mid-request) are sent again, never trusted.

use crate::app::App;
use reprise_catalog::now;
use reprise_core::model::*;
use reprise_core::{Error, Result};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

/// The file of an upload.
pub fn file_of(app: &App, id: Uuid) -> PathBuf {
    app.config.uploads_dir().join(id.to_string())
}

/// How often a streaming upload records its progress.
const RECORD_EVERY: u64 = 8 << 20;

pub fn create(app: &App, account: &Account, req: CreateUpload) -> Result<Upload> {
    let name = req.name.trim();
    if name.is_empty() || name.len() > 255 || name.chars().any(|c| c.is_control() || c == '/') {
        return Err(Error::invalid(
            "name_invalid",
            "an upload's name is a file name: 1 to 255 characters, no '/' and no control characters",
        ));
    }
    let max = app.config.uploads.max_bytes;
    if req.size_bytes == 0 || req.size_bytes > max {
        return Err(Error::invalid(
            "upload_too_large",
            format!(
                "an upload is 1 byte to {} (uploads.max_bytes); {} bytes were announced",
                reprise_core::size::format_size(max),
                req.size_bytes
            ),
        ));
    }
    let u = Upload {
        id: Uuid::new_v4(),
        account_id: account.id,
        name: name.to_string(),
        state: UploadState::Receiving,
        size_bytes: req.size_bytes,
        received_bytes: 0,
        sha256: None,
        created_at: now(),
        completed_at: None,
    };
    let dir = app.config.uploads_dir();
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| {
                Error::unavailable(
                    "io_error",
                    format!("cannot create the upload directory: {e}"),
                )
                .with_source(e)
            })?;
    }
    let limit = app.config.uploads.max_per_account;
    if !app.catalog.insert_upload(&u, limit)? {
        return Err(Error::conflict(
            "upload_limit_reached",
            format!(
                "the account has {limit} uploads, the most allowed (uploads.max_per_account): delete one first"
            ),
        ));
    }
    Ok(u)
}

pub fn list(app: &App, account: &Account) -> Result<Vec<Upload>> {
    app.catalog.list_uploads(account.id)
}

pub fn show(app: &App, account: &Account, reference: &str) -> Result<Upload> {
    app.catalog.upload(account.id, reference)
}

/// Delete an upload: its row, then its file. Whatever was made from it
/// (a template, an instance's kernel) keeps its own copy.
pub async fn delete(app: &App, account: &Account, reference: &str) -> Result<()> {
    let u = app.catalog.upload(account.id, reference)?;
    let _guard = app.lock_upload(u.id).await;
    remove(app, u.id)
}

fn remove(app: &App, id: Uuid) -> Result<()> {
    app.catalog.delete_upload(id)?;
    match std::fs::remove_file(file_of(app, id)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            tracing::warn!(upload = %id, "cannot remove its file: {e}")
        }
        _ => {}
    }
    Ok(())
}

fn io(what: &str) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::unavailable("io_error", format!("upload: {what}: {e}")).with_source(e)
}

/// Write the bytes of `body` at `offset` of an upload; completes it when
/// the last byte is in. One writer at a time per upload.
pub async fn receive<S, B, E>(
    app: &App,
    account: &Account,
    reference: &str,
    offset: u64,
    mut body: S,
) -> Result<Upload>
where
    S: futures::Stream<Item = std::result::Result<B, E>> + Unpin,
    B: AsRef<[u8]>,
    E: std::fmt::Display,
{
    use futures::StreamExt;
    let u = app.catalog.upload(account.id, reference)?;
    let _guard = app.lock_upload(u.id).await;
    let u = app.catalog.upload(account.id, &u.id.to_string())?;
    if u.state == UploadState::Complete {
        return Err(Error::conflict(
            "upload_complete",
            format!("upload '{}' is complete: it is never written again", u.name),
        ));
    }
    if offset != u.received_bytes {
        return Err(Error::conflict(
            "upload_offset_mismatch",
            format!(
                "upload '{}' resumes at byte {}, not {offset}: send from there",
                u.name, u.received_bytes
            ),
        ));
    }
    let path = file_of(app, u.id);
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .await
        .map_err(io("open"))?;
    file.set_len(u.received_bytes)
        .await
        .map_err(io("truncate"))?;
    tokio::io::AsyncSeekExt::seek(&mut file, std::io::SeekFrom::Start(u.received_bytes))
        .await
        .map_err(io("seek"))?;
    let mut received = u.received_bytes;
    let mut recorded = received;
    let mut failure = None;
    while let Some(piece) = body.next().await {
        let piece = match piece {
            Ok(p) => p,
            Err(e) => {
                failure = Some(Error::invalid(
                    "upload_interrupted",
                    format!("the upload stopped at byte {received}: {e}; resume from there"),
                ));
                break;
            }
        };
        let piece = piece.as_ref();
        let room = u.size_bytes - received;
        let take = (piece.len() as u64).min(room) as usize;
        file.write_all(&piece[..take]).await.map_err(io("write"))?;
        received += take as u64;
        app.metrics.uploaded(take as u64);
        if take < piece.len() {
            failure = Some(Error::invalid(
                "upload_too_large",
                format!(
                    "upload '{}' announced {} bytes; more were sent",
                    u.name, u.size_bytes
                ),
            ));
            break;
        }
        if received - recorded >= RECORD_EVERY {
            // Only bytes on disk are counted as received: a resume after
            // a power cut starts where the data really ends.
            file.flush().await.map_err(io("write"))?;
            file.sync_data().await.map_err(io("sync"))?;
            app.catalog.set_upload_received(u.id, received)?;
            recorded = received;
        }
    }
    file.flush().await.map_err(io("write"))?;
    file.sync_all().await.map_err(io("sync"))?;
    drop(file);
    if received == u.size_bytes {
        // The file's name too, before the upload is said complete.
        reprise_qemu::img::sync_file_and_dir(&path)?;
    }
    app.catalog.set_upload_received(u.id, received)?;
    if let Some(e) = failure {
        return Err(e);
    }
    if received == u.size_bytes {
        let sha = tokio::task::spawn_blocking(move || sha256_of(&path))
            .await
            .map_err(|e| Error::internal(format!("hashing the upload: {e}")).with_source(e))??;
        app.catalog.complete_upload(u.id, &sha)?;
        tracing::info!(upload = %u.id, name = u.name, bytes = u.size_bytes, "upload complete");
    }
    app.catalog.upload(account.id, &u.id.to_string())
}

fn sha256_of(path: &std::path::Path) -> Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(io("read"))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io("read"))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Remove uploads left Receiving and untouched past `expire_hours`,
/// complete ones `keep_days` after they completed, and files in the
/// upload directory no upload row owns (a crash between the two). Run at
/// startup and now and then.
pub fn expire(app: &App) -> Result<()> {
    let hours = app.config.uploads.expire_hours as i64;
    let days = app.config.uploads.keep_days as i64;
    let receiving_before = now() - chrono::Duration::hours(hours);
    let complete_before = now() - chrono::Duration::days(days);
    for u in app
        .catalog
        .expired_uploads(receiving_before, complete_before)?
    {
        match u.state {
            UploadState::Receiving => {
                tracing::info!(upload = %u.id, name = u.name, "removing an upload left unfinished for {hours} h")
            }
            UploadState::Complete => {
                tracing::info!(upload = %u.id, name = u.name, "removing an upload completed over {days} days ago")
            }
        }
        remove(app, u.id)?;
    }
    let known: std::collections::HashSet<Uuid> =
        app.catalog.all_upload_ids()?.into_iter().collect();
    if let Ok(entries) = std::fs::read_dir(app.config.uploads_dir()) {
        for e in entries.flatten() {
            let owned = Uuid::parse_str(&e.file_name().to_string_lossy())
                .is_ok_and(|id| known.contains(&id));
            if !owned {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(())
}
