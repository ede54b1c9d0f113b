//! The HTTP API under `/api/v1`: routing, authentication, and the mapping
//! of errors to responses.
//!
//! Every route but `health` and `openapi.json` needs an API key
//! (`Authorization: Bearer KEY` or `X-API-Key: KEY`), checked once, by the
//! [`authenticate`] middleware, which also records the key's use. Errors
//! are JSON `{"error": {"kind", "code", "message"}}` with the status chosen
//! from the kind by [`reprise_core::ErrorKind::http_status`] — nowhere
//! else.
//!
//! Tenants never see the host: answers to a non-admin carry no host path,
//! socket or process id ([`ForCaller`]), and the text of its errors and
//! job logs has the daemon's directories scrubbed ([`App::scrub`]). The
//! admin sees everything. `/metrics` needs the admin key (or listens on the
//! operator's own `metrics_listen` address).
//!
//! The web console ([`reprise_console`]) is served beside the API, at `/`
//! and `/console/*`, without a key: it is static files, and it asks for a
//! key before it calls the API.

use crate::app::App;
use crate::ops::{
    accounts, clones, deletes, instances, points, policies, recovery, restore, snapshots,
    templates, uploads, volumes,
};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use reprise_core::error::ErrorBody;
use reprise_core::model::*;
use reprise_core::plan::Plan;
use reprise_core::{Error, ErrorKind};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use uuid::Uuid;

pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    /// The edge: the error goes out as kind, code and message; a server-side
    /// failure is logged here with its causes, which never leave the host.
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.kind.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::warn!(code = self.0.code, "request failed: {}", self.0.chain());
        }
        let mut resp = (
            status,
            Json(ErrorBody {
                error: (&self.0).into(),
            }),
        )
            .into_response();
        // For [`authenticate`], which scrubs what a tenant reads.
        resp.extensions_mut().insert(self.0);
        resp
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// The body of a request that takes none, read and dropped: a body left
/// unread can make the server close a keep-alive connection that the client
/// is about to reuse.
type IgnoredBody = axum::body::Bytes;

/// Who a request comes from: set by [`authenticate`] when a valid key came.
#[derive(Clone)]
pub(crate) struct Authenticated {
    pub(crate) account: Account,
    pub(crate) key: Uuid,
}

/// The account whose key came with the request (401 `api_key_missing`
/// when none did).
pub struct Caller(pub Account);

fn key_missing() -> ApiError {
    Error::new(
        ErrorKind::Unauthorized,
        "api_key_missing",
        "an API key is required: send 'Authorization: Bearer KEY'",
    )
    .into()
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> ApiResult<Self> {
        parts
            .extensions
            .get::<Authenticated>()
            .map(|a| Caller(a.account.clone()))
            .ok_or_else(key_missing)
    }
}

/// The id of the key the request came with.
pub struct UsedKey(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for UsedKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> ApiResult<Self> {
        parts
            .extensions
            .get::<Authenticated>()
            .map(|a| UsedKey(a.key))
            .ok_or_else(key_missing)
    }
}

/// The API key a request brings, if any.
fn request_key(headers: &axum::http::HeaderMap) -> Option<String> {
    let value = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    value(header::AUTHORIZATION.as_str())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| value("x-api-key"))
        .filter(|k| !k.is_empty())
        .map(str::to_string)
}

/// Check the key a request brings (a wrong key is refused here, before any
/// route), record its use, and scrub the host out of the errors a
/// non-admin reads.
async fn authenticate(State(app): State<Arc<App>>, mut req: Request, next: Next) -> Response {
    let key = request_key(req.headers());
    let mut admin = false;
    req = match crate::forward::admit(&app, req).await {
        Ok((mut req, Some(caller))) => {
            admin = caller.account.admin;
            req.extensions_mut().insert(caller);
            req
        }
        Ok((req, None)) => req,
        Err(e) => return ApiError(e).into_response(),
    };
    if let Some(key) = key {
        match app.catalog.account_by_key(&key) {
            Ok(Some((account, key))) => {
                app.touch_key(key);
                admin = account.admin;
                req.extensions_mut().insert(Authenticated { account, key });
            }
            Ok(None) => {
                return ApiError(Error::new(
                    ErrorKind::Unauthorized,
                    "api_key_invalid",
                    "the API key matches no account (it may have been revoked)",
                ))
                .into_response()
            }
            Err(e) => return ApiError(e).into_response(),
        }
    }
    let resp = next.run(req).await;
    match resp.extensions().get::<Error>() {
        Some(e) if !admin => {
            let mut e = e.clone();
            e.message = app.scrub(&e.message);
            ApiError(e).into_response()
        }
        _ => resp,
    }
}

