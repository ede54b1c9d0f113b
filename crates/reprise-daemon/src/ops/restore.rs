//! Volumes made from volume snapshots, in any zone of the region.
//!
//! Invariant: the new volume's row is `Creating` until its qcow2 is whole;
//! any failure removes the files and the row, so no half-made volume is
//! ever seen `Ready` or left behind (a crash leaves a `Creating` row that
//! the startup pass removes with its files).
//!
//! Reverting a volume to a snapshot builds the snapshot's content next to
//! the volume's file and renames it over the file once whole: until that
//! rename the volume is untouched, after it the volume is the snapshot.
//!
//! The snapshot's chunks are fetched and decompressed in parallel and
//! written out of order straight into the volume's qcow2 (64 KiB clusters,
//! zeros left unallocated; see `reprise_qcow2::writer`).

use super::volumes::{new_row, zone_or_default};
use crate::app::App;
use crate::jobs::{self, Target};
use reprise_core::lifecycle::volume;
use reprise_core::model::*;
use reprise_core::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where restores made a raw image before they wrote qcow2 directly: a
/// crash of an older daemon can have left one.
fn raw_path(qcow2: &str) -> PathBuf {
    PathBuf::from(format!("{qcow2}.restoring.raw"))
}

/// Where a revert builds the snapshot's content before the rename.
fn revert_path(qcow2: &str) -> PathBuf {
    PathBuf::from(format!("{qcow2}.reverting.qcow2"))
}

/// A snapshot of the account that can be restored: BackedUp.
fn backed_up(app: &App, account: &Account, reference: &str) -> Result<Snapshot> {
    let s = app.catalog.snapshot(account.id, reference)?;
    if s.state != SnapshotState::BackedUp {
        return Err(Error::conflict(
            "snapshot_busy",
            format!(
                "snapshot '{}' is {}: only a BackedUp snapshot can be restored",
                s.name, s.state
            ),
        ));
    }
    Ok(s)
}

/// Start making a volume from a snapshot.
pub fn create(
    app: &Arc<App>,
    account: &Account,
    snapshot: &str,
    req: VolumeFromSnapshot,
) -> Result<Job> {
    let s = backed_up(app, account, snapshot)?;
    reprise_core::name::validate_name("volume", &req.name)?;
    let zone = zone_or_default(app, req.zone.as_deref())?;
    crate::hosts::check_wanted(app, account, req.host.as_deref())?;
    let row = new_row(
        app,
        account.id,
        &req.name,
        &zone,
        VolumeKind::Data,
        s.size_bytes,
    )?;
    let slot = jobs::reserve(
        app,
        account.id,
        "volume.restore",
        Target {
            kind: "volume",
            id: row.id,
            name: &row.name,
        },
        0,
    )?;
    super::volumes::record(app, &row)?;
    let app2 = app.clone();
    Ok(slot.spawn(move |ctx| async move {
        ctx.log(format!(
            "restoring snapshot '{}' into zone {}",
            s.name, row.zone
        ));
        let started = std::time::Instant::now();
        let made = build(&app2, s.id, Path::new(&row.path), |done, total| {
            ctx.progress(done, total)
        })
        .await;
        match made {
            Ok(()) => {
                super::volumes::settle(&app2, row.id, &volume::MADE)?;
                ctx.log(format!(
                    "volume '{}' is Ready ({} ms)",
                    row.name,
                    started.elapsed().as_millis()
                ));
                Ok(())
            }
            Err(e) => {
                remove_half_made(app2.as_ref(), &row.path, row.id);
                Err(e)
            }
        }
    }))
}

/// Build a snapshot's content as a new qcow2 at `dst` (sparse, durable
/// when this returns), written directly from the chunks.
pub(crate) async fn build(
    app: &App,
    snapshot: uuid::Uuid,
    dst: &Path,
    progress: impl Fn(u64, u64),
) -> Result<()> {
    let region = app.region().await?;
    let manifest = region.manifest(snapshot).await?;
    let index = region.index(&manifest).await?;
    let file = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(dst)
        .map_err(|e| {
            Error::unavailable("io_error", format!("cannot create {}: {e}", dst.display()))
                .with_source(e)
        })?;
    reprise_backup::restore_qcow2(region, &index, file, progress).await?;
    // The file is synced; its directory entry must be too before anything
    // says the volume is whole.
    reprise_qemu::img::durable(dst).await?;
    app.metrics
        .restored(index.entries.len() as u64 * index.chunk_size as u64);
    Ok(())
}

