//! Instances: QEMU/KVM virtual machines with a root volume (blank, imported
//! from an image, or none with direct kernel boot) and data volumes.
//!
//! State machine (the catalog guards each move, so two requests cannot both
//! win): Stopped → Starting → Running → Stopping → Stopped; Error when the
//! host disagrees with the catalog in a way reprise cannot settle alone.
//! A start that fails leaves the instance Stopped with `last_error`.

use super::instance_rules::{check_data_volumes, shape, RootSource, Shape};
use super::volumes;
use crate::app::App;
use crate::jobs::{self, JobCtx, Target};
use crate::vm;
use reprise_catalog::{now, write, InstanceRow, Scope, VolumeRow};
use reprise_core::lifecycle::instance;
use reprise_core::model::*;
use reprise_core::{Error, Result};
use std::path::Path;
use std::sync::Arc;
use uuid::Uuid;

pub async fn to_api(app: &App, row: &InstanceRow, with_agent: bool) -> Result<Instance> {
    let volumes = app.catalog.instance_volumes(row.id)?;
    Ok(with_volumes(app, row, &volumes, with_agent).await)
}

/// An instance as the API shows it, its `volumes` read already; with the
/// guest agent's status when `with_agent` (asked on the instance's host;
/// on another, known only of a stopped guest).
pub async fn with_volumes(
    app: &App,
    row: &InstanceRow,
    volumes: &[VolumeRow],
    with_agent: bool,
) -> Instance {
    let here = row.host == app.host_name();
    // Its files are on its host, under that daemon's directories.
    let run_file = |path: std::path::PathBuf| match here {
        true => path.to_string_lossy().into_owned(),
        false => String::new(),
    };
    let run = app.run_paths(row.id);
    let down = crate::hosts::is_down(app, &row.host);
    Instance {
        id: row.id,
        name: row.name.clone(),
        account_id: row.account_id,
        zone_id: row.zone_id,
        zone: row.zone.clone(),
        // Nobody can say while its host is down.
        state: if down {
            InstanceState::Unknown
        } else {
            row.state
        },
        cpus: row.cpus,
        memory_bytes: row.memory_bytes,
        root_volume_id: row.root_volume_id,
        volumes: volumes.iter().map(VolumeRow::attached).collect(),
        kernel: row.kernel.clone(),
        initrd: row.initrd.clone(),
        append: row.append.clone(),
        accel: row.accel.clone(),
        pid: row.pid,
        qmp_socket: run_file(run.qmp()),
        guest_agent_socket: run_file(run.agent()),
        console_log: run_file(run.console()),
        // The agent's socket is on the instance's host.
        guest_agent: if !with_agent || down {
            None
        } else if here {
            Some(vm::agent_status(app, row).await)
        } else if row.state == InstanceState::Stopped {
            Some(vm::not_running())
        } else {
            None
        },
        last_error: row.last_error.clone(),
        created_at: row.created_at,
        snapshots_enabled: row.snapshots_enabled,
        plan: row.plan.clone(),
        current_point_id: row.current_point_id,
        host: row.host.clone(),
    }
}

pub async fn list(app: &App, account: &Account) -> Result<Vec<Instance>> {
    let mut out = Vec::new();
    for row in app.catalog.list_instances(Some(account.id))? {
        out.push(to_api(app, &row, false).await?);
    }
    Ok(out)
}

/// What the root volume of a new instance comes from.
enum Root {
    None,
    Blank(u64),
    /// An image through the hardened import path: opened now, copied and
    /// converted by the job.
    Image {
        opened: crate::import::Opened,
        judged: crate::import::Judged,
    },
    /// Content of the region's store: a template's, or a snapshot's (its
    /// id there).
    Template {
        id: Uuid,
        name: String,
        size: u64,
    },
}

/// Create an instance: every check first, then the catalog rows (the root
/// volume `Creating`), then a job that makes the root disk and starts the
/// instance. A failed job removes the instance and its root volume again.
pub async fn create(app: &Arc<App>, account: &Account, req: CreateInstance) -> Result<Job> {
    create_with(app, account, req, None, None).await
}

/// The kernel and initrd an instance boots, opened: a clone takes its
/// source's own copies this way rather than naming them as host files.
pub(crate) type BootFiles = (Option<crate::import::Opened>, Option<crate::import::Opened>);

/// An instance's own boot files, opened for a clone of it (refused when
/// they are not its own, see [`crate::vm::check_boot_files`]).
pub(crate) fn own_boot_files(app: &App, inst: &InstanceRow) -> Result<BootFiles> {
    crate::vm::check_boot_files(app, inst)?;
    let open = |path: &Option<String>, what: &str| {
        path.as_deref()
            .map(|p| crate::import::open_own(Path::new(p), what))
            .transpose()
    };
    Ok((open(&inst.kernel, "kernel")?, open(&inst.initrd, "initrd")?))
}

