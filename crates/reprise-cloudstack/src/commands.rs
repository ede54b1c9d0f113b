//! The CloudStack commands reprise serves, with their parameters: what
//! `listApis` answers, and the check that refuses a parameter reprise
//! would not honour.
//!
//! A parameter is served (it does what CloudStack does), ignored (CloudStack
//! clients send it and leaving it out changes nothing reprise does, like
//! `ostypeid` or `displaytext`), or refused with 431 naming it (honouring
//! it would change what the command does, like `networkids` or
//! `ispublic=true`). Map parameters (`details[0].key`) go by their name.

use crate::wire::CsError;
use serde_json::{json, Value};

/// One parameter of a command.
pub struct Param {
    pub name: &'static str,
    pub kind: &'static str,
    pub required: bool,
    pub description: &'static str,
}

pub struct Command {
    pub name: &'static str,
    pub is_async: bool,
    pub description: &'static str,
    pub params: &'static [Param],
    /// Sent by clients, harmless to leave out.
    pub ignored: &'static [&'static str],
}

const fn p(name: &'static str, kind: &'static str, description: &'static str) -> Param {
    Param {
        name,
        kind,
        required: false,
        description,
    }
}

const fn req(name: &'static str, kind: &'static str, description: &'static str) -> Param {
    Param {
        name,
        kind,
        required: true,
        description,
    }
}

/// Every request's own parameters.
const PROTOCOL: &[&str] = &[
    "command",
    "apikey",
    "response",
    "signature",
    "signatureversion",
    "expires",
    "_",
];

/// Parameters of every list command.
const LISTING: &[&str] = &["page", "pagesize", "keyword", "listall", "isrecursive"];

const KEYWORD: Param = p("keyword", "string", "names containing this text");

