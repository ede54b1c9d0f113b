//! Volume snapshots: a copy of one volume at one instant in the region's
//! object store ([`reprise_backup`] moves the data).
//!
//! A snapshot is cut as an internal qcow2 snapshot of the volume, tagged
//! `reprise-vs-<snapshot id>` (QMP while its instance runs, qemu-img
//! otherwise): milliseconds, with the volume `Snapshotting`. Its data then
//! goes to the store while the instance runs on (`BackingUp`).
//!
//! Invariants:
//! - The snapshot's row exists (BackingUp) before its tag, and its
//!   manifest is written only after its index and chunks: `BackedUp` means
//!   complete in the store. A failure removes the tag, the references and
//!   any object written, and leaves the snapshot `Error` with the reason.
//! - A volume keeps exactly one tag between backups: that of its last
//!   backed-up snapshot (`volumes.snapshot_base_id`), the base of the next
//!   increment, compared table by table. Nothing is kept in memory, so
//!   increments survive VM and daemon restarts. Resizing the volume drops
//!   the base (qcow2 cannot resize with internal snapshots): the next
//!   snapshot reads everything, and stores only what the region lacks.
//! - One backup per volume at a time; a volume with a backup running is
//!   not resized or deleted (its tag is being read).

use super::guards::refuse_if_backing_up;
use crate::app::App;
use crate::jobs::{self, JobCtx, Target};
use crate::quiesce::{self, Mode};
use crate::vm;
use reprise_backup::backup::{self as engine, Base};
use reprise_backup::snapshot::{self as transaction, Cut, Origin, References};
use reprise_catalog::{now, write, BackupStats, Scope, VolumeRow};
use reprise_chunks::manifest::StoredKind;
use reprise_core::lifecycle::{snapshot, volume};
use reprise_core::model::*;
use reprise_core::plan::Demand;
use reprise_core::{Error, Result};
use reprise_qemu::img::SnapshotAction;
use std::sync::Arc;
use uuid::Uuid;

pub fn tag(snapshot: Uuid) -> String {
    format!("reprise-vs-{snapshot}")
}

const TAG_PREFIX: &str = "reprise-vs-";

/// The instance a volume is attached to, and whether its QEMU runs.
fn holder(app: &App, v: &VolumeRow) -> Result<Option<(reprise_catalog::InstanceRow, bool)>> {
    let Some(id) = v.instance_id else {
        return Ok(None);
    };
    let inst = app.catalog.instance_by_id(id)?;
    let running = vm::is_live(app, inst.id);
    Ok(Some((inst, running)))
}

/// Start a snapshot of a volume. Every rule is checked before anything
/// changes.
pub fn create(app: &Arc<App>, account: &Account, req: CreateSnapshot) -> Result<Job> {
    create_for(app, account, req, None)
}

/// [`create`], for `policy` when a policy takes it.
pub fn create_for(
    app: &Arc<App>,
    account: &Account,
    req: CreateSnapshot,
    policy: Option<Uuid>,
) -> Result<Job> {
    let v = app.catalog.volume(account.id, &req.volume)?;
    let mode = Mode::parse(req.quiesce.as_deref())?;
    let id = Uuid::new_v4();
    let slot = jobs::reserve(
        app,
        account.id,
        "snapshot.create",
        Target {
            kind: "snapshot",
            id,
            name: req.name.as_deref().unwrap_or(&v.name),
        },
        0,
    )?;
    let snap = prepare(
        app,
        account,
        &v,
        id,
        req.name.as_deref(),
        policy,
        req.protect,
    )?;
    let app2 = app.clone();
    Ok(slot.spawn(move |ctx| async move {
        let result = async {
            // Nothing is cut while the store is unreachable.
            app2.region().await?;
            let consistency = cut(&app2, &ctx, &[snap], mode).await?;
            back_up(&app2, &ctx, id, consistency).await
        }
        .await;
        if let Err(e) = &result {
            fail(&app2, &ctx, id, &e.message).await;
        }
        result
    }))
}

