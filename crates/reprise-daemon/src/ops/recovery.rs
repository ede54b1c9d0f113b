//! The region's store as a record of its own: whose each stored snapshot
//! and template is (sealed into its manifest, [`owner`]), the catalog
//! rebuilt from it ([`recover`]), and the orphans an admin decides to
//! forget ([`forget_orphans`]).
//!
//! Invariants:
//! - A recover only adds: rows the catalog lacks, from manifests that
//!   open under the region's key (so nobody without the secret can plant
//!   a snapshot in an account). It never deletes anything from the store.
//! - It reads the catalog's rows before it lists the store: a row that
//!   was BackedUp then had its manifest written earlier, so a row whose
//!   manifest is missing from the listing really has lost its objects.
//! - It binds the store to this catalog last, once every object is in:
//!   a recover cut short leaves sweeps refused, and runs again.

use crate::app::App;
use crate::jobs::{self, JobCtx};
use reprise_backup::binding;
use reprise_catalog::RecoveredSnapshot;
use reprise_chunks::manifest::{Owner, StoredKind};
use reprise_chunks::{Index, Manifest};
use reprise_core::lifecycle::snapshot;
use reprise_core::model::*;
use reprise_core::{Error, Result};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use uuid::Uuid;

/// Whose a stored snapshot or template is, for its manifest: `account`,
/// as this catalog knows it, and what `fill` adds.
pub(crate) fn owner(
    app: &App,
    account: Uuid,
    kind: StoredKind,
    fill: impl FnOnce(&mut Owner),
) -> Result<Owner> {
    let a = app.catalog.account(&account.to_string())?;
    let mut owner = Owner {
        kind,
        account_id: a.id,
        account_name: a.name,
        admin: a.admin,
        instance_id: None,
        instance_name: None,
        policy_id: None,
        source_snapshot_id: None,
        source: None,
        catalog_id: app.catalog.identity()?.catalog_id,
    };
    fill(&mut owner);
    Ok(owner)
}

/// Rebuild the catalog from the store, as a job (admin).
pub fn recover(app: &Arc<App>, account: &Account, req: RecoverRegion) -> Result<Job> {
    super::guards::require_admin(account, "recover the catalog from the region's store")?;
    let app2 = app.clone();
    jobs::spawn(
        app,
        account.id,
        "region.recover",
        jobs::REGION,
        0,
        move |ctx| async move { run_recover(&app2, &ctx, req.dry_run).await },
    )
}

/// What the store holds of one object the catalog lacks.
enum Found {
    Whole(Box<Manifest>, Index),
    /// No manifest: the backup never ended.
    Absent,
    /// A manifest that does not open, or whose index does not.
    Unreadable(String),
}

async fn read_stored(app: &App, id: Uuid) -> Result<Found> {
    let region = app.region().await?;
    let m = match region.manifest(id).await {
        Ok(m) => m,
        Err(e) if e.kind == reprise_core::ErrorKind::NotFound => return Ok(Found::Absent),
        Err(e) if e.kind.is_retryable() => return Err(e),
        Err(e) => return Ok(Found::Unreadable(e.message)),
    };
    match region.index(&m).await {
        Ok(index) => Ok(Found::Whole(Box::new(m), index)),
        Err(e) if e.kind.is_retryable() => Err(e),
        Err(e) => Ok(Found::Unreadable(e.message)),
    }
}

/// A snapshot or template whole in the store (its manifest and pinned
/// index read), `None` when it has no manifest (its backup never ended).
/// One whose manifest is there but does not open is an error: what the
/// store holds of it must not be taken for nothing and removed.
pub(crate) async fn whole_in_store(app: &App, id: Uuid) -> Result<Option<(Manifest, Index)>> {
    match read_stored(app, id).await? {
        Found::Whole(m, index) => Ok(Some((*m, index))),
        Found::Absent => Ok(None),
        Found::Unreadable(why) => Err(Error::new(
            reprise_core::ErrorKind::Corrupt,
            "object_corrupt",
            format!("{id}'s manifest is in the store but cannot be read: {why}"),
        )),
    }
}

/// What a recover found and did.
#[derive(Default)]
struct Tally {
    snapshots: u64,
    templates: u64,
    accounts: u64,
    without_owner: u64,
    unreadable: u64,
    lost: u64,
}