pub const COMMANDS: &[Command] = &[
    Command {
        name: "listApis",
        is_async: false,
        description: "Lists the commands this endpoint serves.",
        params: &[p("name", "string", "one command")],
        ignored: &[],
    },
    Command {
        name: "listZones",
        is_async: false,
        description: "Lists the zones of the region.",
        params: &[p("id", "uuid", "the zone"), p("name", "string", "the zone's name"), KEYWORD],
        ignored: &["available", "showcapacities", "networktype", "domainid"],
    },
    Command {
        name: "listVolumes",
        is_async: false,
        description: "Lists the account's volumes.",
        params: &[
            p("id", "uuid", "the volume"),
            p("name", "string", "the volume's name"),
            p("virtualmachineid", "uuid", "volumes attached to this virtual machine"),
            p("zoneid", "uuid", "volumes of this zone"),
            p("type", "string", "ROOT or DATADISK"),
            KEYWORD,
        ],
        ignored: &["displayvolume", "listsystemvms", "tags"],
    },
    Command {
        name: "createVolume",
        is_async: true,
        description: "Creates a volume: from a snapshot (in any zone), or blank with a size.",
        params: &[
            p("name", "string", "the volume's name"),
            p("snapshotid", "uuid", "the snapshot whose content it gets"),
            p("zoneid", "uuid", "the zone it is made in"),
            p("diskofferingid", "uuid", "a disk offering (its size)"),
            p("size", "long", "size in GiB (custom disk offering)"),
        ],
        ignored: &["displayvolume"],
    },
    Command {
        name: "deleteVolume",
        is_async: false,
        description: "Deletes a detached volume.",
        params: &[req("id", "uuid", "the volume")],
        ignored: &[],
    },
    Command {
        name: "attachVolume",
        is_async: true,
        description: "Attaches a volume to a virtual machine (hot-plugged when it runs).",
        params: &[
            req("id", "uuid", "the volume"),
            req("virtualmachineid", "uuid", "the virtual machine"),
        ],
        ignored: &[],
    },
    Command {
        name: "detachVolume",
        is_async: true,
        description: "Detaches a data volume from its virtual machine.",
        params: &[req("id", "uuid", "the volume")],
        ignored: &[],
    },
    Command {
        name: "createSnapshot",
        is_async: true,
        description: "Takes a snapshot of a volume into the region's object storage.",
        params: &[
            req("volumeid", "uuid", "the volume"),
            p("name", "string", "the snapshot's name"),
            p("quiescevm", "boolean", "true: freeze the guest's filesystems or fail; false: do not"),
        ],
        ignored: &["asyncbackup", "locationtype"],
    },
    Command {
        name: "listSnapshots",
        is_async: false,
        description: "Lists the account's volume snapshots.",
        params: &[
            p("id", "uuid", "the snapshot"),
            p("volumeid", "uuid", "snapshots of this volume"),
            p("name", "string", "the snapshot's name"),
            p("zoneid", "uuid", "snapshots of volumes of this zone"),
            p("snapshottype", "string", "MANUAL, RECURRING, HOURLY, DAILY, WEEKLY or MONTHLY"),
            p("intervaltype", "string", "HOURLY, DAILY, WEEKLY or MONTHLY"),
            KEYWORD,
        ],
        ignored: &["tags", "locationtype"],
    },
    Command {
        name: "deleteSnapshot",
        is_async: true,
        description: "Deletes a volume snapshot.",
        params: &[req("id", "uuid", "the snapshot")],
        ignored: &[],
    },
    Command {
        name: "revertSnapshot",
        is_async: true,
        description: "Puts a volume back to one of its snapshots.",
        params: &[req("id", "uuid", "the snapshot")],
        ignored: &[],
    },
    Command {
        name: "createTemplate",
        is_async: true,
        description: "Creates a template from a volume snapshot.",
        params: &[
            req("name", "string", "the template's name"),
            req("snapshotid", "uuid", "the snapshot"),
            p("displaytext", "string", "ignored: the name is shown"),
            p("ispublic", "boolean", "only false: templates are the account's own"),
            p("isfeatured", "boolean", "only false"),
        ],
        ignored: &[
            "ostypeid",
            "passwordenabled",
            "requireshvm",
            "bits",
            "isdynamicallyscalable",
            "sshkeyenabled",
            "templatetag",
        ],
    },
    Command {
        name: "listTemplates",
        is_async: false,
        description: "Lists templates: the account's own (self, selfexecutable, executable, all); featured, community and shared are empty.",
        params: &[
            req("templatefilter", "string", "self, selfexecutable, executable, all, featured, community, shared or sharedexecutable"),
            p("id", "uuid", "the template"),
            p("name", "string", "the template's name"),
            KEYWORD,
        ],
        ignored: &["zoneid", "hypervisor", "showremoved", "tags"],
    },
    Command {
        name: "deleteTemplate",
        is_async: true,
        description: "Deletes a template (instances deployed from it keep their volumes).",
        params: &[req("id", "uuid", "the template")],
        ignored: &["zoneid", "forced"],
    },
    Command {
        name: "deployVirtualMachine",
        is_async: true,
        description: "Creates and starts a virtual machine whose root volume is a template's content.",
        params: &[
            req("serviceofferingid", "uuid", "its CPUs and memory"),
            req("templateid", "uuid", "the template"),
            req("zoneid", "uuid", "the zone"),
            p("name", "string", "its name"),
            p("displayname", "string", "its name, when name is absent"),
            p("startvm", "boolean", "false: leave it Stopped"),
            p("details", "map", "cpuNumber and memory (MiB) for a custom offering; reprise's kernelupload, initrdupload and append boot a kernel uploaded to reprise"),
        ],
        ignored: &["hypervisor", "keyboard", "group", "ostypeid", "displayvm"],
    },
    Command {
        name: "listVirtualMachines",
        is_async: false,
        description: "Lists the account's virtual machines.",
        params: &[
            p("id", "uuid", "the virtual machine"),
            p("name", "string", "its name"),
            p("zoneid", "uuid", "virtual machines of this zone"),
            p("state", "string", "Running, Stopped…"),
            KEYWORD,
        ],
        ignored: &["details", "displayvm", "tags"],
    },
    Command {
        name: "startVirtualMachine",
        is_async: true,
        description: "Starts a virtual machine.",
        params: &[req("id", "uuid", "the virtual machine")],
        ignored: &[],
    },
    Command {
        name: "stopVirtualMachine",
        is_async: true,
        description: "Stops a virtual machine (ACPI shutdown, or forced).",
        params: &[
            req("id", "uuid", "the virtual machine"),
            p("forced", "boolean", "power it off"),
        ],
        ignored: &[],
    },
    Command {
        name: "rebootVirtualMachine",
        is_async: true,
        description: "Restarts a virtual machine.",
        params: &[req("id", "uuid", "the virtual machine")],
        ignored: &[],
    },
    Command {
        name: "destroyVirtualMachine",
        is_async: true,
        description: "Destroys a virtual machine and its root volume (always expunged).",
        params: &[
            req("id", "uuid", "the virtual machine"),
            p("expunge", "boolean", "ignored: always expunged"),
        ],
        ignored: &[],
    },
    Command {
        name: "createVMSnapshot",
        is_async: true,
        description: "Takes a recovery point of a virtual machine: its disks, and its memory when asked.",
        params: &[
            req("virtualmachineid", "uuid", "the virtual machine"),
            p("name", "string", "its name"),
            p("description", "string", "its description"),
            p("snapshotmemory", "boolean", "include RAM and device state"),
            p("quiescevm", "boolean", "true: freeze the guest's filesystems or fail; false: do not"),
        ],
        ignored: &["displayname"],
    },
    Command {
        name: "listVMSnapshot",
        is_async: false,
        description: "Lists the account's VM snapshots.",
        params: &[
            p("virtualmachineid", "uuid", "of this virtual machine"),
            p("vmsnapshotid", "uuid", "the VM snapshot"),
            p("name", "string", "its name"),
            p("state", "string", "Creating, Ready, Reverting, Expunging or Error"),
            KEYWORD,
        ],
        ignored: &["tags"],
    },
    Command {
        name: "revertToVMSnapshot",
        is_async: true,
        description: "Reverts a virtual machine to a VM snapshot; answers the virtual machine.",
        params: &[req("vmsnapshotid", "uuid", "the VM snapshot")],
        ignored: &[],
    },
    Command {
        name: "deleteVMSnapshot",
        is_async: true,
        description: "Deletes a VM snapshot.",
        params: &[req("vmsnapshotid", "uuid", "the VM snapshot")],
        ignored: &[],
    },
    Command {
        name: "createSnapshotPolicy",
        is_async: false,
        description: "Schedules snapshots of a volume; one policy per volume and interval type (created again: updated).",
        params: &[
            req("volumeid", "uuid", "the volume"),
            req("intervaltype", "string", "HOURLY (0), DAILY (1), WEEKLY (2) or MONTHLY (3)"),
            req("schedule", "string", "MM, MM:HH, MM:HH:D (1 = Sunday) or MM:HH:DD"),
            req("timezone", "string", "an IANA time zone"),
            req("maxsnaps", "integer", "how many of its snapshots are kept"),
        ],
        ignored: &["fordisplay"],
    },
    Command {
        name: "listSnapshotPolicies",
        is_async: false,
        description: "Lists snapshot policies.",
        params: &[p("volumeid", "uuid", "of this volume"), p("id", "uuid", "the policy")],
        ignored: &["fordisplay"],
    },
    Command {
        name: "updateSnapshotPolicy",
        is_async: false,
        description: "Answers the policy (its display flag is not kept).",
        params: &[req("id", "uuid", "the policy")],
        ignored: &["fordisplay"],
    },
    Command {
        name: "deleteSnapshotPolicies",
        is_async: false,
        description: "Deletes snapshot policies (their snapshots stay).",
        params: &[p("id", "uuid", "the policy"), p("ids", "list", "policies")],
        ignored: &[],
    },
    Command {
        name: "queryAsyncJobResult",
        is_async: false,
        description: "The state and result of an asynchronous job.",
        params: &[req("jobid", "uuid", "the job")],
        ignored: &[],
    },
    Command {
        name: "listAsyncJobs",
        is_async: false,
        description: "Lists the account's recent jobs.",
        params: &[],
        ignored: &["startdate"],
    },
    Command {
        name: "listServiceOfferings",
        is_async: false,
        description: "Lists the CPU and memory sizes virtual machines are deployed with.",
        params: &[p("id", "uuid", "the offering"), p("name", "string", "its name"), KEYWORD],
        ignored: &["issystem", "virtualmachineid", "zoneid"],
    },
    Command {
        name: "listDiskOfferings",
        is_async: false,
        description: "Lists the sizes blank volumes are created with.",
        params: &[p("id", "uuid", "the offering"), p("name", "string", "its name"), KEYWORD],
        ignored: &["zoneid"],
    },
    Command {
        name: "listOsTypes",
        is_async: false,
        description: "Lists guest OS types (one: reprise does not use them).",
        params: &[p("id", "uuid", "the OS type"), KEYWORD],
        ignored: &["description", "oscategoryid"],
    },
];

