//! Jobs: each long operation's row, its progress and log lines, and its
//! end with the error it met.

use crate::db::{params, Db, DbExt, Optional};
use crate::rows::{self, Sql};
use crate::{db_err, now, write, Catalog};
use reprise_core::error::WireError;
use reprise_core::model::*;
use reprise_core::{Error, Result};
use uuid::Uuid;

/// The longest text a job's log line or error keeps: what a guest agent
/// or QEMU answers can be megabytes, and a job is read whole.
pub const JOB_TEXT_MAX: usize = 4096;

/// `text`, cut at [`JOB_TEXT_MAX`] bytes (on a character boundary) with
/// what was cut said.
pub fn capped(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= JOB_TEXT_MAX {
        return text.into();
    }
    let mut end = JOB_TEXT_MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} more bytes cut)", &text[..end], text.len() - end).into()
}

impl Catalog {
    pub fn insert_job(&self, job: &Job) -> Result<()> {
        write::insert_job(&self.conn(), job)
    }

    /// Remove a job that never ran (its operation was refused after the
    /// job was reserved).
    pub fn delete_job(&self, id: Uuid) -> Result<()> {
        self.update(
            "delete job",
            "DELETE FROM jobs WHERE id = ?1 AND state = 'Queued'",
            params![id.sql()],
        )
    }

    /// Forget the jobs that ended before `before` (their log lines with
    /// them): how many. Jobs still queued or running are kept whatever
    /// their age.
    pub fn prune_jobs(&self, before: chrono::DateTime<chrono::Utc>) -> Result<u64> {
        let n = self
            .conn()
            .execute(
                "DELETE FROM jobs WHERE state IN ('Succeeded', 'Failed', 'Cancelled')
                   AND finished_at IS NOT NULL AND finished_at < ?1",
                params![before],
            )
            .map_err(db_err("prune jobs"))?;
        Ok(n as u64)
    }

    pub fn job_started(&self, id: Uuid) -> Result<()> {
        self.update(
            "job started",
            "UPDATE jobs SET state = 'Running', started_at = ?2 WHERE id = ?1",
            params![id.sql(), now()],
        )
    }

    pub fn job_progress(&self, id: Uuid, done: u64, total: u64) -> Result<()> {
        self.update(
            "job progress",
            "UPDATE jobs SET progress_done = ?2, progress_total = ?3 WHERE id = ?1",
            params![id.sql(), done as i64, total as i64],
        )
    }

    pub fn job_log(&self, id: Uuid, message: &str) -> Result<()> {
        self.update(
            "job log",
            "INSERT INTO job_log (job_id, at, message) VALUES (?1, ?2, ?3)",
            params![id.sql(), now(), capped(message).as_ref()],
        )
    }

    pub fn job_finished(&self, id: Uuid, state: JobState, error: Option<&Error>) -> Result<()> {
        let error = error.map(|e| {
            let mut wire = WireError::from(e);
            wire.message = capped(&wire.message).into_owned();
            serde_json::to_string(&wire).unwrap_or_default()
        });
        self.update(
            "job finished",
            "UPDATE jobs SET state = ?2, error = ?3, finished_at = ?4 WHERE id = ?1",
            params![id.sql(), state.as_str(), error, now()],
        )
    }

    /// A job of `account` (any account when `None`).
    pub fn job(&self, account: Option<Uuid>, id: &str) -> Result<Job> {
        let conn = self.conn();
        let mut job = conn
            .query_row(
                &format!(
                    "{} WHERE id = ?1 AND (CAST(?2 AS TEXT) IS NULL OR account_id = ?2)",
                    rows::JOB_SELECT
                ),
                params![id, account.sql()],
                rows::job,
            )
            .optional()
            .map_err(db_err("job"))?
            .ok_or_else(|| Error::not_found("job", id))?;
        job.log = rows::query(
            &conn,
            "SELECT at, message FROM job_log WHERE job_id = ?1 ORDER BY rowid",
            params![job.id.sql()],
            |r| {
                Ok(JobLogLine {
                    at: r.get(0)?,
                    message: r.get(1)?,
                })
            },
        )?;
        Ok(job)
    }

    /// The latest jobs of an account, newest first (without their logs).
    pub fn list_jobs(&self, account: Uuid, limit: u32) -> Result<Vec<Job>> {
        rows::query(
            &self.conn(),
            &format!(
                "{} WHERE account_id = ?1 ORDER BY created_at DESC LIMIT ?2",
                rows::JOB_SELECT
            ),
            params![account.sql(), limit],
            rows::job,
        )
    }

    /// Jobs by state across accounts, for metrics.
    pub fn count_jobs_by_state(&self) -> Result<Vec<(String, u64)>> {
        rows::query(
            &self.conn(),
            "SELECT state, COUNT(*) FROM jobs GROUP BY state",
            params![],
            |r| Ok((r.get(0)?, r.get::<i64>(1)? as u64)),
        )
    }

