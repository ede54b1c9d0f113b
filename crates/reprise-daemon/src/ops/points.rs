//! Recovery points: internal qcow2 snapshots of every volume of an
//! instance under one tag (`reprise-<point id>`), optionally with RAM and
//! device state, arranged as a tree.
//!
//! Invariants:
//! - All volumes of a point share one instant: one QMP `transaction` (or
//!   one `snapshot-save`) on a running instance, `qemu-img` on a stopped
//!   one, whose disks are still.
//! - A point's row exists before its tags (state `Creating`) and after them
//!   (state `Deleting`); a failure removes the tags it made and leaves the
//!   point in `Error` with the reason, never `Ready`. The startup pass
//!   ([`reconcile_at_startup`]) settles what a crash interrupted against
//!   what the qcow2 files hold.
//! - The tree: a point's parent is the point the instance stood at when it
//!   was taken; reverting moves the instance (`current_point_id`) without
//!   touching any other point; deleting one moves its children to its
//!   parent.
//! - While an instance has points, its set of volumes is fixed (no attach,
//!   detach or resize: see [`refuse_if_points`]), so every point covers the
//!   volumes the instance has.
//! - Nothing touches a qcow2 that a running QEMU holds except QEMU itself
//!   (QMP); `qemu-img` only runs on stopped instances.
//! - A disk-only revert moves every disk to the point or none: see
//!   [`move_every_disk`]; a crash in the middle is settled at startup to
//!   one of the two ([`settle_interrupted_revert`]).

use crate::app::App;
use crate::config::MemorySave;
use crate::jobs::{self, JobCtx, Target};
use crate::quiesce::{self, Mode};
use crate::vm;
use reprise_catalog::{now, write, InstanceRow, Scope};
use reprise_core::lifecycle::{instance, point};
use reprise_core::model::*;
use reprise_core::plan::Demand;
use reprise_core::{Error, Result};
use reprise_qemu::img::SnapshotAction;
use std::path::PathBuf;
use std::sync::Arc;
use uuid::Uuid;

/// How a memory point's state was saved (`Point::memory_save`).
const BACKGROUND: &str = "background";
const SNAPSHOT_SAVE: &str = "snapshot-save";

fn saved_in_background(p: &Point) -> bool {
    p.memory && p.memory_save.as_deref() == Some(BACKGROUND)
}

pub fn tag(point: Uuid) -> String {
    format!("reprise-{point}")
}

/// The snapshot that keeps a disk as it was before a revert to `point`,
/// for as long as the revert is not done on every disk.
fn undo_tag(point: Uuid) -> String {
    format!("reprise-undo-{point}")
}

fn volume_paths(app: &App, ids: &[Uuid]) -> Result<Vec<PathBuf>> {
    let vols = app.catalog.list_volumes_by_id(ids)?;
    Ok(ids
        .iter()
        .filter_map(|id| {
            vols.iter()
                .find(|v| v.id == *id)
                .map(|v| PathBuf::from(&v.path))
        })
        .collect())
}

/// Whether its QEMU runs: the process decides, not the recorded state
/// (see [`vm::is_live`]).
fn is_running(app: &App, inst: &InstanceRow) -> bool {
    vm::is_live(app, inst.id)
}

fn settled(inst: &InstanceRow) -> Result<()> {
    match inst.state {
        InstanceState::Running | InstanceState::Stopped => Ok(()),
        s => Err(Error::conflict(
            "instance_busy",
            format!(
                "instance '{}' is {s}: wait until it is Running or Stopped",
                inst.name
            ),
        )),
    }
}

/// Start taking a point. Every rule is checked before anything changes.
pub fn create(app: &Arc<App>, account: &Account, instance: &str, req: CreatePoint) -> Result<Job> {
    create_for(app, account, instance, req, None)
}

