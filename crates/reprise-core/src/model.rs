//! The resources of reprise as the API shows them, their states, and the
//! bodies of the requests that change them.
//!
//! Every resource has a UUID, a name unique per account and kind, an owner
//! account and a creation time. States are stored in the catalog by their
//! names, so renaming a variant is a catalog migration.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A state stored in the catalog by its name.
pub trait StateName: Copy + PartialEq + 'static {
    fn name(self) -> &'static str;
}

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => stringify!($variant)),+ }
            }
        }

        impl StateName for $name {
            fn name(self) -> &'static str {
                self.as_str()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = crate::Error;
            fn from_str(s: &str) -> crate::Result<Self> {
                $name::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str().eq_ignore_ascii_case(s))
                    .ok_or_else(|| crate::Error::invalid(
                        "state_invalid",
                        format!("'{s}' is not a {}", stringify!($name)),
                    ))
            }
        }
    };
}

string_enum!(
    /// The run state of an instance. `Unknown` is never stored: it is
    /// what an instance shows while its host is `Down`.
    InstanceState { Stopped, Starting, Running, Stopping, Error, Unknown }
);

string_enum!(
    /// The state of a volume: `Creating` while its file is being made,
    /// `Ready` for use, `Snapshotting` while the instant of a volume
    /// snapshot is cut (milliseconds), `Reverting` while it is put back to
    /// a snapshot's content, `Error` when making it failed.
    VolumeState { Creating, Ready, Snapshotting, Reverting, Error }
);

string_enum!(
    /// The state of a volume snapshot: `BackingUp` while its data goes to
    /// the region's object store, `BackedUp` when all of it is there,
    /// `Destroying` while its objects are removed, `Error` (with a reason)
    /// when the backup failed or a verification found it damaged, and
    /// `Deleted` once deleted: kept whole, and undeletable, until its
    /// `purge_after`.
    SnapshotState { BackingUp, BackedUp, Destroying, Error, Deleted }
);

string_enum!(
    /// A volume is the root disk of an instance or a data disk.
    VolumeKind { Root, Data }
);

string_enum!(
    /// The state of a recovery point: `Creating` while it is taken,
    /// `Ready`, `Reverting` while the instance goes back to it, `Deleting`,
    /// and `Error` (with a reason) when taking or deleting it failed.
    PointState { Creating, Ready, Reverting, Deleting, Error }
);

string_enum!(
    /// The state of an upload: `Receiving` until all its bytes are in,
    /// then `Complete` (read-only, its SHA-256 known).
    UploadState { Receiving, Complete }
);

string_enum!(
    /// A host is `Up` while its heartbeats arrive within its lease, `Down`
    /// after.
    HostState { Up, Down }
);

string_enum!(
    /// The state of a job. `Succeeded`, `Failed` and `Cancelled` are final.
    JobState { Queued, Running, Succeeded, Failed, Cancelled }
);

impl JobState {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

impl InstanceState {
    /// Whether a QEMU process is expected to exist in this state.
    pub fn expects_process(self) -> bool {
        matches!(
            self,
            InstanceState::Starting | InstanceState::Running | InstanceState::Stopping
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct Account {
    pub id: Uuid,
    pub name: String,
    pub admin: bool,
    /// The operator's plan for this account (`None`: unlimited).
    #[serde(default)]
    pub plan: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// Returned once, when an account is created: the key is never shown again.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct AccountCreated {
    pub account: Account,
    pub api_key: String,
}

/// An account with its plan and what it uses of each limit.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct AccountDetails {
    pub account: Account,
    /// The plan's limits (`None`: no plan, nothing is limited).
    pub plan: Option<crate::plan::Plan>,
    pub usage: crate::plan::Usage,
}

/// The operator's settings of an account (admin).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountSettings {
    /// A plan's name; `""` removes the plan.
    pub plan: Option<String>,
}

/// One API key of an account. The key itself is shown once, when made;
/// the catalog keeps only its hash.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct ApiKey {
    pub id: Uuid,
    pub account_id: Uuid,
    pub name: String,
    /// The key's first characters, to tell keys apart.
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    /// To the minute: when a request last came with it.
    pub last_used_at: Option<DateTime<Utc>>,
    /// A CloudStack key pair's public `apiKey` (see `docs/cloudstack.md`);
    /// none for a bearer key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloudstack_api_key: Option<String>,
}

/// A new key, returned once.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ApiKeyCreated {
    pub key: ApiKey,
    /// The bearer key, or a CloudStack pair's `apiKey`.
    pub api_key: String,
    /// A CloudStack pair's secret key, shown this once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    pub name: String,
    /// A CloudStack key pair (an `apiKey` and a secret key, for the
    /// CloudStack API at `/client/api`) instead of a bearer key.
    #[serde(default)]
    pub cloudstack: bool,
}

