//! Talking to an instance's QEMU: launch, power off, hot-plug, and the
//! guest agent. Callers hold the instance's lock.

use crate::app::App;
use crate::jobs::JobCtx;
use reprise_catalog::InstanceRow;
use reprise_core::lifecycle::instance;
use reprise_core::model::{GuestAgentStatus, InstanceState};
use reprise_core::{Error, Result};
use reprise_qemu::cmdline::{self, Disk, VmSpec};
use reprise_qemu::qmp::Qmp;
use reprise_qemu::{accel, process, Accel};
use serde_json::json;
use std::path::Path;
use std::time::Duration;
use uuid::Uuid;

/// Check what a start needs before anything changes: the accelerator and
/// the QEMU binary.
pub fn preflight(app: &App) -> Result<Accel> {
    let chosen = accel::choose(app.config.accel, app.host)?;
    let system = &app.config.qemu.system;
    if which(system).is_none() {
        return Err(reprise_core::Error::unavailable(
            "qemu_missing",
            format!(
                "QEMU program '{}' not found: install QEMU (apt-get install qemu-system-x86 qemu-utils) or set qemu.system in the config",
                system.display()
            ),
        ));
    }
    Ok(chosen)
}

fn which(program: &Path) -> Option<std::path::PathBuf> {
    if program.components().count() > 1 {
        return program.is_file().then(|| program.to_path_buf());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

/// Launch QEMU for an instance with its attached volumes; returns the pid.
pub async fn launch(app: &App, inst: &InstanceRow, accel: Accel) -> Result<u32> {
    launch_with(app, inst, accel, Launch::Boot).await
}

/// How QEMU starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launch {
    Boot,
    /// CPUs stopped, to load a state saved inside the volumes.
    Paused,
    /// Waiting for a saved state (`migrate-incoming`), see
    /// [`load_machine_file`].
    Incoming,
}

/// Launch QEMU as `how` says.
pub async fn launch_with(app: &App, inst: &InstanceRow, accel: Accel, how: Launch) -> Result<u32> {
    check_boot_files(app, inst)?;
    let volumes = app.catalog.instance_volumes(inst.id)?;
    // One start at a time is judged against what runs, so two cannot
    // both take the last of the host's RAM or huge pages.
    let _launching = app.launching.lock().await;
    let huge_pages = app.config.qemu.hugepages;
    if huge_pages {
        huge_pages_fit(&inst.name, inst.memory_bytes, process::free_huge_pages())?;
    }
    let running: u64 = app
        .catalog
        .local_instances()?
        .iter()
        .filter(|i| i.id != inst.id && is_live(app, i.id))
        .map(|i| i.memory_bytes)
        .sum();
    host_memory_fits(
        &inst.name,
        inst.memory_bytes,
        running,
        process::host_memory(),
        app.config.host.guest_memory_ratio,
    )?;
    let spec = VmSpec {
        id: inst.id,
        name: inst.name.clone(),
        cpus: inst.cpus,
        memory_mib: inst.memory_bytes >> 20,
        huge_pages,
        accel,
        disks: volumes
            .iter()
            .map(|v| Disk {
                volume_id: v.id,
                path: v.path.clone().into(),
                slot: v.slot.unwrap_or(0),
            })
            .collect(),
        kernel: inst.kernel.clone(),
        initrd: inst.initrd.clone(),
        append: inst.append.clone(),
        run: app.run_paths(inst.id),
        start_paused: how == Launch::Paused,
        incoming: how == Launch::Incoming,
    };
    let group = match &app.cgroups {
        Some(h) => Some(h.group(inst.id, inst.cpus, inst.memory_bytes)?),
        None => None,
    };
    process::launch(&app.config.qemu.system, &spec, group.as_ref()).await
}

/// Refuse, before QEMU starts, an instance whose RAM does not fit in the
/// free huge pages (QEMU would fail to preallocate it) or is not made of
/// whole huge pages.
fn huge_pages_fit(name: &str, memory_bytes: u64, free_pages: Option<u64>) -> Result<()> {
    let page = cmdline::HUGE_PAGE;
    if !memory_bytes.is_multiple_of(page) {
        return Err(Error::invalid(
            "memory_not_huge_page_multiple",
            format!(
                "instance '{name}' has {} MiB of RAM: with huge pages (qemu.hugepages), RAM must be a multiple of {} MiB",
                memory_bytes >> 20,
                page >> 20
            ),
        ));
    }
    let needed = memory_bytes / page;
    let free = free_pages.unwrap_or(0);
    if free < needed {
        // The host's capacity goes to the operator's log, not to a tenant.
        tracing::warn!(
            instance = name,
            needed,
            free,
            "start refused: too few free huge pages"
        );
        return Err(Error::unavailable(
            "huge_pages_short",
            format!(
                "instance '{name}' needs {needed} huge pages of {} MiB for its RAM (qemu.hugepages) and the host has too few free: the operator reserves more with vm.nr_hugepages",
                page >> 20
            ),
        ));
    }
    Ok(())
}

/// Refuse an instance whose kernel or initrd is not its own copy (in its
/// boot directory): only instances made before uploads named host files,
/// and QEMU would load such a file into the guest's memory, where the
/// guest reads it. The message names no path.
pub fn check_boot_files(app: &App, inst: &InstanceRow) -> Result<()> {
    let own = app.config.boot_dir(inst.id);
    let outside = [("kernel", &inst.kernel), ("initrd", &inst.initrd)]
        .into_iter()
        .find(|(_, path)| {
            path.as_deref()
                .is_some_and(|p| !is_below(Path::new(p), &own))
        });
    match outside {
        None => Ok(()),
        Some((what, _)) => Err(Error::new(
            reprise_core::ErrorKind::Forbidden,
            "boot_file_not_own",
            format!(
                "instance '{}' boots a {what} that is a file of the host, not its own copy (it was made before kernels were uploaded): make a new instance with an uploaded {what}",
                inst.name
            ),
        )),
    }
}

/// Whether `path` names a file below `dir`: component by component, and
/// without a `..` that would climb back out.
fn is_below(path: &Path, dir: &Path) -> bool {
    path.starts_with(dir)
        && !path
            .components()
            .any(|c| c == std::path::Component::ParentDir)
}

/// Refuse, before QEMU starts, an instance whose RAM would take the
/// guests running on this host past `ratio` of the host's RAM
/// (`[host] guest_memory_ratio`): an overcommitted host OOM-kills some
/// tenant's QEMU, or the daemon. The tenant's error names no capacity of
/// the host; the operator's log does.
fn host_memory_fits(
    name: &str,
    memory_bytes: u64,
    running_bytes: u64,
    host_bytes: Option<u64>,
    ratio: f64,
) -> Result<()> {
    let Some(host_bytes) = host_bytes else {
        return Ok(());
    };
    let allowed = (host_bytes as f64 * ratio) as u64;
    if running_bytes.saturating_add(memory_bytes) <= allowed {
        return Ok(());
    }
    tracing::warn!(
        instance = name,
        asked_mib = memory_bytes >> 20,
        running_mib = running_bytes >> 20,
        allowed_mib = allowed >> 20,
        "start refused: the guests' RAM would pass [host] guest_memory_ratio"
    );
    Err(Error::unavailable(
        "host_memory_short",
        format!(
            "instance '{name}' cannot start on its host now: the instances running there take the RAM the operator lets guests have; stop one, or ask the operator"
        ),
    ))
}

/// Keep a guest's serial console log within `max` bytes (and the time
/// between two checks): past it, the log becomes `console.log.1`, the one
/// before going, and starts again empty. QEMU appends (`O_APPEND`), so its
/// next write lands at the new start; what the guest writes between the
/// copy and the cut is lost. True when it rotated.
pub fn rotate_console_log(path: &Path, max: u64) -> std::io::Result<bool> {
    let len = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if len <= max {
        return Ok(false);
    }
    let mut old = path.as_os_str().to_owned();
    old.push(".1");
    std::fs::copy(path, &old)?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)?
        .set_len(0)?;
    Ok(true)
}

