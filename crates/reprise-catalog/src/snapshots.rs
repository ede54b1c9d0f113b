//! Volume snapshots, the chunks they reference, and each volume's
//! incremental base.
//!
//! Invariants:
//! - `snapshot_chunks` lists every chunk a snapshot's index names, written
//!   before its manifest goes to the store and kept until the snapshot's
//!   row goes: garbage collection keeps exactly these (and held ones).
//! - `chunks` caches the stored size of chunks the daemon has seen, for
//!   the sizes a snapshot shows; it is not the truth about the store.
//! - `volumes.snapshot_base_id` names the volume's last backed-up snapshot,
//!   whose internal qcow2 snapshot is kept in the volume's file as the base
//!   of the next increment.

use crate::db::{params, Db, DbExt, Optional};
use crate::rows::{self, Sql};
use crate::{db_err, now, Catalog};
use chrono::{DateTime, Utc};
use reprise_core::lifecycle::Move;
use reprise_core::model::*;
use reprise_core::{Error, Result};
use std::collections::HashSet;
use uuid::Uuid;

/// What a finished backup recorded.
#[derive(Debug, Clone, Default)]
pub struct BackupStats {
    pub written_bytes: u64,
    pub stored_bytes: u64,
    pub new_bytes: u64,
    pub read_bytes: u64,
    pub chunk_count: u64,
    pub positions: u64,
    /// The snapshot it is incremental to (`None`: everything was read).
    pub base_id: Option<Uuid>,
}

impl Catalog {
    /// Record a snapshot unless a backup of its volume is running (see
    /// [`crate::write::insert_snapshot`]).
    pub fn insert_snapshot(&self, s: &Snapshot) -> Result<bool> {
        crate::write::insert_snapshot(&self.conn(), s)
    }

    /// Whether a running backup uses this snapshot as its base.
    pub fn snapshot_is_running_base(&self, id: Uuid) -> Result<bool> {
        self.conn()
            .query_row(
                "SELECT EXISTS(SELECT 1 FROM snapshots WHERE base_id = ?1 AND state = 'BackingUp')",
                params![id.sql()],
                |r| r.get(0),
            )
            .map_err(db_err("snapshot base"))
    }

    /// A snapshot of an account by name or id (not a deleted one: see
    /// [`Catalog::deleted_snapshot`]).
    pub fn snapshot(&self, account: Uuid, reference: &str) -> Result<Snapshot> {
        self.conn()
            .query_row(
                &format!(
                    "{} WHERE account_id = ?1 AND (id = ?2 OR name = ?2) AND state <> 'Deleted'",
                    rows::SNAPSHOT_SELECT
                ),
                params![account.sql(), reference],
                rows::snapshot,
            )
            .optional()
            .map_err(db_err("snapshot"))?
            .ok_or_else(|| Error::not_found("snapshot", reference).with_code("snapshot_not_found"))
    }

    pub fn snapshot_by_id(&self, id: Uuid) -> Result<Snapshot> {
        self.conn()
            .query_row(
                &format!("{} WHERE id = ?1", rows::SNAPSHOT_SELECT),
                params![id.sql()],
                rows::snapshot,
            )
            .optional()
            .map_err(db_err("snapshot"))?
            .ok_or_else(|| {
                Error::not_found("snapshot", &id.to_string()).with_code("snapshot_not_found")
            })
    }

    /// Snapshots, oldest first: an account's, or all (`None`).
    pub fn list_snapshots(&self, account: Option<Uuid>) -> Result<Vec<Snapshot>> {
        rows::query(
            &self.conn(),
            &format!(
                "{} WHERE (CAST(?1 AS TEXT) IS NULL OR account_id = ?1) ORDER BY created_at, rowid",
                rows::SNAPSHOT_SELECT
            ),
            params![account.sql()],
            rows::snapshot,
        )
    }

    /// A deleted snapshot of an account, in its undelete window, by id or
    /// name (the latest deleted of that name).
    pub fn deleted_snapshot(&self, account: Uuid, reference: &str) -> Result<Snapshot> {
        self.conn()
            .query_row(
                &format!(
                    "{} WHERE account_id = ?1 AND (id = ?2 OR name = ?2) AND state = 'Deleted'
                     ORDER BY deleted_at DESC",
                    rows::SNAPSHOT_SELECT
                ),
                params![account.sql(), reference],
                rows::snapshot,
            )
            .optional()
            .map_err(db_err("deleted snapshot"))?
            .ok_or_else(|| {
                Error::not_found("deleted snapshot", reference).with_code("snapshot_not_found")
            })
    }

