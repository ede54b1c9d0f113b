//! Work on a resource runs on the host that holds it. Any daemon of a
//! region answers any request: reads come from the shared catalog, and a
//! request that must touch a host (a volume's file, an instance's QEMU or
//! guest agent, an upload's bytes) is sent on, unchanged, to the daemon of
//! the resource's host, whose answer goes back as it comes. A new volume
//! or instance goes where [`hosts::place`] says.
//!
//! A request sent on carries [`MARK`]: its time, a nonce, the digest of
//! its body (when it is at most [`MARK_BODY_MAX`]: an upload's bytes are
//! streamed, unbound) and a keyed hash under the region's secret (every
//! daemon of a region has it) of those and of the host it is for, the
//! method, the path and every other `x-reprise-*` header. The receiver
//! ([`admit`]) accepts a mark once, within [`MARK_VALIDITY_SECS`] of its
//! time, and handles the request itself — no request is sent on twice, and
//! neither a client nor someone who sees traffic between hosts can send a
//! request past its placement, replay one, or change its body or caller.
//! A request that came with an API key is sent on with it; one made
//! inside the daemon for an already authenticated caller (a CloudStack
//! command) is sent on with [`CALLER`] naming its account and key, which
//! the receiver trusts only under a valid mark, and not once the key is
//! revoked. A client's own `x-reprise-*` headers are dropped where it
//! enters.

use crate::app::App;
use crate::hosts;
use crate::http::{ApiError, Authenticated};
use axum::body::Body;
use axum::extract::{OriginalUri, Request, State};
use axum::http::{header, HeaderValue};
pub use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use reprise_catalog::HostRow;
use reprise_core::model::{Account, HostState, InstanceState};
use reprise_core::{Error, ErrorKind, Result};
use std::sync::Arc;
use std::time::Duration;

/// The header of a request sent on by another daemon of the region.
pub const MARK: &str = "x-reprise-forwarded";

/// The header naming the account and key of a request sent on without
/// an API key: `ACCOUNT_ID KEY_ID`.
pub const CALLER: &str = "x-reprise-caller";

/// How far a mark's time may be from the receiver's clock, either way:
/// the hosts of a region keep their clocks within it (NTP).
pub const MARK_VALIDITY_SECS: i64 = 60;

/// A request body up to this is read whole and bound into its mark; a
/// longer one (an upload's bytes) is streamed, its headers alone bound.
pub const MARK_BODY_MAX: usize = 1 << 20;

