//! Plans: what the operator lets an account hold and run, and the pure rule
//! that says which limit a request would break.
//!
//! A plan is set by the operator (config or admin API) and assigned to an
//! account by the admin; a tenant can read its plan, never choose it. An
//! instance may carry its own plan (admin only), which overrides the
//! account's for the per-instance limit (recovery points).
//!
//! Every limit is optional: absent means unlimited. Counts and sums are
//! taken by the catalog inside the transaction that records the new
//! resource (see `reprise_catalog::Catalog::admit`), so two concurrent
//! requests can never both pass a limit; [`first_exceeded`] only decides.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The limits of a plan. Sizes are bytes; in the daemon's TOML config they
/// may also be written like `"100G"`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanLimits {
    /// Recovery points per instance (the VPS guide's plan: 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_recovery_points: Option<u64>,
    /// Volume snapshots per volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_snapshots_per_volume: Option<u64>,
    /// Volume snapshots of the whole account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_snapshots: Option<u64>,
    /// Volumes (root and data) of the account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_volumes: Option<u64>,
    /// Instances of the account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_instances: Option<u64>,
    /// vCPUs of the account's instances together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_vcpus: Option<u64>,
    /// RAM of the account's instances together.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::size::deserialize_opt_bytes"
    )]
    pub max_memory_bytes: Option<u64>,
    /// The sum of the virtual sizes of the account's volumes.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::size::deserialize_opt_bytes"
    )]
    pub max_volume_bytes: Option<u64>,
    /// Bytes the account's snapshots take in the region's store (each
    /// distinct chunk counted once; deleted ones too, until purged: the
    /// store holds them).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::size::deserialize_opt_bytes"
    )]
    pub max_snapshot_bytes: Option<u64>,
    /// Jobs of the account queued or running at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_jobs: Option<u64>,
    /// Snapshots and recovery points the account may protect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_protected: Option<u64>,
    /// API keys and CloudStack key pairs of the account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_keys: Option<u64>,
    /// Snapshot policies of the account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_policies: Option<u64>,
    /// Days a deleted snapshot or template stays undeletable before it
    /// goes for good (not a limit: absent means the daemon's
    /// `[snapshots] undelete_days`; 0, deletes are at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undelete_days: Option<u64>,
}

/// A named plan (also the body that creates or replaces one; unknown
/// fields are refused by [`PlanLimits`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Plan {
    pub name: String,
    #[serde(flatten)]
    pub limits: PlanLimits,
}

/// What an account holds and runs now, as the plan's limits count it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Usage {
    pub volumes: u64,
    pub volume_bytes: u64,
    pub instances: u64,
    /// vCPUs and RAM of the account's instances together.
    #[serde(default)]
    pub vcpus: u64,
    #[serde(default)]
    pub memory_bytes: u64,
    pub snapshots: u64,
    pub snapshot_bytes: u64,
    pub concurrent_jobs: u64,
    /// Snapshots and recovery points protected.
    #[serde(default)]
    pub protected: u64,
    #[serde(default)]
    pub keys: u64,
    #[serde(default)]
    pub policies: u64,
    /// The most recovery points one of the account's instances holds.
    pub most_recovery_points: u64,
    /// The most snapshots one of the account's volumes has.
    pub most_snapshots_per_volume: u64,
}

/// One limit of a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    RecoveryPoints,
    SnapshotsPerVolume,
    Snapshots,
    Volumes,
    Instances,
    Vcpus,
    MemoryBytes,
    VolumeBytes,
    SnapshotBytes,
    ConcurrentJobs,
    Protected,
    Keys,
    Policies,
}

impl Limit {
    /// In the order they are judged: the nearest to what was asked first.
    pub const ALL: [Limit; 13] = [
        Limit::RecoveryPoints,
        Limit::SnapshotsPerVolume,
        Limit::Snapshots,
        Limit::Instances,
        Limit::Vcpus,
        Limit::MemoryBytes,
        Limit::Volumes,
        Limit::VolumeBytes,
        Limit::SnapshotBytes,
        Limit::ConcurrentJobs,
        Limit::Protected,
        Limit::Keys,
        Limit::Policies,
    ];

