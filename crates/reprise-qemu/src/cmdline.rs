//! The QEMU command line of an instance, as pure data.
//!
//! Layout (q35): every disk sits on its own `pcie-root-port` (`rp0`…), so a
//! slot freed by a detach takes a hot-plugged disk later; disks are
//! `-blockdev` qcow2 nodes named from the volume id ([`node_name`]), so a
//! node can be found again after a daemon restart. QMP, the guest agent's
//! virtio-serial port and the serial console live in the instance's run
//! directory ([`RunPaths`]).

use crate::Accel;
use serde_json::json;
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// How many PCIe root ports an instance gets, hence how many disks it can
/// have at once.
pub const DISK_SLOTS: u32 = 8;

/// Files of one instance's run directory.
#[derive(Debug, Clone)]
pub struct RunPaths {
    pub dir: PathBuf,
}

impl RunPaths {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        RunPaths { dir: dir.into() }
    }
    pub fn qmp(&self) -> PathBuf {
        self.dir.join("qmp.sock")
    }
    pub fn agent(&self) -> PathBuf {
        self.dir.join("qga.sock")
    }
    pub fn console(&self) -> PathBuf {
        self.dir.join("console.log")
    }
    pub fn pidfile(&self) -> PathBuf {
        self.dir.join("qemu.pid")
    }
}

/// A disk of the instance, on PCIe slot `slot`.
#[derive(Debug, Clone)]
pub struct Disk {
    pub volume_id: Uuid,
    pub path: PathBuf,
    pub slot: u32,
}

#[derive(Debug, Clone)]
pub struct VmSpec {
    pub id: Uuid,
    pub name: String,
    pub cpus: u32,
    pub memory_mib: u64,
    /// Guest RAM on the host's 2 MiB huge pages (see [`HUGE_PAGE`]).
    pub huge_pages: bool,
    pub accel: Accel,
    /// In boot order: the guest sees them as vda, vdb… in this order.
    pub disks: Vec<Disk>,
    pub kernel: Option<String>,
    pub initrd: Option<String>,
    pub append: Option<String>,
    pub run: RunPaths,
    /// Start with the CPUs stopped (`-S`), e.g. to load a saved state first.
    pub start_paused: bool,
    /// Wait for a saved machine state (`-incoming defer`, then
    /// `migrate-incoming`) instead of booting.
    pub incoming: bool,
}

/// The huge page size guest RAM uses when asked to (`hugetlbfs`, 2 MiB).
///
/// Why: QEMU 7.2's background snapshot write-protects every page table
/// entry of the guest's RAM while the guest is paused, and lifts the
/// protection page by page as it writes them out, splitting the
/// transparent huge pages of anonymous memory into 4 KiB entries. From the
/// second memory point on, the pause grows with RAM (measured here under
/// TCG: about 20 ms per GiB); on hugetlbfs pages, which are never split,
/// it stays at a few milliseconds. The memory backend takes the id of
/// the machine's default RAM (`pc.ram`), so a state saved with either
/// kind of RAM loads into the other.
pub const HUGE_PAGE: u64 = 2 << 20;

/// The qcow2 node of a volume: `vol-` and 12 hex digits of its id (QEMU
/// caps node names at 31 characters).
pub fn node_name(volume_id: Uuid) -> String {
    format!("vol-{}", &volume_id.simple().to_string()[..12])
}

/// The guest device of a volume.
pub fn device_id(volume_id: Uuid) -> String {
    format!("dev-{}", &volume_id.simple().to_string()[..12])
}

pub fn slot_bus(slot: u32) -> String {
    format!("rp{slot}")
}

/// The `blockdev-add` arguments of a volume (also the `-blockdev` value).
pub fn blockdev(volume_id: Uuid, path: &Path) -> serde_json::Value {
    let node = node_name(volume_id);
    json!({
        "driver": "qcow2",
        "node-name": node,
        "discard": "unmap",
        "file": {
            "driver": "file",
            "node-name": format!("file-{}", &node[4..]),
            "filename": path.to_string_lossy(),
            "discard": "unmap",
        }
    })
}

/// The `device_add` arguments that plug a volume's node into its slot.
pub fn disk_device(volume_id: Uuid, slot: u32) -> serde_json::Value {
    json!({
        "driver": "virtio-blk-pci",
        "id": device_id(volume_id),
        "drive": node_name(volume_id),
        "bus": slot_bus(slot),
    })
}

fn device_arg(value: &serde_json::Value) -> String {
    let obj = value.as_object().expect("device is an object");
    let mut parts = vec![obj["driver"].as_str().unwrap_or_default().to_string()];
    for (k, v) in obj.iter().filter(|(k, _)| *k != "driver") {
        parts.push(format!("{k}={}", v.as_str().unwrap_or_default()));
    }
    parts.join(",")
}

