//! Each QEMU in a control group of its own, limited by its instance: CPU
//! time at most its vCPUs, memory at most its RAM and QEMU's own overhead
//! ([`memory_limit`]). A QEMU that takes more — a hostile guest driving a
//! device model, a leak — is throttled, or killed by the kernel within its
//! group, instead of starving the host, the daemon or other tenants.
//!
//! The groups are `reprise/<instance id>` under the host's hierarchy:
//! - cgroup v2 (`/sys/fs/cgroup/cgroup.controllers` exists): `memory.max`
//!   and `cpu.max`, the `memory` and `cpu` controllers enabled for
//!   `reprise`;
//! - cgroup v1 (the `memory` and `cpu` hierarchies mounted apart, as on a
//!   host in hybrid mode): `memory.limit_in_bytes` and `cpu.cfs_quota_us`.
//!
//! QEMU joins its group before it runs (a shell joins it, then becomes
//! QEMU), so everything it ever allocates is counted there. Invariant: no QEMU of
//! reprise runs outside its group once groups are on (a group that cannot
//! be made or joined fails the start).

use reprise_core::{Error, Result};
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// The CPU period the quotas are written against (100 ms).
const PERIOD_US: u64 = 100_000;

/// The host's control group hierarchy, as reprise uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// Unified: one directory, both controllers.
    V2(PathBuf),
    /// Legacy: the memory and the cpu hierarchies.
    V1 { memory: PathBuf, cpu: PathBuf },
}

/// The memory a QEMU may use for `guest_bytes` of guest RAM: the RAM, a
/// quarter more for its page tables, device buffers and TCG's code cache,
/// and 512 MiB for the process itself.
pub fn memory_limit(guest_bytes: u64) -> u64 {
    guest_bytes + guest_bytes / 4 + (512 << 20)
}

impl Hierarchy {
    /// The host's hierarchy under `root` (`/sys/fs/cgroup`), with
    /// reprise's own group made in it; `None` where there is none this
    /// process may write (not root, no memory controller).
    pub fn probe(root: &Path) -> Option<Hierarchy> {
        let found = if root.join("cgroup.controllers").exists() {
            let controllers = std::fs::read_to_string(root.join("cgroup.controllers")).ok()?;
            let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
            if !(has("memory") && has("cpu")) {
                return None;
            }
            Hierarchy::V2(root.to_path_buf())
        } else if root.join("memory/memory.limit_in_bytes").exists()
            && root.join("cpu/cpu.cfs_quota_us").exists()
        {
            Hierarchy::V1 {
                memory: root.join("memory"),
                cpu: root.join("cpu"),
            }
        } else {
            return None;
        };
        found.make_own().ok()?;
        Some(found)
    }

    /// The directories of reprise's own group.
    fn own(&self) -> Vec<PathBuf> {
        match self {
            Hierarchy::V2(root) => vec![root.join("reprise")],
            Hierarchy::V1 { memory, cpu } => vec![memory.join("reprise"), cpu.join("reprise")],
        }
    }

    fn make_own(&self) -> Result<()> {
        for dir in self.own() {
            mkdir(&dir)?;
        }
        if let Hierarchy::V2(root) = self {
            // The controllers reach reprise's group, then its children.
            write(&root.join("cgroup.subtree_control"), "+memory +cpu")?;
            write(&root.join("reprise/cgroup.subtree_control"), "+memory +cpu")?;
        }
        Ok(())
    }

    /// Make (again) instance `id`'s group with its limits, for a QEMU to
    /// join as it starts.
    pub fn group(&self, id: Uuid, cpus: u32, guest_bytes: u64) -> Result<Group> {
        let dirs: Vec<PathBuf> = self.own().iter().map(|d| d.join(id.to_string())).collect();
        if let Some(d) = dirs
            .iter()
            .find(|d| d.to_string_lossy().contains(char::is_whitespace))
        {
            return Err(Error::invalid(
                "cgroup_failed",
                format!("the control group path {} has a space in it", d.display()),
            ));
        }
        for dir in &dirs {
            // Left by a QEMU that ended: empty, so it goes.
            let _ = std::fs::remove_dir(dir);
            mkdir(dir)?;
        }
        let memory = memory_limit(guest_bytes).to_string();
        let quota = u64::from(cpus) * PERIOD_US;
        match self {
            Hierarchy::V2(_) => {
                write(&dirs[0].join("memory.max"), &memory)?;
                write(&dirs[0].join("cpu.max"), &format!("{quota} {PERIOD_US}"))?;
            }
            Hierarchy::V1 { .. } => {
                write(&dirs[0].join("memory.limit_in_bytes"), &memory)?;
                write(&dirs[1].join("cpu.cfs_period_us"), &PERIOD_US.to_string())?;
                write(&dirs[1].join("cpu.cfs_quota_us"), &quota.to_string())?;
            }
        }
        Ok(Group { dirs })
    }

