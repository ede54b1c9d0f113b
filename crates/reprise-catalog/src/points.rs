//! Recovery points of instances, and each instance's current point.

use crate::db::{params, Db, DbExt, Optional};
use crate::rows::{self, Sql};
use crate::{db_err, write, Catalog};
use reprise_core::lifecycle::Move;
use reprise_core::model::*;
use reprise_core::{Error, Result};
use uuid::Uuid;

impl Catalog {
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
                "{} WHERE (CAST(?1 AS TEXT) IS NULL OR p.instance_id = ?1) ORDER BY p.created_at, p.rowid",
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

    /// Settle a point by `mv` with `error` as its reason, only from the
    /// states the move leaves.
    pub fn settle_point(
        &self,
        id: Uuid,
        mv: &Move<PointState>,
        error: Option<&str>,
    ) -> Result<bool> {
        self.guarded_settle("points", id, mv, error)
    }

    /// What startup reconciliation found the point to be (the facts of
    /// its qcow2 tags), whatever the row said.
    pub fn set_point_state(&self, id: Uuid, state: PointState, error: Option<&str>) -> Result<()> {
        self.update(
            "point state",
            "UPDATE points SET state = ?2, error = ?3 WHERE id = ?1",
            params![id.sql(), state.as_str(), error],
        )
    }

    /// Move a point to `to` only from one of `from`.
    pub fn transition_point(&self, id: Uuid, mv: &Move<PointState>) -> Result<bool> {
        self.guarded_transition("points", id, mv)
    }

    /// A point was taken: it is Ready, and the instance is now at it.
    pub fn point_taken(
        &self,
        id: Uuid,
        instance: Uuid,
        consistency: &str,
        frozen_ms: Option<u64>,
        memory_save: Option<&str>,
    ) -> Result<()> {
        let conn = self.conn();
        let tx = conn.transaction().map_err(db_err("point taken"))?;
        tx.execute(
            "UPDATE points SET state = 'Ready', error = NULL, consistency = ?2, frozen_ms = ?3, memory_save = ?4 WHERE id = ?1",
            params![id.sql(), consistency, frozen_ms.map(|v| v as i64), memory_save],
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
        let conn = self.conn();
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
}
