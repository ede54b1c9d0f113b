//! The CloudStack API at `/client/api` (GET query or POST form,
//! `response=json`), for CloudStack's clients (`cs`, Libcloud, cmk,
//! Ansible) unchanged. See `docs/cloudstack.md`.
//!
//! Invariants:
//! - A request is signed with a CloudStack key pair of an account
//!   ([`reprise_cloudstack::sign`]); its secret key is kept sealed in the
//!   catalog ([`seal`]: XChaCha20-Poly1305 under a key derived from the
//!   region's secret, bound to the pair's `apiKey`), opened only to check
//!   an HMAC.
//! - Every command runs as requests to the native API, made inside the
//!   daemon for the authenticated account ([`Ctx::native`]): the same
//!   checks, plans, isolation, forwarding to the resource's host and
//!   errors. A CloudStack call never reaches what the native API would
//!   refuse.
//! - Ids a client sends are parsed as UUIDs before they go in a path.
//! - CloudStack's asynchronous commands answer a job id: reprise's own job
//!   when the native operation has one; otherwise the operation is done
//!   before the answer, and a finished job is recorded for it, so that
//!   `queryAsyncJobResult` finds it.

use crate::app::App;
use crate::http::Authenticated;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use chrono::Utc;
use reprise_catalog::now;
use reprise_cloudstack::objects::{self, Outcome, Owner, SnapshotContext};
use reprise_cloudstack::wire::{self, CsError};
use reprise_cloudstack::{commands, sign};
use reprise_core::error::ErrorBody;
use reprise_core::model::*;
use reprise_core::{Error, ErrorKind, Result};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use tower::ServiceExt;
use uuid::Uuid;

/// The most a POST form may be.
const FORM_MAX: usize = 1 << 20;

/// The most a native answer read here may be (a list of every snapshot).
const ANSWER_MAX: usize = 64 << 20;

#[derive(Clone)]
struct Cs {
    app: Arc<App>,
    /// The native API (`/api/v1/…`), behind its forwarding to hosts.
    api: Router,
    /// Signatures of the changes already made, until they expire: a
    /// captured signed request that changes something runs once.
    used: Arc<crate::once::UsedOnce>,
}

/// The `/client/api` route; `api` is the native API's router.
pub fn router<S: Clone + Send + Sync + 'static>(app: Arc<App>, api: Router) -> Router<S> {
    Router::new()
        .route("/client/api", get(endpoint).post(endpoint))
        .route("/client/api/", get(endpoint).post(endpoint))
        .with_state(Cs {
            app,
            api,
            used: Arc::default(),
        })
}

// ---- key pairs ---------------------------------------------------------

/// Sealed form: `rcs1.` then Base64url of a 24-byte nonce and the
/// XChaCha20-Poly1305 ciphertext and tag of the secret, with the pair's
/// `apiKey` as associated data (a sealed secret moved to another row does
/// not open).
const SEALED_PREFIX: &str = "rcs1.";

fn cipher(app: &App) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(&app.cloudstack_seal_key().into())
}

fn seal(app: &App, api_key: &str, secret: &str) -> Result<String> {
    let nonce: [u8; 24] = rand::random();
    let sealed = cipher(app)
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: secret.as_bytes(),
                aad: api_key.as_bytes(),
            },
        )
        .map_err(|_| Error::internal("sealing a CloudStack secret key failed"))?;
    let mut bytes = nonce.to_vec();
    bytes.extend(sealed);
    Ok(format!(
        "{SEALED_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

fn open(app: &App, api_key: &str, sealed: &str) -> Result<String> {
    let damaged = || {
        Error::new(
            ErrorKind::Corrupt,
            "cloudstack_secret_damaged",
            "this key pair's sealed secret does not open (the region's secret changed, or the catalog row is damaged)",
        )
    };
    let bytes = sealed
        .strip_prefix(SEALED_PREFIX)
        .and_then(|b| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(b)
                .ok()
        })
        .filter(|b| b.len() > 24)
        .ok_or_else(damaged)?;
    let (nonce, ciphertext) = bytes.split_at(24);
    let secret = cipher(app)
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad: api_key.as_bytes(),
            },
        )
        .map_err(|_| damaged())?;
    String::from_utf8(secret).map_err(|_| damaged())
}

/// 64 random bytes as CloudStack shows keys: Base64url, 86 characters.
fn random_key() -> String {
    let bytes: [u8; 32] = rand::random();
    let more: [u8; 32] = rand::random();
    let mut all = bytes.to_vec();
    all.extend(more);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(all)
}

/// A new CloudStack key pair for `account`: its `apiKey` and its secret
/// key, shown this once.
pub fn create_key_pair(app: &App, account: Uuid, name: &str) -> Result<ApiKeyCreated> {
    let api_key = random_key();
    let secret = random_key();
    let sealed = seal(app, &api_key, &secret)?;
    let key = app
        .catalog
        .create_cloudstack_key(account, name, &api_key, &sealed)?;
    Ok(ApiKeyCreated {
        key,
        api_key,
        secret_key: Some(secret),
    })
}

// ---- the endpoint ------------------------------------------------------

