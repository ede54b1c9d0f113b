//! Rows brought back from the region's store (`reprise region recover`):
//! snapshots and templates re-created from their sealed manifests, and the
//! accounts they belong to when the catalog lost them.
//!
//! Invariants:
//! - Idempotent: a row whose id exists is left as it is; a recover cut
//!   short and run again adds only what is still missing.
//! - Each object is one transaction (its row and its chunk references),
//!   so garbage collection never sees a recovered row without the chunks
//!   it needs.
//! - A recovered name never takes another resource's: a taken name gets
//!   the first eight hex digits of the object's id appended.
//! - Recovered accounts have no key (a tenant's keys are not in the
//!   store): nobody can use one until the admin makes it a key.

use crate::db::{params, Db, DbExt};
use crate::rows::{self, Sql};
use crate::{db_err, Catalog};
use reprise_core::model::*;
use reprise_core::Result;
use std::collections::HashSet;
use uuid::Uuid;

/// A recovered snapshot: its row as the catalog shows it, and the chunks
/// its index names (what garbage collection must keep).
pub struct RecoveredSnapshot {
    pub snapshot: Snapshot,
    pub positions: u64,
    pub chunks: Vec<[u8; 32]>,
}

fn name_free(conn: &dyn Db, table: &str, account: Uuid, name: &str) -> Result<bool> {
    conn.query_row(
        &format!("SELECT NOT EXISTS(SELECT 1 FROM {table} WHERE account_id = ?1 AND name = ?2)"),
        params![account.sql(), name],
        |r| r.get(0),
    )
    .map_err(db_err("recovered name"))
}

/// `name`, or `name-<8 hex of id>` when the account already uses it.
fn free_name(conn: &dyn Db, table: &str, account: Uuid, name: &str, id: Uuid) -> Result<String> {
    if name_free(conn, table, account, name)? {
        return Ok(name.to_string());
    }
    let short = &id.simple().to_string()[..8];
    let keep = reprise_core::name::MAX_NAME_LEN.saturating_sub(9);
    let base: String = name.chars().take(keep).collect();
    Ok(format!("{base}-{short}"))
}

fn exists(conn: &dyn Db, table: &str, id: Uuid) -> Result<bool> {
    conn.query_row(
        &format!("SELECT EXISTS(SELECT 1 FROM {table} WHERE id = ?1)"),
        params![id.sql()],
        |r| r.get(0),
    )
    .map_err(db_err("recovered row"))
}

impl Catalog {
    /// Every id the catalog has a snapshot or template row for, in any
    /// state: what the store holds beyond these is an orphan.
    pub fn stored_ids(&self) -> Result<HashSet<Uuid>> {
        Ok(rows::query(
            &self.conn(),
            "SELECT id FROM snapshots UNION SELECT id FROM templates",
            params![],
            |r| rows::uuid(r, 0),
        )?
        .into_iter()
        .collect())
    }

    /// Re-create account `id` (named `name`, or with its id appended when
    /// the name is another account's), without a key. The name it got, or
    /// `None` when the account exists.
    pub fn recover_account(
        &self,
        id: Uuid,
        name: &str,
        plan: Option<&str>,
    ) -> Result<Option<String>> {
        let conn = self.conn();
        let tx = conn.transaction().map_err(db_err("recover account"))?;
        if exists(&tx, "accounts", id)? {
            return Ok(None);
        }
        let free: bool = tx
            .query_row(
                "SELECT NOT EXISTS(SELECT 1 FROM accounts WHERE name = ?1)",
                params![name],
                |r| r.get(0),
            )
            .map_err(db_err("recover account"))?;
        let name = if free {
            name.to_string()
        } else {
            format!("{name}-{}", &id.simple().to_string()[..8])
        };
        if let Some(p) = plan {
            crate::accounts::load_plan(&tx, p)?;
        }
        tx.execute(
            "INSERT INTO accounts (id, name, admin, plan, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id.sql(), name, false, plan, crate::now()],
        )
        .map_err(db_err(&format!("account '{name}'")))?;
        tx.commit().map_err(db_err("recover account"))?;
        Ok(Some(name))
    }

    /// Record a snapshot found in the store, BackedUp, with its chunk
    /// references; false when a row with its id exists. Its name may
    /// change (see the module's invariants): the row says which.
    pub fn recover_snapshot(&self, r: &RecoveredSnapshot) -> Result<bool> {
        let s = &r.snapshot;
        let conn = self.conn();
        let what = format!("recovered snapshot '{}'", s.name);
        let tx = conn.transaction().map_err(db_err(&what))?;
        if exists(&tx, "snapshots", s.id)? {
            return Ok(false);
        }
        let name = free_name(&tx, "snapshots", s.account_id, &s.name, s.id)?;
        tx.execute(
            "INSERT INTO snapshots (id, account_id, name, volume_id, volume_name, zone, state, size_bytes,
                                    consistency, base_id, written_bytes, stored_bytes, new_bytes,
                                    chunk_count, positions, created_at, completed_at, policy_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'BackedUp', ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
            params![s.id.sql(), s.account_id.sql(), name, s.volume_id.sql(), s.volume, s.zone,
                    s.size_bytes as i64, s.consistency, s.base_id.sql(),
                    s.written_bytes.map(|v| v as i64), s.stored_bytes.map(|v| v as i64),
                    s.new_bytes.map(|v| v as i64), s.chunk_count.map(|v| v as i64), r.positions as i64,
                    s.created_at, s.completed_at, s.policy_id.sql()],
        )
        .map_err(db_err(&what))?;
        for n in &r.chunks {
            tx.execute(
                "INSERT INTO snapshot_chunks (snapshot_id, name) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                params![s.id.sql(), &n[..]],
            )
            .map_err(db_err(&what))?;
        }
        tx.commit().map_err(db_err(&what))?;
        Ok(true)
    }

    /// Record a template found in the store, Ready, with its chunk
    /// references; false when a row with its id exists.
    pub fn recover_template(&self, t: &Template, chunks: &[[u8; 32]]) -> Result<bool> {
        let conn = self.conn();
        let what = format!("recovered template '{}'", t.name);
        let tx = conn.transaction().map_err(db_err(&what))?;
        if exists(&tx, "templates", t.id)? {
            return Ok(false);
        }
        let name = free_name(&tx, "templates", t.account_id, &t.name, t.id)?;
        tx.execute(
            "INSERT INTO templates (id, account_id, name, source_snapshot_id, source_snapshot, size_bytes,
                                    chunk_count, created_at, state, host)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'Ready', ?9)",
            params![t.id.sql(), t.account_id.sql(), name, t.source_snapshot_id.sql(), t.source_snapshot,
                    t.size_bytes as i64, t.chunk_count as i64, t.created_at, self.host],
        )
        .map_err(db_err(&what))?;
        for n in chunks {
            tx.execute(
                "INSERT INTO template_chunks (template_id, name) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                params![t.id.sql(), &n[..]],
            )
            .map_err(db_err(&what))?;
        }
        tx.commit().map_err(db_err(&what))?;
        Ok(true)
    }

    /// Ready templates of every account, ids and names with their
    /// account: what a recover checks the store still holds.
    pub fn all_templates(&self) -> Result<Vec<Template>> {
        rows::query(
            &self.conn(),
            &format!(
                "{} WHERE t.state = 'Ready' ORDER BY t.created_at, t.rowid",
                rows::TEMPLATE_SELECT
            ),
            params![],
            rows::template,
        )
    }
}
