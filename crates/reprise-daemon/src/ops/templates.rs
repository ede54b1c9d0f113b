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
use reprise_backup::snapshot::{self as transaction, Cut, Origin, References};
use reprise_catalog::now;
use reprise_chunks::manifest::StoredKind;
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
    let id = Uuid::new_v4();
    // Checked again once the chunks are held: a snapshot deleted meanwhile
    // makes no template.
    let record = |r: &References| {
        let s = app.catalog.snapshot_by_id(s.id)?;
        if s.state != SnapshotState::BackedUp {
            return Err(not_ready(&s));
        }
        let t = Template {
            id,
            name: req.name.clone(),
            account_id: account.id,
            source_snapshot_id: Some(s.id),
            source_snapshot: s.name.clone(),
            size_bytes: s.size_bytes,
            chunk_count: r.chunks.len() as u64,
            created_at: now(),
            purge_after: None,
        };
        let names: Vec<[u8; 32]> = r.chunks.iter().map(|n| n.0).collect();
        app.catalog.insert_template(&t, &names)?;
        Ok(0)
    };
    let owner = super::recovery::owner(app, account.id, StoredKind::Template, |o| {
        o.source_snapshot_id = Some(s.id);
        o.source = Some(s.name.clone());
    })?;
    crate::binding::may_write(app).await?;
    let region = app.region().await?;
    let copied = transaction::copy(region, &app.refs, s.id, id, &req.name, Some(owner), record);
    if let Err(e) = copied.await {
        app.catalog.remove_template(id)?;
        return Err(e);
    }
    app.catalog.template_ready(id)?;
    crate::binding::recorded(app).await;
    let t = app.catalog.template(account.id, &id.to_string())?;
    tracing::info!(template = %t.id, name = t.name, snapshot = s.name, "template created");
    Ok(t)
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
    const NO_IMAGE: &str =
        "give the image to import: an upload's id (or, admin only, a file below import_dirs)";
    let upload = req.upload.as_deref();
    let (opened, judged) = crate::import::open_image(app, account, upload, req.file.as_deref())?
        .ok_or_else(|| Error::invalid("image_missing", NO_IMAGE))?;
    // What it stores is at most its disk: refused now if that could take
    // the account past its plan's bytes in the store (a small compressed
    // upload may hold a large disk).
    let bound = reprise_core::plan::Demand {
        store_bytes_at_most: judged.virtual_size.max(1),
        ..Default::default()
    };
    app.catalog
        .admit(account.id, Default::default(), &bound, |_| Ok(()))?;
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
                let cut = Cut {
                    image: tmp.clone(),
                    tag: "import".into(),
                    base: None,
                };
                let origin = Origin {
                    snapshot_id: id,
                    name: req.name.clone(),
                    volume_id: Uuid::nil(),
                    volume_name: req.name.clone(),
                    zone: String::new(),
                    consistency: "filesystem".into(),
                    created_at: now(),
                    owner: Some(super::recovery::owner(
                        &app2,
                        account_id,
                        StoredKind::Template,
                        |o| o.source = Some(source.clone()),
                    )?),
                };
                let record = |r: &References| {
                    let t = Template {
                        id,
                        name: req.name.clone(),
                        account_id,
                        source_snapshot_id: None,
                        source_snapshot: source.clone(),
                        size_bytes: r.volume_size,
                        chunk_count: r.chunks.len() as u64,
                        created_at: now(),
                        purge_after: None,
                    };
                    let names: Vec<[u8; 32]> = r.chunks.iter().map(|n| n.0).collect();
                    app2.catalog.insert_template(&t, &names)?;
                    Ok(r.sizes.values().sum())
                };
                crate::binding::may_write(&app2).await?;
                let region = app2.region().await?;
                let progress = |d, t| ctx.progress(d, t);
                let done = transaction::take(region, &app2.refs, cut, origin, record, progress)
                    .await
                    .inspect_err(|_| {
                        let _ = app2.catalog.remove_template(id);
                    })?;
                app2.catalog.template_ready(id)?;
                crate::binding::recorded(&app2).await;
                let t = &done.manifest;
                let own = app2.catalog.bytes_new_to_account(id, account_id, true)?;
                ctx.log(format!(
                    "template '{}' imported: {} chunks, {own} bytes new to the account",
                    t.name, t.chunk_count
                ));
                Ok(())
            }
            .await;
            let _ = std::fs::remove_file(&tmp);
            result
        },
    )
}

/// At startup: a template a crash left Creating is settled by the store.
/// Its manifest there means it was made whole: it is Ready (its
/// references were recorded with its row). Without one it is removed,
/// its objects first: a manifest left without its row would be an orphan.
/// While the store cannot be reached, it stays for the next start.
pub async fn reconcile_at_startup(app: &App) -> Result<()> {
    for id in app.catalog.unfinished_templates()? {
        match super::recovery::whole_in_store(app, id).await {
            Ok(Some(_)) => {
                tracing::warn!(template = %id, "a template was being made when the daemon stopped, and its manifest is in the store: Ready");
                app.catalog.template_ready(id)?;
            }
            Ok(None) => {
                if let Err(e) = engine::remove(app.region().await?, id).await {
                    tracing::warn!(template = %id, "a template cut short stays until the store answers: {e}");
                    continue;
                }
                tracing::warn!(template = %id, "a template was being made when the daemon stopped: removed");
                app.catalog.remove_template(id)?;
            }
            Err(e) => {
                tracing::warn!(template = %id, "a template cut short stays until the store answers: {e}")
            }
        }
    }
    Ok(())
}

/// The account's templates, or its deleted ones still in their undelete
/// window.
pub fn list(app: &App, account: &Account, deleted: bool) -> Result<Vec<Template>> {
    if deleted {
        app.catalog.deleted_templates(account.id)
    } else {
        app.catalog.list_templates(account.id)
    }
}

pub fn show(app: &App, account: &Account, reference: &str) -> Result<Template> {
    app.catalog.template(account.id, reference)
}
