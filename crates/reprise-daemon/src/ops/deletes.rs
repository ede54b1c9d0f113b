//! Deleting what the region's store keeps: snapshots and templates go
//! into an undelete window before they go for good, and protected
//! snapshots do not go at all.
//!
//! - A delete (by hand, by a policy's retention, or through CloudStack)
//!   moves a snapshot to `Deleted` and a template to its own `Deleted`,
//!   with `purge_after` = now + the window (the plan's `undelete_days`,
//!   else `[snapshots] undelete_days`). Nothing leaves the store: the row
//!   and its chunk references stay, so sweeps keep every chunk. Deleted
//!   ones do not count against the plan; an undelete counts them again.
//! - A purge removes the objects, then the row (the chunks at the next
//!   sweep): when the window ends (each host purges the snapshots of its
//!   own volumes, and those whose volume is gone), at once when the
//!   window is 0 days, or when the admin asks (`?purge=true`).
//! - A protected snapshot or point refuses every delete and purge with a
//!   named error until it is unprotected; the plan caps how many an
//!   account protects.

use super::guards::require_admin;
use super::snapshots::destroy_or_flag;
use crate::app::App;
use crate::jobs::{self, Target};
use chrono::{DateTime, Utc};
use reprise_backup::backup as engine;
use reprise_catalog::{now, write, Scope};
use reprise_core::lifecycle::snapshot;
use reprise_core::model::*;
use reprise_core::plan::Demand;
use reprise_core::{Error, Result};
use std::sync::Arc;
use uuid::Uuid;

/// How long `account`'s deletes can be undone: `None` when they cannot.
fn window(app: &App, account: Uuid) -> Result<Option<DateTime<Utc>>> {
    let days = app
        .catalog
        .effective_plan(account, Scope::default())?
        .and_then(|p| p.limits.undelete_days)
        .unwrap_or(app.config.snapshots.undelete_days);
    Ok((days > 0).then(|| now() + chrono::Duration::days(days.min(36_500) as i64)))
}

fn protected(s: &Snapshot) -> Error {
    Error::conflict(
        "snapshot_protected",
        format!(
            "snapshot '{}' is protected: unprotect it first (reprise snapshot unprotect {})",
            s.name, s.name
        ),
    )
}

/// Why a delete of `s` that its guarded statement refused was refused:
/// it was protected, or busy, meanwhile.
fn not_deletable_now(app: &App, s: &Snapshot) -> Result<Error> {
    let now = app.catalog.snapshot_by_id(s.id)?;
    if now.protected {
        return Ok(protected(&now));
    }
    Ok(Error::conflict(
        "snapshot_busy",
        format!(
            "snapshot '{}' is {}: wait for it to finish",
            s.name, now.state
        ),
    ))
}

fn target(s: &Snapshot) -> Target<'_> {
    Target {
        kind: "snapshot",
        id: s.id,
        name: &s.name,
    }
}

/// Delete a snapshot: into its undelete window, or for good when the
/// account has none.
pub fn delete_snapshot(app: &Arc<App>, account: &Account, reference: &str) -> Result<Job> {
    let s = app.catalog.snapshot(account.id, reference)?;
    if s.protected {
        return Err(protected(&s));
    }
    let Some(until) = window(app, account.id)? else {
        return purge_snapshot(app, account, s);
    };
    let slot = jobs::reserve(app, account.id, "snapshot.delete", target(&s), 1)?;
    if !app.catalog.delete_snapshot_for_now(s.id, until)? {
        return Err(not_deletable_now(app, &s)?);
    }
    let app2 = app.clone();
    Ok(slot.spawn(move |ctx| async move {
        crate::binding::recorded(&app2).await;
        ctx.log(format!(
            "snapshot '{}' deleted: it stays whole, and `reprise snapshot undelete {}` brings it back, until {}",
            s.name,
            s.id,
            until.format("%F %T UTC")
        ));
        ctx.progress(1, 1);
        Ok(())
    }))
}