    /// Deleted snapshots whose window ended by `now`: to purge.
    pub fn snapshots_to_purge(&self, now: DateTime<Utc>) -> Result<Vec<Snapshot>> {
        rows::query(
            &self.conn(),
            &format!(
                "{} WHERE state = 'Deleted' AND purge_after <= ?1 ORDER BY purge_after",
                rows::SNAPSHOT_SELECT
            ),
            params![now],
            rows::snapshot,
        )
    }

    pub fn snapshot_name_taken(&self, account: Uuid, name: &str) -> Result<bool> {
        self.conn()
            .query_row(
                "SELECT EXISTS(SELECT 1 FROM snapshots WHERE account_id = ?1 AND name = ?2 AND state <> 'Deleted')",
                params![account.sql(), name],
                |r| r.get(0),
            )
            .map_err(db_err("snapshot name"))
    }

    /// The snapshot of a volume whose backup is running, if any.
    pub fn snapshot_in_progress(&self, volume: Uuid) -> Result<Option<Snapshot>> {
        self.conn()
            .query_row(
                &format!(
                    "{} WHERE volume_id = ?1 AND state = 'BackingUp'",
                    rows::SNAPSHOT_SELECT
                ),
                params![volume.sql()],
                rows::snapshot,
            )
            .optional()
            .map_err(db_err("snapshot in progress"))
    }

    pub fn set_snapshot_progress(&self, id: Uuid, done: u64, total: u64) -> Result<()> {
        self.update(
            "snapshot progress",
            "UPDATE snapshots SET progress_done = ?2, progress_total = ?3 WHERE id = ?1",
            params![id.sql(), done as i64, total as i64],
        )
    }

    /// Settle a snapshot by `mv` with `error` as its reason, only from the
    /// states the move leaves; false when it was in another (a delete
    /// started meanwhile, say).
    pub fn settle_snapshot(
        &self,
        id: Uuid,
        mv: &Move<SnapshotState>,
        error: Option<&str>,
    ) -> Result<bool> {
        self.guarded_settle("snapshots", id, mv, error)
    }

    pub fn set_snapshot_consistency(&self, id: Uuid, consistency: &str) -> Result<()> {
        self.update(
            "snapshot consistency",
            "UPDATE snapshots SET consistency = ?2 WHERE id = ?1",
            params![id.sql(), consistency],
        )
    }

    /// Run `statement` (one row's change, guarded) and advance the
    /// catalog's generation with it when it changed the row: what the
    /// store's binding compares, so a catalog put back from before the
    /// change is seen behind. Whether the row changed.
    fn change_and_advance(
        &self,
        what: &str,
        statement: &str,
        values: &[crate::db::Value],
    ) -> Result<bool> {
        let conn = self.conn();
        let tx = conn.transaction().map_err(db_err(what))?;
        let n = tx.execute(statement, values).map_err(db_err(what))?;
        if n == 1 {
            crate::identity::advance_generation(&tx)?;
        }
        tx.commit().map_err(db_err(what))?;
        Ok(n == 1)
    }

    /// Delete a snapshot into its undelete window (`lifecycle::snapshot::
    /// DELETE`), unless it is protected: its row, references and objects
    /// stay until `purge_after`. False when it was not deletable (its
    /// state, or protected meanwhile).
    pub fn delete_snapshot_for_now(&self, id: Uuid, purge_after: DateTime<Utc>) -> Result<bool> {
        let mv = &reprise_core::lifecycle::snapshot::DELETE;
        self.change_and_advance(
            "delete snapshot",
            &format!(
                "UPDATE snapshots SET state = ?2, deleted_at = ?3, purge_after = ?4
                  WHERE id = ?1 AND state IN ({}) AND NOT protected",
                crate::instances::from_states(mv)
            ),
            params![id.sql(), mv.to.as_str(), now(), purge_after],
        )
    }

