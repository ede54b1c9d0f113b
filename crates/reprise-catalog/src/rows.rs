//! Catalog rows and their mapping from SQL. Ids are stored as text UUIDs so
//! a lookup by "name or id" is one indexed comparison.

use crate::db::{Db, DbError, DbErrorKind, DbExt, DbResult, Row, Value};
use crate::db_err;
use chrono::{DateTime, Utc};
use reprise_core::model::*;
use reprise_core::Result;
use uuid::Uuid;

/// Ids go into SQL as text.
pub(crate) trait Sql {
    type Out;
    fn sql(&self) -> Self::Out;
}

impl Sql for Uuid {
    type Out = String;
    fn sql(&self) -> String {
        self.to_string()
    }
}

impl Sql for Option<Uuid> {
    type Out = Option<String>;
    fn sql(&self) -> Option<String> {
        self.map(|u| u.to_string())
    }
}

pub(crate) fn uuid(r: &Row, i: usize) -> DbResult<Uuid> {
    let s: String = r.get(i)?;
    Uuid::parse_str(&s).map_err(|e| DbError::caused_by(DbErrorKind::Decode, e))
}

fn opt_uuid(r: &Row, i: usize) -> DbResult<Option<Uuid>> {
    match r.get::<Option<String>>(i)? {
        None => Ok(None),
        Some(_) => uuid(r, i).map(Some),
    }
}

fn parsed<T: std::str::FromStr>(r: &Row, i: usize) -> DbResult<T> {
    let s: String = r.get(i)?;
    s.parse()
        .map_err(|_| DbError::new(DbErrorKind::Decode, format!("column {i}: bad value {s:?}")))
}

pub(crate) fn query<T>(
    conn: &dyn Db,
    sql: &str,
    params: &[Value],
    map: impl FnMut(&Row) -> DbResult<T>,
) -> Result<Vec<T>> {
    conn.query_map(sql, params, map).map_err(db_err("query"))
}

pub(crate) fn account(r: &Row) -> DbResult<Account> {
    Ok(Account {
        id: uuid(r, 0)?,
        name: r.get(1)?,
        admin: r.get(2)?,
        plan: r.get(3)?,
        created_at: r.get(4)?,
    })
}

pub(crate) fn api_key(r: &Row) -> DbResult<ApiKey> {
    Ok(ApiKey {
        id: uuid(r, 0)?,
        account_id: uuid(r, 1)?,
        name: r.get(2)?,
        prefix: r.get(3)?,
        created_at: r.get(4)?,
        last_used_at: r.get(5)?,
        cloudstack_api_key: r.get(6)?,
    })
}

pub(crate) const UPLOAD_SELECT: &str = "SELECT id, account_id, name, state, size_bytes, received_bytes, sha256, created_at, completed_at FROM uploads";

pub(crate) fn upload(r: &Row) -> DbResult<Upload> {
    Ok(Upload {
        id: uuid(r, 0)?,
        account_id: uuid(r, 1)?,
        name: r.get(2)?,
        state: parsed(r, 3)?,
        size_bytes: r.get::<i64>(4)? as u64,
        received_bytes: r.get::<i64>(5)? as u64,
        sha256: r.get(6)?,
        created_at: r.get(7)?,
        completed_at: r.get(8)?,
    })
}

pub(crate) fn zone(r: &Row) -> DbResult<Zone> {
    Ok(Zone {
        id: uuid(r, 0)?,
        name: r.get(1)?,
        storage_dir: r.get(2)?,
        created_at: r.get(3)?,
    })
}

/// A volume as the catalog holds it: the API's fields plus its PCIe slot.
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeRow {
    pub id: Uuid,
    pub account_id: Uuid,
    pub name: String,
    pub zone_id: Uuid,
    pub zone: String,
    pub kind: VolumeKind,
    pub state: VolumeState,
    pub size_bytes: u64,
    pub path: String,
    pub instance_id: Option<Uuid>,
    pub instance: Option<String>,
    pub slot: Option<u32>,
    pub created_at: DateTime<Utc>,
    /// The host whose disk holds its file.
    pub host: String,
}

impl VolumeRow {
    pub fn to_api(&self) -> Volume {
        Volume {
            id: self.id,
            name: self.name.clone(),
            account_id: self.account_id,
            zone_id: self.zone_id,
            zone: self.zone.clone(),
            kind: self.kind,
            state: self.state,
            size_bytes: self.size_bytes,
            path: self.path.clone(),
            instance_id: self.instance_id,
            instance: self.instance.clone(),
            host: self.host.clone(),
            created_at: self.created_at,
        }
    }

    pub fn attached(&self) -> AttachedVolume {
        AttachedVolume {
            id: self.id,
            name: self.name.clone(),
            kind: self.kind,
            size_bytes: self.size_bytes,
        }
    }
}

pub(crate) const VOLUME_SELECT: &str =
    "SELECT v.id, v.account_id, v.name, v.zone_id, z.name, v.kind, v.state, v.size_bytes, v.path,
        v.instance_id, i.name, v.slot, v.created_at, v.host
   FROM volumes v JOIN zones z ON z.id = v.zone_id LEFT JOIN instances i ON i.id = v.instance_id";

