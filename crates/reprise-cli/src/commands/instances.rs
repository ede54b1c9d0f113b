//! `reprise instance`: QEMU/KVM virtual machines.

use super::jobs::follow;
use super::uploads::Files;
use super::{print_json, print_list, Ctx};
use crate::output::{fields, opt, out, outln, size, time};
use clap::{Args, Subcommand};
use reprise_core::model::*;
use reprise_core::Result;

#[derive(Subcommand)]
pub(super) enum InstanceCmd {
    /// Create an instance and start it.
    Create(Box<CreateInstanceArgs>),
    /// Clone an instance for troubleshooting: its volumes snapshotted at
    /// one instant, copied into new volumes (any zone), a new instance
    /// started on them.
    Clone {
        instance: String,
        name: String,
        #[arg(long)]
        zone: Option<String>,
    },
    List,
    /// Show an instance, with whether its guest agent answers.
    Show {
        instance: String,
    },
    Start {
        instance: String,
    },
    /// Power off (ACPI and guest agent), forced after the timeout.
    Stop {
        instance: String,
        /// Do not ask the guest: stop QEMU at once.
        #[arg(long)]
        force: bool,
    },
    Restart {
        instance: String,
    },
    /// Operator settings (admin): enable or disable snapshots, set the plan.
    Set {
        instance: String,
        /// enabled or disabled.
        #[arg(long, value_parser = ["enabled", "disabled"])]
        snapshots: Option<String>,
        /// A plan of the daemon's config; "" removes it.
        #[arg(long)]
        plan: Option<String>,
    },
    /// Delete a stopped instance and its root volume.
    Delete {
        instance: String,
    },
}

#[derive(Args)]
pub(super) struct CreateInstanceArgs {
    name: String,
    #[arg(long)]
    zone: Option<String>,
    /// Admin: the host of the zone it runs on (placement otherwise).
    #[arg(long)]
    host: Option<String>,
    #[arg(long)]
    cpus: Option<u32>,
    /// Like 512M, 2G.
    #[arg(long)]
    memory: Option<String>,
    /// A blank root volume of this size.
    #[arg(long, conflicts_with = "image")]
    root_size: Option<String>,
    /// A disk image file (qcow2 or raw), uploaded and copied into the root
    /// volume.
    #[arg(long, conflicts_with = "template")]
    image: Option<String>,
    /// A template whose content becomes the root volume.
    #[arg(long, conflicts_with = "root_size")]
    template: Option<String>,
    /// A data volume to attach (repeatable).
    #[arg(long = "data-volume")]
    data_volumes: Vec<String>,
    /// Boot this kernel directly (small guests); uploaded, like --initrd.
    #[arg(long)]
    kernel: Option<String>,
    #[arg(long, requires = "kernel")]
    initrd: Option<String>,
    #[arg(long, requires = "kernel")]
    append: Option<String>,
    /// --image, --kernel and --initrd name files on the daemon's host,
    /// below its import_dirs (admin only), instead of files to upload.
    #[arg(long)]
    on_server: bool,
    /// Create it Stopped.
    #[arg(long)]
    no_start: bool,
    /// A plan for this instance, overriding its account's for recovery
    /// points (admin).
    #[arg(long)]
    plan: Option<String>,
}

