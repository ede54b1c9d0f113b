//! The catalog's own rows, dumped for a backup in the region's store and
//! restored from one (`reprise catalog backup | restore`): what the store
//! cannot tell of itself. Snapshots are not dumped: their manifests carry
//! them (`reprise region recover`); nor jobs, hosts, uploads or the
//! catalog's identity, which belong to the catalog that runs.
//!
//! Invariants:
//! - A restore only adds rows, in one transaction, and only into a catalog
//!   that holds no volume and no instance yet (a catalog made anew after
//!   a loss): it cannot mix two histories of the same resources.
//! - The dumped admin account is the catalog's own admin: its rows are
//!   given to this catalog's admin, and a zone of the same name is this
//!   catalog's zone. A row whose id is already here (an account a recover
//!   re-created) stays as it is, and the rows that refer to it go in; a
//!   row whose name another row took is left out, with every row that
//!   refers to it.
//! - A dump names its columns: a dump of an older schema restores into a
//!   newer one (missing columns take their defaults); one of a newer
//!   schema is refused.

use crate::db::{params, Db, DbExt, Value};
use crate::{db_err, Catalog};
use reprise_core::{Error, Result};
use serde_json::{json, Map};
use std::collections::{HashMap, HashSet};

/// The tables dumped, in an order that inserts every row after those it
/// refers to, with their columns.
const TABLES: &[(&str, &[&str])] = &[
    ("plans", &["name", "limits", "created_at"]),
    ("accounts", &["id", "name", "admin", "plan", "created_at"]),
    (
        "api_keys",
        &[
            "id",
            "account_id",
            "name",
            "hash",
            "prefix",
            "created_at",
            "last_used_at",
            "cloudstack_api_key",
            "cloudstack_secret",
        ],
    ),
    (
        "zones",
        &["id", "account_id", "name", "storage_dir", "created_at"],
    ),
    (
        "instances",
        &[
            "id",
            "account_id",
            "name",
            "zone_id",
            "state",
            "cpus",
            "memory_bytes",
            "root_volume_id",
            "kernel",
            "initrd",
            "append",
            "accel",
            "pid",
            "last_error",
            "created_at",
            "current_point_id",
            "snapshots_enabled",
            "plan",
            "host",
        ],
    ),
    (
        "volumes",
        &[
            "id",
            "account_id",
            "name",
            "zone_id",
            "kind",
            "state",
            "size_bytes",
            "path",
            "instance_id",
            "slot",
            "created_at",
            "snapshot_base_id",
            "host",
        ],
    ),
    (
        "points",
        &[
            "id",
            "account_id",
            "instance_id",
            "name",
            "description",
            "parent_id",
            "state",
            "memory",
            "consistency",
            "frozen_ms",
            "volume_ids",
            "error",
            "created_at",
            "policy_id",
            "memory_save",
            "protected",
        ],
    ),
    (
        "policies",
        &[
            "id",
            "account_id",
            "name",
            "volume_id",
            "instance_id",
            "schedule",
            "timezone",
            "keep",
            "quiesce",
            "memory",
            "enabled",
            "running",
            "next_run_at",
            "last_run_at",
            "last_result",
            "created_at",
        ],
    ),
    (
        "templates",
        &[
            "id",
            "account_id",
            "name",
            "source_snapshot_id",
            "source_snapshot",
            "size_bytes",
            "chunk_count",
            "created_at",
            "state",
            "host",
            "deleted_at",
            "purge_after",
        ],
    ),
    ("template_chunks", &["template_id", "name"]),
];

/// The columns that refer to another dumped table's `id` (a row whose
/// referent was left out is left out too).
const REFERS: &[(&str, &str)] = &[
    ("account_id", "accounts"),
    ("zone_id", "zones"),
    ("instance_id", "instances"),
    ("template_id", "templates"),
];

fn to_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Null => serde_json::Value::Null,
        Value::Int(n) => json!(n),
        Value::Text(t) => json!(t),
        Value::Blob(b) => json!({ "hex": hex::encode(b) }),
    }
}

fn from_json(v: &serde_json::Value) -> Result<Value> {
    let bad = || {
        Error::invalid(
            "backup_invalid",
            format!("a value the catalog cannot hold: {v}"),
        )
    };
    Ok(match v {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Number(n) => Value::Int(n.as_i64().ok_or_else(bad)?),
        serde_json::Value::String(s) => Value::Text(s.clone()),
        serde_json::Value::Bool(b) => Value::Int(i64::from(*b)),
        serde_json::Value::Object(o) => {
            let h = o.get("hex").and_then(|h| h.as_str()).ok_or_else(bad)?;
            Value::Blob(hex::decode(h).map_err(|_| bad())?)
        }
        _ => return Err(bad()),
    })
}

/// What a restore did, by table: rows added, rows left out.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Restored {
    pub tables: Vec<(String, u64, u64)>,
}

impl Catalog {
    /// The catalog's own rows as JSON (see the module's docs).
    pub fn dump(&self) -> Result<serde_json::Value> {
        let schema_version = self.schema_version()?;
        let conn = self.conn();
        let mut tables = Map::new();
        for (table, columns) in TABLES {
            // Only Ready templates: one being made, deleted or purged is
            // the store's to tell (a recover), never a restore's to redo.
            let only = match *table {
                "templates" => " WHERE state = 'Ready'",
                "template_chunks" => {
                    " WHERE template_id IN (SELECT id FROM templates WHERE state = 'Ready')"
                }
                _ => "",
            };
            let rows = conn
                .query(
                    &format!("SELECT {} FROM {table}{only}", columns.join(", ")),
                    &[],
                )
                .map_err(db_err("catalog dump"))?;
            let rows: Vec<serde_json::Value> = rows
                .iter()
                .map(|r| serde_json::Value::Array(r.0.iter().map(to_json).collect()))
                .collect();
            tables.insert(
                table.to_string(),
                json!({ "columns": columns, "rows": rows }),
            );
        }
        Ok(json!({
            "schema_version": schema_version,
            "tables": tables,
        }))
    }