pub(crate) fn volume(r: &Row) -> DbResult<VolumeRow> {
    Ok(VolumeRow {
        id: uuid(r, 0)?,
        account_id: uuid(r, 1)?,
        name: r.get(2)?,
        zone_id: uuid(r, 3)?,
        zone: r.get(4)?,
        kind: parsed(r, 5)?,
        state: parsed(r, 6)?,
        size_bytes: r.get::<i64>(7)? as u64,
        path: r.get(8)?,
        instance_id: opt_uuid(r, 9)?,
        instance: r.get(10)?,
        slot: r.get(11)?,
        created_at: r.get(12)?,
        host: r.get(13)?,
    })
}

/// An instance as the catalog holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceRow {
    pub id: Uuid,
    pub account_id: Uuid,
    pub name: String,
    pub zone_id: Uuid,
    pub zone: String,
    pub state: InstanceState,
    pub cpus: u32,
    pub memory_bytes: u64,
    pub root_volume_id: Option<Uuid>,
    pub kernel: Option<String>,
    pub initrd: Option<String>,
    pub append: Option<String>,
    pub accel: Option<String>,
    pub pid: Option<u32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub current_point_id: Option<Uuid>,
    pub snapshots_enabled: bool,
    pub plan: Option<String>,
    /// The host it runs on (the host of its volumes).
    pub host: String,
}

pub(crate) const INSTANCE_SELECT: &str =
    "SELECT i.id, i.account_id, i.name, i.zone_id, z.name, i.state, i.cpus, i.memory_bytes,
        i.root_volume_id, i.kernel, i.initrd, i.append, i.accel, i.pid, i.last_error, i.created_at,
        i.current_point_id, i.snapshots_enabled, i.plan, i.host
   FROM instances i JOIN zones z ON z.id = i.zone_id";

pub(crate) fn instance(r: &Row) -> DbResult<InstanceRow> {
    Ok(InstanceRow {
        id: uuid(r, 0)?,
        account_id: uuid(r, 1)?,
        name: r.get(2)?,
        zone_id: uuid(r, 3)?,
        zone: r.get(4)?,
        state: parsed(r, 5)?,
        cpus: r.get(6)?,
        memory_bytes: r.get::<i64>(7)? as u64,
        root_volume_id: opt_uuid(r, 8)?,
        kernel: r.get(9)?,
        initrd: r.get(10)?,
        append: r.get(11)?,
        accel: r.get(12)?,
        pid: r.get(13)?,
        last_error: r.get(14)?,
        created_at: r.get(15)?,
        current_point_id: opt_uuid(r, 16)?,
        snapshots_enabled: r.get(17)?,
        plan: r.get(18)?,
        host: r.get(19)?,
    })
}

/// An instance and its volumes in one statement: [`INSTANCE_SELECT`]'s
/// columns, then [`VOLUME_SELECT`]'s (null for an instance without
/// volumes), one row per volume in slot order. A catalog test checks it
/// reads what the two do.
pub(crate) const INSTANCE_WITH_VOLUMES_SELECT: &str =
    "SELECT i.id, i.account_id, i.name, i.zone_id, z.name, i.state, i.cpus, i.memory_bytes,
        i.root_volume_id, i.kernel, i.initrd, i.append, i.accel, i.pid, i.last_error, i.created_at,
        i.current_point_id, i.snapshots_enabled, i.plan, i.host,
        v.id, v.account_id, v.name, v.zone_id, vz.name, v.kind, v.state, v.size_bytes, v.path,
        v.instance_id, i.name, v.slot, v.created_at, v.host
   FROM instances i JOIN zones z ON z.id = i.zone_id
   LEFT JOIN volumes v ON v.instance_id = i.id LEFT JOIN zones vz ON vz.id = v.zone_id";

/// A row of [`INSTANCE_WITH_VOLUMES_SELECT`]: the instance, and the
/// volume if there is one.
pub(crate) fn instance_and_volume(r: &Row) -> DbResult<(InstanceRow, Option<VolumeRow>)> {
    const INSTANCE_COLUMNS: usize = 20;
    let (i, v) = r.0.split_at(INSTANCE_COLUMNS.min(r.0.len()));
    let volume = match v.first() {
        None | Some(Value::Null) => None,
        Some(_) => Some(volume(&Row(v.to_vec()))?),
    };
    Ok((instance(&Row(i.to_vec()))?, volume))
}

pub(crate) const POINT_SELECT: &str = "SELECT p.id, p.name, p.description, p.account_id, p.instance_id, i.name, p.parent_id,
        (i.current_point_id IS NOT NULL AND i.current_point_id = p.id), p.state, p.memory, p.consistency,
        p.frozen_ms, p.volume_ids, p.error, p.created_at, p.policy_id, p.memory_save, p.protected
   FROM points p JOIN instances i ON i.id = p.instance_id";

