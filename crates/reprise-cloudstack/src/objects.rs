//! reprise's resources in CloudStack's words: the objects CloudStack's
//! API answers (`zone`, `volume`, `snapshot`, `vmsnapshot`, `template`,
//! `virtualmachine`, `snapshotpolicy`, async jobs), with CloudStack's
//! field names and state names. Ids are reprise's UUIDs; every account is
//! in one domain, `ROOT`.

use crate::wire::{time, CsError};
use reprise_core::model::*;
use serde_json::{json, Value};
use uuid::Uuid;

/// The one domain every account is in.
pub const DOMAIN: &str = "ROOT";
pub const DOMAIN_ID: &str = "6c1a2a0e-6f5b-4bde-9d53-5d0b4c5e0001";

/// Who owns what is shown: CloudStack shows the account's name on each
/// object.
#[derive(Debug, Clone, Copy)]
pub struct Owner<'a> {
    pub id: Uuid,
    pub name: &'a str,
}

impl Owner<'_> {
    fn fields(&self, v: &mut Value) {
        v["account"] = json!(self.name);
        v["accountid"] = json!(self.id);
        v["domain"] = json!(DOMAIN);
        v["domainid"] = json!(DOMAIN_ID);
    }
}

/// A CPU and memory size deployed virtual machines get (CloudStack's
/// service offering).
pub struct ServiceOffering {
    pub id: &'static str,
    pub name: &'static str,
    pub cpus: u32,
    pub memory_mib: u64,
}

pub const SERVICE_OFFERINGS: &[ServiceOffering] = &[
    ServiceOffering {
        id: "6c1a2a0e-6f5b-4bde-9d53-5d0b4c5e1001",
        name: "Tiny",
        cpus: 1,
        memory_mib: 256,
    },
    ServiceOffering {
        id: "6c1a2a0e-6f5b-4bde-9d53-5d0b4c5e1002",
        name: "Small",
        cpus: 1,
        memory_mib: 512,
    },
    ServiceOffering {
        id: "6c1a2a0e-6f5b-4bde-9d53-5d0b4c5e1003",
        name: "Medium",
        cpus: 2,
        memory_mib: 1024,
    },
    ServiceOffering {
        id: "6c1a2a0e-6f5b-4bde-9d53-5d0b4c5e1004",
        name: "Large",
        cpus: 2,
        memory_mib: 2048,
    },
    ServiceOffering {
        id: "6c1a2a0e-6f5b-4bde-9d53-5d0b4c5e1005",
        name: "XLarge",
        cpus: 4,
        memory_mib: 4096,
    },
];

/// A blank volume's size (CloudStack's disk offering); `Custom` takes the
/// `size` parameter.
pub struct DiskOffering {
    pub id: &'static str,
    pub name: &'static str,
    /// GiB; 0 for `Custom`.
    pub size_gib: u64,
}

pub const DISK_OFFERINGS: &[DiskOffering] = &[
    DiskOffering {
        id: "6c1a2a0e-6f5b-4bde-9d53-5d0b4c5e2001",
        name: "Custom",
        size_gib: 0,
    },
    DiskOffering {
        id: "6c1a2a0e-6f5b-4bde-9d53-5d0b4c5e2002",
        name: "Small",
        size_gib: 5,
    },
    DiskOffering {
        id: "6c1a2a0e-6f5b-4bde-9d53-5d0b4c5e2003",
        name: "Medium",
        size_gib: 20,
    },
    DiskOffering {
        id: "6c1a2a0e-6f5b-4bde-9d53-5d0b4c5e2004",
        name: "Large",
        size_gib: 100,
    },
];

/// The one OS type (reprise boots what the image holds).
pub const OS_TYPE_ID: &str = "6c1a2a0e-6f5b-4bde-9d53-5d0b4c5e3001";

pub fn service_offering(o: &ServiceOffering) -> Value {
    json!({
        "id": o.id,
        "name": o.name,
        "displaytext": format!("{} vCPU, {} MiB", o.cpus, o.memory_mib),
        "cpunumber": o.cpus,
        "cpuspeed": 1000,
        "memory": o.memory_mib,
        "storagetype": "shared",
        "offerha": false,
        "limitcpuuse": false,
        "iscustomized": false,
        "issystem": false,
        "defaultuse": false,
    })
}