async fn run_recover(app: &App, ctx: &JobCtx, dry_run: bool) -> Result<()> {
    // No sweep or forgetting of this daemon runs meanwhile.
    let _one_at_a_time = app.gc_running.lock().await;
    let started = std::time::Instant::now();
    let would = if dry_run { "would add" } else { "added" };
    let region = app.region().await?;
    // The rows first, then the listing (see the module's invariants).
    let complete: Vec<Snapshot> = app
        .catalog
        .list_snapshots(None)?
        .into_iter()
        .filter(|s| {
            s.state == SnapshotState::BackedUp
                || (matches!(s.state, SnapshotState::Error | SnapshotState::Deleted)
                    && s.completed_at.is_some())
        })
        .collect();
    let templates = app.catalog.all_templates()?;
    let known = app.catalog.stored_ids()?;
    let in_store: BTreeSet<Uuid> = region
        .store
        .list("snapshots")
        .await?
        .into_iter()
        .filter(|(key, _)| key.ends_with("/manifest"))
        .filter_map(|(key, _)| {
            key.split('/')
                .nth(1)
                .and_then(|id| Uuid::parse_str(id).ok())
        })
        .collect();
    let missing: Vec<Uuid> = in_store
        .iter()
        .filter(|id| !known.contains(id))
        .copied()
        .collect();
    ctx.log(format!(
        "the region's store holds {} snapshots and templates; this catalog lacks {}",
        in_store.len(),
        missing.len()
    ));
    // Manifests and indexes fetched eight at a time, recorded oldest first.
    use futures::StreamExt;
    let fetched: Vec<(Uuid, Result<Found>)> = futures::stream::iter(missing.iter().copied())
        .map(|id| async move { (id, read_stored(app, id).await) })
        .buffer_unordered(8)
        .collect()
        .await;
    let mut found = Vec::with_capacity(fetched.len());
    for (id, f) in fetched {
        found.push((id, f?));
    }
    found.sort_by_key(|(id, f)| match f {
        Found::Whole(m, _) => (Some(m.created_at), *id),
        Found::Absent | Found::Unreadable(_) => (None, *id),
    });
    let mut t = Tally::default();
    let mut accounts: HashMap<Uuid, (Uuid, String)> = HashMap::new();
    let mut volumes_gone: BTreeSet<(String, Uuid)> = BTreeSet::new();
    let total = found.len() as u64;
    for (n, (id, f)) in found.into_iter().enumerate() {
        ctx.progress(n as u64, total);
        let (m, index) = match f {
            Found::Whole(m, index) => (m, index),
            // Listed a moment ago, gone now (a purge elsewhere): nothing
            // to bring back.
            Found::Absent => continue,
            Found::Unreadable(why) => {
                t.unreadable += 1;
                ctx.log(format!(
                    "{id}: cannot be read ({why}): left in the store, kept by every sweep"
                ));
                continue;
            }
        };
        let Some(owner) = m.owner.clone() else {
            t.without_owner += 1;
            ctx.log(format!(
                "snapshot '{}' ({id}) of volume '{}': written before manifests named their owner (2026-12-07), so its account is unknown: left in the store, kept by every sweep",
                m.name, m.volume_name
            ));
            continue;
        };
        let (account_id, account) = match accounts.get(&owner.account_id) {
            Some(known) => known.clone(),
            None => {
                let known = recover_account(app, ctx, &owner, dry_run, &mut t)?;
                accounts.insert(owner.account_id, known.clone());
                known
            }
        };
        let owner = Owner {
            account_id,
            ..owner
        };
        let chunks: Vec<[u8; 32]> = index.distinct().into_iter().map(|c| c.0).collect();
        match owner.kind {
            StoredKind::Snapshot => {
                if m.volume_id != Uuid::nil()
                    && app.catalog.list_volumes_by_id(&[m.volume_id])?.is_empty()
                {
                    volumes_gone.insert((m.volume_name.clone(), m.volume_id));
                }
                let row = recovered_snapshot(&m, &owner, &index, chunks);
                if !dry_run && !app.catalog.recover_snapshot(&row)? {
                    continue;
                }
                t.snapshots += 1;
                ctx.log(format!(
                    "{would} snapshot '{}' ({id}) of volume '{}' in zone {}, account '{account}', taken {}",
                    m.name,
                    m.volume_name,
                    m.zone,
                    m.created_at.format("%F %T UTC")
                ));
            }
            StoredKind::Template => {
                let row = Template {
                    id,
                    name: m.name.clone(),
                    account_id: owner.account_id,
                    source_snapshot_id: owner.source_snapshot_id,
                    source_snapshot: owner.source.clone().unwrap_or_default(),
                    size_bytes: m.volume_size,
                    chunk_count: m.chunk_count,
                    created_at: m.created_at,
                    purge_after: None,
                };
                if !dry_run && !app.catalog.recover_template(&row, &chunks)? {
                    continue;
                }
                t.templates += 1;
                ctx.log(format!(
                    "{would} template '{}' ({id}), account '{account}'",
                    m.name
                ));
            }
        }
    }
    for (name, id) in &volumes_gone {
        ctx.log(format!(
            "volume '{name}' ({id}) is not in this catalog: its snapshots are listed under its name, and restore into new volumes"
        ));
    }
    // Rows whose objects the store no longer has — only if this is the
    // store they were written to: a catalog of another region (the wrong
    // bucket named) keeps its rows as they are.
    let same_region = app
        .catalog
        .identity()?
        .region_id
        .is_none_or(|r| r == region.id);
    if !same_region {
        ctx.log("this catalog's rows were written to another region's store: none is marked lost or dropped for being missing here");
    }
    let lost_snapshots = complete
        .iter()
        .filter(|s| same_region && !in_store.contains(&s.id));
    for s in lost_snapshots {
        t.lost += 1;
        let why = "its objects are not in the region's store (a recover found no manifest): it cannot be restored";
        ctx.log(format!("snapshot '{}' ({}): {why}", s.name, s.id));
        if dry_run {
            continue;
        }
        // A deleted one whose objects are gone was purged, in the store's
        // history: so it is here.
        if s.state == SnapshotState::Deleted {
            app.catalog.remove_snapshot(s.id)?;
        } else {
            app.catalog
                .settle_snapshot(s.id, &snapshot::DAMAGED, Some(why))?;
        }
    }
    for tpl in templates
        .iter()
        .filter(|t| same_region && !in_store.contains(&t.id))
    {
        t.lost += 1;
        ctx.log(format!(
            "template '{}' ({}): its objects are not in the region's store: it cannot be deployed",
            tpl.name, tpl.id
        ));
    }
    if !dry_run {
        let found = binding::read(region).await?;
        let me = crate::binding::side(app)?;
        let generation = me.generation.max(found.map_or(0, |b| b.generation)) + 1;
        let id = app.catalog.recovered(region.id, generation)?;
        let side = binding::CatalogSide {
            catalog_id: id.catalog_id,
            region_id: id.region_id,
            generation: id.generation,
            behind: None,
        };
        binding::take(region, &side, app.host_name()).await?;
        ctx.log(format!(
            "the region's store is bound to this catalog ({}) at generation {}: sweeps run again",
            id.catalog_id, id.generation
        ));
    }
    ctx.progress(total, total);
    ctx.log(format!(
        "{}: {} snapshots and {} templates {} ({} accounts re-created), {} without a recorded owner, {} unreadable, {} rows whose objects are gone; {} ms",
        if dry_run { "dry run" } else { "recovered" },
        t.snapshots,
        t.templates,
        if dry_run { "to add" } else { "added" },
        t.accounts,
        t.without_owner,
        t.unreadable,
        t.lost,
        started.elapsed().as_millis()
    ));
    Ok(())
}