/// Check that a volume can be snapshotted now and record its snapshot
/// `id` (BackingUp, `protect`ed when asked), counted against the
/// account's plan; the caller cuts and backs it up.
pub fn prepare(
    app: &App,
    account: &Account,
    v: &VolumeRow,
    id: Uuid,
    name: Option<&str>,
    policy: Option<Uuid>,
    protect: bool,
) -> Result<Snapshot> {
    if v.state != VolumeState::Ready {
        return Err(Error::conflict(
            "volume_busy",
            format!("volume '{}' is {}, not Ready", v.name, v.state),
        ));
    }
    if let Some((inst, _)) = holder(app, v)? {
        super::guards::refuse_if_snapshots_disabled(&inst)?;
        if !matches!(inst.state, InstanceState::Running | InstanceState::Stopped) {
            return Err(Error::conflict(
                "instance_busy",
                format!(
                    "instance '{}' is {}: wait until it is Running or Stopped",
                    inst.name, inst.state
                ),
            ));
        }
    }
    refuse_if_backing_up(app, v, &format!("another snapshot of volume '{}'", v.name))?;
    let name = super::chosen_name("snapshot", name, &v.name, |n| {
        app.catalog.snapshot_name_taken(account.id, n)
    })?;
    let base_id = app.catalog.volume_snapshot_base(v.id)?.filter(|b| {
        app.catalog
            .snapshot_by_id(*b)
            .is_ok_and(|s| s.state == SnapshotState::BackedUp)
    });
    let snap = Snapshot {
        id,
        name,
        account_id: account.id,
        volume_id: v.id,
        volume: v.name.clone(),
        zone: v.zone.clone(),
        state: SnapshotState::BackingUp,
        size_bytes: v.size_bytes,
        consistency: quiesce::CRASH.into(),
        base_id,
        progress_done: 0,
        progress_total: 0,
        written_bytes: None,
        stored_bytes: None,
        new_bytes: None,
        read_bytes: None,
        chunk_count: None,
        dedup_ratio: None,
        error: None,
        policy_id: policy,
        expires_at: None,
        created_at: now(),
        completed_at: None,
        verified_at: None,
        protected: protect,
        deleted_at: None,
        purge_after: None,
    };
    let one_snapshot = Demand {
        snapshots: 1,
        protected: u64::from(protect),
        ..Default::default()
    };
    let scope = Scope {
        instance: None,
        volume: Some(v.id),
    };
    let recorded = app.catalog.admit(account.id, scope, &one_snapshot, |c| {
        write::insert_snapshot(c, &snap)
    })?;
    if !recorded {
        // Another request won the race: name its snapshot.
        refuse_if_backing_up(app, v, &format!("another snapshot of volume '{}'", v.name))?;
        return Err(Error::conflict(
            "snapshot_in_progress",
            format!("a snapshot of volume '{}' is backing up", v.name),
        ));
    }
    Ok(snap)
}

