//! `reprise snapshot` and `reprise gc`: volume snapshots in the region's
//! object store.

use super::jobs::{follow, show_job};
use super::{print_json, print_list, Ctx};
use crate::output::{fields, out, outln, size, time};
use clap::Subcommand;
use reprise_core::model::*;
use reprise_core::Result;

#[derive(Subcommand)]
pub(super) enum SnapshotCmd {
    /// Snapshot a volume into the region's object store: the instant is
    /// cut in milliseconds, then only data changed since the volume's last
    /// snapshot is read and uploaded.
    Create {
        /// The volume, by name or id.
        volume: String,
        /// Generated from the volume name and the UTC time when left out.
        #[arg(long)]
        name: Option<String>,
        /// Freeze the guest's filesystems (`--quiesce` alone: required; or
        /// auto, the default, or none).
        #[arg(long, num_args = 0..=1, default_missing_value = "required")]
        quiesce: Option<String>,
        /// Protect it from deletes, retention and purges from the start.
        #[arg(long)]
        protect: bool,
    },
    /// The account's snapshots; of one volume, zone or policy.
    List {
        #[arg(long)]
        volume: Option<String>,
        #[arg(long)]
        zone: Option<String>,
        #[arg(long)]
        policy: Option<String>,
        /// Snapshots of the volumes attached to this instance.
        #[arg(long)]
        instance: Option<String>,
        /// The deleted ones still in their undelete window, instead.
        #[arg(long)]
        deleted: bool,
    },
    Show {
        snapshot: String,
    },
    /// Delete a snapshot: it stays whole, and `undelete` brings it back,
    /// for the undelete window (7 days unless the plan says otherwise);
    /// then it goes for good, with the chunks nothing else references.
    Delete {
        snapshot: String,
        /// Admin: remove it for good now (deleted or not; any account's by id).
        #[arg(long)]
        purge: bool,
    },
    /// Bring a deleted snapshot back (by id, or by name: the latest deleted).
    Undelete {
        snapshot: String,
    },
    /// Protect a snapshot: no delete, retention or purge removes it until
    /// it is unprotected (the plan caps how many an account protects).
    Protect {
        snapshot: String,
    },
    /// Lift a snapshot's protection.
    Unprotect {
        snapshot: String,
    },
    /// Re-read every chunk of a snapshot and check it.
    Verify {
        snapshot: String,
    },
}

pub(super) fn run(ctx: &Ctx, cmd: SnapshotCmd) -> Result<()> {
    let c = &ctx.client;
    let job = match cmd {
        SnapshotCmd::Create {
            volume,
            name,
            quiesce,
            protect,
        } => c.create_snapshot(&CreateSnapshot {
            volume,
            name,
            quiesce,
            protect,
        })?,
        SnapshotCmd::List {
            volume,
            zone,
            policy,
            instance,
            deleted,
        } => {
            let list = c.snapshots(&SnapshotFilter {
                volume,
                zone,
                policy,
                instance,
                deleted,
            })?;
            print_list(
                ctx,
                &list,
                &[
                    "NAME", "VOLUME", "STATE", "SIZE", "STORED", "NEW", "BASE", "CREATED", "ID",
                ],
                |s| {
                    vec![
                        s.name.clone(),
                        s.volume.clone(),
                        snapshot_state(s),
                        size(s.size_bytes),
                        s.stored_bytes.map(size).unwrap_or_else(|| "-".into()),
                        s.new_bytes.map(size).unwrap_or_else(|| "-".into()),
                        if s.base_id.is_some() {
                            "incremental"
                        } else {
                            "full"
                        }
                        .into(),
                        time(&s.created_at),
                        s.id.to_string(),
                    ]
                },
            );
            return Ok(());
        }
        SnapshotCmd::Show { snapshot } => {
            show_snapshot(ctx, &c.snapshot(&snapshot)?);
            return Ok(());
        }
        SnapshotCmd::Delete { snapshot, purge } => c.delete_snapshot(&snapshot, purge)?,
        SnapshotCmd::Undelete { snapshot } => {
            show_snapshot(ctx, &c.undelete_snapshot(&snapshot)?);
            return Ok(());
        }
        SnapshotCmd::Protect { snapshot } => {
            show_snapshot(ctx, &c.protect_snapshot(&snapshot, true)?);
            return Ok(());
        }
        SnapshotCmd::Unprotect { snapshot } => {
            show_snapshot(ctx, &c.protect_snapshot(&snapshot, false)?);
            return Ok(());
        }
        SnapshotCmd::Verify { snapshot } => c.verify_snapshot(&snapshot)?,
    };
    let (kind, target) = (job.kind.clone(), job.target_id);
    if follow(ctx, job)? {
        if kind == "snapshot.delete" {
            if !ctx.json {
                outln!("deleted");
            }
        } else {
            show_snapshot(ctx, &c.snapshot(&target.to_string())?);
        }
    }
    Ok(())
}

