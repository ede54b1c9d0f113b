//! Which catalog the store belongs to: the `catalog` object
//! ([`Binding`]), and the rule that lets a catalog sweep the store only
//! when it is the store's own and no older than what the store has seen
//! of it.
//!
//! A catalog advances its generation with every snapshot and template it
//! records, and writes the binding after the manifest. The store's
//! generation is therefore never above the true catalog's; a catalog
//! found below it was restored from an older copy (snapshots recorded
//! since are missing from it), and one with another id is not the store's
//! (a new catalog after a lost host, or another deployment pointed at the
//! same bucket). Either is refused a sweep — it would not delete what the
//! store holds anyway (see `gc.rs`: orphans are kept), but it is the sign
//! that snapshots need recovering, and the refusal says so.

use crate::Region;
use chrono::Utc;
use reprise_chunks::manifest::Binding;
use reprise_core::{Error, ErrorKind, Result};
use uuid::Uuid;

pub const BINDING_KEY: &str = "catalog";

/// What a catalog knows of itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogSide {
    pub catalog_id: Uuid,
    /// The region it was bound to (none until its first binding).
    pub region_id: Option<Uuid>,
    pub generation: u64,
    /// Why it must recover before it sweeps, once it has seen the store
    /// ahead of it (kept until a recover).
    pub behind: Option<String>,
}

const RECOVER: &str = "run `reprise region recover` (it adds to this catalog every snapshot and template the store holds that it lacks, then binds the store to it)";

/// Whether `catalog` may write snapshots into a store of region
/// `region_id` bound by `store`: not while the store is another catalog's
/// (whose sweeps would not see this catalog's backups in progress) or
/// another region's. A catalog behind the store may: its snapshots are
/// the store's own catalog's. Pure.
pub fn writable(store: Option<&Binding>, region_id: Uuid, catalog: &CatalogSide) -> Result<()> {
    if let Some(mine) = catalog.region_id.filter(|r| *r != region_id) {
        return Err(refused(
            "store_of_another_region",
            format!(
                "this catalog belongs to region {mine}, but the store is region {region_id}: nothing was done; if this catalog is to use this store, {RECOVER}"
            ),
        ));
    }
    match store {
        Some(b) if b.catalog_id != catalog.catalog_id => Err(refused(
            "store_bound_elsewhere",
            format!(
                "the region's store belongs to catalog {} (generation {}, written by host '{}' at {}), not to this daemon's catalog {}: a new catalog, or another deployment's, sharing the store; nothing was done; if this catalog is to be the store's, {RECOVER}",
                b.catalog_id,
                b.generation,
                b.written_by,
                b.written_at.format("%F %T UTC"),
                catalog.catalog_id
            ),
        )),
        _ => Ok(()),
    }
}

/// Whether `catalog` may sweep a store of region `region_id` bound by
/// `store` (none: bound to no catalog yet): only the store's own catalog,
/// at a generation no lower than the store has seen of it. Pure.
pub fn judge(store: Option<&Binding>, region_id: Uuid, catalog: &CatalogSide) -> Result<()> {
    writable(store, region_id, catalog)?;
    if let Some(why) = &catalog.behind {
        return Err(refused(
            "catalog_behind_store",
            format!("{why}: nothing was swept; {RECOVER}"),
        ));
    }
    let Some(store) = store else {
        return Ok(());
    };
    if store.generation > catalog.generation {
        return Err(refused(
            "catalog_behind_store",
            format!(
                "{}: nothing was swept; {RECOVER}",
                behind_reason(store.generation, catalog.generation)
            ),
        ));
    }
    Ok(())
}

/// Why a catalog at `mine` is behind a store that has seen `store`.
pub fn behind_reason(store: u64, mine: u64) -> String {
    format!(
        "the catalog is at generation {mine} but the region's store has seen generation {store} of it: it was restored from an older copy, and snapshots recorded since may be missing from it"
    )
}

fn refused(code: &'static str, message: String) -> Error {
    Error::new(ErrorKind::Conflict, code, message)
}