/// The live QEMU pid of an instance, if any.
pub fn live_pid(app: &App, id: Uuid) -> Option<u32> {
    process::find(&app.run_paths(id).pidfile(), id)
}

/// Whether an instance's QEMU runs. Under the instance's lock this is
/// what decides between QMP and `qemu-img` on its disks — never the
/// recorded state, which a start or stop request changes (Starting,
/// Stopping) before its job takes the lock: a point queued before a stop
/// still meets a live QEMU, and must not open its disks with qemu-img.
pub fn is_live(app: &App, id: Uuid) -> bool {
    live_pid(app, id).is_some()
}

pub async fn qmp(app: &App, id: Uuid) -> Result<Qmp> {
    Qmp::connect(&app.run_paths(id).qmp(), Duration::from_secs(5)).await
}

/// Power an instance off: unless `force`, ask the guest (agent and ACPI)
/// and wait up to the configured timeout; then quit QEMU, and kill it as a
/// last resort. Returns once the process is gone.
pub async fn power_off(app: &App, id: Uuid, force: bool, ctx: &JobCtx) -> Result<()> {
    let Some(pid) = live_pid(app, id) else {
        return Ok(());
    };
    let run = app.run_paths(id);
    if !force {
        let timeout = Duration::from_secs(app.config.stop_timeout_secs);
        // The agent powers off guests that ignore the ACPI button (no
        // acpid); guest-shutdown sends no answer when it works.
        if let Ok(mut lease) = app
            .agents
            .lease(id, &run.agent(), Duration::from_millis(500))
            .await
        {
            ctx.log("asked the guest agent to power off");
            let _ = lease
                .agent()
                .execute(
                    "guest-shutdown",
                    json!({"mode": "powerdown"}),
                    Duration::from_millis(300),
                )
                .await;
            lease.discard();
        }
        if let Ok(mut q) = qmp(app, id).await {
            ctx.log("sent the ACPI power button");
            let _ = q.execute("system_powerdown", json!({})).await;
        }
        if process::wait_exit(pid, id, timeout).await {
            return Ok(());
        }
        ctx.log(format!(
            "the guest did not power off within {}s: forcing",
            timeout.as_secs()
        ));
    }
    if let Ok(mut q) = qmp(app, id).await {
        let _ = q.execute("quit", json!({})).await;
    }
    if !process::wait_exit(pid, id, Duration::from_secs(10)).await {
        ctx.log("QEMU did not quit: killing it");
        process::kill(pid, id);
        process::wait_exit(pid, id, Duration::from_secs(5)).await;
    }
    Ok(())
}

