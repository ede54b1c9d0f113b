//! Clones for troubleshooting: a copy of a production instance, in any
//! zone, to look at outside production.
//!
//! One job: snapshots of every volume of the source cut at one instant
//! (one QMP transaction, quiesced when the agent answers), backed up to the
//! region's store like any volume snapshot (they stay, listed with the
//! others), then new volumes built from them in the target zone and a new
//! instance with the source's shape (CPUs, memory, kernel) started on them.
//! A failure after the snapshots removes the volumes it made; the snapshots
//! that were backed up stay, as any snapshot would.

use super::{instances, restore, snapshots, volumes};
use crate::app::App;
use crate::jobs::{self, JobCtx, Target};
use crate::quiesce::Mode;
use reprise_core::model::*;
use reprise_core::{Error, Result};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub async fn clone(
    app: &Arc<App>,
    account: &Account,
    source: &str,
    req: CloneInstance,
) -> Result<Job> {
    let src = app.catalog.instance(account.id, source)?;
    reprise_core::name::validate_name("instance", &req.name)?;
    if app.catalog.instance(account.id, &req.name).is_ok() {
        return Err(Error::conflict(
            "name_taken",
            format!("an instance named '{}' already exists", req.name),
        ));
    }
    let zone = volumes::zone_or_default(app, Some(req.zone.as_deref().unwrap_or(&src.zone)))?;
    let vols = app.catalog.instance_volumes(src.id)?;
    if vols.is_empty() {
        return Err(Error::conflict(
            "no_volumes",
            format!("instance '{}' has no volume to clone", src.name),
        ));
    }
    let data_names: Vec<String> = vols
        .iter()
        .filter(|v| v.kind == VolumeKind::Data)
        .map(|v| format!("{}-{}", req.name, v.name))
        .collect();
    for n in &data_names {
        reprise_core::name::validate_name("volume", n)?;
        if app.catalog.volume(account.id, n).is_ok() {
            return Err(Error::conflict(
                "name_taken",
                format!("a volume named '{n}' already exists"),
            ));
        }
    }
    let slot = jobs::reserve(
        app,
        account.id,
        "instance.clone",
        Target {
            kind: "instance",
            id: src.id,
            name: &req.name,
        },
        (vols.len() * 2 + 1) as u64,
    )?;
    // Every snapshot is recorded before anything is cut; a refusal undoes
    // the ones already recorded.
    let mut snaps = Vec::new();
    for v in &vols {
        match snapshots::prepare(app, account, v, uuid::Uuid::new_v4(), None, None, false) {
            Ok(s) => snaps.push(s),
            Err(e) => {
                for s in &snaps {
                    app.catalog.remove_snapshot(s.id)?;
                }
                return Err(e);
            }
        }
    }
    let app2 = app.clone();
    let account2 = account.clone();
    Ok(slot.spawn(move |ctx| async move {
        let steps = (vols.len() * 2 + 1) as u64;
        let cut = match app2.region().await {
            Ok(_) => snapshots::cut(&app2, &ctx, &snaps, Mode::Auto).await,
            Err(e) => Err(e),
        };
        let consistency = match cut {
            Ok(c) => c,
            Err(e) => {
                for s in &snaps {
                    snapshots::fail(&app2, &ctx, s.id, &e.message).await;
                }
                return Err(e);
            }
        };
        let mut step = 0;
        for (i, s) in snaps.iter().enumerate() {
            if let Err(e) = snapshots::back_up(&app2, &ctx, s.id, consistency).await {
                for rest in &snaps[i..] {
                    snapshots::fail(&app2, &ctx, rest.id, &e.message).await;
                }
                return Err(e);
            }
            step += 1;
            ctx.progress(step, steps);
        }
        ctx.log(format!(
            "{} volume(s) snapshotted at one instant ({consistency} consistent)",
            snaps.len()
        ));
        // The volumes this clone made, by id: a failure removes those and
        // never another volume that happens to bear the same name.
        let mut made = Vec::new();
        let deployed = deploy(
            &app2, &ctx, &account2, &src, &zone, &vols, &snaps, &req.name, &mut step, steps,
            &mut made,
        )
        .await;
        if deployed.is_err() {
            for (id, path) in &made {
                restore::remove_half_made(&app2, path, *id);
            }
        }
        deployed
    }))
}

/// Build the clone's data volumes, then create and start the instance with
/// its root volume built from the root's snapshot; wait for that job.
#[allow(clippy::too_many_arguments)]
async fn deploy(
    app: &Arc<App>,
    ctx: &JobCtx,
    account: &Account,
    src: &reprise_catalog::InstanceRow,
    zone: &Zone,
    vols: &[reprise_catalog::VolumeRow],
    snaps: &[Snapshot],
    name: &str,
    step: &mut u64,
    steps: u64,
    made: &mut Vec<(uuid::Uuid, String)>,
) -> Result<()> {
    let mut data_volumes = Vec::new();
    let mut root = None;
    for (v, s) in vols.iter().zip(snaps) {
        if v.kind == VolumeKind::Root {
            root = Some((s.id, format!("snapshot '{}'", s.name), s.size_bytes));
            continue;
        }
        let row = volumes::new_row(
            app,
            account.id,
            &format!("{name}-{}", v.name),
            zone,
            VolumeKind::Data,
            s.size_bytes,
        )?;
        volumes::record(app, &row)?;
        made.push((row.id, row.path.clone()));
        restore::build(app, s.id, Path::new(&row.path), |_, _| {}).await?;
        volumes::settle(app, row.id, &reprise_core::lifecycle::volume::MADE)?;
        ctx.log(format!("volume '{}' made in zone {}", row.name, zone.name));
        data_volumes.push(row.name);
        *step += 1;
        ctx.progress(*step, steps);
    }
    let req = CreateInstance {
        name: name.to_string(),
        zone: Some(zone.name.clone()),
        cpus: Some(src.cpus),
        memory: Some(format!("{}M", src.memory_bytes >> 20)),
        append: src.append.clone(),
        data_volumes,
        ..Default::default()
    };
    let boot = instances::own_boot_files(app, src)?;
    let job = instances::create_from_store(app, account, req, root, boot).await?;
    ctx.log(format!("creating instance '{name}' (job {})", job.id));
    loop {
        let j = app.catalog.job(None, &job.id.to_string())?;
        if j.state.is_final() {
            if let Some(e) = j.error {
                return Err(e.into());
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    *step = steps;
    ctx.progress(steps, steps);
    ctx.log(format!("instance '{name}' runs on the copies"));
    Ok(())
}
