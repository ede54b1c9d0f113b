//! The catalog: what reprise knows of its accounts, zones, volumes,
//! instances and jobs, in an embedded SQLite database.
//!
//! Invariants kept here:
//! - Every resource has a UUID, an owner account and a creation time; names
//!   are unique per account and kind (zones and accounts: unique in the
//!   region), enforced by `UNIQUE` constraints so a race cannot break it.
//! - Every lookup that a user can cause takes the caller's account: another
//!   account's resource is simply not found.
//! - API keys are stored as SHA-256 hashes only (keys are 256 random bits,
//!   so a fast hash is enough); an account has several, each revocable.
//! - Limits of an account's plan are checked in the transaction that
//!   records the new resource ([`Catalog::admit`]).
//! - A volume belongs to at most one instance (`volumes.instance_id`), and no
//!   two volumes of an instance share a PCIe slot (`UNIQUE(instance_id,
//!   slot)`).
//! - The schema is versioned with `PRAGMA user_version`; `migrations`
//!   lists every step, applied in order and in one transaction each.
//!
//! One module per section, each an `impl Catalog`: `accounts` (keys,
//! plans, admission), `zones`, `volumes`, `instances`, `points`,
//! `snapshots` (and templates), `uploads`, `jobs`; `rows` maps rows to
//! types, `write` holds the statements used inside transactions, and
//! `migrations` the schema.
//!
//! The connection sits behind a mutex: statements are short, and SQLite
//! serialises writers anyway.

mod accounts;
mod instances;
mod jobs;
mod migrations;
mod points;
mod rows;
mod snapshots;
mod uploads;
mod volumes;
pub mod write;
mod zones;

use chrono::{DateTime, Utc};
use reprise_core::{Error, Result};
use rusqlite::Connection;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use uuid::Uuid;

pub use accounts::Scope;
pub use rows::{InstanceRow, VolumeRow};
pub use snapshots::BackupStats;

pub struct Catalog {
    conn: Mutex<Connection>,
}

/// Map a SQLite error: a broken `UNIQUE` is a name taken, the rest internal.
pub(crate) fn db_err(what: &str) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |e| match &e {
        rusqlite::Error::SqliteFailure(f, msg)
            if f.code == rusqlite::ErrorCode::ConstraintViolation
                && msg.as_deref().unwrap_or("").contains("UNIQUE") =>
        {
            Error::conflict("name_taken", format!("{what}: the name is already taken"))
                .with_source(e)
        }
        _ => Error::internal(format!("catalog: {what}: {e}")).with_source(e),
    }
}

pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

pub fn now() -> DateTime<Utc> {
    // Whole microseconds: what survives a round trip through the catalog.
    let t = Utc::now();
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

/// A filter for listing volumes.
#[derive(Debug, Default, Clone)]
pub struct VolumeFilter {
    pub zone_id: Option<Uuid>,
    pub instance_id: Option<Uuid>,
}

impl Catalog {
    /// Open (creating if needed) the catalog at `path` and migrate it.
    pub fn open(path: &Path) -> Result<Catalog> {
        let conn = Connection::open(path).map_err(|e| {
            Error::unavailable(
                "catalog_unavailable",
                format!("cannot open catalog {}: {e}", path.display()),
            )
            .with_source(e)
        })?;
        Self::with_connection(conn)
    }

    pub fn open_in_memory() -> Result<Catalog> {
        Self::with_connection(Connection::open_in_memory().map_err(db_err("open"))?)
    }

    fn with_connection(mut conn: Connection) -> Result<Catalog> {
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db_err("journal_mode"))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(db_err("foreign_keys"))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(db_err("synchronous"))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(db_err("busy_timeout"))?;
        migrations::migrate(&mut conn)?;
        Ok(Catalog {
            conn: Mutex::new(conn),
        })
    }

    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn schema_version(&self) -> Result<u32> {
        self.conn()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(db_err("user_version"))
    }

    pub(crate) fn update(
        &self,
        what: &str,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<()> {
        self.conn().execute(sql, params).map_err(db_err(what))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