/// Hot-plug a volume into a running instance at `slot`.
pub async fn hot_attach(app: &App, id: Uuid, volume: Uuid, path: &Path, slot: u32) -> Result<()> {
    let mut q = qmp(app, id).await?;
    q.execute("blockdev-add", cmdline::blockdev(volume, path))
        .await?;
    if let Err(e) = q
        .execute("device_add", cmdline::disk_device(volume, slot))
        .await
    {
        let _ = q
            .execute(
                "blockdev-del",
                json!({"node-name": cmdline::node_name(volume)}),
            )
            .await;
        return Err(e);
    }
    Ok(())
}

/// Unplug a volume from a running instance; the guest must release it.
pub async fn hot_detach(app: &App, id: Uuid, volume: Uuid) -> Result<()> {
    let mut q = qmp(app, id).await?;
    let device = cmdline::device_id(volume);
    q.execute("device_del", json!({"id": device})).await?;
    q.wait_event(
        "DEVICE_DELETED",
        |d| d.get("device").and_then(|v| v.as_str()) == Some(device.as_str()),
        Duration::from_secs(30),
    )
    .await
    .map_err(|_| {
        reprise_core::Error::unavailable(
            "detach_timeout",
            "the guest did not release the disk within 30 s; it will be unplugged when it does",
        )
    })?;
    q.execute(
        "blockdev-del",
        json!({"node-name": cmdline::node_name(volume)}),
    )
    .await?;
    Ok(())
}

/// Grow the disk of a running instance.
pub async fn hot_resize(app: &App, id: Uuid, volume: Uuid, size: u64) -> Result<()> {
    let mut q = qmp(app, id).await?;
    q.execute(
        "block_resize",
        json!({"node-name": cmdline::node_name(volume), "size": size}),
    )
    .await
    .map(|_| ())
}

/// Whether the guest agent answers, and what a snapshot taken now means.
/// The agent's status of an instance that does not run.
pub fn not_running() -> GuestAgentStatus {
    GuestAgentStatus {
        status: "not_running".into(),
        snapshot_consistency: "crash".into(),
        message: "the instance is not running: the guest agent cannot be asked; its disks \
                  hold what the guest left on them (consistent if it shut down cleanly)"
            .into(),
    }
}