pub(super) fn run(ctx: &Ctx, cmd: InstanceCmd) -> Result<()> {
    let c = &ctx.client;
    let (job, name) = match cmd {
        InstanceCmd::Create(a) => {
            let a = *a;
            let name = a.name.clone();
            let mut files = Files::new(ctx, a.on_server);
            let (image_upload, image) = files.bring(a.image)?;
            let (kernel_upload, kernel) = files.bring(a.kernel)?;
            let (initrd_upload, initrd) = files.bring(a.initrd)?;
            let req = CreateInstance {
                name: a.name,
                zone: a.zone,
                host: a.host,
                cpus: a.cpus,
                memory: a.memory,
                root_size: a.root_size,
                image_upload,
                image,
                template: a.template,
                data_volumes: a.data_volumes,
                kernel_upload,
                initrd_upload,
                kernel,
                initrd,
                append: a.append,
                no_start: a.no_start,
                plan: a.plan,
            };
            let job = c.create_instance(&req)?;
            let shown = follow(ctx, job)?;
            drop(files);
            if shown {
                show_instance(ctx, &c.instance(&name)?);
            }
            return Ok(());
        }
        InstanceCmd::List => {
            let list = c.instances()?;
            print_list(
                ctx,
                &list,
                &[
                    "NAME", "STATE", "CPUS", "MEMORY", "ZONE", "VOLUMES", "CREATED", "ID",
                ],
                |i| {
                    vec![
                        i.name.clone(),
                        i.state.to_string(),
                        i.cpus.to_string(),
                        size(i.memory_bytes),
                        i.zone.clone(),
                        i.volumes.len().to_string(),
                        time(&i.created_at),
                        i.id.to_string(),
                    ]
                },
            );
            return Ok(());
        }
        InstanceCmd::Show { instance } => {
            let i = c.instance(&instance)?;
            show_instance(ctx, &i);
            return Ok(());
        }
        InstanceCmd::Start { instance } => (c.start_instance(&instance)?, instance),
        InstanceCmd::Stop { instance, force } => (
            c.stop_instance(&instance, &StopInstance { force })?,
            instance,
        ),
        InstanceCmd::Clone {
            instance,
            name,
            zone,
        } => (
            c.clone_instance(
                &instance,
                &CloneInstance {
                    name: name.clone(),
                    zone,
                },
            )?,
            name,
        ),
        InstanceCmd::Restart { instance } => (c.restart_instance(&instance)?, instance),
        InstanceCmd::Set {
            instance,
            snapshots,
            plan,
        } => {
            let req = InstanceSettings {
                snapshots_enabled: snapshots.map(|s| s == "enabled"),
                plan,
            };
            let i = c.set_instance(&instance, &req)?;
            show_instance(ctx, &i);
            return Ok(());
        }
        InstanceCmd::Delete { instance } => {
            c.delete_instance(&instance)?;
            if !ctx.json {
                outln!("instance {instance} deleted");
            }
            return Ok(());
        }
    };
    if follow(ctx, job)? {
        let i = c.instance(&name)?;
        show_instance(ctx, &i);
    }
    Ok(())
}

/// Paths the daemon reads are resolved here, so a relative path means what
/// the user meant.
pub(super) fn absolute(p: String) -> String {
    std::path::absolute(&p)
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or(p)
}

pub(super) fn show_instance(ctx: &Ctx, i: &Instance) {
    if ctx.json {
        return print_json(i);
    }
    let volumes = i
        .volumes
        .iter()
        .map(|v| format!("{} ({}, {})", v.name, v.kind, size(v.size_bytes)))
        .collect::<Vec<_>>()
        .join(", ");
    let mut pairs = vec![
        ("id", i.id.to_string()),
        ("name", i.name.clone()),
        ("state", i.state.to_string()),
        ("zone", i.zone.clone()),
        ("host", i.host.clone()),
        ("cpus", i.cpus.to_string()),
        ("memory", size(i.memory_bytes)),
        (
            "volumes",
            if volumes.is_empty() {
                "-".into()
            } else {
                volumes
            },
        ),
        ("accel", opt(&i.accel)),
        (
            "snapshots",
            if i.snapshots_enabled {
                "enabled"
            } else {
                "disabled"
            }
            .into(),
        ),
        ("plan", opt(&i.plan)),
        ("pid", opt(&i.pid)),
        ("kernel", opt(&i.kernel)),
        ("console log", i.console_log.clone()),
        ("qmp socket", i.qmp_socket.clone()),
        ("agent socket", i.guest_agent_socket.clone()),
        ("created", time(&i.created_at)),
    ];
    if let Some(a) = &i.guest_agent {
        pairs.push(("guest agent", a.status.clone()));
        pairs.push((
            "consistency",
            format!("{}: {}", a.snapshot_consistency, a.message),
        ));
    }
    if let Some(e) = &i.last_error {
        pairs.push(("last error", e.clone()));
    }
    out!("{}", fields(&pairs));
}
