//! Templates (golden images): a volume's content kept in the region's store
//! from a snapshot, from which instances are deployed.
//!
//! A template is stored like a snapshot — an index and a manifest under
//! `snapshots/<template id>/` — and references the snapshot's chunks, so
//! making one copies no data. Its references live in `template_chunks`;
//! garbage collection keeps them, so deleting the snapshot later leaves
//! the template whole. It holds the chunks (see `reprise_backup::gc`) from
//! before it checks its snapshot until its references are recorded.

use crate::app::App;
use crate::jobs::{self, Target};
use reprise_backup::backup as engine;
use reprise_catalog::now;
use reprise_core::model::*;
use reprise_core::{Error, Result};
use std::sync::Arc;
use uuid::Uuid;

pub async fn create(app: &App, account: &Account, req: CreateTemplate) -> Result<Template> {
    reprise_core::name::validate_name("template", &req.name)?;
    if app.catalog.template(account.id, &req.name).is_ok() {
        return Err(Error::conflict(
            "name_taken",
            format!("a template named '{}' already exists", req.name),
        ));
    }
    let s = app.catalog.snapshot(account.id, &req.snapshot)?;
    let not_ready = |s: &Snapshot| {
        Error::conflict(
            "snapshot_busy",
            format!(
                "snapshot '{}' is {}: only a BackedUp snapshot makes a template",
                s.name, s.state
            ),
        )
    };
    if s.state != SnapshotState::BackedUp {
        return Err(not_ready(&s));
    }
    let manifest = app.region.manifest(s.id).await?;
    let index = app.region.index(&manifest).await?;
    let distinct = index.distinct();
    let _hold = app.refs.hold(distinct.iter().copied()).await;
    let s = app.catalog.snapshot_by_id(s.id)?;
    if s.state != SnapshotState::BackedUp {
        return Err(not_ready(&s));
    }
    let t = Template {
        id: Uuid::new_v4(),
        name: req.name.clone(),
        account_id: account.id,
        source_snapshot_id: Some(s.id),
        source_snapshot: s.name.clone(),
        size_bytes: s.size_bytes,
        chunk_count: distinct.len() as u64,
        created_at: now(),
    };
    let names: Vec<[u8; 32]> = distinct.iter().map(|n| n.0).collect();
    app.catalog.insert_template(&t, &names)?;
    let mut copy = manifest.clone();
    copy.snapshot_id = t.id;
    copy.name = t.name.clone();
    if let Err(e) = engine::commit(&app.region, &index, &mut copy).await {
        let _ = engine::remove(&app.region, t.id).await;
        app.catalog.remove_template(t.id)?;
        return Err(e);
    }
    tracing::info!(template = %t.id, name = t.name, snapshot = s.name, "template created");
    app.catalog.template(account.id, &t.id.to_string())
}

pub fn list(app: &App, account: &Account) -> Result<Vec<Template>> {
    app.catalog.list_templates(account.id)
}

pub fn show(app: &App, account: &Account, reference: &str) -> Result<Template> {
    app.catalog.template(account.id, reference)
}

/// Delete a template: its objects, its row, then the chunks nothing else
/// references. Instances deployed from it keep their volumes.
pub fn delete(app: &Arc<App>, account: &Account, reference: &str) -> Result<Job> {
    let t = app.catalog.template(account.id, reference)?;
    let app2 = app.clone();
    let name = t.name.clone();
    jobs::spawn(
        app,
        account.id,
        "template.delete",
        Target {
            kind: "template",
            id: t.id,
            name: &name,
        },
        2,
        move |ctx| async move {
            engine::remove(&app2.region, t.id).await?;
            app2.catalog.remove_template(t.id)?;
            ctx.log(format!("template '{}' deleted", t.name));
            ctx.progress(1, 2);
            let r = super::snapshots::collect_garbage(&app2).await?;
            ctx.log(format!(
                "garbage collection: {} chunks ({} bytes) no longer referenced were removed",
                r.chunks_deleted, r.bytes_freed
            ));
            ctx.progress(2, 2);
            Ok(())
        },
    )
}
