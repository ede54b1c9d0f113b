//! `reprise account`, `reprise account key` and `reprise plan`: accounts,
//! their API keys and the plans that bound them.

use super::jobs::follow;
use super::{print_json, print_list, Ctx};
use crate::output::{fields, opt, out, outln, size, table, time};
use clap::Subcommand;
use reprise_client::Client;
use reprise_core::model::*;
use reprise_core::Result;

#[derive(Subcommand)]
pub(super) enum AccountCmd {
    /// Create an account (admin); prints its API key once.
    Create {
        name: String,
        /// Its plan (default: the daemon's default_plan; "" for none).
        #[arg(long)]
        plan: Option<String>,
    },
    List,
    /// An account's plan and what it uses of each limit (your own when
    /// left out).
    Show {
        account: Option<String>,
    },
    /// Assign a plan to an account (admin; "" removes it).
    Set {
        account: String,
        #[arg(long)]
        plan: String,
    },
    /// Delete an account (admin): refused while it owns anything, unless
    /// --purge, which revokes its keys and deletes all it owns first.
    Delete {
        account: String,
        #[arg(long)]
        purge: bool,
    },
    /// API keys: several per account, each revocable.
    #[command(subcommand)]
    Key(KeyCmd),
}

#[derive(Subcommand)]
pub(super) enum KeyCmd {
    /// Make a new key (shown once).
    Create {
        name: String,
        /// Whose (admin; your own account when left out).
        #[arg(long)]
        account: Option<String>,
        /// A CloudStack key pair (apiKey and secret key) for the CloudStack
        /// API at /client/api, instead of a bearer key.
        #[arg(long)]
        cloudstack: bool,
    },
    List {
        #[arg(long)]
        account: Option<String>,
    },
    /// Revoke a key: it fails from the next request on.
    Revoke {
        key: String,
        #[arg(long)]
        account: Option<String>,
    },
    /// Replace the key this command uses by a new one (for the admin, the
    /// daemon's admin.key file too); prints the new key once.
    Rotate,
}

// Parsed once per run: `Set`'s size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub(super) enum PlanCmd {
    /// Plans (yours, or all for the admin).
    List,
    /// Define or replace a plan (admin). Limits left out are unlimited.
    Set {
        name: String,
        /// Recovery points per instance.
        #[arg(long)]
        max_recovery_points: Option<u64>,
        #[arg(long)]
        max_snapshots_per_volume: Option<u64>,
        /// Volume snapshots of the account.
        #[arg(long)]
        max_snapshots: Option<u64>,
        #[arg(long)]
        max_volumes: Option<u64>,
        #[arg(long)]
        max_instances: Option<u64>,
        /// vCPUs of the account's instances together.
        #[arg(long)]
        max_vcpus: Option<u64>,
        /// RAM of the account's instances together, like 16G.
        #[arg(long)]
        max_memory: Option<String>,
        /// Total size of the account's volumes, like 200G.
        #[arg(long)]
        max_volume_size: Option<String>,
        /// Bytes of the account's snapshots in the region's store, like 1T.
        #[arg(long)]
        max_snapshot_size: Option<String>,
        #[arg(long)]
        max_concurrent_jobs: Option<u64>,
        /// Snapshots and recovery points the account may protect.
        #[arg(long)]
        max_protected: Option<u64>,
        /// API keys and CloudStack key pairs of the account.
        #[arg(long)]
        max_keys: Option<u64>,
        /// Snapshot policies of the account.
        #[arg(long)]
        max_policies: Option<u64>,
        /// Days a deleted snapshot or template can be undeleted (0: deletes
        /// are at once; left out: the daemon's [snapshots] undelete_days).
        #[arg(long)]
        undelete_days: Option<u64>,
    },
    /// Delete a plan no account or instance uses (admin).
    Delete { name: String },
}

/// The account a command names, or the caller's own.
pub(super) fn account_or_me(c: &Client, account: Option<String>) -> Result<String> {
    match account {
        Some(a) => Ok(a),
        None => c.whoami().map(|me| me.id.to_string()),
    }
}

pub(super) fn account(ctx: &Ctx, cmd: AccountCmd) -> Result<()> {
    let c = &ctx.client;
    match cmd {
        AccountCmd::Create { name, plan } => {
            let made = c.create_account(&CreateAccount { name, plan })?;
            if ctx.json {
                print_json(&made);
            } else {
                out!(
                    "{}",
                    fields(&[
                        ("id", made.account.id.to_string()),
                        ("name", made.account.name.clone()),
                        ("plan", opt(&made.account.plan)),
                        ("api key", made.api_key.clone()),
                    ])
                );
                eprintln!("The API key is shown this once: keep it now.");
            }
        }
        AccountCmd::List => {
            let accounts = c.accounts()?;
            print_list(
                ctx,
                &accounts,
                &["NAME", "ADMIN", "PLAN", "CREATED", "ID"],
                |a| {
                    vec![
                        a.name.clone(),
                        if a.admin { "yes" } else { "no" }.into(),
                        opt(&a.plan),
                        time(&a.created_at),
                        a.id.to_string(),
                    ]
                },
            );
        }
        AccountCmd::Show { account } => {
            let a = account_or_me(c, account)?;
            show_account(ctx, &c.account(&a)?);
        }
        AccountCmd::Set { account, plan } => {
            let d = c.set_account(&account, &AccountSettings { plan: Some(plan) })?;
            show_account(ctx, &d);
        }
        AccountCmd::Delete { account, purge } => {
            if purge {
                let job = c.purge_account(&account)?;
                if !follow(ctx, job)? {
                    return Ok(());
                }
            } else {
                c.delete_account(&account)?;
            }
            if !ctx.json {
                outln!("account {account} deleted");
            }
        }
        AccountCmd::Key(k) => key(ctx, k)?,
    }
    Ok(())
}