async fn endpoint(State(cs): State<Cs>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let mut raw: Vec<(String, String)> = parts
        .uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    if parts.method == Method::POST {
        match axum::body::to_bytes(body, FORM_MAX).await {
            Ok(bytes) => raw.extend(form_urlencoded::parse(&bytes).into_owned()),
            Err(_) => {
                return answer(
                    "",
                    Err(CsError::invalid(format!(
                        "the form is larger than {FORM_MAX} bytes"
                    ))),
                )
            }
        }
    }
    // CloudStack reads a parameter's first value.
    let mut params: Vec<(String, String)> = Vec::with_capacity(raw.len());
    for (k, v) in raw {
        if !params.iter().any(|(seen, _)| seen.eq_ignore_ascii_case(&k)) {
            params.push((k, v));
        }
    }
    let command = sign::param(&params, "command").unwrap_or("").to_string();
    let result = run(&cs, &command, &params).await;
    if let Err(e) = &result {
        tracing::info!(
            command,
            code = e.errorcode,
            "CloudStack call refused: {}",
            e.errortext
        );
    }
    answer(&command, result)
}

fn answer(command: &str, result: std::result::Result<Value, CsError>) -> Response {
    let (status, value) = match result {
        Ok(v) => (StatusCode::OK, v),
        Err(e) => (
            StatusCode::from_u16(e.errorcode).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            e.body(),
        ),
    };
    let name = if command.is_empty() { "error" } else { command };
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
        wire::envelope(name, value).to_string(),
    )
        .into_response()
}

async fn run(
    cs: &Cs,
    command: &str,
    params: &[(String, String)],
) -> std::result::Result<Value, CsError> {
    let unauthorized =
        || CsError::unauthorized("unable to verify user credentials and/or request signature");
    let api_key = sign::param(params, "apikey").ok_or_else(unauthorized)?;
    let (account, key, sealed) = cs
        .app
        .catalog
        .account_by_cloudstack_key(api_key)
        .map_err(|e| CsError::from_error(&e))?
        .ok_or_else(unauthorized)?;
    let secret = open(&cs.app, api_key, &sealed).map_err(|e| {
        tracing::warn!(key = %key, "{e}");
        unauthorized()
    })?;
    let now = Utc::now();
    let expiry = sign::Expiry {
        max_ahead: chrono::Duration::seconds(
            cs.app.config.cloudstack.max_expires_ahead_secs.min(1 << 30) as i64,
        ),
        required: cs.app.config.cloudstack.require_expires,
    };
    let (signature, expires) = sign::verify(params, &secret, now, expiry)
        .map_err(|e| CsError::unauthorized(e.to_string()))?;
    // A signed change runs once: taken here (so two replays racing do not
    // both pass), given back when it fails, so a client may send the same
    // request again after a refusal that changed nothing.
    let once = expires
        .filter(|_| changes(command))
        .map(|until| (signature, until));
    if let Some((signature, until)) = &once {
        if !cs.used.take(signature, *until, now) {
            return Err(CsError::unauthorized(
                "this signed request was already used: sign each request anew",
            ));
        }
    }
    let result = authenticated(cs, command, params, account, key).await;
    if let (Err(_), Some((signature, _))) = (&result, &once) {
        cs.used.give_back(signature);
    }
    result
}

/// A call whose signature was checked.
async fn authenticated(
    cs: &Cs,
    command: &str,
    params: &[(String, String)],
    account: Account,
    key: uuid::Uuid,
) -> std::result::Result<Value, CsError> {
    cs.app.touch_key(key);
    match sign::param(params, "response") {
        Some(r) if r.eq_ignore_ascii_case("json") => {}
        _ => return Err(CsError::invalid("reprise answers response=json only")),
    }
    let cmd = commands::find(command).ok_or_else(|| CsError::unsupported(command))?;
    cmd.check(params)?;
    let cx = Ctx {
        cs,
        account,
        key,
        params,
    };
    cx.dispatch(cmd.name).await
}

/// Whether a command changes something (a replay of it would repeat the
/// change); lists and queries are read again harmlessly.
fn changes(command: &str) -> bool {
    let c = command.to_ascii_lowercase();
    !(c.starts_with("list") || c.starts_with("query") || c.starts_with("get"))
}

/// One authenticated CloudStack call.
struct Ctx<'a> {
    cs: &'a Cs,
    account: Account,
    key: Uuid,
    params: &'a [(String, String)],
}

type CsResult<T> = std::result::Result<T, CsError>;

fn cs_err(e: Error) -> CsError {
    CsError::from_error(&e)
}

/// A name for what CloudStack lets go unnamed: `PREFIX-` and 8 hex digits.
fn generated_name(prefix: &str) -> String {
    format!("{prefix}-{}", &Uuid::new_v4().simple().to_string()[..8])
}