pub fn disk_offering(o: &DiskOffering) -> Value {
    json!({
        "id": o.id,
        "name": o.name,
        "displaytext": if o.size_gib == 0 { "Custom size".to_string() } else { format!("{} GiB", o.size_gib) },
        "disksize": o.size_gib,
        "iscustomized": o.size_gib == 0,
        "storagetype": "shared",
        "provisioningtype": "thin",
    })
}

pub fn os_type() -> Value {
    json!({
        "id": OS_TYPE_ID,
        "description": "Other Linux (64-bit)",
        "oscategoryid": OS_TYPE_ID,
        "oscategoryname": "Linux",
        "isuserdefined": false,
    })
}

pub fn zone(z: &Zone) -> Value {
    json!({
        "id": z.id,
        "name": z.name,
        "allocationstate": "Enabled",
        "networktype": "Basic",
        "localstorageenabled": false,
        "securitygroupsenabled": false,
        "tags": [],
    })
}

fn volume_type(kind: VolumeKind) -> &'static str {
    match kind {
        VolumeKind::Root => "ROOT",
        VolumeKind::Data => "DATADISK",
    }
}

pub fn volume_state(state: VolumeState) -> &'static str {
    match state {
        VolumeState::Creating => "Creating",
        VolumeState::Ready => "Ready",
        VolumeState::Snapshotting => "Snapshotting",
        VolumeState::Reverting => "RevertSnapshotting",
        VolumeState::Error => "Error",
    }
}

pub fn volume(v: &Volume, owner: Owner) -> Value {
    let mut out = json!({
        "id": v.id,
        "name": v.name,
        "zoneid": v.zone_id,
        "zonename": v.zone,
        "type": volume_type(v.kind),
        "size": v.size_bytes,
        "state": volume_state(v.state),
        "created": time(v.created_at),
        "hypervisor": "KVM",
        "storagetype": "shared",
        "provisioningtype": "thin",
        "destroyed": false,
        "isextractable": false,
        "displayvolume": true,
        "tags": [],
    });
    if let Some(vm) = v.instance_id {
        out["virtualmachineid"] = json!(vm);
        out["vmname"] = json!(v.instance);
        out["vmdisplayname"] = json!(v.instance);
    }
    owner.fields(&mut out);
    out
}

/// CloudStack's number for an interval type (`intervaltype` in policies).
pub fn interval_number(name: &str) -> Option<u8> {
    match name.to_ascii_uppercase().as_str() {
        "HOURLY" | "0" => Some(0),
        "DAILY" | "1" => Some(1),
        "WEEKLY" | "2" => Some(2),
        "MONTHLY" | "3" => Some(3),
        _ => None,
    }
}

pub fn interval_name(number: u8) -> &'static str {
    ["HOURLY", "DAILY", "WEEKLY", "MONTHLY"][number.min(3) as usize]
}

/// What CloudStack knows of a snapshot beyond reprise's row.
pub struct SnapshotContext<'a> {
    pub zone_id: Option<Uuid>,
    pub volume_type: Option<VolumeKind>,
    /// The interval type of the policy that took it (none: by hand).
    pub interval: Option<&'a str>,
}

pub fn snapshot(s: &Snapshot, cx: &SnapshotContext, owner: Owner) -> Value {
    let kind = match (s.policy_id, cx.interval) {
        (None, _) => "MANUAL",
        (Some(_), Some(i)) => interval_name(interval_number(i).unwrap_or(1)),
        (Some(_), None) => "RECURRING",
    };
    let mut out = json!({
        "id": s.id,
        "name": s.name,
        "volumeid": s.volume_id,
        "volumename": s.volume,
        "state": s.state.as_str(),
        "snapshottype": kind,
        "intervaltype": if kind == "MANUAL" { "MANUAL" } else { kind },
        "virtualsize": s.size_bytes,
        "physicalsize": s.stored_bytes.unwrap_or(0),
        "created": time(s.created_at),
        "locationtype": "Secondary",
        "revertable": s.state == SnapshotState::BackedUp,
        "zonename": s.zone,
        "tags": [],
    });
    if let Some(z) = cx.zone_id {
        out["zoneid"] = json!(z);
    }
    if let Some(k) = cx.volume_type {
        out["volumetype"] = json!(volume_type(k));
    }
    if let Some(e) = &s.error {
        out["errortext"] = json!(e);
    }
    owner.fields(&mut out);
    out
}