pub(super) fn show_account(ctx: &Ctx, d: &AccountDetails) {
    if ctx.json {
        return print_json(d);
    }
    out!(
        "{}",
        fields(&[
            ("id", d.account.id.to_string()),
            ("name", d.account.name.clone()),
            ("admin", if d.account.admin { "yes" } else { "no" }.into()),
            ("plan", opt(&d.account.plan)),
            ("created", time(&d.account.created_at)),
        ])
    );
    let limits = d
        .plan
        .as_ref()
        .map(|p| p.limits.clone())
        .unwrap_or_default();
    let rows: Vec<Vec<String>> = reprise_core::plan::Limit::ALL
        .iter()
        .map(|l| {
            let bytes = matches!(
                l,
                reprise_core::plan::Limit::VolumeBytes | reprise_core::plan::Limit::SnapshotBytes
            );
            let show = |n: u64| if bytes { size(n) } else { n.to_string() };
            vec![
                l.field().to_string(),
                show(l.used(&d.usage)),
                l.of(&limits)
                    .map(show)
                    .unwrap_or_else(|| "unlimited".into()),
            ]
        })
        .collect();
    outln!();
    out!("{}", table(&["LIMIT", "USED", "ALLOWED"], &rows));
}

pub(super) fn key(ctx: &Ctx, cmd: KeyCmd) -> Result<()> {
    let c = &ctx.client;
    let show_made = |made: &ApiKeyCreated| {
        if ctx.json {
            print_json(made);
        } else {
            let mut shown = vec![
                ("id", made.key.id.to_string()),
                ("name", made.key.name.clone()),
                ("api key", made.api_key.clone()),
            ];
            if let Some(secret) = &made.secret_key {
                shown.push(("secret key", secret.clone()));
                out!("{}", fields(&shown));
                eprintln!("The secret key is shown this once: keep it now.");
            } else {
                out!("{}", fields(&shown));
                eprintln!("The API key is shown this once: keep it now.");
            }
        }
    };
    match cmd {
        KeyCmd::Create {
            name,
            account,
            cloudstack,
        } => {
            let a = account_or_me(c, account)?;
            let made = c.create_key(&a, &CreateApiKey { name, cloudstack })?;
            show_made(&made);
        }
        KeyCmd::List { account } => {
            let a = account_or_me(c, account)?;
            let keys = c.keys(&a)?;
            print_list(
                ctx,
                &keys,
                &["NAME", "KIND", "PREFIX", "CREATED", "LAST USED", "ID"],
                |k| {
                    vec![
                        k.name.clone(),
                        if k.cloudstack_api_key.is_some() {
                            "cloudstack".into()
                        } else {
                            "bearer".into()
                        },
                        format!("{}…", k.prefix),
                        time(&k.created_at),
                        k.last_used_at
                            .as_ref()
                            .map(time)
                            .unwrap_or_else(|| "-".into()),
                        k.id.to_string(),
                    ]
                },
            );
        }
        KeyCmd::Revoke { key, account } => {
            let a = account_or_me(c, account)?;
            c.revoke_key(&a, &key)?;
            if !ctx.json {
                outln!("key {key} revoked");
            }
        }
        KeyCmd::Rotate => {
            let made = c.rotate_admin_key()?;
            show_made(&made);
        }
    }
    Ok(())
}

pub(super) fn plan(ctx: &Ctx, cmd: PlanCmd) -> Result<()> {
    use reprise_core::plan::{Limit, Plan, PlanLimits};
    let c = &ctx.client;
    match cmd {
        PlanCmd::List => {
            let plans = c.plans()?;
            if ctx.json {
                print_json(&plans);
                return Ok(());
            }
            let mut headers = vec!["NAME"];
            headers.extend(Limit::ALL.iter().map(|l| l.field()));
            let rows: Vec<Vec<String>> = plans
                .iter()
                .map(|p| {
                    let mut row = vec![p.name.clone()];
                    row.extend(Limit::ALL.iter().map(|l| match l.of(&p.limits) {
                        None => "-".to_string(),
                        Some(n) if l.is_bytes() => size(n),
                        Some(n) => n.to_string(),
                    }));
                    row
                })
                .collect();
            out!("{}", table(&headers, &rows));
        }
        PlanCmd::Set {
            name,
            max_recovery_points,
            max_snapshots_per_volume,
            max_snapshots,
            max_volumes,
            max_instances,
            max_vcpus,
            max_memory,
            max_volume_size,
            max_snapshot_size,
            max_concurrent_jobs,
            max_protected,
            max_keys,
            max_policies,
            undelete_days,
        } => {
            let bytes =
                |s: Option<String>| s.map(|s| reprise_core::size::parse_size(&s)).transpose();
            let plan = Plan {
                name,
                limits: PlanLimits {
                    max_recovery_points,
                    max_snapshots_per_volume,
                    max_snapshots,
                    max_volumes,
                    max_instances,
                    max_vcpus,
                    max_memory_bytes: bytes(max_memory)?,
                    max_volume_bytes: bytes(max_volume_size)?,
                    max_snapshot_bytes: bytes(max_snapshot_size)?,
                    max_concurrent_jobs,
                    max_protected,
                    max_keys,
                    max_policies,
                    undelete_days,
                },
            };
            let p = c.put_plan(&plan)?;
            if ctx.json {
                print_json(&p);
            } else {
                outln!("plan {} set", p.name);
            }
        }
        PlanCmd::Delete { name } => {
            c.delete_plan(&name)?;
            if !ctx.json {
                outln!("plan {name} deleted");
            }
        }
    }
    Ok(())
}
