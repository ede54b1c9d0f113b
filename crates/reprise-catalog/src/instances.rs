//! Instances: lookups scoped to their account, guarded state changes, and
//! what the daemon records of a running QEMU.

use crate::db::{params, Db, DbExt, Optional};
use crate::rows::{self, Sql};
use crate::{db_err, write, Catalog, InstanceRow, VolumeRow};
use reprise_core::lifecycle::Move;
use reprise_core::model::*;
use reprise_core::{Error, Result};
use uuid::Uuid;

impl Catalog {
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

    /// [`Catalog::instance`] and its volumes in slot order, in one
    /// statement (an instance's show on PostgreSQL: a round trip less).
    pub fn instance_with_volumes(
        &self,
        account: Uuid,
        reference: &str,
    ) -> Result<(InstanceRow, Vec<VolumeRow>)> {
        let rows = rows::query(
            &self.conn(),
            &format!(
                "{} WHERE i.account_id = ?1 AND (i.id = ?2 OR i.name = ?2) ORDER BY v.slot",
                rows::INSTANCE_WITH_VOLUMES_SELECT
            ),
            params![account.sql(), reference],
            rows::instance_and_volume,
        )?;
        let mut rows = rows.into_iter();
        let (instance, first) = rows
            .next()
            .ok_or_else(|| Error::not_found("instance", reference))?;
        let volumes = first
            .into_iter()
            .chain(rows.filter_map(|(_, v)| v))
            .collect();
        Ok((instance, volumes))
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
    /// The instances on this daemon's host.
    pub fn local_instances(&self) -> Result<Vec<InstanceRow>> {
        rows::query(
            &self.conn(),
            &format!(
                "{} WHERE i.host = ?1 ORDER BY i.created_at",
                rows::INSTANCE_SELECT
            ),
            params![self.host],
            rows::instance,
        )
    }

    pub fn list_instances(&self, account: Option<Uuid>) -> Result<Vec<InstanceRow>> {
        rows::query(
            &self.conn(),
            &format!(
                "{} WHERE (CAST(?1 AS TEXT) IS NULL OR i.account_id = ?1) ORDER BY i.created_at",
                rows::INSTANCE_SELECT
            ),
            params![account.sql()],
            rows::instance,
        )
    }

    /// Move an instance to `to` only if it is in one of `from`; false if it
    /// was not (someone else moved it first).
    pub fn transition_instance(&self, id: Uuid, mv: &Move<InstanceState>) -> Result<bool> {
        self.guarded_transition("instances", id, mv)
    }

    /// `UPDATE table SET state = to WHERE id = id AND state IN from`, in one
    /// statement so that of two concurrent requests only one moves the row.
    pub(crate) fn guarded_transition<S: StateName>(
        &self,
        table: &str,
        id: Uuid,
        mv: &Move<S>,
    ) -> Result<bool> {
        let n = self
            .conn()
            .execute(
                &format!(
                    "UPDATE {table} SET state = ?2 WHERE id = ?1 AND state IN ({})",
                    from_states(mv)
                ),
                params![id.sql(), mv.to.name()],
            )
            .map_err(db_err("state transition"))?;
        Ok(n == 1)
    }

    /// [`Catalog::guarded_transition`] that also sets the row's `error`.
    pub(crate) fn guarded_settle<S: StateName>(
        &self,
        table: &str,
        id: Uuid,
        mv: &Move<S>,
        error: Option<&str>,
    ) -> Result<bool> {
        let n = self
            .conn()
            .execute(
                &format!(
                    "UPDATE {table} SET state = ?2, error = ?3 WHERE id = ?1 AND state IN ({})",
                    from_states(mv)
                ),
                params![id.sql(), mv.to.name(), error],
            )
            .map_err(db_err("state settle"))?;
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
        let conn = self.conn();
        let tx = conn.transaction().map_err(db_err("delete instance"))?;
        tx.execute(
            "UPDATE volumes SET instance_id = NULL, slot = NULL WHERE instance_id = ?1 AND kind = 'Data'",
            params![id.sql()],
        )
        .map_err(db_err("delete instance"))?;
        // Its policies, and its root volume's, go with it.
        tx.execute(
            "DELETE FROM policies WHERE instance_id = ?1
               OR volume_id IN (SELECT id FROM volumes WHERE instance_id = ?1 AND kind = 'Root')",
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
}

/// The states a move leaves, as an SQL list (`'Ready', 'Error'`): the
/// lifecycle tables' own names, never user input.
pub(crate) fn from_states<S: StateName>(mv: &Move<S>) -> String {
    let names: Vec<&'static str> = mv.from.iter().map(|s| s.name()).collect();
    crate::db::literal_list(&names)
}