/// The command named `name` (in any case).
pub fn find(name: &str) -> Option<&'static Command> {
    COMMANDS.iter().find(|c| c.name.eq_ignore_ascii_case(name))
}

/// A parameter's name without its map index: `details[0].append` is
/// `details`.
fn base_name(name: &str) -> String {
    name.split('[').next().unwrap_or(name).to_lowercase()
}

impl Command {
    fn is_list(&self) -> bool {
        self.name.starts_with("list")
    }

    /// Refuse a request that lacks a required parameter or brings one
    /// reprise would not honour.
    pub fn check(&self, params: &[(String, String)]) -> Result<(), CsError> {
        for (name, _) in params {
            let base = base_name(name);
            let known = PROTOCOL.contains(&base.as_str())
                || (self.is_list() && LISTING.contains(&base.as_str()))
                || self.params.iter().any(|p| p.name == base)
                || self.ignored.contains(&base.as_str());
            if !known {
                return Err(CsError::invalid(format!(
                    "parameter '{name}' is not served by reprise's {}: honouring it would change what the command does (see listApis)",
                    self.name
                )));
            }
        }
        for p in self.params.iter().filter(|p| p.required) {
            let given = params
                .iter()
                .any(|(k, v)| base_name(k) == p.name && !v.is_empty());
            if !given {
                return Err(CsError::invalid(format!(
                    "Unable to execute API command {} due to missing parameter {}",
                    self.name.to_lowercase(),
                    p.name
                )));
            }
        }
        Ok(())
    }

