//! Launching QEMU and finding it again.
//!
//! QEMU runs daemonized (`-daemonize -pidfile`): it is not a child of the
//! reprise daemon, so stopping or restarting reprise leaves every VM
//! running. A VM is found again from its pidfile, and the pid is trusted
//! only if `/proc/PID/cmdline` carries the instance's `-uuid`.

use crate::cmdline::VmSpec;
use crate::img::missing_or;
use reprise_core::{Error, Result};
use rustix::process::{Pid, Signal};
use std::path::Path;
use std::time::Duration;
use tokio::process::Command;
use uuid::Uuid;

/// The host's huge pages of [`crate::cmdline::HUGE_PAGE`] that no mapping
/// has claimed (free minus reserved), which a QEMU with `huge_pages` needs
/// for its RAM; `None` where the kernel has no such pool.
pub fn free_huge_pages() -> Option<u64> {
    let dir = Path::new("/sys/kernel/mm/hugepages")
        .join(format!("hugepages-{}kB", crate::cmdline::HUGE_PAGE >> 10));
    let read = |name: &str| -> Option<u64> {
        std::fs::read_to_string(dir.join(name))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    Some(read("free_hugepages")?.saturating_sub(read("resv_hugepages")?))
}

/// The host's RAM (`MemTotal` of `/proc/meminfo`), in bytes.
pub fn host_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kib << 10)
}

/// Join each `cgroup.procs` file of `$REPRISE_CGROUP_PROCS` (writing "0"
/// moves the writer), then run the command given.
const JOIN_THEN_EXEC: &str = r#"for procs in $REPRISE_CGROUP_PROCS; do
  echo 0 > "$procs" || { echo "cannot join the control group $procs" >&2; exit 125; }
done
exec "$@""#;

/// Start QEMU for `spec` and return its pid once the VM is set up (QMP and
/// agent sockets listening). A QEMU that refuses the configuration is
/// `qemu_failed` with QEMU's own words.
/// With `group`, QEMU joins that control group before it runs.
pub async fn launch(
    binary: &Path,
    spec: &VmSpec,
    group: Option<&crate::cgroup::Group>,
) -> Result<u32> {
    let run = &spec.run;
    std::fs::create_dir_all(&run.dir).map_err(|e| {
        Error::unavailable(
            "run_dir_failed",
            format!("cannot create {}: {e}", run.dir.display()),
        )
        .with_source(e)
    })?;
    for stale in [run.qmp(), run.agent(), run.pidfile()] {
        let _ = std::fs::remove_file(stale);
    }
    let mut command = match group {
        // A shell joins the group, then becomes QEMU: everything QEMU
        // allocates is counted there from its first page.
        Some(group) => {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(JOIN_THEN_EXEC)
                .arg("reprise-qemu")
                .arg(binary)
                .env("REPRISE_CGROUP_PROCS", group.procs_files());
            c
        }
        None => Command::new(binary),
    };
    command
        .args(spec.args())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let child = command.output();
    let out = tokio::time::timeout(Duration::from_secs(120), child)
        .await
        .map_err(|_| Error::unavailable("qemu_failed", "QEMU did not finish starting in 120 s"))?
        .map_err(|e| missing_or(binary, e))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(Error::unavailable(
            "qemu_failed",
            format!("QEMU refused to start: {}", stderr.trim()),
        ));
    }
    find(&run.pidfile(), spec.id).ok_or_else(|| {
        Error::unavailable(
            "qemu_failed",
            "QEMU started but left no live process behind its pidfile",
        )
    })
}

/// The pid of the live QEMU of instance `id`, from its pidfile.
pub fn find(pidfile: &Path, id: Uuid) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()?;
    is_instance(pid, id).then_some(pid)
}

/// Whether `pid` is alive and is the QEMU of instance `id`.
pub fn is_instance(pid: u32, id: Uuid) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    if is_zombie(pid) {
        return false;
    }
    let needle = format!("-uuid\0{id}\0");
    cmdline
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// SIGKILL, the last resort after a graceful quit failed.
pub fn kill(pid: u32, id: Uuid) {
    if !is_instance(pid, id) {
        return;
    }
    if let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
        let _ = rustix::process::kill_process(pid, Signal::Kill);
    }
}

/// Wait until instance `id`'s process `pid` is gone; false on timeout.
pub async fn wait_exit(pid: u32, id: Uuid, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while is_instance(pid, id) {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}