/// What an answer shows to its caller: everything to the admin; to a
/// tenant, no host path, socket or process id.
pub trait ForCaller: Sized {
    fn hide_host(self, app: &App) -> Self;

    fn for_caller(self, app: &App, me: &Account) -> Self {
        if me.admin {
            self
        } else {
            self.hide_host(app)
        }
    }
}

/// A message a tenant reads, with the host's directories scrubbed.
fn scrub_in(app: &App, text: &mut Option<String>) {
    if let Some(t) = text {
        *t = app.scrub(t);
    }
}

impl<T: ForCaller> ForCaller for Vec<T> {
    fn hide_host(self, app: &App) -> Self {
        self.into_iter().map(|t| t.hide_host(app)).collect()
    }
}

impl ForCaller for Zone {
    fn hide_host(mut self, _: &App) -> Self {
        self.hide_host_details();
        self
    }
}

impl ForCaller for Volume {
    fn hide_host(mut self, _: &App) -> Self {
        self.hide_host_details();
        self
    }
}

impl ForCaller for Instance {
    fn hide_host(mut self, app: &App) -> Self {
        self.hide_host_details();
        scrub_in(app, &mut self.last_error);
        self
    }
}

impl ForCaller for Template {
    fn hide_host(mut self, app: &App) -> Self {
        self.source_snapshot = app.scrub(&self.source_snapshot);
        self
    }
}

impl ForCaller for Snapshot {
    fn hide_host(mut self, app: &App) -> Self {
        scrub_in(app, &mut self.error);
        self
    }
}

impl ForCaller for Point {
    fn hide_host(mut self, app: &App) -> Self {
        scrub_in(app, &mut self.error);
        self
    }
}

impl ForCaller for Job {
    fn hide_host(mut self, app: &App) -> Self {
        self.host.clear();
        if let Some(e) = &mut self.error {
            e.message = app.scrub(&e.message);
        }
        for line in &mut self.log {
            line.message = app.scrub(&line.message);
        }
        self
    }
}

/// A JSON body whose rejection is an API error naming the problem.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> ApiResult<Self> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(r) => Err(Error::invalid("body_invalid", r.body_text()).into()),
        }
    }
}

/// Query parameters whose rejection is an API error.
pub struct Params<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> ApiResult<Self> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(Params(v)),
            Err(r) => Err(Error::invalid("query_invalid", r.body_text()).into()),
        }
    }
}

fn created<T: serde::Serialize>(value: T) -> Response {
    (StatusCode::CREATED, Json(value)).into_response()
}

fn accepted(job: Job) -> Response {
    (StatusCode::ACCEPTED, Json(JobStarted { job })).into_response()
}

