//! Volumes: qcow2 files with 64 KiB clusters in their zone's primary
//! storage, named by volume id.
//!
//! A volume row is written (state `Creating`) before its file, and the file
//! removed after its row, so a crash leaves at worst an orphan file, never
//! a row without its file once `Ready`.

use super::{parse_size_field, MAX_VOLUME_SIZE};
use crate::app::App;
use crate::vm;
use reprise_catalog::{now, write, Scope, VolumeFilter, VolumeRow};
use reprise_core::lifecycle::{volume, Move};
use reprise_core::model::*;
use reprise_core::plan::Demand;
use reprise_core::size::format_size;
use reprise_core::{Error, Result};
use std::path::PathBuf;
use uuid::Uuid;

pub fn zone_or_default(app: &App, zone: Option<&str>) -> Result<Zone> {
    app.catalog.zone(zone.unwrap_or(&app.config.default_zone))
}

pub fn volume_path(zone: &Zone, id: Uuid) -> PathBuf {
    PathBuf::from(&zone.storage_dir).join(format!("{id}.qcow2"))
}

/// A new volume row (state `Creating`) of `size` bytes in `zone`, on
/// this daemon's host (which must serve the zone).
pub fn new_row(
    app: &App,
    account: Uuid,
    name: &str,
    zone: &Zone,
    kind: VolumeKind,
    size: u64,
) -> Result<VolumeRow> {
    crate::hosts::check_here(app, zone)?;
    let id = Uuid::new_v4();
    Ok(VolumeRow {
        id,
        account_id: account,
        name: name.to_string(),
        zone_id: zone.id,
        zone: zone.name.clone(),
        kind,
        state: VolumeState::Creating,
        size_bytes: size,
        path: volume_path(zone, id).to_string_lossy().into_owned(),
        instance_id: None,
        instance: None,
        slot: None,
        created_at: now(),
        host: app.host_name().to_string(),
    })
}

/// What a new volume of `size` bytes takes of its account's plan.
pub fn demand(size: u64) -> Demand {
    Demand {
        volumes: 1,
        volume_bytes: size,
        ..Default::default()
    }
}

/// Record a new volume row if the account's plan allows it.
pub fn record(app: &App, row: &VolumeRow) -> Result<()> {
    app.catalog.admit(
        row.account_id,
        Scope::default(),
        &demand(row.size_bytes),
        |c| write::insert_volume(c, row),
    )
}

/// Create a blank data volume.
pub async fn create(app: &App, account: &Account, req: CreateVolume) -> Result<Volume> {
    reprise_core::name::validate_name("volume", &req.name)?;
    let size = parse_size_field("size", &req.size, MAX_VOLUME_SIZE)?;
    let zone = zone_or_default(app, req.zone.as_deref())?;
    crate::hosts::check_wanted(app, account, req.host.as_deref())?;
    let row = new_row(app, account.id, &req.name, &zone, VolumeKind::Data, size)?;
    record(app, &row)?;
    if let Err(e) = app
        .config
        .binaries()
        .create(std::path::Path::new(&row.path), size)
        .await
    {
        let _ = std::fs::remove_file(&row.path);
        app.catalog.delete_volume(row.id)?;
        return Err(e);
    }
    settle(app, row.id, &volume::MADE)?;
    tracing::info!(volume = %row.id, name = row.name, size, "volume created");
    Ok(app
        .catalog
        .volume(account.id, &row.id.to_string())?
        .to_api())
}

pub fn list(
    app: &App,
    account: &Account,
    zone: Option<&str>,
    instance: Option<&str>,
) -> Result<Vec<Volume>> {
    let filter = VolumeFilter {
        zone_id: zone
            .map(|z| app.catalog.zone(z).map(|z| z.id))
            .transpose()?,
        instance_id: instance
            .map(|i| app.catalog.instance(account.id, i).map(|i| i.id))
            .transpose()?,
    };
    Ok(app
        .catalog
        .list_volumes(account.id, &filter)?
        .iter()
        .map(VolumeRow::to_api)
        .collect())
}

pub fn show(app: &App, account: &Account, reference: &str) -> Result<Volume> {
    Ok(app.catalog.volume(account.id, reference)?.to_api())
}

