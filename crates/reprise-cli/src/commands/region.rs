//! `reprise region` and `reprise store`: the region's store as a record
//! of its own, for the admin (rebuild the catalog from it, forget what no
//! catalog knows).

use super::jobs::{follow, show_job};
use super::print_list;
use super::Ctx;
use crate::output::outln;
use crate::output::{size, time};
use clap::Subcommand;
use reprise_core::model::{ForgetOrphans, Job, RecoverRegion, RestoreCatalog};
use reprise_core::{Error, Result};

#[derive(Subcommand)]
pub(super) enum RegionCmd {
    /// Rebuild the catalog from the region's store: every snapshot and
    /// template it holds that the catalog lacks comes back (accounts
    /// re-created without keys), then the store is bound to this catalog.
    /// Safe to run again; run it with --dry-run first.
    Recover {
        /// Only list what would be added.
        #[arg(long)]
        dry_run: bool,
    },
    /// The region's secret.
    #[command(subcommand)]
    Key(RegionKeyCmd),
}

#[derive(Subcommand)]
pub(super) enum RegionKeyCmd {
    /// Print the region's secret, read from the key file on this host (it
    /// never crosses the API), to keep a copy apart from the store:
    /// without it no snapshot of the region can be read, ever.
    Export {
        /// The key file; DATA_DIR/region.key when left out.
        #[arg(long)]
        key_file: Option<std::path::PathBuf>,
    },
}

#[derive(Subcommand)]
pub(super) enum CatalogCmd {
    /// Back the catalog's own rows (accounts and key hashes, plans, zones,
    /// volumes, instances, points, policies, templates) up into the
    /// region's store, encrypted; the leader also does it every
    /// [catalog] backup_every_hours.
    Backup,
    /// The catalog's backups in the region's store, newest first.
    List,
    /// Restore a catalog made anew from a backup (the newest when no name
    /// is given); then `reprise region recover` brings back the snapshots.
    Restore { name: Option<String> },
}

#[derive(Subcommand)]
pub(super) enum StoreCmd {
    /// Remove the snapshots and templates the store holds that the catalog
    /// does not know (orphans), made before the given age; no sweep ever
    /// removes them. Their chunks go at the next garbage collection.
    ForgetOrphans {
        /// Like 30d, 12h or 90m.
        #[arg(long)]
        older_than: String,
    },
}

pub(super) fn region(ctx: &Ctx, cmd: RegionCmd) -> Result<()> {
    match cmd {
        RegionCmd::Key(RegionKeyCmd::Export { key_file }) => {
            let path = key_file.unwrap_or_else(|| super::default_data_dir().join("region.key"));
            let text = std::fs::read_to_string(&path).map_err(|e| {
                Error::invalid(
                    "config_invalid",
                    format!("cannot read the region key {}: {e}", path.display()),
                )
            })?;
            let key = text.trim();
            if key.len() != 64 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Error::invalid(
                    "config_invalid",
                    format!(
                        "{} does not hold a region key (64 hex digits)",
                        path.display()
                    ),
                ));
            }
            outln!("{key}");
            eprintln!(
                "This is the region's secret: keep it apart from the store (a password manager, paper). \
                 To use it again, write it alone into a daemon's region.key (mode 0600) before its first start."
            );
            Ok(())
        }
        RegionCmd::Recover { dry_run } => {
            let job = ctx.client.recover_region(&RecoverRegion { dry_run })?;
            finish(ctx, job)
        }
    }
}

pub(super) fn catalog(ctx: &Ctx, cmd: CatalogCmd) -> Result<()> {
    let c = &ctx.client;
    match cmd {
        CatalogCmd::Backup => finish(ctx, c.backup_catalog()?),
        CatalogCmd::Restore { name } => finish(ctx, c.restore_catalog(&RestoreCatalog { name })?),
        CatalogCmd::List => {
            let list = c.catalog_backups()?;
            print_list(ctx, &list, &["NAME", "SIZE", "TAKEN"], |b| {
                vec![
                    b.name.clone(),
                    size(b.size_bytes),
                    b.taken_at.as_ref().map(time).unwrap_or_else(|| "-".into()),
                ]
            });
            Ok(())
        }
    }
}

pub(super) fn store(ctx: &Ctx, cmd: StoreCmd) -> Result<()> {
    match cmd {
        StoreCmd::ForgetOrphans { older_than } => {
            let job = ctx.client.forget_orphans(&ForgetOrphans { older_than })?;
            finish(ctx, job)
        }
    }
}

/// Wait for the job and show it with its log, which says what it did.
fn finish(ctx: &Ctx, job: Job) -> Result<()> {
    let id = job.id.to_string();
    if follow(ctx, job)? {
        show_job(ctx, &ctx.client.job(&id)?);
    }
    Ok(())
}