impl VmSpec {
    /// The arguments after the QEMU binary. QEMU daemonizes once the VM is
    /// set up, leaving its pid in the run directory: it outlives the daemon
    /// that started it.
    pub fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
        let run = &self.run;
        push(&[
            "-name",
            &format!("guest={},debug-threads=on", self.name.replace(',', ",,")),
        ]);
        push(&["-uuid", &self.id.to_string()]);
        if self.huge_pages {
            push(&[
                "-object",
                &format!(
                    "memory-backend-memfd,id=pc.ram,size={}M,hugetlb=on,hugetlbsize={HUGE_PAGE},prealloc=on",
                    self.memory_mib
                ),
                "-machine",
                "q35,memory-backend=pc.ram",
            ]);
        } else {
            push(&["-machine", "q35"]);
        }
        match self.accel {
            Accel::Kvm => push(&["-accel", "kvm", "-cpu", "host"]),
            Accel::Tcg => push(&["-accel", "tcg", "-cpu", "max"]),
        }
        push(&[
            "-smp",
            &self.cpus.to_string(),
            "-m",
            &format!("{}M", self.memory_mib),
        ]);
        push(&[
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-nic",
            "none",
        ]);
        push(&["-msg", "timestamp=on"]);
        push(&[
            "-chardev",
            &format!(
                "socket,id=qmp,path={},server=on,wait=off",
                run.qmp().display()
            ),
            "-mon",
            "chardev=qmp,mode=control",
        ]);
        push(&[
            "-chardev",
            &format!("file,id=console,path={},append=on", run.console().display()),
            "-serial",
            "chardev:console",
        ]);
        push(&[
            "-device",
            "virtio-serial-pci,id=vser0",
            "-chardev",
            &format!(
                "socket,id=qga0,path={},server=on,wait=off",
                run.agent().display()
            ),
            "-device",
            "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
        ]);
        for slot in 0..DISK_SLOTS {
            push(&[
                "-device",
                &format!(
                    "pcie-root-port,id={},bus=pcie.0,chassis={}",
                    slot_bus(slot),
                    slot + 1
                ),
            ]);
        }
        for disk in &self.disks {
            push(&[
                "-blockdev",
                &blockdev(disk.volume_id, &disk.path).to_string(),
            ]);
            push(&[
                "-device",
                &device_arg(&disk_device(disk.volume_id, disk.slot)),
            ]);
        }
        if let Some(k) = &self.kernel {
            push(&["-kernel", k]);
        }
        if let Some(i) = &self.initrd {
            push(&["-initrd", i]);
        }
        if let Some(app) = &self.append {
            push(&["-append", app]);
        }
        if self.start_paused {
            push(&["-S"]);
        }
        if self.incoming {
            push(&["-incoming", "defer"]);
        }
        push(&["-daemonize", "-pidfile", &run.pidfile().to_string_lossy()]);
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> VmSpec {
        let vol = Uuid::parse_str("6f1c3e2a-8d7b-4c59-9a10-2b3c4d5e6f70").unwrap();
        VmSpec {
            id: Uuid::parse_str("11111111-2222-3333-4444-555555555555").unwrap(),
            name: "web,1".into(),
            cpus: 2,
            memory_mib: 512,
            huge_pages: false,
            accel: Accel::Tcg,
            disks: vec![Disk {
                volume_id: vol,
                path: "/z/a,b.qcow2".into(),
                slot: 0,
            }],
            kernel: Some("/k".into()),
            initrd: None,
            append: Some("console=ttyS0".into()),
            run: RunPaths::new("/run/i"),
            start_paused: false,
            incoming: false,
        }
    }

    #[test]
    fn command_line_has_every_channel() {
        let args = spec().args();
        let joined = args.join(" ");
        assert!(joined.contains("-accel tcg -cpu max"));
        assert!(
            joined.contains("guest=web,,1"),
            "commas in names are escaped"
        );
        assert!(joined.contains("socket,id=qmp,path=/run/i/qmp.sock,server=on,wait=off"));
        assert!(joined.contains("name=org.qemu.guest_agent.0"));
        assert!(joined.contains("path=/run/i/console.log"));
        assert!(joined.contains("-uuid 11111111-2222-3333-4444-555555555555"));
        assert_eq!(
            args.iter()
                .filter(|a| a.starts_with("pcie-root-port"))
                .count(),
            8
        );
        assert!(
            joined.contains("virtio-blk-pci,bus=rp0,drive=vol-6f1c3e2a8d7b,id=dev-6f1c3e2a8d7b")
        );
        assert!(!joined.contains("-initrd"));
        assert!(joined.ends_with("-daemonize -pidfile /run/i/qemu.pid"));
    }

    #[test]
    fn huge_pages_back_the_default_ram_id() {
        let plain = spec().args().join(" ");
        assert!(plain.contains("-machine q35 ") && !plain.contains("hugetlb"));
        let huge = VmSpec {
            huge_pages: true,
            ..spec()
        };
        let joined = huge.args().join(" ");
        assert!(joined.contains(
            "-object memory-backend-memfd,id=pc.ram,size=512M,hugetlb=on,hugetlbsize=2097152,prealloc=on -machine q35,memory-backend=pc.ram "
        ), "{joined}");
        assert!(joined.contains("-m 512M"), "the size stays stated");
    }

    #[test]
    fn blockdev_is_json_so_paths_need_no_escaping() {
        let args = spec().args();
        let i = args.iter().position(|a| a == "-blockdev").unwrap();
        let v: serde_json::Value = serde_json::from_str(&args[i + 1]).unwrap();
        assert_eq!(v["file"]["filename"], "/z/a,b.qcow2");
        assert_eq!(v["node-name"], "vol-6f1c3e2a8d7b");
    }
}