/// [`create`], for `policy` when a policy takes it.
pub fn create_for(
    app: &Arc<App>,
    account: &Account,
    instance: &str,
    req: CreatePoint,
    policy: Option<Uuid>,
) -> Result<Job> {
    let inst = app.catalog.instance(account.id, instance)?;
    let mode = Mode::parse(req.quiesce.as_deref())?;
    super::guards::refuse_if_snapshots_disabled(&inst)?;
    settled(&inst)?;
    let volumes = app.catalog.instance_volumes(inst.id)?;
    if volumes.is_empty() {
        return Err(Error::conflict(
            "no_volumes",
            format!(
                "instance '{}' has no volume to take a recovery point of",
                inst.name
            ),
        ));
    }
    if let Some(v) = volumes.iter().find(|v| v.state != VolumeState::Ready) {
        return Err(Error::conflict(
            "volume_busy",
            format!("volume '{}' is {}, not Ready", v.name, v.state),
        ));
    }
    let running = is_running(app, &inst);
    if req.memory && !running {
        return Err(Error::conflict(
            "instance_stopped",
            format!(
                "instance '{}' is Stopped: a recovery point with memory needs a running instance",
                inst.name
            ),
        ));
    }
    let name = super::chosen_name("recovery point", req.name.as_deref(), &inst.name, |n| {
        app.catalog.point_name_taken(account.id, n)
    })?;
    let description = req.description.unwrap_or_default();
    if description.len() > 1024 {
        return Err(Error::invalid(
            "description_invalid",
            "the description is longer than 1024 bytes",
        ));
    }
    let point = Point {
        id: Uuid::new_v4(),
        name,
        description,
        account_id: account.id,
        instance_id: inst.id,
        instance: inst.name.clone(),
        parent_id: inst.current_point_id,
        current: false,
        state: PointState::Creating,
        memory: req.memory,
        memory_save: None,
        consistency: quiesce::CRASH.into(),
        frozen_ms: None,
        volume_ids: volumes.iter().map(|v| v.id).collect(),
        size_bytes: None,
        vm_state_bytes: None,
        error: None,
        policy_id: policy,
        expires_at: None,
        created_at: now(),
        protected: req.protect,
    };
    let slot = jobs::reserve(
        app,
        account.id,
        "point.create",
        Target {
            kind: "recovery_point",
            id: point.id,
            name: &point.name,
        },
        1,
    )?;
    // The plan's limit (the instance's own plan, else its account's) is
    // counted in the transaction that records the point.
    let one_point = Demand {
        recovery_points: 1,
        protected: u64::from(req.protect),
        ..Default::default()
    };
    let scope = Scope {
        instance: Some(inst.id),
        volume: None,
    };
    app.catalog.admit(account.id, scope, &one_point, |c| {
        write::insert_point(c, &point)
    })?;
    let app2 = app.clone();
    let pid = point.id;
    let turn = app2.queue_for_instance(inst.id);
    Ok(slot.spawn(move |ctx| async move {
        let _guard = turn.wait().await;
        let point = app2.catalog.point_by_id(pid)?;
        match take(&app2, &ctx, &point, mode).await {
            Ok(t) => {
                app2.catalog.point_taken(
                    pid,
                    point.instance_id,
                    t.consistency,
                    t.stalled_ms,
                    t.memory_save,
                )?;
                ctx.progress(1, 1);
                Ok(())
            }
            Err(e) => {
                if let Err(left) = remove_snapshots(&app2, &point).await {
                    ctx.log(format!("could not remove the half-made snapshots: {left}"));
                }
                app2.catalog
                    .settle_point(pid, &point::FAILED, Some(&e.message))?;
                Err(e)
            }
        }
    }))
}

/// What taking a point did.
struct Taken {
    consistency: &'static str,
    /// How long the guest was frozen (disk-only) or paused (memory).
    stalled_ms: Option<u64>,
    /// `background` or `snapshot-save` for a memory point.
    memory_save: Option<&'static str>,
}

/// Cut the point's snapshots.
async fn take(app: &App, ctx: &JobCtx, point: &Point, mode: Mode) -> Result<Taken> {
    let inst = app.catalog.instance_by_id(point.instance_id)?;
    let tag = tag(point.id);
    let vols = &point.volume_ids;
    if !is_running(app, &inst) {
        ctx.log("the instance is stopped: snapshotting its disks with qemu-img");
        let bin = app.config.binaries();
        for path in volume_paths(app, vols)? {
            bin.snapshot(SnapshotAction::Create, &path, &tag).await?;
        }
        return Ok(Taken {
            consistency: quiesce::FILESYSTEM,
            stalled_ms: None,
            memory_save: None,
        });
    }
    if point.memory {
        return take_memory(app, ctx, &inst, point, &tag).await;
    }
    let q = quiesce::around(app, ctx, inst.id, mode, || {
        vm::snapshot_disks(app, inst.id, vols, &tag)
    })
    .await?;
    ctx.log(format!(
        "disks snapshotted in one transaction ({} consistent)",
        q.consistency
    ));
    Ok(Taken {
        consistency: q.consistency,
        stalled_ms: q.frozen_ms,
        memory_save: None,
    })
}