pub fn router(app: Arc<App>) -> Router {
    let api = Router::new()
        .route("/health", get(health))
        .route("/openapi.json", get(openapi))
        .route("/whoami", get(whoami))
        .route("/accounts", get(list_accounts).post(create_account))
        .route(
            "/accounts/{account}",
            get(show_account).delete(delete_account),
        )
        .route("/accounts/{account}/settings", post(account_settings))
        .route("/accounts/{account}/keys", get(list_keys).post(create_key))
        .route(
            "/accounts/{account}/keys/{key}",
            axum::routing::delete(revoke_key),
        )
        .route("/keys/rotate", post(rotate_key))
        .route("/plans", get(list_plans).post(put_plan))
        .route("/plans/{plan}", axum::routing::delete(delete_plan))
        .route("/zones", get(list_zones).post(create_zone))
        .route("/uploads", get(list_uploads).post(create_upload))
        .route("/uploads/{id}", get(show_upload).delete(delete_upload))
        .route("/uploads/{id}/data", axum::routing::put(upload_data))
        .route("/volumes", get(list_volumes).post(create_volume))
        .route("/volumes/{id}", get(show_volume).delete(delete_volume))
        .route("/volumes/{id}/resize", post(resize_volume))
        .route("/volumes/{id}/attach", post(attach_volume))
        .route("/volumes/{id}/detach", post(detach_volume))
        .route("/volumes/{id}/revert", post(revert_volume))
        .route("/instances", get(list_instances).post(create_instance))
        .route(
            "/instances/{id}",
            get(show_instance).delete(delete_instance),
        )
        .route("/instances/{id}/start", post(start_instance))
        .route("/instances/{id}/stop", post(stop_instance))
        .route("/instances/{id}/restart", post(restart_instance))
        .route("/instances/{id}/settings", post(instance_settings))
        .route("/instances/{id}/clone", post(clone_instance))
        .route(
            "/instances/{id}/points",
            get(list_points)
                .post(create_point)
                .delete(delete_all_points),
        )
        .route(
            "/instances/{id}/points/{point}",
            get(show_point).delete(delete_point),
        )
        .route("/instances/{id}/points/{point}/revert", post(revert_point))
        .route(
            "/instances/{id}/points/{point}/protection",
            post(protect_point),
        )
        .route("/snapshots", get(list_snapshots).post(create_snapshot))
        .route(
            "/snapshots/{id}",
            get(show_snapshot).delete(delete_snapshot),
        )
        .route("/snapshots/{id}/verify", post(verify_snapshot))
        .route("/snapshots/{id}/undelete", post(undelete_snapshot))
        .route("/snapshots/{id}/protection", post(protect_snapshot))
        .route("/snapshots/{id}/volumes", post(volume_from_snapshot))
        .route("/templates", get(list_templates).post(create_template))
        .route("/templates/import", post(import_template))
        .route("/templates/{id}/undelete", post(undelete_template))
        .route(
            "/templates/{id}",
            get(show_template).delete(delete_template),
        )
        .route("/policies", get(list_policies).post(create_policy))
        .route(
            "/policies/{id}",
            get(show_policy).post(update_policy).delete(delete_policy),
        )
        .route("/policies/{id}/simulate", get(simulate_policy))
        .route("/gc", post(collect_garbage))
        .route("/region/recover", post(recover_region))
        .route("/store/forget-orphans", post(forget_orphans))
        .route(
            "/catalog/backups",
            get(list_catalog_backups).post(backup_catalog),
        )
        .route("/catalog/restore", post(restore_catalog))
        .route("/hosts", get(list_hosts))
        .route("/jobs", get(list_jobs))
        .route("/jobs/{id}", get(show_job))
        .route("/jobs/{id}/cancel", post(cancel_job))
        .layer(middleware::from_fn_with_state(
            app.clone(),
            crate::forward::to_owner,
        ));
    // The native API as CloudStack commands call it, inside the daemon:
    // the caller is already authenticated (by its request's signature).
    let native = Router::new()
        .nest("/api/v1", api.clone())
        .with_state(app.clone());
    Router::new()
        .nest("/api/v1", api)
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(app.clone(), authenticate))
        .merge(crate::cloudstack::router(app.clone(), native))
        .merge(reprise_console::router())
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(app.clone(), track))
        .with_state(app)
}

/// `/metrics` alone, without a key: for the operator's own
/// `metrics_listen` address.
pub fn metrics_router(app: Arc<App>) -> Router {
    Router::new()
        .route("/metrics", get(open_metrics))
        .with_state(app)
}

async fn track(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    app.metrics.count_request(method.as_str(), status);
    tracing::debug!(%method, path, status, ms = started.elapsed().as_millis() as u64, "request");
    resp
}

async fn not_found(req: Request) -> ApiError {
    Error::new(
        ErrorKind::NotFound,
        "route_not_found",
        format!("no such API route: {} {}", req.method(), req.uri().path()),
    )
    .into()
}