/// Back up a snapshot whose instant is cut, and record it.
pub async fn back_up(app: &App, ctx: &JobCtx, id: Uuid, consistency: &str) -> Result<()> {
    crate::binding::may_write(app).await?;
    let snap = app.catalog.snapshot_by_id(id)?;
    app.catalog.set_snapshot_consistency(id, consistency)?;
    let v = volume_by_id(app, snap.volume_id)?;

    // A base being deleted is not used. Checked after this snapshot's row
    // exists: a delete that starts later sees the row and is refused (see
    // `delete`), so the base's tag stays while the backup reads it.
    let base_id = snap.base_id.filter(|b| {
        app.catalog
            .snapshot_by_id(*b)
            .is_ok_and(|s| s.state == SnapshotState::BackedUp)
    });
    let base = match base_id {
        Some(b) => match load_base(app, b).await {
            Ok(base) => Some(base),
            Err(e) => {
                ctx.log(format!(
                    "the base snapshot cannot be used ({e}): reading everything"
                ));
                None
            }
        },
        None => None,
    };
    ctx.log(match &base {
        Some(_) => "backing up the clusters changed since the base snapshot",
        None => "backing up every written cluster",
    });
    let started = std::time::Instant::now();
    // Progress goes to the catalog at most five times a second.
    let cut = Cut {
        image: v.path.clone().into(),
        tag: tag(id),
        base,
    };
    let instance = match v.instance_id {
        Some(i) => Some(app.catalog.instance_by_id(i)?),
        None => None,
    };
    let origin = Origin {
        snapshot_id: id,
        name: snap.name.clone(),
        volume_id: snap.volume_id,
        volume_name: snap.volume.clone(),
        zone: snap.zone.clone(),
        consistency: consistency.to_string(),
        created_at: snap.created_at,
        owner: Some(super::recovery::owner(
            app,
            snap.account_id,
            StoredKind::Snapshot,
            |o| {
                o.instance_id = instance.as_ref().map(|i| i.id);
                o.instance_name = instance.map(|i| i.name);
                o.policy_id = snap.policy_id;
            },
        )?),
    };
    // The references are recorded where garbage collection looks before
    // the index and manifest are written; then the snapshot is BackedUp.
    let record = |r: &References| {
        let names: Vec<[u8; 32]> = r.chunks.iter().map(|n| n.0).collect();
        let sizes: Vec<([u8; 32], u64)> = r.sizes.iter().map(|(n, s)| (n.0, *s)).collect();
        app.catalog.record_snapshot_chunks(id, &names, &sizes)?;
        app.catalog.snapshot_stored_bytes(id)
    };
    let done = transaction::take(
        app.region().await?,
        &app.refs,
        cut,
        origin,
        record,
        |done, total| {
            ctx.progress_also(done, total, move |catalog| {
                let _ = catalog.set_snapshot_progress(id, done, total);
            })
        },
    )
    .await?;
    let m = &done.manifest;
    // What it added to the store says whether another account holds a
    // chunk: the operator's log has it, the tenant reads what it added to
    // its own account.
    let new_to_account = app.catalog.bytes_new_to_account(id, v.account_id, false)?;
    tracing::info!(
        snapshot = %id,
        new_chunks = done.new_chunks,
        uploaded_bytes = m.new_bytes,
        "backed up"
    );
    ctx.log(format!(
        "read {} MiB in {} ms; {} bytes new to the account",
        done.read_bytes >> 20,
        started.elapsed().as_millis(),
        new_to_account
    ));
    let stats = BackupStats {
        written_bytes: m.written_bytes,
        stored_bytes: m.stored_bytes,
        new_bytes: new_to_account,
        read_bytes: done.read_bytes,
        chunk_count: m.chunk_count,
        positions: done.index.entries.len() as u64,
        base_id: m.base_snapshot_id,
    };
    let previous = app.catalog.snapshot_backed_up(id, v.id, &stats)?;
    app.metrics.backed_up(stats.read_bytes, m.new_bytes);
    crate::binding::recorded(app).await;
    ctx.log("backed up: every chunk, the index and the manifest are in the region's store");
    // The previous base's tag is no longer needed.
    if let Some(prev) = previous.filter(|p| *p != id) {
        if let Err(e) = remove_tag(app, &v, &tag(prev)).await {
            ctx.log(format!("the previous base could not be removed from the volume ({e}); it will be at the next restart"));
        }
    }
    Ok(())
}