/// A memory point of a running instance: in the background where QEMU
/// and the kernel allow (the guest paused for an instant), else with
/// `snapshot-save` (paused while its RAM is written), as
/// `[snapshots] memory_save` says.
async fn take_memory(
    app: &App,
    ctx: &JobCtx,
    inst: &InstanceRow,
    point: &Point,
    tag: &str,
) -> Result<Taken> {
    let vols = &point.volume_ids;
    let background = match app.config.snapshots.memory_save {
        MemorySave::SnapshotSave => false,
        MemorySave::Auto => vm::background_save_available(app, inst.id).await?,
        MemorySave::Background => {
            if !vm::background_save_available(app, inst.id).await? {
                return Err(Error::unavailable(
                    "background_save_unavailable",
                    "memory_save = \"background\" is configured, but this QEMU or the host's kernel cannot save RAM in the background (userfaultfd write-protect); set memory_save = \"auto\"",
                ));
            }
            true
        }
    };
    let started = std::time::Instant::now();
    let paused = |ms: Option<u64>| ms.map(|m| m.to_string()).unwrap_or_else(|| "?".into());
    if !background {
        ctx.log("saving RAM, devices and disks (snapshot-save; the guest is paused meanwhile)");
        let paused_ms = vm::save_machine(app, inst.id, vols, tag).await?;
        ctx.log(format!(
            "machine state saved in {} ms; the guest was paused {} ms",
            started.elapsed().as_millis(),
            paused(paused_ms)
        ));
        return Ok(Taken {
            consistency: "memory",
            stalled_ms: paused_ms,
            memory_save: Some(SNAPSHOT_SAVE),
        });
    }
    ctx.log("saving RAM and devices in the background (the guest runs on)");
    let state = app.config.point_state_path(inst.id, point.id);
    let dir = app.config.point_state_dir(inst.id);
    std::fs::create_dir_all(&dir)
        .map_err(crate::io_err(format!("cannot create {}", dir.display())))?;
    let paused_ms = vm::save_machine_background(app, inst.id, vols, tag, &state).await?;
    // Ready means durable: the state file, its entry and the directories
    // made for it are synced first.
    let synced = state.clone();
    tokio::task::spawn_blocking(move || {
        reprise_qemu::img::sync_file_and_dir(&synced)?;
        let dir = synced.parent().unwrap_or(&synced);
        reprise_qemu::img::sync_file_and_dir(dir)?;
        reprise_qemu::img::sync_file_and_dir(dir.parent().unwrap_or(dir))
    })
    .await
    .map_err(|e| Error::internal(format!("syncing the machine state: {e}")))??;
    ctx.log(format!(
        "machine state written in {} ms while the guest ran; it was paused {} ms",
        started.elapsed().as_millis(),
        paused(paused_ms)
    ));
    Ok(Taken {
        consistency: "memory",
        stalled_ms: paused_ms,
        memory_save: Some(BACKGROUND),
    })
}

/// Remove what a point holds: its machine state file, if it has one, and
/// its tag from its volumes, wherever it exists (over QMP while the
/// instance runs, with qemu-img otherwise).
async fn remove_snapshots(app: &App, point: &Point) -> Result<()> {
    let state = app.config.point_state_path(point.instance_id, point.id);
    match std::fs::remove_file(&state) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(crate::io_err(format!("cannot remove {}", state.display()))(
                e,
            ));
        }
    }
    let tag = tag(point.id);
    let inst = app.catalog.instance_by_id(point.instance_id)?;
    let vols = app.catalog.list_volumes_by_id(&point.volume_ids)?;
    let bin = app.config.binaries();
    let mut holders = Vec::new();
    for v in &vols {
        let tags = bin.snapshot_tags(v.path.as_ref()).await?;
        if tags.contains(&tag) {
            holders.push(v);
        }
    }
    if holders.is_empty() {
        return Ok(());
    }
    if is_running(app, &inst) {
        let ids: Vec<Uuid> = holders.iter().map(|v| v.id).collect();
        return vm::delete_tag_live(app, inst.id, &ids, &tag).await;
    }
    for v in holders {
        bin.snapshot(SnapshotAction::Delete, v.path.as_ref(), &tag)
            .await?;
    }
    Ok(())
}