/// A file sent to the daemon over the API (an image, a kernel, an
/// initrd), kept privately until the account deletes it. The way tenants
/// bring files: they never name a file on the daemon's host.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct Upload {
    pub id: Uuid,
    pub account_id: Uuid,
    /// The client's name for it (a file name), shown in lists.
    pub name: String,
    pub state: UploadState,
    /// The size announced when it was created.
    pub size_bytes: u64,
    /// Bytes received so far: where a restarted upload resumes.
    pub received_bytes: u64,
    /// Hex SHA-256 of the whole file, once Complete.
    pub sha256: Option<String>,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUpload {
    pub name: String,
    /// The file's size in bytes.
    pub size_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct Zone {
    pub id: Uuid,
    pub name: String,
    /// The zone's primary storage: where its volumes' qcow2 files live
    /// (shown to the admin only).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub storage_dir: String,
    pub created_at: DateTime<Utc>,
}

/// A host of the region: a daemon, the zones it serves, and what lives on
/// it (admin only).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct Host {
    pub name: String,
    pub state: HostState,
    /// Where the other daemons send it the work on its volumes and
    /// instances.
    pub address: String,
    /// The zones it serves; empty: every zone.
    pub zones: Vec<String>,
    pub instances: u64,
    pub volumes: u64,
    /// The virtual size of its volumes.
    pub volume_bytes: u64,
    pub started_at: DateTime<Utc>,
    pub last_heartbeat: DateTime<Utc>,
    /// Whether this is the daemon that answered.
    pub this_daemon: bool,
    /// Whether it leads the region's periodic work (garbage collection),
    /// under a lease another host takes over when it stops.
    pub leader: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct Volume {
    pub id: Uuid,
    pub name: String,
    pub account_id: Uuid,
    pub zone_id: Uuid,
    pub zone: String,
    pub kind: VolumeKind,
    pub state: VolumeState,
    /// Virtual size, as the guest sees it.
    pub size_bytes: u64,
    /// The qcow2 file in the zone's primary storage (shown to the admin
    /// only).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    pub instance_id: Option<Uuid>,
    pub instance: Option<String>,
    /// The host whose disk holds it (shown to the admin only).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
    pub created_at: DateTime<Utc>,
}

/// Whether qemu-guest-agent answers inside an instance, and what that means
/// for a snapshot taken now.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct GuestAgentStatus {
    /// `responding`, `not_responding` or `not_running` (instance stopped).
    pub status: String,
    /// The consistency a snapshot taken now would have: `filesystem` when
    /// the agent can freeze the guest's filesystems, `crash` otherwise.
    pub snapshot_consistency: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct Instance {
    pub id: Uuid,
    pub name: String,
    pub account_id: Uuid,
    pub zone_id: Uuid,
    pub zone: String,
    pub state: InstanceState,
    pub cpus: u32,
    pub memory_bytes: u64,
    pub root_volume_id: Option<Uuid>,
    /// Attached volumes, root first, in the order the guest sees them.
    pub volumes: Vec<AttachedVolume>,
    pub kernel: Option<String>,
    pub initrd: Option<String>,
    pub append: Option<String>,
    /// `kvm` or `tcg`: the accelerator of the running QEMU (last start).
    pub accel: Option<String>,
    /// The QEMU process and its files on the host (shown to the admin
    /// only).
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub qmp_socket: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub guest_agent_socket: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub console_log: String,
    /// Filled in by `show` only (it asks the guest).
    pub guest_agent: Option<GuestAgentStatus>,
    /// Whether recovery points and volume snapshots are enabled for this
    /// instance (an operator's switch).
    pub snapshots_enabled: bool,
    /// The plan that caps its recovery points, if any.
    pub plan: Option<String>,
    /// The recovery point the instance was last taken at or reverted to:
    /// where it is now in the tree.
    pub current_point_id: Option<Uuid>,
    pub last_error: Option<String>,
    /// The host it runs on (shown to the admin only).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct AttachedVolume {
    pub id: Uuid,
    pub name: String,
    pub kind: VolumeKind,
    pub size_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct JobLogLine {
    pub at: DateTime<Utc>,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct Job {
    pub id: Uuid,
    pub account_id: Uuid,
    /// What the job does: `instance.start`, `volume.create`…
    pub kind: String,
    pub target_kind: String,
    pub target_id: Uuid,
    pub target_name: String,
    pub state: JobState,
    /// Work done and work to do, in the job's own unit (bytes or steps).
    pub progress_done: u64,
    pub progress_total: u64,
    pub error: Option<crate::error::WireError>,
    pub log: Vec<JobLogLine>,
    /// The host whose daemon runs it (shown to the admin only).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl Job {
    /// Progress as a fraction in 0..=1.
    pub fn fraction(&self) -> f64 {
        if self.state == JobState::Succeeded {
            1.0
        } else if self.progress_total == 0 {
            0.0
        } else {
            (self.progress_done as f64 / self.progress_total as f64).min(1.0)
        }
    }
}

/// A recovery point: the state of every volume of an instance at one
/// instant, and optionally its memory, kept as internal qcow2 snapshots
/// next to the volumes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct Point {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    pub account_id: Uuid,
    pub instance_id: Uuid,
    pub instance: String,
    /// The point the instance was at when this one was taken.
    pub parent_id: Option<Uuid>,
    /// The instance is at this point now (taken or reverted to last).
    pub current: bool,
    pub state: PointState,
    /// RAM and device state included: reverting resumes the instance.
    pub memory: bool,
    /// How the memory was saved: `background` (the guest ran on while its
    /// RAM was written; paused a few milliseconds) or `snapshot-save` (the
    /// guest paused while its RAM was written). None for a disk-only point.
    #[serde(default)]
    pub memory_save: Option<String>,
    /// `filesystem` (guest frozen), `crash` (not frozen), or `memory`
    /// (the whole machine at one instant).
    pub consistency: String,
    /// How long the guest was stalled, in milliseconds: its filesystems
    /// frozen (disk-only points), or the VM paused while its memory was
    /// saved (memory points).
    pub frozen_ms: Option<u64>,
    /// The volumes it covers, in the instance's disk order.
    pub volume_ids: Vec<Uuid>,
    /// Bytes this point alone holds (no other point and not the live disks
    /// reference them): about what deleting it frees. Filled by list/show.
    pub size_bytes: Option<u64>,
    /// Bytes of saved RAM and device state (memory points).
    pub vm_state_bytes: Option<u64>,
    pub error: Option<String>,
    /// The policy that took it (none: taken by hand).
    #[serde(default)]
    pub policy_id: Option<Uuid>,
    /// When its policy's retention will remove it (see [`Snapshot`]).
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// Protected: no delete or retention removes it until unprotected.
    #[serde(default)]
    pub protected: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePoint {
    /// Generated from the instance name and the UTC time when empty.
    pub name: Option<String>,
    pub description: Option<String>,
    /// Include RAM and device state.
    #[serde(default)]
    pub memory: bool,
    /// `auto` (default: freeze when the agent answers), `required` (fail
    /// if it cannot freeze) or `none`.
    pub quiesce: Option<String>,
    /// Protect it from deletes from the start.
    #[serde(default)]
    pub protect: bool,
}

/// Which snapshots a list shows: all of the account's, or those of one
/// volume, zone, policy or instance (each given by name or id).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotFilter {
    pub volume: Option<String>,
    pub zone: Option<String>,
    pub policy: Option<String>,
    /// Snapshots of the volumes attached to this instance now.
    pub instance: Option<String>,
    /// The deleted ones, still in their undelete window, instead.
    #[serde(default)]
    pub deleted: bool,
}

/// A snapshot policy: volume snapshots of a volume, or recovery points of
/// an instance, taken on a schedule and pruned by its retention rules
/// (see `docs/schedules.md`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct Policy {
    pub id: Uuid,
    pub name: String,
    pub account_id: Uuid,
    /// Volume snapshots of this volume…
    pub volume_id: Option<Uuid>,
    pub volume: Option<String>,
    /// …or recovery points of this instance.
    pub instance_id: Option<Uuid>,
    pub instance: Option<String>,
    /// `hourly MM`, `daily HH:MM`, `weekly DAY HH:MM`, `monthly DD HH:MM`
    /// or `cron …`.
    pub schedule: String,
    /// CloudStack's `intervaltype` and `schedule` (none for cron).
    pub interval_type: Option<String>,
    pub cloudstack_schedule: Option<String>,
    /// An IANA time zone, like `Europe/Paris`.
    pub timezone: String,
    pub keep: crate::retention::Keep,
    /// As for a snapshot taken by hand: `auto`, `required` or `none`.
    pub quiesce: Option<String>,
    /// Recovery points: with memory.
    pub memory: bool,
    pub enabled: bool,
    pub next_run_at: Option<DateTime<Utc>>,
    pub last_run_at: Option<DateTime<Utc>>,
    /// What its last run did, or why it failed.
    pub last_result: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePolicy {
    /// Made from the target and the schedule when absent.
    pub name: Option<String>,
    /// The volume (volume snapshots) or the instance (recovery points).
    pub volume: Option<String>,
    pub instance: Option<String>,
    pub schedule: String,
    /// `UTC` when absent.
    pub timezone: Option<String>,
    #[serde(default)]
    pub keep: crate::retention::Keep,
    pub quiesce: Option<String>,
    #[serde(default)]
    pub memory: bool,
    /// `true` when absent.
    pub enabled: Option<bool>,
}

/// What to change in a policy; absent fields stay.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdatePolicy {
    pub schedule: Option<String>,
    pub timezone: Option<String>,
    pub keep: Option<crate::retention::Keep>,
    pub quiesce: Option<String>,
    pub memory: Option<bool>,
    pub enabled: Option<bool>,
}

/// What a policy's retention would do now with the snapshots (or points)
/// it made; those taken by hand are never touched.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct PolicySimulation {
    pub policy: String,
    pub keep: crate::retention::Keep,
    /// Newest first.
    pub items: Vec<SimulatedItem>,
    /// Snapshots (or points) of the same target taken by hand: left alone.
    pub untouched: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct SimulatedItem {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub keep: bool,
    /// The rules that keep it (`last`, `daily 2026-12-03`…); none when it
    /// would be removed.
    pub kept_by: Vec<String>,
}

/// A volume snapshot: a static copy of one volume at one instant, in the
/// region's object storage, readable from every zone.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct Snapshot {
    pub id: Uuid,
    pub name: String,
    pub account_id: Uuid,
    pub volume_id: Uuid,
    /// The volume's name when the snapshot was taken.
    pub volume: String,
    pub zone: String,
    pub state: SnapshotState,
    /// Guest bytes of the volume (its virtual size).
    pub size_bytes: u64,
    /// `filesystem` (guest frozen) or `crash`.
    pub consistency: String,
    /// The snapshot this one is incremental to (only changed data read).
    pub base_id: Option<Uuid>,
    /// Backup progress: bytes read of bytes to read.
    pub progress_done: u64,
    pub progress_total: u64,
    /// Bytes of the volume that are not zeros (whole chunks).
    pub written_bytes: Option<u64>,
    /// Bytes its chunks take in the store, shared ones included.
    pub stored_bytes: Option<u64>,
    /// Bytes of chunks this snapshot added to its account: no other
    /// snapshot or template of the account held them (what it added to the
    /// shared store would tell whether another account holds a chunk).
    pub new_bytes: Option<u64>,
    /// Guest bytes the backup read from the volume.
    pub read_bytes: Option<u64>,
    /// Distinct chunks it references.
    pub chunk_count: Option<u64>,
    /// Chunk positions referenced per distinct chunk (1.0: no duplicates).
    pub dedup_ratio: Option<f64>,
    pub error: Option<String>,
    /// The policy that took it (none: taken by hand; only a policy's own
    /// snapshots are pruned by its retention).
    #[serde(default)]
    pub policy_id: Option<Uuid>,
    /// When its policy's retention will remove it, if the policy runs on
    /// as scheduled (none: taken by hand, or kept beyond 1000 runs).
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    /// When a verification last found every chunk intact.
    pub verified_at: Option<DateTime<Utc>>,
    /// Protected: no delete, retention, purge or account delete removes
    /// it until it is unprotected.
    #[serde(default)]
    pub protected: bool,
    /// When it was deleted, and when it goes for good (Deleted only; until
    /// then `undelete` brings it back).
    #[serde(default)]
    pub deleted_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub purge_after: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSnapshot {
    /// The volume, by name or id.
    pub volume: String,
    /// Generated from the volume's name and the UTC time when empty.
    pub name: Option<String>,
    /// `auto` (default), `required` or `none`, as for recovery points.
    pub quiesce: Option<String>,
    /// Protect it from deletes from the start.
    #[serde(default)]
    pub protect: bool,
}

/// Protect a snapshot or a recovery point, or lift its protection.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Protection {
    pub protected: bool,
}