impl Ctx<'_> {
    fn app(&self) -> &App {
        &self.cs.app
    }

    fn owner(&self) -> Owner<'_> {
        Owner {
            id: self.account.id,
            name: &self.account.name,
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        sign::param(self.params, name).filter(|v| !v.is_empty())
    }

    /// A parameter that names a resource: a UUID.
    fn id(&self, name: &str) -> CsResult<Option<Uuid>> {
        self.get(name)
            .map(|v| {
                Uuid::parse_str(v).map_err(|_| {
                    CsError::invalid(format!("Invalid parameter {name} value={v}: not a UUID"))
                })
            })
            .transpose()
    }

    fn required_id(&self, name: &str) -> CsResult<Uuid> {
        self.id(name)?.ok_or_else(|| {
            CsError::invalid(format!(
                "Unable to execute API command due to missing parameter {name}"
            ))
        })
    }

    fn flag(&self, name: &str) -> CsResult<Option<bool>> {
        self.get(name)
            .map(|v| match v.to_ascii_lowercase().as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(CsError::invalid(format!(
                    "{name} '{v}' is not true or false"
                ))),
            })
            .transpose()
    }

    /// The value of map parameter `name`'s entry `entry` (`details[0].entry`).
    fn map_entry(&self, name: &str, entry: &str) -> Option<&str> {
        self.params.iter().find_map(|(k, v)| {
            let k = k.to_ascii_lowercase();
            let rest = k.strip_prefix(name)?.strip_prefix('[')?;
            let (_, key) = rest.split_once("].")?;
            (key == entry.to_ascii_lowercase()).then_some(v.as_str())
        })
    }

    /// Call the native API as this account; its answer's JSON, or its
    /// error (scrubbed of host paths for a tenant).
    async fn native(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value> {
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("/api/v1{path}"));
        let body = match body {
            Some(v) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        let mut req = builder
            .body(body)
            .map_err(|e| Error::internal(format!("native request {path}: {e}")))?;
        req.extensions_mut().insert(Authenticated {
            account: self.account.clone(),
            key: self.key,
        });
        let resp = match self.cs.api.clone().oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), ANSWER_MAX)
            .await
            .map_err(|e| Error::internal(format!("native answer {path}: {e}")))?;
        if status.is_success() {
            if bytes.is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_slice(&bytes)
                .map_err(|e| Error::internal(format!("native answer {path}: {e}")));
        }
        let body: ErrorBody = serde_json::from_slice(&bytes)
            .map_err(|e| Error::internal(format!("native error {path} ({status}): {e}")))?;
        let mut message = body.error.message;
        if !self.account.admin {
            message = self.app().scrub(&message);
        }
        Err(Error::new(body.error.kind, body.error.code, message))
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> CsResult<T> {
        let v = self.native(method, path, body).await.map_err(cs_err)?;
        serde_json::from_value(v)
            .map_err(|e| cs_err(Error::internal(format!("native answer {path}: {e}"))))
    }

    async fn read<T: DeserializeOwned>(&self, path: &str) -> CsResult<T> {
        self.call(Method::GET, path, None).await
    }

    /// A job's start: `{id, jobid}` for what it creates, `{jobid}` else.
    async fn started(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        creates: bool,
    ) -> CsResult<Value> {
        let started: JobStarted = self.call(method, path, body).await?;
        Ok(job_started(&started.job, creates))
    }

    /// Record a finished job for an operation the native API did at once,
    /// and answer as CloudStack's asynchronous commands do.
    fn record(
        &self,
        kind: &str,
        target_kind: &str,
        target_id: Uuid,
        target_name: &str,
        creates: bool,
    ) -> CsResult<Value> {
        let at = now();
        let job = Job {
            id: Uuid::new_v4(),
            account_id: self.account.id,
            kind: kind.to_string(),
            target_kind: target_kind.to_string(),
            target_id,
            target_name: target_name.to_string(),
            state: JobState::Succeeded,
            progress_done: 1,
            progress_total: 1,
            error: None,
            log: Vec::new(),
            host: self.app().host_name().to_string(),
            created_at: at,
            started_at: Some(at),
            finished_at: Some(at),
        };
        self.app().catalog.insert_job(&job).map_err(cs_err)?;
        Ok(job_started(&job, creates))
    }

    async fn zones(&self) -> CsResult<Vec<Zone>> {
        self.read("/zones").await
    }

    async fn zone(&self, param: &str) -> CsResult<Option<Zone>> {
        let Some(id) = self.id(param)? else {
            return Ok(None);
        };
        self.zones()
            .await?
            .into_iter()
            .find(|z| z.id == id)
            .map(Some)
            .ok_or_else(|| CsError::invalid(format!("Unable to find zone by id {id}")))
    }

    /// One page of `items` filtered by name (`name` exact, `keyword`
    /// contained), as a CloudStack list.
    fn listed<T>(
        &self,
        item: &str,
        items: Vec<T>,
        name: impl Fn(&T) -> &str,
        show: impl Fn(&T) -> Value,
    ) -> CsResult<Value> {
        let wanted = self.get("name");
        let keyword = self.get("keyword").map(str::to_lowercase);
        let items: Vec<T> = items
            .into_iter()
            .filter(|i| wanted.is_none_or(|w| name(i) == w))
            .filter(|i| {
                keyword
                    .as_ref()
                    .is_none_or(|k| name(i).to_lowercase().contains(k))
            })
            .collect();
        let (items, count) = wire::page(items, self.get("page"), self.get("pagesize"))?;
        Ok(wire::list(item, items.iter().map(show).collect(), count))
    }

    async fn dispatch(&self, command: &str) -> CsResult<Value> {
        match command {
            "listApis" => self.list_apis(),
            "listZones" => self.list_zones().await,
            "listVolumes" => self.list_volumes().await,
            "createVolume" => self.create_volume().await,
            "deleteVolume" => {
                let id = self.required_id("id")?;
                self.call::<Value>(Method::DELETE, &format!("/volumes/{id}"), None)
                    .await?;
                Ok(json!({"success": true}))
            }
            "attachVolume" => {
                let id = self.required_id("id")?;
                let vm = self.required_id("virtualmachineid")?;
                let v: Volume = self
                    .call(
                        Method::POST,
                        &format!("/volumes/{id}/attach"),
                        Some(json!({"instance": vm.to_string()})),
                    )
                    .await?;
                self.record("volume.attach", "volume", v.id, &v.name, false)
            }
            "detachVolume" => {
                let id = self.required_id("id")?;
                let v: Volume = self
                    .call(Method::POST, &format!("/volumes/{id}/detach"), None)
                    .await?;
                self.record("volume.detach", "volume", v.id, &v.name, false)
            }
            "createSnapshot" => {
                let volume = self.required_id("volumeid")?;
                let body = json!({
                    "volume": volume.to_string(),
                    "name": self.get("name"),
                    "quiesce": self.quiesce()?,
                });
                self.started(Method::POST, "/snapshots", Some(body), true)
                    .await
            }
            "listSnapshots" => self.list_snapshots().await,
            "deleteSnapshot" => {
                let id = self.required_id("id")?;
                self.started(Method::DELETE, &format!("/snapshots/{id}"), None, false)
                    .await
            }
            "revertSnapshot" => {
                let id = self.required_id("id")?;
                let s: Snapshot = self.read(&format!("/snapshots/{id}")).await?;
                let body = json!({"snapshot": id.to_string()});
                self.started(
                    Method::POST,
                    &format!("/volumes/{}/revert", s.volume_id),
                    Some(body),
                    false,
                )
                .await
            }
            "createTemplate" => self.create_template().await,
            "listTemplates" => self.list_templates().await,
            "deleteTemplate" => {
                let id = self.required_id("id")?;
                self.started(Method::DELETE, &format!("/templates/{id}"), None, false)
                    .await
            }
            "deployVirtualMachine" => self.deploy().await,
            "listVirtualMachines" => self.list_virtual_machines().await,
            "startVirtualMachine" => self.instance_job("start", None).await,
            "stopVirtualMachine" => {
                let forced = self.flag("forced")?.unwrap_or(false);
                self.instance_job("stop", Some(json!({"force": forced})))
                    .await
            }
            "rebootVirtualMachine" => self.instance_job("restart", None).await,
            "destroyVirtualMachine" => {
                let id = self.required_id("id")?;
                let vm: Instance = self.read(&format!("/instances/{id}")).await?;
                self.call::<Value>(Method::DELETE, &format!("/instances/{id}"), None)
                    .await?;
                self.record("instance.delete", "instance", vm.id, &vm.name, false)
            }
            "createVMSnapshot" => {
                let vm = self.required_id("virtualmachineid")?;
                let body = json!({
                    "name": self.get("name"),
                    "description": self.get("description"),
                    "memory": self.flag("snapshotmemory")?.unwrap_or(false),
                    "quiesce": self.quiesce()?,
                });
                self.started(
                    Method::POST,
                    &format!("/instances/{vm}/points"),
                    Some(body),
                    true,
                )
                .await
            }
            "listVMSnapshot" => self.list_vm_snapshots().await,
            "revertToVMSnapshot" => {
                let point = self.point(self.required_id("vmsnapshotid")?)?;
                let path = format!(
                    "/instances/{}/points/{}/revert",
                    point.instance_id, point.id
                );
                self.started(Method::POST, &path, None, false).await
            }
            "deleteVMSnapshot" => {
                let point = self.point(self.required_id("vmsnapshotid")?)?;
                let path = format!("/instances/{}/points/{}", point.instance_id, point.id);
                self.started(Method::DELETE, &path, None, false).await
            }
            "createSnapshotPolicy" => self.create_policy().await,
            "listSnapshotPolicies" => self.list_policies().await,
            "updateSnapshotPolicy" => {
                let id = self.required_id("id")?;
                let p: Policy = self.read(&format!("/policies/{id}")).await?;
                self.volume_policy(&p)?;
                Ok(objects::snapshot_policy(&p))
            }
            "deleteSnapshotPolicies" => self.delete_policies().await,
            "queryAsyncJobResult" => {
                let id = self.required_id("jobid")?;
                let job: Job = self.read(&format!("/jobs/{id}")).await?;
                Ok(self.async_job(&job).await)
            }
            "listAsyncJobs" => {
                let jobs: Vec<Job> = self.read("/jobs?limit=1000").await?;
                // Only the page's jobs are looked into for their results.
                let (jobs, count) = wire::page(jobs, self.get("page"), self.get("pagesize"))?;
                let mut shown = Vec::with_capacity(jobs.len());
                for j in &jobs {
                    shown.push(self.async_job(j).await);
                }
                Ok(wire::list("asyncjobs", shown, count))
            }
            "listServiceOfferings" => {
                let id = self.get("id");
                let offerings: Vec<_> = objects::SERVICE_OFFERINGS
                    .iter()
                    .filter(|o| id.is_none_or(|i| i.eq_ignore_ascii_case(o.id)))
                    .collect();
                self.listed(
                    "serviceoffering",
                    offerings,
                    |o| o.name,
                    |o| objects::service_offering(o),
                )
            }
            "listDiskOfferings" => {
                let id = self.get("id");
                let offerings: Vec<_> = objects::DISK_OFFERINGS
                    .iter()
                    .filter(|o| id.is_none_or(|i| i.eq_ignore_ascii_case(o.id)))
                    .collect();
                self.listed(
                    "diskoffering",
                    offerings,
                    |o| o.name,
                    |o| objects::disk_offering(o),
                )
            }
            "listOsTypes" => {
                let id = self.get("id");
                let types: Vec<Value> = [objects::os_type()]
                    .into_iter()
                    .filter(|t| id.is_none_or(|i| t["id"] == i))
                    .collect();
                self.listed(
                    "ostype",
                    types,
                    |t| t["description"].as_str().unwrap_or(""),
                    Value::clone,
                )
            }
            other => Err(CsError::unsupported(other)),
        }
    }

    /// `quiescevm`: true freezes or fails, false does not freeze, absent
    /// freezes when the agent answers.
    fn quiesce(&self) -> CsResult<Option<&'static str>> {
        Ok(self
            .flag("quiescevm")?
            .map(|q| if q { "required" } else { "none" }))
    }

    fn list_apis(&self) -> CsResult<Value> {
        let name = self.get("name");
        let apis: Vec<Value> = commands::COMMANDS
            .iter()
            .filter(|c| name.is_none_or(|n| c.name.eq_ignore_ascii_case(n)))
            .map(|c| c.describe())
            .collect();
        let count = apis.len();
        Ok(wire::list("api", apis, count))
    }

    async fn list_zones(&self) -> CsResult<Value> {
        let id = self.id("id")?;
        let zones: Vec<Zone> = self
            .zones()
            .await?
            .into_iter()
            .filter(|z| id.is_none_or(|i| z.id == i))
            .collect();
        self.listed("zone", zones, |z| &z.name, objects::zone)
    }

    async fn list_volumes(&self) -> CsResult<Value> {
        let mut path = "/volumes".to_string();
        let mut sep = '?';
        for (param, filter) in [("virtualmachineid", "instance"), ("zoneid", "zone")] {
            if let Some(id) = self.id(param)? {
                path.push_str(&format!("{sep}{filter}={id}"));
                sep = '&';
            }
        }
        let id = self.id("id")?;
        let kind = self.get("type").map(str::to_ascii_uppercase);
        let volumes: Vec<Volume> = self
            .read::<Vec<Volume>>(&path)
            .await?
            .into_iter()
            .filter(|v| id.is_none_or(|i| v.id == i))
            .filter(|v| {
                kind.as_deref()
                    .is_none_or(|k| (k == "ROOT") == (v.kind == VolumeKind::Root))
            })
            .collect();
        let owner = self.owner();
        self.listed(
            "volume",
            volumes,
            |v| &v.name,
            |v| objects::volume(v, owner),
        )
    }

    async fn create_volume(&self) -> CsResult<Value> {
        let name = self
            .get("name")
            .map(str::to_string)
            .unwrap_or_else(|| generated_name("volume"));
        let zone = self.zone("zoneid").await?.map(|z| z.name);
        if let Some(snapshot) = self.id("snapshotid")? {
            let body = json!({"name": name, "zone": zone});
            return self
                .started(
                    Method::POST,
                    &format!("/snapshots/{snapshot}/volumes"),
                    Some(body),
                    true,
                )
                .await;
        }
        let offering = match self.id("diskofferingid")? {
            Some(id) => Some(
                objects::DISK_OFFERINGS
                    .iter()
                    .find(|o| Uuid::parse_str(o.id).ok() == Some(id))
                    .ok_or_else(|| {
                        CsError::invalid(format!("Unable to find disk offering by id {id}"))
                    })?,
            ),
            None => None,
        };
        let size_gib = match (
            offering.map(|o| o.size_gib).filter(|s| *s > 0),
            self.get("size"),
        ) {
            (Some(_), Some(_)) => {
                return Err(CsError::invalid("size is for a custom disk offering only"))
            }
            (Some(gib), None) => gib,
            (None, Some(size)) => size.parse::<u64>().ok().filter(|g| *g > 0).ok_or_else(|| {
                CsError::invalid(format!("size '{size}' is not a whole number of GiB"))
            })?,
            (None, None) => {
                return Err(CsError::invalid(
                    "give snapshotid, or diskofferingid (with size for Custom), or size",
                ))
            }
        };
        let body = json!({"name": name, "size": format!("{size_gib}G"), "zone": zone});
        let v: Volume = self.call(Method::POST, "/volumes", Some(body)).await?;
        self.record("volume.create", "volume", v.id, &v.name, true)
    }

    async fn list_snapshots(&self) -> CsResult<Value> {
        let path = match self.id("volumeid")? {
            Some(v) => format!("/snapshots?volume={v}"),
            None => "/snapshots".to_string(),
        };
        let snapshots: Vec<Snapshot> = self.read(&path).await?;
        let zones: HashMap<String, Uuid> = self
            .zones()
            .await?
            .into_iter()
            .map(|z| (z.name, z.id))
            .collect();
        let kinds: HashMap<Uuid, VolumeKind> = self
            .read::<Vec<Volume>>("/volumes")
            .await?
            .into_iter()
            .map(|v| (v.id, v.kind))
            .collect();
        let intervals: HashMap<Uuid, String> = self
            .read::<Vec<Policy>>("/policies")
            .await?
            .into_iter()
            .filter_map(|p| Some((p.id, p.interval_type?)))
            .collect();
        let id = self.id("id")?;
        let zone = self.id("zoneid")?;
        let wanted_type = self
            .get("snapshottype")
            .or(self.get("intervaltype"))
            .map(str::to_ascii_uppercase);
        let owner = self.owner();
        let shown: Vec<Value> = snapshots
            .iter()
            .filter(|s| id.is_none_or(|i| s.id == i))
            .filter(|s| zone.is_none_or(|z| zones.get(&s.zone) == Some(&z)))
            .map(|s| {
                let cx = SnapshotContext {
                    zone_id: zones.get(&s.zone).copied(),
                    volume_type: kinds.get(&s.volume_id).copied(),
                    interval: s
                        .policy_id
                        .and_then(|p| intervals.get(&p))
                        .map(String::as_str),
                };
                objects::snapshot(s, &cx, owner)
            })
            .filter(|v| {
                wanted_type.as_deref().is_none_or(|t| {
                    v["snapshottype"] == t || (t == "RECURRING" && v["snapshottype"] != "MANUAL")
                })
            })
            .collect();
        self.listed(
            "snapshot",
            shown,
            |v| v["name"].as_str().unwrap_or(""),
            Value::clone,
        )
    }

    async fn create_template(&self) -> CsResult<Value> {
        for flag in ["ispublic", "isfeatured"] {
            if self.flag(flag)? == Some(true) {
                return Err(CsError::invalid(format!(
                    "{flag}=true is not served: a template is its account's own"
                )));
            }
        }
        let snapshot = self.required_id("snapshotid")?;
        let name = self.get("name").unwrap_or_default();
        let body = json!({"name": name, "snapshot": snapshot.to_string()});
        let t: Template = self.call(Method::POST, "/templates", Some(body)).await?;
        self.record("template.create", "template", t.id, &t.name, true)
    }

    async fn list_templates(&self) -> CsResult<Value> {
        let filter = self
            .get("templatefilter")
            .unwrap_or_default()
            .to_ascii_lowercase();
        let own = match filter.as_str() {
            "self" | "selfexecutable" | "executable" | "all" => true,
            "featured" | "community" | "shared" | "sharedexecutable" => false,
            other => {
                return Err(CsError::invalid(format!(
                    "templatefilter '{other}' is not one of self, selfexecutable, executable, all, featured, community, shared, sharedexecutable"
                )))
            }
        };
        let templates: Vec<Template> = if own {
            self.read("/templates").await?
        } else {
            Vec::new()
        };
        let id = self.id("id")?;
        let templates: Vec<Template> = templates
            .into_iter()
            .filter(|t| id.is_none_or(|i| t.id == i))
            .collect();
        let zones = self.zones().await?;
        let owner = self.owner();
        self.listed(
            "template",
            templates,
            |t| &t.name,
            |t| objects::template(t, zones.first(), owner),
        )
    }

    async fn deploy(&self) -> CsResult<Value> {
        let offering_id = self.required_id("serviceofferingid")?;
        let offering = objects::SERVICE_OFFERINGS
            .iter()
            .find(|o| Uuid::parse_str(o.id).ok() == Some(offering_id))
            .ok_or_else(|| {
                CsError::invalid(format!(
                    "Unable to find service offering by id {offering_id}"
                ))
            })?;
        let template = self.required_id("templateid")?;
        let zone = self.zone("zoneid").await?.ok_or_else(|| {
            CsError::invalid("Unable to execute API command due to missing parameter zoneid")
        })?;
        let name = self
            .get("name")
            .or(self.get("displayname"))
            .map(str::to_string)
            .unwrap_or_else(|| generated_name("vm"));
        let cpus = match self.map_entry("details", "cpuNumber") {
            Some(c) => c.parse::<u32>().map_err(|_| {
                CsError::invalid(format!("details cpuNumber '{c}' is not a number"))
            })?,
            None => offering.cpus,
        };
        let memory_mib = match self.map_entry("details", "memory") {
            Some(m) => m.parse::<u64>().map_err(|_| {
                CsError::invalid(format!("details memory '{m}' is not a number of MiB"))
            })?,
            None => offering.memory_mib,
        };
        let upload = |entry: &str| -> CsResult<Option<String>> {
            self.map_entry("details", entry)
                .map(|v| {
                    Uuid::parse_str(v).map(|u| u.to_string()).map_err(|_| {
                        CsError::invalid(format!("details {entry} '{v}' is not an upload id"))
                    })
                })
                .transpose()
        };
        let body = json!({
            "name": name,
            "zone": zone.name,
            "template": template.to_string(),
            "cpus": cpus,
            "memory": format!("{memory_mib}M"),
            "kernel_upload": upload("kernelupload")?,
            "initrd_upload": upload("initrdupload")?,
            "append": self.map_entry("details", "append"),
            "no_start": self.flag("startvm")? == Some(false),
        });
        self.started(Method::POST, "/instances", Some(body), true)
            .await
    }

    async fn list_virtual_machines(&self) -> CsResult<Value> {
        let id = self.id("id")?;
        let zone = self.id("zoneid")?;
        let state = self.get("state");
        let vms: Vec<Instance> = self
            .read::<Vec<Instance>>("/instances")
            .await?
            .into_iter()
            .filter(|i| id.is_none_or(|x| i.id == x))
            .filter(|i| zone.is_none_or(|z| i.zone_id == z))
            .filter(|i| state.is_none_or(|s| i.state.as_str().eq_ignore_ascii_case(s)))
            .collect();
        let owner = self.owner();
        self.listed(
            "virtualmachine",
            vms,
            |i| &i.name,
            |i| objects::virtual_machine(i, owner),
        )
    }

    async fn instance_job(&self, action: &str, body: Option<Value>) -> CsResult<Value> {
        let id = self.required_id("id")?;
        let body = Some(body.unwrap_or(json!({})));
        self.started(
            Method::POST,
            &format!("/instances/{id}/{action}"),
            body,
            false,
        )
        .await
    }

    /// A recovery point of this account by id.
    fn point(&self, id: Uuid) -> CsResult<Point> {
        self.app()
            .catalog
            .point_by_id(id)
            .ok()
            .filter(|p| p.account_id == self.account.id)
            .ok_or_else(|| CsError::invalid(format!("Unable to find VM snapshot by id {id}")))
    }

    async fn list_vm_snapshots(&self) -> CsResult<Value> {
        let instances: Vec<Instance> = self.read("/instances").await?;
        let vm = self.id("virtualmachineid")?;
        let wanted = self.id("vmsnapshotid")?;
        let state = self.get("state");
        let owner = self.owner();
        let mut shown = Vec::new();
        for i in instances.iter().filter(|i| vm.is_none_or(|v| i.id == v)) {
            let points: Vec<Point> = self.read(&format!("/instances/{}/points", i.id)).await?;
            shown.extend(
                points
                    .iter()
                    .filter(|p| wanted.is_none_or(|w| p.id == w))
                    .filter(|p| {
                        state.is_none_or(|s| objects::point_state(p.state).eq_ignore_ascii_case(s))
                    })
                    .map(|p| objects::vm_snapshot(p, Some(i.zone_id), owner)),
            );
        }
        self.listed(
            "vmSnapshot",
            shown,
            |v| v["name"].as_str().unwrap_or(""),
            Value::clone,
        )
    }

    /// CloudStack's policies are of volumes; a reprise policy of an
    /// instance's recovery points, or on a cron schedule, is not one.
    fn volume_policy(&self, p: &Policy) -> CsResult<()> {
        if p.volume_id.is_none() || p.interval_type.is_none() {
            return Err(CsError::invalid(format!(
                "policy '{}' is not a CloudStack snapshot policy (it is of recovery points, or on a cron schedule)",
                p.name
            )));
        }
        Ok(())
    }

    async fn create_policy(&self) -> CsResult<Value> {
        let volume = self.required_id("volumeid")?;
        let interval_text = self.get("intervaltype").unwrap_or_default();
        let interval = objects::interval_number(interval_text)
            .map(objects::interval_name)
            .ok_or_else(|| {
                CsError::invalid(format!(
                    "intervaltype '{interval_text}' is not HOURLY, DAILY, WEEKLY or MONTHLY (or 0-3)"
                ))
            })?;
        let schedule = reprise_core::schedule::Schedule::cloudstack(
            interval,
            self.get("schedule").unwrap_or_default(),
        )
        .map_err(cs_err)?;
        let maxsnaps = self.get("maxsnaps").unwrap_or_default();
        let last = maxsnaps
            .parse::<u32>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                CsError::invalid(format!(
                    "maxsnaps '{maxsnaps}' is not a whole number above 0"
                ))
            })?;
        let timezone = self.get("timezone").unwrap_or("UTC");
        let keep = json!({"last": last});
        // One policy per volume and interval type: created again, updated.
        let existing: Vec<Policy> = self.read(&format!("/policies?volume={volume}")).await?;
        let policy: Policy = match existing
            .iter()
            .find(|p| p.interval_type.as_deref() == Some(interval))
        {
            Some(p) => {
                let body =
                    json!({"schedule": schedule.to_string(), "timezone": timezone, "keep": keep});
                self.call(Method::POST, &format!("/policies/{}", p.id), Some(body))
                    .await?
            }
            None => {
                let v: Volume = self.read(&format!("/volumes/{volume}")).await?;
                let body = json!({
                    "name": format!("{}-{}", v.name, interval.to_ascii_lowercase()),
                    "volume": volume.to_string(),
                    "schedule": schedule.to_string(),
                    "timezone": timezone,
                    "keep": keep,
                });
                self.call(Method::POST, "/policies", Some(body)).await?
            }
        };
        Ok(objects::snapshot_policy(&policy))
    }

    async fn list_policies(&self) -> CsResult<Value> {
        let path = match self.id("volumeid")? {
            Some(v) => format!("/policies?volume={v}"),
            None => "/policies".to_string(),
        };
        let id = self.id("id")?;
        let policies: Vec<Value> = self
            .read::<Vec<Policy>>(&path)
            .await?
            .iter()
            .filter(|p| p.volume_id.is_some() && p.interval_type.is_some())
            .filter(|p| id.is_none_or(|i| p.id == i))
            .map(objects::snapshot_policy)
            .collect();
        let (items, count) = wire::page(policies, self.get("page"), self.get("pagesize"))?;
        Ok(wire::list("snapshotpolicy", items, count))
    }

    async fn delete_policies(&self) -> CsResult<Value> {
        let mut ids: Vec<Uuid> = self.id("id")?.into_iter().collect();
        for id in self
            .get("ids")
            .unwrap_or_default()
            .split(',')
            .filter(|s| !s.is_empty())
        {
            ids.push(
                Uuid::parse_str(id.trim())
                    .map_err(|_| CsError::invalid(format!("ids: '{id}' is not a UUID")))?,
            );
        }
        if ids.is_empty() {
            return Err(CsError::invalid("give id or ids"));
        }
        // Every one is checked before any goes: a bad id changes nothing.
        for id in &ids {
            let p: Policy = self.read(&format!("/policies/{id}")).await?;
            self.volume_policy(&p)?;
        }
        for id in &ids {
            self.call::<Value>(Method::DELETE, &format!("/policies/{id}"), None)
                .await?;
        }
        Ok(json!({"success": true}))
    }

    /// A job as CloudStack shows it, with its result object when done.
    async fn async_job(&self, job: &Job) -> Value {
        let outcome = match job.state {
            JobState::Queued | JobState::Running => Outcome::Pending,
            JobState::Succeeded => Outcome::Succeeded(self.job_result(job).await),
            JobState::Failed | JobState::Cancelled => Outcome::Failed(match &job.error {
                Some(w) => {
                    CsError::from_error(&Error::new(w.kind, w.code.clone(), w.message.clone()))
                }
                None => CsError {
                    errorcode: 530,
                    cserrorcode: wire::cs_code::SERVER,
                    errortext: format!("the job was {}", job.state.as_str().to_lowercase()),
                },
            }),
        };
        objects::async_job(job, outcome)
    }

    /// What a finished job made or changed, under CloudStack's key; what
    /// is gone since shows as its id and name.
    async fn job_result(&self, job: &Job) -> Value {
        let owner = self.owner();
        let target = job.target_id;
        let gone = |key: &str, state: &str| json!({ key: {"id": target, "name": job.target_name, "state": state} });
        match job.kind.as_str() {
            "snapshot.create" => match self.read::<Snapshot>(&format!("/snapshots/{target}")).await
            {
                Ok(s) => {
                    let zones = self.zones().await.unwrap_or_default();
                    let cx = SnapshotContext {
                        zone_id: zones.iter().find(|z| z.name == s.zone).map(|z| z.id),
                        volume_type: None,
                        interval: None,
                    };
                    json!({"snapshot": objects::snapshot(&s, &cx, owner)})
                }
                Err(_) => gone("snapshot", "Destroyed"),
            },
            "volume.restore" | "volume.create" | "volume.attach" | "volume.detach"
            | "volume.revert" => match self.read::<Volume>(&format!("/volumes/{target}")).await {
                Ok(v) => json!({"volume": objects::volume(&v, owner)}),
                Err(_) => gone("volume", "Destroy"),
            },
            "template.create" | "template.import" => {
                match self.read::<Template>(&format!("/templates/{target}")).await {
                    Ok(t) => {
                        let zones = self.zones().await.unwrap_or_default();
                        json!({"template": objects::template(&t, zones.first(), owner)})
                    }
                    Err(_) => gone("template", "Inactive"),
                }
            }
            "instance.create" | "instance.start" | "instance.stop" | "instance.restart" => self
                .vm_result(target)
                .await
                .unwrap_or_else(|| gone("virtualmachine", "Destroyed")),
            "instance.delete" => gone("virtualmachine", "Destroyed"),
            "point.create" => match self.point(target) {
                Ok(p) => {
                    let zone = self
                        .app()
                        .catalog
                        .instance_by_id(p.instance_id)
                        .ok()
                        .map(|i| i.zone_id);
                    json!({"vmsnapshot": objects::vm_snapshot(&p, zone, owner)})
                }
                Err(_) => gone("vmsnapshot", "Expunging"),
            },
            // CloudStack answers the virtual machine.
            "point.revert" => match self.point(target) {
                Ok(p) => self
                    .vm_result(p.instance_id)
                    .await
                    .unwrap_or_else(|| gone("virtualmachine", "Destroyed")),
                Err(_) => json!({"success": true}),
            },
            _ => json!({"success": true}),
        }
    }

    async fn vm_result(&self, id: Uuid) -> Option<Value> {
        let vm: Instance = self.read(&format!("/instances/{id}")).await.ok()?;
        Some(json!({"virtualmachine": objects::virtual_machine(&vm, self.owner())}))
    }
}

fn job_started(job: &Job, creates: bool) -> Value {
    if creates {
        json!({"id": job.target_id, "jobid": job.id})
    } else {
        json!({"jobid": job.id})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_names_are_valid_names() {
        let n = generated_name("volume");
        reprise_core::name::validate_name("volume", &n).unwrap();
        assert_eq!(n.len(), "volume-".len() + 8);
    }
}