/// Create an instance whose root volume is built from content in the
/// region's store (a snapshot's): `(id, what it is, size)`.
pub(crate) async fn create_from_store(
    app: &Arc<App>,
    account: &Account,
    req: CreateInstance,
    root: Option<(Uuid, String, u64)>,
    boot: BootFiles,
) -> Result<Job> {
    create_with(app, account, req, root, Some(boot)).await
}

async fn create_with(
    app: &Arc<App>,
    account: &Account,
    req: CreateInstance,
    stored_root: Option<(Uuid, String, u64)>,
    inherited_boot: Option<BootFiles>,
) -> Result<Job> {
    let kernel_given = match &inherited_boot {
        Some((kernel, _)) => kernel.is_some(),
        None => req.kernel.is_some() || req.kernel_upload.is_some(),
    };
    let Shape { cpus, memory, root } = shape(&req, kernel_given, stored_root.is_some())?;
    let zone = volumes::zone_or_default(app, req.zone.as_deref())?;
    crate::hosts::check_wanted(app, account, req.host.as_deref())?;
    crate::hosts::check_here(app, &zone)?;
    let (kernel, initrd) = match inherited_boot {
        Some(boot) => boot,
        None => (
            crate::import::open(
                app,
                account,
                "kernel",
                req.kernel_upload.as_deref(),
                req.kernel.as_deref(),
            )?,
            crate::import::open(
                app,
                account,
                "initrd",
                req.initrd_upload.as_deref(),
                req.initrd.as_deref(),
            )?,
        ),
    };
    let root = match root {
        RootSource::Stored => {
            let (id, name, size) = stored_root.expect("a stored root was given");
            Root::Template { id, name, size }
        }
        RootSource::Blank(size) => Root::Blank(size),
        RootSource::Image => {
            let (opened, judged) = crate::import::open_image(
                app,
                account,
                req.image_upload.as_deref(),
                req.image.as_deref(),
            )?
            .expect("an image was given");
            Root::Image { opened, judged }
        }
        RootSource::Template(reference) => {
            let t = app.catalog.template(account.id, &reference)?;
            Root::Template {
                id: t.id,
                name: format!("template '{}'", t.name),
                size: t.size_bytes,
            }
        }
        RootSource::None => Root::None,
    };
    let data = req
        .data_volumes
        .iter()
        .map(|reference| app.catalog.volume(account.id, reference))
        .collect::<Result<Vec<VolumeRow>>>()?;
    check_data_volumes(
        (zone.id, &zone.name),
        app.host_name(),
        &data,
        !matches!(root, Root::None),
    )?;
    if let Some(plan) = &req.plan {
        super::guards::require_admin(
            account,
            "choose an instance's plan (the operator assigns plans)",
        )?;
        app.catalog.plan(plan)?;
    }
    if !req.no_start {
        vm::preflight(app)?;
    }

    let id = Uuid::new_v4();
    let root_size = match &root {
        Root::None => None,
        Root::Blank(size) | Root::Template { size, .. } => Some(*size),
        Root::Image { judged, .. } => Some(judged.virtual_size),
    };
    let root_row = root_size
        .map(|size| {
            volumes::new_row(
                app,
                account.id,
                &format!("{}-root", req.name),
                &zone,
                VolumeKind::Root,
                size,
            )
        })
        .transpose()?;
    let slot = jobs::reserve(
        app,
        account.id,
        "instance.create",
        Target {
            kind: "instance",
            id,
            name: &req.name,
        },
        1 + u64::from(!req.no_start),
    )?;
    // The kernel and initrd are the instance's own copies, kept as long as
    // it is.
    let boot_dir = app.config.boot_dir(id);
    let staged_boot = (|| -> Result<(Option<String>, Option<String>)> {
        let stage = |opened: &Option<crate::import::Opened>, name: &str| {
            opened
                .as_ref()
                .map(|o| {
                    crate::import::stage(o, &boot_dir.join(name), crate::import::MAX_BOOT_FILE)
                        .map(|s| s.keep().to_string_lossy().into_owned())
                })
                .transpose()
        };
        Ok((stage(&kernel, "kernel")?, stage(&initrd, "initrd")?))
    })();
    let (kernel_path, initrd_path) = match staged_boot {
        Ok(paths) => paths,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&boot_dir);
            return Err(e);
        }
    };
    let row = InstanceRow {
        id,
        account_id: account.id,
        name: req.name.clone(),
        zone_id: zone.id,
        zone: zone.name.clone(),
        state: InstanceState::Stopped,
        cpus,
        memory_bytes: memory,
        root_volume_id: root_row.as_ref().map(|r| r.id),
        kernel: kernel_path,
        initrd: initrd_path,
        append: req.append.clone(),
        accel: None,
        pid: None,
        last_error: None,
        created_at: now(),
        current_point_id: None,
        snapshots_enabled: true,
        plan: req.plan.clone(),
        host: app.host_name().to_string(),
    };
    // The instance, its root volume and every attachment in one
    // transaction, counted against the account's plan.
    let demand = reprise_core::plan::Demand {
        instances: 1,
        vcpus: u64::from(cpus),
        memory_bytes: memory,
        volumes: u64::from(root_row.is_some()),
        volume_bytes: root_size.unwrap_or(0),
        ..Default::default()
    };
    let recorded = app
        .catalog
        .admit(account.id, Scope::default(), &demand, |c| {
            write::insert_instance(c, &row)?;
            let mut disk = 0;
            if let Some(r) = &root_row {
                write::insert_volume(c, r)?;
                write::attach_volume(c, r.id, id, disk)?;
                disk += 1;
            }
            for v in &data {
                write::attach_volume(c, v.id, id, disk)?;
                disk += 1;
            }
            Ok(())
        });
    if let Err(e) = recorded {
        let _ = std::fs::remove_dir_all(&boot_dir);
        return Err(e);
    }

    let start = !req.no_start;
    let steps = 1 + u64::from(start);
    let app2 = app.clone();
    Ok(slot.spawn(move |ctx| async move {
        let app = app2;
        let _guard = app.lock_instance(id).await;
        if let Err(e) = make_root(&app, &ctx, root, root_row.as_ref()).await {
            ctx.log("removing the half-made instance");
            if let Some(r) = &root_row {
                let _ = std::fs::remove_file(&r.path);
            }
            let _ = std::fs::remove_dir_all(app.config.boot_dir(id));
            app.catalog.delete_instance(id)?;
            return Err(e);
        }
        ctx.progress(1, steps);
        if start {
            app.catalog.transition_instance(id, &instance::BOOT)?;
            vm::boot(&app, &ctx, id).await?;
            ctx.progress(2, steps);
        }
        Ok(())
    }))
}

