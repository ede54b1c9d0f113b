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
use crate::ops::{deletes, points, policies, snapshots};
use chrono::{DateTime, Utc};
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
fn window(schedule: &Schedule, due: DateTime<Utc>, tz: Tz) -> Duration {
    let period = schedule
        .next_after(due, tz)
        .and_then(|n| (n - due).to_std().ok())
        .unwrap_or(Duration::from_secs(600));
    (period / 10).min(Duration::from_secs(600))
}

/// What the scheduler does with a policy at one instant.
#[derive(Debug, PartialEq)]
pub enum Decision {
    Wait,
    /// Run the slot that was due at `due`; the next is at `next`.
    Run {
        due: DateTime<Utc>,
        next: Option<DateTime<Utc>>,
    },
}

/// Whether `p` runs at `at`: enabled, its slot passed, and its target's
/// offset into the slot too. The next slot counts from `at`, so slots
/// missed while nothing ran make one run.
pub fn decide(p: &Policy, at: DateTime<Utc>) -> Result<Decision> {
    let (Some(due), Some(target)) = (p.next_run_at, p.volume_id.or(p.instance_id)) else {
        return Ok(Decision::Wait);
    };
    if !p.enabled || at < due {
        return Ok(Decision::Wait);
    }
    let schedule = Schedule::parse(&p.schedule)?;
    let tz = timezone(&p.timezone)?;
    let offset = spread(target, window(&schedule, due, tz));
    if at < due + chrono::Duration::from_std(offset).unwrap_or_default() {
        return Ok(Decision::Wait);
    }
    Ok(Decision::Run {
        due,
        next: schedule.next_after(at, tz),
    })
}

fn start_due(app: &Arc<App>) -> Result<()> {
    let at = now();
    for p in app.catalog.due_policies(at)? {
        let Decision::Run { due, next } = decide(&p, at)? else {
            continue;
        };
        if !app.catalog.claim_policy_run(p.id, due, at, next)? {
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
                protect: false,
            },
            Some(p.id),
        )?,
        (None, Some(instance)) => take_point(app, &account, p, instance, &mut said).await?,
        (None, None) => return Err(Error::internal("a policy without a target")),
    };
    crate::jobs::log_by_policy(app, job.id, p);
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
        protect: false,
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
            None => deletes::delete_snapshot(app, account, &v.id.to_string())?,
        };
        crate::jobs::log_by_policy(app, job.id, p);
        crate::jobs::finished(app, &job).await?;
        removed.push(format!("'{name}'"));
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn policy(schedule: &str, zone: &str, due: &str, target: Uuid) -> Policy {
        Policy {
            id: Uuid::new_v4(),
            name: "p".into(),
            account_id: Uuid::nil(),
            volume_id: Some(target),
            volume: None,
            instance_id: None,
            instance: None,
            schedule: schedule.into(),
            interval_type: None,
            cloudstack_schedule: None,
            timezone: zone.into(),
            keep: Default::default(),
            quiesce: None,
            memory: false,
            enabled: true,
            next_run_at: Some(utc(due)),
            last_run_at: None,
            last_result: None,
            created_at: utc(due),
        }
    }

    /// A target id, fixed so that its offset is too.
    fn target(i: u128) -> Uuid {
        Uuid::from_u128(i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835))
    }

    #[test]
    fn slots_missed_while_down_make_one_run() {
        // Due three hours ago: one run now, the next at the coming hour.
        let p = policy("hourly 00", "UTC", "2026-12-03T10:00:00Z", target(1));
        let at = utc("2026-12-03T13:20:00Z");
        assert_eq!(
            decide(&p, at).unwrap(),
            Decision::Run {
                due: utc("2026-12-03T10:00:00Z"),
                next: Some(utc("2026-12-03T14:00:00Z")),
            }
        );
        // Not yet due; switched off.
        assert_eq!(
            decide(&p, utc("2026-12-03T09:59:59Z")).unwrap(),
            Decision::Wait
        );
        let off = Policy {
            enabled: false,
            ..p
        };
        assert_eq!(decide(&off, at).unwrap(), Decision::Wait);
    }

    #[test]
    fn a_fleet_spreads_over_a_tenth_of_the_slot() {
        // A hundred volumes with one daily 02:00 policy each: each runs
        // at its own second of the first ten minutes, none before.
        let due = "2026-12-03T02:00:00Z";
        let mut firsts = Vec::new();
        for i in 1..=100 {
            let p = policy("daily 02:00", "UTC", due, target(i));
            let first = (0..=600)
                .map(|s| utc(due) + chrono::Duration::seconds(s))
                .find(|at| matches!(decide(&p, *at).unwrap(), Decision::Run { .. }))
                .expect("runs within the window");
            firsts.push((first - utc(due)).num_seconds());
        }
        assert!(firsts.iter().all(|s| (0..600).contains(s)));
        for minute in 0..10 {
            let n = firsts.iter().filter(|s| **s / 60 == minute).count();
            assert!((1..=25).contains(&n), "minute {minute}: {n} of 100");
        }
        // A minute-long slot spreads over six seconds.
        let p = policy("cron * * * * *", "UTC", due, target(7));
        assert!(matches!(
            decide(&p, utc(due) + chrono::Duration::seconds(6)).unwrap(),
            Decision::Run { .. }
        ));
    }

    #[test]
    fn the_next_slot_follows_the_time_zone_across_a_change() {
        // Europe/Paris jumps from 02:00 to 03:00 on 29 March 2026: the
        // run due at the gap's end runs, and the next is the 30th's 02:30.
        let p = policy(
            "daily 02:30",
            "Europe/Paris",
            "2026-03-29T01:00:00Z",
            target(3),
        );
        let Decision::Run { next, .. } = decide(&p, utc("2026-03-29T01:20:00Z")).unwrap() else {
            panic!("due");
        };
        assert_eq!(next, Some(utc("2026-03-30T00:30:00Z")));
    }
}
