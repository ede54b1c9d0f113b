//! The catalog's identity: its id, the region it belongs to, and its
//! generation — what the region's store records of the catalog it is
//! bound to (`reprise_backup::binding`).
//!
//! Invariants:
//! - One row, made at first use with a random id. A copy of the catalog
//!   (a SQLite file put back, a PostgreSQL dump restored) keeps the id; a
//!   new catalog gets another.
//! - The generation advances in the transaction that records a snapshot's
//!   or a template's references ([`advance_generation`]), before its
//!   manifest is written; it never goes back but through a restore of
//!   the whole catalog — which is what the store's binding detects.

use crate::db::{params, Db, DbExt};
use crate::rows::Sql;
use crate::{db_err, Catalog};
use reprise_core::Result;
use uuid::Uuid;

/// What the catalog knows of itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub catalog_id: Uuid,
    pub region_id: Option<Uuid>,
    pub generation: u64,
    /// Why it must recover before it sweeps, if it must.
    pub behind: Option<String>,
}

/// Make the row if this catalog has none yet.
fn ensure(conn: &dyn Db) -> Result<()> {
    conn.execute(
        "INSERT INTO catalog_identity (one, catalog_id, generation) VALUES (1, ?1, 0)
         ON CONFLICT (one) DO NOTHING",
        params![Uuid::new_v4().sql()],
    )
    .map_err(db_err("catalog identity"))?;
    Ok(())
}

fn read(conn: &dyn Db) -> Result<Identity> {
    ensure(conn)?;
    conn.query_row(
        "SELECT catalog_id, region_id, generation, behind FROM catalog_identity WHERE one = 1",
        params![],
        |r| {
            let id: String = r.get(0)?;
            let region: Option<String> = r.get(1)?;
            Ok(Identity {
                catalog_id: Uuid::parse_str(&id).unwrap_or_default(),
                region_id: region.and_then(|r| Uuid::parse_str(&r).ok()),
                generation: r.get::<i64>(2)? as u64,
                behind: r.get(3)?,
            })
        },
    )
    .map_err(db_err("catalog identity"))
}

/// Advance the generation, inside the caller's transaction; the new one.
pub fn advance_generation(conn: &dyn Db) -> Result<u64> {
    ensure(conn)?;
    conn.execute(
        "UPDATE catalog_identity SET generation = generation + 1 WHERE one = 1",
        params![],
    )
    .map_err(db_err("catalog generation"))?;
    Ok(read(conn)?.generation)
}

impl Catalog {
    pub fn identity(&self) -> Result<Identity> {
        read(&**self.conn())
    }

    /// Remember the region this catalog's store is (at its first binding).
    pub fn set_region(&self, region: Uuid) -> Result<()> {
        let conn = self.conn();
        ensure(&**conn)?;
        conn.execute(
            "UPDATE catalog_identity SET region_id = ?1 WHERE one = 1 AND region_id IS NULL",
            params![region.sql()],
        )
        .map_err(db_err("catalog region"))?;
        Ok(())
    }

    /// The store has seen a later generation of this catalog: it must
    /// recover before it sweeps, whatever it records meanwhile.
    pub fn mark_behind(&self, why: &str) -> Result<()> {
        let conn = self.conn();
        ensure(&**conn)?;
        conn.execute(
            "UPDATE catalog_identity SET behind = ?1 WHERE one = 1 AND behind IS NULL",
            params![why],
        )
        .map_err(db_err("catalog behind"))?;
        Ok(())
    }

    /// A recover brought back what the store holds: the catalog is the
    /// store's at `generation` (at least), in `region`, behind no more.
    pub fn recovered(&self, region: Uuid, generation: u64) -> Result<Identity> {
        let conn = self.conn();
        ensure(&**conn)?;
        conn.execute(
            "UPDATE catalog_identity SET behind = NULL, region_id = ?1,
                    generation = CASE WHEN generation < ?2 THEN ?2 ELSE generation END
              WHERE one = 1",
            params![region.sql(), generation as i64],
        )
        .map_err(db_err("catalog recovered"))?;
        read(&**conn)
    }
}