async fn make_root(app: &App, ctx: &JobCtx, root: Root, row: Option<&VolumeRow>) -> Result<()> {
    let Some(row) = row else { return Ok(()) };
    let bin = app.config.binaries();
    match root {
        Root::None => {}
        Root::Blank(size) => {
            ctx.log(format!(
                "creating a blank root volume of {}",
                reprise_core::size::format_size(size)
            ));
            bin.create(Path::new(&row.path), size).await?;
        }
        Root::Image { opened, judged } => {
            ctx.log(format!(
                "importing {} ({}) as the root volume",
                opened.label, judged.format
            ));
            crate::import::import_image(app, opened, judged, row.id, Path::new(&row.path)).await?;
        }
        Root::Template { id, name, .. } => {
            ctx.log(format!("making the root volume from {name}"));
            super::restore::build(app, id, Path::new(&row.path), |_, _| {}).await?;
        }
    }
    super::volumes::settle(app, row.id, &reprise_core::lifecycle::volume::MADE)
}

fn wrong_state(inst: &InstanceRow, wanted: &str) -> Error {
    let code = match inst.state {
        InstanceState::Running => "instance_running",
        InstanceState::Stopped => "instance_stopped",
        _ => "instance_busy",
    };
    Error::conflict(
        code,
        format!("instance '{}' is {}: {wanted}", inst.name, inst.state),
    )
}

fn require_volumes_ready(app: &App, inst: &InstanceRow) -> Result<()> {
    for v in app.catalog.instance_volumes(inst.id)? {
        if v.state != VolumeState::Ready {
            return Err(Error::conflict(
                "instance_busy",
                format!(
                    "volume '{}' of instance '{}' is {}",
                    v.name, inst.name, v.state
                ),
            ));
        }
    }
    Ok(())
}

fn target(inst: &InstanceRow) -> Target<'_> {
    Target {
        kind: "instance",
        id: inst.id,
        name: &inst.name,
    }
}

pub fn start(app: &Arc<App>, account: &Account, reference: &str) -> Result<Job> {
    let inst = app.catalog.instance(account.id, reference)?;
    vm::preflight(app)?;
    require_volumes_ready(app, &inst)?;
    let slot = jobs::reserve(app, account.id, "instance.start", target(&inst), 1)?;
    if !app.catalog.transition_instance(inst.id, &instance::START)? {
        return Err(wrong_state(&inst, "only a Stopped instance can be started"));
    }
    let app2 = app.clone();
    let id = inst.id;
    let turn = app2.queue_for_instance(id);
    Ok(slot.spawn(move |ctx| async move {
        let _guard = turn.wait().await;
        crate::vm::boot(&app2, &ctx, id).await?;
        ctx.progress(1, 1);
        Ok(())
    }))
}

