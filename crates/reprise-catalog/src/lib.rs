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
//! - The schema is versioned with `PRAGMA user_version`; [`migrations`]
//!   lists every step, applied in order and in one transaction each.
//!
//! The connection sits behind a mutex: statements are short, and SQLite
//! serialises writers anyway.

mod accounts;
mod migrations;
mod rows;
mod snapshots;
mod uploads;
pub mod write;

use chrono::{DateTime, Utc};
use reprise_core::model::*;
use reprise_core::{Error, Result};
use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use uuid::Uuid;

pub use accounts::Scope;
use rows::Sql;
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
        }
        _ => Error::internal(format!("catalog: {what}: {e}")),
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

    // ---- zones ---------------------------------------------------------

    pub fn create_zone(&self, owner: Uuid, name: &str, storage_dir: &str) -> Result<Zone> {
        reprise_core::name::validate_name("zone", name)?;
        let zone = Zone {
            id: Uuid::new_v4(),
            name: name.to_string(),
            storage_dir: storage_dir.to_string(),
            created_at: now(),
        };
        self.conn()
            .execute(
                "INSERT INTO zones (id, account_id, name, storage_dir, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![zone.id.sql(), owner.sql(), zone.name, zone.storage_dir, zone.created_at],
            )
            .map_err(db_err(&format!("zone '{name}'")))?;
        Ok(zone)
    }

    pub fn list_zones(&self) -> Result<Vec<Zone>> {
        rows::query(
            &self.conn(),
            "SELECT id, name, storage_dir, created_at FROM zones ORDER BY created_at",
            [],
            rows::zone,
        )
    }

    /// A zone by name or id (zones are shared by all accounts of a region).
    pub fn zone(&self, reference: &str) -> Result<Zone> {
        self.conn()
            .query_row(
                "SELECT id, name, storage_dir, created_at FROM zones WHERE id = ?1 OR name = ?1",
                [reference],
                rows::zone,
            )
            .optional()
            .map_err(db_err("zone"))?
            .ok_or_else(|| Error::not_found("zone", reference))
    }

    pub fn zone_by_id(&self, id: Uuid) -> Result<Zone> {
        self.zone(&id.to_string())
    }

    // ---- volumes -------------------------------------------------------

    pub fn insert_volume(&self, v: &VolumeRow) -> Result<()> {
        write::insert_volume(&self.conn(), v)
    }

    /// A volume of `account` by name or id.
    pub fn volume(&self, account: Uuid, reference: &str) -> Result<VolumeRow> {
        self.conn()
            .query_row(
                &format!(
                    "{} WHERE v.account_id = ?1 AND (v.id = ?2 OR v.name = ?2)",
                    rows::VOLUME_SELECT
                ),
                params![account.sql(), reference],
                rows::volume,
            )
            .optional()
            .map_err(db_err("volume"))?
            .ok_or_else(|| Error::not_found("volume", reference))
    }

    pub fn list_volumes(&self, account: Uuid, filter: &VolumeFilter) -> Result<Vec<VolumeRow>> {
        rows::query(
            &self.conn(),
            &format!(
                "{} WHERE v.account_id = ?1 AND (?2 IS NULL OR v.zone_id = ?2)
                 AND (?3 IS NULL OR v.instance_id = ?3) ORDER BY v.created_at",
                rows::VOLUME_SELECT
            ),
            params![
                account.sql(),
                filter.zone_id.sql(),
                filter.instance_id.sql()
            ],
            rows::volume,
        )
    }

    /// Volumes by id (any account), in no particular order.
    pub fn list_volumes_by_id(&self, ids: &[Uuid]) -> Result<Vec<VolumeRow>> {
        let ids: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
        rows::query(
            &self.conn(),
            &format!(
                "{} WHERE v.id IN (SELECT value FROM json_each(?1))",
                rows::VOLUME_SELECT
            ),
            params![serde_json::to_string(&ids).unwrap_or_default()],
            rows::volume,
        )
    }

    /// The volumes of an instance in guest order (by slot).
    pub fn instance_volumes(&self, instance: Uuid) -> Result<Vec<VolumeRow>> {
        rows::query(
            &self.conn(),
            &format!(
                "{} WHERE v.instance_id = ?1 ORDER BY v.slot",
                rows::VOLUME_SELECT
            ),
            params![instance.sql()],
            rows::volume,
        )
    }

    pub fn set_volume_state(&self, id: Uuid, state: VolumeState) -> Result<()> {
        self.update(
            "volume state",
            "UPDATE volumes SET state = ?2 WHERE id = ?1",
            params![id.sql(), state.as_str()],
        )
    }

    /// Move a volume to `to` only from one of `from`.
    pub fn transition_volume(
        &self,
        id: Uuid,
        from: &[VolumeState],
        to: VolumeState,
    ) -> Result<bool> {
        let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
        self.guarded_transition("volumes", id, &from, to.as_str())
    }

    /// Every volume of every account (for startup checks).
    pub fn list_all_volumes(&self) -> Result<Vec<VolumeRow>> {
        rows::query(
            &self.conn(),
            &format!("{} ORDER BY v.created_at", rows::VOLUME_SELECT),
            [],
            rows::volume,
        )
    }

    pub fn set_volume_size(&self, id: Uuid, size: u64) -> Result<()> {
        self.update(
            "volume size",
            "UPDATE volumes SET size_bytes = ?2 WHERE id = ?1",
            params![id.sql(), size as i64],
        )
    }

    /// Attach a volume to an instance at `slot`, only if it is still free.
    pub fn attach_volume(&self, id: Uuid, instance: Uuid, slot: u32) -> Result<()> {
        write::attach_volume(&self.conn(), id, instance, slot)
    }

    pub fn set_volume_slot(&self, id: Uuid, slot: u32) -> Result<()> {
        self.update(
            "volume slot",
            "UPDATE volumes SET slot = ?2 WHERE id = ?1",
            params![id.sql(), slot],
        )
    }

    pub fn detach_volume(&self, id: Uuid) -> Result<()> {
        self.update(
            "detach volume",
            "UPDATE volumes SET instance_id = NULL, slot = NULL WHERE id = ?1",
            params![id.sql()],
        )
    }

    pub fn delete_volume(&self, id: Uuid) -> Result<()> {
        self.update(
            "delete volume",
            "DELETE FROM volumes WHERE id = ?1",
            params![id.sql()],
        )
    }

    // ---- instances -----------------------------------------------------

    pub fn insert_instance(&self, i: &InstanceRow) -> Result<()> {
        write::insert_instance(&self.conn(), i)
    }

    /// An instance of `account` by name or id.
    pub fn instance(&self, account: Uuid, reference: &str) -> Result<InstanceRow> {
        self.conn()
            .query_row(
                &format!(
                    "{} WHERE i.account_id = ?1 AND (i.id = ?2 OR i.name = ?2)",
                    rows::INSTANCE_SELECT
                ),
                params![account.sql(), reference],
                rows::instance,
            )
            .optional()
            .map_err(db_err("instance"))?
            .ok_or_else(|| Error::not_found("instance", reference))
    }

    pub fn instance_by_id(&self, id: Uuid) -> Result<InstanceRow> {
        self.conn()
            .query_row(
                &format!("{} WHERE i.id = ?1", rows::INSTANCE_SELECT),
                params![id.sql()],
                rows::instance,
            )
            .optional()
            .map_err(db_err("instance"))?
            .ok_or_else(|| Error::not_found("instance", &id.to_string()))
    }

    /// Instances of one account, or of all accounts (`None`, for the
    /// daemon's own reconciliation).
    pub fn list_instances(&self, account: Option<Uuid>) -> Result<Vec<InstanceRow>> {
        rows::query(
            &self.conn(),
            &format!(
                "{} WHERE (?1 IS NULL OR i.account_id = ?1) ORDER BY i.created_at",
                rows::INSTANCE_SELECT
            ),
            params![account.sql()],
            rows::instance,
        )
    }

    /// Move an instance to `to` only if it is in one of `from`; false if it
    /// was not (someone else moved it first).
    pub fn transition_instance(
        &self,
        id: Uuid,
        from: &[InstanceState],
        to: InstanceState,
    ) -> Result<bool> {
        let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
        self.guarded_transition("instances", id, &from, to.as_str())
    }

    /// `UPDATE table SET state = to WHERE id = id AND state IN from`, in one
    /// statement so that of two concurrent requests only one moves the row.
    pub(crate) fn guarded_transition(
        &self,
        table: &str,
        id: Uuid,
        from: &[&str],
        to: &str,
    ) -> Result<bool> {
        let n = self
            .conn()
            .execute(
                &format!("UPDATE {table} SET state = ?2 WHERE id = ?1 AND state IN (SELECT value FROM json_each(?3))"),
                params![id.sql(), to, serde_json::to_string(from).unwrap_or_default()],
            )
            .map_err(db_err("state transition"))?;
        Ok(n == 1)
    }

    /// Record what the host says of an instance: its state, its QEMU pid
    /// and accelerator, and the last error (cleared with `None`).
    pub fn set_instance_runtime(
        &self,
        id: Uuid,
        state: InstanceState,
        pid: Option<u32>,
        accel: Option<&str>,
        last_error: Option<&str>,
    ) -> Result<()> {
        self.update(
            "instance runtime",
            "UPDATE instances SET state = ?2, pid = ?3, accel = COALESCE(?4, accel), last_error = ?5 WHERE id = ?1",
            params![id.sql(), state.as_str(), pid, accel, last_error],
        )
    }

    /// Delete an instance; its data volumes are detached, its root volume
    /// deleted with it (the caller removes the files).
    pub fn delete_instance(&self, id: Uuid) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db_err("delete instance"))?;
        tx.execute(
            "UPDATE volumes SET instance_id = NULL, slot = NULL WHERE instance_id = ?1 AND kind = 'Data'",
            params![id.sql()],
        )
        .map_err(db_err("delete instance"))?;
        tx.execute(
            "DELETE FROM volumes WHERE instance_id = ?1 AND kind = 'Root'",
            params![id.sql()],
        )
        .map_err(db_err("delete instance"))?;
        tx.execute(
            "DELETE FROM points WHERE instance_id = ?1",
            params![id.sql()],
        )
        .map_err(db_err("delete instance"))?;
        tx.execute("DELETE FROM instances WHERE id = ?1", params![id.sql()])
            .map_err(db_err("delete instance"))?;
        tx.commit().map_err(db_err("delete instance"))
    }

    /// An instance by id in any account: for the admin's operator settings.
    pub fn instance_any(&self, reference: &str) -> Result<InstanceRow> {
        self.conn()
            .query_row(
                &format!("{} WHERE i.id = ?1", rows::INSTANCE_SELECT),
                params![reference],
                rows::instance,
            )
            .optional()
            .map_err(db_err("instance"))?
            .ok_or_else(|| Error::not_found("instance", reference))
    }

    pub fn set_instance_settings(
        &self,
        id: Uuid,
        snapshots_enabled: Option<bool>,
        plan: Option<Option<&str>>,
    ) -> Result<()> {
        if let Some(enabled) = snapshots_enabled {
            self.update(
                "instance settings",
                "UPDATE instances SET snapshots_enabled = ?2 WHERE id = ?1",
                params![id.sql(), enabled],
            )?;
        }
        if let Some(plan) = plan {
            self.update(
                "instance settings",
                "UPDATE instances SET plan = ?2 WHERE id = ?1",
                params![id.sql(), plan],
            )?;
        }
        Ok(())
    }

    // ---- recovery points -----------------------------------------------

    /// Record a point (no quota: see [`Catalog::admit`]).
    pub fn insert_point(&self, p: &Point) -> Result<()> {
        write::insert_point(&self.conn(), p)
    }

    /// A point of an instance by name or id.
    pub fn point(&self, instance: Uuid, reference: &str) -> Result<Point> {
        self.conn()
            .query_row(
                &format!(
                    "{} WHERE p.instance_id = ?1 AND (p.id = ?2 OR p.name = ?2)",
                    rows::POINT_SELECT
                ),
                params![instance.sql(), reference],
                rows::point,
            )
            .optional()
            .map_err(db_err("recovery point"))?
            .ok_or_else(|| {
                Error::not_found("recovery point", reference).with_code("point_not_found")
            })
    }

    pub fn point_by_id(&self, id: Uuid) -> Result<Point> {
        self.conn()
            .query_row(
                &format!("{} WHERE p.id = ?1", rows::POINT_SELECT),
                params![id.sql()],
                rows::point,
            )
            .optional()
            .map_err(db_err("recovery point"))?
            .ok_or_else(|| {
                Error::not_found("recovery point", &id.to_string()).with_code("point_not_found")
            })
    }

    /// The points of an instance, oldest first (all instances: `None`).
    pub fn list_points(&self, instance: Option<Uuid>) -> Result<Vec<Point>> {
        rows::query(
            &self.conn(),
            &format!(
                "{} WHERE (?1 IS NULL OR p.instance_id = ?1) ORDER BY p.created_at, p.rowid",
                rows::POINT_SELECT
            ),
            params![instance.sql()],
            rows::point,
        )
    }

    /// Whether a name is taken by a point of this account.
    pub fn point_name_taken(&self, account: Uuid, name: &str) -> Result<bool> {
        self.conn()
            .query_row(
                "SELECT EXISTS(SELECT 1 FROM points WHERE account_id = ?1 AND name = ?2)",
                params![account.sql(), name],
                |r| r.get(0),
            )
            .map_err(db_err("point name"))
    }

    pub fn set_point_state(&self, id: Uuid, state: PointState, error: Option<&str>) -> Result<()> {
        self.update(
            "point state",
            "UPDATE points SET state = ?2, error = ?3 WHERE id = ?1",
            params![id.sql(), state.as_str(), error],
        )
    }

    /// Move a point to `to` only from one of `from`.
    pub fn transition_point(&self, id: Uuid, from: &[PointState], to: PointState) -> Result<bool> {
        let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
        self.guarded_transition("points", id, &from, to.as_str())
    }

    /// A point was taken: it is Ready, and the instance is now at it.
    pub fn point_taken(
        &self,
        id: Uuid,
        instance: Uuid,
        consistency: &str,
        frozen_ms: Option<u64>,
    ) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db_err("point taken"))?;
        tx.execute(
            "UPDATE points SET state = 'Ready', error = NULL, consistency = ?2, frozen_ms = ?3 WHERE id = ?1",
            params![id.sql(), consistency, frozen_ms.map(|v| v as i64)],
        )
        .map_err(db_err("point taken"))?;
        tx.execute(
            "UPDATE instances SET current_point_id = ?2 WHERE id = ?1",
            params![instance.sql(), id.sql()],
        )
        .map_err(db_err("point taken"))?;
        tx.commit().map_err(db_err("point taken"))
    }

    pub fn set_current_point(&self, instance: Uuid, point: Option<Uuid>) -> Result<()> {
        self.update(
            "current point",
            "UPDATE instances SET current_point_id = ?2 WHERE id = ?1",
            params![instance.sql(), point.sql()],
        )
    }

    /// Remove a point from the tree: its children move to its parent, and
    /// an instance standing at it moves to its parent too.
    pub fn remove_point(&self, id: Uuid) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db_err("remove point"))?;
        let parent: Option<String> = tx
            .query_row(
                "SELECT parent_id FROM points WHERE id = ?1",
                params![id.sql()],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err("remove point"))?
            .flatten();
        tx.execute(
            "UPDATE points SET parent_id = ?2 WHERE parent_id = ?1",
            params![id.sql(), parent],
        )
        .map_err(db_err("remove point"))?;
        tx.execute(
            "UPDATE instances SET current_point_id = ?2 WHERE current_point_id = ?1",
            params![id.sql(), parent],
        )
        .map_err(db_err("remove point"))?;
        tx.execute("DELETE FROM points WHERE id = ?1", params![id.sql()])
            .map_err(db_err("remove point"))?;
        tx.commit().map_err(db_err("remove point"))
    }

    // ---- jobs ----------------------------------------------------------

    pub fn insert_job(&self, job: &Job) -> Result<()> {
        write::insert_job(&self.conn(), job)
    }

    /// Remove a job that never ran (its operation was refused after the
    /// job was reserved).
    pub fn delete_job(&self, id: Uuid) -> Result<()> {
        self.update(
            "delete job",
            "DELETE FROM jobs WHERE id = ?1 AND state = 'Queued'",
            params![id.sql()],
        )
    }

    pub fn job_started(&self, id: Uuid) -> Result<()> {
        self.update(
            "job started",
            "UPDATE jobs SET state = 'Running', started_at = ?2 WHERE id = ?1",
            params![id.sql(), now()],
        )
    }

    pub fn job_progress(&self, id: Uuid, done: u64, total: u64) -> Result<()> {
        self.update(
            "job progress",
            "UPDATE jobs SET progress_done = ?2, progress_total = ?3 WHERE id = ?1",
            params![id.sql(), done as i64, total as i64],
        )
    }

    pub fn job_log(&self, id: Uuid, message: &str) -> Result<()> {
        self.update(
            "job log",
            "INSERT INTO job_log (job_id, at, message) VALUES (?1, ?2, ?3)",
            params![id.sql(), now(), message],
        )
    }

    pub fn job_finished(&self, id: Uuid, state: JobState, error: Option<&Error>) -> Result<()> {
        let error = error.map(|e| serde_json::to_string(e).unwrap_or_default());
        self.update(
            "job finished",
            "UPDATE jobs SET state = ?2, error = ?3, finished_at = ?4 WHERE id = ?1",
            params![id.sql(), state.as_str(), error, now()],
        )
    }

    /// A job of `account` (any account when `None`).
    pub fn job(&self, account: Option<Uuid>, id: &str) -> Result<Job> {
        let conn = self.conn();
        let mut job = conn
            .query_row(
                &format!(
                    "{} WHERE id = ?1 AND (?2 IS NULL OR account_id = ?2)",
                    rows::JOB_SELECT
                ),
                params![id, account.sql()],
                rows::job,
            )
            .optional()
            .map_err(db_err("job"))?
            .ok_or_else(|| Error::not_found("job", id))?;
        job.log = rows::query(
            &conn,
            "SELECT at, message FROM job_log WHERE job_id = ?1 ORDER BY rowid",
            params![job.id.sql()],
            |r| {
                Ok(JobLogLine {
                    at: r.get(0)?,
                    message: r.get(1)?,
                })
            },
        )?;
        Ok(job)
    }

    /// The latest jobs of an account, newest first (without their logs).
    pub fn list_jobs(&self, account: Uuid, limit: u32) -> Result<Vec<Job>> {
        rows::query(
            &self.conn(),
            &format!(
                "{} WHERE account_id = ?1 ORDER BY created_at DESC LIMIT ?2",
                rows::JOB_SELECT
            ),
            params![account.sql(), limit],
            rows::job,
        )
    }

    /// Jobs by state across accounts, for metrics.
    pub fn count_jobs_by_state(&self) -> Result<Vec<(String, u64)>> {
        rows::query(
            &self.conn(),
            "SELECT state, COUNT(*) FROM jobs GROUP BY state",
            [],
            |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)),
        )
    }

    /// Jobs that were Queued or Running when the daemon stopped.
    pub fn unfinished_jobs(&self) -> Result<Vec<Job>> {
        rows::query(
            &self.conn(),
            &format!(
                "{} WHERE state IN ('Queued', 'Running') ORDER BY created_at",
                rows::JOB_SELECT
            ),
            [],
            rows::job,
        )
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