/// The points of an instance with the space each holds and, for those a
/// policy took, when its retention will remove them; of one policy when
/// `policy` is given.
pub async fn list(
    app: &App,
    account: &Account,
    instance: &str,
    policy: Option<&str>,
) -> Result<Vec<Point>> {
    let inst = app.catalog.instance(account.id, instance)?;
    let mut points = app.catalog.list_points(Some(inst.id))?;
    if let Some(p) = policy {
        let p = app.catalog.policy(account.id, p)?;
        points.retain(|pt| pt.policy_id == Some(p.id));
    }
    let when =
        super::policies::expiries(app, app.catalog.list_policies(account.id, Some(inst.id))?)?;
    for p in &mut points {
        p.expires_at = when.get(&p.id).copied();
    }
    let volumes = app.catalog.instance_volumes(inst.id)?;
    let paths: Vec<String> = volumes.iter().map(|v| v.path.clone()).collect();
    let tags: Vec<String> = points.iter().map(|p| tag(p.id)).collect();
    // Reading qcow2 metadata is blocking file I/O.
    let sizes = tokio::task::spawn_blocking(move || space_held(&paths, &tags))
        .await
        .map_err(|e| Error::internal(format!("reading the points' sizes: {e}")).with_source(e))?;
    for (p, (held, vmstate)) in points.iter_mut().zip(sizes) {
        p.size_bytes = held;
        p.vm_state_bytes = vmstate;
        if saved_in_background(p) {
            // The state is a file of its own, beside the volumes.
            let file = std::fs::metadata(app.config.point_state_path(inst.id, p.id))
                .map(|m| m.len())
                .ok();
            p.vm_state_bytes = file;
            p.size_bytes = held.zip(file).map(|(h, f)| h + f);
        }
    }
    Ok(points)
}

/// For each tag: the bytes it alone holds across the volumes, and its saved
/// machine state size; `None` where the files cannot be read.
fn space_held(paths: &[String], tags: &[String]) -> Vec<(Option<u64>, Option<u64>)> {
    let images: Vec<_> = paths
        .iter()
        .filter_map(|p| {
            std::fs::File::open(p)
                .ok()
                .and_then(|f| reprise_qcow2::Image::open(f).ok())
        })
        .collect();
    tags.iter()
        .map(|t| {
            let mut held = 0;
            let mut vmstate = 0;
            for img in &images {
                if img.snapshot(t).is_none() {
                    continue;
                }
                match img.exclusive_bytes(t) {
                    Ok(b) => held += b,
                    Err(_) => return (None, None),
                }
                vmstate += img.snapshot(t).map(|s| s.vm_state_size).unwrap_or(0);
            }
            (Some(held), Some(vmstate))
        })
        .collect()
}

pub async fn show(app: &App, account: &Account, instance: &str, point: &str) -> Result<Point> {
    let inst = app.catalog.instance(account.id, instance)?;
    let p = app.catalog.point(inst.id, point)?;
    list(app, account, &inst.id.to_string(), None)
        .await?
        .into_iter()
        .find(|x| x.id == p.id)
        .ok_or_else(|| Error::not_found("recovery point", point).with_code("point_not_found"))
}

/// Revert an instance to a point, keeping every other point.
pub fn revert(app: &Arc<App>, account: &Account, instance: &str, point: &str) -> Result<Job> {
    let inst = app.catalog.instance(account.id, instance)?;
    let p = app.catalog.point(inst.id, point)?;
    settled(&inst)?;
    let slot = jobs::reserve(
        app,
        account.id,
        "point.revert",
        Target {
            kind: "recovery_point",
            id: p.id,
            name: &p.name,
        },
        1,
    )?;
    if !app.catalog.transition_point(p.id, &point::REVERT)? {
        return Err(Error::conflict(
            "point_busy",
            format!("recovery point '{}' is {}, not Ready", p.name, p.state),
        ));
    }
    let app2 = app.clone();
    let turn = app2.queue_for_instance(p.instance_id);
    Ok(slot.spawn(move |ctx| async move {
        let _guard = turn.wait().await;
        let result = go_back(&app2, &ctx, &p).await;
        app2.catalog.settle_point(p.id, &point::REVERTED, None)?;
        result?;
        app2.catalog.set_current_point(p.instance_id, Some(p.id))?;
        ctx.progress(1, 1);
        Ok(())
    }))
}