/// Cut the internal snapshots of these snapshots' volumes at one instant
/// (the volumes of one instance, or one volume); returns the consistency.
pub async fn cut(app: &App, ctx: &JobCtx, snaps: &[Snapshot], mode: Mode) -> Result<&'static str> {
    let vols = snaps
        .iter()
        .map(|s| volume_by_id(app, s.volume_id))
        .collect::<Result<Vec<_>>>()?;
    let _guard = match vols.first().and_then(|v| v.instance_id) {
        Some(i) => Some(app.lock_instance(i).await),
        None => None,
    };
    let mut marked = Vec::new();
    let mut result = Ok(quiesce::CRASH);
    for v in &vols {
        if !app.catalog.transition_volume(v.id, &volume::CUT)? {
            result = Err(Error::conflict(
                "volume_busy",
                format!("volume '{}' is not Ready", v.name),
            ));
            break;
        }
        marked.push(v.id);
    }
    if result.is_ok() {
        let tagged: Vec<(Uuid, String)> = vols
            .iter()
            .zip(snaps)
            .map(|(v, s)| (v.id, tag(s.id)))
            .collect();
        result = async {
            match holder(app, &vols[0])? {
                Some((inst, true)) => {
                    let q = quiesce::around(app, ctx, inst.id, mode, || {
                        vm::snapshot_disks_tagged(app, inst.id, &tagged)
                    })
                    .await?;
                    ctx.log(format!(
                        "instant cut over QMP ({} consistent)",
                        q.consistency
                    ));
                    Ok(q.consistency)
                }
                _ => {
                    let bin = app.config.binaries();
                    for (v, (_, tag)) in vols.iter().zip(&tagged) {
                        bin.snapshot(SnapshotAction::Create, v.path.as_ref(), tag)
                            .await?;
                    }
                    ctx.log("instant cut with qemu-img (the volumes are not in use)");
                    Ok(quiesce::FILESYSTEM)
                }
            }
        }
        .await;
    }
    for id in marked {
        super::volumes::settle(app, id, &volume::CUT_DONE)?;
    }
    result
}

pub(crate) fn volume_by_id(app: &App, id: Uuid) -> Result<VolumeRow> {
    app.catalog
        .list_volumes_by_id(&[id])?
        .into_iter()
        .next()
        .ok_or_else(|| Error::not_found("volume", &id.to_string()).with_code("volume_not_found"))
}

async fn load_base(app: &App, base: Uuid) -> Result<Base> {
    let manifest = app.region().await?.manifest(base).await?;
    let index = app.region().await?.index(&manifest).await?;
    Ok(Base {
        snapshot_id: base,
        tag: tag(base),
        index,
    })
}

/// A backup failed: undo what it made, say why.
pub async fn fail(app: &App, ctx: &JobCtx, id: Uuid, why: &str) {
    let undo = async {
        let snap = app.catalog.snapshot_by_id(id)?;
        if let Ok(v) = volume_by_id(app, snap.volume_id) {
            remove_tag(app, &v, &tag(id)).await?;
        }
        app.catalog.drop_snapshot_chunks(id)?;
        engine::remove(app.region().await?, id).await
    };
    if let Err(e) = undo.await {
        ctx.log(format!(
            "could not undo everything ({e}): the next restart will"
        ));
    }
    let _ = app
        .catalog
        .settle_snapshot(id, &snapshot::BACKUP_FAILED, Some(why));
}

/// Remove a tag from a volume if it holds it: over QMP while its instance
/// runs, with qemu-img otherwise. Takes the instance's lock.
pub(crate) async fn remove_tag(app: &App, v: &VolumeRow, tag: &str) -> Result<()> {
    let _guard = match v.instance_id {
        Some(i) => Some(app.lock_instance(i).await),
        None => None,
    };
    remove_tag_locked(app, v, tag).await
}

async fn remove_tag_locked(app: &App, v: &VolumeRow, tag: &str) -> Result<()> {
    let bin = app.config.binaries();
    if !bin
        .snapshot_tags(v.path.as_ref())
        .await?
        .iter()
        .any(|t| t == tag)
    {
        return Ok(());
    }
    match holder(app, v)? {
        Some((inst, true)) => vm::delete_tag_live(app, inst.id, &[v.id], tag).await,
        // A base's freed clusters stay in the file for the guest's next
        // writes (see `DeleteReusingSpace`).
        _ => {
            bin.snapshot(SnapshotAction::DeleteReusingSpace, v.path.as_ref(), tag)
                .await
        }
    }
}