    /// Start removing a snapshot for good (`lifecycle::snapshot::PURGE`)
    /// unless it is protected or a backup in progress uses it as its
    /// base, in one statement: a backup records its base before it checks
    /// that the base is BackedUp, so of a purge and a backup that race,
    /// either the purge is refused or the backup does without the base.
    pub fn start_snapshot_purge(&self, id: Uuid) -> Result<bool> {
        let mv = &reprise_core::lifecycle::snapshot::PURGE;
        self.change_and_advance(
            "start snapshot purge",
            &format!(
                "UPDATE snapshots SET state = ?2 WHERE id = ?1
                   AND state IN ({}) AND NOT protected
                   AND NOT EXISTS (SELECT 1 FROM snapshots WHERE base_id = ?1 AND state = 'BackingUp')",
                crate::instances::from_states(mv)
            ),
            params![id.sql(), mv.to.as_str()],
        )
    }

    /// A purge that failed: back to Deleted (its window kept) when it was
    /// deleted, so the next round tries again; to Error otherwise.
    pub fn purge_failed(&self, id: Uuid, why: &str) -> Result<bool> {
        use reprise_core::lifecycle::snapshot::{DELETE_FAILED, PURGE_FAILED};
        let deleted = self.snapshot_by_id(id)?.purge_after.is_some();
        let mv = if deleted {
            &PURGE_FAILED
        } else {
            &DELETE_FAILED
        };
        self.settle_snapshot(id, mv, Some(why))
    }

    /// A backup cut short whose manifest reached the store: it is whole.
    /// Its references (re-read from its index) and figures are recorded
    /// and it is BackedUp, in one transaction; the volume's base stays.
    pub fn snapshot_complete_in_store(
        &self,
        id: Uuid,
        names: &[[u8; 32]],
        stats: &BackupStats,
    ) -> Result<bool> {
        let mv = &reprise_core::lifecycle::snapshot::BACKED_UP;
        let conn = self.conn();
        let tx = conn.transaction().map_err(db_err("snapshot complete"))?;
        for name in names {
            tx.execute(
                "INSERT INTO snapshot_chunks (snapshot_id, name) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                params![id.sql(), &name[..]],
            )
            .map_err(db_err("snapshot complete"))?;
        }
        let n = tx
            .execute(
                &format!(
                    "UPDATE snapshots SET state = ?2, error = NULL, written_bytes = ?3, stored_bytes = ?4,
                            new_bytes = ?5, chunk_count = ?6, positions = ?7, completed_at = ?8,
                            progress_done = progress_total, base_id = ?9
                      WHERE id = ?1 AND state IN ({})",
                    crate::instances::from_states(mv)
                ),
                params![id.sql(), mv.to.as_str(), stats.written_bytes as i64, stats.stored_bytes as i64,
                        stats.new_bytes as i64, stats.chunk_count as i64, stats.positions as i64, now(),
                        stats.base_id.sql()],
            )
            .map_err(db_err("snapshot complete"))?;
        crate::identity::advance_generation(&tx)?;
        tx.commit().map_err(db_err("snapshot complete"))?;
        Ok(n == 1)
    }

    pub fn transition_snapshot(&self, id: Uuid, mv: &Move<SnapshotState>) -> Result<bool> {
        self.guarded_transition("snapshots", id, mv)
    }

    /// Record the chunks a snapshot references and the stored sizes learned
    /// on the way, in one transaction that advances the catalog's
    /// generation (returned: the store's binding is written with it).
    pub fn record_snapshot_chunks(
        &self,
        id: Uuid,
        names: &[[u8; 32]],
        sizes: &[([u8; 32], u64)],
    ) -> Result<u64> {
        let conn = self.conn();
        let tx = conn.transaction().map_err(db_err("snapshot chunks"))?;
        for (name, s) in sizes {
            tx.execute(
                "INSERT INTO chunks (name, stored_size) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET stored_size = excluded.stored_size",
                params![&name[..], *s as i64],
            )
            .map_err(db_err("snapshot chunks"))?;
        }
        for name in names {
            tx.execute(
                "INSERT INTO snapshot_chunks (snapshot_id, name) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                params![id.sql(), &name[..]],
            )
            .map_err(db_err("snapshot chunks"))?;
        }
        let generation = crate::identity::advance_generation(&tx)?;
        tx.commit().map_err(db_err("snapshot chunks"))?;
        Ok(generation)
    }

    /// Bytes a snapshot's chunks take in the store (those of known size).
    pub fn snapshot_stored_bytes(&self, id: Uuid) -> Result<u64> {
        self.conn()
            .query_row(
                "SELECT CAST(COALESCE(SUM(c.stored_size), 0) AS BIGINT) FROM snapshot_chunks s
                   JOIN chunks c ON c.name = s.name WHERE s.snapshot_id = ?1",
                params![id.sql()],
                |r| r.get::<i64>(0),
            )
            .map(|v| v as u64)
            .map_err(db_err("snapshot stored bytes"))
    }

