//! The rules of a new instance that need no I/O: checked before anything
//! is opened, looked up or recorded, and unit-tested with literal requests.
//! `instances::create_with` applies them, then does the I/O the plan names.

use super::parse_size_field;
use reprise_catalog::VolumeRow;
use reprise_core::model::{CreateInstance, VolumeKind, VolumeState};
use reprise_core::{Error, Result};
use uuid::Uuid;

pub const MAX_CPUS: u32 = 64;
pub const MIN_MEMORY: u64 = 64 << 20;
pub const MAX_MEMORY: u64 = 1 << 40;
pub const DEFAULT_MEMORY: &str = "512M";

/// Where the root disk comes from, as the request says.
#[derive(Debug, PartialEq, Eq)]
pub enum RootSource {
    /// No root disk: the guest boots a kernel directly.
    None,
    Blank(u64),
    /// An image to import (an upload or, for the admin, a host file).
    Image,
    /// A template of the account, by name or id.
    Template(String),
    /// A snapshot the caller already stored (a clone).
    Stored,
}

/// What the request asks for, checked.
#[derive(Debug, PartialEq, Eq)]
pub struct Shape {
    pub cpus: u32,
    pub memory: u64,
    pub root: RootSource,
}

/// Check a request's own fields. `kernel_given`: a kernel comes with it
/// (or is inherited); `stored_root`: the caller brings the root.
pub fn shape(req: &CreateInstance, kernel_given: bool, stored_root: bool) -> Result<Shape> {
    reprise_core::name::validate_name("instance", &req.name)?;
    let cpus = req.cpus.unwrap_or(1);
    if cpus == 0 || cpus > MAX_CPUS {
        return Err(Error::invalid(
            "cpus_invalid",
            format!("cpus {cpus} is out of range: 1 to {MAX_CPUS}"),
        ));
    }
    let memory_text = req.memory.as_deref().unwrap_or(DEFAULT_MEMORY);
    let memory = parse_size_field("memory", memory_text, MAX_MEMORY)?;
    if memory < MIN_MEMORY || memory % (1 << 20) != 0 {
        return Err(Error::invalid(
            "memory_invalid",
            format!("memory '{memory_text}' must be a whole number of MiB, at least 64M"),
        ));
    }
    let initrd_given = req.initrd.is_some() || req.initrd_upload.is_some();
    if !kernel_given && (initrd_given || req.append.is_some()) {
        return Err(Error::invalid(
            "kernel_missing",
            "--initrd and --append need --kernel",
        ));
    }
    let image_given = req.image.is_some() || req.image_upload.is_some();
    let sources = [req.root_size.is_some(), image_given, req.template.is_some()];
    if sources.iter().filter(|s| **s).count() > 1 {
        return Err(Error::invalid(
            "root_conflict",
            "give one of a root size, an image or a template",
        ));
    }
    let root = match (&req.root_size, image_given, &req.template) {
        _ if stored_root => RootSource::Stored,
        (Some(size), _, _) => {
            RootSource::Blank(parse_size_field("root size", size, super::MAX_VOLUME_SIZE)?)
        }
        (_, true, _) => RootSource::Image,
        (_, _, Some(t)) => RootSource::Template(t.clone()),
        (None, false, None) if kernel_given => RootSource::None,
        (None, false, None) => {
            return Err(Error::invalid(
                "root_missing",
                "an instance needs a root disk: give a root size, an image, a template, or a kernel to boot directly",
            ))
        }
    };
    Ok(Shape { cpus, memory, root })
}

/// A volume is attached on its own host: the instance's QEMU opens its
/// file there.
pub fn check_same_host(v: &VolumeRow, host: &str) -> Result<()> {
    if v.host == host {
        return Ok(());
    }
    Err(Error::invalid(
        "host_mismatch",
        format!(
            "volume '{}' is on host '{}', the instance on '{host}': a volume is attached on its own host \
             (make a snapshot of it and a volume from the snapshot on the instance's host)",
            v.name, v.host
        ),
    ))
}

