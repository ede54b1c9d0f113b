//! Work asked of a host that is down waits for it. A request that would
//! start a job on a `Down` host's volume or instance (a snapshot, a start
//! or stop, a recovery point made, reverted to or deleted, a volume
//! reverted) is kept in the catalog with a Queued job, whose id the client
//! gets at once (202) and follows like any other; the job's log says what
//! it waits for. When the host's daemon starts again, after it has settled
//! its own state, it runs its kept requests in the order they came, each
//! sent to itself as the other daemons send requests on (marked, naming
//! its caller) with [`JOB`]: the job the request starts is the one the
//! client holds. A request refused then (the volume was deleted meanwhile,
//! the instance is already running) fails that job with the refusal.
//!
//! Until then the job can be cancelled (`POST /jobs/{id}/cancel`): it
//! ends Cancelled and its request is forgotten.
//!
//! Invariants: a kept request and its job are written in one transaction;
//! a kept request is forgotten in the transaction in which its host's
//! operation takes its job (so a cancel and a run never both happen), or
//! once its job has been settled or cancelled; a job waiting for its
//! request is not taken for an interrupted one at startup. Requests that answer at once (a delete, an attach)
//! are still refused with `host_down`: their answer cannot wait.

use crate::app::App;
use crate::forward;
use crate::http::{ApiError, Authenticated};
use axum::body::Body;
use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use reprise_catalog::{DeferredRequest, HostRow};
use reprise_core::error::WireError;
use reprise_core::model::{Job, JobState};
use reprise_core::{Error, ErrorKind, Result};
use std::sync::Arc;
use uuid::Uuid;

/// The header of a deferred request run by its host: the job it waited
/// with. Trusted only on a request marked by a daemon of the region.
pub const JOB: &str = "x-reprise-deferred-job";

/// The most a kept request's body may be.
const BODY_MAX: usize = 1 << 20;

/// The job a request for a `Down` host's resource would start (its kind,
/// and what it acts on: a volume or an instance, by the reference in the
/// path or, for a snapshot, in the body's `volume`); none for a request
/// that cannot wait.
fn job_kind(method: &Method, path: &str) -> Option<(&'static str, &'static str, Option<String>)> {
    let path = path.split('?').next().unwrap_or(path);
    let segments: Vec<&str> = path
        .trim_start_matches("/api/v1")
        .trim_matches('/')
        .split('/')
        .collect();
    let post = method == Method::POST;
    let of = |s: &str| Some(s.to_string());
    match (post, method == Method::DELETE, segments.as_slice()) {
        (true, _, ["snapshots"]) => Some(("snapshot.create", "volume", None)),
        (true, _, ["volumes", v, "revert"]) => Some(("volume.revert", "volume", of(v))),
        (true, _, ["instances", i, "start"]) => Some(("instance.start", "instance", of(i))),
        (true, _, ["instances", i, "stop"]) => Some(("instance.stop", "instance", of(i))),
        (true, _, ["instances", i, "restart"]) => Some(("instance.restart", "instance", of(i))),
        (true, _, ["instances", i, "points"]) => Some(("point.create", "instance", of(i))),
        (true, _, ["instances", i, "points", _, "revert"]) => {
            Some(("point.revert", "instance", of(i)))
        }
        (_, true, ["instances", i, "points", _]) => Some(("point.delete", "instance", of(i))),
        _ => None,
    }
}

