//! `reprise zone`: zones and their primary storage.

use super::{print_json, print_list, Ctx};
use crate::output::{fields, out, size, time};
use clap::Subcommand;
use reprise_core::model::*;
use reprise_core::Result;

#[derive(Subcommand)]
pub(super) enum ZoneCmd {
    /// Create a zone (admin).
    Create {
        name: String,
        /// Its primary storage directory (default DATA_DIR/zones/NAME).
        #[arg(long)]
        storage: Option<String>,
    },
    List,
}

/// `reprise host`: the region's hosts (admin).
#[derive(Subcommand)]
pub(super) enum HostCmd {
    /// Each host's state, zones, what lives on it and its last heartbeat.
    List,
}

pub(super) fn run_host(ctx: &Ctx, cmd: HostCmd) -> Result<()> {
    match cmd {
        HostCmd::List => {
            let hosts = ctx.client.hosts()?;
            print_list(
                ctx,
                &hosts,
                &[
                    "NAME",
                    "STATE",
                    "ZONES",
                    "INSTANCES",
                    "VOLUMES",
                    "ALLOCATED",
                    "HEARTBEAT",
                    "ADDRESS",
                ],
                |h| {
                    let zones = if h.zones.is_empty() {
                        "(all)".to_string()
                    } else {
                        h.zones.join(",")
                    };
                    let name = if h.this_daemon {
                        format!("{} *", h.name)
                    } else {
                        h.name.clone()
                    };
                    vec![
                        name,
                        h.state.to_string(),
                        zones,
                        h.instances.to_string(),
                        h.volumes.to_string(),
                        size(h.volume_bytes),
                        time(&h.last_heartbeat),
                        h.address.clone(),
                    ]
                },
            );
        }
    }
    Ok(())
}

pub(super) fn run(ctx: &Ctx, cmd: ZoneCmd) -> Result<()> {
    let c = &ctx.client;
    match cmd {
        ZoneCmd::Create { name, storage } => {
            let z = c.create_zone(&CreateZone {
                name,
                storage_dir: storage,
            })?;
            show_zone(ctx, &z);
        }
        ZoneCmd::List => {
            let zones = c.zones()?;
            print_list(ctx, &zones, &["NAME", "STORAGE", "CREATED", "ID"], |z| {
                vec![
                    z.name.clone(),
                    z.storage_dir.clone(),
                    time(&z.created_at),
                    z.id.to_string(),
                ]
            });
        }
    }
    Ok(())
}

pub(super) fn show_zone(ctx: &Ctx, z: &Zone) {
    if ctx.json {
        return print_json(z);
    }
    out!(
        "{}",
        fields(&[
            ("id", z.id.to_string()),
            ("name", z.name.clone()),
            ("storage", z.storage_dir.clone()),
            ("created", time(&z.created_at)),
        ])
    );
}
