//! Hosts: the daemons of a region, each with the zones it serves, the
//! address other daemons reach it at, and its last heartbeat. Whether a
//! host is up is the reader's judgement (its lease against the heartbeat),
//! not a stored state, so a host that dies needs nobody to mark it.

use crate::db::{params, DbExt, Optional};
use crate::rows;
use crate::{db_err, now, Catalog};
use chrono::{DateTime, Utc};
use reprise_core::{Error, Result};
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq)]
pub struct HostRow {
    pub name: String,
    /// `http://host:port`, where the other daemons send it its work.
    pub address: String,
    /// The zones it serves; empty: every zone.
    pub zones: Vec<String>,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
}

/// What lives on a host.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostUsage {
    pub instances: u64,
    pub volumes: u64,
    /// The virtual size of its volumes.
    pub volume_bytes: u64,
}

/// The tables whose rows live on a host.
const HOSTED: [&str; 5] = ["volumes", "instances", "jobs", "templates", "uploads"];

const HOST_SELECT: &str = "SELECT name, address, zones, started_at, heartbeat_at FROM hosts";

fn host(r: &crate::db::Row) -> crate::db::DbResult<HostRow> {
    let zones: String = r.get(2)?;
    Ok(HostRow {
        name: r.get(0)?,
        address: r.get(1)?,
        zones: serde_json::from_str(&zones)
            .map_err(|e| crate::db::DbError::caused_by(crate::db::DbErrorKind::Decode, e))?,
        started_at: r.get(3)?,
        heartbeat_at: r.get(4)?,
    })
}

impl Catalog {
    /// Record this daemon's host as started now (a restart replaces its
    /// address and zones), and give it what was made before hosts existed.
    pub fn register_host(&self, name: &str, address: &str, zones: &[String]) -> Result<HostRow> {
        let at = now();
        let zones_json = serde_json::to_string(zones)
            .map_err(|e| Error::internal(format!("host zones: {e}")).with_source(e))?;
        let conn = self.conn();
        conn.execute(
            "INSERT INTO hosts (name, address, zones, started_at, heartbeat_at) VALUES (?1, ?2, ?3, ?4, ?4)
             ON CONFLICT (name) DO UPDATE SET address = ?2, zones = ?3, started_at = ?4, heartbeat_at = ?4",
            params![name, address, zones_json, at],
        )
        .map_err(db_err(&format!("host '{name}'")))?;
        for table in HOSTED {
            conn.execute(
                &format!("UPDATE {table} SET host = ?1 WHERE host = ''"),
                params![name],
            )
            .map_err(db_err("adopting rows made before hosts"))?;
        }
        Ok(HostRow {
            name: name.to_string(),
            address: address.to_string(),
            zones: zones.to_vec(),
            started_at: at,
            heartbeat_at: at,
        })
    }

    /// Say that host `name` is alive now.
    pub fn heartbeat(&self, name: &str) -> Result<DateTime<Utc>> {
        let at = now();
        self.update(
            "heartbeat",
            "UPDATE hosts SET heartbeat_at = ?2 WHERE name = ?1",
            params![name, at],
        )?;
        Ok(at)
    }

    pub fn list_hosts(&self) -> Result<Vec<HostRow>> {
        rows::query(
            &self.conn(),
            &format!("{HOST_SELECT} ORDER BY name"),
            params![],
            host,
        )
    }

    pub fn host(&self, name: &str) -> Result<HostRow> {
        self.conn()
            .query_row(
                &format!("{HOST_SELECT} WHERE name = ?1"),
                params![name],
                host,
            )
            .optional()
            .map_err(db_err("host"))?
            .ok_or_else(|| Error::not_found("host", name))
    }

    /// What lives on each host, by host name.
    pub fn host_usage(&self) -> Result<HashMap<String, HostUsage>> {
        let conn = self.conn();
        let mut usage: HashMap<String, HostUsage> = HashMap::new();
        let volumes = rows::query(
            &conn,
            "SELECT host, COUNT(*), CAST(SUM(size_bytes) AS BIGINT) FROM volumes GROUP BY host",
            params![],
            |r| Ok((r.get::<String>(0)?, r.get::<i64>(1)?, r.get::<i64>(2)?)),
        )?;
        for (name, count, bytes) in volumes {
            let u = usage.entry(name).or_default();
            u.volumes = count as u64;
            u.volume_bytes = bytes as u64;
        }
        let instances = rows::query(
            &conn,
            "SELECT host, COUNT(*) FROM instances GROUP BY host",
            params![],
            |r| Ok((r.get::<String>(0)?, r.get::<i64>(1)?)),
        )?;
        for (name, count) in instances {
            usage.entry(name).or_default().instances = count as u64;
        }
        Ok(usage)
    }
}