pub fn stop(app: &Arc<App>, account: &Account, reference: &str, force: bool) -> Result<Job> {
    let inst = app.catalog.instance(account.id, reference)?;
    let slot = jobs::reserve(app, account.id, "instance.stop", target(&inst), 1)?;
    if !app.catalog.transition_instance(inst.id, &instance::STOP)? {
        return Err(wrong_state(&inst, "only a Running instance can be stopped"));
    }
    let app2 = app.clone();
    let id = inst.id;
    let turn = app2.queue_for_instance(id);
    Ok(slot.spawn(move |ctx| async move {
        let _guard = turn.wait().await;
        halt(&app2, &ctx, id, force).await?;
        ctx.progress(1, 1);
        Ok(())
    }))
}

async fn halt(app: &App, ctx: &JobCtx, id: Uuid, force: bool) -> Result<()> {
    vm::power_off(app, id, force, ctx).await?;
    ctx.log("QEMU has exited");
    app.catalog
        .set_instance_runtime(id, InstanceState::Stopped, None, None, None)
}

/// Operator settings (admin): the snapshot switch and the plan. The admin
/// names the instance by id (or by name among its own).
pub async fn settings(
    app: &App,
    caller: &Account,
    reference: &str,
    req: InstanceSettings,
) -> Result<Instance> {
    super::guards::require_admin(caller, "change an instance's snapshot settings")?;
    let inst = app
        .catalog
        .instance(caller.id, reference)
        .or_else(|_| app.catalog.instance_any(reference))?;
    let plan = match req.plan.as_deref() {
        Some("") => Some(None),
        Some(p) => {
            app.catalog.plan(p)?;
            Some(Some(p))
        }
        None => None,
    };
    app.catalog
        .set_instance_settings(inst.id, req.snapshots_enabled, plan)?;
    tracing::info!(instance = %inst.id, snapshots_enabled = ?req.snapshots_enabled, plan = ?req.plan, "instance settings changed");
    to_api(app, &app.catalog.instance_by_id(inst.id)?, false).await
}

/// A graceful stop then a start: the instance comes back with its current
/// configuration (cold-attached volumes included).
pub fn restart(app: &Arc<App>, account: &Account, reference: &str) -> Result<Job> {
    let inst = app.catalog.instance(account.id, reference)?;
    vm::preflight(app)?;
    let slot = jobs::reserve(app, account.id, "instance.restart", target(&inst), 2)?;
    if !app
        .catalog
        .transition_instance(inst.id, &instance::RESTART)?
    {
        return Err(wrong_state(
            &inst,
            "only a Running instance can be restarted",
        ));
    }
    let app2 = app.clone();
    let id = inst.id;
    let turn = app2.queue_for_instance(id);
    Ok(slot.spawn(move |ctx| async move {
        let _guard = turn.wait().await;
        halt(&app2, &ctx, id, false).await?;
        ctx.progress(1, 2);
        app2.catalog.transition_instance(id, &instance::BOOT)?;
        crate::vm::boot(&app2, &ctx, id).await?;
        ctx.progress(2, 2);
        Ok(())
    }))
}

/// Delete a stopped instance and its root volume; data volumes are
/// detached and kept.
pub async fn delete(app: &App, account: &Account, reference: &str) -> Result<()> {
    let inst = app.catalog.instance(account.id, reference)?;
    let _guard = app.lock_instance(inst.id).await;
    let inst = app.catalog.instance_by_id(inst.id)?;
    if !matches!(inst.state, InstanceState::Stopped | InstanceState::Error)
        || vm::live_pid(app, inst.id).is_some()
    {
        return Err(wrong_state(&inst, "stop it before deleting it"));
    }
    super::guards::refuse_if_points(app, &inst, "deleting the instance")?;
    let root = app
        .catalog
        .instance_volumes(inst.id)?
        .into_iter()
        .find(|v| v.kind == VolumeKind::Root);
    app.catalog.delete_instance(inst.id)?;
    if let Some(r) = root {
        let _ = std::fs::remove_file(&r.path);
    }
    let _ = std::fs::remove_dir_all(app.config.instance_run_dir(inst.id));
    let _ = std::fs::remove_dir_all(app.config.boot_dir(inst.id));
    let _ = std::fs::remove_dir_all(app.config.point_state_dir(inst.id));
    if let Some(cgroups) = &app.cgroups {
        cgroups.remove(inst.id);
    }
    tracing::info!(instance = %inst.id, name = inst.name, "instance deleted");
    Ok(())
}
