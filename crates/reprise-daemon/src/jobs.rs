//! Jobs: every long operation runs as one, with a state, progress and a
//! log kept in the catalog.
//!
//! Invariants: a job is in the catalog (Queued) before its work starts, and
//! reaches a final state (Succeeded or Failed, with the error) when the
//! work ends, however it ends — a panic in the work fails the job too.
//! At startup, [`fail_interrupted`] fails every job a previous run left
//! Queued or Running, so none stays Running after a restart.
//!
//! An operation [`reserve`]s its job before it changes anything: the
//! reservation records the job (Queued) only if the account's plan allows
//! one more concurrent job, in the same transaction as the count. An
//! operation refused after its reservation drops it, and the row goes.

use crate::app::App;
use reprise_catalog::{now, Scope};
use reprise_core::model::{Account, Job, JobState};
use reprise_core::plan::Demand;
use reprise_core::{Error, Result};
use std::future::Future;
use std::sync::Arc;
use uuid::Uuid;

/// What a job's work uses to report.
#[derive(Clone)]
pub struct JobCtx {
    pub app: Arc<App>,
    pub id: Uuid,
    progress: Arc<Progress>,
}

/// Progress is written at most this often (the first and the last
/// always): each write is a durable commit.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// How a job's progress reaches the catalog (see [`JobCtx::progress`]).
#[derive(Default)]
struct Progress {
    state: std::sync::Mutex<ProgressState>,
    /// Held while writing, so that writes land one at a time: the number
    /// of the last figures written (a write of older ones is skipped).
    written: std::sync::Mutex<u64>,
}

#[derive(Default)]
struct ProgressState {
    /// When the last write was started.
    started: Option<std::time::Instant>,
    /// A write is on its way in the background.
    in_flight: bool,
    /// Figures handed to a write so far.
    handed: u64,
}

impl JobCtx {
    pub fn log(&self, message: impl AsRef<str>) {
        tracing::info!(job = %self.id, "{}", message.as_ref());
        if let Err(e) = self.app.catalog.job_log(self.id, message.as_ref()) {
            tracing::warn!(job = %self.id, "cannot log: {e}");
        }
    }

    /// Record how far the job is. Intermediate figures are written in the
    /// background, at most every [`PROGRESS_EVERY`] and one write at a
    /// time: the work calling this must not wait for a durable commit (a
    /// backup's pipeline stood still for each one while the disk was busy
    /// with its chunks). The last figures (`done == total`) are written
    /// before this returns, and no older figures after them.
    pub fn progress(&self, done: u64, total: u64) {
        self.progress_also(done, total, |_| {});
    }

    /// [`JobCtx::progress`], with `also` writing the same figures
    /// elsewhere in the catalog (a snapshot's own progress) at the same
    /// moments.
    pub fn progress_also(
        &self,
        done: u64,
        total: u64,
        also: impl FnOnce(&reprise_catalog::Catalog) + Send + 'static,
    ) {
        let finished = done >= total;
        let runtime = tokio::runtime::Handle::try_current();
        let background = !finished && runtime.is_ok();
        let number = {
            let mut state = lock(&self.progress.state);
            let due = state.started.is_none_or(|t| t.elapsed() >= PROGRESS_EVERY);
            if !finished && (!due || state.in_flight) {
                return;
            }
            state.started = Some(std::time::Instant::now());
            state.in_flight = background;
            state.handed += 1;
            state.handed
        };
        let write = move |ctx: &JobCtx| {
            let mut written = lock(&ctx.progress.written);
            if number > *written {
                also(&ctx.app.catalog);
                if let Err(e) = ctx.app.catalog.job_progress(ctx.id, done, total) {
                    tracing::warn!(job = %ctx.id, "cannot record progress: {e}");
                }
                *written = number;
            }
        };
        match runtime {
            Ok(runtime) if background => {
                let ctx = self.clone();
                runtime.spawn_blocking(move || {
                    write(&ctx);
                    lock(&ctx.progress.state).in_flight = false;
                });
            }
            _ => write(self),
        }
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a job acts on.
pub struct Target<'a> {
    pub kind: &'a str,
    pub id: Uuid,
    pub name: &'a str,
}

/// The target of the region's own work (a sweep, a recover, a catalog
/// backup).
pub const REGION: Target<'static> = Target {
    kind: "region",
    id: Uuid::nil(),
    name: "region",
};

/// A job recorded (Queued) and counted against its account's plan, whose
/// work has not started. Dropped without [`Slot::spawn`], its row goes —
/// but a deferred request's, which the request's runner settles.
pub struct Slot {
    app: Arc<App>,
    job: Option<Job>,
    deferred: bool,
}

tokio::task_local! {
    /// Set while a deferred request runs (`crate::deferred`): the Queued
    /// job it has waited with, which the first job it reserves becomes.
    pub static DEFERRED_JOB: std::cell::Cell<Option<Uuid>>;
}