/// The store's binding, if it has one.
pub async fn read(region: &Region) -> Result<Option<Binding>> {
    match region.store.get(BINDING_KEY, 64 << 10).await {
        Ok(bytes) => Binding::decode(&bytes, &region.keys).map(Some),
        Err(e) if e.kind == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The binding that names `catalog` at its generation, written now by
/// `host`.
fn binding_of(region: &Region, catalog: &CatalogSide, host: &str) -> Binding {
    Binding {
        region_id: region.id,
        catalog_id: catalog.catalog_id,
        generation: catalog.generation,
        written_at: Utc::now(),
        written_by: host.to_string(),
    }
}

/// Record in the store that `catalog` (at its generation, from `host`)
/// is the store's, given the binding `found` there just before, unless it
/// names another catalog or a later generation of this one. Returns the
/// binding the store holds now.
pub async fn advance(
    region: &Region,
    found: Option<&Binding>,
    catalog: &CatalogSide,
    host: &str,
) -> Result<Option<Binding>> {
    let ours = binding_of(region, catalog, host);
    match found {
        None => {
            // Two catalogs' first writes race: one is the store's.
            region
                .store
                .put_if_absent(BINDING_KEY, ours.encode(&region.keys))
                .await?;
            read(region).await
        }
        Some(b) if b.catalog_id == catalog.catalog_id && b.generation < catalog.generation => {
            // Hosts of one catalog may write out of order: a lower
            // generation written last only makes the check less strict.
            region
                .store
                .put(BINDING_KEY, ours.encode(&region.keys))
                .await?;
            Ok(Some(ours))
        }
        Some(b) => Ok(Some(b.clone())),
    }
}

/// Bind the store to `catalog` whatever it held (a recover that has
/// added the store's snapshots to this catalog).
pub async fn take(region: &Region, catalog: &CatalogSide, host: &str) -> Result<Binding> {
    let ours = binding_of(region, catalog, host);
    region
        .store
        .put(BINDING_KEY, ours.encode(&region.keys))
        .await?;
    Ok(ours)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(id: Uuid, generation: u64) -> CatalogSide {
        CatalogSide {
            catalog_id: id,
            region_id: None,
            generation,
            behind: None,
        }
    }

    fn bound(id: Uuid, generation: u64) -> Binding {
        Binding {
            region_id: Uuid::nil(),
            catalog_id: id,
            generation,
            written_at: Utc::now(),
            written_by: "h1".into(),
        }
    }

    #[test]
    fn only_the_stores_catalog_at_its_generation_or_later_sweeps() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let region = Uuid::nil();
        let code = |r: Result<()>| r.err().map(|e| e.code.to_string());
        assert_eq!(code(judge(None, region, &side(a, 0))), None, "unbound");
        assert_eq!(code(judge(Some(&bound(a, 5)), region, &side(a, 5))), None);
        assert_eq!(code(judge(Some(&bound(a, 5)), region, &side(a, 9))), None);
        assert_eq!(
            code(judge(Some(&bound(a, 9)), region, &side(a, 5))),
            Some("catalog_behind_store".to_string()),
            "restored from an older copy"
        );
        assert_eq!(
            code(judge(Some(&bound(a, 1)), region, &side(b, 100))),
            Some("store_bound_elsewhere".to_string()),
            "another catalog, however far along"
        );
        let behind = CatalogSide {
            behind: Some(behind_reason(9, 5)),
            ..side(a, 20)
        };
        assert_eq!(
            code(judge(Some(&bound(a, 9)), region, &behind)),
            Some("catalog_behind_store".to_string()),
            "a catalog that caught up in count is still behind until it recovers"
        );
        let elsewhere = CatalogSide {
            region_id: Some(Uuid::new_v4()),
            ..side(a, 9)
        };
        // Writing: only another catalog's store, or another region's, is
        // refused; a catalog behind writes (its snapshots are kept).
        assert_eq!(
            code(writable(Some(&bound(a, 9)), region, &side(a, 5))),
            None
        );
        assert_eq!(code(writable(None, region, &side(b, 0))), None);
        assert_eq!(
            code(writable(Some(&bound(a, 1)), region, &side(b, 9))),
            Some("store_bound_elsewhere".to_string())
        );
        let e = judge(Some(&bound(a, 9)), region, &elsewhere).unwrap_err();
        assert_eq!(e.code, "store_of_another_region");
        assert!(
            e.message.contains("reprise region recover"),
            "{}",
            e.message
        );
    }
}