pub async fn agent_status(app: &App, inst: &InstanceRow) -> GuestAgentStatus {
    if live_pid(app, inst.id).is_none() {
        return not_running();
    }
    // A lease synchronises with the agent: its answer is the ping.
    let run = app.run_paths(inst.id);
    let answered = app
        .agents
        .lease(inst.id, &run.agent(), Duration::from_secs(1))
        .await
        .is_ok();
    if answered {
        GuestAgentStatus {
            status: "responding".into(),
            snapshot_consistency: "filesystem".into(),
            message: "qemu-guest-agent answers: snapshots can freeze the guest's filesystems \
                      for a brief moment and are filesystem-consistent"
                .into(),
        }
    } else {
        GuestAgentStatus {
            status: "not_responding".into(),
            snapshot_consistency: "crash".into(),
            message: "qemu-guest-agent does not answer (is it installed and running, with \
                      /dev/virtio-ports/org.qemu.guest_agent.0 in the guest?): snapshots will be \
                      crash-consistent, like a disk after a power cut, not filesystem-consistent"
                .into(),
        }
    }
}

/// The qcow2 nodes of these volumes, in order.
pub fn nodes(volumes: &[Uuid]) -> Vec<String> {
    volumes.iter().map(|v| cmdline::node_name(*v)).collect()
}

/// Internal snapshots of all `volumes` of a running instance at one
/// instant: one QMP `transaction`.
pub async fn snapshot_disks(app: &App, id: Uuid, volumes: &[Uuid], tag: &str) -> Result<()> {
    let tagged: Vec<(Uuid, String)> = volumes.iter().map(|v| (*v, tag.to_string())).collect();
    snapshot_disks_tagged(app, id, &tagged).await
}

/// Like [`snapshot_disks`], with a tag of its own for each volume.
pub async fn snapshot_disks_tagged(app: &App, id: Uuid, tagged: &[(Uuid, String)]) -> Result<()> {
    let mut q = qmp(app, id).await?;
    q.execute("transaction", disk_snapshots(tagged))
        .await
        .map(|_| ())
}

/// The `transaction` of internal snapshots, one per (volume, tag).
fn disk_snapshots(tagged: &[(Uuid, String)]) -> serde_json::Value {
    let actions: Vec<_> = tagged
        .iter()
        .map(|(v, tag)| {
            json!({"type": "blockdev-snapshot-internal-sync",
                   "data": {"device": cmdline::node_name(*v), "name": tag}})
        })
        .collect();
    json!({ "actions": actions })
}

/// A path as a single-quoted shell word, for QEMU's `exec:` migration
/// (which runs `/bin/sh -c`). Paths are the daemon's own; one with a
/// quote is refused rather than escaped.
fn shell_word(path: &Path) -> Result<String> {
    let text = path.to_str().filter(|p| !p.contains('\'')).ok_or_else(|| {
        Error::internal(format!(
            "the path {} cannot be given to QEMU's exec:",
            path.display()
        ))
    })?;
    Ok(format!("'{text}'"))
}

/// How long the guest was paused, from QEMU's STOP and RESUME events.
fn paused_ms(q: &Qmp) -> Option<u64> {
    let at = |name: &str| {
        q.received_events()
            .find(|e| e.name == name)
            .map(|e| e.at_us)
    };
    match (at("STOP"), at("RESUME")) {
        (Some(stop), Some(resume)) if resume >= stop => Some((resume - stop) / 1000),
        _ => None,
    }
}

/// Whether this QEMU can save RAM in the background (QEMU's
/// `background-snapshot` migration capability: userfaultfd write-protect
/// in the host's kernel); it is left enabled for [`save_machine_background`].
pub async fn background_save_available(app: &App, id: Uuid) -> Result<bool> {
    let mut q = qmp(app, id).await?;
    Ok(q.execute(
        "migrate-set-capabilities",
        json!({"capabilities": [{"capability": "background-snapshot", "state": true}]}),
    )
    .await
    .is_ok())
}