/// The state, with progress while backing up, whether it is protected,
/// and until when a deleted one can come back.
pub(super) fn snapshot_state(s: &Snapshot) -> String {
    let state = match (s.state, &s.purge_after) {
        (SnapshotState::BackingUp, _) if s.progress_total > 0 => format!(
            "{} {:.0}%",
            s.state,
            100.0 * s.progress_done as f64 / s.progress_total as f64
        ),
        (SnapshotState::Deleted, Some(until)) => format!("Deleted (until {})", time(until)),
        _ => s.state.to_string(),
    };
    if s.protected {
        format!("{state}, protected")
    } else {
        state
    }
}

pub(super) fn show_snapshot(ctx: &Ctx, s: &Snapshot) {
    if ctx.json {
        return print_json(s);
    }
    let opt_size = |v: Option<u64>| v.map(size).unwrap_or_else(|| "-".into());
    let mut pairs = vec![
        ("id", s.id.to_string()),
        ("name", s.name.clone()),
        ("volume", format!("{} ({})", s.volume, s.volume_id)),
        ("zone", s.zone.clone()),
        (
            "expires",
            s.expires_at
                .as_ref()
                .map(|t| format!("{} (its policy's retention)", time(t)))
                .unwrap_or_else(|| "-".into()),
        ),
        ("state", snapshot_state(s)),
        ("size", size(s.size_bytes)),
        ("written", opt_size(s.written_bytes)),
        ("stored", opt_size(s.stored_bytes)),
        ("new", opt_size(s.new_bytes)),
        ("read", opt_size(s.read_bytes)),
        (
            "chunks",
            s.chunk_count
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into()),
        ),
        (
            "dedup",
            s.dedup_ratio
                .map(|r| format!("{r:.2}x"))
                .unwrap_or_else(|| "-".into()),
        ),
        (
            "base",
            s.base_id
                .map(|b| format!("{b} (incremental)"))
                .unwrap_or_else(|| "none (full)".into()),
        ),
        ("consistency", s.consistency.clone()),
        ("created", time(&s.created_at)),
        (
            "completed",
            s.completed_at
                .as_ref()
                .map(time)
                .unwrap_or_else(|| "-".into()),
        ),
        (
            "verified",
            s.verified_at
                .as_ref()
                .map(time)
                .unwrap_or_else(|| "-".into()),
        ),
    ];
    if let Some(e) = &s.error {
        pairs.push(("error", e.clone()));
    }
    out!("{}", fields(&pairs));
}

/// `reprise gc`: collect the region's garbage now and show the job.
pub(super) fn collect_garbage(ctx: &Ctx) -> Result<()> {
    let job = ctx.client.collect_garbage()?;
    let id = job.id.to_string();
    if follow(ctx, job)? {
        show_job(ctx, &ctx.client.job(&id)?);
    }
    Ok(())
}