/// Remove a snapshot for good now (the admin's `?purge=true`, a plan
/// without window): its objects, its base tag, its row; then the chunks
/// nothing else references are collected.
fn purge_snapshot(app: &Arc<App>, caller: &Account, s: Snapshot) -> Result<Job> {
    if s.protected {
        return Err(protected(&s));
    }
    let slot = jobs::reserve(app, caller.id, "snapshot.delete", target(&s), 1)?;
    if !app.catalog.start_snapshot_purge(s.id)? {
        if app.catalog.snapshot_is_running_base(s.id)? {
            return Err(Error::conflict(
                "snapshot_is_base",
                format!(
                    "snapshot '{}' is the base of a backup of volume '{}' in progress: delete it once that backup ends",
                    s.name, s.volume
                ),
            ));
        }
        return Err(not_deletable_now(app, &s)?);
    }
    let app2 = app.clone();
    Ok(slot.spawn(move |ctx| async move {
        crate::binding::recorded(&app2).await;
        destroy_or_flag(&app2, s.id).await?;
        ctx.log(format!(
            "snapshot '{}' removed for good; the space its chunks alone held is reclaimed by the next garbage collection",
            s.name
        ));
        app2.request_gc();
        ctx.progress(1, 1);
        Ok(())
    }))
}

/// The admin removes a snapshot for good at once, deleted or not, of any
/// account (by id; by name, the admin's own).
pub fn purge(app: &Arc<App>, caller: &Account, reference: &str) -> Result<Job> {
    require_admin(
        caller,
        "remove a snapshot for good before its undelete window ends",
    )?;
    let s = any_snapshot(app, caller, reference)?;
    purge_snapshot(app, caller, s)
}

/// A snapshot as the admin names it for a purge: its own, live or
/// deleted, or any account's by id.
pub fn any_snapshot(app: &App, caller: &Account, reference: &str) -> Result<Snapshot> {
    app.catalog
        .snapshot(caller.id, reference)
        .or_else(|_| app.catalog.deleted_snapshot(caller.id, reference))
        .or_else(|e| match Uuid::parse_str(reference) {
            Ok(id) if caller.admin => app.catalog.snapshot_by_id(id),
            _ => Err(e),
        })
}

/// Bring a deleted snapshot back, counted against the plan again — if
/// the store still holds it whole.
pub async fn undelete_snapshot(app: &App, account: &Account, reference: &str) -> Result<Snapshot> {
    let s = app.catalog.deleted_snapshot(account.id, reference)?;
    if s.completed_at.is_some() && super::recovery::whole_in_store(app, s.id).await?.is_none() {
        return Err(Error::new(
            reprise_core::ErrorKind::Corrupt,
            "snapshot_damaged",
            format!(
                "snapshot '{}' is no longer whole in the region's store: it cannot come back",
                s.name
            ),
        ));
    }
    let mv = if s.error.is_none() && s.completed_at.is_some() {
        &snapshot::UNDELETE
    } else {
        &snapshot::UNDELETE_DAMAGED
    };
    let scope = Scope {
        instance: None,
        volume: Some(s.volume_id),
    };
    let demand = Demand {
        snapshots: 1,
        ..Default::default()
    };
    let back = app.catalog.admit(account.id, scope, &demand, |c| {
        write::undelete_snapshot(c, s.id, mv)
    });
    match back {
        Ok(true) => {}
        Ok(false) => {
            return Err(Error::conflict(
                "snapshot_not_deleted",
                format!("snapshot '{}' is no longer deleted", s.name),
            ))
        }
        Err(e) if e.code == "name_taken" => {
            return Err(Error::conflict(
                "name_taken",
                format!(
                "another snapshot is named '{}' now: rename or delete it, then undelete this one",
                s.name
            ),
            ))
        }
        Err(e) => return Err(e),
    }
    tracing::info!(snapshot = %s.id, name = s.name, "snapshot undeleted");
    crate::binding::recorded(app).await;
    app.catalog.snapshot_by_id(s.id)
}

/// Protect a snapshot (within the plan's `max_protected`) or lift it.
pub async fn protect_snapshot(
    app: &App,
    account: &Account,
    reference: &str,
    req: Protection,
) -> Result<Snapshot> {
    let s = app.catalog.snapshot(account.id, reference)?;
    set_protected(app, account, "snapshots", s.id, s.protected, req.protected).await?;
    app.catalog.snapshot_by_id(s.id)
}

/// Set the protection of a row of `table` (`snapshots` or `points`):
/// counted against the plan when it is newly protected; refused while it
/// is being deleted.
pub(crate) async fn set_protected(
    app: &App,
    account: &Account,
    table: &str,
    id: Uuid,
    was: bool,
    wanted: bool,
) -> Result<()> {
    if was == wanted {
        return Ok(());
    }
    let demand = Demand {
        protected: u64::from(wanted),
        ..Default::default()
    };
    let set = app
        .catalog
        .admit(account.id, Scope::default(), &demand, |c| {
            write::set_protected(c, table, id, wanted)
        })?;
    if !set {
        return Err(Error::conflict(
            if table == "points" {
                "point_busy"
            } else {
                "snapshot_busy"
            },
            "it is being deleted: its protection cannot change",
        ));
    }
    crate::binding::recorded(app).await;
    Ok(())
}

