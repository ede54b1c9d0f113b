//! Volumes: lookups scoped to their account, states changed only from
//! the states a caller names ([`Catalog::transition_volume`]), and their
//! attachment to an instance (one slot each).

use crate::db::{params, placeholders, DbExt, Optional, ToValue, Value};
use crate::rows::{self, Sql};
use crate::{db_err, write, Catalog, VolumeFilter, VolumeRow};
use reprise_core::lifecycle::Move;
use reprise_core::model::*;
use reprise_core::{Error, Result};
use uuid::Uuid;

impl Catalog {
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
                "{} WHERE v.account_id = ?1 AND (CAST(?2 AS TEXT) IS NULL OR v.zone_id = ?2)
                 AND (CAST(?3 AS TEXT) IS NULL OR v.instance_id = ?3) ORDER BY v.created_at",
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
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let params: Vec<Value> = ids.iter().map(ToValue::to_value).collect();
        rows::query(
            &self.conn(),
            &format!(
                "{} WHERE v.id IN ({})",
                rows::VOLUME_SELECT,
                placeholders(1, ids.len())
            ),
            &params,
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

    /// Move a volume to `to` only from one of `from`.
    pub fn transition_volume(&self, id: Uuid, mv: &Move<VolumeState>) -> Result<bool> {
        self.guarded_transition("volumes", id, mv)
    }

    /// Every volume of every account (for startup checks).
    /// The volumes on this daemon's host.
    pub fn local_volumes(&self) -> Result<Vec<VolumeRow>> {
        rows::query(
            &self.conn(),
            &format!(
                "{} WHERE v.host = ?1 ORDER BY v.created_at",
                rows::VOLUME_SELECT
            ),
            params![self.host],
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

    /// Delete a volume's row, and its policies with it.
    pub fn delete_volume(&self, id: Uuid) -> Result<()> {
        self.delete_policies_of(id)?;
        self.update(
            "delete volume",
            "DELETE FROM volumes WHERE id = ?1",
            params![id.sql()],
        )
    }
}