/// Check the data volumes a request names (looked up in the caller's
/// account, in the order given) against the instance's zone, its host
/// and its slots.
pub fn check_data_volumes(
    zone: (Uuid, &str),
    host: &str,
    volumes: &[VolumeRow],
    has_root: bool,
) -> Result<()> {
    for (i, v) in volumes.iter().enumerate() {
        if v.kind != VolumeKind::Data || v.instance_id.is_some() || v.state != VolumeState::Ready {
            return Err(Error::conflict(
                "volume_unavailable",
                format!("volume '{}' is not a free, Ready data volume", v.name),
            ));
        }
        if v.zone_id != zone.0 {
            return Err(Error::invalid(
                "zone_mismatch",
                format!(
                    "volume '{}' is in zone '{}', not '{}'",
                    v.name, v.zone, zone.1
                ),
            ));
        }
        check_same_host(v, host)?;
        if volumes[..i].iter().any(|d| d.id == v.id) {
            return Err(Error::invalid(
                "volume_repeated",
                format!("volume '{}' is given twice", v.name),
            ));
        }
    }
    let slots = reprise_qemu::cmdline::DISK_SLOTS as usize;
    if volumes.len() + usize::from(has_root) > slots {
        return Err(Error::invalid(
            "too_many_volumes",
            format!("an instance holds at most {slots} volumes"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(body: serde_json::Value) -> CreateInstance {
        serde_json::from_value(body).expect("a valid request body")
    }

    fn code(r: Result<Shape>) -> String {
        r.map(|s| format!("ok {s:?}")).unwrap_or_else(|e| e.code)
    }

    #[test]
    fn requests_are_shaped_or_refused_by_name() {
        let cases = [
            (json!({"name": "vm", "root_size": "1G"}), false, "ok"),
            (json!({"name": "vm", "template": "golden"}), false, "ok"),
            (json!({"name": "vm", "image_upload": "u1"}), false, "ok"),
            (json!({"name": "vm"}), true, "ok"),
            (json!({"name": "vm"}), false, "root_missing"),
            (
                json!({"name": "vm", "root_size": "1G", "template": "t"}),
                false,
                "root_conflict",
            ),
            (
                json!({"name": "vm", "image": "/x", "template": "t"}),
                false,
                "root_conflict",
            ),
            (
                json!({"name": "vm", "root_size": "1G", "cpus": 0}),
                false,
                "cpus_invalid",
            ),
            (
                json!({"name": "vm", "root_size": "1G", "cpus": 65}),
                false,
                "cpus_invalid",
            ),
            (
                json!({"name": "vm", "root_size": "1G", "memory": "32M"}),
                false,
                "memory_invalid",
            ),
            (
                json!({"name": "vm", "root_size": "1G", "memory": "100000K"}),
                false,
                "memory_invalid",
            ),
            (
                json!({"name": "vm", "root_size": "1G", "memory": "lots"}),
                false,
                "size_invalid",
            ),
            (
                json!({"name": "vm", "root_size": "0"}),
                false,
                "size_invalid",
            ),
            (
                json!({"name": "vm", "root_size": "1G", "append": "quiet"}),
                false,
                "kernel_missing",
            ),
            (
                json!({"name": "vm", "root_size": "1G", "initrd_upload": "u"}),
                false,
                "kernel_missing",
            ),
            (
                json!({"name": "-bad", "root_size": "1G"}),
                false,
                "name_invalid",
            ),
        ];
        for (body, kernel, want) in cases {
            let got = code(shape(&request(body.clone()), kernel, false));
            assert!(got.starts_with(want), "{body}: {got}, want {want}");
        }
    }

    #[test]
    fn the_shape_holds_what_was_asked() {
        let s = shape(
            &request(json!({"name": "vm", "cpus": 2, "memory": "1G", "root_size": "10G"})),
            false,
            false,
        )
        .unwrap();
        assert_eq!(
            s,
            Shape {
                cpus: 2,
                memory: 1 << 30,
                root: RootSource::Blank(10 << 30)
            }
        );
        let s = shape(
            &request(json!({"name": "vm", "template": "t"})),
            false,
            true,
        )
        .unwrap();
        assert_eq!(
            (s.cpus, s.memory, s.root),
            (1, 512 << 20, RootSource::Stored),
            "defaults; a stored root wins"
        );
    }

    fn volume(name: &str, zone: Uuid) -> VolumeRow {
        VolumeRow {
            id: Uuid::new_v4(),
            account_id: Uuid::nil(),
            name: name.into(),
            zone_id: zone,
            zone: "z".into(),
            kind: VolumeKind::Data,
            state: VolumeState::Ready,
            size_bytes: 1 << 30,
            path: String::new(),
            instance_id: None,
            instance: None,
            slot: None,
            created_at: chrono::Utc::now(),
            host: "local".into(),
        }
    }

    #[test]
    fn data_volumes_are_free_ready_in_the_zone_once_and_fit() {
        let zone = Uuid::new_v4();
        let z = (zone, "z");
        let a = volume("a", zone);
        assert!(check_data_volumes(z, "local", std::slice::from_ref(&a), true).is_ok());
        let code =
            |vols: &[VolumeRow], root| check_data_volumes(z, "local", vols, root).unwrap_err().code;
        let elsewhere = VolumeRow {
            host: "h2".into(),
            ..a.clone()
        };
        assert_eq!(code(&[elsewhere], true), "host_mismatch");
        let busy = VolumeRow {
            state: VolumeState::Snapshotting,
            ..a.clone()
        };
        assert_eq!(code(&[busy], true), "volume_unavailable");
        let attached = VolumeRow {
            instance_id: Some(Uuid::new_v4()),
            ..a.clone()
        };
        assert_eq!(code(&[attached], true), "volume_unavailable");
        let root = VolumeRow {
            kind: VolumeKind::Root,
            ..a.clone()
        };
        assert_eq!(code(&[root], true), "volume_unavailable");
        assert_eq!(code(&[volume("b", Uuid::new_v4())], true), "zone_mismatch");
        assert_eq!(code(&[a.clone(), a.clone()], true), "volume_repeated");
        let eight: Vec<VolumeRow> = (0..8).map(|i| volume(&format!("v{i}"), zone)).collect();
        assert!(check_data_volumes(z, "local", &eight, false).is_ok());
        assert_eq!(code(&eight, true), "too_many_volumes");
    }
}