async fn health(State(app): State<Arc<App>>) -> ApiResult<Json<serde_json::Value>> {
    app.catalog.schema_version()?;
    Ok(Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "accel": reprise_qemu::accel::choose(app.config.accel, app.host)
            .map(|a| a.as_str())
            .unwrap_or("unavailable"),
    })))
}

async fn openapi() -> Response {
    let doc = crate::openapi::document();
    ([(header::CONTENT_TYPE, "application/json")], doc).into_response()
}

async fn metrics(State(app): State<Arc<App>>, Caller(me): Caller) -> ApiResult<Response> {
    crate::ops::guards::require_admin(&me, "read the metrics")?;
    open_metrics(State(app)).await
}

async fn open_metrics(State(app): State<Arc<App>>) -> ApiResult<Response> {
    let text = crate::metrics::render(&app)?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

async fn list_hosts(State(app): State<Arc<App>>, Caller(me): Caller) -> ApiResult<Json<Vec<Host>>> {
    Ok(Json(crate::hosts::list(&app, &me)?))
}

async fn whoami(Caller(me): Caller) -> Json<Account> {
    Json(me)
}

async fn list_accounts(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
) -> ApiResult<Json<Vec<Account>>> {
    Ok(Json(accounts::list_accounts(&app, &me)?))
}

async fn create_account(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Body(req): Body<CreateAccount>,
) -> ApiResult<Response> {
    Ok(created(accounts::create_account(&app, &me, req)?))
}

/// `?purge=true`: an account with all it owns; a snapshot for good, at
/// once (admin).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeQuery {
    #[serde(default)]
    purge: bool,
}

/// `?deleted=true`: the deleted ones still in their undelete window.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeletedQuery {
    #[serde(default)]
    deleted: bool,
}

async fn show_account(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Path(account): Path<String>,
) -> ApiResult<Json<AccountDetails>> {
    Ok(Json(accounts::show(&app, &me, &account)?))
}