/// Put a volume back to a snapshot's content (the guides' "redeploy from a
/// snapshot taken just before the change"). The volume's instance must be
/// stopped; its later snapshots stay.
pub fn revert(app: &Arc<App>, account: &Account, volume: &str, req: RevertVolume) -> Result<Job> {
    let v = app.catalog.volume(account.id, volume)?;
    let s = backed_up(app, account, &req.snapshot)?;
    if s.size_bytes != v.size_bytes {
        return Err(Error::invalid(
            "size_mismatch",
            format!(
                "snapshot '{}' is of a {}-byte volume and volume '{}' has {} bytes: make a new volume from it instead",
                s.name, s.size_bytes, v.name, v.size_bytes
            ),
        ));
    }
    if let Some(id) = v.instance_id {
        let inst = app.catalog.instance_by_id(id)?;
        if inst.state != InstanceState::Stopped {
            return Err(Error::conflict(
                "instance_running",
                format!(
                    "volume '{}' belongs to instance '{}', which is {}: stop it first",
                    v.name, inst.name, inst.state
                ),
            ));
        }
        super::guards::refuse_if_points(app, &inst, &format!("reverting volume '{}'", v.name))?;
    }
    super::guards::refuse_if_backing_up(app, &v, &format!("reverting volume '{}'", v.name))?;
    let slot = jobs::reserve(
        app,
        account.id,
        "volume.revert",
        Target {
            kind: "volume",
            id: v.id,
            name: &v.name,
        },
        0,
    )?;
    if !app.catalog.transition_volume(v.id, &volume::REVERT)? {
        return Err(Error::conflict(
            "volume_busy",
            format!("volume '{}' is {}, not Ready", v.name, v.state),
        ));
    }
    let app2 = app.clone();
    Ok(slot.spawn(move |ctx| async move {
        let _guard = match v.instance_id {
            Some(i) => Some(app2.lock_instance(i).await),
            None => None,
        };
        let next = revert_path(&v.path);
        let built = build(&app2, s.id, &next, |done, total| ctx.progress(done, total)).await;
        // `build` returns with `next` durable; the rename is made durable
        // too before the volume is Ready again.
        let swapped = built.and_then(|()| {
            std::fs::rename(&next, &v.path).map_err(|e| {
                Error::unavailable("io_error", format!("cannot replace {}: {e}", v.path))
                    .with_source(e)
            })?;
            reprise_qemu::img::sync_file_and_dir(Path::new(&v.path))
        });
        let _ = std::fs::remove_file(&next);
        super::volumes::settle(&app2, v.id, &volume::REVERTED)?;
        swapped?;
        // The file no longer holds the base of the next increment.
        app2.catalog.set_volume_snapshot_base(v.id, None)?;
        ctx.log(format!(
            "volume '{}' holds snapshot '{}' again",
            v.name, s.name
        ));
        Ok(())
    }))
}

/// At startup: a data volume a restore was making is removed with its
/// files; a revert that was interrupted leaves the volume as its file is
/// (whole, before or after the rename), without a base; the raw images
/// and revert copies a crash left beside any volume go.
pub fn settle_interrupted(app: &App, v: &reprise_catalog::VolumeRow) -> Result<()> {
    // Nothing is being built at startup: a raw image or a revert's copy
    // next to any volume is a crash's leftover.
    let next = revert_path(&v.path);
    for leftover in [raw_path(&v.path), raw_path(&next.to_string_lossy()), next] {
        if std::fs::remove_file(&leftover).is_ok() {
            tracing::warn!(volume = %v.id, path = %leftover.display(), "a crash's leftover removed");
        }
    }
    match (v.state, v.kind) {
        (VolumeState::Creating, VolumeKind::Data) => {
            tracing::warn!(volume = %v.id, name = v.name, "data volume was being made when the daemon stopped: removed");
            remove_half_made(app, &v.path, v.id);
        }
        (VolumeState::Reverting, _) => {
            tracing::warn!(volume = %v.id, name = v.name, "a revert was interrupted: the volume is Ready as its file is");
            app.catalog.set_volume_snapshot_base(v.id, None)?;
            super::volumes::settle(app, v.id, &volume::REVERTED)?;
        }
        _ => {}
    }
    Ok(())
}

/// Remove a volume that was being made: its files, then its row.
pub fn remove_half_made(app: &App, path: &str, id: uuid::Uuid) {
    let _ = std::fs::remove_file(path);
    if let Err(e) = app.catalog.delete_volume(id) {
        tracing::warn!(volume = %id, "could not remove a half-made volume: {e}");
    }
}