/// The instance a volume is attached to, with its lock held, or `None`.
async fn attached_instance(
    app: &App,
    v: &VolumeRow,
) -> Result<
    Option<(
        reprise_catalog::InstanceRow,
        tokio::sync::OwnedMutexGuard<()>,
    )>,
> {
    let Some(iid) = v.instance_id else {
        return Ok(None);
    };
    let guard = app.lock_instance(iid).await;
    Ok(Some((app.catalog.instance_by_id(iid)?, guard)))
}

fn refuse_busy(inst: &reprise_catalog::InstanceRow) -> Result<()> {
    match inst.state {
        InstanceState::Running | InstanceState::Stopped | InstanceState::Error => Ok(()),
        s => Err(Error::conflict(
            "instance_busy",
            format!(
                "instance '{}' is {s}: wait until it is Running or Stopped",
                inst.name
            ),
        )),
    }
}

/// Grow a volume (never shrink): over QMP when its instance runs, with
/// qemu-img otherwise.
pub async fn resize(app: &App, account: &Account, reference: &str, size: &str) -> Result<Volume> {
    let v = app.catalog.volume(account.id, reference)?;
    let new_size = parse_size_field("size", size, MAX_VOLUME_SIZE)?;
    if new_size <= v.size_bytes {
        return Err(Error::invalid(
            "size_not_larger",
            format!(
                "volumes only grow: {} is not larger than the {} of volume '{}'",
                format_size(new_size),
                format_size(v.size_bytes),
                v.name
            ),
        ));
    }
    require_ready(&v)?;
    let attached = attached_instance(app, &v).await?;
    if let Some((inst, _)) = &attached {
        super::guards::refuse_if_points(app, inst, &format!("resizing volume '{}'", v.name))?;
        refuse_busy(inst)?;
    }
    // The new size is counted against the plan (and recorded) first; a
    // failed resize puts the old one back.
    let growth = Demand {
        volume_bytes: new_size - v.size_bytes,
        ..Default::default()
    };
    app.catalog
        .admit(account.id, Scope::default(), &growth, |c| {
            write::set_volume_size(c, v.id, new_size)
        })?;
    let resized = async {
        super::snapshots::drop_base_for_resize(app, &v).await?;
        match &attached {
            Some((inst, _)) if vm::is_live(app, inst.id) => {
                vm::hot_resize(app, inst.id, v.id, new_size).await
            }
            _ => {
                app.config
                    .binaries()
                    .resize(v.path.as_ref(), new_size)
                    .await
            }
        }
    }
    .await;
    if let Err(e) = resized {
        app.catalog.set_volume_size(v.id, v.size_bytes)?;
        return Err(e);
    }
    tracing::info!(volume = %v.id, size = new_size, "volume resized");
    show(app, account, &v.id.to_string())
}

fn require_ready(v: &VolumeRow) -> Result<()> {
    if v.state != VolumeState::Ready {
        return Err(Error::conflict(
            "volume_busy",
            format!("volume '{}' is {}, not Ready", v.name, v.state),
        ));
    }
    Ok(())
}

/// Delete a volume. Refused for a root volume (delete its instance) and
/// while attached to an instance that is not stopped.
pub async fn delete(app: &App, account: &Account, reference: &str) -> Result<()> {
    let v = app.catalog.volume(account.id, reference)?;
    if v.kind == VolumeKind::Root && v.instance_id.is_some() {
        return Err(Error::conflict(
            "volume_is_root",
            format!(
                "volume '{}' is the root volume of instance '{}': delete the instance instead",
                v.name,
                v.instance.clone().unwrap_or_default()
            ),
        ));
    }
    if !matches!(v.state, VolumeState::Ready | VolumeState::Error) {
        return Err(Error::conflict(
            "volume_busy",
            format!("volume '{}' is {}: wait for it to finish", v.name, v.state),
        ));
    }
    super::guards::refuse_if_backing_up(app, &v, &format!("deleting volume '{}'", v.name))?;
    let attached = attached_instance(app, &v).await?;
    if let Some((inst, _)) = &attached {
        // Every recovery point covers the instance's disks as they are.
        super::guards::refuse_if_points(app, inst, &format!("deleting volume '{}'", v.name))?;
        if inst.state != InstanceState::Stopped && inst.state != InstanceState::Error {
            return Err(Error::conflict(
                "volume_in_use",
                format!(
                    "volume '{}' is attached to instance '{}', which is {}: stop the instance or detach the volume first",
                    v.name, inst.name, inst.state
                ),
            ));
        }
    }
    app.catalog.delete_volume(v.id)?;
    if let Err(e) = std::fs::remove_file(&v.path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(volume = %v.id, path = v.path, "volume deleted, its file left behind: {e}");
        }
    }
    tracing::info!(volume = %v.id, name = v.name, "volume deleted");
    Ok(())
}