/// A request [`admit`] found marked by a daemon of the region, for this
/// host: handled here.
#[derive(Clone, Copy)]
pub struct Marked;

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
pub async fn to_owner(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let path_and_query = original_path(&req);
    if req.extensions().get::<Marked>().is_some() {
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

/// What a mark binds, besides the region's key.
pub struct MarkOf<'a> {
    /// The host the request is for.
    pub host: &'a str,
    pub method: &'a Method,
    pub path_and_query: &'a str,
    /// The request's headers: its `x-reprise-*` ones (but the mark) count.
    pub headers: &'a HeaderMap,
    /// Unix seconds.
    pub time: i64,
    pub nonce: &'a str,
    /// The body's digest; none for a streamed body.
    pub body: Option<blake3::Hash>,
}

impl MarkOf<'_> {
    fn mac(&self, key: &[u8; 32]) -> blake3::Hash {
        let mut h = blake3::Hasher::new_keyed(key);
        // Each field with its length first: no two requests hash alike by
        // moving bytes from one field to the next.
        let mut field = |bytes: &[u8]| {
            h.update(&(bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        field(b"reprise request sent on, v2");
        field(self.host.as_bytes());
        field(self.method.as_str().as_bytes());
        field(self.path_and_query.as_bytes());
        let mut ours: Vec<(&str, &[u8])> = self
            .headers
            .iter()
            .filter(|(name, _)| name.as_str().starts_with("x-reprise-") && *name != MARK)
            .map(|(name, value)| (name.as_str(), value.as_bytes()))
            .collect();
        ours.sort();
        for (name, value) in ours {
            field(name.as_bytes());
            field(value);
        }
        field(self.time.to_string().as_bytes());
        field(self.nonce.as_bytes());
        match self.body {
            Some(digest) => field(digest.as_bytes()),
            None => field(b"streamed"),
        }
        h.finalize()
    }

    /// The [`MARK`] header's value: `TIME NONCE BODY MAC` (BODY `-` when
    /// streamed).
    pub fn header(&self, key: &[u8; 32]) -> String {
        let body = self
            .body
            .map_or_else(|| "-".to_string(), |d| d.to_hex().to_string());
        format!(
            "{} {} {body} {}",
            self.time,
            self.nonce,
            self.mac(key).to_hex()
        )
    }
}

fn forward_invalid() -> Error {
    Error::new(
        ErrorKind::Unauthorized,
        "forward_invalid",
        format!("the {MARK} header is not one this region's daemons made for this request"),
    )
}

fn header_text<'a>(req: &'a Request, name: &str) -> &'a str {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Where a request enters the API: a client's `x-reprise-*` headers are
/// dropped; a request marked by another daemon of the region is checked
/// whole (its mark made for this host, this method, path, headers and
/// body, its time, its first use) and its [`CALLER`], if any, looked up.
pub(crate) async fn admit(app: &App, mut req: Request) -> Result<(Request, Option<Authenticated>)> {
    if !req.headers().contains_key(MARK) {
        // Sent on, they would travel under this daemon's mark (a kept
        // request's job taken over, a caller named).
        let ours: Vec<_> = req
            .headers()
            .keys()
            .filter(|k| k.as_str().starts_with("x-reprise-"))
            .cloned()
            .collect();
        for k in ours {
            req.headers_mut().remove(k);
        }
        return Ok((req, None));
    }
    let mark = header_text(&req, MARK).to_string();
    let fields: Vec<&str> = mark.split(' ').collect();
    let [time, nonce, body, mac] = fields[..] else {
        return Err(forward_invalid());
    };
    let time: i64 = time.parse().map_err(|_| forward_invalid())?;
    let body = match body {
        "-" => None,
        hex => Some(blake3::Hash::from_hex(hex).map_err(|_| forward_invalid())?),
    };
    let given = blake3::Hash::from_hex(mac).map_err(|_| forward_invalid())?;
    let expected = MarkOf {
        host: app.host_name(),
        method: req.method(),
        path_and_query: &original_path(&req),
        headers: req.headers(),
        time,
        nonce,
        body,
    }
    .mac(&app.forward_key());
    // `blake3::Hash` compares in constant time: a wrong mark's timing says
    // nothing of the right one.
    if given != expected {
        return Err(forward_invalid());
    }
    let now = chrono::Utc::now();
    if (now.timestamp() - time).abs() > MARK_VALIDITY_SECS {
        return Err(Error::new(
            ErrorKind::Unauthorized,
            "forward_expired",
            format!(
                "a request sent on at {time} (Unix seconds) arrived at {}: more than {MARK_VALIDITY_SECS} s apart (are the hosts' clocks synchronised?)",
                now.timestamp()
            ),
        ));
    }
    if let Some(digest) = body {
        let (parts, stream) = req.into_parts();
        let bytes = axum::body::to_bytes(stream, MARK_BODY_MAX)
            .await
            .map_err(|_| forward_invalid())?;
        if blake3::hash(&bytes) != digest {
            return Err(forward_invalid());
        }
        req = Request::from_parts(parts, Body::from(bytes));
    }
    // Remembered for as long as the mark is good by this host's clock,
    // whichever way the sender's clock is off.
    let until = chrono::DateTime::from_timestamp(time + MARK_VALIDITY_SECS + 1, 0)
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
    if !app.marks_used.take(nonce.as_bytes(), until, now) {
        return Err(Error::new(
            ErrorKind::Unauthorized,
            "forward_replayed",
            "this request sent on by another host was already received",
        ));
    }
    req.extensions_mut().insert(Marked);
    let caller = caller_of(app, &req)?;
    Ok((req, caller))
}

/// The caller a marked request names in [`CALLER`] (none when it has no
/// such header).
fn caller_of(app: &App, req: &Request) -> Result<Option<Authenticated>> {
    if !req.headers().contains_key(CALLER) {
        return Ok(None);
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
            let host = hosts::place(app, me, &zone, str_field(&body, "host"))?;
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
                    Some(hosts::place(app, me, &zone, str_field(&body, "host"))?)
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
                Some(z) => Some(hosts::place(app, me, &z, str_field(&body, "host"))?),
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
    let mut headers = HeaderMap::new();
    for (name, value) in &parts.headers {
        if name != header::HOST && name != MARK && name != CALLER {
            headers.append(name, value.clone());
        }
    }
    // A request made inside this daemon for a caller it authenticated
    // (no key of its own) names that caller.
    let has_key = parts.headers.contains_key(header::AUTHORIZATION)
        || parts.headers.contains_key("x-api-key");
    if let Some(a) = parts.extensions.get::<Authenticated>().filter(|_| !has_key) {
        if let Ok(caller) = HeaderValue::from_str(&format!("{} {}", a.account.id, a.key)) {
            headers.insert(CALLER, caller);
        }
    }
    // A body small enough is read here and bound into the mark.
    // Its length as the client declared it (the edge's body-idle wrapper
    // keeps no size hint), or as a body made here knows it.
    let length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .or_else(|| axum::body::HttpBody::size_hint(&body).upper());
    let small = length.is_some_and(|n| n <= MARK_BODY_MAX as u64);
    let watch = Silence::new(Duration::from_secs(app.config.http.peer_read_secs));
    let (digest, body) = if small {
        match axum::body::to_bytes(body, MARK_BODY_MAX).await {
            Ok(bytes) => (Some(blake3::hash(&bytes)), reqwest::Body::from(bytes)),
            Err(e) => {
                return ApiError(Error::invalid(
                    "body_unreadable",
                    format!("the request's body: {e}"),
                ))
                .into_response()
            }
        }
    } else {
        (
            None,
            reqwest::Body::wrap_stream(watch.sent(body.into_data_stream())),
        )
    };
    let nonce = hex::encode(rand::random::<[u8; 16]>());
    let mark = MarkOf {
        host: &host.name,
        method: &parts.method,
        path_and_query,
        headers: &headers,
        time: chrono::Utc::now().timestamp(),
        nonce: &nonce,
        body: digest,
    }
    .header(&app.forward_key());
    let out = app
        .forwarder()
        .request(parts.method.clone(), &url)
        .headers(headers)
        .header(MARK, mark)
        .body(body);
    match watch.answer(out.send()).await {
        Ok(answer) => {
            let mut back = Response::builder().status(answer.status());
            for (name, value) in answer.headers() {
                if name != header::TRANSFER_ENCODING && name != header::CONNECTION {
                    back = back.header(name, value);
                }
            }
            back.body(Body::from_stream(watch.received(answer.bytes_stream())))
                .unwrap_or_else(|e| {
                    ApiError(Error::internal(format!("forwarded answer: {e}"))).into_response()
                })
        }
        Err(why) => ApiError(Error::unavailable(
            "host_unreachable",
            format!(
                "host '{}' (at {}) did not answer: {why}",
                host.name, host.address
            ),
        ))
        .into_response(),
    }
}

/// How long a request sent on may go without a sign of life — a piece of
/// its body sent, its answer's head, a piece of its answer — before it is
/// given up (`[http] peer_read_secs`): a wedged host fails its callers,
/// a long upload to a live one does not.
#[derive(Clone)]
struct Silence {
    limit: Duration,
    began: std::time::Instant,
    /// Milliseconds after `began` of the last sign of life.
    last: Arc<std::sync::atomic::AtomicU64>,
}

impl Silence {
    fn new(limit: Duration) -> Silence {
        Silence {
            limit,
            began: std::time::Instant::now(),
            last: Arc::default(),
        }
    }

    fn alive(&self) {
        let ms = self.began.elapsed().as_millis() as u64;
        self.last.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// When the silence runs out, as of the last sign of life.
    fn deadline(&self) -> tokio::time::Instant {
        let last = Duration::from_millis(self.last.load(std::sync::atomic::Ordering::Relaxed));
        (self.began + last + self.limit).into()
    }

    /// `body`, each piece of it a sign of life.
    fn sent<S, T, E>(&self, body: S) -> impl futures::Stream<Item = std::result::Result<T, E>>
    where
        S: futures::Stream<Item = std::result::Result<T, E>>,
    {
        let watch = self.clone();
        body.inspect(move |_| watch.alive())
    }

    /// The answer's head, unless the request falls silent first.
    async fn answer(
        &self,
        send: impl std::future::Future<Output = reqwest::Result<reqwest::Response>>,
    ) -> std::result::Result<reqwest::Response, String> {
        tokio::pin!(send);
        loop {
            tokio::select! {
                r = &mut send => return r.map_err(|e| e.to_string()),
                _ = tokio::time::sleep_until(self.deadline()) => {
                    if tokio::time::Instant::now() >= self.deadline() {
                        return Err(format!("nothing for {:?}", self.limit));
                    }
                }
            }
        }
    }

    /// The answer's body, cut when a piece is longer coming than the limit.
    fn received(
        &self,
        answer: impl futures::Stream<Item = reqwest::Result<axum::body::Bytes>> + Send + Unpin + 'static,
    ) -> impl futures::Stream<Item = std::io::Result<axum::body::Bytes>> + Send + 'static {
        let limit = self.limit;
        futures::stream::unfold(Some(answer), move |answer| async move {
            let mut answer = answer?;
            match tokio::time::timeout(limit, answer.next()).await {
                Ok(Some(Ok(piece))) => Some((Ok(piece), Some(answer))),
                Ok(Some(Err(e))) => Some((Err(std::io::Error::other(e)), None)),
                Ok(None) => None,
                Err(_) => Some((
                    Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("the host sent nothing of its answer for {limit:?}"),
                    )),
                    None,
                )),
            }
        })
    }
}
