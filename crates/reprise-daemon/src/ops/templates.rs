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
    let manifest = app.region().await?.manifest(s.id).await?;
    let index = app.region().await?.index(&manifest).await?;
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
    if let Err(e) = engine::commit(app.region().await?, &index, &mut copy).await {
        let _ = engine::remove(app.region().await?, t.id).await;
        app.catalog.remove_template(t.id)?;
        return Err(e);
    }
    tracing::info!(template = %t.id, name = t.name, snapshot = s.name, "template created");
    app.catalog.template(account.id, &t.id.to_string())
}

/// Import an image as a template through the hardened import path (see
/// [`crate::import`]): opened and judged now, then copied privately,
/// converted under resource limits and stored like a snapshot.
pub fn import(app: &Arc<App>, account: &Account, req: ImportTemplate) -> Result<Job> {
    reprise_core::name::validate_name("template", &req.name)?;
    if app.catalog.template(account.id, &req.name).is_ok() {
        return Err(Error::conflict(
            "name_taken",
            format!("a template named '{}' already exists", req.name),
        ));
    }
    let opened = crate::import::open(
        app,
        account,
        "image",
        req.upload.as_deref(),
        req.file.as_deref(),
    )?
    .ok_or_else(|| {
        Error::invalid(
            "image_missing",
            "give the image to import: an upload's id (or, admin only, a file below import_dirs)",
        )
    })?;
    let judged = crate::import::judge(
        opened.file(),
        &opened.label,
        app.config
            .images
            .max_virtual_size
            .min(super::MAX_VOLUME_SIZE),
    )?;
    let id = Uuid::new_v4();
    let app2 = app.clone();
    let account_id = account.id;
    let name = req.name.clone();
    jobs::spawn(
        app,
        account.id,
        "template.import",
        Target {
            kind: "template",
            id,
            name: &name,
        },
        0,
        move |ctx| async move {
            let tmp = crate::import::staging_path(&app2, id, "qcow2");
            let result = async {
                let source = opened.label.clone();
                ctx.log(format!(
                    "converting {source} ({}) under resource limits",
                    judged.format
                ));
                crate::import::import_image(&app2, opened, judged, id, &tmp).await?;
                let bin = app2.config.binaries();
                bin.snapshot(reprise_qemu::img::SnapshotAction::Create, &tmp, "import")
                    .await?;
                ctx.log("storing it in the region");
                let done = engine::backup(
                    app2.region().await?,
                    &app2.refs,
                    tmp.clone(),
                    "import",
                    None,
                    |d, t| ctx.progress(d, t),
                )
                .await?;
                let distinct = done.index.distinct();
                let t = Template {
                    id,
                    name: req.name.clone(),
                    account_id,
                    source_snapshot_id: None,
                    source_snapshot: source,
                    size_bytes: done.index.volume_size,
                    chunk_count: distinct.len() as u64,
                    created_at: now(),
                };
                let names: Vec<[u8; 32]> = distinct.iter().map(|n| n.0).collect();
                app2.catalog.insert_template(&t, &names)?;
                let mut manifest = reprise_chunks::Manifest {
                    snapshot_id: id,
                    name: t.name.clone(),
                    volume_id: Uuid::nil(),
                    volume_name: t.name.clone(),
                    zone: String::new(),
                    volume_size: done.index.volume_size,
                    chunk_size: done.index.chunk_size,
                    base_snapshot_id: None,
                    consistency: "filesystem".into(),
                    created_at: t.created_at,
                    index_blake3: String::new(),
                    chunk_count: t.chunk_count,
                    written_bytes: done.index.entries.len() as u64 * done.index.chunk_size as u64,
                    stored_bytes: 0,
                    new_bytes: done.new_bytes,
                };
                if let Err(e) =
                    engine::commit(app2.region().await?, &done.index, &mut manifest).await
                {
                    app2.catalog.remove_template(id)?;
                    let _ = engine::remove(app2.region().await?, id).await;
                    return Err(e);
                }
                drop(done.hold);
                ctx.log(format!(
                    "template '{}' imported: {} chunks, {} bytes new in the store",
                    t.name, t.chunk_count, done.new_bytes
                ));
                Ok(())
            }
            .await;
            let _ = std::fs::remove_file(&tmp);
            result
        },
    )
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
        1,
        move |ctx| async move {
            engine::remove(app2.region().await?, t.id).await?;
            app2.catalog.remove_template(t.id)?;
            ctx.log(format!(
                "template '{}' deleted; the space its chunks alone held is reclaimed by the next garbage collection",
                t.name
            ));
            app2.request_gc();
            ctx.progress(1, 1);
            Ok(())
        },
    )
}
