//! Snapshot policies: a schedule and retention on a volume or an instance.
//! A run is claimed by one guarded update (the slot it was due at, and not
//! running), so no two daemons, and no two ticks, start the same run.

use crate::db::{params, DbExt, Optional, Row};
use crate::rows::{self, Sql};
use crate::{db_err, Catalog};
use chrono::{DateTime, Utc};
use reprise_core::model::Policy;
use reprise_core::{Error, Result};
use uuid::Uuid;

const POLICY_SELECT: &str = "SELECT p.id, p.name, p.account_id, p.volume_id, v.name, p.instance_id, i.name,
        p.schedule, p.timezone, p.keep, p.quiesce, p.memory, p.enabled, p.next_run_at, p.last_run_at,
        p.last_result, p.created_at
   FROM policies p LEFT JOIN volumes v ON v.id = p.volume_id LEFT JOIN instances i ON i.id = p.instance_id";

fn policy(r: &Row) -> crate::db::DbResult<Policy> {
    let keep: String = r.get(9)?;
    let schedule: String = r.get(7)?;
    let cloudstack = reprise_core::schedule::Schedule::parse(&schedule)
        .ok()
        .and_then(|s| s.to_cloudstack());
    Ok(Policy {
        id: rows::uuid(r, 0)?,
        name: r.get(1)?,
        account_id: rows::uuid(r, 2)?,
        volume_id: r
            .get::<Option<String>>(3)?
            .map(|_| rows::uuid(r, 3))
            .transpose()?,
        volume: r.get(4)?,
        instance_id: r
            .get::<Option<String>>(5)?
            .map(|_| rows::uuid(r, 5))
            .transpose()?,
        instance: r.get(6)?,
        interval_type: cloudstack.as_ref().map(|c| c.0.to_string()),
        cloudstack_schedule: cloudstack.map(|c| c.1),
        schedule,
        timezone: r.get(8)?,
        keep: serde_json::from_str(&keep)
            .map_err(|e| crate::db::DbError::caused_by(crate::db::DbErrorKind::Decode, e))?,
        quiesce: r.get(10)?,
        memory: r.get(11)?,
        enabled: r.get(12)?,
        next_run_at: r.get(13)?,
        last_run_at: r.get(14)?,
        last_result: r.get(15)?,
        created_at: r.get(16)?,
    })
}

fn keep_json(p: &Policy) -> String {
    serde_json::to_string(&p.keep).unwrap_or_else(|_| "{}".into())
}

impl Catalog {
    /// Record a new policy, if its account's plan allows one more.
    pub fn insert_policy(&self, p: &Policy) -> Result<()> {
        let one = reprise_core::plan::Demand {
            policies: 1,
            ..Default::default()
        };
        self.admit(p.account_id, Default::default(), &one, |c| {
            c.execute(
                "INSERT INTO policies (id, account_id, name, volume_id, instance_id, schedule, timezone, keep,
                                       quiesce, memory, enabled, running, next_run_at, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                params![p.id.sql(), p.account_id.sql(), p.name, p.volume_id.sql(), p.instance_id.sql(),
                        p.schedule, p.timezone, keep_json(p), p.quiesce, p.memory, p.enabled, false,
                        p.next_run_at, p.created_at],
            )
            .map_err(db_err(&format!("policy '{}'", p.name)))
        })?;
        Ok(())
    }

    /// Write a policy's settings (schedule, time zone, retention, quiesce,
    /// memory, enabled, next run).
    pub fn update_policy(&self, p: &Policy) -> Result<()> {
        self.update(
            "update policy",
            "UPDATE policies SET schedule = ?2, timezone = ?3, keep = ?4, quiesce = ?5, memory = ?6,
                                 enabled = ?7, next_run_at = ?8 WHERE id = ?1",
            params![p.id.sql(), p.schedule, p.timezone, keep_json(p), p.quiesce, p.memory, p.enabled,
                    p.next_run_at],
        )
    }

    /// A policy of `account` by name or id.
    pub fn policy(&self, account: Uuid, reference: &str) -> Result<Policy> {
        self.conn()
            .query_row(
                &format!("{POLICY_SELECT} WHERE p.account_id = ?1 AND (p.id = ?2 OR p.name = ?2)"),
                params![account.sql(), reference],
                policy,
            )
            .optional()
            .map_err(db_err("policy"))?
            .ok_or_else(|| Error::not_found("policy", reference))
    }

    /// The policies of `account`, of one volume or instance when given.
    pub fn list_policies(&self, account: Uuid, target: Option<Uuid>) -> Result<Vec<Policy>> {
        rows::query(
            &self.conn(),
            &format!(
                "{POLICY_SELECT} WHERE p.account_id = ?1
                 AND (CAST(?2 AS TEXT) IS NULL OR p.volume_id = ?2 OR p.instance_id = ?2)
                 ORDER BY p.created_at"
            ),
            params![account.sql(), target.sql()],
            policy,
        )
    }

    /// Enabled policies of this host's volumes and instances whose next
    /// run is due by `now` and that are not running.
    pub fn due_policies(&self, now: DateTime<Utc>) -> Result<Vec<Policy>> {
        rows::query(
            &self.conn(),
            &format!(
                "{POLICY_SELECT} WHERE p.enabled = ?2 AND p.running = ?3 AND p.next_run_at <= ?1
                 AND COALESCE(v.host, i.host) = ?4 ORDER BY p.next_run_at"
            ),
            params![now, true, false, self.host],
            policy,
        )
    }

    /// Claim the run of `id` that was due at `due`: it is marked running
    /// and its next run set to `next`. False when another claimed it.
    pub fn claim_policy_run(
        &self,
        id: Uuid,
        due: DateTime<Utc>,
        now: DateTime<Utc>,
        next: Option<DateTime<Utc>>,
    ) -> Result<bool> {
        let n = self
            .conn()
            .execute(
                "UPDATE policies SET running = ?4, last_run_at = ?5, next_run_at = ?6
                 WHERE id = ?1 AND next_run_at = ?2 AND running = ?3",
                params![id.sql(), due, false, true, now, next],
            )
            .map_err(db_err("claim a policy's run"))?;
        Ok(n == 1)
    }

    /// A run ended: say what it did.
    pub fn policy_run_ended(&self, id: Uuid, result: &str) -> Result<()> {
        self.update(
            "end a policy's run",
            "UPDATE policies SET running = ?2, last_result = ?3 WHERE id = ?1",
            params![id.sql(), false, result],
        )
    }

    /// Runs this host's daemon left marked running when it stopped: they
    /// ended with it.
    pub fn end_interrupted_policy_runs(&self) -> Result<()> {
        self.update(
            "interrupted policy runs",
            "UPDATE policies SET running = ?1, last_result = ?2
             WHERE running = ?3 AND id IN (
                SELECT p.id FROM policies p LEFT JOIN volumes v ON v.id = p.volume_id
                  LEFT JOIN instances i ON i.id = p.instance_id WHERE COALESCE(v.host, i.host) = ?4)",
            params![false, "interrupted: the daemon stopped during the run", true, self.host],
        )
    }

    pub fn delete_policy(&self, id: Uuid) -> Result<()> {
        self.update(
            "delete policy",
            "DELETE FROM policies WHERE id = ?1",
            params![id.sql()],
        )
    }

    /// Remove the policies of a volume or an instance being deleted.
    pub fn delete_policies_of(&self, target: Uuid) -> Result<()> {
        self.update(
            "delete policies",
            "DELETE FROM policies WHERE volume_id = ?1 OR instance_id = ?1",
            params![target.sql()],
        )
    }
}