/// Attach a data volume to an instance: hot-plugged when it runs, at next
/// start when it is stopped.
pub async fn attach(
    app: &App,
    account: &Account,
    reference: &str,
    instance: &str,
) -> Result<Volume> {
    let v = app.catalog.volume(account.id, reference)?;
    let inst = app.catalog.instance(account.id, instance)?;
    let _guard = app.lock_instance(inst.id).await;
    let inst = app.catalog.instance_by_id(inst.id)?;
    let v = app.catalog.volume(account.id, &v.id.to_string())?;
    if let Some(other) = &v.instance {
        return Err(Error::conflict(
            "volume_attached",
            format!(
                "volume '{}' is already attached to instance '{other}'",
                v.name
            ),
        ));
    }
    if v.kind == VolumeKind::Root {
        return Err(Error::invalid(
            "volume_is_root",
            format!(
                "volume '{}' is a root volume: only data volumes are attached",
                v.name
            ),
        ));
    }
    require_ready(&v)?;
    if v.zone_id != inst.zone_id {
        return Err(Error::invalid(
            "zone_mismatch",
            format!(
                "volume '{}' is in zone '{}' but instance '{}' is in zone '{}'",
                v.name, v.zone, inst.name, inst.zone
            ),
        ));
    }
    super::instance_rules::check_same_host(&v, &inst.host)?;
    refuse_busy(&inst)?;
    super::guards::refuse_if_points(app, &inst, &format!("attaching volume '{}'", v.name))?;
    let used: Vec<u32> = app
        .catalog
        .instance_volumes(inst.id)?
        .iter()
        .filter_map(|x| x.slot)
        .collect();
    let slot = (0..reprise_qemu::cmdline::DISK_SLOTS)
        .find(|s| !used.contains(s))
        .ok_or_else(|| {
            Error::conflict(
                "too_many_volumes",
                format!(
                    "instance '{}' already has {} volumes, the most it can hold",
                    inst.name,
                    reprise_qemu::cmdline::DISK_SLOTS
                ),
            )
        })?;
    if vm::is_live(app, inst.id) {
        vm::hot_attach(app, inst.id, v.id, v.path.as_ref(), slot).await?;
    }
    app.catalog.attach_volume(v.id, inst.id, slot)?;
    tracing::info!(volume = %v.id, instance = %inst.id, slot, "volume attached");
    show(app, account, &v.id.to_string())
}

/// Detach a data volume: hot-unplugged when its instance runs (the guest
/// must release it).
pub async fn detach(app: &App, account: &Account, reference: &str) -> Result<Volume> {
    let v = app.catalog.volume(account.id, reference)?;
    let Some((inst, _guard)) = attached_instance(app, &v).await? else {
        return Err(Error::conflict(
            "volume_not_attached",
            format!("volume '{}' is not attached to an instance", v.name),
        ));
    };
    if v.kind == VolumeKind::Root {
        return Err(Error::conflict(
            "volume_is_root",
            format!(
                "volume '{}' is the root volume of instance '{}' and cannot be detached",
                v.name, inst.name
            ),
        ));
    }
    refuse_busy(&inst)?;
    super::guards::refuse_if_points(app, &inst, &format!("detaching volume '{}'", v.name))?;
    if vm::is_live(app, inst.id) {
        vm::hot_detach(app, inst.id, v.id).await?;
    }
    app.catalog.detach_volume(v.id)?;
    tracing::info!(volume = %v.id, instance = %inst.id, "volume detached");
    show(app, account, &v.id.to_string())
}

/// Settle a volume by `mv`, saying so in the log when it was no longer in
/// a state the move leaves (something else moved it meanwhile).
pub fn settle(app: &App, id: uuid::Uuid, mv: &Move<VolumeState>) -> Result<()> {
    if !app.catalog.transition_volume(id, mv)? {
        tracing::warn!(volume = %id, "volume not settled '{}': it was no longer {:?}", mv.name, mv.from);
    }
    Ok(())
}