    /// The plan field that sets it.
    pub fn field(self) -> &'static str {
        match self {
            Limit::RecoveryPoints => "max_recovery_points",
            Limit::SnapshotsPerVolume => "max_snapshots_per_volume",
            Limit::Snapshots => "max_snapshots",
            Limit::Volumes => "max_volumes",
            Limit::Instances => "max_instances",
            Limit::Vcpus => "max_vcpus",
            Limit::MemoryBytes => "max_memory_bytes",
            Limit::VolumeBytes => "max_volume_bytes",
            Limit::SnapshotBytes => "max_snapshot_bytes",
            Limit::ConcurrentJobs => "max_concurrent_jobs",
            Limit::Protected => "max_protected",
            Limit::Keys => "max_keys",
            Limit::Policies => "max_policies",
        }
    }

    /// The error code of a request it refuses.
    pub fn code(self) -> &'static str {
        match self {
            Limit::RecoveryPoints => "point_limit_reached",
            Limit::SnapshotsPerVolume | Limit::Snapshots => "snapshot_limit_reached",
            Limit::Volumes => "volume_limit_reached",
            Limit::Instances => "instance_limit_reached",
            Limit::Vcpus => "vcpu_limit_reached",
            Limit::MemoryBytes => "memory_limit_reached",
            Limit::VolumeBytes => "volume_size_limit_reached",
            Limit::SnapshotBytes => "snapshot_size_limit_reached",
            Limit::ConcurrentJobs => "job_limit_reached",
            Limit::Protected => "protected_limit_reached",
            Limit::Keys => "key_limit_reached",
            Limit::Policies => "policy_limit_reached",
        }
    }

    pub fn of(self, l: &PlanLimits) -> Option<u64> {
        match self {
            Limit::RecoveryPoints => l.max_recovery_points,
            Limit::SnapshotsPerVolume => l.max_snapshots_per_volume,
            Limit::Snapshots => l.max_snapshots,
            Limit::Volumes => l.max_volumes,
            Limit::Instances => l.max_instances,
            Limit::Vcpus => l.max_vcpus,
            Limit::MemoryBytes => l.max_memory_bytes,
            Limit::VolumeBytes => l.max_volume_bytes,
            Limit::SnapshotBytes => l.max_snapshot_bytes,
            Limit::ConcurrentJobs => l.max_concurrent_jobs,
            Limit::Protected => l.max_protected,
            Limit::Keys => l.max_keys,
            Limit::Policies => l.max_policies,
        }
    }

    /// What the account uses of it now.
    pub fn used(self, u: &Usage) -> u64 {
        match self {
            Limit::RecoveryPoints => u.most_recovery_points,
            Limit::SnapshotsPerVolume => u.most_snapshots_per_volume,
            Limit::Snapshots => u.snapshots,
            Limit::Volumes => u.volumes,
            Limit::Instances => u.instances,
            Limit::Vcpus => u.vcpus,
            Limit::MemoryBytes => u.memory_bytes,
            Limit::VolumeBytes => u.volume_bytes,
            Limit::SnapshotBytes => u.snapshot_bytes,
            Limit::ConcurrentJobs => u.concurrent_jobs,
            Limit::Protected => u.protected,
            Limit::Keys => u.keys,
            Limit::Policies => u.policies,
        }
    }

    /// Whether it counts bytes (shown as sizes).
    pub fn is_bytes(self) -> bool {
        matches!(
            self,
            Limit::VolumeBytes | Limit::SnapshotBytes | Limit::MemoryBytes
        )
    }

    fn what(self) -> &'static str {
        match self {
            Limit::RecoveryPoints => "recovery points per instance",
            Limit::SnapshotsPerVolume => "snapshots per volume",
            Limit::Snapshots => "volume snapshots",
            Limit::Volumes => "volumes",
            Limit::Instances => "instances",
            Limit::Vcpus => "vCPUs of instances",
            Limit::MemoryBytes => "of instances' RAM",
            Limit::VolumeBytes => "of volumes",
            Limit::SnapshotBytes => "of snapshots in the region's store",
            Limit::ConcurrentJobs => "jobs at once",
            Limit::Protected => "protected snapshots and recovery points",
            Limit::Keys => "API keys and CloudStack key pairs",
            Limit::Policies => "snapshot policies",
        }
    }

    fn holder(self) -> &'static str {
        match self {
            Limit::RecoveryPoints => "this instance",
            Limit::SnapshotsPerVolume => "this volume",
            _ => "the account",
        }
    }

    fn remedy(self) -> &'static str {
        match self {
            Limit::RecoveryPoints => "delete the existing recovery point first",
            Limit::SnapshotsPerVolume | Limit::Snapshots => "delete a snapshot first",
            Limit::SnapshotBytes => {
                "delete a snapshot first (a deleted one holds its bytes until its undelete window ends)"
            }
            Limit::Volumes | Limit::VolumeBytes => "delete a volume first",
            Limit::Instances => "delete an instance first",
            Limit::Vcpus | Limit::MemoryBytes => "ask for less, or delete an instance first",
            Limit::ConcurrentJobs => "wait for a job to end",
            Limit::Protected => "unprotect one first",
            Limit::Keys => "revoke a key first",
            Limit::Policies => "delete a policy first",
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.field())
    }
}