    /// The command as `listApis` shows it.
    pub fn describe(&self) -> Value {
        let params: Vec<Value> = self
            .params
            .iter()
            .map(|p| {
                json!({
                    "name": p.name,
                    "type": p.kind,
                    "required": p.required,
                    "description": p.description,
                    "length": 255,
                    "related": "",
                    "since": "",
                })
            })
            .collect();
        json!({
            "name": self.name,
            "description": self.description,
            "isasync": self.is_async,
            "since": "4.0",
            "related": "",
            "params": params,
            "response": [],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parameters_are_served_ignored_or_refused_by_name() {
        let c = find("createsnapshot").unwrap();
        c.check(&pairs(&[
            ("command", "createSnapshot"),
            ("volumeid", "v"),
            ("apiKey", "k"),
            ("asyncbackup", "true"),
        ]))
        .unwrap();
        let e = c
            .check(&pairs(&[("volumeid", "v"), ("policyid", "p")]))
            .unwrap_err();
        assert!(e.errortext.contains("'policyid'"), "{}", e.errortext);
        let e = c.check(&pairs(&[("name", "x")])).unwrap_err();
        assert!(
            e.errortext.contains("missing parameter volumeid"),
            "{}",
            e.errortext
        );
        let d = find("deployVirtualMachine").unwrap();
        d.check(&pairs(&[
            ("serviceofferingid", "s"),
            ("templateid", "t"),
            ("zoneid", "z"),
            ("details[0].append", "quiet"),
        ]))
        .unwrap();
        assert!(d
            .check(&pairs(&[
                ("serviceofferingid", "s"),
                ("templateid", "t"),
                ("zoneid", "z"),
                ("networkids", "n")
            ]))
            .is_err());
        // Listing parameters belong to lists only.
        find("listVolumes")
            .unwrap()
            .check(&pairs(&[("page", "1"), ("pagesize", "2")]))
            .unwrap();
        assert!(find("deleteVolume")
            .unwrap()
            .check(&pairs(&[("id", "v"), ("page", "1")]))
            .is_err());
    }

    #[test]
    fn every_command_describes_itself() {
        for c in COMMANDS {
            let d = c.describe();
            assert_eq!(d["name"], c.name);
            assert!(
                c.params.iter().all(|p| p.name == p.name.to_lowercase()),
                "{}",
                c.name
            );
        }
    }
}