async fn go_back(app: &App, ctx: &JobCtx, p: &Point) -> Result<()> {
    let inst = app.catalog.instance_by_id(p.instance_id)?;
    let tag = tag(p.id);
    let was_running = is_running(app, &inst);
    if saved_in_background(p) {
        return resume_saved_state(app, ctx, &inst, p, was_running).await;
    }
    if p.memory {
        if !was_running {
            ctx.log("starting QEMU paused to load the saved machine state");
            launch_for_revert(app, &inst, vm::Launch::Paused).await?;
        }
        ctx.log("loading RAM, devices and disks (snapshot-load)");
        vm::load_machine(app, inst.id, &p.volume_ids, &tag).await?;
        ctx.log("the instance runs from the recovery point");
        return Ok(());
    }
    let why = "a disk-only point needs a reboot";
    move_disks_to(app, ctx, &inst, p, was_running, why).await?;
    if was_running {
        ctx.log("starting the instance again");
        crate::vm::boot_stopped(app, ctx, inst.id).await?;
    }
    Ok(())
}

/// Launch QEMU for a revert, the instance Running from then on.
async fn launch_for_revert(app: &App, inst: &InstanceRow, how: vm::Launch) -> Result<()> {
    let accel = vm::preflight(app)?;
    app.catalog.transition_instance(inst.id, &instance::BOOT)?;
    match vm::launch_with(app, inst, accel, how).await {
        Ok(pid) => app.catalog.set_instance_runtime(
            inst.id,
            InstanceState::Running,
            Some(pid),
            Some(accel.as_str()),
            None,
        ),
        Err(e) => {
            stopped_because(app, inst.id, &e.message)?;
            Err(e)
        }
    }
}

/// A point saved in the background: its disks put back with the instance
/// stopped, then a fresh QEMU loads its RAM and devices from the state
/// file and runs on from that instant.
async fn resume_saved_state(
    app: &App,
    ctx: &JobCtx,
    inst: &InstanceRow,
    p: &Point,
    was_running: bool,
) -> Result<()> {
    let state = app.config.point_state_path(inst.id, p.id);
    if !state.exists() {
        return Err(Error::new(
            reprise_core::ErrorKind::Corrupt,
            "point_state_missing",
            format!(
                "recovery point '{}' has lost its machine state file: delete it",
                p.name
            ),
        ));
    }
    let why = "its disks go back while it is stopped, then a fresh QEMU loads its saved state";
    move_disks_to(app, ctx, inst, p, was_running, why).await?;
    ctx.log("starting QEMU to load the saved machine state (migrate-incoming)");
    launch_for_revert(app, inst, vm::Launch::Incoming).await?;
    if let Err(e) = vm::load_machine_file(app, inst.id, &state).await {
        let reason = format!(
            "the machine state of recovery point '{}' could not be loaded ({}); its disks are at the point: start the instance to boot from them",
            p.name, e.message
        );
        ctx.log(&reason);
        app.catalog
            .transition_instance(inst.id, &instance::POWER_OFF)?;
        vm::power_off(app, inst.id, true, ctx).await?;
        stopped_because(app, inst.id, &reason)?;
        return Err(e);
    }
    ctx.log("the instance runs from the recovery point");
    Ok(())
}

/// Put every disk of the instance at the point, or none (the instance
/// powered off first when it runs); on failure it stays stopped and says
/// why.
async fn move_disks_to(
    app: &App,
    ctx: &JobCtx,
    inst: &InstanceRow,
    p: &Point,
    was_running: bool,
    why: &str,
) -> Result<()> {
    if was_running {
        ctx.log(format!("powering the instance off: {why}"));
        app.catalog
            .transition_instance(inst.id, &instance::POWER_OFF)?;
        vm::power_off(app, inst.id, true, ctx).await?;
        app.catalog
            .set_instance_runtime(inst.id, InstanceState::Stopped, None, None, None)?;
    }
    // While the disks move the instance stands at no point: at startup,
    // a current point equal to this one means every disk got there.
    app.catalog.set_current_point(inst.id, None)?;
    let paths = volume_paths(app, &p.volume_ids)?;
    if let Err(e) = move_every_disk(app, ctx, &paths, &tag(p.id), &undo_tag(p.id)).await {
        app.catalog
            .set_current_point(inst.id, inst.current_point_id)?;
        let reason = format!(
            "the revert to recovery point '{}' failed and was undone: {}",
            p.name, e.message
        );
        ctx.log(format!("{reason}; the instance stays stopped"));
        stopped_because(app, inst.id, &reason)?;
        return Err(e);
    }
    app.catalog.set_current_point(inst.id, Some(p.id))?;
    drop_tag(app, &paths, &undo_tag(p.id)).await;
    ctx.log("every volume is back at the recovery point");
    Ok(())
}

