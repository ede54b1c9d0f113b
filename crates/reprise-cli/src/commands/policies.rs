//! `reprise policy`: snapshot policies — volume snapshots of a volume or
//! recovery points of an instance on a schedule, with retention.

use super::{print_json, print_list, Ctx};
use crate::output::{fields, out, outln, time};
use clap::{Args, Subcommand};
use reprise_core::model::*;
use reprise_core::retention::Keep;
use reprise_core::Result;

#[derive(Subcommand)]
pub(super) enum PolicyCmd {
    /// Take snapshots of a volume (--volume) or recovery points of an
    /// instance (--instance) on a schedule: `hourly MM`, `daily HH:MM`,
    /// `weekly DAY HH:MM`, `monthly DD HH:MM` or `cron MIN HOUR DOM MON DOW`.
    Create {
        #[arg(
            long,
            required_unless_present = "instance",
            conflicts_with = "instance"
        )]
        volume: Option<String>,
        #[arg(long)]
        instance: Option<String>,
        /// Like `daily 02:30` (the words may also come unquoted).
        #[arg(long, num_args = 1.., required = true)]
        schedule: Vec<String>,
        /// An IANA time zone (default UTC).
        #[arg(long)]
        timezone: Option<String>,
        /// Made from the target and the schedule when left out.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        keep: KeepArgs,
        /// auto (default), required or none.
        #[arg(long)]
        quiesce: Option<String>,
        /// Recovery points with memory.
        #[arg(long)]
        memory: bool,
        /// Create it switched off.
        #[arg(long)]
        disabled: bool,
    },
    List {
        #[arg(long)]
        volume: Option<String>,
        #[arg(long)]
        instance: Option<String>,
    },
    Show {
        policy: String,
    },
    /// Change a policy; what is not given stays.
    Update {
        policy: String,
        #[arg(long, num_args = 1..)]
        schedule: Option<Vec<String>>,
        #[arg(long)]
        timezone: Option<String>,
        /// New retention (all the rules at once).
        #[command(flatten)]
        keep: KeepArgs,
        #[arg(long)]
        quiesce: Option<String>,
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        #[arg(long)]
        disable: bool,
    },
    /// Delete a policy; the snapshots it took stay.
    Delete {
        policy: String,
    },
    /// What the policy's retention would keep and remove now, and why.
    Simulate {
        policy: String,
    },
}

#[derive(Args)]
pub(super) struct KeepArgs {
    /// Keep the N newest.
    #[arg(long)]
    keep_last: Option<u32>,
    /// Keep the newest of each of the N most recent hours with one.
    #[arg(long)]
    keep_hourly: Option<u32>,
    #[arg(long)]
    keep_daily: Option<u32>,
    #[arg(long)]
    keep_weekly: Option<u32>,
    #[arg(long)]
    keep_monthly: Option<u32>,
    #[arg(long)]
    keep_yearly: Option<u32>,
}

impl KeepArgs {
    fn given(&self) -> Option<Keep> {
        let all = [
            self.keep_last,
            self.keep_hourly,
            self.keep_daily,
            self.keep_weekly,
            self.keep_monthly,
            self.keep_yearly,
        ];
        all.iter().any(Option::is_some).then(|| Keep {
            last: self.keep_last.unwrap_or(0),
            hourly: self.keep_hourly.unwrap_or(0),
            daily: self.keep_daily.unwrap_or(0),
            weekly: self.keep_weekly.unwrap_or(0),
            monthly: self.keep_monthly.unwrap_or(0),
            yearly: self.keep_yearly.unwrap_or(0),
        })
    }
}

/// The rules of a retention, as a user writes them.
fn keep_text(k: &Keep) -> String {
    let rules: Vec<String> = [
        ("last", k.last),
        ("hourly", k.hourly),
        ("daily", k.daily),
        ("weekly", k.weekly),
        ("monthly", k.monthly),
        ("yearly", k.yearly),
    ]
    .iter()
    .filter(|(_, n)| *n > 0)
    .map(|(rule, n)| format!("{rule} {n}"))
    .collect();
    if rules.is_empty() {
        "everything".into()
    } else {
        rules.join(", ")
    }
}

