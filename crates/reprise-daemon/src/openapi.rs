//! The OpenAPI 3.0 document of the API, served at `/api/v1/openapi.json`.
//!
//! Each operation is listed once below with the Rust types it takes and
//! answers; their schemas are derived from those types (`schemars`, the
//! same serde attributes the API uses), the error codes come from
//! [`reprise_core::codes`]. Tests check that every operation listed is
//! routed, and the document passes `openapi-spec-validator`.

use reprise_core::codes::CODES;
use reprise_core::error::ErrorBody;
use reprise_core::model::*;
use reprise_core::plan::Plan;
use schemars::gen::{SchemaGenerator, SchemaSettings};
use schemars::JsonSchema;
use serde_json::{json, Map, Value};
use std::cell::RefCell;
use std::sync::OnceLock;

/// The document, built once.
pub fn document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| serde_json::to_string_pretty(&build()).expect("a JSON value"))
}

/// One operation: a route, what it takes and what it answers.
struct Op {
    method: &'static str,
    path: &'static str,
    tag: &'static str,
    summary: &'static str,
    body: Option<Value>,
    status: u16,
    answer: Option<Value>,
    /// (name, type, description)
    query: Vec<(&'static str, &'static str, &'static str)>,
    public: bool,
}

impl Op {
    fn new(
        method: &'static str,
        path: &'static str,
        tag: &'static str,
        summary: &'static str,
    ) -> Op {
        Op {
            method,
            path,
            tag,
            summary,
            body: None,
            status: 204,
            answer: None,
            query: Vec::new(),
            public: false,
        }
    }

    fn body(mut self, schema: Value) -> Op {
        self.body = Some(schema);
        self
    }

    fn answers(mut self, status: u16, schema: Value) -> Op {
        self.status = status;
        self.answer = Some(schema);
        self
    }

    fn query(mut self, name: &'static str, kind: &'static str, description: &'static str) -> Op {
        self.query.push((name, kind, description));
        self
    }
}

struct Doc {
    gen: RefCell<SchemaGenerator>,
    paths: RefCell<Map<String, Value>>,
}

impl Doc {
    /// The schema of `T`: a `$ref` to its component for a named type.
    fn schema<T: JsonSchema>(&self) -> Value {
        let schema = self.gen.borrow_mut().subschema_for::<T>();
        serde_json::to_value(schema).expect("a schema is JSON")
    }

    fn job(&self) -> Value {
        self.schema::<JobStarted>()
    }

    fn add(&self, op: Op) {
        let mut parameters: Vec<Value> = op
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| {
                json!({
                    "name": name, "in": "path", "required": true,
                    "description": "Its name or id",
                    "schema": {"type": "string"},
                })
            })
            .collect();
        parameters.extend(op.query.iter().map(|(name, kind, description)| {
            json!({
                "name": name, "in": "query", "required": false,
                "description": description, "schema": {"type": kind},
            })
        }));
        let error = json!({
            "description": "Error",
            "content": {"application/json": {"schema": self.schema::<ErrorBody>()}},
        });
        let success = match &op.answer {
            Some(schema) => json!({
                "description": "OK",
                "content": {"application/json": {"schema": schema}},
            }),
            None => json!({"description": "No content"}),
        };
        let mut operation = json!({
            "summary": op.summary,
            "tags": [op.tag],
            "responses": {op.status.to_string(): success, "4XX": error, "5XX": error},
        });
        if !parameters.is_empty() {
            operation["parameters"] = Value::Array(parameters);
        }
        if let Some(body) = op.body {
            let media = if body.get("format") == Some(&json!("binary")) {
                "application/octet-stream"
            } else {
                "application/json"
            };
            operation["requestBody"] =
                json!({"required": true, "content": {media: {"schema": body}}});
        }
        if op.public {
            operation["security"] = json!([]);
        }
        let mut paths = self.paths.borrow_mut();
        let entry = paths
            .entry(format!("/api/v1{}", op.path))
            .or_insert_with(|| json!({}));
        entry[op.method] = operation;
    }
}