/// Keep `req` for `host` (Down) with a Queued job, and answer that job
/// (202); a request that cannot wait is refused `host_down`.
pub(crate) async fn defer(
    app: &App,
    caller: &Authenticated,
    req: Request,
    host: &HostRow,
    path_and_query: &str,
) -> Response {
    let Some((kind, target_kind, reference)) = job_kind(req.method(), path_and_query) else {
        return ApiError(crate::hosts::down(host)).into_response();
    };
    let method = req.method().to_string();
    let body = match axum::body::to_bytes(req.into_body(), BODY_MAX).await {
        Ok(b) => b,
        Err(e) => {
            return ApiError(Error::invalid(
                "body_invalid",
                format!("the request's body: {e}"),
            ))
            .into_response()
        }
    };
    let Ok(body) = String::from_utf8(body.to_vec()) else {
        return ApiError(Error::invalid(
            "body_invalid",
            "the request's body is not UTF-8",
        ))
        .into_response();
    };
    let reference = reference.or_else(|| {
        serde_json::from_str::<serde_json::Value>(&body)
            .ok()?
            .get("volume")?
            .as_str()
            .map(str::to_string)
    });
    let account = caller.account.id;
    let target = reference.as_deref().and_then(|r| match target_kind {
        "volume" => app.catalog.volume(account, r).ok().map(|v| (v.id, v.name)),
        _ => app
            .catalog
            .instance(account, r)
            .ok()
            .map(|i| (i.id, i.name)),
    });
    let (target_id, target_name) =
        target.unwrap_or_else(|| (Uuid::nil(), reference.unwrap_or_default()));
    let job = Job {
        id: Uuid::new_v4(),
        account_id: account,
        kind: kind.into(),
        target_kind: target_kind.into(),
        target_id,
        target_name,
        state: JobState::Queued,
        progress_done: 0,
        progress_total: 0,
        error: None,
        log: Vec::new(),
        host: host.name.clone(),
        created_at: reprise_catalog::now(),
        started_at: None,
        finished_at: None,
    };
    let request = DeferredRequest {
        job_id: job.id,
        method,
        path: path_and_query.to_string(),
        caller: format!("{} {}", account, caller.key),
        body,
    };
    let kept = app.catalog.defer(&job, &request).and_then(|()| {
        app.catalog.job_log(
            job.id,
            &format!(
                "host '{}' is down: this waits for it and runs when it is back",
                host.name
            ),
        )
    });
    match kept {
        Ok(()) => (
            StatusCode::ACCEPTED,
            axum::Json(reprise_core::model::JobStarted { job }),
        )
            .into_response(),
        Err(e) => ApiError(e).into_response(),
    }
}

