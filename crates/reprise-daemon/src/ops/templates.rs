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

/// Resource limits for `qemu-img` on an untrusted image: address space and
/// CPU time, so a crafted image (huge tables, endless chains) cannot take
/// the host down; the output file is capped too.
const LIMIT_AS: u64 = 2 << 30;
const LIMIT_CPU_SECS: u64 = 3600;

async fn limited_qemu_img(app: &App, args: &[&std::ffi::OsStr], max_output: u64) -> Result<()> {
    let mut all: Vec<std::ffi::OsString> = vec![
        format!("--as={LIMIT_AS}").into(),
        format!("--cpu={LIMIT_CPU_SECS}").into(),
        format!("--fsize={max_output}").into(),
        "--".into(),
        app.config.qemu.img.clone().into(),
    ];
    all.extend(args.iter().map(|a| a.to_os_string()));
    reprise_qemu::img::run(std::path::Path::new("prlimit"), all, "image_import_failed")
        .await
        .map(|_| ())
}

/// What an image file is, judged from its own bytes before any tool reads
/// it: qcow2 (its header checked by our parser: no backing file, no
/// external data file, no encryption, no unknown incompatible feature) or
/// raw. Returns the format and the virtual size.
fn judge_image(path: &str) -> Result<(&'static str, u64)> {
    use std::io::Read;
    let refused =
        |why: String| Error::invalid("image_unsafe", format!("image '{path}' is refused: {why}"));
    let mut f = std::fs::File::open(path)
        .map_err(|e| Error::invalid("file_not_found", format!("cannot open '{path}': {e}")))?;
    let len = f
        .metadata()
        .map_err(|e| Error::invalid("file_not_found", format!("'{path}': {e}")))?
        .len();
    let mut head = vec![0u8; 4096];
    let n = f.read(&mut head).unwrap_or(0);
    head.truncate(n);
    let (format, size) = if head.starts_with(&reprise_qcow2::header::MAGIC.to_be_bytes()) {
        let h = reprise_qcow2::Header::parse(&head).map_err(|e| refused(e.message))?;
        ("qcow2", h.size)
    } else {
        ("raw", len)
    };
    if size == 0 || size > super::MAX_VOLUME_SIZE {
        return Err(refused(format!(
            "a virtual size of {size} bytes (1 byte to {} allowed)",
            super::MAX_VOLUME_SIZE
        )));
    }
    Ok((format, size))
}

/// Import an image file as a template: checked, converted under resource
/// limits, then stored like a snapshot in the region.
pub fn import(app: &Arc<App>, account: &Account, req: ImportTemplate) -> Result<Job> {
    reprise_core::name::validate_name("template", &req.name)?;
    if app.catalog.template(account.id, &req.name).is_ok() {
        return Err(Error::conflict(
            "name_taken",
            format!("a template named '{}' already exists", req.name),
        ));
    }
    super::instances::host_file("file", &req.file)?;
    let (format, size) = judge_image(&req.file)?;
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
            let dir = app2.config.data_dir.join("imports");
            std::fs::create_dir_all(&dir).map_err(|e| {
                Error::unavailable("io_error", format!("cannot create {}: {e}", dir.display()))
            })?;
            let tmp = dir.join(format!("{id}.qcow2"));
            let result = async {
                ctx.log(format!(
                    "converting {} ({format}) under resource limits",
                    req.file
                ));
                limited_qemu_img(
                    &app2,
                    &[
                        "convert".as_ref(),
                        "-q".as_ref(),
                        "-f".as_ref(),
                        format.as_ref(),
                        "-O".as_ref(),
                        "qcow2".as_ref(),
                        "-o".as_ref(),
                        "cluster_size=65536".as_ref(),
                        req.file.as_ref(),
                        tmp.as_os_str(),
                    ],
                    size + (1 << 30),
                )
                .await?;
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
                    source_snapshot: format!("image:{}", req.file),
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
        2,
        move |ctx| async move {
            engine::remove(app2.region().await?, t.id).await?;
            app2.catalog.remove_template(t.id)?;
            ctx.log(format!("template '{}' deleted", t.name));
            ctx.progress(1, 2);
            super::snapshots::collect_and_log(&app2, &ctx).await?;
            ctx.progress(2, 2);
            Ok(())
        },
    )
}