pub(crate) fn point(r: &Row) -> DbResult<Point> {
    let volumes: String = r.get(12)?;
    let memory: bool = r.get(9)?;
    let memory_save: Option<String> = r.get(16)?;
    Ok(Point {
        id: uuid(r, 0)?,
        name: r.get(1)?,
        description: r.get(2)?,
        account_id: uuid(r, 3)?,
        instance_id: uuid(r, 4)?,
        instance: r.get(5)?,
        parent_id: opt_uuid(r, 6)?,
        current: r.get(7)?,
        state: parsed(r, 8)?,
        memory,
        // Memory points made before the column were all `snapshot-save`.
        memory_save: memory_save.or_else(|| memory.then(|| "snapshot-save".to_string())),
        consistency: r.get(10)?,
        frozen_ms: r.get::<Option<i64>>(11)?.map(|v| v as u64),
        volume_ids: serde_json::from_str(&volumes)
            .map_err(|e| DbError::caused_by(DbErrorKind::Decode, e))?,
        size_bytes: None,
        vm_state_bytes: None,
        error: r.get(13)?,
        created_at: r.get(14)?,
        policy_id: opt_uuid(r, 15)?,
        expires_at: None,
        protected: r.get(17)?,
    })
}

pub(crate) const JOB_SELECT: &str =
    "SELECT id, account_id, kind, target_kind, target_id, target_name, state,
        progress_done, progress_total, error, created_at, started_at, finished_at, host FROM jobs";

pub(crate) fn job(r: &Row) -> DbResult<Job> {
    let error: Option<String> = r.get(9)?;
    Ok(Job {
        id: uuid(r, 0)?,
        account_id: uuid(r, 1)?,
        kind: r.get(2)?,
        target_kind: r.get(3)?,
        target_id: uuid(r, 4)?,
        target_name: r.get(5)?,
        state: parsed(r, 6)?,
        progress_done: r.get::<i64>(7)? as u64,
        progress_total: r.get::<i64>(8)? as u64,
        error: error.and_then(|e| serde_json::from_str(&e).ok()),
        log: Vec::new(),
        created_at: r.get(10)?,
        started_at: r.get(11)?,
        finished_at: r.get(12)?,
        host: r.get(13)?,
    })
}

pub(crate) const SNAPSHOT_SELECT: &str =
    "SELECT id, name, account_id, volume_id, volume_name, zone, state, size_bytes, consistency, base_id,
            progress_done, progress_total, written_bytes, stored_bytes, new_bytes, read_bytes, chunk_count,
            positions, error, created_at, completed_at, verified_at, policy_id, protected, deleted_at,
            purge_after
       FROM snapshots";

pub(crate) fn snapshot(r: &Row) -> DbResult<Snapshot> {
    let opt_u64 = |i: usize| r.get::<Option<i64>>(i).map(|v| v.map(|v| v as u64));
    let chunk_count = opt_u64(16)?;
    let positions = opt_u64(17)?;
    Ok(Snapshot {
        id: uuid(r, 0)?,
        name: r.get(1)?,
        account_id: uuid(r, 2)?,
        volume_id: uuid(r, 3)?,
        volume: r.get(4)?,
        zone: r.get(5)?,
        state: parsed(r, 6)?,
        size_bytes: r.get::<i64>(7)? as u64,
        consistency: r.get(8)?,
        base_id: opt_uuid(r, 9)?,
        progress_done: r.get::<i64>(10)? as u64,
        progress_total: r.get::<i64>(11)? as u64,
        written_bytes: opt_u64(12)?,
        stored_bytes: opt_u64(13)?,
        new_bytes: opt_u64(14)?,
        read_bytes: opt_u64(15)?,
        chunk_count,
        dedup_ratio: match (positions, chunk_count) {
            (Some(p), Some(c)) if c > 0 => Some(p as f64 / c as f64),
            _ => None,
        },
        error: r.get(18)?,
        created_at: r.get(19)?,
        completed_at: r.get(20)?,
        verified_at: r.get(21)?,
        policy_id: opt_uuid(r, 22)?,
        expires_at: None,
        protected: r.get(23)?,
        deleted_at: r.get(24)?,
        purge_after: r.get(25)?,
    })
}

pub(crate) const TEMPLATE_SELECT: &str =
    "SELECT t.id, t.name, t.account_id, s.id, t.source_snapshot, t.size_bytes, t.chunk_count, t.created_at,
            t.purge_after
       FROM templates t LEFT JOIN snapshots s ON s.id = t.source_snapshot_id";

pub(crate) fn template(r: &Row) -> DbResult<Template> {
    Ok(Template {
        id: uuid(r, 0)?,
        name: r.get(1)?,
        account_id: uuid(r, 2)?,
        source_snapshot_id: opt_uuid(r, 3)?,
        source_snapshot: r.get(4)?,
        size_bytes: r.get::<i64>(5)? as u64,
        chunk_count: r.get::<i64>(6)? as u64,
        created_at: r.get(7)?,
        purge_after: r.get(8)?,
    })
}