    /// Remove instance `id`'s group (once its QEMU is gone; a group with a
    /// process in it stays).
    pub fn remove(&self, id: Uuid) {
        for dir in self.own() {
            let _ = std::fs::remove_dir(dir.join(id.to_string()));
        }
    }
}

/// One instance's group, ready to be joined.
#[derive(Debug, Clone)]
pub struct Group {
    pub dirs: Vec<PathBuf>,
}

impl Group {
    /// The `cgroup.procs` files a process writes to join the group,
    /// separated by spaces (the paths have none: `/sys/fs/cgroup/…/<id>`).
    pub fn procs_files(&self) -> String {
        self.dirs
            .iter()
            .map(|d| d.join("cgroup.procs").display().to_string())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn mkdir(dir: &Path) -> Result<()> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(cgroup_error(dir, e)),
    }
}

fn write(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value).map_err(|e| cgroup_error(path, e))
}

fn cgroup_error(path: &Path, e: std::io::Error) -> Error {
    Error::unavailable(
        "cgroup_failed",
        format!("the instance's control group ({}): {e}", path.display()),
    )
    .with_source(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_limit_leaves_qemu_room_above_the_guest() {
        assert_eq!(memory_limit(256 << 20), (256 + 64 + 512) << 20);
        assert_eq!(memory_limit(4 << 30), (4096 + 1024 + 512) << 20);
    }

    /// A v2 tree and a v1 tree, as directories: the groups and limits are
    /// written where each expects them.
    #[test]
    fn groups_are_written_for_either_hierarchy() {
        let dir = tempfile::tempdir().unwrap();
        let v2 = dir.path().join("v2");
        std::fs::create_dir_all(&v2).unwrap();
        std::fs::write(v2.join("cgroup.controllers"), "cpuset cpu io memory pids").unwrap();
        let h = Hierarchy::probe(&v2).expect("v2 found");
        assert_eq!(h, Hierarchy::V2(v2.clone()));
        let id = Uuid::new_v4();
        h.group(id, 2, 1 << 30).unwrap();
        let g = v2.join("reprise").join(id.to_string());
        assert_eq!(
            std::fs::read_to_string(g.join("cpu.max")).unwrap(),
            "200000 100000"
        );
        assert_eq!(
            std::fs::read_to_string(g.join("memory.max")).unwrap(),
            memory_limit(1 << 30).to_string()
        );
        assert_eq!(
            std::fs::read_to_string(v2.join("reprise/cgroup.subtree_control")).unwrap(),
            "+memory +cpu"
        );

        let v1 = dir.path().join("v1");
        for (d, f) in [
            ("memory", "memory.limit_in_bytes"),
            ("cpu", "cpu.cfs_quota_us"),
        ] {
            std::fs::create_dir_all(v1.join(d)).unwrap();
            std::fs::write(v1.join(d).join(f), "-1").unwrap();
        }
        let h = Hierarchy::probe(&v1).expect("v1 found");
        h.group(id, 1, 256 << 20).unwrap();
        let cpu = v1.join("cpu/reprise").join(id.to_string());
        assert_eq!(
            std::fs::read_to_string(cpu.join("cpu.cfs_quota_us")).unwrap(),
            "100000"
        );
        let memory = v1.join("memory/reprise").join(id.to_string());
        assert_eq!(
            std::fs::read_to_string(memory.join("memory.limit_in_bytes")).unwrap(),
            memory_limit(256 << 20).to_string()
        );

        let none = dir.path().join("none");
        std::fs::create_dir_all(&none).unwrap();
        assert_eq!(Hierarchy::probe(&none), None);
    }
}