/// The account of `owner` (id and name): this catalog's, its admin for
/// the admin's, or re-created (without a key).
fn recover_account(
    app: &App,
    ctx: &JobCtx,
    owner: &Owner,
    dry_run: bool,
    t: &mut Tally,
) -> Result<(Uuid, String)> {
    if let Ok(a) = app.catalog.account(&owner.account_id.to_string()) {
        return Ok((a.id, a.name));
    }
    if owner.admin {
        let admin = app.catalog.list_accounts()?.into_iter().find(|a| a.admin);
        if let Some(a) = admin {
            return Ok((a.id, a.name));
        }
    }
    t.accounts += 1;
    let name = if dry_run {
        owner.account_name.clone()
    } else {
        let plan = app.config.default_plan.as_deref();
        app.catalog
            .recover_account(owner.account_id, &owner.account_name, plan)?
            .unwrap_or_else(|| owner.account_name.clone())
    };
    ctx.log(format!(
        "{} account '{name}' ({}): it has no API key until the admin makes one (`reprise account key create default --account {name}`)",
        if dry_run { "would re-create" } else { "re-created" },
        owner.account_id
    ));
    Ok((owner.account_id, name))
}

fn recovered_snapshot(
    m: &Manifest,
    owner: &Owner,
    index: &Index,
    chunks: Vec<[u8; 32]>,
) -> RecoveredSnapshot {
    RecoveredSnapshot {
        snapshot: Snapshot {
            id: m.snapshot_id,
            name: m.name.clone(),
            account_id: owner.account_id,
            volume_id: m.volume_id,
            volume: m.volume_name.clone(),
            zone: m.zone.clone(),
            state: SnapshotState::BackedUp,
            size_bytes: m.volume_size,
            consistency: m.consistency.clone(),
            base_id: m.base_snapshot_id,
            progress_done: 0,
            progress_total: 0,
            written_bytes: Some(m.written_bytes),
            stored_bytes: Some(m.stored_bytes),
            // What it added to the store would say what other accounts
            // hold; what it added to its own is not known here.
            new_bytes: None,
            read_bytes: None,
            chunk_count: Some(m.chunk_count),
            dedup_ratio: None,
            error: None,
            policy_id: owner.policy_id,
            expires_at: None,
            created_at: m.created_at,
            completed_at: Some(m.created_at),
            verified_at: None,
            protected: false,
            deleted_at: None,
            purge_after: None,
        },
        positions: index.entries.len() as u64,
        chunks,
    }
}