pub fn point_state(state: PointState) -> &'static str {
    match state {
        PointState::Creating => "Creating",
        PointState::Ready => "Ready",
        PointState::Reverting => "Reverting",
        PointState::Deleting => "Expunging",
        PointState::Error => "Error",
    }
}

pub fn vm_snapshot(p: &Point, zone_id: Option<Uuid>, owner: Owner) -> Value {
    let mut out = json!({
        "id": p.id,
        "name": p.name,
        "displayname": p.name,
        "description": p.description,
        "state": point_state(p.state),
        "type": if p.memory { "DiskAndMemory" } else { "Disk" },
        "current": p.current,
        "virtualmachineid": p.instance_id,
        "virtualmachinename": p.instance,
        "created": time(p.created_at),
        "hypervisor": "KVM",
        "tags": [],
    });
    if let Some(parent) = p.parent_id {
        out["parent"] = json!(parent);
    }
    if let Some(z) = zone_id {
        out["zoneid"] = json!(z);
    }
    owner.fields(&mut out);
    out
}

pub fn template(t: &Template, zone: Option<&Zone>, owner: Owner) -> Value {
    let mut out = json!({
        "id": t.id,
        "name": t.name,
        "displaytext": t.name,
        "ispublic": false,
        "isfeatured": false,
        "isready": true,
        "crossZones": true,
        "format": "QCOW2",
        "hypervisor": "KVM",
        "templatetype": "USER",
        "size": t.size_bytes,
        "created": time(t.created_at),
        "ostypeid": OS_TYPE_ID,
        "ostypename": "Other Linux (64-bit)",
        "passwordenabled": false,
        "isextractable": false,
        "status": "Download Complete",
        "tags": [],
    });
    if let Some(s) = t.source_snapshot_id {
        out["snapshotid"] = json!(s);
    }
    if let Some(z) = zone {
        out["zoneid"] = json!(z.id);
        out["zonename"] = json!(z.name);
    }
    owner.fields(&mut out);
    out
}

pub fn virtual_machine(i: &Instance, owner: Owner) -> Value {
    let memory_mib = i.memory_bytes >> 20;
    let offering = SERVICE_OFFERINGS
        .iter()
        .find(|o| o.cpus == i.cpus && o.memory_mib == memory_mib);
    let mut out = json!({
        "id": i.id,
        "name": i.name,
        "displayname": i.name,
        "state": i.state.as_str(),
        "zoneid": i.zone_id,
        "zonename": i.zone,
        "cpunumber": i.cpus,
        "memory": memory_mib,
        "hypervisor": "KVM",
        "created": time(i.created_at),
        "rootdeviceid": 0,
        "rootdevicetype": "ROOT",
        "haenable": false,
        "passwordenabled": false,
        "isdynamicallyscalable": false,
        "guestosid": OS_TYPE_ID,
        "nic": [],
        "securitygroup": [],
        "affinitygroup": [],
        "details": {},
        "tags": [],
    });
    if let Some(o) = offering {
        out["serviceofferingid"] = json!(o.id);
        out["serviceofferingname"] = json!(o.name);
    }
    if let Some(p) = i.current_point_id {
        out["vmsnapshotid"] = json!(p);
    }
    owner.fields(&mut out);
    out
}

pub fn snapshot_policy(p: &Policy) -> Value {
    json!({
        "id": p.id,
        "volumeid": p.volume_id,
        "intervaltype": p.interval_type.as_deref().and_then(interval_number),
        "schedule": p.cloudstack_schedule,
        "timezone": p.timezone,
        "maxsnaps": p.keep.last,
        "fordisplay": true,
        "tags": [],
    })
}

