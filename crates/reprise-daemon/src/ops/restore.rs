//! Volumes made from volume snapshots, in any zone of the region.
//!
//! Invariant: the new volume's row is `Creating` until its qcow2 is whole;
//! any failure removes the files and the row, so no half-made volume is
//! ever seen `Ready` or left behind (a crash leaves a `Creating` row that
//! the startup pass removes with its files).
//!
//! The snapshot's chunks are fetched and decompressed in parallel and
//! written out of order into a sparse raw file (zero chunks stay holes),
//! which `qemu-img convert` then turns into the volume's qcow2 (64 KiB
//! clusters, zeros left unallocated).

use super::volumes::{new_row, zone_or_default};
use crate::app::App;
use crate::jobs::{self, Target};
use reprise_core::model::*;
use reprise_core::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn raw_path(qcow2: &str) -> PathBuf {
    PathBuf::from(format!("{qcow2}.restoring.raw"))
}

/// Start making a volume from a snapshot.
pub fn create(
    app: &Arc<App>,
    account: &Account,
    snapshot: &str,
    req: VolumeFromSnapshot,
) -> Result<Job> {
    let s = app.catalog.snapshot(account.id, snapshot)?;
    if s.state != SnapshotState::BackedUp {
        return Err(Error::conflict(
            "snapshot_busy",
            format!(
                "snapshot '{}' is {}: only a BackedUp snapshot can be restored",
                s.name, s.state
            ),
        ));
    }
    reprise_core::name::validate_name("volume", &req.name)?;
    let zone = zone_or_default(app, req.zone.as_deref())?;
    let row = new_row(account.id, &req.name, &zone, VolumeKind::Data, s.size_bytes);
    app.catalog.insert_volume(&row)?;
    let app2 = app.clone();
    let name = row.name.clone();
    jobs::spawn(
        app,
        account.id,
        "volume.restore",
        Target {
            kind: "volume",
            id: row.id,
            name: &name,
        },
        0,
        move |ctx| async move {
            ctx.log(format!(
                "restoring snapshot '{}' into zone {}",
                s.name, row.zone
            ));
            let started = std::time::Instant::now();
            let made = async {
                let manifest = app2.region.manifest(s.id).await?;
                let index = app2.region.index(&manifest).await?;
                let raw = raw_path(&row.path);
                let file = std::fs::OpenOptions::new()
                    .create_new(true)
                    .write(true)
                    .open(&raw)
                    .map_err(|e| {
                        Error::unavailable(
                            "io_error",
                            format!("cannot create {}: {e}", raw.display()),
                        )
                    })?;
                reprise_backup::restore_raw(&app2.region, &index, file, |done, total| {
                    ctx.progress(done, total)
                })
                .await?;
                app2.config
                    .binaries()
                    .convert_to_qcow2(&raw, "raw", Path::new(&row.path))
                    .await?;
                let _ = std::fs::remove_file(&raw);
                Ok::<_, Error>(())
            }
            .await;
            match made {
                Ok(()) => {
                    app2.catalog.set_volume_state(row.id, VolumeState::Ready)?;
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
        },
    )
}

/// Remove a volume that was being made: its files, then its row.
pub fn remove_half_made(app: &App, path: &str, id: uuid::Uuid) {
    let _ = std::fs::remove_file(raw_path(path));
    let _ = std::fs::remove_file(path);
    if let Err(e) = app.catalog.delete_volume(id) {
        tracing::warn!(volume = %id, "could not remove a half-made volume: {e}");
    }
}