/// A new volume with a snapshot's content.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeFromSnapshot {
    pub name: String,
    /// Any zone of the region; the default zone when absent.
    pub zone: Option<String>,
    /// Admin only: the host of the zone that gets it (placement otherwise).
    pub host: Option<String>,
}

/// A template (golden image): a volume's content, kept in the region's
/// store from a snapshot, from which instances are deployed. It shares the
/// snapshot's chunks and outlives it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct Template {
    pub id: Uuid,
    pub name: String,
    pub account_id: Uuid,
    /// The snapshot it was made from (`None` once that snapshot is gone, or
    /// for an imported image).
    pub source_snapshot_id: Option<Uuid>,
    /// Where it came from: the snapshot's name, `upload:NAME` or
    /// `image:FILE NAME`.
    pub source_snapshot: String,
    pub size_bytes: u64,
    pub chunk_count: u64,
    pub created_at: DateTime<Utc>,
    /// A deleted template: when it goes for good (until then `undelete`
    /// brings it back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purge_after: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTemplate {
    pub name: String,
    /// The snapshot, by name or id.
    pub snapshot: String,
}

/// Clone an instance for troubleshooting: a new instance, in any zone,
/// whose volumes come from snapshots of the source's volumes taken at one
/// instant.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CloneInstance {
    pub name: String,
    /// Any zone of the region; the source's zone when absent.
    pub zone: Option<String>,
}

