//! Zones: named places that hold volumes, shared by every account of the
//! region; names unique in the region.

use crate::db::{params, Db, DbExt, Optional};
use crate::rows::{self, Sql};
use crate::{db_err, now, Catalog};
use reprise_core::model::*;
use reprise_core::{Error, Result};
use uuid::Uuid;

impl Catalog {
    pub fn create_zone(&self, owner: Uuid, name: &str, storage_dir: &str) -> Result<Zone> {
        reprise_core::name::validate_name("zone", name)?;
        let zone = Zone {
            id: Uuid::new_v4(),
            name: name.to_string(),
            storage_dir: storage_dir.to_string(),
            created_at: now(),
        };
        self.conn()
            .execute(
                "INSERT INTO zones (id, account_id, name, storage_dir, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![zone.id.sql(), owner.sql(), zone.name, zone.storage_dir, zone.created_at],
            )
            .map_err(db_err(&format!("zone '{name}'")))?;
        Ok(zone)
    }

    pub fn list_zones(&self) -> Result<Vec<Zone>> {
        rows::query(
            &self.conn(),
            "SELECT id, name, storage_dir, created_at FROM zones ORDER BY created_at",
            params![],
            rows::zone,
        )
    }

    /// A zone by name or id (zones are shared by all accounts of a region).
    pub fn zone(&self, reference: &str) -> Result<Zone> {
        self.conn()
            .query_row(
                "SELECT id, name, storage_dir, created_at FROM zones WHERE id = ?1 OR name = ?1",
                params![reference],
                rows::zone,
            )
            .optional()
            .map_err(db_err("zone"))?
            .ok_or_else(|| Error::not_found("zone", reference))
    }

    pub fn zone_by_id(&self, id: Uuid) -> Result<Zone> {
        self.zone(&id.to_string())
    }
}