/// Forget the orphans older than `req.older_than`, as a job (admin).
pub fn forget_orphans(app: &Arc<App>, account: &Account, req: ForgetOrphans) -> Result<Job> {
    super::guards::require_admin(account, "forget what the region's store holds")?;
    let age = reprise_core::age::parse_age(&req.older_than)?;
    let app2 = app.clone();
    jobs::spawn(
        app,
        account.id,
        "store.forget_orphans",
        jobs::REGION,
        1,
        move |ctx| async move {
            let _one_at_a_time = app2.gc_running.lock().await;
            // Orphans of a catalog behind the store are its own newer
            // snapshots: recover them, never forget them.
            crate::binding::may_sweep(&app2).await?;
            let made_before = chrono::Utc::now() - age;
            let region = app2.region().await?;
            let forgotten = reprise_backup::forget_orphans(
                region,
                &app2.refs,
                || crate::gc::live(&app2),
                made_before,
            )
            .await?;
            for (id, manifest) in &forgotten {
                ctx.log(match manifest {
                    Some(m) => format!(
                        "forgot {} '{}' ({id}) of volume '{}', taken {}",
                        match m.owner.as_ref().map(|o| o.kind) {
                            Some(StoredKind::Template) => "template",
                            _ => "snapshot",
                        },
                        m.name,
                        m.volume_name,
                        m.created_at.format("%F %T UTC")
                    ),
                    None => format!("forgot {id}, whose manifest could not be read"),
                });
            }
            ctx.log(format!(
                "{} orphans made before {} forgotten; their chunks go at the next garbage collection",
                forgotten.len(),
                made_before.format("%F %T UTC")
            ));
            app2.request_gc();
            ctx.progress(1, 1);
            Ok(())
        },
    )
}

/// Back the catalog's own rows up into the region's store, as a job
/// (admin).
pub fn backup_catalog(app: &Arc<App>, account: &Account) -> Result<Job> {
    super::guards::require_admin(account, "back the catalog up")?;
    let app2 = app.clone();
    jobs::spawn(
        app,
        account.id,
        "catalog.backup",
        jobs::REGION,
        1,
        move |ctx| async move {
            let name = crate::catalog_backup::take(&app2).await?;
            ctx.log(format!(
                "catalog backed up into the region's store as '{name}'"
            ));
            ctx.progress(1, 1);
            Ok(())
        },
    )
}

/// The catalog backups in the region's store, newest first (admin).
pub async fn list_catalog_backups(app: &App, account: &Account) -> Result<Vec<CatalogBackup>> {
    super::guards::require_admin(account, "list the catalog's backups")?;
    crate::catalog_backup::list(app).await
}

/// Restore the catalog's own rows from a backup, as a job (admin); a
/// recover then brings what came after it.
pub fn restore_catalog(app: &Arc<App>, account: &Account, req: RestoreCatalog) -> Result<Job> {
    super::guards::require_admin(account, "restore the catalog")?;
    let app2 = app.clone();
    jobs::spawn(
        app,
        account.id,
        "catalog.restore",
        jobs::REGION,
        1,
        move |ctx| async move {
            let (name, restored) =
                crate::catalog_backup::restore(&app2, req.name.as_deref()).await?;
            for (table, added, left) in &restored.tables {
                ctx.log(format!("{table}: {added} rows restored, {left} left out (already here, or this catalog's own)"));
            }
            ctx.log(format!(
                "catalog restored from '{name}'; now run `reprise region recover` for the snapshots and templates (and those made after the backup)"
            ));
            ctx.progress(1, 1);
            Ok(())
        },
    )
}
