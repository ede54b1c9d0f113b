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
use reprise_catalog::{InstanceRow, VolumeRow};
use reprise_core::model::{InstanceState, VolumeKind, VolumeState};
use reprise_core::Result;
use std::sync::Arc;
use std::time::Duration;

/// What an instance's row should say given the QEMU process found for it
/// (`live`: its pid), or `None` when the row is right: a live process
/// means Running with that pid (re-attached, never started twice), no
/// process means Stopped.
fn settled(
    state: InstanceState,
    recorded_pid: Option<u32>,
    live: Option<u32>,
) -> Option<(InstanceState, Option<u32>)> {
    match live {
        Some(pid) if state != InstanceState::Running || recorded_pid != Some(pid) => {
            Some((InstanceState::Running, Some(pid)))
        }
        None if state != InstanceState::Stopped => Some((InstanceState::Stopped, None)),
        _ => None,
    }
}

/// Settle one instance's state from its process. Returns whether it
/// changed.
fn settle(app: &App, inst: &InstanceRow) -> Result<bool> {
    let Some((state, pid)) = settled(inst.state, inst.pid, vm::live_pid(app, inst.id)) else {
        return Ok(false);
    };
    tracing::info!(instance = %inst.id, name = inst.name, ?pid, was = %inst.state, now = %state, "instance settled from its QEMU process");
    app.catalog
        .set_instance_runtime(inst.id, state, pid, None, inst.last_error.as_deref())?;
    Ok(true)
}

/// The startup pass. Runs before any job can, so nothing is locked.
pub async fn at_startup(app: &App) -> Result<()> {
    let failed = crate::jobs::fail_interrupted(app)?;
    // Read before the passes below remove what the jobs were making.
    let cut_volumes = volumes_of(app, &failed);
    let mut changed = 0;
    let instances = app.catalog.local_instances()?;
    for inst in &instances {
        changed += usize::from(settle(app, inst)?);
        for v in app.catalog.instance_volumes(inst.id)? {
            if v.state == VolumeState::Creating && v.kind == VolumeKind::Root {
                tracing::warn!(volume = %v.id, "root volume was being made when the daemon stopped: marked Error");
                crate::ops::volumes::settle(
                    app,
                    v.id,
                    &reprise_core::lifecycle::volume::MAKING_FAILED,
                )?;
            }
        }
    }
    for v in app.catalog.local_volumes()? {
        crate::ops::restore::settle_interrupted(app, &v)?;
    }
    // No import survives a restart: its private copies go.
    let _ = std::fs::remove_dir_all(app.config.imports_dir());
    crate::ops::uploads::expire(app)?;
    crate::ops::points::reconcile_at_startup(app).await?;
    crate::ops::templates::reconcile_at_startup(app).await?;
    crate::ops::snapshots::reconcile_at_startup(app).await?;
    app.catalog.end_interrupted_policy_runs()?;
    crate::gc::take_over_cut_short(app, |host| host == app.host_name())?;
    repair_cut_updates(app, cut_volumes).await;
    tracing::info!(
        instances = instances.len(),
        changed,
        interrupted_jobs = failed.len(),
        "catalog reconciled with the host"
    );
    Ok(())
}

/// The volumes the interrupted jobs were changing: a volume's own, a
/// snapshot's, a recovery point's, an instance's.
fn volumes_of(app: &App, interrupted: &[reprise_core::model::Job]) -> Vec<VolumeRow> {
    let mut volumes = Vec::new();
    for job in interrupted {
        let found = match job.target_kind.as_str() {
            "volume" => app.catalog.list_volumes_by_id(&[job.target_id]),
            // A snapshot's cut and its removal are made in its volume.
            "snapshot" => app
                .catalog
                .snapshot(job.account_id, &job.target_id.to_string())
                .and_then(|s| app.catalog.list_volumes_by_id(&[s.volume_id])),
            "recovery_point" => app
                .catalog
                .point_by_id(job.target_id)
                .and_then(|p| app.catalog.list_volumes_by_id(&p.volume_ids)),
            "instance" => app.catalog.instance_volumes(job.target_id),
            _ => Ok(Vec::new()),
        };
        volumes.extend(found.unwrap_or_default());
    }
    volumes.sort_by_key(|v| v.id);
    volumes.dedup_by_key(|v| v.id);
    volumes
}

/// Repair the qcow2 metadata of the interrupted jobs' volumes: an internal
/// snapshot made, applied or deleted by `qemu-img snapshot` and cut by a
/// crash or a power cut leaves refcounts above the references (leaks) and
/// `COPIED` flags out of step with them, which `qemu-img check` calls
/// corrupt; `-r all` recomputes both from the references. Only volumes no
/// QEMU holds; one that cannot be repaired is left as it is and said so.
async fn repair_cut_updates(app: &App, volumes: Vec<VolumeRow>) {
    let bin = app.config.binaries();
    for v in volumes {
        let held = v
            .instance_id
            .is_some_and(|i| vm::live_pid(app, i).is_some());
        if held || v.host != app.host_name() || !std::path::Path::new(&v.path).exists() {
            continue;
        }
        match bin.repair(std::path::Path::new(&v.path)).await {
            Ok((0, 0)) => {}
            Ok((leaks, errors)) => {
                tracing::info!(volume = %v.id, name = v.name, leaks, errors, "repaired the qcow2 metadata an interrupted job left")
            }
            Err(e) => {
                tracing::warn!(volume = %v.id, name = v.name, "cannot repair the volume an interrupted job left: {e}")
            }
        }
    }
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
            let kept = chrono::Duration::days(app.config.jobs.keep_days as i64);
            match app.catalog.prune_jobs(chrono::Utc::now() - kept) {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    "forgot {n} jobs that ended over {} days ago",
                    app.config.jobs.keep_days
                ),
                Err(e) => tracing::warn!("pruning old jobs failed: {e}"),
            }
        }
        let Ok(instances) = app.catalog.local_instances() else {
            continue;
        };
        for inst in instances {
            let console = app.run_paths(inst.id).console();
            match crate::vm::rotate_console_log(&console, app.config.qemu.console_log_max) {
                Ok(true) => tracing::info!(instance = %inst.id, "console log rotated"),
                Ok(false) => {}
                Err(e) => tracing::warn!(instance = %inst.id, "rotating the console log: {e}"),
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use InstanceState::*;

    #[test]
    fn every_state_settles_from_the_process_found() {
        let cases = [
            // (row says, row's pid, process found) → row becomes
            (Running, Some(10), Some(10), None),
            (Running, Some(10), Some(11), Some((Running, Some(11)))),
            (Running, Some(10), None, Some((Stopped, None))),
            (Stopped, None, None, None),
            (Stopped, None, Some(12), Some((Running, Some(12)))),
            (Starting, None, Some(13), Some((Running, Some(13)))),
            (Starting, None, None, Some((Stopped, None))),
            (Stopping, Some(14), Some(14), Some((Running, Some(14)))),
            (Stopping, Some(14), None, Some((Stopped, None))),
            (Error, None, None, Some((Stopped, None))),
            (Error, None, Some(15), Some((Running, Some(15)))),
        ];
        for (state, pid, live, want) in cases {
            assert_eq!(
                settled(state, pid, live),
                want,
                "{state} pid {pid:?}, found {live:?}"
            );
        }
    }
}
