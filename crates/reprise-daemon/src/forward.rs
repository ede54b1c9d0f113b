//! Work on a resource runs on the host that holds it. Any daemon of a
//! region answers any request: reads come from the shared catalog, and a
//! request that must touch a host (a volume's file, an instance's QEMU or
//! guest agent, an upload's bytes) is sent on, unchanged, to the daemon of
//! the resource's host, whose answer goes back as it comes. A new volume
//! or instance goes where [`hosts::place`] says.
//!
//! A request sent on carries [`MARK`]: a keyed hash of the method, the
//! path and the [`CALLER`] header under the region's secret (every daemon
//! of a region has it), so the receiver handles it itself — no request is
//! sent on twice, and a client cannot send a request past its placement by
//! setting the header. A request that came with an API key is sent on with
//! it; one made inside the daemon for an already authenticated caller (a
//! CloudStack command) is sent on with [`CALLER`] naming its account and
//! key, which the receiver trusts only under a valid mark.

use crate::app::App;
use crate::hosts;
use crate::http::{ApiError, Authenticated};
use axum::body::Body;
use axum::extract::{OriginalUri, Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use reprise_catalog::HostRow;
use reprise_core::model::{Account, HostState, InstanceState};
use reprise_core::{Error, ErrorKind, Result};
use std::sync::Arc;

/// The header of a request sent on by another daemon of the region.
pub const MARK: &str = "x-reprise-forwarded";

/// The header naming the account and key of a request sent on without
/// an API key: `ACCOUNT_ID KEY_ID`.
pub const CALLER: &str = "x-reprise-caller";

/// The most a create request's JSON body may be when it is read here to
/// choose a host (the real ones are a few hundred bytes).
const BODY_PEEK_MAX: usize = 1 << 20;

/// An instance's row and volumes as the middleware read them to find its
/// host: a show handled here need not read them again.
#[derive(Clone)]
pub struct InstanceRead(
    pub reprise_catalog::InstanceRow,
    pub Vec<reprise_catalog::VolumeRow>,
);

/// The middleware: handle here, or send on to the resource's host.
pub async fn to_owner(State(app): State<Arc<App>>, mut req: Request, next: Next) -> Response {
    let path_and_query = original_path(&req);
    // A client's own `x-reprise-*` headers never pass: sent on, they
    // would travel under this daemon's mark (a kept request's job taken
    // over, a caller named).
    if !req.headers().contains_key(MARK) {
        let ours: Vec<_> = req
            .headers()
            .keys()
            .filter(|k| k.as_str().starts_with("x-reprise-"))
            .cloned()
            .collect();
        for k in ours {
            req.headers_mut().remove(k);
        }
    }
    if req.headers().contains_key(MARK) {
        if marked(&app, &req) {
            // A request kept while this host was down, run now: the job it
            // starts is the one its client holds.
            if let Some(job) = crate::deferred::job_of(&req) {
                let waiting = std::cell::Cell::new(Some(job));
                return crate::jobs::DEFERRED_JOB
                    .scope(waiting, next.run(req))
                    .await;
            }
            return next.run(req).await;
        }
        return ApiError(forward_invalid()).into_response();
    }
    // A SQLite catalog has one daemon: every host is this one.
    if app.config.catalog.url.is_none() {
        return next.run(req).await;
    }
    let Some(account) = req
        .extensions()
        .get::<Authenticated>()
        .map(|a| a.account.clone())
    else {
        return next.run(req).await;
    };
    let (req, owner) = match owner(&app, &account, req).await {
        Ok(found) => found,
        Err(e) => return ApiError(e).into_response(),
    };
    let Some(host) = owner.filter(|h| h.name != app.config.host.name) else {
        return next.run(req).await;
    };
    if hosts::state(&app, &host) == HostState::Down {
        // What the catalog knows is still shown (an instance `Unknown`);
        // nothing is done.
        if req.method() == Method::GET {
            return next.run(req).await;
        }
        // Work that can wait for the host is kept for it.
        let Some(caller) = req.extensions().get::<Authenticated>().cloned() else {
            return ApiError(hosts::down(&host)).into_response();
        };
        return crate::deferred::defer(&app, &caller, req, &host, &path_and_query).await;
    }
    send_on(&app, &host, req, &path_and_query).await
}

fn original_path(req: &Request) -> String {
    let uri = req
        .extensions()
        .get::<OriginalUri>()
        .map(|u| &u.0)
        .unwrap_or(req.uri());
    uri.path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into())
}

fn expected_mark(app: &App, method: &Method, path_and_query: &str, caller: &str) -> blake3::Hash {
    let mut h = blake3::Hasher::new_keyed(&app.forward_key());
    h.update(method.as_str().as_bytes());
    h.update(b"\n");
    h.update(path_and_query.as_bytes());
    h.update(b"\n");
    h.update(caller.as_bytes());
    h.finalize()
}

fn forward_invalid() -> Error {
    Error::new(
        ErrorKind::Unauthorized,
        "forward_invalid",
        format!("the {MARK} header is not one this region's daemons make"),
    )
}

