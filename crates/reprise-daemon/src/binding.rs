//! This daemon's catalog and the region's store, bound together (the rule
//! is in `reprise_backup::binding`): after each snapshot or template is
//! recorded, the store learns the catalog's generation; before each sweep
//! (and each forgetting of orphans), the catalog must be the one the
//! store names, at a generation no lower than the store has seen.
//!
//! Reads go store first, catalog second: the store's generation is
//! written after the catalog's commit of it, so a catalog read afterwards
//! that is still lower really is behind (a daemon of the same region that
//! raced ahead cannot make another look behind).

use crate::app::App;
use reprise_backup::binding::{self, CatalogSide};
use reprise_chunks::manifest::Binding;
use reprise_core::Result;

/// The catalog as the binding rule sees it.
pub fn side(app: &App) -> Result<CatalogSide> {
    let id = app.catalog.identity()?;
    Ok(CatalogSide {
        catalog_id: id.catalog_id,
        region_id: id.region_id,
        generation: id.generation,
        behind: id.behind,
    })
}

/// After a snapshot or template is in the store: the store learns this
/// catalog's generation; a store found ahead marks the catalog behind.
/// Never fails the snapshot: what this keeps is a check, not data.
pub async fn recorded(app: &App) {
    if let Err(e) = advance(app).await {
        tracing::warn!(
            "the store's catalog binding was not updated (the next snapshot or sweep does it): {e}"
        );
    }
}

async fn advance(app: &App) -> Result<Option<Binding>> {
    let region = app.region().await?;
    let found = binding::read(region).await?;
    let me = side(app)?;
    if let Some(b) = &found {
        if b.catalog_id == me.catalog_id && b.generation > me.generation {
            let why = binding::behind_reason(b.generation, me.generation);
            tracing::error!("{why}: sweeps are refused until `reprise region recover` runs");
            app.catalog.mark_behind(&why)?;
            return Ok(found);
        }
    }
    if me.region_id.is_none() {
        app.catalog.set_region(region.id)?;
    }
    binding::advance(region, found.as_ref(), &me, app.host_name()).await
}

/// Refuse, naming why and the way out, while the store is another
/// catalog's (whose sweeps would not see this one's backups in progress)
/// or another region's: before a snapshot or template is written.
pub async fn may_write(app: &App) -> Result<()> {
    let region = app.region().await?;
    let found = binding::read(region).await?;
    binding::writable(found.as_ref(), region.id, &side(app)?)
}

/// Refuse, naming why and the way out, unless this catalog may delete
/// from the store; binds an unbound store to it.
pub async fn may_sweep(app: &App) -> Result<()> {
    let region = app.region().await?;
    let found = binding::read(region).await?;
    let me = side(app)?;
    if let Err(e) = binding::judge(found.as_ref(), region.id, &me) {
        if e.code == "catalog_behind_store" && me.behind.is_none() {
            app.catalog.mark_behind(&e.message)?;
        }
        return Err(e);
    }
    if me.region_id.is_none() {
        app.catalog.set_region(region.id)?;
    }
    binding::advance(region, found.as_ref(), &me, app.host_name()).await?;
    Ok(())
}