/// Before a volume is resized: its base tag goes (qcow2 cannot resize an
/// image with internal snapshots). The caller holds the instance's lock.
pub async fn drop_base_for_resize(app: &App, v: &VolumeRow) -> Result<()> {
    refuse_if_backing_up(app, v, &format!("resizing volume '{}'", v.name))?;
    if let Some(base) = app.catalog.volume_snapshot_base(v.id)? {
        remove_tag_locked(app, v, &tag(base)).await?;
        app.catalog.set_volume_snapshot_base(v.id, None)?;
        tracing::info!(volume = %v.id, "resize: the snapshot base is dropped; the next snapshot reads the whole volume");
    }
    Ok(())
}

/// The account's snapshots, of one volume, zone or policy when asked. A
/// volume is matched by id or by the name it had when each was taken (a
/// deleted volume's snapshots stay listed under its name).
pub fn list(app: &App, account: &Account, filter: &SnapshotFilter) -> Result<Vec<Snapshot>> {
    let volume = filter
        .volume
        .as_deref()
        .map(|v| app.catalog.volume(account.id, v).map(|row| row.id).ok());
    let zone = filter
        .zone
        .as_deref()
        .map(|z| app.catalog.zone(z).map(|z| z.name))
        .transpose()?;
    let policy = filter
        .policy
        .as_deref()
        .map(|p| app.catalog.policy(account.id, p).map(|p| p.id))
        .transpose()?;
    let attached: Option<Vec<Uuid>> = filter
        .instance
        .as_deref()
        .map(|i| -> Result<Vec<Uuid>> {
            let inst = app.catalog.instance(account.id, i)?;
            Ok(app
                .catalog
                .instance_volumes(inst.id)?
                .iter()
                .map(|v| v.id)
                .collect())
        })
        .transpose()?;
    let mut list: Vec<Snapshot> = app
        .catalog
        .list_snapshots(Some(account.id))?
        .into_iter()
        .filter(|s| (s.state == SnapshotState::Deleted) == filter.deleted)
        .filter(|s| match (&filter.volume, volume) {
            (None, _) => true,
            (Some(_), Some(Some(id))) => s.volume_id == id,
            (Some(name), _) => s.volume == *name || s.volume_id.to_string() == *name,
        })
        .filter(|s| zone.as_ref().is_none_or(|z| s.zone == *z))
        .filter(|s| policy.is_none_or(|p| s.policy_id == Some(p)))
        .filter(|s| {
            attached
                .as_ref()
                .is_none_or(|ids| ids.contains(&s.volume_id))
        })
        .collect();
    with_expiries(app, account, &mut list)?;
    Ok(list)
}

/// Fill in when each policy-made snapshot of `list` expires.
fn with_expiries(app: &App, account: &Account, list: &mut [Snapshot]) -> Result<()> {
    let policies: std::collections::HashSet<Uuid> =
        list.iter().filter_map(|s| s.policy_id).collect();
    if policies.is_empty() {
        return Ok(());
    }
    let policies = app
        .catalog
        .list_policies(account.id, None)?
        .into_iter()
        .filter(|p| policies.contains(&p.id));
    let when = super::policies::expiries(app, policies)?;
    for s in list {
        s.expires_at = when.get(&s.id).copied();
    }
    Ok(())
}

pub fn show(app: &App, account: &Account, reference: &str) -> Result<Snapshot> {
    let mut s = [app.catalog.snapshot(account.id, reference)?];
    with_expiries(app, account, &mut s)?;
    let [s] = s;
    Ok(s)
}

/// [`destroy`], or, when it fails (an unreachable store), the snapshot
/// goes back to Deleted (tried again at the next round) or, when it was
/// removed at once, to Error with the reason, so it can be deleted again.
pub(crate) async fn destroy_or_flag(app: &App, id: Uuid) -> Result<()> {
    let result = destroy(app, id).await;
    if let Err(e) = &result {
        app.catalog.purge_failed(
            id,
            &format!("removing it failed ({}): delete it again", e.message),
        )?;
    }
    result
}