#[rustfmt::skip] // one line per operation: a table
fn build() -> Value {
    let d = Doc {
        gen: RefCell::new(SchemaGenerator::new(SchemaSettings::openapi3())),
        paths: RefCell::new(Map::new()),
    };
    let object = json!({"type": "object"});
    let binary = json!({"type": "string", "format": "binary"});
    let public = |op: Op| Op { public: true, ..op };

    d.add(public(Op::new("get", "/health", "meta", "Health of the daemon").answers(200, object.clone())));
    d.add(public(Op::new("get", "/openapi.json", "meta", "This document").answers(200, object)));

    let t = "accounts";
    d.add(Op::new("get", "/whoami", t, "The account of the API key").answers(200, d.schema::<Account>()));
    d.add(Op::new("get", "/accounts", t, "List accounts (admin: all; others: their own)").answers(200, d.schema::<Vec<Account>>()));
    d.add(Op::new("post", "/accounts", t, "Create an account (admin); its key is shown once").body(d.schema::<CreateAccount>()).answers(201, d.schema::<AccountCreated>()));
    d.add(Op::new("get", "/accounts/{account}", t, "An account, its plan and its usage of each limit").answers(200, d.schema::<AccountDetails>()));
    d.add(Op::new("delete", "/accounts/{account}", t, "Delete an account (admin): refused while it owns resources, unless purge=true (then a job: its keys revoked, all it owns deleted, then the account)").query("purge", "boolean", "Delete everything it owns first"));
    d.add(Op::new("post", "/accounts/{account}/settings", t, "Assign a plan to an account (admin)").body(d.schema::<AccountSettings>()).answers(200, d.schema::<AccountDetails>()));
    d.add(Op::new("get", "/accounts/{account}/keys", t, "An account's API keys").answers(200, d.schema::<Vec<ApiKey>>()));
    d.add(Op::new("post", "/accounts/{account}/keys", t, "Make a new API key (shown once)").body(d.schema::<CreateApiKey>()).answers(201, d.schema::<ApiKeyCreated>()));
    d.add(Op::new("delete", "/accounts/{account}/keys/{key}", t, "Revoke a key: it fails from the next request on"));
    d.add(Op::new("post", "/keys/rotate", t, "Replace the key this request came with by a new one of the same name (for the admin key, DATA_DIR/admin.key too)").answers(201, d.schema::<ApiKeyCreated>()));

    let t = "plans";
    d.add(Op::new("get", "/plans", t, "Plans (admin: all; others: their own)").answers(200, d.schema::<Vec<Plan>>()));
    d.add(Op::new("post", "/plans", t, "Define or replace a plan (admin)").body(d.schema::<Plan>()).answers(200, d.schema::<Plan>()));
    d.add(Op::new("delete", "/plans/{plan}", t, "Delete a plan no account or instance uses (admin)"));

    let t = "zones";
    d.add(Op::new("get", "/zones", t, "List zones").answers(200, d.schema::<Vec<Zone>>()));
    d.add(Op::new("post", "/zones", t, "Create a zone (admin)").body(d.schema::<CreateZone>()).answers(201, d.schema::<Zone>()));
    d.add(Op::new("get", "/hosts", t, "The region's hosts (admin): state (Up, or Down past its lease), zones served, what lives on each, last heartbeat").answers(200, d.schema::<Vec<Host>>()));

    let t = "uploads";
    d.add(Op::new("get", "/uploads", t, "The account's uploads").answers(200, d.schema::<Vec<Upload>>()));
    d.add(Op::new("post", "/uploads", t, "Announce an upload: a file's name and size (at most uploads.max_bytes)").body(d.schema::<CreateUpload>()).answers(201, d.schema::<Upload>()));
    d.add(Op::new("get", "/uploads/{id}", t, "An upload: where it stands (received_bytes) and, once Complete, its SHA-256").answers(200, d.schema::<Upload>()));
    d.add(Op::new("delete", "/uploads/{id}", t, "Delete an upload (what was made from it keeps its own copy)"));
    d.add(Op::new("put", "/uploads/{id}/data", t, "Send bytes of an upload from offset, which must be its received_bytes (an interrupted upload resumes there); the last byte completes it").query("offset", "integer", "Where these bytes go: the upload's received_bytes").body(binary).answers(200, d.schema::<Upload>()));

    let t = "volumes";
    d.add(Op::new("get", "/volumes", t, "List volumes").query("zone", "string", "Only this zone").query("instance", "string", "Only volumes of this instance").answers(200, d.schema::<Vec<Volume>>()));
    d.add(Op::new("post", "/volumes", t, "Create a blank data volume").body(d.schema::<CreateVolume>()).answers(201, d.schema::<Volume>()));
    d.add(Op::new("get", "/volumes/{id}", t, "Show a volume").answers(200, d.schema::<Volume>()));
    d.add(Op::new("delete", "/volumes/{id}", t, "Delete a volume"));
    d.add(Op::new("post", "/volumes/{id}/resize", t, "Grow a volume").body(d.schema::<ResizeVolume>()).answers(200, d.schema::<Volume>()));
    d.add(Op::new("post", "/volumes/{id}/attach", t, "Attach a data volume to an instance (hot-plug when running)").body(d.schema::<AttachVolume>()).answers(200, d.schema::<Volume>()));
    d.add(Op::new("post", "/volumes/{id}/detach", t, "Detach a data volume (hot-unplug when running)").answers(200, d.schema::<Volume>()));
    d.add(Op::new("post", "/volumes/{id}/revert", t, "Put a volume back to a snapshot's content (its instance stopped); the volume's snapshots stay").body(d.schema::<RevertVolume>()).answers(202, d.job()));

    let t = "instances";
    d.add(Op::new("get", "/instances", t, "List instances").answers(200, d.schema::<Vec<Instance>>()));
    d.add(Op::new("post", "/instances", t, "Create (and start) an instance").body(d.schema::<CreateInstance>()).answers(202, d.job()));
    d.add(Op::new("get", "/instances/{id}", t, "Show an instance, with its guest agent status").answers(200, d.schema::<Instance>()));
    d.add(Op::new("delete", "/instances/{id}", t, "Delete a stopped instance and its root volume"));
    d.add(Op::new("post", "/instances/{id}/start", t, "Start an instance").answers(202, d.job()));
    d.add(Op::new("post", "/instances/{id}/stop", t, "Stop an instance (power-down, then forced after the timeout)").body(d.schema::<StopInstance>()).answers(202, d.job()));
    d.add(Op::new("post", "/instances/{id}/restart", t, "Restart an instance").answers(202, d.job()));
    d.add(Op::new("post", "/instances/{id}/settings", t, "Operator settings: snapshots on/off, plan (admin)").body(d.schema::<InstanceSettings>()).answers(200, d.schema::<Instance>()));
    d.add(Op::new("post", "/instances/{id}/clone", t, "Clone an instance for troubleshooting: its volumes snapshotted at one instant, copied into new volumes in any zone, a new instance started on them").body(d.schema::<CloneInstance>()).answers(202, d.job()));

    let t = "recovery points";
    d.add(Op::new("get", "/instances/{id}/points", t, "The recovery points of an instance, with parents, the current one, the space each holds, and when a policy's retention removes it").query("policy", "string", "Only those this policy took").answers(200, d.schema::<Vec<Point>>()));
    d.add(Op::new("post", "/instances/{id}/points", t, "Create a recovery point (disk-only by default; quiesced when the agent answers)").body(d.schema::<CreatePoint>()).answers(202, d.job()));
    d.add(Op::new("delete", "/instances/{id}/points", t, "Delete every recovery point of an instance").answers(202, d.job()));
    d.add(Op::new("get", "/instances/{id}/points/{point}", t, "Show a recovery point").answers(200, d.schema::<Point>()));
    d.add(Op::new("delete", "/instances/{id}/points/{point}", t, "Delete a recovery point (its children move to its parent)").answers(202, d.job()));
    d.add(Op::new("post", "/instances/{id}/points/{point}/revert", t, "Revert the instance to a recovery point, keeping the others").answers(202, d.job()));
    d.add(Op::new("post", "/instances/{id}/points/{point}/protection", t, "Protect a recovery point from deletes and retention (within the plan's max_protected), or lift it").body(d.schema::<Protection>()).answers(200, d.schema::<Point>()));

    let t = "volume snapshots";
    d.add(Op::new("get", "/snapshots", t, "The account's volume snapshots, with state, progress and sizes").query("deleted", "boolean", "The deleted ones still in their undelete window, instead").query("volume", "string", "Only this volume's (name or id)").query("zone", "string", "Only this zone's").query("policy", "string", "Only those this policy took").query("instance", "string", "Only those of the volumes attached to this instance").answers(200, d.schema::<Vec<Snapshot>>()));
    d.add(Op::new("get", "/policies", t, "The account's snapshot policies").query("volume", "string", "Only this volume's").query("instance", "string", "Only this instance's").answers(200, d.schema::<Vec<Policy>>()));
    d.add(Op::new("post", "/policies", t, "Create a snapshot policy: volume snapshots of a volume or recovery points of an instance, on a schedule, with retention").body(d.schema::<CreatePolicy>()).answers(201, d.schema::<Policy>()));
    d.add(Op::new("get", "/policies/{id}", t, "A policy, with its next run and its last run's result").answers(200, d.schema::<Policy>()));
    d.add(Op::new("post", "/policies/{id}", t, "Change a policy's schedule, time zone, retention or switches").body(d.schema::<UpdatePolicy>()).answers(200, d.schema::<Policy>()));
    d.add(Op::new("delete", "/policies/{id}", t, "Delete a policy (the snapshots it took stay)"));
    d.add(Op::new("get", "/policies/{id}/simulate", t, "What the policy's retention would keep and remove now, and why").answers(200, d.schema::<PolicySimulation>()));
    d.add(Op::new("post", "/snapshots", t, "Snapshot a volume into the region's object store (incremental to its last snapshot)").body(d.schema::<CreateSnapshot>()).answers(202, d.job()));
    d.add(Op::new("get", "/snapshots/{id}", t, "One volume snapshot").answers(200, d.schema::<Snapshot>()));
    d.add(Op::new("delete", "/snapshots/{id}", t, "Delete a snapshot: Deleted, kept whole and undeletable for the plan's undelete window (or [snapshots] undelete_days), then removed for good and its unreferenced chunks collected; refused while protected").query("purge", "boolean", "Admin: remove it for good now (Destroying, then gone), deleted or not, of any account by id").answers(202, d.job()));
    d.add(Op::new("post", "/snapshots/{id}/undelete", t, "Bring a deleted snapshot back within its undelete window (by id, or by name: the latest deleted); it counts against the plan again").answers(200, d.schema::<Snapshot>()));
    d.add(Op::new("post", "/snapshots/{id}/protection", t, "Protect a snapshot (no delete, retention, purge or account purge removes it; the plan's max_protected caps how many) or lift it").body(d.schema::<Protection>()).answers(200, d.schema::<Snapshot>()));
    d.add(Op::new("post", "/snapshots/{id}/verify", t, "Re-read every chunk of a snapshot and check it; damage is named and the snapshot flagged Error").answers(202, d.job()));
    d.add(Op::new("post", "/snapshots/{id}/volumes", t, "Make a new volume, in any zone, with a snapshot's content (Creating, then Ready)").body(d.schema::<VolumeFromSnapshot>()).answers(202, d.job()));
    d.add(Op::new("post", "/gc", t, "Remove the chunks no snapshot references from the region's store (admin); refused unless the store is bound to this catalog at its generation; keeps what the catalog does not know (orphans)").answers(202, d.job()));
    d.add(Op::new("post", "/region/recover", t, "Rebuild the catalog from the region's store (admin): every snapshot and template the store holds that the catalog lacks comes back as a row (accounts re-created without keys), then the store is bound to this catalog; the job's log says what was (or with dry_run would be) added").body(d.schema::<RecoverRegion>()).answers(202, d.job()));
    d.add(Op::new("get", "/catalog/backups", t, "The catalog's backups in the region's store, newest first (admin)").answers(200, d.schema::<Vec<CatalogBackup>>()));
    d.add(Op::new("post", "/catalog/backups", t, "Back the catalog's own rows (accounts and key hashes, plans, zones, volumes, instances, points, policies, templates) up into the region's store, encrypted (admin)").answers(202, d.job()));
    d.add(Op::new("post", "/catalog/restore", t, "Restore the catalog's own rows from a backup (the newest when no name) into a catalog made anew; then `region recover` brings the snapshots back (admin)").body(d.schema::<RestoreCatalog>()).answers(202, d.job()));
    d.add(Op::new("post", "/store/forget-orphans", t, "Remove the snapshots and templates the store holds that the catalog does not know, made longer ago than older_than (admin); their chunks go at the next collection").body(d.schema::<ForgetOrphans>()).answers(202, d.job()));

    let t = "templates";
    d.add(Op::new("get", "/templates", t, "The account's templates").query("deleted", "boolean", "The deleted ones still in their undelete window, instead").answers(200, d.schema::<Vec<Template>>()));
    d.add(Op::new("post", "/templates/{id}/undelete", t, "Bring a deleted template back within its undelete window").answers(200, d.schema::<Template>()));
    d.add(Op::new("post", "/templates", t, "Make a template from a snapshot (shares its chunks; outlives it)").body(d.schema::<CreateTemplate>()).answers(201, d.schema::<Template>()));
    d.add(Op::new("post", "/templates/import", t, "Import a qcow2 or raw image as a template: an upload, or (admin) a file below import_dirs; untrusted: checked, converted under resource limits").body(d.schema::<ImportTemplate>()).answers(202, d.job()));
    d.add(Op::new("get", "/templates/{id}", t, "One template").answers(200, d.schema::<Template>()));
    d.add(Op::new("delete", "/templates/{id}", t, "Delete a template: kept undeletable for the undelete window, then removed for good and its unreferenced chunks collected").answers(202, d.job()));

    let t = "jobs";
    d.add(Op::new("get", "/jobs", t, "List the latest jobs").query("limit", "integer", "How many (at most 1000; 50 if not given)").answers(200, d.schema::<Vec<Job>>()));
    d.add(Op::new("get", "/jobs/{id}", t, "Show a job with its log").query("wait_ms", "integer", "Long-poll: answer as soon as the job ends, or after this many milliseconds (at most 30000)").answers(200, d.schema::<Job>()));
    d.add(Op::new("post", "/jobs/{id}/cancel", t, "Cancel a job that waits for its host (a request kept while the host is down): it ends Cancelled and its request never runs").answers(200, d.schema::<Job>()));

    let mut schemas = Map::new();
    for (name, schema) in d.gen.into_inner().take_definitions() {
        schemas.insert(
            name,
            serde_json::to_value(schema).expect("a schema is JSON"),
        );
    }
    // The error codes: an enumeration, each described.
    let code = &mut schemas["Error"]["properties"]["code"];
    code["enum"] = CODES.iter().map(|c| json!(c.code)).collect();
    code["description"] = json!(CODES
        .iter()
        .map(|c| format!("- `{}` ({:?}): {}", c.code, c.kind, c.meaning))
        .collect::<Vec<_>>()
        .join("\n"));
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "reprise API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Snapshot manager for QEMU/KVM virtual machines. Every route but health and this document needs an API key: 'Authorization: Bearer KEY'.",
        },
        "servers": [{"url": "/"}],
        "security": [{"apiKey": []}],
        "components": {
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas,
        },
        "paths": d.paths.into_inner(),
    })
}
