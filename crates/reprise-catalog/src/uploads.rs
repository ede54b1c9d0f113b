//! Uploads: files an account sends over the API, before an import or a
//! boot uses them. The bytes live in the daemon's private upload
//! directory, named by the upload's id; the row says how many arrived.
//!
//! Invariants: `received_bytes` never exceeds `size_bytes`, and is only
//! raised after the bytes are written; a `Complete` upload is never written
//! again (users of it may hard-link its file).

use crate::db::{params, Db, DbExt, Optional};
use crate::rows::{self, Sql};
use crate::{db_err, now, Catalog};
use chrono::{DateTime, Utc};
use reprise_core::model::*;
use reprise_core::{Error, Result};
use uuid::Uuid;

impl Catalog {
    /// Record a new upload, unless the account already has `max` of them
    /// (one statement: concurrent requests cannot pass it together).
    pub fn insert_upload(&self, u: &Upload, max: u64) -> Result<bool> {
        let n = self
            .conn()
            .execute(
                "INSERT INTO uploads (id, account_id, name, state, size_bytes, received_bytes, created_at, updated_at, host)
                 SELECT ?1, ?2, ?3, ?4, CAST(?5 AS BIGINT), 0, ?6, ?6, ?8
                 WHERE (SELECT COUNT(*) FROM uploads WHERE account_id = ?2) < ?7",
                params![u.id.sql(), u.account_id.sql(), u.name, u.state.as_str(), u.size_bytes as i64, u.created_at, max as i64, self.host],
            )
            .map_err(db_err("upload"))?;
        Ok(n == 1)
    }

    /// An upload of `account` by id.
    pub fn upload(&self, account: Uuid, reference: &str) -> Result<Upload> {
        self.conn()
            .query_row(
                &format!("{} WHERE account_id = ?1 AND id = ?2", rows::UPLOAD_SELECT),
                params![account.sql(), reference],
                rows::upload,
            )
            .optional()
            .map_err(db_err("upload"))?
            .ok_or_else(|| Error::not_found("upload", reference))
    }

    pub fn list_uploads(&self, account: Uuid) -> Result<Vec<Upload>> {
        rows::query(
            &self.conn(),
            &format!(
                "{} WHERE account_id = ?1 ORDER BY created_at",
                rows::UPLOAD_SELECT
            ),
            params![account.sql()],
            rows::upload,
        )
    }

    /// Record how many bytes of an upload are written.
    pub fn set_upload_received(&self, id: Uuid, received: u64) -> Result<()> {
        self.update(
            "upload progress",
            "UPDATE uploads SET received_bytes = ?2, updated_at = ?3
             WHERE id = ?1 AND state = 'Receiving' AND ?2 <= size_bytes",
            params![id.sql(), received as i64, now()],
        )
    }

    pub fn complete_upload(&self, id: Uuid, sha256: &str) -> Result<()> {
        self.update(
            "upload complete",
            "UPDATE uploads SET state = 'Complete', sha256 = ?2, completed_at = ?3, updated_at = ?3
             WHERE id = ?1 AND received_bytes = size_bytes",
            params![id.sql(), sha256, now()],
        )
    }

    pub fn delete_upload(&self, id: Uuid) -> Result<()> {
        self.update(
            "delete upload",
            "DELETE FROM uploads WHERE id = ?1",
            params![id.sql()],
        )
    }

    /// This host's uploads to remove: unfinished ones untouched since
    /// `receiving_before`, and complete ones finished before
    /// `complete_before`.
    pub fn expired_uploads(
        &self,
        receiving_before: DateTime<Utc>,
        complete_before: DateTime<Utc>,
    ) -> Result<Vec<Upload>> {
        rows::query(
            &self.conn(),
            &format!(
                "{} WHERE host = ?3 AND ((state = 'Receiving' AND updated_at < ?1)
                    OR (state = 'Complete' AND completed_at < ?2))",
                rows::UPLOAD_SELECT
            ),
            params![receiving_before, complete_before, self.host],
            rows::upload,
        )
    }

    /// Every upload id of this host, for the sweep of its upload directory.
    pub fn all_upload_ids(&self) -> Result<Vec<Uuid>> {
        rows::query(
            &self.conn(),
            "SELECT id FROM uploads WHERE host = ?1",
            params![self.host],
            |r| rows::uuid(r, 0),
        )
    }

    /// The host that holds an upload's bytes.
    pub fn upload_host(&self, account: Uuid, id: &str) -> Result<String> {
        self.conn()
            .query_row(
                "SELECT host FROM uploads WHERE account_id = ?1 AND id = ?2",
                params![account.sql(), id],
                |r| r.get::<String>(0),
            )
            .optional()
            .map_err(db_err("upload"))?
            .ok_or_else(|| Error::not_found("upload", id))
    }
}
