//! Keeping the catalog true to the host.
//!
//! At startup, before the API opens, every instance is checked against its
//! QEMU process: a live process (found by pidfile and `-uuid`) makes the
//! instance Running with that pid — re-attached, never started twice — and
//! a missing one makes it Stopped. Volumes left `Creating` by a crash are
//! marked Error, and interrupted jobs are failed (see [`crate::jobs`]).
//!
//! While the daemon runs, [`watch`] repeats the instance check every two
//! seconds for instances no operation holds, so a guest that powers itself
//! off, or a QEMU that dies, shows as Stopped; every ten minutes it removes
//! uploads left unfinished (see [`crate::ops::uploads`]).

use crate::app::App;
use crate::vm;
use reprise_catalog::InstanceRow;
use reprise_core::model::{InstanceState, VolumeKind, VolumeState};
use reprise_core::Result;
use std::sync::Arc;
use std::time::Duration;

/// Settle one instance's state from its process. Returns whether it
/// changed.
fn settle(app: &App, inst: &InstanceRow) -> Result<bool> {
    match vm::live_pid(app, inst.id) {
        Some(pid) if inst.state != InstanceState::Running || inst.pid != Some(pid) => {
            tracing::info!(instance = %inst.id, name = inst.name, pid, was = %inst.state, "QEMU is running: instance re-attached");
            app.catalog.set_instance_runtime(
                inst.id,
                InstanceState::Running,
                Some(pid),
                None,
                inst.last_error.as_deref(),
            )?;
            Ok(true)
        }
        None if inst.state != InstanceState::Stopped => {
            tracing::info!(instance = %inst.id, name = inst.name, was = %inst.state, "no QEMU process: instance is Stopped");
            app.catalog.set_instance_runtime(
                inst.id,
                InstanceState::Stopped,
                None,
                None,
                inst.last_error.as_deref(),
            )?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// The startup pass. Runs before any job can, so nothing is locked.
pub async fn at_startup(app: &App) -> Result<()> {
    let failed = crate::jobs::fail_interrupted(app)?;
    let mut changed = 0;
    let instances = app.catalog.list_instances(None)?;
    for inst in &instances {
        changed += usize::from(settle(app, inst)?);
        for v in app.catalog.instance_volumes(inst.id)? {
            if v.state == VolumeState::Creating && v.kind == VolumeKind::Root {
                tracing::warn!(volume = %v.id, "root volume was being made when the daemon stopped: marked Error");
                app.catalog.set_volume_state(v.id, VolumeState::Error)?;
            }
        }
    }
    for v in app.catalog.list_all_volumes()? {
        crate::ops::restore::settle_interrupted(app, &v)?;
    }
    // No import survives a restart: its private copies go.
    let _ = std::fs::remove_dir_all(app.config.imports_dir());
    crate::ops::uploads::expire(app)?;
    crate::ops::points::reconcile_at_startup(app).await?;
    crate::ops::snapshots::reconcile_at_startup(app).await?;
    for inst in app.catalog.list_instances(None)? {
        if inst.state == InstanceState::Running {
            crate::quiesce::thaw_if_frozen(app, inst.id).await;
        }
    }
    tracing::info!(
        instances = instances.len(),
        changed,
        interrupted_jobs = failed,
        "catalog reconciled with the host"
    );
    Ok(())
}

/// The periodic pass, for as long as the daemon runs.
pub async fn watch(app: Arc<App>) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    let mut ticks = 0u64;
    loop {
        tick.tick().await;
        ticks += 1;
        if ticks.is_multiple_of(300) {
            if let Err(e) = crate::ops::uploads::expire(&app) {
                tracing::warn!("expiring uploads failed: {e}");
            }
        }
        let Ok(instances) = app.catalog.list_instances(None) else {
            continue;
        };
        for inst in instances {
            let lock = app.instance_lock(inst.id);
            let Ok(_guard) = lock.try_lock() else {
                continue;
            };
            // Re-read under the lock: an operation may have just finished.
            let Ok(inst) = app.catalog.instance_by_id(inst.id) else {
                continue;
            };
            if matches!(
                inst.state,
                InstanceState::Starting | InstanceState::Stopping
            ) {
                continue; // a job owns it and will settle it
            }
            if let Err(e) = settle(&app, &inst) {
                tracing::warn!(instance = %inst.id, "reconcile failed: {e}");
            }
        }
    }
}
