//! Jobs: every long operation runs as one, with a state, progress and a
//! log kept in the catalog.
//!
//! Invariants: a job is in the catalog (Queued) before its work starts, and
//! reaches a final state (Succeeded or Failed, with the error) when the
//! work ends, however it ends — a panic in the work fails the job too.
//! At startup, [`fail_interrupted`] fails every job a previous run left
//! Queued or Running, so none stays Running after a restart.

use crate::app::App;
use reprise_catalog::now;
use reprise_core::model::{Job, JobState};
use reprise_core::{Error, Result};
use std::future::Future;
use std::sync::Arc;
use uuid::Uuid;

/// What a job's work uses to report.
#[derive(Clone)]
pub struct JobCtx {
    pub app: Arc<App>,
    pub id: Uuid,
}

impl JobCtx {
    pub fn log(&self, message: impl AsRef<str>) {
        tracing::info!(job = %self.id, "{}", message.as_ref());
        if let Err(e) = self.app.catalog.job_log(self.id, message.as_ref()) {
            tracing::warn!(job = %self.id, "cannot log: {e}");
        }
    }

    pub fn progress(&self, done: u64, total: u64) {
        if let Err(e) = self.app.catalog.job_progress(self.id, done, total) {
            tracing::warn!(job = %self.id, "cannot record progress: {e}");
        }
    }
}

/// What a job acts on.
pub struct Target<'a> {
    pub kind: &'a str,
    pub id: Uuid,
    pub name: &'a str,
}

/// Record a job and run `work` in the background; returns the job as
/// recorded (Queued).
pub fn spawn<F, Fut>(
    app: &Arc<App>,
    account: Uuid,
    kind: &str,
    target: Target<'_>,
    steps: u64,
    work: F,
) -> Result<Job>
where
    F: FnOnce(JobCtx) -> Fut + Send + 'static,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let job = Job {
        id: Uuid::new_v4(),
        account_id: account,
        kind: kind.to_string(),
        target_kind: target.kind.to_string(),
        target_id: target.id,
        target_name: target.name.to_string(),
        state: JobState::Queued,
        progress_done: 0,
        progress_total: steps,
        error: None,
        log: Vec::new(),
        created_at: now(),
        started_at: None,
        finished_at: None,
    };
    app.catalog.insert_job(&job)?;
    app.metrics.job_started();
    let ctx = JobCtx {
        app: app.clone(),
        id: job.id,
    };
    let kind = job.kind.clone();
    tokio::spawn(async move {
        let catalog = &ctx.app.catalog;
        let _ = catalog.job_started(ctx.id);
        // The work runs in its own task so that a panic is caught here.
        let outcome = tokio::spawn(work(ctx.clone())).await;
        let result = match outcome {
            Ok(r) => r,
            Err(e) => Err(Error::internal(format!("the job's work crashed: {e}"))),
        };
        match result {
            Ok(()) => {
                ctx.log("done");
                let _ = catalog.job_finished(ctx.id, JobState::Succeeded, None);
            }
            Err(e) => {
                tracing::warn!(job = %ctx.id, kind, "failed: {e}");
                ctx.log(format!("failed: {e}"));
                let _ = catalog.job_finished(ctx.id, JobState::Failed, Some(&e));
            }
        }
        ctx.app.job_finished.notify_waiters();
    });
    Ok(job)
}

/// Fail the jobs a previous run of the daemon left unfinished.
pub fn fail_interrupted(app: &App) -> Result<usize> {
    let jobs = app.catalog.unfinished_jobs()?;
    for job in &jobs {
        let e = Error::unavailable(
            "daemon_restarted",
            "the daemon stopped while this job ran; the state of its target was reconciled at restart",
        );
        app.catalog.job_log(job.id, &format!("failed: {e}"))?;
        app.catalog
            .job_finished(job.id, JobState::Failed, Some(&e))?;
        tracing::warn!(job = %job.id, kind = job.kind, "failed: interrupted by a daemon restart");
    }
    Ok(jobs.len())
}
