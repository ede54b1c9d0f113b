//! The catalog: what reprise knows of its accounts, zones, volumes,
//! instances and jobs: an embedded SQLite database, or PostgreSQL for a
//! region of many hosts (see [`db`] for the dialect both run).
//!
//! Invariants kept here:
//! - Every resource has a UUID, an owner account and a creation time; names
//!   are unique per account and kind (zones and accounts: unique in the
//!   region), enforced by `UNIQUE` constraints so a race cannot break it.
//! - Every lookup that a user can cause takes the caller's account: another
//!   account's resource is simply not found.
//! - API keys are stored as SHA-256 hashes only (keys are 256 random bits,
//!   so a fast hash is enough); an account has several, each revocable. A
//!   key found is remembered for [`KEY_FRESH`]: a change made through this
//!   catalog (revoke, rotate, account deleted or given another plan)
//!   forgets every key at once; one made by another daemon of the region
//!   is seen here within [`KEY_FRESH`].
//! - Limits of an account's plan are checked in the transaction that
//!   records the new resource ([`Catalog::admit`]).
//! - A volume belongs to at most one instance (`volumes.instance_id`), and no
//!   two volumes of an instance share a PCIe slot (`UNIQUE(instance_id,
//!   slot)`).
//! - The schema is versioned; `migrations` lists every step of each
//!   engine, applied in order and in one transaction each.
//!
//! One module per section, each an `impl Catalog`: `accounts` (keys,
//! plans, admission), `zones`, `volumes`, `instances`, `points`,
//! `snapshots` (and templates), `uploads`, `jobs`; `rows` maps rows to
//! types, `write` holds the statements used inside transactions, and
//! `migrations` the schema.
//!
//! The connection sits behind a mutex: statements are short, and
//! transactions are serialised anyway ([`db::Db::begin`]).

mod accounts;
pub mod db;
mod dump;
mod hosts;
mod identity;
mod instances;
mod jobs;
mod migrations;
mod points;
mod policies;
mod postgres;
mod recovery;
mod rows;
mod snapshots;
mod sqlite;
pub mod testing;
mod uploads;
mod volumes;
pub mod write;
mod zones;

use chrono::{DateTime, Utc};
use db::{Db, DbError, DbErrorKind};
use reprise_core::{Error, Result};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use uuid::Uuid;

pub use accounts::{Scope, KEY_FRESH};
pub use dump::Restored;
pub use hosts::HostRow;
pub use identity::Identity;
pub use jobs::DeferredRequest;
pub use migrations::LATEST as SCHEMA_VERSION;
pub use postgres::SweepLock;
pub use recovery::RecoveredSnapshot;
pub use rows::{InstanceRow, VolumeRow};
pub use snapshots::BackupStats;

pub struct Catalog {
    conn: Mutex<Box<dyn Db + Send>>,
    /// Keys found lately ([`Catalog::account_by_key`]), by hash.
    keys_seen: Mutex<accounts::KeysSeen>,
    /// PostgreSQL's URL (a region's catalog), for connections of its own.
    url: Option<String>,
    /// The host this daemon is: what it starts, settles and expires is
    /// what lives on it.
    host: String,
}

/// The host name of a daemon not configured as a host of a region.
pub const DEFAULT_HOST: &str = "local";

/// Map an engine's error: a broken `UNIQUE` is a name taken, a lost
/// connection is unavailable, the rest internal.
pub(crate) fn db_err(what: &str) -> impl Fn(DbError) -> Error + '_ {
    move |e| match e.kind {
        DbErrorKind::Unique => {
            Error::conflict("name_taken", format!("{what}: the name is already taken"))
                .with_source(e)
        }
        DbErrorKind::Unavailable => {
            Error::unavailable("catalog_unavailable", format!("catalog: {what}: {e}"))
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
    /// Open (creating if needed) the SQLite catalog at `path` and migrate it.
    pub fn open(path: &Path) -> Result<Catalog> {
        Ok(Self::on(Box::new(sqlite::Sqlite::open(path)?)))
    }

    /// Connect to the PostgreSQL catalog at `url` (a region's, shared by
    /// its daemons) as the daemon of `host`, and migrate it.
    pub fn connect(url: &str, host: &str) -> Result<Catalog> {
        let mut catalog = Self::on(Box::new(postgres::Postgres::connect(url, host)?));
        catalog.url = Some(url.to_string());
        catalog.host = host.to_string();
        Ok(catalog)
    }

    /// The catalog as seen by the daemon of `host` (SQLite: one daemon,
    /// whatever its name).
    pub fn with_host(mut self, host: &str) -> Catalog {
        self.host = host.to_string();
        self
    }

    /// The host this catalog's daemon is.
    pub fn host_name(&self) -> &str {
        &self.host
    }

    /// The region's sweep lock, when other daemons share the catalog
    /// (PostgreSQL); none for SQLite, whose catalog has one daemon.
    pub fn sweep_lock(&self) -> Result<Option<SweepLock>> {
        self.url.as_deref().map(SweepLock::connect).transpose()
    }

    pub fn open_in_memory() -> Result<Catalog> {
        Ok(Self::on(Box::new(sqlite::Sqlite::in_memory()?)))
    }

    fn on(db: Box<dyn Db + Send>) -> Catalog {
        Catalog {
            conn: Mutex::new(db),
            keys_seen: Mutex::default(),
            url: None,
            host: DEFAULT_HOST.to_string(),
        }
    }

    pub(crate) fn conn(&self) -> MutexGuard<'_, Box<dyn Db + Send>> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn schema_version(&self) -> Result<u32> {
        self.conn()
            .schema_version()
            .map_err(db_err("schema version"))
    }

    /// Stop using the catalog: a daemon stopping lets another take it.
    pub fn close(&self) {
        self.conn().close()
    }

    /// Which engine holds the catalog: `sqlite` or `postgres`.
    pub fn engine(&self) -> &'static str {
        self.conn().engine()
    }

    pub(crate) fn update(&self, what: &str, sql: &str, params: &[db::Value]) -> Result<()> {
        self.conn().execute(sql, params).map_err(db_err(what))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