/// A memory point with the guest running on: paused for an instant while
/// every volume's internal snapshot is cut (one `transaction`) and the
/// devices are saved, then resumed while QEMU writes its RAM to `state`
/// (write-protected pages are copied before the guest changes them).
/// Needs [`background_save_available`] first. Returns how long the guest
/// was paused. `state` is not synced here.
pub async fn save_machine_background(
    app: &App,
    id: Uuid,
    volumes: &[Uuid],
    tag: &str,
    state: &Path,
) -> Result<Option<u64>> {
    let target = format!("exec:cat > {}", shell_word(state)?);
    let tagged: Vec<(Uuid, String)> = volumes.iter().map(|v| (*v, tag.to_string())).collect();
    let mut q = qmp(app, id).await?;
    q.execute("stop", json!({})).await?;
    // The disks and the RAM are taken at this one instant; QEMU resumes the
    // guest itself once the devices are saved.
    let started = std::time::Instant::now();
    let cut = match q.execute("transaction", disk_snapshots(&tagged)).await {
        Ok(_) => {
            tracing::debug!(instance = %id, us = started.elapsed().as_micros() as u64, "disks cut, guest paused");
            q.execute("migrate", json!({ "uri": target })).await
        }
        Err(e) => Err(e),
    };
    let result = match cut {
        Ok(_) => q.wait_migration(SNAPSHOT_JOB_TIMEOUT).await.map(|_| ()),
        Err(e) => Err(e),
    };
    if q.run_state().await? != "running" {
        q.execute("cont", json!({})).await?;
    }
    result?;
    Ok(paused_ms(&q))
}

/// Load a state written by [`save_machine_background`] into a QEMU
/// launched with [`Launch::Incoming`], and run it.
pub async fn load_machine_file(app: &App, id: Uuid, state: &Path) -> Result<()> {
    let source = format!("exec:cat {}", shell_word(state)?);
    let mut q = qmp(app, id).await?;
    q.execute("migrate-incoming", json!({ "uri": source }))
        .await?;
    q.wait_migration(SNAPSHOT_JOB_TIMEOUT).await?;
    if q.run_state().await? != "running" {
        q.execute("cont", json!({})).await?;
    }
    Ok(())
}

const SNAPSHOT_JOB_TIMEOUT: Duration = Duration::from_secs(600);

/// RAM, devices and every volume of a running instance, as one tag
/// (`snapshot-save`; the first volume holds the state). The VM pauses
/// while it is saved and runs again after; returns how long it was paused
/// (from QEMU's STOP and RESUME events), when QEMU said.
pub async fn save_machine(app: &App, id: Uuid, volumes: &[Uuid], tag: &str) -> Result<Option<u64>> {
    let nodes = nodes(volumes);
    let mut q = qmp(app, id).await?;
    // A QEMU that outlived a daemon configured for background saves may
    // still have the capability on; `snapshot-save` is a plain save.
    let _ = q
        .execute(
            "migrate-set-capabilities",
            json!({"capabilities": [{"capability": "background-snapshot", "state": false}]}),
        )
        .await;
    q.run_job(
        "snapshot-save",
        json!({"tag": tag, "vmstate": nodes[0], "devices": nodes}),
        &format!("save-{}", &tag[tag.len() - 8..]),
        SNAPSHOT_JOB_TIMEOUT,
    )
    .await?;
    let _ = q.run_state().await; // collects a RESUME that came after the job
    Ok(paused_ms(&q))
}

/// Load a machine state saved by [`save_machine`] and leave the VM running.
pub async fn load_machine(app: &App, id: Uuid, volumes: &[Uuid], tag: &str) -> Result<()> {
    let nodes = nodes(volumes);
    let mut q = qmp(app, id).await?;
    q.run_job(
        "snapshot-load",
        json!({"tag": tag, "vmstate": nodes[0], "devices": nodes}),
        &format!("load-{}", &tag[tag.len() - 8..]),
        SNAPSHOT_JOB_TIMEOUT,
    )
    .await?;
    if q.run_state().await? != "running" {
        q.execute("cont", json!({})).await?;
    }
    Ok(())
}

/// Remove a tag from every volume of a running instance.
pub async fn delete_tag_live(app: &App, id: Uuid, volumes: &[Uuid], tag: &str) -> Result<()> {
    let mut q = qmp(app, id).await?;
    q.run_job(
        "snapshot-delete",
        json!({"tag": tag, "devices": nodes(volumes)}),
        &format!("del-{}", &tag[tag.len() - 8..]),
        SNAPSHOT_JOB_TIMEOUT,
    )
    .await
}