/// Record a job for `account` if its plan allows one more at once
/// (`job_limit_reached` otherwise).
pub fn reserve(
    app: &Arc<App>,
    account: Uuid,
    kind: &str,
    target: Target<'_>,
    steps: u64,
) -> Result<Slot> {
    let deferred = DEFERRED_JOB.try_with(|j| j.take()).ok().flatten();
    let job = Job {
        id: deferred.unwrap_or_else(Uuid::new_v4),
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
        host: app.host_name().to_string(),
        created_at: now(),
        started_at: None,
        finished_at: None,
    };
    let one_job = Demand {
        jobs: 1,
        ..Default::default()
    };
    if deferred.is_some() {
        // Counted against the plan when it was deferred.
        if !app.catalog.requeue_job(&job)? {
            return Err(Error::conflict(
                "job_not_waiting",
                format!(
                    "job {} no longer waits for its request (cancelled, or already taken)",
                    job.id
                ),
            ));
        }
    } else {
        app.catalog
            .admit(account, Scope::default(), &one_job, |c| {
                reprise_catalog::write::insert_job(c, &job)
            })?;
    }
    Ok(Slot {
        app: app.clone(),
        job: Some(job),
        deferred: deferred.is_some(),
    })
}

impl Slot {
    pub fn id(&self) -> Uuid {
        self.job.as_ref().map(|j| j.id).unwrap_or_default()
    }

    /// Run `work` in the background; returns the job as recorded.
    pub fn spawn<F, Fut>(mut self, work: F) -> Job
    where
        F: FnOnce(JobCtx) -> Fut + Send + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        let job = self.job.take().expect("a slot spawns once");
        run(&self.app, &job, work);
        job
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(job) = self.job.as_ref().filter(|_| !self.deferred) {
            if let Err(e) = self.app.catalog.delete_job(job.id) {
                tracing::warn!(job = %job.id, "cannot remove an unused job: {e}");
            }
        }
    }
}

/// Record a job and run `work` in the background; returns the job as
/// recorded (Queued). For operations that change nothing before their job.
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
    Ok(reserve(app, account, kind, target, steps)?.spawn(work))
}

fn run<F, Fut>(app: &Arc<App>, job: &Job, work: F)
where
    F: FnOnce(JobCtx) -> Fut + Send + 'static,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let ctx = JobCtx {
        app: app.clone(),
        id: job.id,
        progress: Default::default(),
    };
    let kind = job.kind.clone();
    tokio::spawn(async move {
        let catalog = &ctx.app.catalog;
        let _ = catalog.job_started(ctx.id);
        let started = std::time::Instant::now();
        // The work runs in its own task so that a panic is caught here.
        let outcome = tokio::spawn(work(ctx.clone())).await;
        let result = match outcome {
            Ok(r) => r,
            Err(e) => Err(Error::internal(format!("the job's work crashed: {e}")).with_source(e)),
        };
        let failed = result.as_ref().err().map(|e| e.code.clone());
        match result {
            Ok(()) => {
                ctx.log("done");
                let _ = catalog.job_finished(ctx.id, JobState::Succeeded, None);
            }
            Err(e) => {
                tracing::warn!(job = %ctx.id, kind, "failed: {}", e.chain());
                ctx.log(format!("failed: {e}"));
                let _ = catalog.job_finished(ctx.id, JobState::Failed, Some(&e));
            }
        }
        ctx.app
            .metrics
            .job_finished(&kind, started.elapsed(), failed.as_deref());
        ctx.app.job_finished.notify_waiters();
    });
}

/// Wait until `job` ends; its failure, named, is the caller's.
pub async fn finished(app: &App, job: &Job) -> Result<()> {
    loop {
        let ended = app.job_finished.notified();
        let now = app.catalog.job(None, &job.id.to_string())?;
        if now.state.is_final() {
            return match now.error {
                Some(e) => {
                    Err(Error::from(e).context(format!("{} of '{}'", job.kind, job.target_name)))
                }
                None => Ok(()),
            };
        }
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), ended).await;
    }
}

/// Cancel a job of `account` that waits for its host (a request kept
/// while the host was down, see `crate::deferred`): it ends Cancelled and
/// its request never runs. A job its host has taken cannot be cancelled.
pub fn cancel(app: &App, account: &Account, id: &str) -> Result<Job> {
    let job = app.catalog.job(Some(account.id), id)?;
    let why = Error::conflict(
        "job_cancelled",
        format!(
            "cancelled by account '{}' while it waited for host '{}'",
            account.name, job.host
        ),
    );
    if !app.catalog.cancel_deferred(job.id, &why)? {
        let now = app.catalog.job(Some(account.id), id)?;
        return Err(Error::conflict(
            "job_not_cancellable",
            format!(
                "job {} is {}: only a job waiting for its host (kept while the host is down) can be \
                 cancelled",
                job.id,
                now.state.as_str()
            ),
        ));
    }
    app.job_finished.notify_waiters();
    tracing::info!(job = %job.id, kind = job.kind, host = job.host, "waiting job cancelled");
    app.catalog.job(Some(account.id), id)
}

/// Say in a job's log which policy started it.
pub fn log_by_policy(app: &App, job: Uuid, policy: &reprise_core::model::Policy) {
    let _ = app.catalog.job_log(
        job,
        &format!("started by policy '{}' ({})", policy.name, policy.id),
    );
}

/// Fail the jobs a previous run of the daemon left unfinished; returns
/// them.
pub fn fail_interrupted(app: &App) -> Result<Vec<Job>> {
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
    Ok(jobs)
}