    /// Add a dump's rows to this catalog (see the module's invariants).
    pub fn restore_dump(&self, dump: &serde_json::Value) -> Result<Restored> {
        let invalid =
            |what: &str| Error::invalid("backup_invalid", format!("catalog backup: {what}"));
        let version = dump["schema_version"]
            .as_u64()
            .ok_or_else(|| invalid("no schema version"))?;
        if version > u64::from(crate::SCHEMA_VERSION) {
            return Err(Error::invalid(
                "backup_invalid",
                format!(
                    "the backup was taken by a newer reprise (catalog schema {version}, this one {}): restore it with that one",
                    crate::SCHEMA_VERSION
                ),
            ));
        }
        let conn = self.conn();
        let tx = conn.transaction().map_err(db_err("catalog restore"))?;
        let held: i64 = tx
            .query_row(
                "SELECT (SELECT COUNT(*) FROM volumes) + (SELECT COUNT(*) FROM instances)",
                params![],
                |r| r.get(0),
            )
            .map_err(db_err("catalog restore"))?;
        if held > 0 {
            return Err(Error::conflict(
                "catalog_not_empty",
                "this catalog already holds volumes or instances: a backup is restored only into a catalog made anew (after the old one was lost)",
            ));
        }
        let admin: String = tx
            .query_row(
                "SELECT id FROM accounts WHERE admin = ?1",
                params![true],
                |r| r.get(0),
            )
            .map_err(db_err("catalog restore"))?;
        // Ids of the dump to this catalog's, and ids left out, by table.
        let mut renamed: HashMap<String, String> = HashMap::new();
        let mut left_out: HashMap<&str, HashSet<String>> = HashMap::new();
        let mut report = Restored::default();
        for (table, _) in TABLES {
            let t = &dump["tables"][table];
            let Some(columns) = t["columns"].as_array() else {
                continue;
            };
            let columns: Vec<String> = columns
                .iter()
                .map(|c| {
                    c.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| invalid("a column name"))
                })
                .collect::<Result<_>>()?;
            let known: HashSet<&str> = TABLES
                .iter()
                .find(|(n, _)| n == table)
                .map(|(_, c)| c.iter().copied().collect())
                .unwrap_or_default();
            if let Some(c) = columns.iter().find(|c| !known.contains(c.as_str())) {
                return Err(invalid(&format!("table {table} has an unknown column {c}")));
            }
            let at = |name: &str| columns.iter().position(|c| c == name);
            let sql = format!(
                "INSERT INTO {table} ({}) VALUES ({}) ON CONFLICT DO NOTHING",
                columns.join(", "),
                crate::db::placeholders(1, columns.len())
            );
            let (mut added, mut skipped) = (0, 0);
            for row in t["rows"].as_array().map(Vec::as_slice).unwrap_or_default() {
                let cells = row.as_array().ok_or_else(|| invalid("a row"))?;
                if cells.len() != columns.len() {
                    return Err(invalid(&format!("a row of {table} has the wrong length")));
                }
                let mut values: Vec<Value> = cells.iter().map(from_json).collect::<Result<_>>()?;
                let id = at("id").and_then(|i| match &values[i] {
                    Value::Text(s) => Some(s.clone()),
                    _ => None,
                });
                // The dumped admin, and a zone of a name this catalog has,
                // are this catalog's own.
                let own = match *table {
                    "accounts" if at("admin").is_some_and(|i| values[i] == Value::Int(1)) => {
                        Some(admin.clone())
                    }
                    "zones" => {
                        let name = at("name").map(|i| values[i].clone());
                        tx.query_map(
                            "SELECT id FROM zones WHERE name = ?1",
                            &[name.unwrap_or(Value::Null)],
                            |r| r.get::<String>(0),
                        )
                        .map_err(db_err("catalog restore"))?
                        .into_iter()
                        .next()
                    }
                    _ => None,
                };
                if let (Some(old), Some(new)) = (&id, own) {
                    renamed.insert(old.clone(), new);
                    skipped += 1;
                    continue;
                }
                let mut orphaned = false;
                for (column, referent) in REFERS {
                    if let Some(i) = at(column) {
                        if let Value::Text(v) = &values[i] {
                            if left_out.get(referent).is_some_and(|s| s.contains(v)) {
                                orphaned = true;
                            }
                            if let Some(new) = renamed.get(v) {
                                values[i] = Value::Text(new.clone());
                            }
                        }
                    }
                }
                let inserted = !orphaned
                    && tx
                        .execute(&sql, &values)
                        .map_err(db_err(&format!("catalog restore of {table}")))?
                        == 1;
                if inserted {
                    added += 1;
                    continue;
                }
                skipped += 1;
                // Already here by its id (a recover re-created it): rows
                // that refer to it go in; one whose id or name was taken
                // by another row is left out, with what refers to it.
                if let Some(id) = id {
                    let here: bool = tx
                        .query_row(
                            &format!("SELECT EXISTS(SELECT 1 FROM {table} WHERE id = ?1)"),
                            params![id],
                            |r| r.get(0),
                        )
                        .map_err(db_err("catalog restore"))?;
                    if orphaned || !here {
                        left_out.entry(table).or_default().insert(id);
                    }
                }
            }
            report.tables.push((table.to_string(), added, skipped));
        }
        tx.commit().map_err(db_err("catalog restore"))?;
        self.forget_keys();
        Ok(report)
    }
}