/// Import a disk image (qcow2 or raw) as a template: an upload, or (admin
/// only) a file below one of the daemon's `import_dirs`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportTemplate {
    pub name: String,
    /// A Complete upload, by id.
    pub upload: Option<String>,
    /// Admin only: an absolute path below one of `import_dirs`.
    pub file: Option<String>,
}

/// Put a volume back to a snapshot's content.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RevertVolume {
    /// The snapshot, by name or id.
    pub snapshot: String,
}

/// What a garbage collection of the region's store did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct GcResult {
    pub chunks_examined: u64,
    pub chunks_deleted: u64,
    pub bytes_freed: u64,
    pub snapshot_objects_deleted: u64,
    /// Unreferenced chunks left for a later sweep: written within the
    /// grace period (`[gc] grace_minutes`).
    #[serde(default)]
    pub chunks_in_grace: u64,
    /// Snapshots and templates the store holds that the catalog does not
    /// know: kept, with their chunks (see `reprise region recover`).
    #[serde(default)]
    pub orphans: u64,
    /// Orphans that cannot be read: while there is one, no chunk is
    /// deleted.
    #[serde(default)]
    pub orphans_unreadable: u64,
}

/// Rebuild the catalog from the region's store: every snapshot and
/// template the store holds that the catalog lacks (admin).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecoverRegion {
    /// Only say what would be added (in the job's log).
    #[serde(default)]
    pub dry_run: bool,
}