    /// The jobs of this daemon's host left Queued or Running when it
    /// stopped, but for those waiting for it to run a deferred request.
    pub fn unfinished_jobs(&self) -> Result<Vec<Job>> {
        rows::query(
            &self.conn(),
            &format!(
                "{} WHERE state IN ('Queued', 'Running') AND host = ?1
                   AND NOT (state = 'Queued' AND id IN (SELECT job_id FROM deferred_requests))
                 ORDER BY created_at",
                rows::JOB_SELECT
            ),
            params![self.host],
            rows::job,
        )
    }

    /// Record `job` (Queued, on the down host that must run it) and the
    /// request it waits to run, in one transaction counted against the
    /// account's plan like any job.
    pub fn defer(&self, job: &Job, request: &DeferredRequest) -> Result<()> {
        let one_job = reprise_core::plan::Demand {
            jobs: 1,
            ..Default::default()
        };
        self.admit(job.account_id, crate::Scope::default(), &one_job, |c| {
            write::insert_job(c, job)?;
            c.execute(
                "INSERT INTO deferred_requests (job_id, host, method, path, caller, body, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![job.id.sql(), job.host, request.method, request.path, request.caller, request.body, job.created_at],
            )
            .map_err(db_err("defer a request"))?;
            Ok(())
        })
    }

    /// The requests deferred for this daemon's host, oldest first.
    pub fn deferred_requests(&self) -> Result<Vec<DeferredRequest>> {
        rows::query(
            &self.conn(),
            "SELECT job_id, method, path, caller, body FROM deferred_requests
             WHERE host = ?1 ORDER BY created_at, job_id",
            params![self.host],
            |r| {
                Ok(DeferredRequest {
                    job_id: r.get::<String>(0)?.parse().unwrap_or_default(),
                    method: r.get(1)?,
                    path: r.get(2)?,
                    caller: r.get(3)?,
                    body: r.get(4)?,
                })
            },
        )
    }

    /// A deferred request was run (or can no longer be).
    pub fn forget_deferred(&self, job: Uuid) -> Result<()> {
        self.update(
            "forget a deferred request",
            "DELETE FROM deferred_requests WHERE job_id = ?1",
            params![job.sql()],
        )
    }

    /// Make the Queued job `job.id` (a deferred request's) the job of the
    /// operation that request started: its kind, target and steps. The
    /// request is taken in the same transaction, so the job can no longer
    /// be cancelled ([`Catalog::cancel_deferred`]). False when it no
    /// longer waits (it was cancelled, or already taken), or is not a job
    /// of `job.account_id` kept for `job.host`.
    pub fn requeue_job(&self, job: &Job) -> Result<bool> {
        let conn = self.conn();
        let tx = conn.transaction().map_err(db_err("requeue job"))?;
        let taken = tx
            .execute(
                "DELETE FROM deferred_requests WHERE job_id = ?1 AND host = ?2",
                params![job.id.sql(), job.host],
            )
            .map_err(db_err("requeue job"))?;
        let requeued = tx
            .execute(
                "UPDATE jobs SET kind = ?2, target_kind = ?3, target_id = ?4, target_name = ?5,
                                 progress_total = ?6
                 WHERE id = ?1 AND state = 'Queued' AND account_id = ?7",
                params![
                    job.id.sql(),
                    job.kind,
                    job.target_kind,
                    job.target_id.sql(),
                    job.target_name,
                    job.progress_total as i64,
                    job.account_id.sql()
                ],
            )
            .map_err(db_err("requeue job"))?;
        if taken != 1 || requeued != 1 {
            return Ok(false);
        }
        tx.commit().map_err(db_err("requeue job"))?;
        Ok(true)
    }

    /// Cancel a job that waits for its host to run its request: Cancelled
    /// with `why`, the request forgotten, in one transaction. False when
    /// the job does not wait (any more).
    pub fn cancel_deferred(&self, job: Uuid, why: &Error) -> Result<bool> {
        let mut wire = WireError::from(why);
        wire.message = capped(&wire.message).into_owned();
        let error = serde_json::to_string(&wire).unwrap_or_default();
        let conn = self.conn();
        let tx = conn.transaction().map_err(db_err("cancel job"))?;
        let forgotten = tx
            .execute(
                "DELETE FROM deferred_requests WHERE job_id = ?1",
                params![job.sql()],
            )
            .map_err(db_err("cancel job"))?;
        let cancelled = tx
            .execute(
                "UPDATE jobs SET state = 'Cancelled', error = ?2, finished_at = ?3
                 WHERE id = ?1 AND state = 'Queued'",
                params![job.sql(), error, now()],
            )
            .map_err(db_err("cancel job"))?;
        if forgotten != 1 || cancelled != 1 {
            return Ok(false);
        }
        tx.commit().map_err(db_err("cancel job"))?;
        Ok(true)
    }
}

/// A request kept for a host that was down (see [`Catalog::defer`]).
#[derive(Debug, Clone, PartialEq)]
pub struct DeferredRequest {
    pub job_id: Uuid,
    pub method: String,
    /// The path and query, as the client sent them.
    pub path: String,
    /// `ACCOUNT_ID KEY_ID`: who asked, with which key.
    pub caller: String,
    /// The JSON body (empty for none).
    pub body: String,
}