/// Move every disk of a stopped instance to `tag`, or none: each disk is
/// first kept as it is (`undo`), then each moves; if one cannot, those
/// that moved go back to `undo`. The undo snapshots stay when this
/// returns Ok (the caller records the move, then drops them) and go when
/// it fails; when even going back fails they stay, for the startup pass.
async fn move_every_disk(
    app: &App,
    ctx: &JobCtx,
    paths: &[PathBuf],
    tag: &str,
    undo: &str,
) -> Result<()> {
    let bin = app.config.binaries();
    for (i, path) in paths.iter().enumerate() {
        if let Err(e) = bin.snapshot(SnapshotAction::Create, path, undo).await {
            drop_tag(app, &paths[..i], undo).await;
            return Err(e);
        }
    }
    for (i, path) in paths.iter().enumerate() {
        let Err(e) = bin.snapshot(SnapshotAction::Apply, path, tag).await else {
            continue;
        };
        ctx.log(format!(
            "disk {} of {} could not be reverted ({}): putting the others back",
            i + 1,
            paths.len(),
            e.message
        ));
        for back in &paths[..=i] {
            if let Err(stuck) = bin.snapshot(SnapshotAction::Apply, back, undo).await {
                return Err(Error::internal(format!(
                    "a revert failed ({}) and a disk could not be put back ({}): the next start of the daemon puts every disk back",
                    e.message, stuck.message
                ))
                .with_code("revert_stuck"));
            }
        }
        drop_tag(app, paths, undo).await;
        return Err(e);
    }
    Ok(())
}

/// The instance is stopped, and says why.
fn stopped_because(app: &App, id: Uuid, reason: &str) -> Result<()> {
    app.catalog
        .set_instance_runtime(id, InstanceState::Stopped, None, None, Some(reason))
}

/// Remove `tag` from the disks that have it; what cannot be removed is
/// left for the startup pass.
async fn drop_tag(app: &App, paths: &[PathBuf], tag: &str) {
    let bin = app.config.binaries();
    for path in paths {
        let has = bin
            .snapshot_tags(path)
            .await
            .map(|t| t.iter().any(|x| x == tag))
            .unwrap_or(false);
        if has {
            if let Err(e) = bin.snapshot(SnapshotAction::Delete, path, tag).await {
                tracing::warn!(path = %path.display(), tag, "left for the next start: {e}");
            }
        }
    }
}

/// At startup, a disk-only revert a crash interrupted: if the catalog says
/// it reached the point, every disk did (leftover undo snapshots go);
/// otherwise every disk goes back to how it was before it (when each was
/// kept) and the instance says why it stays stopped.
async fn settle_interrupted_revert(app: &App, p: &Point) -> Result<()> {
    let inst = app.catalog.instance_by_id(p.instance_id)?;
    let paths = volume_paths(app, &p.volume_ids)?;
    let undo = undo_tag(p.id);
    let bin = app.config.binaries();
    let mut kept = 0;
    for path in &paths {
        if bin.snapshot_tags(path).await?.contains(&undo) {
            kept += 1;
        }
    }
    if inst.current_point_id == Some(p.id) {
        tracing::warn!(point = %p.id, "an interrupted revert had reached every disk");
        drop_tag(app, &paths, &undo).await;
        return Ok(());
    }
    if kept == paths.len() && kept > 0 {
        for path in &paths {
            bin.snapshot(SnapshotAction::Apply, path, &undo).await?;
        }
    }
    drop_tag(app, &paths, &undo).await;
    let reason = format!(
        "the revert to recovery point '{}' was interrupted: every disk is as it was before it",
        p.name
    );
    tracing::warn!(point = %p.id, instance = %inst.id, "{reason}");
    if !vm::is_live(app, inst.id) {
        stopped_because(app, inst.id, &reason)?;
    }
    Ok(())
}

