//! `reprise volume`: qcow2 disks in a zone.

use super::jobs::follow;
use super::{print_json, print_list, Ctx};
use crate::output::{fields, opt, out, outln, size, time};
use clap::Subcommand;
use reprise_core::model::*;
use reprise_core::Result;

#[derive(Subcommand)]
pub(super) enum VolumeCmd {
    /// Create a data volume: blank (--size), or with a snapshot's content
    /// (--from-snapshot), in any zone.
    Create {
        name: String,
        /// Like 512M, 10G, 1T.
        #[arg(
            long,
            required_unless_present = "from_snapshot",
            conflicts_with = "from_snapshot"
        )]
        size: Option<String>,
        #[arg(long)]
        from_snapshot: Option<String>,
        #[arg(long)]
        zone: Option<String>,
        /// Admin: the host of the zone that gets it (placement otherwise).
        #[arg(long)]
        host: Option<String>,
    },
    List {
        #[arg(long)]
        zone: Option<String>,
        #[arg(long)]
        instance: Option<String>,
    },
    Show {
        volume: String,
    },
    /// Grow a volume (hot when its instance runs).
    Resize {
        volume: String,
        #[arg(long)]
        size: String,
    },
    Delete {
        volume: String,
    },
    /// Attach a data volume to an instance (hot-plug when it runs).
    Attach {
        volume: String,
        instance: String,
    },
    Detach {
        volume: String,
    },
    /// Put a volume back to a snapshot's content (its instance stopped);
    /// the volume's snapshots stay.
    Revert {
        volume: String,
        #[arg(long)]
        to_snapshot: String,
    },
}

pub(super) fn run(ctx: &Ctx, cmd: VolumeCmd) -> Result<()> {
    let c = &ctx.client;
    let v: Volume = match cmd {
        VolumeCmd::Create {
            name,
            size: Some(size),
            zone,
            host,
            ..
        } => c.create_volume(&CreateVolume {
            name,
            size,
            zone,
            host,
        })?,
        VolumeCmd::Create {
            name,
            from_snapshot,
            zone,
            host,
            ..
        } => {
            let snapshot = from_snapshot.unwrap_or_default();
            let job =
                c.volume_from_snapshot(&snapshot, &VolumeFromSnapshot { name, zone, host })?;
            let id = job.target_id;
            if !follow(ctx, job)? {
                return Ok(());
            }
            c.volume(&id.to_string())?
        }
        VolumeCmd::List { zone, instance } => {
            let vols = c.volumes(zone.as_deref(), instance.as_deref())?;
            print_list(
                ctx,
                &vols,
                &[
                    "NAME", "KIND", "SIZE", "STATE", "ZONE", "INSTANCE", "CREATED", "ID",
                ],
                |v| {
                    vec![
                        v.name.clone(),
                        v.kind.to_string(),
                        size(v.size_bytes),
                        v.state.to_string(),
                        v.zone.clone(),
                        opt(&v.instance),
                        time(&v.created_at),
                        v.id.to_string(),
                    ]
                },
            );
            return Ok(());
        }
        VolumeCmd::Show { volume } => c.volume(&volume)?,
        VolumeCmd::Resize { volume, size } => c.resize_volume(&volume, &ResizeVolume { size })?,
        VolumeCmd::Delete { volume } => {
            c.delete_volume(&volume)?;
            if !ctx.json {
                outln!("volume {volume} deleted");
            }
            return Ok(());
        }
        VolumeCmd::Attach { volume, instance } => {
            c.attach_volume(&volume, &AttachVolume { instance })?
        }
        VolumeCmd::Detach { volume } => c.detach_volume(&volume)?,
        VolumeCmd::Revert {
            volume,
            to_snapshot,
        } => {
            let job = c.revert_volume(
                &volume,
                &RevertVolume {
                    snapshot: to_snapshot,
                },
            )?;
            if !follow(ctx, job)? {
                return Ok(());
            }
            c.volume(&volume)?
        }
    };
    show_volume(ctx, &v);
    Ok(())
}

pub(super) fn show_volume(ctx: &Ctx, v: &Volume) {
    if ctx.json {
        return print_json(v);
    }
    out!(
        "{}",
        fields(&[
            ("id", v.id.to_string()),
            ("name", v.name.clone()),
            ("kind", v.kind.to_string()),
            ("state", v.state.to_string()),
            (
                "size",
                format!("{} ({} bytes)", size(v.size_bytes), v.size_bytes)
            ),
            ("zone", v.zone.clone()),
            ("instance", opt(&v.instance)),
            ("host", v.host.clone()),
            ("path", v.path.clone()),
            ("created", time(&v.created_at)),
        ])
    );
}