/// The job id a marked request carries in [`JOB`], if any.
pub fn job_of(req: &Request) -> Option<Uuid> {
    req.headers()
        .get(JOB)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Run the requests kept for this host, oldest first (at startup, once
/// the daemon listens and has settled its own state). A request that
/// cannot be sent (this daemon's own address does not answer) stays for
/// the next start.
pub async fn run_kept(app: Arc<App>) {
    let kept = match app.catalog.deferred_requests() {
        Ok(k) => k,
        Err(e) => {
            tracing::warn!("cannot read the requests kept for this host: {e}");
            return;
        }
    };
    if kept.is_empty() {
        return;
    }
    let me = match crate::hosts::known(&app, app.host_name()) {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!("cannot run the requests kept for this host: {e}");
            return;
        }
    };
    tracing::info!(
        requests = kept.len(),
        "running the requests kept while this host was down"
    );
    for request in kept {
        if let Err(e) = run_one(&app, &me, &request).await {
            tracing::warn!(job = %request.job_id, "a kept request stays for the next start: {e}");
        }
    }
}

async fn run_one(app: &App, me: &HostRow, request: &DeferredRequest) -> Result<()> {
    let job = app.catalog.job(None, &request.job_id.to_string())?;
    if job.state != JobState::Queued {
        return app.catalog.forget_deferred(request.job_id);
    }
    let ids: Vec<Uuid> = request
        .caller
        .split(' ')
        .filter_map(|id| id.parse().ok())
        .collect();
    let [account, key] = ids[..] else {
        return settle(
            app,
            request,
            Err(Error::internal("a kept request names no caller")),
        );
    };
    let account = match app.catalog.account(&account.to_string()) {
        Ok(a) => a,
        Err(e) => return settle(app, request, Err(e)),
    };
    let mut req = Request::builder()
        .method(request.method.as_str())
        .uri(&request.path)
        .header(JOB, request.job_id.to_string())
        .header(axum::http::header::CONTENT_TYPE, "application/json")
        .body(Body::from(request.body.clone()))
        .map_err(|e| Error::internal(format!("a kept request: {e}")))?;
    req.extensions_mut().insert(Authenticated { account, key });
    let answer = forward::send_on(app, me, req, &request.path).await;
    let status = answer.status();
    let bytes = axum::body::to_bytes(answer.into_body(), BODY_MAX)
        .await
        .unwrap_or_default();
    if status == StatusCode::SERVICE_UNAVAILABLE && is_code(&bytes, "host_unreachable") {
        return Err(Error::unavailable(
            "host_unreachable",
            "this daemon's own address does not answer",
        ));
    }
    let became_job = status.is_success()
        && serde_json::from_slice::<reprise_core::model::JobStarted>(&bytes)
            .is_ok_and(|started| started.job.id == request.job_id);
    let outcome = if became_job {
        None
    } else if status.is_success() {
        Some(Ok(()))
    } else {
        Some(Err(refusal(status, &bytes)))
    };
    match outcome {
        // Its host's operation took the request with the job.
        None => Ok(()),
        Some(outcome) => settle(app, request, outcome),
    }
}

/// Forget a request that started no job, its job finished with the
/// request's outcome (a refusal, or an answer given at once).
fn settle(app: &App, request: &DeferredRequest, outcome: Result<()>) -> Result<()> {
    let job = app.catalog.job(None, &request.job_id.to_string())?;
    if job.state == JobState::Queued {
        match &outcome {
            Err(e) => app
                .catalog
                .job_finished(job.id, JobState::Failed, Some(e))?,
            Ok(()) => app
                .catalog
                .job_finished(job.id, JobState::Succeeded, None)?,
        }
    }
    app.catalog.forget_deferred(request.job_id)
}

fn is_code(body: &[u8], code: &str) -> bool {
    serde_json::from_slice::<ErrorBody>(body).is_ok_and(|b| b.error.code == code)
}

#[derive(serde::Deserialize)]
struct ErrorBody {
    error: WireError,
}

/// The error a refused request answered, as the job's error.
/// The error a daemon's answer names (its kind, code and message).
pub(crate) fn refusal(status: StatusCode, body: &[u8]) -> Error {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(b) => Error::new(b.error.kind, b.error.code, b.error.message),
        Err(_) => Error::new(
            ErrorKind::Internal,
            "request_failed",
            format!("the request answered {status}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_work_that_runs_as_a_job_waits() {
        let kind = |m: Method, p: &str| job_kind(&m, p);
        assert_eq!(
            kind(Method::POST, "/api/v1/snapshots?x=1"),
            Some(("snapshot.create", "volume", None))
        );
        assert_eq!(
            kind(Method::POST, "/api/v1/instances/vm/points/p1/revert"),
            Some(("point.revert", "instance", Some("vm".into())))
        );
        assert_eq!(
            kind(Method::DELETE, "/api/v1/instances/vm/points/p1"),
            Some(("point.delete", "instance", Some("vm".into())))
        );
        assert_eq!(
            kind(Method::POST, "/api/v1/volumes/data/revert"),
            Some(("volume.revert", "volume", Some("data".into())))
        );
        // Answered at once: refused while the host is down.
        for (m, p) in [
            (Method::DELETE, "/api/v1/volumes/data"),
            (Method::POST, "/api/v1/volumes/data/attach"),
            (Method::POST, "/api/v1/volumes/data/resize"),
            (Method::DELETE, "/api/v1/instances/vm"),
        ] {
            assert_eq!(kind(m.clone(), p), None, "{m} {p}");
        }
    }
}