async fn delete_account(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Path(account): Path<String>,
    Params(q): Params<PurgeQuery>,
) -> ApiResult<Response> {
    Ok(match accounts::delete(&app, &me, &account, q.purge)? {
        Some(job) => accepted(job),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

async fn account_settings(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Path(account): Path<String>,
    Body(req): Body<AccountSettings>,
) -> ApiResult<Json<AccountDetails>> {
    Ok(Json(accounts::settings(&app, &me, &account, req)?))
}

async fn list_keys(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Path(account): Path<String>,
) -> ApiResult<Json<Vec<ApiKey>>> {
    Ok(Json(accounts::list_keys(&app, &me, &account)?))
}

async fn create_key(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Path(account): Path<String>,
    Body(req): Body<CreateApiKey>,
) -> ApiResult<Response> {
    Ok(created(accounts::create_key(&app, &me, &account, req)?))
}

async fn revoke_key(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Path((account, key)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    accounts::revoke_key(&app, &me, &account, &key)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn rotate_key(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    UsedKey(key): UsedKey,
    _: IgnoredBody,
) -> ApiResult<Response> {
    Ok(created(accounts::rotate_key(&app, &me, key)?))
}

async fn list_plans(State(app): State<Arc<App>>, Caller(me): Caller) -> ApiResult<Json<Vec<Plan>>> {
    Ok(Json(accounts::list_plans(&app, &me)?))
}

async fn put_plan(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Body(plan): Body<Plan>,
) -> ApiResult<Json<Plan>> {
    Ok(Json(accounts::put_plan(&app, &me, plan)?))
}

async fn delete_plan(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Path(plan): Path<String>,
) -> ApiResult<StatusCode> {
    accounts::delete_plan(&app, &me, &plan)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_zones(State(app): State<Arc<App>>, Caller(me): Caller) -> ApiResult<Json<Vec<Zone>>> {
    Ok(Json(app.catalog.list_zones()?.for_caller(&app, &me)))
}

async fn create_zone(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Body(req): Body<CreateZone>,
) -> ApiResult<Response> {
    Ok(created(accounts::create_zone(&app, &me, req)?))
}

async fn list_uploads(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
) -> ApiResult<Json<Vec<Upload>>> {
    Ok(Json(uploads::list(&app, &me)?))
}

async fn create_upload(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Body(req): Body<CreateUpload>,
) -> ApiResult<Response> {
    Ok(created(uploads::create(&app, &me, req)?))
}

async fn show_upload(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Upload>> {
    Ok(Json(uploads::show(&app, &me, &id)?))
}

async fn delete_upload(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    uploads::delete(&app, &me, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UploadQuery {
    /// Where these bytes go: the upload's `received_bytes`.
    #[serde(default)]
    offset: u64,
}

async fn upload_data(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Path(id): Path<String>,
    Params(q): Params<UploadQuery>,
    body: axum::body::Body,
) -> ApiResult<Json<Upload>> {
    let stream = body.into_data_stream();
    Ok(Json(
        uploads::receive(&app, &me, &id, q.offset, stream).await?,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VolumeQuery {
    zone: Option<String>,
    instance: Option<String>,
}

async fn list_volumes(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Params(q): Params<VolumeQuery>,
) -> ApiResult<Json<Vec<Volume>>> {
    Ok(Json(
        volumes::list(&app, &me, q.zone.as_deref(), q.instance.as_deref())?.for_caller(&app, &me),
    ))
}

async fn create_volume(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Body(req): Body<CreateVolume>,
) -> ApiResult<Response> {
    Ok(created(
        volumes::create(&app, &me, req).await?.for_caller(&app, &me),
    ))
}

async fn show_volume(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Volume>> {
    Ok(Json(volumes::show(&app, &me, &id)?.for_caller(&app, &me)))
}

async fn delete_volume(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    volumes::delete(&app, &me, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn resize_volume(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Path(id): Path<String>,
    Body(req): Body<ResizeVolume>,
) -> ApiResult<Json<Volume>> {
    Ok(Json(
        volumes::resize(&app, &me, &id, &req.size)
            .await?
            .for_caller(&app, &me),
    ))
}

async fn attach_volume(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Path(id): Path<String>,
    Body(req): Body<AttachVolume>,
) -> ApiResult<Json<Volume>> {
    Ok(Json(
        volumes::attach(&app, &me, &id, &req.instance)
            .await?
            .for_caller(&app, &me),
    ))
}

async fn detach_volume(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Path(id): Path<String>,
    _: IgnoredBody,
) -> ApiResult<Json<Volume>> {
    Ok(Json(
        volumes::detach(&app, &me, &id).await?.for_caller(&app, &me),
    ))
}

async fn list_instances(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
) -> ApiResult<Json<Vec<Instance>>> {
    Ok(Json(
        instances::list(&app, &me).await?.for_caller(&app, &me),
    ))
}

async fn create_instance(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Body(req): Body<CreateInstance>,
) -> ApiResult<Response> {
    Ok(accepted(instances::create(&app, &me, req).await?))
}

async fn show_instance(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Path(id): Path<String>,
    read: Option<axum::Extension<crate::forward::InstanceRead>>,
) -> ApiResult<Json<Instance>> {
    let (row, volumes) = match read {
        Some(axum::Extension(crate::forward::InstanceRead(row, volumes))) => (row, volumes),
        None => app.catalog.instance_with_volumes(me.id, &id)?,
    };
    Ok(Json(
        instances::with_volumes(&app, &row, &volumes, true)
            .await
            .for_caller(&app, &me),
    ))
}

async fn delete_instance(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    instances::delete(&app, &me, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn start_instance(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Path(id): Path<String>,
    _: IgnoredBody,
) -> ApiResult<Response> {
    Ok(accepted(instances::start(&app, &me, &id)?))
}

async fn stop_instance(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    // The body is optional: no body is a graceful stop.
    let force = if body.iter().all(u8::is_ascii_whitespace) {
        false
    } else {
        serde_json::from_slice::<StopInstance>(&body)
            .map_err(|e| Error::invalid("body_invalid", format!("stop: {e}")).with_source(e))?
            .force
    };
    Ok(accepted(instances::stop(&app, &me, &id, force)?))
}

async fn restart_instance(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Path(id): Path<String>,
    _: IgnoredBody,
) -> ApiResult<Response> {
    Ok(accepted(instances::restart(&app, &me, &id)?))
}

async fn instance_settings(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Path(id): Path<String>,
    Body(req): Body<InstanceSettings>,
) -> ApiResult<Json<Instance>> {
    Ok(Json(
        instances::settings(&app, &me, &id, req)
            .await?
            .for_caller(&app, &me),
    ))
}

async fn clone_instance(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Path(id): Path<String>,
    Body(req): Body<CloneInstance>,
) -> ApiResult<Response> {
    Ok(accepted(clones::clone(&app, &me, &id, req).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PointQuery {
    policy: Option<String>,
}

async fn list_points(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Path(id): Path<String>,
    Params(q): Params<PointQuery>,
) -> ApiResult<Json<Vec<Point>>> {
    Ok(Json(
        points::list(&app, &me, &id, q.policy.as_deref())
            .await?
            .for_caller(&app, &me),
    ))
}

async fn create_point(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Path(id): Path<String>,
    Body(req): Body<CreatePoint>,
) -> ApiResult<Response> {
    Ok(accepted(points::create(&app, &me, &id, req)?))
}

async fn delete_all_points(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    Ok(accepted(points::delete_all(&app, &me, &id)?))
}

async fn show_point(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Path((id, point)): Path<(String, String)>,
) -> ApiResult<Json<Point>> {
    Ok(Json(
        points::show(&app, &me, &id, &point)
            .await?
            .for_caller(&app, &me),
    ))
}

async fn delete_point(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Path((id, point)): Path<(String, String)>,
) -> ApiResult<Response> {
    Ok(accepted(points::delete(&app, &me, &id, &point)?))
}

async fn revert_point(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Path((id, point)): Path<(String, String)>,
    _: IgnoredBody,
) -> ApiResult<Response> {
    Ok(accepted(points::revert(&app, &me, &id, &point)?))
}

async fn list_snapshots(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Params(filter): Params<SnapshotFilter>,
) -> ApiResult<Json<Vec<Snapshot>>> {
    Ok(Json(
        snapshots::list(&app, &me, &filter)?.for_caller(&app, &me),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyQuery {
    volume: Option<String>,
    instance: Option<String>,
}

async fn list_policies(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Params(q): Params<PolicyQuery>,
) -> ApiResult<Json<Vec<Policy>>> {
    let target = q.volume.or(q.instance);
    Ok(Json(policies::list(&app, &me, target.as_deref())?))
}

async fn create_policy(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Body(req): Body<CreatePolicy>,
) -> ApiResult<Response> {
    Ok(created(policies::create(&app, &me, req)?))
}

async fn show_policy(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Policy>> {
    Ok(Json(policies::show(&app, &me, &id)?))
}

async fn update_policy(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Path(id): Path<String>,
    Body(req): Body<UpdatePolicy>,
) -> ApiResult<Json<Policy>> {
    Ok(Json(policies::update(&app, &me, &id, req)?))
}

async fn delete_policy(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    policies::delete(&app, &me, &id)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn simulate_policy(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<PolicySimulation>> {
    Ok(Json(policies::simulate(&app, &me, &id)?))
}

async fn create_snapshot(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Body(req): Body<CreateSnapshot>,
) -> ApiResult<Response> {
    Ok(accepted(snapshots::create(&app, &me, req)?))
}

async fn show_snapshot(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Snapshot>> {
    Ok(Json(snapshots::show(&app, &me, &id)?.for_caller(&app, &me)))
}

async fn delete_snapshot(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Path(id): Path<String>,
    Params(q): Params<PurgeQuery>,
) -> ApiResult<Response> {
    Ok(accepted(if q.purge {
        deletes::purge(&app, &me, &id)?
    } else {
        deletes::delete_snapshot(&app, &me, &id)?
    }))
}

async fn undelete_snapshot(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Path(id): Path<String>,
    _: IgnoredBody,
) -> ApiResult<Json<Snapshot>> {
    Ok(Json(
        deletes::undelete_snapshot(&app, &me, &id)
            .await?
            .for_caller(&app, &me),
    ))
}

async fn protect_snapshot(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Path(id): Path<String>,
    Body(req): Body<Protection>,
) -> ApiResult<Json<Snapshot>> {
    Ok(Json(
        deletes::protect_snapshot(&app, &me, &id, req)
            .await?
            .for_caller(&app, &me),
    ))
}

async fn protect_point(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Path((id, point)): Path<(String, String)>,
    Body(req): Body<Protection>,
) -> ApiResult<Json<Point>> {
    Ok(Json(
        points::protect(&app, &me, &id, &point, req)
            .await?
            .for_caller(&app, &me),
    ))
}

async fn verify_snapshot(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Path(id): Path<String>,
    _: IgnoredBody,
) -> ApiResult<Response> {
    Ok(accepted(snapshots::verify(&app, &me, &id)?))
}

async fn revert_volume(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Path(id): Path<String>,
    Body(req): Body<RevertVolume>,
) -> ApiResult<Response> {
    Ok(accepted(restore::revert(&app, &me, &id, req)?))
}

async fn volume_from_snapshot(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Path(id): Path<String>,
    Body(req): Body<VolumeFromSnapshot>,
) -> ApiResult<Response> {
    Ok(accepted(restore::create(&app, &me, &id, req)?))
}

async fn list_templates(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Params(q): Params<DeletedQuery>,
) -> ApiResult<Json<Vec<Template>>> {
    Ok(Json(
        templates::list(&app, &me, q.deleted)?.for_caller(&app, &me),
    ))
}

async fn undelete_template(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Path(id): Path<String>,
    _: IgnoredBody,
) -> ApiResult<Json<Template>> {
    Ok(Json(
        deletes::undelete_template(&app, &me, &id)
            .await?
            .for_caller(&app, &me),
    ))
}

async fn create_template(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Body(req): Body<CreateTemplate>,
) -> ApiResult<Response> {
    Ok(created(
        templates::create(&app, &me, req)
            .await?
            .for_caller(&app, &me),
    ))
}

async fn import_template(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Body(req): Body<ImportTemplate>,
) -> ApiResult<Response> {
    Ok(accepted(templates::import(&app, &me, req)?))
}

async fn show_template(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Template>> {
    Ok(Json(templates::show(&app, &me, &id)?.for_caller(&app, &me)))
}

async fn delete_template(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    Ok(accepted(deletes::delete_template(&app, &me, &id)?))
}

async fn collect_garbage(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    _: IgnoredBody,
) -> ApiResult<Response> {
    Ok(accepted(snapshots::gc(&app, &me)?))
}

async fn recover_region(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Body(req): Body<RecoverRegion>,
) -> ApiResult<Response> {
    Ok(accepted(recovery::recover(&app, &me, req)?))
}

async fn backup_catalog(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    _: IgnoredBody,
) -> ApiResult<Response> {
    Ok(accepted(recovery::backup_catalog(&app, &me)?))
}

async fn list_catalog_backups(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
) -> ApiResult<Json<Vec<CatalogBackup>>> {
    Ok(Json(recovery::list_catalog_backups(&app, &me).await?))
}

async fn restore_catalog(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Body(req): Body<RestoreCatalog>,
) -> ApiResult<Response> {
    Ok(accepted(recovery::restore_catalog(&app, &me, req)?))
}

async fn forget_orphans(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Body(req): Body<ForgetOrphans>,
) -> ApiResult<Response> {
    Ok(accepted(recovery::forget_orphans(&app, &me, req)?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobQuery {
    limit: Option<u32>,
}

async fn list_jobs(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Params(q): Params<JobQuery>,
) -> ApiResult<Json<Vec<Job>>> {
    Ok(Json(
        app.catalog
            .list_jobs(me.id, q.limit.unwrap_or(50).min(1000))?
            .for_caller(&app, &me),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShowJobQuery {
    /// Long-poll: answer as soon as the job ends, or after this long.
    wait_ms: Option<u64>,
}

async fn show_job(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Path(id): Path<String>,
    Params(q): Params<ShowJobQuery>,
) -> ApiResult<Json<Job>> {
    let wait = std::time::Duration::from_millis(q.wait_ms.unwrap_or(0).min(30_000));
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        // Register before reading, so an end between the two is not missed.
        let finished = app.job_finished.notified();
        let job = app.catalog.job(Some(me.id), &id)?;
        if job.state.is_final() || tokio::time::Instant::now() >= deadline {
            return Ok(Json(job.for_caller(&app, &me)));
        }
        let _ = tokio::time::timeout_at(deadline, finished).await;
    }
}

async fn cancel_job(
    State(app): State<Arc<App>>,
    Caller(me): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Job>> {
    Ok(Json(
        crate::jobs::cancel(&app, &me, &id)?.for_caller(&app, &me),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body<T: DeserializeOwned>(content_type: Option<&str>, text: &str) -> Result<T, Error> {
        let mut req = Request::builder().method("POST").uri("/x");
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        let req = req.body(axum::body::Body::from(text.to_string())).unwrap();
        Body::<T>::from_request(req, &())
            .await
            .map(|b| b.0)
            .map_err(|e| e.0)
    }

    async fn query<T: DeserializeOwned>(uri: &str) -> Result<T, Error> {
        let (mut parts, _) = Request::builder().uri(uri).body(()).unwrap().into_parts();
        Params::<T>::from_request_parts(&mut parts, &())
            .await
            .map(|p| p.0)
            .map_err(|e| e.0)
    }

    const JSON: Option<&str> = Some("application/json");

    #[tokio::test]
    async fn bodies_are_typed_and_every_refusal_names_the_problem() {
        let v: CreateVolume = body(JSON, r#"{"name": "db", "size": "10G"}"#)
            .await
            .unwrap();
        assert_eq!(
            (v.name.as_str(), v.size.as_str(), v.zone),
            ("db", "10G", None)
        );
        let cases = [
            (
                JSON,
                r#"{"name": "db", "sise": "10G"}"#,
                "unknown field `sise`",
            ),
            (JSON, r#"{"name": "db"}"#, "missing field `size`"),
            (JSON, r#"{"name": 7, "size": "1G"}"#, "invalid type"),
            (JSON, r#"{"name": "db", "size": "1G""#, "EOF"),
            (JSON, "", "EOF"),
            (None, r#"{"name": "db", "size": "1G"}"#, "Content-Type"),
            (
                Some("text/plain"),
                r#"{"name": "db", "size": "1G"}"#,
                "Content-Type",
            ),
        ];
        for (ct, text, names) in cases {
            let e = body::<CreateVolume>(ct, text).await.unwrap_err();
            assert_eq!(e.code, "body_invalid", "{text}");
            assert!(e.message.contains(names), "{text}: {}", e.message);
        }
        let s: CreateSnapshot = body(JSON, r#"{"volume": "db", "quiesce": "required"}"#)
            .await
            .unwrap();
        assert_eq!(
            (s.volume.as_str(), s.quiesce.as_deref()),
            ("db", Some("required"))
        );
        let p: CreatePoint = body(JSON, r#"{"name": "before-upgrade", "memory": true}"#)
            .await
            .unwrap();
        assert!(p.memory);
    }

    #[tokio::test]
    async fn query_parameters_are_typed_and_unknown_ones_refused() {
        let q: VolumeQuery = query("/x?zone=zone1&instance=vm").await.unwrap();
        assert_eq!(
            (q.zone.as_deref(), q.instance.as_deref()),
            (Some("zone1"), Some("vm"))
        );
        let q: VolumeQuery = query("/x").await.unwrap();
        assert_eq!((q.zone, q.instance), (None, None));
        let e = query::<VolumeQuery>("/x?zone=a&zome=b").await.unwrap_err();
        assert_eq!(e.code, "query_invalid");
        assert!(e.message.contains("zome"), "{}", e.message);
        let e = query::<JobQuery>("/x?limit=many").await.unwrap_err();
        assert_eq!(e.code, "query_invalid");
        assert!(e.message.contains("limit"), "{}", e.message);
    }
}