/// Remove a Destroying snapshot's objects, its base tag, then its row.
async fn destroy(app: &App, id: Uuid) -> Result<()> {
    let s = app.catalog.snapshot_by_id(id)?;
    engine::remove(app.region().await?, id).await?;
    if let Ok(v) = volume_by_id(app, s.volume_id) {
        if app.catalog.volume_snapshot_base(v.id)? == Some(id) {
            remove_tag(app, &v, &tag(id)).await?;
        }
    }
    app.catalog.remove_snapshot(id)
}

/// Garbage collection as a job (admin: it covers the whole region).
pub fn gc(app: &Arc<App>, account: &Account) -> Result<Job> {
    super::guards::require_admin(account, "collect the region's garbage")?;
    let app2 = app.clone();
    jobs::spawn(
        app,
        account.id,
        "region.gc",
        jobs::REGION,
        1,
        move |ctx| async move {
            crate::gc::collect_and_log(&app2, &ctx).await?;
            ctx.progress(1, 1);
            Ok(())
        },
    )
}

/// Re-read every chunk of a snapshot; a missing or damaged chunk is named
/// and the snapshot is flagged `Error`.
pub fn verify(app: &Arc<App>, account: &Account, reference: &str) -> Result<Job> {
    let s = app.catalog.snapshot(account.id, reference)?;
    let complete = s.state == SnapshotState::BackedUp
        || (s.state == SnapshotState::Error && s.completed_at.is_some());
    if !complete {
        return Err(Error::conflict(
            "snapshot_busy",
            format!(
                "snapshot '{}' is {}: only a backed-up snapshot can be verified",
                s.name, s.state
            ),
        ));
    }
    let app2 = app.clone();
    let name = s.name.clone();
    jobs::spawn(
        app,
        account.id,
        "snapshot.verify",
        Target {
            kind: "snapshot",
            id: s.id,
            name: &name,
        },
        0,
        move |ctx| async move {
            let report = reprise_backup::verify(app2.region().await?, s.id, |done, total| {
                ctx.progress(done, total)
            })
            .await;
            // The verdict is recorded only over BackedUp or Error: a delete
            // that started meanwhile keeps its Destroying.
            let settle = |mv, why: Option<&str>| {
                if !app2.catalog.settle_snapshot(s.id, mv, why)? {
                    ctx.log("the snapshot is being deleted: the verdict is not recorded");
                }
                Ok::<_, Error>(())
            };
            let report = match report {
                Ok(r) => r,
                // The store could not be read: nothing is known of the data.
                Err(e) if e.kind.is_retryable() => return Err(e),
                Err(e) => {
                    settle(
                        &snapshot::DAMAGED,
                        Some(&format!("verification failed: {e}")),
                    )?;
                    return Err(e.with_code("snapshot_damaged"));
                }
            };
            if report.is_clean() {
                app2.catalog.set_snapshot_verified(s.id, now())?;
                settle(&snapshot::VERIFIED, None)?;
                ctx.log(report.summary());
                return Ok(());
            }
            settle(
                &snapshot::DAMAGED,
                Some(&format!("verification: {}", report.summary())),
            )?;
            Err(Error::new(
                reprise_core::ErrorKind::Corrupt,
                "snapshot_damaged",
                format!("snapshot '{}': {}", s.name, report.summary()),
            ))
        },
    )
}