/// CloudStack's command class and instance type for a reprise job kind.
fn job_command(kind: &str) -> (String, &'static str) {
    let base = "org.apache.cloudstack.api.command.user";
    let (cmd, instance) = match kind {
        "snapshot.create" => ("snapshot.CreateSnapshotCmd", "Snapshot"),
        "snapshot.delete" => ("snapshot.DeleteSnapshotCmd", "Snapshot"),
        "volume.revert" => ("snapshot.RevertSnapshotCmd", "Volume"),
        "volume.restore" | "volume.create" => ("volume.CreateVolumeCmd", "Volume"),
        "volume.attach" => ("volume.AttachVolumeCmd", "Volume"),
        "volume.detach" => ("volume.DetachVolumeCmd", "Volume"),
        "template.create" | "template.import" => ("template.CreateTemplateCmd", "Template"),
        "template.delete" => ("template.DeleteTemplateCmd", "Template"),
        "instance.create" => ("vm.DeployVMCmd", "VirtualMachine"),
        "instance.start" => ("vm.StartVMCmd", "VirtualMachine"),
        "instance.stop" => ("vm.StopVMCmd", "VirtualMachine"),
        "instance.restart" => ("vm.RebootVMCmd", "VirtualMachine"),
        "instance.delete" => ("vm.DestroyVMCmd", "VirtualMachine"),
        "point.create" => ("vmsnapshot.CreateVMSnapshotCmd", "VMSnapshot"),
        "point.revert" => ("vmsnapshot.RevertToVMSnapshotCmd", "VMSnapshot"),
        "point.delete" | "point.delete_all" => ("vmsnapshot.DeleteVMSnapshotCmd", "VMSnapshot"),
        _ => return ("reprise".into(), "None"),
    };
    (format!("{base}.{cmd}"), instance)
}

/// Where a job stands, and what it produced.
pub enum Outcome {
    Pending,
    /// The result object under its key (`{"snapshot": {...}}`), or
    /// `{"success": true}`.
    Succeeded(Value),
    Failed(CsError),
}

/// A job as `queryAsyncJobResult` and `listAsyncJobs` show it.
pub fn async_job(job: &Job, outcome: Outcome) -> Value {
    let (cmd, instance_type) = job_command(&job.kind);
    let (status, code, result) = match outcome {
        Outcome::Pending => (0, 0, None),
        Outcome::Succeeded(v) => (1, 0, Some(v)),
        Outcome::Failed(e) => (
            2,
            e.errorcode,
            Some(
                json!({"errorcode": e.errorcode, "cserrorcode": e.cserrorcode, "errortext": e.errortext}),
            ),
        ),
    };
    let mut out = json!({
        "jobid": job.id,
        "accountid": job.account_id,
        "userid": job.account_id,
        "cmd": cmd,
        "jobstatus": status,
        "jobprocstatus": 0,
        "jobresultcode": code,
        "jobresulttype": "object",
        "jobinstancetype": instance_type,
        "jobinstanceid": job.target_id,
        "created": time(job.created_at),
    });
    if let Some(r) = result {
        out["jobresult"] = r;
    }
    if let Some(done) = job.finished_at {
        out["completed"] = json!(time(done));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_types_by_name_or_number() {
        for (name, n) in [("HOURLY", 0), ("daily", 1), ("WEEKLY", 2), ("3", 3)] {
            assert_eq!(interval_number(name), Some(n));
        }
        assert_eq!(interval_number("yearly"), None);
        assert_eq!(interval_name(2), "WEEKLY");
    }

    #[test]
    fn offerings_have_distinct_ids() {
        let mut ids: Vec<&str> = SERVICE_OFFERINGS.iter().map(|o| o.id).collect();
        ids.extend(DISK_OFFERINGS.iter().map(|o| o.id));
        ids.extend([OS_TYPE_ID, DOMAIN_ID]);
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n);
        assert!(ids.iter().all(|i| Uuid::parse_str(i).is_ok()));
    }
}