/// Start a Stopped instance from within a job that holds its lock.
pub async fn boot_stopped(app: &App, ctx: &JobCtx, id: Uuid) -> Result<()> {
    app.catalog.transition_instance(id, &instance::BOOT)?;
    boot(app, ctx, id).await
}

/// Launch QEMU for an instance the caller moved to Starting; on failure it
/// goes back to Stopped with the error recorded.
pub async fn boot(app: &App, ctx: &JobCtx, id: Uuid) -> Result<()> {
    let inst = app.catalog.instance_by_id(id)?;
    let result: Result<(u32, reprise_qemu::Accel)> = async {
        let accel = preflight(app)?;
        ctx.log(format!("starting QEMU ({})", accel.as_str()));
        let pid = launch(app, &inst, accel).await?;
        Ok((pid, accel))
    }
    .await;
    match result {
        Ok((pid, accel)) => {
            ctx.log(format!("QEMU is running, pid {pid}"));
            app.catalog.set_instance_runtime(
                id,
                InstanceState::Running,
                Some(pid),
                Some(accel.as_str()),
                None,
            )
        }
        Err(e) => {
            app.catalog.set_instance_runtime(
                id,
                InstanceState::Stopped,
                None,
                None,
                Some(&e.message),
            )?;
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_boot_file_is_below_its_directory_without_climbing_out() {
        let dir = Path::new("/data/boot/1");
        assert!(is_below(Path::new("/data/boot/1/kernel"), dir));
        assert!(!is_below(
            Path::new("/data/boot/1/../../../etc/shadow"),
            dir
        ));
        assert!(!is_below(Path::new("/data/boot/10/kernel"), dir));
        assert!(!is_below(Path::new("/srv/images/kernel"), dir));
    }

    #[test]
    fn a_console_log_past_its_limit_is_rotated_and_appended_to_anew() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        // QEMU's side: a file opened for appending, held open.
        let mut qemu = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        qemu.write_all(&vec![b'a'; 3000]).unwrap();
        assert!(!rotate_console_log(&log, 4096).unwrap(), "within the limit");
        qemu.write_all(&vec![b'b'; 2000]).unwrap();
        assert!(rotate_console_log(&log, 4096).unwrap());
        qemu.write_all(b"after").unwrap();
        assert_eq!(
            std::fs::read(&log).unwrap(),
            b"after",
            "written at the new start"
        );
        assert_eq!(
            std::fs::read(dir.path().join("console.log.1"))
                .unwrap()
                .len(),
            5000
        );
        assert!(!rotate_console_log(&dir.path().join("none.log"), 1).unwrap());
    }

    #[test]
    fn a_start_fits_in_the_ram_the_host_lets_guests_have() {
        let gib = 1u64 << 30;
        let fits =
            |asked, running, ratio| host_memory_fits("vm", asked, running, Some(16 * gib), ratio);
        assert!(
            fits(4 * gib, 12 * gib, 1.0).is_ok(),
            "exactly the host's RAM"
        );
        let e = fits(4 * gib, 12 * gib + 1, 1.0).unwrap_err();
        assert_eq!(e.code, "host_memory_short");
        assert!(
            !e.message.contains("16"),
            "no capacity of the host: {}",
            e.message
        );
        assert!(
            fits(8 * gib, 16 * gib, 1.5).is_ok(),
            "overcommitted as allowed"
        );
        assert!(
            host_memory_fits("vm", 1 << 40, 0, None, 1.0).is_ok(),
            "unknown: not judged"
        );
    }

    use super::*;

    #[test]
    fn huge_pages_must_hold_the_whole_ram() {
        let mib = 1 << 20;
        assert!(huge_pages_fit("a", 256 * mib, Some(128)).is_ok());
        let short = huge_pages_fit("a", 256 * mib, Some(127)).unwrap_err();
        assert_eq!(short.code, "huge_pages_short");
        assert!(
            short.message.contains("needs 128") && !short.message.contains("127"),
            "no capacity of the host: {}",
            short.message
        );
        let none = huge_pages_fit("a", 256 * mib, None).unwrap_err();
        assert_eq!(none.code, "huge_pages_short");
        let odd = huge_pages_fit("a", 255 * mib, Some(1000)).unwrap_err();
        assert_eq!(odd.code, "memory_not_huge_page_multiple");
    }
}
