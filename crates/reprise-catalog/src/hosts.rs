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

    /// Take lease `name` for `holder` until `ttl` from now, or renew it:
    /// whether `holder` holds it now. A lease another holds is taken only
    /// once it has expired (its holder stopped renewing it).
    pub fn take_lease(&self, name: &str, holder: &str, ttl: std::time::Duration) -> Result<bool> {
        let at = now();
        let until = at + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        let n = self
            .conn()
            .execute(
                "INSERT INTO leases (name, holder, expires_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET holder = ?2, expires_at = ?3
                 WHERE leases.holder = ?2 OR leases.expires_at < ?4",
                params![name, holder, until, at],
            )
            .map_err(db_err(&format!("lease '{name}'")))?;
        Ok(n == 1)
    }

    /// Claim the run of periodic work `name` when it is due (its last run
    /// by anyone began `every` ago or more; the first is due `every` after
    /// it is first asked for): one claimer wins each time.
    pub fn claim_due(&self, name: &str, holder: &str, every: std::time::Duration) -> Result<bool> {
        let at = now();
        let next = at + chrono::Duration::from_std(every).unwrap_or(chrono::Duration::MAX);
        let conn = self.conn();
        let what = format!("periodic work '{name}'");
        conn.execute(
            "INSERT INTO leases (name, holder, expires_at) VALUES (?1, ?2, ?3) ON CONFLICT (name) DO NOTHING",
            params![name, holder, next],
        )
        .map_err(db_err(&what))?;
        let n = conn
            .execute(
                "UPDATE leases SET holder = ?2, expires_at = ?3 WHERE name = ?1 AND expires_at < ?4",
                params![name, holder, next, at],
            )
            .map_err(db_err(&what))?;
        Ok(n == 1)
    }

    /// Claim a run of work `name` that runs at most once every `every`
    /// in the region: true when no run of it began within `every` (this
    /// one is recorded as begun now), false otherwise.
    pub fn claim_spaced(&self, name: &str, every: std::time::Duration) -> Result<bool> {
        let at = now();
        let next = at + chrono::Duration::from_std(every).unwrap_or(chrono::Duration::MAX);
        let n = self
            .conn()
            .execute(
                "INSERT INTO leases (name, holder, expires_at) VALUES (?1, '', ?2)
                 ON CONFLICT (name) DO UPDATE SET expires_at = ?2
                 WHERE leases.expires_at <= ?3",
                params![name, next, at],
            )
            .map_err(db_err(&format!("spaced work '{name}'")))?;
        Ok(n == 1)
    }

    /// Mark that `host` sweeps the region's store from now until
    /// [`Catalog::sweep_ended`]. A sweep cut short (its daemon killed)
    /// leaves the mark: the region's leader, or the host at its next
    /// start, sweeps again (see [`Catalog::sweeps_cut_short`]).
    pub fn sweep_began(&self, host: &str) -> Result<()> {
        self.conn()
            .execute(
                "INSERT INTO leases (name, holder, expires_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET holder = ?2, expires_at = ?3",
                params![sweep_mark(host), host, now()],
            )
            .map_err(db_err("sweep mark"))?;
        Ok(())
    }

    /// Remove `host`'s sweep mark: its sweep ended, or another took it
    /// over. Whether this call removed it (of two takers, one wins).
    pub fn sweep_ended(&self, host: &str) -> Result<bool> {
        let n = self
            .conn()
            .execute(
                "DELETE FROM leases WHERE name = ?1",
                params![sweep_mark(host)],
            )
            .map_err(db_err("sweep mark"))?;
        Ok(n == 1)
    }

    /// The hosts whose last sweep began and never ended, by name.
    pub fn sweeps_cut_short(&self) -> Result<Vec<String>> {
        rows::query(
            &self.conn(),
            "SELECT holder FROM leases WHERE name LIKE 'sweep:%' ORDER BY holder",
            params![],
            |r| r.get::<String>(0),
        )
    }

    /// Who holds lease `name` (an expired holder included), and until when.
    pub fn lease(&self, name: &str) -> Result<Option<(String, DateTime<Utc>)>> {
        self.conn()
            .query_row(
                "SELECT holder, expires_at FROM leases WHERE name = ?1",
                params![name],
                |r| Ok((r.get::<String>(0)?, r.get::<DateTime<Utc>>(1)?)),
            )
            .optional()
            .map_err(db_err("lease"))
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

/// The lease row that marks `host`'s sweep in progress.
fn sweep_mark(host: &str) -> String {
    format!("sweep:{host}")
}