/// What a request adds to an account's usage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Demand {
    pub volumes: u64,
    pub volume_bytes: u64,
    pub instances: u64,
    pub vcpus: u64,
    pub memory_bytes: u64,
    pub snapshots: u64,
    /// One more recovery point on the instance the usage was counted for.
    pub recovery_points: u64,
    pub jobs: u64,
    pub protected: u64,
    pub keys: u64,
    pub policies: u64,
    /// The most bytes the request may add to the region's store, when it
    /// is known before (a template import: its image's virtual size); 0
    /// when it is not (a snapshot, known once it is backed up).
    pub store_bytes_at_most: u64,
}

impl Demand {
    fn adds(&self, limit: Limit) -> u64 {
        match limit {
            Limit::RecoveryPoints => self.recovery_points,
            Limit::SnapshotsPerVolume | Limit::Snapshots => self.snapshots,
            Limit::Volumes => self.volumes,
            Limit::Instances => self.instances,
            Limit::Vcpus => self.vcpus,
            Limit::MemoryBytes => self.memory_bytes,
            Limit::VolumeBytes => self.volume_bytes,
            // A snapshot's size is known only once it is backed up: a new
            // one is refused once the account is at (or over) its bytes.
            Limit::SnapshotBytes if self.store_bytes_at_most > 0 => self.store_bytes_at_most,
            Limit::SnapshotBytes => u64::from(self.snapshots > 0),
            Limit::ConcurrentJobs => self.jobs,
            Limit::Protected => self.protected,
            Limit::Keys => self.keys,
            Limit::Policies => self.policies,
        }
    }
}

/// The first limit that `demand` on top of `usage` would break, if any.
/// Only limits the demand touches are judged: an account over a limit (its
/// plan was lowered) can still do what does not grow that usage.
pub fn first_exceeded(limits: &PlanLimits, usage: &Usage, demand: &Demand) -> Option<Limit> {
    Limit::ALL.into_iter().find(|l| {
        let adds = demand.adds(*l);
        match l.of(limits) {
            Some(max) if adds > 0 => {
                if *l == Limit::SnapshotBytes && demand.store_bytes_at_most == 0 {
                    usage.snapshot_bytes >= max
                } else {
                    l.used(usage).saturating_add(adds) > max
                }
            }
            _ => false,
        }
    })
}