    /// Bytes of a snapshot's (or, `template`, a template's) chunks that no
    /// other snapshot or template of `account` references: what it added
    /// to the account. A tenant is told this, never what it added to the
    /// store, which would say whether another account holds a chunk.
    pub fn bytes_new_to_account(&self, id: Uuid, account: Uuid, template: bool) -> Result<u64> {
        let mine = if template {
            "SELECT name FROM template_chunks WHERE template_id = ?1"
        } else {
            "SELECT name FROM snapshot_chunks WHERE snapshot_id = ?1"
        };
        self.conn()
            .query_row(
                &format!(
                    "SELECT CAST(COALESCE(SUM(c.stored_size), 0) AS BIGINT)
                       FROM ({mine}) m JOIN chunks c ON c.name = m.name
                      WHERE NOT EXISTS (SELECT 1 FROM snapshot_chunks o JOIN snapshots s ON s.id = o.snapshot_id
                                         WHERE o.name = m.name AND s.account_id = ?2 AND s.id <> ?1)
                        AND NOT EXISTS (SELECT 1 FROM template_chunks o JOIN templates t ON t.id = o.template_id
                                         WHERE o.name = m.name AND t.account_id = ?2 AND t.id <> ?1)"
                ),
                params![id.sql(), account.sql()],
                |r| r.get::<i64>(0),
            )
            .map(|v| v.max(0) as u64)
            .map_err(db_err("bytes new to the account"))
    }

    pub fn set_snapshot_new_bytes(&self, id: Uuid, bytes: u64) -> Result<()> {
        self.update(
            "snapshot new bytes",
            "UPDATE snapshots SET new_bytes = ?2 WHERE id = ?1",
            params![id.sql(), bytes as i64],
        )
    }

    /// A backup finished: the snapshot is BackedUp with its figures, and it
    /// becomes its volume's base. Returns the previous base.
    pub fn snapshot_backed_up(
        &self,
        id: Uuid,
        volume: Uuid,
        stats: &BackupStats,
    ) -> Result<Option<Uuid>> {
        let conn = self.conn();
        let tx = conn.transaction().map_err(db_err("snapshot backed up"))?;
        let previous: Option<String> = tx
            .query_row(
                "SELECT snapshot_base_id FROM volumes WHERE id = ?1",
                params![volume.sql()],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err("snapshot backed up"))?
            .flatten();
        tx.execute(
            "UPDATE snapshots SET state = 'BackedUp', error = NULL, written_bytes = ?2, stored_bytes = ?3,
                    new_bytes = ?4, read_bytes = ?5, chunk_count = ?6, positions = ?7, completed_at = ?8,
                    progress_done = progress_total, base_id = ?9
              WHERE id = ?1",
            params![id.sql(), stats.written_bytes as i64, stats.stored_bytes as i64, stats.new_bytes as i64,
                    stats.read_bytes as i64, stats.chunk_count as i64, stats.positions as i64, now(),
                    stats.base_id.sql()],
        )
        .map_err(db_err("snapshot backed up"))?;
        tx.execute(
            "UPDATE volumes SET snapshot_base_id = ?2 WHERE id = ?1",
            params![volume.sql(), id.sql()],
        )
        .map_err(db_err("snapshot backed up"))?;
        tx.commit().map_err(db_err("snapshot backed up"))?;
        Ok(previous.and_then(|p| Uuid::parse_str(&p).ok()))
    }

    pub fn set_snapshot_verified(&self, id: Uuid, at: DateTime<Utc>) -> Result<()> {
        self.update(
            "snapshot verified",
            "UPDATE snapshots SET verified_at = ?2 WHERE id = ?1",
            params![id.sql(), at],
        )
    }

    /// Forget a snapshot and the chunks it referenced (garbage collection
    /// decides what goes from the store); a volume based on it loses its base.
    pub fn remove_snapshot(&self, id: Uuid) -> Result<()> {
        let conn = self.conn();
        let tx = conn.transaction().map_err(db_err("remove snapshot"))?;
        tx.execute(
            "DELETE FROM snapshot_chunks WHERE snapshot_id = ?1",
            params![id.sql()],
        )
        .map_err(db_err("remove snapshot"))?;
        tx.execute(
            "UPDATE volumes SET snapshot_base_id = NULL WHERE snapshot_base_id = ?1",
            params![id.sql()],
        )
        .map_err(db_err("remove snapshot"))?;
        tx.execute("DELETE FROM snapshots WHERE id = ?1", params![id.sql()])
            .map_err(db_err("remove snapshot"))?;
        tx.commit().map_err(db_err("remove snapshot"))
    }

