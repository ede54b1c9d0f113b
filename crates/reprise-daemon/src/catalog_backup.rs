//! Backups of the catalog's own rows into the region's store, and their
//! restore: the part of a region the store cannot tell of itself
//! (accounts and key hashes, plans, zones, volumes, instances, points,
//! policies, templates). Snapshots come back from their manifests
//! (`reprise region recover`), so the way back from a lost catalog is a
//! restore of the newest backup, then a recover for what came after it.
//!
//! Objects: `catalog-backups/<UTC time>-<catalog id>`, sealed and
//! encrypted under the region's secret (`reprise_chunks::catalog_backup`).
//! Names sort by time. Taken by the region's leader every
//! `[catalog] backup_every_hours`, or by `reprise catalog backup`; the
//! newest `backups_kept` of this catalog stay. The body is JSON:
//! `{taken_at, catalog_id, host, dump}`, `dump` being the catalog's.

use crate::app::App;
use chrono::{DateTime, Utc};
use reprise_catalog::Restored;
use reprise_core::model::CatalogBackup;
use reprise_core::{Error, ErrorKind, Result};
use serde_json::json;

const PREFIX: &str = "catalog-backups";

fn taken_at(name: &str) -> Option<DateTime<Utc>> {
    let stamp = name.split('-').next()?;
    chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%SZ")
        .ok()
        .map(|t| t.and_utc())
}

/// Back the catalog up now; the backup's name.
pub async fn take(app: &App) -> Result<String> {
    let region = app.region().await?;
    let id = app.catalog.identity()?;
    let dump = app.catalog.dump()?;
    let now = Utc::now();
    let name = format!("{}-{}", now.format("%Y%m%dT%H%M%SZ"), id.catalog_id);
    let body = json!({
        "taken_at": now,
        "catalog_id": id.catalog_id,
        "host": app.host_name(),
        "dump": dump,
    });
    let json = serde_json::to_vec(&body).expect("JSON serialises");
    let object = reprise_chunks::catalog_backup::encode(&json, &region.keys)?;
    region
        .store
        .put(&format!("{PREFIX}/{name}"), object)
        .await?;
    // This catalog's oldest beyond what is kept.
    let mine: Vec<CatalogBackup> = list(app)
        .await?
        .into_iter()
        .filter(|b| b.name.ends_with(&id.catalog_id.to_string()))
        .collect();
    let kept = app.config.catalog.backups_kept.max(1) as usize;
    for old in mine.iter().skip(kept) {
        region
            .store
            .delete(&format!("{PREFIX}/{}", old.name))
            .await?;
    }
    tracing::info!(
        name,
        bytes = json.len(),
        "catalog backed up into the region's store"
    );
    Ok(name)
}

/// Every catalog backup in the store, newest first.
pub async fn list(app: &App) -> Result<Vec<CatalogBackup>> {
    let region = app.region().await?;
    let mut out: Vec<CatalogBackup> = region
        .store
        .list(PREFIX)
        .await?
        .into_iter()
        .filter_map(|(key, size)| {
            let name = key.rsplit('/').next()?.to_string();
            Some(CatalogBackup {
                taken_at: taken_at(&name),
                name,
                size_bytes: size,
            })
        })
        .collect();
    out.sort_by(|a, b| b.name.cmp(&a.name));
    Ok(out)
}

/// Restore the named backup into this catalog; without a name, the
/// newest of the catalog the store is bound to (the lost one), else the
/// newest of another catalog than this one. The backup's name and what
/// was added.
pub async fn restore(app: &App, name: Option<&str>) -> Result<(String, Restored)> {
    let region = app.region().await?;
    let all = list(app).await?;
    let mine = app.catalog.identity()?.catalog_id.to_string();
    let bound = reprise_backup::binding::read(region)
        .await?
        .map(|b| b.catalog_id.to_string());
    let of = |b: &CatalogBackup, catalog: &str| b.name.ends_with(catalog);
    let chosen = match name {
        Some(n) => all.into_iter().find(|b| b.name == n),
        None => match bound.filter(|c| *c != mine) {
            Some(lost) => all.into_iter().find(|b| of(b, &lost)),
            None => all.into_iter().find(|b| !of(b, &mine)),
        },
    }
    .ok_or_else(|| {
        Error::new(
            ErrorKind::NotFound,
            "backup_not_found",
            match name {
                Some(n) => format!("no catalog backup named '{n}' in the region's store"),
                None => "the region's store holds no catalog backup".to_string(),
            },
        )
    })?;
    let object = region
        .store
        .get(
            &format!("{PREFIX}/{}", chosen.name),
            reprise_chunks::catalog_backup::MAX_BODY + 64,
        )
        .await?;
    let json = reprise_chunks::catalog_backup::decode(&object, &region.keys)?;
    let body: serde_json::Value = serde_json::from_slice(&json).map_err(|e| {
        Error::invalid(
            "backup_invalid",
            format!("catalog backup {}: {e}", chosen.name),
        )
    })?;
    let restored = app.catalog.restore_dump(&body["dump"])?;
    Ok((chosen.name, restored))
}