fn header_text<'a>(req: &'a Request, name: &str) -> &'a str {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Whether `req` carries a mark this region's daemons made for it.
fn marked(app: &App, req: &Request) -> bool {
    // `blake3::Hash` compares in constant time: a wrong mark's timing
    // says nothing of the right one.
    let given = blake3::Hash::from_hex(header_text(req, MARK)).ok();
    let expected = expected_mark(
        app,
        req.method(),
        &original_path(req),
        header_text(req, CALLER),
    );
    given == Some(expected)
}

/// The caller a request sent on by another daemon names in [`CALLER`]
/// (none when it has no such header; refused unless its mark is valid).
pub(crate) fn forwarded_caller(app: &App, req: &Request) -> Result<Option<Authenticated>> {
    if !req.headers().contains_key(CALLER) {
        return Ok(None);
    }
    if !marked(app, req) {
        return Err(forward_invalid());
    }
    let ids: Vec<uuid::Uuid> = header_text(req, CALLER)
        .split(' ')
        .filter_map(|id| uuid::Uuid::parse_str(id).ok())
        .collect();
    let [account, key] = ids[..] else {
        return Err(forward_invalid());
    };
    let account = app.catalog.account(&account.to_string())?;
    // A key revoked since (a request kept for a host that was down) no
    // longer speaks for its account; the nil key is a daemon's own call.
    if !key.is_nil() && app.catalog.key(account.id, &key.to_string()).is_err() {
        return Err(Error::new(
            ErrorKind::Unauthorized,
            "api_key_invalid",
            "the API key this request was made with has been revoked",
        ));
    }
    Ok(Some(Authenticated { account, key }))
}

/// The host whose daemon must handle `req` (none: any daemon), and the
/// request again (its body may have been read to decide). A reference
/// that does not resolve is left to the handler, which names the problem.
async fn owner(app: &App, me: &Account, req: Request) -> Result<(Request, Option<HostRow>)> {
    let path = req.uri().path().trim_start_matches("/api/v1").to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = req.method().clone();
    let post = method == Method::POST;
    let reads = method == Method::GET;
    let host_of = |name: Option<String>| -> Result<Option<HostRow>> {
        match name {
            Some(n) => hosts::known(app, &n).map(Some),
            None => Ok(None),
        }
    };
    let volume_host = |reference: &str| app.catalog.volume(me.id, reference).ok().map(|v| v.host);
    let instance_host =
        |reference: &str| app.catalog.instance(me.id, reference).ok().map(|i| i.host);
    let upload_host = |id: &str| app.catalog.upload_host(me.id, id).ok();
    Ok(match segments.as_slice() {
        ["volumes"] if post => {
            let (req, body) = peek(req).await?;
            let zone = zone_named(app, &body, "zone")?;
            let host = hosts::place(app, &zone, str_field(&body, "host"))?;
            (req, Some(host))
        }
        ["instances"] if post => {
            let (req, body) = peek(req).await?;
            let beside = ["image_upload", "kernel_upload", "initrd_upload"]
                .iter()
                .find_map(|f| str_field(&body, f).and_then(upload_host))
                .or_else(|| {
                    body.get("data_volumes")
                        .and_then(|v| v.as_array())
                        .and_then(|v| v.first())
                        .and_then(|v| v.as_str())
                        .and_then(volume_host)
                });
            let host = match beside {
                Some(name) => host_of(Some(name))?,
                None => {
                    let zone = zone_named(app, &body, "zone")?;
                    Some(hosts::place(app, &zone, str_field(&body, "host"))?)
                }
            };
            (req, host)
        }
        ["snapshots"] if post => {
            let (req, body) = peek(req).await?;
            let host = str_field(&body, "volume").and_then(volume_host);
            (req, host_of(host)?)
        }
        ["snapshots", _, "volumes"] if post => {
            let (req, body) = peek(req).await?;
            let zone = match str_field(&body, "zone") {
                Some(z) => app.catalog.zone(z).ok(),
                None => app.catalog.zone(&app.config.default_zone).ok(),
            };
            let host = match zone {
                Some(z) => Some(hosts::place(app, &z, str_field(&body, "host"))?),
                None => None,
            };
            (req, host)
        }
        // A purge may name a deleted snapshot, or (admin) another account's.
        ["snapshots", id] if method == Method::DELETE => {
            let host = crate::ops::deletes::any_snapshot(app, me, id)
                .ok()
                .and_then(|s| app.catalog.list_volumes_by_id(&[s.volume_id]).ok())
                .and_then(|v| v.into_iter().next())
                .map(|v| v.host);
            (req, host_of(host)?)
        }
        ["templates", "import"] if post => {
            let (req, body) = peek(req).await?;
            let host = str_field(&body, "upload").and_then(upload_host);
            (req, host_of(host)?)
        }
        ["uploads", id, ..] if !reads => {
            let host = upload_host(id);
            (req, host_of(host)?)
        }
        ["volumes", id, ..] if !reads => {
            let host = volume_host(id);
            (req, host_of(host)?)
        }
        // `show` asks the agent of a guest that may run: on the
        // instance's host. A stopped one is all in the catalog, shown
        // here. What was read is kept for the handler, should it run here.
        ["instances", id] if reads => match app.catalog.instance_with_volumes(me.id, id) {
            Ok((row, volumes)) => {
                let host = (row.state != InstanceState::Stopped).then(|| row.host.clone());
                let mut req = req;
                req.extensions_mut().insert(InstanceRead(row, volumes));
                (req, host_of(host)?)
            }
            // The handler says what is wrong.
            Err(_) => (req, None),
        },
        // The points' sizes are read from the volumes' files.
        ["instances", id] | ["instances", id, "points", ..] => {
            let host = instance_host(id);
            (req, host_of(host)?)
        }
        ["instances", id, ..] if !reads => {
            let host = instance_host(id);
            (req, host_of(host)?)
        }
        _ => (req, None),
    })
}