/// Delete a template: into its undelete window, or for good when the
/// account has none. Instances deployed from it keep their volumes.
pub fn delete_template(app: &Arc<App>, account: &Account, reference: &str) -> Result<Job> {
    let t = app.catalog.template(account.id, reference)?;
    let name = t.name.clone();
    let target = Target {
        kind: "template",
        id: t.id,
        name: &name,
    };
    let until = window(app, account.id)?;
    let claimed = match until {
        Some(until) => app.catalog.delete_template_for_now(t.id, until)?,
        None => app.catalog.start_template_purge(t.id)?,
    };
    if !claimed {
        return Err(Error::conflict(
            "template_busy",
            format!("template '{}' is being deleted", t.name),
        ));
    }
    let app2 = app.clone();
    jobs::spawn(
        app,
        account.id,
        "template.delete",
        target,
        1,
        move |ctx| async move {
            crate::binding::recorded(&app2).await;
            match until {
                Some(until) => ctx.log(format!(
                    "template '{}' deleted: `reprise template undelete {}` brings it back until {}",
                    t.name,
                    t.id,
                    until.format("%F %T UTC")
                )),
                None => {
                    purge_template(&app2, t.id).await?;
                    ctx.log(format!(
                    "template '{}' removed for good; the space its chunks alone held is reclaimed by the next garbage collection",
                    t.name
                ));
                }
            }
            ctx.progress(1, 1);
            Ok(())
        },
    )
}

/// Remove a template claimed for its purge (Destroying): its objects,
/// then its row (the chunks at the next sweep).
pub(crate) async fn purge_template(app: &App, id: Uuid) -> Result<()> {
    engine::remove(app.region().await?, id).await?;
    app.catalog.remove_template(id)?;
    app.request_gc();
    Ok(())
}

/// Bring a deleted template back.
pub async fn undelete_template(app: &App, account: &Account, reference: &str) -> Result<Template> {
    let t = app
        .catalog
        .deleted_templates(account.id)?
        .into_iter()
        .find(|t| t.id.to_string() == reference || t.name == reference)
        .ok_or_else(|| Error::not_found("deleted template", reference))?;
    if !app.catalog.undelete_template(t.id)? {
        return Err(Error::conflict(
            "template_busy",
            format!("template '{}' is being removed for good", t.name),
        ));
    }
    crate::binding::recorded(app).await;
    app.catalog.template(account.id, &t.id.to_string())
}

/// Purge what this host must whose window has ended by `when`: snapshots of its
/// own volumes, or whose volume is gone, and templates (any host: their
/// objects are only in the store). A purge claims each first, so two
/// hosts never purge one twice, and an undelete never races it.
pub async fn purge_expired(app: &App, when: DateTime<Utc>) -> Result<()> {
    // A catalog put back from an older copy may hold as deleted what was
    // undeleted since: nothing goes until it is the store's again.
    if let Err(e) = crate::binding::may_sweep(app).await {
        tracing::warn!("nothing is purged at the end of its undelete window: {e}");
        return Ok(());
    }
    let mine: std::collections::HashSet<Uuid> =
        app.catalog.local_volumes()?.iter().map(|v| v.id).collect();
    for s in app.catalog.snapshots_to_purge(when)? {
        let here = mine.contains(&s.volume_id)
            || app.catalog.list_volumes_by_id(&[s.volume_id])?.is_empty();
        if !here || !app.catalog.start_snapshot_purge(s.id)? {
            continue;
        }
        tracing::info!(snapshot = %s.id, name = s.name, "its undelete window ended: removed for good");
        if let Err(e) = destroy_or_flag(app, s.id).await {
            tracing::warn!(snapshot = %s.id, "{e}");
        }
        app.request_gc();
    }
    for t in app.catalog.templates_to_purge(when)? {
        if app.catalog.start_template_purge(t.id)? {
            tracing::info!(template = %t.id, name = t.name, "its undelete window ended: removed for good");
            purge_template(app, t.id).await?;
        }
    }
    // Purges a stop cut short.
    for id in app.catalog.templates_being_purged()? {
        purge_template(app, id).await?;
    }
    Ok(())
}

/// Purge on schedule for as long as the daemon runs.
pub async fn purge_when_due(app: Arc<App>) {
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
        if let Err(e) = purge_expired(&app, now()).await {
            tracing::warn!(
                "purging what left its undelete window failed (tried again in a minute): {e}"
            );
        }
    }
}