/// The error for a request `limit` refuses: it names the limit, its value,
/// the plan, what the account has, and what to do.
pub fn refusal(limit: Limit, plan: &str, limits: &PlanLimits, usage: &Usage) -> crate::Error {
    let max = limit.of(limits).unwrap_or(0);
    let (has, allows) = if limit.is_bytes() {
        (
            crate::size::format_size(limit.used(usage)),
            crate::size::format_size(max),
        )
    } else {
        (limit.used(usage).to_string(), max.to_string())
    };
    crate::Error::conflict(
        limit.code(),
        format!(
            "plan '{plan}' allows {allows} {} ({} = {max}), and {} has {has}: {}, or ask the operator for a larger plan",
            limit.what(),
            limit.field(),
            limit.holder(),
            limit.remedy()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(f: impl FnOnce(&mut PlanLimits)) -> PlanLimits {
        let mut l = PlanLimits::default();
        f(&mut l);
        l
    }

    #[test]
    fn each_limit_refuses_only_what_grows_it() {
        let cases: Vec<(PlanLimits, Usage, Demand, Option<Limit>)> = vec![
            // Nothing set: everything passes.
            (
                PlanLimits::default(),
                Usage {
                    volumes: 1000,
                    ..Default::default()
                },
                Demand {
                    volumes: 1,
                    ..Default::default()
                },
                None,
            ),
            // At the count: refused; below: passes.
            (
                limits(|l| l.max_volumes = Some(2)),
                Usage {
                    volumes: 2,
                    ..Default::default()
                },
                Demand {
                    volumes: 1,
                    ..Default::default()
                },
                Some(Limit::Volumes),
            ),
            (
                limits(|l| l.max_volumes = Some(2)),
                Usage {
                    volumes: 1,
                    ..Default::default()
                },
                Demand {
                    volumes: 1,
                    ..Default::default()
                },
                None,
            ),
            // Bytes: the sum counts, equal to the limit is allowed.
            (
                limits(|l| l.max_volume_bytes = Some(10 << 30)),
                Usage {
                    volume_bytes: 8 << 30,
                    ..Default::default()
                },
                Demand {
                    volumes: 1,
                    volume_bytes: 2 << 30,
                    ..Default::default()
                },
                None,
            ),
            (
                limits(|l| l.max_volume_bytes = Some(10 << 30)),
                Usage {
                    volume_bytes: 8 << 30,
                    ..Default::default()
                },
                Demand {
                    volume_bytes: 3 << 30,
                    ..Default::default()
                },
                Some(Limit::VolumeBytes),
            ),
            // Over a limit (the plan was lowered): what does not grow it passes.
            (
                limits(|l| l.max_volumes = Some(1)),
                Usage {
                    volumes: 5,
                    ..Default::default()
                },
                Demand {
                    snapshots: 1,
                    ..Default::default()
                },
                None,
            ),
            // The VPS plan: one point.
            (
                limits(|l| l.max_recovery_points = Some(1)),
                Usage {
                    most_recovery_points: 1,
                    ..Default::default()
                },
                Demand {
                    recovery_points: 1,
                    ..Default::default()
                },
                Some(Limit::RecoveryPoints),
            ),
            // Snapshot bytes: refused once at the limit, whatever the size.
            (
                limits(|l| l.max_snapshot_bytes = Some(100)),
                Usage {
                    snapshot_bytes: 100,
                    ..Default::default()
                },
                Demand {
                    snapshots: 1,
                    ..Default::default()
                },
                Some(Limit::SnapshotBytes),
            ),
            (
                limits(|l| l.max_snapshot_bytes = Some(100)),
                Usage {
                    snapshot_bytes: 99,
                    ..Default::default()
                },
                Demand {
                    snapshots: 1,
                    ..Default::default()
                },
                None,
            ),
            // Per volume before per account: the nearer limit is named.
            (
                limits(|l| {
                    l.max_snapshots_per_volume = Some(2);
                    l.max_snapshots = Some(2);
                }),
                Usage {
                    snapshots: 2,
                    most_snapshots_per_volume: 2,
                    ..Default::default()
                },
                Demand {
                    snapshots: 1,
                    ..Default::default()
                },
                Some(Limit::SnapshotsPerVolume),
            ),
            (
                limits(|l| l.max_concurrent_jobs = Some(1)),
                Usage {
                    concurrent_jobs: 1,
                    ..Default::default()
                },
                Demand {
                    jobs: 1,
                    ..Default::default()
                },
                Some(Limit::ConcurrentJobs),
            ),
            // vCPUs and RAM are totals over the account's instances.
            (
                limits(|l| l.max_vcpus = Some(4)),
                Usage {
                    instances: 1,
                    vcpus: 2,
                    ..Default::default()
                },
                Demand {
                    instances: 1,
                    vcpus: 3,
                    ..Default::default()
                },
                Some(Limit::Vcpus),
            ),
            (
                limits(|l| l.max_memory_bytes = Some(4 << 30)),
                Usage {
                    memory_bytes: 3 << 30,
                    ..Default::default()
                },
                Demand {
                    instances: 1,
                    memory_bytes: 1 << 30,
                    ..Default::default()
                },
                None,
            ),
            (
                limits(|l| l.max_memory_bytes = Some(4 << 30)),
                Usage {
                    memory_bytes: 3 << 30,
                    ..Default::default()
                },
                Demand {
                    instances: 1,
                    memory_bytes: 2 << 30,
                    ..Default::default()
                },
                Some(Limit::MemoryBytes),
            ),
            // An import's bound: refused when it could pass the bytes.
            (
                limits(|l| l.max_snapshot_bytes = Some(10 << 30)),
                Usage {
                    snapshot_bytes: 6 << 30,
                    ..Default::default()
                },
                Demand {
                    store_bytes_at_most: 5 << 30,
                    ..Default::default()
                },
                Some(Limit::SnapshotBytes),
            ),
            (
                limits(|l| l.max_snapshot_bytes = Some(10 << 30)),
                Usage {
                    snapshot_bytes: 6 << 30,
                    ..Default::default()
                },
                Demand {
                    store_bytes_at_most: 4 << 30,
                    ..Default::default()
                },
                None,
            ),
            // Zero allows nothing.
            (
                limits(|l| l.max_instances = Some(0)),
                Usage::default(),
                Demand {
                    instances: 1,
                    ..Default::default()
                },
                Some(Limit::Instances),
            ),
        ];
        for (i, (l, u, d, want)) in cases.iter().enumerate() {
            assert_eq!(first_exceeded(l, u, d), *want, "case {i}");
        }
    }

    #[test]
    fn a_refusal_names_the_limit_the_plan_and_the_remedy() {
        let l = limits(|l| l.max_volume_bytes = Some(10 << 30));
        let u = Usage {
            volume_bytes: 9 << 30,
            ..Default::default()
        };
        let e = refusal(Limit::VolumeBytes, "small", &l, &u);
        assert_eq!(e.code, "volume_size_limit_reached");
        assert_eq!(e.kind, crate::ErrorKind::Conflict);
        for part in [
            "'small'",
            "max_volume_bytes",
            "9G",
            "10G",
            "delete a volume",
        ] {
            assert!(e.message.contains(part), "{part}: {}", e.message);
        }
        let e = refusal(
            Limit::RecoveryPoints,
            "vps",
            &limits(|l| l.max_recovery_points = Some(1)),
            &Usage {
                most_recovery_points: 1,
                ..Default::default()
            },
        );
        assert!(e
            .message
            .contains("delete the existing recovery point first"));
    }

    #[test]
    fn limits_parse_from_numbers_and_sizes_and_refuse_typos() {
        let l: PlanLimits = serde_json::from_str(
            r#"{"max_volumes": 3, "max_volume_bytes": "10G", "max_snapshot_bytes": 1024}"#,
        )
        .unwrap();
        assert_eq!(l.max_volumes, Some(3));
        assert_eq!(l.max_volume_bytes, Some(10 << 30));
        assert_eq!(l.max_snapshot_bytes, Some(1024));
        assert!(serde_json::from_str::<PlanLimits>(r#"{"max_volume": 3}"#).is_err());
        assert!(serde_json::from_str::<PlanLimits>(r#"{"max_volume_bytes": "ten"}"#).is_err());
        let p: Plan = serde_json::from_str(r#"{"name": "vps", "max_recovery_points": 1}"#).unwrap();
        assert_eq!(p.limits.max_recovery_points, Some(1));
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            serde_json::json!({"name": "vps", "max_recovery_points": 1})
        );
    }
}
