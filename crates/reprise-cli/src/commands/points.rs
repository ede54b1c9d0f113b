//! `reprise point`: recovery points of an instance.

use super::jobs::follow;
use super::{print_json, Ctx};
use crate::output::{fields, opt, out, outln, size, table, time};
use clap::Subcommand;
use reprise_core::model::*;
use reprise_core::Result;

#[derive(Subcommand)]
pub(super) enum PointCmd {
    /// Take a recovery point (disk-only unless --memory).
    Create {
        instance: String,
        /// Generated from the instance name and the UTC time when left out.
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// Include RAM and device state: reverting resumes the instance as
        /// it was, without a reboot (takes space: about the guest's RAM).
        #[arg(long)]
        memory: bool,
        /// Do not freeze the guest's filesystems (crash-consistent).
        #[arg(long, conflicts_with = "quiesce")]
        no_quiesce: bool,
        /// auto (freeze when the guest agent answers), required, or none.
        #[arg(long)]
        quiesce: Option<String>,
        /// Protect it from deletes and retention from the start.
        #[arg(long)]
        protect: bool,
    },
    /// Protect a point: no delete or retention removes it until it is
    /// unprotected (the plan caps how many an account protects).
    Protect {
        instance: String,
        point: String,
    },
    /// Lift a point's protection.
    Unprotect {
        instance: String,
        point: String,
    },
    /// List an instance's recovery points, or draw them as a tree.
    List {
        instance: String,
        #[arg(long, conflicts_with = "policy")]
        tree: bool,
        /// Only the points this policy took.
        #[arg(long)]
        policy: Option<String>,
    },
    Show {
        instance: String,
        point: String,
    },
    /// Revert the instance to a point; the other points stay.
    Revert {
        instance: String,
        point: String,
    },
    /// Delete one point (its children move to its parent) or all.
    Delete {
        instance: String,
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        point: Option<String>,
        #[arg(long)]
        all: bool,
    },
}

pub(super) fn run(ctx: &Ctx, cmd: PointCmd) -> Result<()> {
    let c = &ctx.client;
    let (job, instance) = match cmd {
        PointCmd::Create {
            instance,
            name,
            description,
            memory,
            no_quiesce,
            quiesce,
            protect,
        } => {
            let req = CreatePoint {
                name,
                description,
                memory,
                quiesce: if no_quiesce {
                    Some("none".into())
                } else {
                    quiesce
                },
                protect,
            };
            (c.create_point(&instance, &req)?, instance)
        }
        PointCmd::List {
            instance,
            tree,
            policy,
        } => {
            let points = match &policy {
                Some(p) => c.points_of_policy(&instance, p)?,
                None => c.points(&instance)?,
            };
            if ctx.json {
                print_json(&points);
            } else if tree {
                out!("{}", crate::output::point_tree(&instance, &points));
            } else {
                out!(
                    "{}",
                    table(
                        &POINT_HEADERS,
                        &points.iter().map(point_row).collect::<Vec<_>>()
                    )
                );
            }
            return Ok(());
        }
        PointCmd::Show { instance, point } => {
            let p = c.point(&instance, &point)?;
            show_point(ctx, &p);
            return Ok(());
        }
        PointCmd::Revert { instance, point } => (c.revert_point(&instance, &point)?, instance),
        PointCmd::Protect { instance, point } => {
            show_point(ctx, &c.protect_point(&instance, &point, true)?);
            return Ok(());
        }
        PointCmd::Unprotect { instance, point } => {
            show_point(ctx, &c.protect_point(&instance, &point, false)?);
            return Ok(());
        }
        PointCmd::Delete {
            instance,
            point,
            all,
        } => {
            let job = if all {
                c.delete_all_points(&instance)?
            } else {
                let point = point.unwrap_or_default();
                c.delete_point(&instance, &point)?
            };
            (job, instance)
        }
    };
    let kind = job.kind.clone();
    let target = job.target_id;
    if follow(ctx, job)? {
        if kind == "point.create" || kind == "point.revert" {
            let p = c.point(&instance, &target.to_string())?;
            show_point(ctx, &p);
        } else if !ctx.json {
            outln!("deleted");
        }
    }
    Ok(())
}

pub(super) const POINT_HEADERS: [&str; 9] = [
    "NAME",
    "STATE",
    "MEMORY",
    "CONSISTENCY",
    "FROZEN",
    "HOLDS",
    "PARENT",
    "CREATED",
    "ID",
];

pub(super) fn point_row(p: &Point) -> Vec<String> {
    vec![
        if p.current {
            format!("{} *", p.name)
        } else {
            p.name.clone()
        },
        p.state.to_string(),
        if p.memory { "yes" } else { "no" }.into(),
        p.consistency.clone(),
        p.frozen_ms
            .map(|m| format!("{m} ms"))
            .unwrap_or_else(|| "-".into()),
        p.size_bytes.map(size).unwrap_or_else(|| "?".into()),
        opt(&p.parent_id),
        time(&p.created_at),
        p.id.to_string(),
    ]
}

pub(super) fn show_point(ctx: &Ctx, p: &Point) {
    if ctx.json {
        return print_json(p);
    }
    let mut pairs = vec![
        ("id", p.id.to_string()),
        ("name", p.name.clone()),
        ("instance", p.instance.clone()),
        ("state", p.state.to_string()),
        (
            "current",
            if p.current {
                "yes: the instance is at this point"
            } else {
                "no"
            }
            .into(),
        ),
        (
            "memory",
            match (p.memory, p.memory_save.as_deref()) {
                (false, _) => "no (reverting reboots the instance)".into(),
                (true, Some(how)) => format!("yes, saved by {how}"),
                (true, None) => "yes".into(),
            },
        ),
        ("consistency", p.consistency.clone()),
        ("protected", if p.protected { "yes" } else { "no" }.into()),
        (
            "frozen",
            p.frozen_ms
                .map(|m| format!("{m} ms"))
                .unwrap_or_else(|| "-".into()),
        ),
        (
            "holds",
            p.size_bytes.map(size).unwrap_or_else(|| "?".into()),
        ),
        ("parent", opt(&p.parent_id)),
        ("created", time(&p.created_at)),
    ];
    if !p.description.is_empty() {
        pairs.insert(2, ("description", p.description.clone()));
    }
    if let Some(e) = &p.error {
        pairs.push(("error", e.clone()));
    }
    out!("{}", fields(&pairs));
}
