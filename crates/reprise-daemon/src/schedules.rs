//! The scheduler: each daemon runs the policies of its own host's volumes
//! and instances (the work is on that host), for as long as it runs.
//!
//! - Every tick, the policies due (`next_run_at` passed, enabled, not
//!   running) are looked at. Each waits a stable offset of its target into
//!   the slot (a tenth of the period, at most ten minutes), so a fleet's
//!   runs of one slot spread out instead of firing at its first second.
//! - A run is claimed by one guarded update that marks it running and sets
//!   the next run from *now*: slots missed while the daemon was down run
//!   once at start, not once each; no run starts twice.
//! - A run is a job of the policy's kind (its log names the policy), then
//!   retention removes what the policy made and no rule keeps. Its result,
//!   or why it failed, is recorded on the policy; a failed run is tried
//!   again at the next slot.
//! - A recovery point refused by the plan's limit while the policy has a
//!   point of its own: its oldest is removed first, and the result says so.

use crate::app::App;
use crate::ops::{points, policies, snapshots};
use reprise_catalog::now;
use reprise_core::model::*;
use reprise_core::retention;
use reprise_core::schedule::{spread, timezone, Schedule, Tz};
use reprise_core::{Error, Result};
use std::sync::Arc;
use std::time::Duration;

/// How often due policies are looked for.
const TICK: Duration = Duration::from_secs(2);

pub async fn run(app: Arc<App>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = start_due(&app) {
            tracing::warn!("scheduler: {e}");
        }
    }
}

/// The window a slot's runs spread over: a tenth of the period between
/// two slots, at most ten minutes.
fn window(schedule: &Schedule, due: chrono::DateTime<chrono::Utc>, tz: Tz) -> Duration {
    let period = schedule
        .next_after(due, tz)
        .and_then(|n| (n - due).to_std().ok())
        .unwrap_or(Duration::from_secs(600));
    (period / 10).min(Duration::from_secs(600))
}

fn start_due(app: &Arc<App>) -> Result<()> {
    let at = now();
    for p in app.catalog.due_policies(at)? {
        let (Some(due), Some(target)) = (p.next_run_at, p.volume_id.or(p.instance_id)) else {
            continue;
        };
        let schedule = Schedule::parse(&p.schedule)?;
        let tz = timezone(&p.timezone)?;
        let offset = spread(target, window(&schedule, due, tz));
        if at < due + chrono::Duration::from_std(offset).unwrap_or_default() {
            continue;
        }
        if !app
            .catalog
            .claim_policy_run(p.id, due, at, schedule.next_after(at, tz))?
        {
            continue;
        }
        let app = app.clone();
        tokio::spawn(async move {
            let said = match run_once(&app, &p).await {
                Ok(done) => done,
                Err(e) => {
                    tracing::warn!(policy = %p.id, name = p.name, "run failed: {e}");
                    format!("failed: {}", e.message)
                }
            };
            if let Err(e) = app.catalog.policy_run_ended(p.id, &said) {
                tracing::warn!(policy = %p.id, "its run's end not recorded: {e}");
            }
        });
    }
    Ok(())
}

/// One run: take, then prune. What it did, in a sentence.
async fn run_once(app: &Arc<App>, p: &Policy) -> Result<String> {
    let account = app.catalog.account(&p.account_id.to_string())?;
    let mut said = Vec::new();
    let job = match (p.volume_id, p.instance_id) {
        (Some(volume), _) => snapshots::create_for(
            app,
            &account,
            CreateSnapshot {
                volume: volume.to_string(),
                name: None,
                quiesce: p.quiesce.clone(),
            },
            Some(p.id),
        )?,
        (None, Some(instance)) => take_point(app, &account, p, instance, &mut said).await?,
        (None, None) => return Err(Error::internal("a policy without a target")),
    };
    crate::jobs::log_by_policy(app, job.id, &p.name);
    crate::jobs::finished(app, &job).await?;
    let name = match p.volume_id {
        Some(_) => app.catalog.snapshot_by_id(job.target_id)?.name,
        None => job.target_name.clone(),
    };
    said.push(format!("took {} '{name}'", noun(p)));
    let removed = prune(app, &account, p).await?;
    if !removed.is_empty() {
        said.push(format!("removed {}", removed.join(", ")));
    }
    Ok(said.join("; "))
}

fn noun(p: &Policy) -> &'static str {
    if p.volume_id.is_some() {
        "snapshot"
    } else {
        "recovery point"
    }
}

/// A recovery point; when the plan's limit refuses it and the policy has a
/// point of its own, the oldest goes first.
async fn take_point(
    app: &Arc<App>,
    account: &Account,
    p: &Policy,
    instance: uuid::Uuid,
    said: &mut Vec<String>,
) -> Result<Job> {
    let req = || CreatePoint {
        name: None,
        description: Some(format!("taken by policy '{}'", p.name)),
        memory: p.memory,
        quiesce: p.quiesce.clone(),
    };
    let id = instance.to_string();
    match points::create_for(app, account, &id, req(), Some(p.id)) {
        Err(e) if e.code == "point_limit_reached" => {
            let made = policies::made_by(app, p)?;
            let Some(oldest) = made.taken.iter().min_by_key(|t| t.candidate.created_at) else {
                return Err(e);
            };
            let (oldest, name) = (oldest.candidate.id, &oldest.name);
            crate::jobs::finished(
                app,
                &points::delete(app, account, &id, &oldest.to_string())?,
            )
            .await?;
            said.push(format!(
                "replaced recovery point '{name}' (the plan allows no more)"
            ));
            points::create_for(app, account, &id, req(), Some(p.id))
        }
        other => other,
    }
}

/// Remove what the policy made and no rule of its retention keeps.
async fn prune(app: &Arc<App>, account: &Account, p: &Policy) -> Result<Vec<String>> {
    if p.keep.is_empty() {
        return Ok(Vec::new());
    }
    let made = policies::made_by(app, p)?;
    let mut removed = Vec::new();
    for v in retention::judge(&made.candidates(), &p.keep, timezone(&p.timezone)?) {
        if v.keep {
            continue;
        }
        let name = made.name_of(v.id).to_string();
        let job = match p.instance_id {
            Some(instance) => {
                points::delete(app, account, &instance.to_string(), &v.id.to_string())?
            }
            None => snapshots::delete(app, account, &v.id.to_string())?,
        };
        crate::jobs::log_by_policy(app, job.id, &p.name);
        crate::jobs::finished(app, &job).await?;
        removed.push(format!("'{name}'"));
    }
    Ok(removed)
}