/// At startup, a memory revert a crash cut after QEMU was started to load
/// the state but before the guest ran: that QEMU waits forever (incoming,
/// or paused); it is stopped, and the instance says why.
async fn stop_unloaded_machine(app: &App, p: &Point) -> Result<()> {
    if !vm::is_live(app, p.instance_id) {
        return Ok(());
    }
    let state = match vm::qmp(app, p.instance_id).await {
        Ok(mut q) => q.run_state().await.unwrap_or_else(|_| "unknown".into()),
        Err(_) => "unknown".into(),
    };
    if state == "running" {
        return Ok(());
    }
    if let Some(pid) = vm::live_pid(app, p.instance_id) {
        reprise_qemu::process::kill(pid, p.instance_id);
        reprise_qemu::process::wait_exit(pid, p.instance_id, std::time::Duration::from_secs(10))
            .await;
    }
    let reason = format!(
        "the revert to recovery point '{}' was interrupted before the guest ran again (QEMU was {state}): start the instance to boot from its disks",
        p.name
    );
    tracing::warn!(point = %p.id, instance = %p.instance_id, "{reason}");
    stopped_because(app, p.instance_id, &reason)
}

/// Delete one point (its children move to its parent).
pub fn delete(app: &Arc<App>, account: &Account, instance: &str, point: &str) -> Result<Job> {
    let inst = app.catalog.instance(account.id, instance)?;
    let p = app.catalog.point(inst.id, point)?;
    settled(&inst)?;
    refuse_if_protected(&inst, std::slice::from_ref(&p))?;
    let points = vec![p];
    let slot = reserve_delete(app, account, &inst, &points)?;
    let p = &points[0];
    if !app.catalog.transition_point(p.id, &point::DELETE)? {
        return Err(Error::conflict(
            "point_busy",
            format!("recovery point '{}' is {}", p.name, p.state),
        ));
    }
    Ok(spawn_delete(app, slot, &inst, points))
}

/// Delete every point of an instance.
pub fn delete_all(app: &Arc<App>, account: &Account, instance: &str) -> Result<Job> {
    let inst = app.catalog.instance(account.id, instance)?;
    settled(&inst)?;
    let points = app.catalog.list_points(Some(inst.id))?;
    if let Some(busy) = points
        .iter()
        .find(|p| !matches!(p.state, PointState::Ready | PointState::Error))
    {
        return Err(Error::conflict(
            "point_busy",
            format!("recovery point '{}' is {}", busy.name, busy.state),
        ));
    }
    refuse_if_protected(&inst, &points)?;
    let slot = reserve_delete(app, account, &inst, &points)?;
    for p in &points {
        app.catalog.settle_point(p.id, &point::DELETE, None)?;
    }
    Ok(spawn_delete(app, slot, &inst, points))
}

/// Refuse to delete protected points, naming them.
pub(crate) fn refuse_if_protected(inst: &InstanceRow, points: &[Point]) -> Result<()> {
    let names: Vec<&str> = points
        .iter()
        .filter(|p| p.protected)
        .map(|p| p.name.as_str())
        .collect();
    if names.is_empty() {
        return Ok(());
    }
    Err(Error::conflict(
        "point_protected",
        format!(
            "recovery point{} {} of instance '{}' {} protected: unprotect {} first",
            if names.len() == 1 { "" } else { "s" },
            names
                .iter()
                .map(|n| format!("'{n}'"))
                .collect::<Vec<_>>()
                .join(", "),
            inst.name,
            if names.len() == 1 { "is" } else { "are" },
            if names.len() == 1 { "it" } else { "them" },
        ),
    ))
}

/// Protect a recovery point (within the plan's `max_protected`) or lift
/// its protection.
pub async fn protect(
    app: &App,
    account: &Account,
    instance: &str,
    point: &str,
    req: Protection,
) -> Result<Point> {
    let inst = app.catalog.instance(account.id, instance)?;
    let p = app.catalog.point(inst.id, point)?;
    super::deletes::set_protected(app, account, "points", p.id, p.protected, req.protected).await?;
    app.catalog.point_by_id(p.id)
}