/// A backup the daemon was running when it stopped. Its manifest in the
/// store means it ended whole (the manifest is written last): it is
/// recorded BackedUp from it, never removed — the row may also come from a
/// catalog put back from an older copy, whose backup finished since.
/// Without one it failed: Error, and what it wrote goes (or, while the
/// store cannot be reached, with the snapshot's delete or a sweep).
async fn settle_cut_short(app: &App, s: &Snapshot) -> Result<()> {
    match super::recovery::whole_in_store(app, s.id).await {
        Ok(Some((m, index))) => {
            let names: Vec<[u8; 32]> = index.distinct().into_iter().map(|n| n.0).collect();
            let stats = BackupStats {
                written_bytes: m.written_bytes,
                stored_bytes: m.stored_bytes,
                // Set below once its chunks are recorded: never the
                // store's figure (see above).
                new_bytes: 0,
                read_bytes: 0,
                chunk_count: m.chunk_count,
                positions: index.entries.len() as u64,
                base_id: m.base_snapshot_id,
            };
            app.catalog
                .snapshot_complete_in_store(s.id, &names, &stats)?;
            // What it added to the account, not to the store (see above).
            let own = app
                .catalog
                .bytes_new_to_account(s.id, s.account_id, false)?;
            app.catalog.set_snapshot_new_bytes(s.id, own)?;
            tracing::warn!(snapshot = %s.id, name = s.name, "the daemon stopped after this backup's manifest was written: whole in the store, BackedUp");
            return Ok(());
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(snapshot = %s.id, "the store cannot tell whether this backup ended: its objects stay ({e})");
            app.catalog.settle_snapshot(
                s.id,
                &snapshot::BACKUP_FAILED,
                Some("the daemon stopped during the backup; take a new snapshot"),
            )?;
            return Ok(());
        }
    }
    tracing::warn!(snapshot = %s.id, name = s.name, "the daemon stopped during this backup: marked Error and cleaned");
    app.catalog.drop_snapshot_chunks(s.id)?;
    app.catalog.settle_snapshot(
        s.id,
        &snapshot::BACKUP_FAILED,
        Some("the daemon stopped during the backup; take a new snapshot"),
    )?;
    if let Err(e) = engine::remove(app.region().await?, s.id).await {
        tracing::warn!(snapshot = %s.id, "its objects stay until it is deleted: {e}");
    }
    Ok(())
}

/// At startup: a backup the daemon was running is over — its snapshot is
/// Error and cleaned; a delete it was doing is finished; a volume left
/// Snapshotting is Ready; a tag no snapshot needs is removed.
pub async fn reconcile_at_startup(app: &App) -> Result<()> {
    let volumes = app.catalog.local_volumes()?;
    let here: std::collections::HashSet<Uuid> = volumes.iter().map(|v| v.id).collect();
    for s in app.catalog.list_snapshots(None)? {
        // A backup runs on its volume's host; the delete of a snapshot
        // whose volume is gone is finished by any host (it is idempotent).
        let settles_here = here.contains(&s.volume_id)
            || (s.state == SnapshotState::Destroying
                && app.catalog.list_volumes_by_id(&[s.volume_id])?.is_empty());
        if !settles_here {
            continue;
        }
        match s.state {
            SnapshotState::BackingUp => settle_cut_short(app, &s).await?,
            SnapshotState::Destroying => {
                tracing::warn!(snapshot = %s.id, name = s.name, "finishing an interrupted delete");
                if let Err(e) = destroy_or_flag(app, s.id).await {
                    tracing::warn!(snapshot = %s.id, "{e}");
                }
            }
            _ => {}
        }
    }
    let bin = app.config.binaries();
    for v in volumes {
        if v.state == VolumeState::Snapshotting {
            super::volumes::settle(app, v.id, &volume::CUT_DONE)?;
        }
        let base = app.catalog.volume_snapshot_base(v.id)?.map(tag);
        let Ok(tags) = bin.snapshot_tags(v.path.as_ref()).await else {
            continue;
        };
        for t in tags {
            if t.starts_with(TAG_PREFIX) && Some(&t) != base.as_ref() {
                tracing::warn!(volume = %v.id, tag = t, "removing a volume-snapshot tag nothing needs");
                if let Err(e) = remove_tag(app, &v, &t).await {
                    tracing::warn!(volume = %v.id, tag = t, "left for the next start: {e}");
                }
            }
        }
    }
    Ok(())
}
