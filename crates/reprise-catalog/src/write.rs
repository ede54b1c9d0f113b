//! The writes that record a new resource, on a connection the caller
//! holds: alone (through the [`Catalog`](crate::Catalog) methods of the
//! same names) or inside [`Catalog::admit`](crate::Catalog::admit), whose
//! transaction also counts the account's usage against its plan.

use crate::db::{params, Db};
use crate::db_err;
use crate::rows::{InstanceRow, Sql, VolumeRow};
use reprise_core::model::*;
use reprise_core::Result;

pub fn insert_volume(conn: &dyn Db, v: &VolumeRow) -> Result<()> {
    conn.execute(
        "INSERT INTO volumes (id, account_id, name, zone_id, kind, state, size_bytes, path, instance_id, slot, created_at, host)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        params![v.id.sql(), v.account_id.sql(), v.name, v.zone_id.sql(), v.kind.as_str(), v.state.as_str(), v.size_bytes as i64, v.path, v.instance_id.sql(), v.slot, v.created_at, v.host],
    )
    .map_err(db_err(&format!("volume '{}'", v.name)))?;
    Ok(())
}

pub fn insert_instance(conn: &dyn Db, i: &InstanceRow) -> Result<()> {
    conn.execute(
        "INSERT INTO instances (id, account_id, name, zone_id, state, cpus, memory_bytes, root_volume_id,
                                kernel, initrd, append, accel, pid, last_error, created_at,
                                current_point_id, snapshots_enabled, plan, host)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)",
        params![i.id.sql(), i.account_id.sql(), i.name, i.zone_id.sql(), i.state.as_str(), i.cpus, i.memory_bytes as i64, i.root_volume_id.sql(), i.kernel, i.initrd, i.append, i.accel, i.pid, i.last_error, i.created_at,
                i.current_point_id.sql(), i.snapshots_enabled, i.plan, i.host],
    )
    .map_err(db_err(&format!("instance '{}'", i.name)))?;
    Ok(())
}

pub fn insert_point(conn: &dyn Db, p: &Point) -> Result<()> {
    conn.execute(
        "INSERT INTO points (id, account_id, instance_id, name, description, parent_id, state, memory,
                             consistency, frozen_ms, volume_ids, error, created_at, policy_id, protected)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
        params![p.id.sql(), p.account_id.sql(), p.instance_id.sql(), p.name, p.description, p.parent_id.sql(),
                p.state.as_str(), p.memory, p.consistency, p.frozen_ms.map(|v| v as i64),
                serde_json::to_string(&p.volume_ids).unwrap_or_default(), p.error, p.created_at,
                p.policy_id.sql(), p.protected],
    )
    .map_err(db_err(&format!("recovery point '{}'", p.name)))?;
    Ok(())
}

/// Record a snapshot, unless a backup of its volume is running: the check
/// and the insert are one statement, so two requests cannot both start
/// one. Returns whether it was recorded.
pub fn insert_snapshot(conn: &dyn Db, s: &Snapshot) -> Result<bool> {
    let n = conn
        .execute(
            "INSERT INTO snapshots (id, account_id, name, volume_id, volume_name, zone, state, size_bytes,
                                    consistency, base_id, created_at, policy_id, protected)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, CAST(?8 AS BIGINT), ?9, ?10, ?11, ?12, CAST(?13 AS BOOLEAN)
             WHERE NOT EXISTS (SELECT 1 FROM snapshots WHERE volume_id = ?4 AND state = 'BackingUp')",
            params![s.id.sql(), s.account_id.sql(), s.name, s.volume_id.sql(), s.volume, s.zone,
                    s.state.as_str(), s.size_bytes as i64, s.consistency, s.base_id.sql(), s.created_at,
                    s.policy_id.sql(), s.protected],
        )
        .map_err(db_err(&format!("snapshot '{}'", s.name)))?;
    Ok(n == 1)
}

/// Bring a deleted snapshot back by `mv` (run inside `admit`: it counts
/// again). False when it was no longer Deleted; a live snapshot holding
/// its name meanwhile is `name_taken`.
pub fn undelete_snapshot(
    conn: &dyn Db,
    id: uuid::Uuid,
    mv: &reprise_core::lifecycle::Move<SnapshotState>,
) -> Result<bool> {
    let n = conn
        .execute(
            "UPDATE snapshots SET state = ?2, deleted_at = NULL, purge_after = NULL
              WHERE id = ?1 AND state = 'Deleted'",
            params![id.sql(), mv.to.as_str()],
        )
        .map_err(db_err("undelete snapshot"))?;
    if n == 1 {
        crate::identity::advance_generation(conn)?;
    }
    Ok(n == 1)
}

/// Protect a snapshot or a recovery point (`table`: `snapshots` or
/// `points`), inside `admit` (the plan caps how many), or lift it; never
/// one being deleted (false then). Advances the catalog's generation.
pub fn set_protected(conn: &dyn Db, table: &str, id: uuid::Uuid, protected: bool) -> Result<bool> {
    let settled = match table {
        "snapshots" => "state IN ('BackingUp', 'BackedUp', 'Error')",
        "points" => "state IN ('Creating', 'Ready', 'Error', 'Reverting')",
        _ => unreachable!("protection of {table}"),
    };
    let n = conn
        .execute(
            &format!("UPDATE {table} SET protected = ?2 WHERE id = ?1 AND {settled}"),
            params![id.sql(), protected],
        )
        .map_err(db_err("protection"))?;
    if n == 1 {
        crate::identity::advance_generation(conn)?;
    }
    Ok(n == 1)
}

pub fn insert_job(conn: &dyn Db, job: &Job) -> Result<()> {
    conn.execute(
        "INSERT INTO jobs (id, account_id, kind, target_kind, target_id, target_name, state,
                           progress_done, progress_total, error, created_at, started_at, finished_at, host)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, NULL, ?10, ?11, ?12, ?13)",
        params![job.id.sql(), job.account_id.sql(), job.kind, job.target_kind, job.target_id.sql(), job.target_name, job.state.as_str(), job.progress_done as i64, job.progress_total as i64, job.created_at, job.started_at, job.finished_at, job.host],
    )
    .map_err(db_err("insert job"))?;
    Ok(())
}

/// Attach a volume to an instance at `slot`, only if it is still free.
pub fn attach_volume(conn: &dyn Db, id: uuid::Uuid, instance: uuid::Uuid, slot: u32) -> Result<()> {
    let n = conn
        .execute(
            "UPDATE volumes SET instance_id = ?2, slot = ?3 WHERE id = ?1 AND instance_id IS NULL",
            params![id.sql(), instance.sql(), slot],
        )
        .map_err(db_err("attach volume"))?;
    if n == 0 {
        return Err(reprise_core::Error::conflict(
            "volume_attached",
            "the volume is already attached to an instance",
        ));
    }
    Ok(())
}

pub fn set_volume_size(conn: &dyn Db, id: uuid::Uuid, size: u64) -> Result<()> {
    conn.execute(
        "UPDATE volumes SET size_bytes = ?2 WHERE id = ?1",
        params![id.sql(), size as i64],
    )
    .map_err(db_err("volume size"))?;
    Ok(())
}
