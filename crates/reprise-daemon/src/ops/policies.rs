//! Snapshot policies: volume snapshots of a volume, or recovery points of
//! an instance, on a schedule, pruned by retention rules (see
//! `docs/schedules.md`). The schedule and the retention are pure
//! (`reprise_core::schedule`, `reprise_core::retention`); the runs are
//! [`crate::schedules`]'s.

use crate::app::App;
use crate::quiesce::Mode;
use chrono::{DateTime, Utc};
use reprise_catalog::now;
use reprise_core::model::*;
use reprise_core::retention::{self, Candidate};
use reprise_core::schedule::{timezone, Schedule};
use reprise_core::{Error, Result};
use std::collections::HashMap;
use uuid::Uuid;

pub fn create(app: &App, account: &Account, req: CreatePolicy) -> Result<Policy> {
    let (volume, instance) =
        match (&req.volume, &req.instance) {
            (Some(v), None) => (Some(app.catalog.volume(account.id, v)?), None),
            (None, Some(i)) => (None, Some(app.catalog.instance(account.id, i)?)),
            _ => return Err(Error::invalid(
                "policy_target_invalid",
                "a policy is on one volume (volume snapshots) or one instance (recovery points)",
            )),
        };
    if req.memory && volume.is_some() {
        return Err(Error::invalid(
            "policy_target_invalid",
            "memory is for recovery points: a volume policy takes volume snapshots",
        ));
    }
    let schedule = Schedule::parse(&req.schedule)?;
    let zone = req.timezone.clone().unwrap_or_else(|| "UTC".into());
    let tz = timezone(&zone)?;
    Mode::parse(req.quiesce.as_deref())?;
    let target = volume
        .as_ref()
        .map(|v| v.name.clone())
        .or(instance.as_ref().map(|i| i.name.clone()))
        .unwrap_or_default();
    let name = match &req.name {
        Some(n) => n.clone(),
        // `db-daily`: the schedule's canonical text starts with its kind.
        None => format!(
            "{target}-{}",
            schedule
                .to_string()
                .split_whitespace()
                .next()
                .unwrap_or("policy")
        ),
    };
    reprise_core::name::validate_name("policy", &name)?;
    let created_at = now();
    let policy = Policy {
        id: Uuid::new_v4(),
        name,
        account_id: account.id,
        volume_id: volume.as_ref().map(|v| v.id),
        volume: volume.map(|v| v.name),
        instance_id: instance.as_ref().map(|i| i.id),
        instance: instance.map(|i| i.name),
        interval_type: schedule.to_cloudstack().map(|c| c.0.to_string()),
        cloudstack_schedule: schedule.to_cloudstack().map(|c| c.1),
        next_run_at: schedule.next_after(created_at, tz),
        schedule: schedule.to_string(),
        timezone: zone,
        keep: req.keep,
        quiesce: req.quiesce,
        memory: req.memory,
        enabled: req.enabled.unwrap_or(true),
        last_run_at: None,
        last_result: None,
        created_at,
    };
    app.catalog.insert_policy(&policy)?;
    tracing::info!(policy = %policy.id, name = policy.name, schedule = policy.schedule, "policy created");
    Ok(policy)
}

pub fn list(app: &App, account: &Account, target: Option<&str>) -> Result<Vec<Policy>> {
    let target = match target {
        None => None,
        Some(t) => Some(
            app.catalog
                .volume(account.id, t)
                .map(|v| v.id)
                .or_else(|_| app.catalog.instance(account.id, t).map(|i| i.id))
                .map_err(|_| Error::not_found("volume or instance", t))?,
        ),
    };
    app.catalog.list_policies(account.id, target)
}

pub fn show(app: &App, account: &Account, reference: &str) -> Result<Policy> {
    app.catalog.policy(account.id, reference)
}

pub fn update(app: &App, account: &Account, reference: &str, req: UpdatePolicy) -> Result<Policy> {
    let mut p = app.catalog.policy(account.id, reference)?;
    if let Some(s) = &req.schedule {
        p.schedule = Schedule::parse(s)?.to_string();
    }
    if let Some(z) = &req.timezone {
        timezone(z)?;
        p.timezone = z.clone();
    }
    if let Some(k) = req.keep {
        p.keep = k;
    }
    if let Some(q) = &req.quiesce {
        Mode::parse(Some(q))?;
        p.quiesce = Some(q.clone());
    }
    if let Some(m) = req.memory {
        if m && p.volume_id.is_some() {
            return Err(Error::invalid(
                "policy_target_invalid",
                "memory is for recovery points: a volume policy takes volume snapshots",
            ));
        }
        p.memory = m;
    }
    if let Some(e) = req.enabled {
        p.enabled = e;
    }
    // A new schedule or zone counts from now.
    let schedule = Schedule::parse(&p.schedule)?;
    p.next_run_at = schedule.next_after(now(), timezone(&p.timezone)?);
    app.catalog.update_policy(&p)?;
    app.catalog.policy(account.id, &p.id.to_string())
}