    /// A failed backup references nothing.
    pub fn drop_snapshot_chunks(&self, id: Uuid) -> Result<()> {
        self.update(
            "snapshot chunks",
            "DELETE FROM snapshot_chunks WHERE snapshot_id = ?1",
            params![id.sql()],
        )
    }

    pub fn volume_snapshot_base(&self, volume: Uuid) -> Result<Option<Uuid>> {
        let base: Option<String> = self
            .conn()
            .query_row(
                "SELECT snapshot_base_id FROM volumes WHERE id = ?1",
                params![volume.sql()],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err("volume base"))?
            .flatten();
        Ok(base.and_then(|b| Uuid::parse_str(&b).ok()))
    }

    pub fn set_volume_snapshot_base(&self, volume: Uuid, base: Option<Uuid>) -> Result<()> {
        self.update(
            "volume base",
            "UPDATE volumes SET snapshot_base_id = ?2 WHERE id = ?1",
            params![volume.sql(), base.sql()],
        )
    }

    /// What garbage collection must keep: every chunk a snapshot or a
    /// template references, and the ids of both (their objects in the store
    /// sit under `snapshots/<id>/`).
    pub fn live_references(&self) -> Result<(HashSet<[u8; 32]>, HashSet<Uuid>)> {
        let conn = self.conn();
        let chunks = rows::query(
            &conn,
            "SELECT name FROM snapshot_chunks UNION SELECT name FROM template_chunks",
            params![],
            |r| r.get::<Vec<u8>>(0),
        )?
        .into_iter()
        .filter_map(|v| v.try_into().ok())
        .collect();
        let ids = rows::query(
            &conn,
            "SELECT id FROM snapshots UNION SELECT id FROM templates",
            params![],
            |r| r.get::<String>(0),
        )?
        .into_iter()
        .filter_map(|s| Uuid::parse_str(&s).ok())
        .collect();
        Ok((chunks, ids))
    }

    // ---- templates -----------------------------------------------------
    //
    // A template is recorded `Creating` (with its chunk references, where
    // garbage collection looks) before its index and manifest are written,
    // and made `Ready` after: only Ready templates are seen or deployed.