pub(super) fn run(ctx: &Ctx, cmd: PolicyCmd) -> Result<()> {
    let c = &ctx.client;
    let p = match cmd {
        PolicyCmd::Create {
            volume,
            instance,
            schedule,
            timezone,
            name,
            keep,
            quiesce,
            memory,
            disabled,
        } => c.create_policy(&CreatePolicy {
            name,
            volume,
            instance,
            schedule: schedule.join(" "),
            timezone,
            keep: keep.given().unwrap_or_default(),
            quiesce,
            memory,
            enabled: Some(!disabled),
        })?,
        PolicyCmd::List { volume, instance } => {
            let list = c.policies(volume.as_deref(), instance.as_deref())?;
            print_list(
                ctx,
                &list,
                &[
                    "NAME",
                    "TARGET",
                    "SCHEDULE",
                    "ZONE",
                    "KEEP",
                    "NEXT RUN",
                    "LAST RESULT",
                ],
                |p| {
                    vec![
                        p.name.clone(),
                        target(p),
                        if p.enabled {
                            p.schedule.clone()
                        } else {
                            format!("{} (disabled)", p.schedule)
                        },
                        p.timezone.clone(),
                        keep_text(&p.keep),
                        p.next_run_at
                            .as_ref()
                            .map(time)
                            .unwrap_or_else(|| "-".into()),
                        p.last_result.clone().unwrap_or_else(|| "-".into()),
                    ]
                },
            );
            return Ok(());
        }
        PolicyCmd::Show { policy } => c.policy(&policy)?,
        PolicyCmd::Update {
            policy,
            schedule,
            timezone,
            keep,
            quiesce,
            enable,
            disable,
        } => c.update_policy(
            &policy,
            &UpdatePolicy {
                schedule: schedule.map(|s| s.join(" ")),
                timezone,
                keep: keep.given(),
                quiesce,
                memory: None,
                enabled: (enable || disable).then_some(enable),
            },
        )?,
        PolicyCmd::Delete { policy } => {
            c.delete_policy(&policy)?;
            if !ctx.json {
                outln!("policy {policy} deleted; the snapshots it took stay");
            }
            return Ok(());
        }
        PolicyCmd::Simulate { policy } => {
            let sim = c.simulate_policy(&policy)?;
            if ctx.json {
                print_json(&sim);
                return Ok(());
            }
            outln!("policy {} keeps {}:", sim.policy, keep_text(&sim.keep));
            print_list(
                ctx,
                &sim.items,
                &["NAME", "CREATED", "VERDICT", "WHY"],
                |i| {
                    vec![
                        i.name.clone(),
                        time(&i.created_at),
                        if i.keep { "keep" } else { "remove" }.into(),
                        if i.keep {
                            i.kept_by.join(", ")
                        } else {
                            "no rule keeps it".into()
                        },
                    ]
                },
            );
            outln!("{} taken by hand: never removed by a policy", sim.untouched);
            return Ok(());
        }
    };
    show_policy(ctx, &p);
    Ok(())
}

fn target(p: &Policy) -> String {
    match (&p.volume, &p.instance) {
        (Some(v), _) => format!("volume {v}"),
        (None, Some(i)) => format!("instance {i}"),
        _ => "-".into(),
    }
}

fn show_policy(ctx: &Ctx, p: &Policy) {
    if ctx.json {
        return print_json(p);
    }
    let cloudstack = match (&p.interval_type, &p.cloudstack_schedule) {
        (Some(i), Some(s)) => format!("{i} {s}"),
        _ => "-".into(),
    };
    out!(
        "{}",
        fields(&[
            ("id", p.id.to_string()),
            ("name", p.name.clone()),
            ("target", target(p)),
            ("schedule", p.schedule.clone()),
            ("cloudstack", cloudstack),
            ("timezone", p.timezone.clone()),
            ("keep", keep_text(&p.keep)),
            (
                "quiesce",
                p.quiesce.clone().unwrap_or_else(|| "auto".into())
            ),
            ("memory", p.memory.to_string()),
            ("enabled", p.enabled.to_string()),
            (
                "next run",
                p.next_run_at
                    .as_ref()
                    .map(time)
                    .unwrap_or_else(|| "-".into())
            ),
            (
                "last run",
                p.last_run_at
                    .as_ref()
                    .map(time)
                    .unwrap_or_else(|| "-".into())
            ),
            (
                "last result",
                p.last_result.clone().unwrap_or_else(|| "-".into())
            ),
            ("created", time(&p.created_at)),
        ])
    );
}