/// The job of a delete: `point.delete` of one point, `point.delete_all`
/// of the instance's.
fn reserve_delete(
    app: &Arc<App>,
    account: &Account,
    inst: &InstanceRow,
    points: &[Point],
) -> Result<jobs::Slot> {
    let (kind, target) = match points {
        [one] => (
            "point.delete",
            Target {
                kind: "recovery_point",
                id: one.id,
                name: &one.name,
            },
        ),
        _ => (
            "point.delete_all",
            Target {
                kind: "instance",
                id: inst.id,
                name: &inst.name,
            },
        ),
    };
    jobs::reserve(app, account.id, kind, target, points.len() as u64)
}

fn spawn_delete(app: &Arc<App>, slot: jobs::Slot, inst: &InstanceRow, points: Vec<Point>) -> Job {
    let app2 = app.clone();
    let id = inst.id;
    let total = points.len() as u64;
    let turn = app2.queue_for_instance(id);
    slot.spawn(move |ctx| async move {
        let _guard = turn.wait().await;
        for (i, p) in points.iter().enumerate() {
            if let Err(e) = remove_snapshots(&app2, p).await {
                let why = format!("its snapshots could not all be removed ({e}): delete it again");
                app2.catalog
                    .settle_point(p.id, &point::FAILED, Some(&why))?;
                return Err(Error::unavailable(
                    "point_delete_failed",
                    format!("recovery point '{}': {why}", p.name),
                ));
            }
            app2.catalog.remove_point(p.id)?;
            ctx.log(format!("recovery point '{}' deleted", p.name));
            ctx.progress(i as u64 + 1, total);
        }
        Ok(())
    })
}

/// At startup: points a crash left half-made or half-deleted are settled
/// from what the qcow2 files hold, and Ready points whose snapshots are
/// gone are flagged.
pub async fn reconcile_at_startup(app: &App) -> Result<()> {
    let bin = app.config.binaries();
    let here: std::collections::HashSet<Uuid> = app
        .catalog
        .local_instances()?
        .iter()
        .map(|i| i.id)
        .collect();
    for p in app.catalog.list_points(None)? {
        if !here.contains(&p.instance_id) {
            continue; // another host's
        }
        if p.state == PointState::Reverting && p.memory {
            stop_unloaded_machine(app, &p).await?;
        }
        // A revert that moves disks with the instance stopped (every one
        // but a `snapshot-save` point's) may have been cut in the middle.
        if p.state == PointState::Reverting && (!p.memory || saved_in_background(&p)) {
            settle_interrupted_revert(app, &p).await?;
        }
        let tag = tag(p.id);
        let mut present = 0;
        let paths = volume_paths(app, &p.volume_ids)?;
        for path in &paths {
            if bin
                .snapshot_tags(path)
                .await
                .map(|t| t.contains(&tag))
                .unwrap_or(false)
            {
                present += 1;
            }
        }
        let complete = present == p.volume_ids.len() && paths.len() == p.volume_ids.len();
        let state_file_lost =
            saved_in_background(&p) && !app.config.point_state_path(p.instance_id, p.id).exists();
        let (state, error) = match (p.state, complete) {
            (PointState::Ready | PointState::Reverting, true) if state_file_lost => (
                PointState::Error,
                Some("its machine state file is missing: it cannot be reverted to; delete it"),
            ),
            (PointState::Ready | PointState::Reverting, true) => (PointState::Ready, None),
            (PointState::Ready | PointState::Reverting, false) => (
                PointState::Error,
                Some("its snapshot is missing from a volume: it cannot be reverted to; delete it"),
            ),
            (PointState::Creating, _) => {
                // Half-made: its snapshots go, and so does its row.
                match remove_snapshots(app, &p).await {
                    Ok(()) => {
                        tracing::warn!(point = %p.id, name = p.name, "half-made recovery point removed");
                        app.catalog.remove_point(p.id)?;
                        continue;
                    }
                    Err(_) => (
                        PointState::Error,
                        Some("the daemon stopped while this point was taken; delete it"),
                    ),
                }
            }
            (PointState::Deleting, _) => (
                PointState::Error,
                Some("the daemon stopped while this point was deleted; delete it again"),
            ),
            (PointState::Error, _) => continue,
        };
        if state != p.state || error.is_some() {
            tracing::warn!(point = %p.id, name = p.name, ?state, "recovery point reconciled");
            app.catalog.set_point_state(p.id, state, error)?;
        }
    }
    Ok(())
}