/// Read a create request's JSON body (and put it back): what the host is
/// chosen by. A body that is not JSON is left to the handler.
async fn peek(req: Request) -> Result<(Request, serde_json::Value)> {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, BODY_PEEK_MAX)
        .await
        .map_err(|e| Error::invalid("body_invalid", format!("the request's body: {e}")))?;
    let value = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    Ok((Request::from_parts(parts, Body::from(bytes)), value))
}

fn str_field<'a>(body: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    body.get(name).and_then(|v| v.as_str())
}

/// The zone a create request names in `field`, or the default zone.
fn zone_named(
    app: &App,
    body: &serde_json::Value,
    field: &str,
) -> Result<reprise_core::model::Zone> {
    app.catalog
        .zone(str_field(body, field).unwrap_or(&app.config.default_zone))
}

/// The most a daemon's answer to [`ask`] may be.
const ANSWER_MAX: usize = 16 << 20;

/// Ask `host`'s daemon to do `method path` (a path under `/api/v1`, with
/// `body` as JSON) for `caller`, as a request sent on: its answer's JSON
/// (null when empty), or the error it names.
pub(crate) async fn ask(
    app: &App,
    host: &HostRow,
    caller: &Authenticated,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value> {
    let path = format!("/api/v1{path}");
    let mut req = Request::builder()
        .method(method)
        .uri(&path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .map_err(|e| Error::internal(format!("a request to host '{}': {e}", host.name)))?;
    req.extensions_mut().insert(caller.clone());
    let answer = send_on(app, host, req, &path).await;
    let status = answer.status();
    let bytes = axum::body::to_bytes(answer.into_body(), ANSWER_MAX)
        .await
        .map_err(|e| Error::internal(format!("the answer of host '{}': {e}", host.name)))?;
    if !status.is_success() {
        return Err(crate::deferred::refusal(status, &bytes));
    }
    if bytes.is_empty() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::internal(format!("the answer of host '{}': {e}", host.name)))
}

/// Send `req` to `host`'s daemon and stream its answer back.
pub(crate) async fn send_on(
    app: &App,
    host: &HostRow,
    req: Request,
    path_and_query: &str,
) -> Response {
    let (parts, body) = req.into_parts();
    let url = format!("{}{path_and_query}", host.address.trim_end_matches('/'));
    let mut out = app.forwarder().request(parts.method.clone(), &url);
    for (name, value) in &parts.headers {
        if name != header::HOST && name != header::CONTENT_LENGTH && name != CALLER {
            out = out.header(name, value);
        }
    }
    // A request made inside this daemon for a caller it authenticated
    // (no key of its own) names that caller.
    let has_key = parts.headers.contains_key(header::AUTHORIZATION)
        || parts.headers.contains_key("x-api-key");
    let caller = match parts.extensions.get::<Authenticated>() {
        Some(a) if !has_key => format!("{} {}", a.account.id, a.key),
        _ => String::new(),
    };
    if !caller.is_empty() {
        out = out.header(CALLER, &caller);
    }
    if let Some(length) = parts.headers.get(header::CONTENT_LENGTH) {
        out = out.header(header::CONTENT_LENGTH, length);
    }
    let out = out
        .header(
            MARK,
            expected_mark(app, &parts.method, path_and_query, &caller)
                .to_hex()
                .as_str(),
        )
        .body(reqwest::Body::wrap_stream(body.into_data_stream()));
    match out.send().await {
        Ok(answer) => {
            let mut back = Response::builder().status(answer.status());
            for (name, value) in answer.headers() {
                if name != header::TRANSFER_ENCODING && name != header::CONNECTION {
                    back = back.header(name, value);
                }
            }
            back.body(Body::from_stream(answer.bytes_stream()))
                .unwrap_or_else(|e| {
                    ApiError(Error::internal(format!("forwarded answer: {e}"))).into_response()
                })
        }
        Err(e) => ApiError(
            Error::unavailable(
                "host_unreachable",
                format!(
                    "host '{}' (at {}) did not answer: {e}",
                    host.name, host.address
                ),
            )
            .with_source(e),
        )
        .into_response(),
    }
}