    /// Record a template and the chunks it references, in one transaction
    /// that advances the catalog's generation (returned).
    pub fn insert_template(&self, t: &Template, names: &[[u8; 32]]) -> Result<u64> {
        let conn = self.conn();
        let what = format!("template '{}'", t.name);
        let tx = conn.transaction().map_err(db_err(&what))?;
        tx.execute(
            "INSERT INTO templates (id, account_id, name, source_snapshot_id, source_snapshot, size_bytes,
                                    chunk_count, created_at, state, host)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'Creating', ?9)",
            params![t.id.sql(), t.account_id.sql(), t.name, t.source_snapshot_id.sql(), t.source_snapshot,
                    t.size_bytes as i64, t.chunk_count as i64, t.created_at, self.host],
        )
        .map_err(db_err(&what))?;
        for n in names {
            tx.execute(
                "INSERT INTO template_chunks (template_id, name) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                params![t.id.sql(), &n[..]],
            )
            .map_err(db_err(&what))?;
        }
        let generation = crate::identity::advance_generation(&tx)?;
        tx.commit().map_err(db_err(&what))?;
        Ok(generation)
    }

    pub fn template(&self, account: Uuid, reference: &str) -> Result<Template> {
        self.conn()
            .query_row(
                &format!(
                    "{} WHERE t.account_id = ?1 AND (t.id = ?2 OR t.name = ?2) AND t.state = 'Ready'",
                    rows::TEMPLATE_SELECT
                ),
                params![account.sql(), reference],
                rows::template,
            )
            .optional()
            .map_err(db_err("template"))?
            .ok_or_else(|| Error::not_found("template", reference))
    }

    pub fn list_templates(&self, account: Uuid) -> Result<Vec<Template>> {
        rows::query(
            &self.conn(),
            &format!(
                "{} WHERE t.account_id = ?1 AND t.state = 'Ready' ORDER BY t.created_at, t.rowid",
                rows::TEMPLATE_SELECT
            ),
            params![account.sql()],
            rows::template,
        )
    }

    /// Its index and manifest are in the store: the template can be seen.
    pub fn template_ready(&self, id: Uuid) -> Result<()> {
        self.update(
            "template ready",
            "UPDATE templates SET state = 'Ready' WHERE id = ?1",
            params![id.sql()],
        )
    }

    /// Delete a Ready template into its undelete window; false when it was
    /// not Ready.
    pub fn delete_template_for_now(&self, id: Uuid, purge_after: DateTime<Utc>) -> Result<bool> {
        self.change_and_advance(
            "delete template",
            "UPDATE templates SET state = 'Deleted', deleted_at = ?2, purge_after = ?3
              WHERE id = ?1 AND state = 'Ready'",
            params![id.sql(), now(), purge_after],
        )
    }

    /// Bring a deleted template back (`name_taken` when a template has its
    /// name now); false when it was not Deleted.
    pub fn undelete_template(&self, id: Uuid) -> Result<bool> {
        self.change_and_advance(
            "undelete template",
            "UPDATE templates SET state = 'Ready', deleted_at = NULL, purge_after = NULL
              WHERE id = ?1 AND state = 'Deleted'",
            params![id.sql()],
        )
    }

    /// Claim a template (Ready, or Deleted) for its purge — its objects,
    /// then its row — so neither another purge nor an undelete can race
    /// it; false when it was in neither state.
    pub fn start_template_purge(&self, id: Uuid) -> Result<bool> {
        self.change_and_advance(
            "purge template",
            "UPDATE templates SET state = 'Destroying' WHERE id = ?1 AND state IN ('Ready', 'Deleted')",
            params![id.sql()],
        )
    }

    /// Templates whose purge a stop cut short: to finish.
    pub fn templates_being_purged(&self) -> Result<Vec<Uuid>> {
        rows::query(
            &self.conn(),
            "SELECT id FROM templates WHERE state = 'Destroying'",
            params![],
            |r| rows::uuid(r, 0),
        )
    }

    /// An account's deleted templates, latest deleted first.
    pub fn deleted_templates(&self, account: Uuid) -> Result<Vec<Template>> {
        rows::query(
            &self.conn(),
            &format!(
                "{} WHERE t.account_id = ?1 AND t.state = 'Deleted' ORDER BY t.deleted_at DESC",
                rows::TEMPLATE_SELECT
            ),
            params![account.sql()],
            rows::template,
        )
    }

    /// Deleted templates whose window ended by `now`, with their owners.
    pub fn templates_to_purge(&self, now: DateTime<Utc>) -> Result<Vec<Template>> {
        rows::query(
            &self.conn(),
            &format!(
                "{} WHERE t.state = 'Deleted' AND t.purge_after <= ?1",
                rows::TEMPLATE_SELECT
            ),
            params![now],
            rows::template,
        )
    }

    /// Templates a crash left Creating: their ids (at startup, when none
    /// is being made).
    pub fn unfinished_templates(&self) -> Result<Vec<Uuid>> {
        rows::query(
            &self.conn(),
            "SELECT id FROM templates WHERE state = 'Creating' AND host = ?1",
            params![self.host],
            |r| rows::uuid(r, 0),
        )
    }

    /// Forget a template and its references (garbage collection decides
    /// what goes from the store).
    pub fn remove_template(&self, id: Uuid) -> Result<()> {
        let conn = self.conn();
        let tx = conn.transaction().map_err(db_err("remove template"))?;
        tx.execute(
            "DELETE FROM template_chunks WHERE template_id = ?1",
            params![id.sql()],
        )
        .map_err(db_err("remove template"))?;
        tx.execute("DELETE FROM templates WHERE id = ?1", params![id.sql()])
            .map_err(db_err("remove template"))?;
        tx.commit().map_err(db_err("remove template"))
    }

    /// Chunks deleted from the store: their sizes are no longer known.
    pub fn forget_chunks(&self, names: &[[u8; 32]]) -> Result<()> {
        let conn = self.conn();
        let tx = conn.transaction().map_err(db_err("forget chunks"))?;
        for n in names {
            tx.execute("DELETE FROM chunks WHERE name = ?1", params![&n[..]])
                .map_err(db_err("forget chunks"))?;
        }
        tx.commit().map_err(db_err("forget chunks"))
    }
}