pub fn delete(app: &App, account: &Account, reference: &str) -> Result<()> {
    let p = app.catalog.policy(account.id, reference)?;
    app.catalog.delete_policy(p.id)?;
    tracing::info!(policy = %p.id, name = p.name, "policy deleted; the snapshots it took stay");
    Ok(())
}

/// What a policy took (complete snapshots or Ready points), and how many
/// of its target's were taken by hand.
pub struct Made {
    pub taken: Vec<Taken>,
    pub by_hand: u64,
}

pub struct Taken {
    pub name: String,
    pub candidate: Candidate,
}

impl Made {
    pub fn candidates(&self) -> Vec<Candidate> {
        self.taken.iter().map(|t| t.candidate.clone()).collect()
    }

    pub fn name_of(&self, id: Uuid) -> &str {
        self.taken
            .iter()
            .find(|t| t.candidate.id == id)
            .map_or("", |t| t.name.as_str())
    }
}

pub fn made_by(app: &App, p: &Policy) -> Result<Made> {
    let mut made = Made {
        taken: Vec::new(),
        by_hand: 0,
    };
    // A protected one is left alone, as one taken by hand.
    let mut sort = |id: Uuid,
                    name: &str,
                    created_at,
                    policy: Option<Uuid>,
                    complete: bool,
                    protected: bool| {
        if protected {
            made.by_hand += 1;
        } else if policy == Some(p.id) {
            if complete {
                made.taken.push(Taken {
                    name: name.to_string(),
                    candidate: Candidate { id, created_at },
                });
            }
        } else if policy.is_none() {
            made.by_hand += 1;
        }
    };
    if let Some(volume) = p.volume_id {
        for s in app.catalog.list_snapshots(Some(p.account_id))? {
            if s.volume_id == volume {
                sort(
                    s.id,
                    &s.name,
                    s.created_at,
                    s.policy_id,
                    s.state == SnapshotState::BackedUp,
                    s.protected,
                );
            }
        }
    }
    if let Some(instance) = p.instance_id {
        for pt in app.catalog.list_points(Some(instance))? {
            sort(
                pt.id,
                &pt.name,
                pt.created_at,
                pt.policy_id,
                pt.state == PointState::Ready,
                pt.protected,
            );
        }
    }
    Ok(made)
}

/// How many future runs an expiry is looked for in.
const EXPIRY_HORIZON: usize = 1000;

/// When each snapshot or point `policies` took will be removed by their
/// retention, if they run on as scheduled.
pub fn expiries(
    app: &App,
    policies: impl IntoIterator<Item = Policy>,
) -> Result<HashMap<Uuid, DateTime<Utc>>> {
    let mut out = HashMap::new();
    let now = now();
    // A policy switched off takes nothing more, so removes nothing more.
    for p in policies.into_iter().filter(|p| p.enabled) {
        let made = made_by(app, &p)?;
        let schedule = Schedule::parse(&p.schedule)?;
        let tz = timezone(&p.timezone)?;
        for (id, when) in retention::expiries(
            &made.candidates(),
            &p.keep,
            tz,
            &schedule,
            now,
            EXPIRY_HORIZON,
        ) {
            if let Some(t) = when {
                out.insert(id, t);
            }
        }
    }
    Ok(out)
}

/// What the policy's retention would do now.
pub fn simulate(app: &App, account: &Account, reference: &str) -> Result<PolicySimulation> {
    let p = app.catalog.policy(account.id, reference)?;
    let made = made_by(app, &p)?;
    let candidates = made.candidates();
    let verdicts = retention::judge(&candidates, &p.keep, timezone(&p.timezone)?);
    let items = verdicts
        .into_iter()
        .map(|v| SimulatedItem {
            id: v.id,
            name: made.name_of(v.id).to_string(),
            created_at: candidates
                .iter()
                .find(|c| c.id == v.id)
                .map_or(p.created_at, |c| c.created_at),
            keep: v.keep,
            kept_by: v.kept_by,
        })
        .collect();
    Ok(PolicySimulation {
        policy: p.name,
        keep: p.keep,
        items,
        untouched: made.by_hand,
    })
}