/// A backup of the catalog's own rows in the region's store.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct CatalogBackup {
    /// `<UTC time>-<catalog id>`.
    pub name: String,
    pub size_bytes: u64,
    pub taken_at: Option<DateTime<Utc>>,
}

/// Restore the catalog's own rows from a backup in the region's store
/// (admin), into a catalog made anew.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreCatalog {
    /// The backup; the newest when absent.
    pub name: Option<String>,
}

/// Remove the snapshots and templates the store holds that the catalog
/// does not know, made longer ago than `older_than` (admin).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForgetOrphans {
    /// Like `30d`, `12h` or `90m`.
    pub older_than: String,
}

/// Operator settings of an instance (admin).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InstanceSettings {
    pub snapshots_enabled: Option<bool>,
    /// A plan defined in the daemon's config; `""` removes the plan.
    pub plan: Option<String>,
}

/// The answer to a request that started a long operation.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct JobStarted {
    pub job: Job,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAccount {
    pub name: String,
    /// Its plan: the config's `default_plan` when absent, none when `""`.
    pub plan: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateZone {
    pub name: String,
    pub storage_dir: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateVolume {
    pub name: String,
    /// Like `10G`.
    pub size: String,
    pub zone: Option<String>,
    /// Admin only: the host of the zone that gets it (placement otherwise).
    pub host: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResizeVolume {
    pub size: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachVolume {
    pub instance: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInstance {
    pub name: String,
    pub zone: Option<String>,
    /// Admin only: the host of the zone it runs on (placement otherwise;
    /// an instance made from an upload or with data volumes goes beside
    /// them).
    pub host: Option<String>,
    pub cpus: Option<u32>,
    /// Like `512M`.
    pub memory: Option<String>,
    /// A blank root volume of this size.
    pub root_size: Option<String>,
    /// A disk image (qcow2 or raw) copied into the root volume: an upload
    /// by id…
    pub image_upload: Option<String>,
    /// …or, admin only, a file below one of the daemon's `import_dirs`.
    pub image: Option<String>,
    /// A template (name or id) whose content becomes the root volume.
    pub template: Option<String>,
    #[serde(default)]
    pub data_volumes: Vec<String>,
    /// Direct kernel boot: a kernel and an initrd, each an upload by id…
    pub kernel_upload: Option<String>,
    pub initrd_upload: Option<String>,
    /// …or, admin only, files below one of the daemon's `import_dirs`.
    pub kernel: Option<String>,
    pub initrd: Option<String>,
    pub append: Option<String>,
    /// Leave the new instance Stopped instead of starting it.
    #[serde(default)]
    pub no_start: bool,
    /// Admin only: a plan for this instance, overriding its account's for
    /// recovery points.
    pub plan: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StopInstance {
    #[serde(default)]
    pub force: bool,
}

/// The file name at the end of a host path, without the directories.
fn file_name(path: &str) -> String {
    path.rsplit('/').next().unwrap_or_default().to_string()
}

impl Zone {
    /// What a tenant may see: no host path.
    pub fn hide_host_details(&mut self) {
        self.storage_dir.clear();
    }
}

impl Volume {
    /// What a tenant may see: no host or host path.
    pub fn hide_host_details(&mut self) {
        self.path.clear();
        self.host.clear();
    }
}

impl Instance {
    /// What a tenant may see: no host path, socket or process id; a
    /// kernel and initrd by their file names.
    pub fn hide_host_details(&mut self) {
        self.pid = None;
        self.host.clear();
        self.qmp_socket.clear();
        self.guest_agent_socket.clear();
        self.console_log.clear();
        self.kernel = self.kernel.as_deref().map(file_name);
        self.initrd = self.initrd.as_deref().map(file_name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_their_names() {
        for s in InstanceState::ALL {
            assert_eq!(s.as_str().parse::<InstanceState>().unwrap(), *s);
        }
        assert_eq!(
            "running".parse::<InstanceState>().unwrap(),
            InstanceState::Running
        );
        assert_eq!(
            "Sleeping".parse::<InstanceState>().unwrap_err().code,
            "state_invalid"
        );
        assert_eq!(
            serde_json::to_string(&JobState::Succeeded).unwrap(),
            "\"Succeeded\""
        );
    }
}
