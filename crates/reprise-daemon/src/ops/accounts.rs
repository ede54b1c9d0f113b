//! Accounts, their keys and plans, and zones: the operator's side.
//!
//! The admin creates accounts, assigns their plans, and can revoke any key
//! or delete an account (with `purge`, everything it owns first, through
//! the same operations a tenant would use). A tenant sees its own account,
//! plan and usage, and manages its own keys; it never chooses its plan.

use super::guards::require_admin;
use crate::app::App;
use crate::jobs::{self, Target};
use reprise_catalog::Scope;
use reprise_core::model::*;
use reprise_core::plan::Plan;
use reprise_core::{Error, Result};
use std::path::PathBuf;
use std::sync::Arc;
use uuid::Uuid;

/// The account a caller names: any for the admin, only itself for a
/// tenant (another account is not found, as if it did not exist).
fn visible(app: &App, caller: &Account, reference: &str) -> Result<Account> {
    if caller.admin {
        return app.catalog.account(reference);
    }
    if reference == caller.name || reference == caller.id.to_string() {
        return app.catalog.account(&caller.id.to_string());
    }
    Err(Error::not_found("account", reference))
}

pub fn create_account(app: &App, caller: &Account, req: CreateAccount) -> Result<AccountCreated> {
    require_admin(caller, "create accounts")?;
    let plan = match req.plan.as_deref() {
        Some("") => None,
        Some(p) => Some(p),
        None => app.config.default_plan.as_deref(),
    };
    let made = app
        .catalog
        .create_account_with_plan(&req.name, false, plan)?;
    tracing::info!(account = %made.account.id, name = made.account.name, plan = ?made.account.plan, "account created");
    Ok(made)
}

pub fn list_accounts(app: &App, caller: &Account) -> Result<Vec<Account>> {
    if caller.admin {
        app.catalog.list_accounts()
    } else {
        Ok(vec![app.catalog.account(&caller.id.to_string())?])
    }
}

/// An account with its plan and usage.
pub fn show(app: &App, caller: &Account, reference: &str) -> Result<AccountDetails> {
    let account = visible(app, caller, reference)?;
    Ok(AccountDetails {
        plan: app.catalog.effective_plan(account.id, Scope::default())?,
        usage: app.catalog.usage(account.id, Scope::default())?,
        account,
    })
}

/// The operator's settings of an account: its plan (admin only).
pub fn settings(
    app: &App,
    caller: &Account,
    reference: &str,
    req: AccountSettings,
) -> Result<AccountDetails> {
    require_admin(caller, "assign plans")?;
    let account = app.catalog.account(reference)?;
    if let Some(plan) = req.plan.as_deref() {
        let plan = Some(plan).filter(|p| !p.is_empty());
        app.catalog.set_account_plan(account.id, plan)?;
        tracing::info!(account = %account.id, plan = ?plan, "account plan set");
    }
    show(app, caller, &account.id.to_string())
}

/// Delete an account. Without `purge` it must own nothing (the error
/// lists what it owns); with `purge`, a job first revokes its keys, then
/// deletes everything it owns through the usual operations, then the
/// account.
pub fn delete(
    app: &Arc<App>,
    caller: &Account,
    reference: &str,
    purge: bool,
) -> Result<Option<Job>> {
    require_admin(caller, "delete accounts")?;
    let account = app.catalog.account(reference)?;
    if account.admin {
        return Err(Error::conflict(
            "account_is_admin",
            "the admin account cannot be deleted",
        ));
    }
    if !purge {
        let owned = app.catalog.account_resources(account.id)?;
        if !owned.is_empty() {
            let list: Vec<String> = owned
                .iter()
                .map(|(kind, n)| format!("{n} {kind}{}", if *n == 1 { "" } else { "s" }))
                .collect();
            return Err(Error::conflict(
                "account_not_empty",
                format!(
                    "account '{}' still owns {}: delete them first, or delete the account with purge",
                    account.name,
                    list.join(", ")
                ),
            ));
        }
        app.catalog.delete_account(account.id)?;
        tracing::info!(account = %account.id, name = account.name, "account deleted");
        return Ok(None);
    }
    refuse_purge_while_down(app, &account)?;
    let usage = app.catalog.usage(account.id, Default::default())?;
    if usage.protected > 0 {
        return Err(Error::conflict(
            "account_has_protected",
            format!(
                "account '{}' has {} protected snapshots and recovery points: unprotect them before purging it",
                account.name, usage.protected
            ),
        ));
    }
    let app2 = app.clone();
    let admin = caller.clone();
    let name = account.name.clone();
    let job = jobs::spawn(
        app,
        caller.id,
        "account.purge",
        Target {
            kind: "account",
            id: account.id,
            name: &name,
        },
        0,
        move |ctx| async move {
            for key in app2.catalog.list_keys(account.id)? {
                app2.catalog.revoke_key(key.id)?;
            }
            ctx.log(format!("the keys of '{}' are revoked", account.name));
            purge_resources(&app2, &admin, &account, &ctx).await?;
            app2.catalog.delete_account(account.id)?;
            ctx.log(format!("account '{}' deleted", account.name));
            Ok(())
        },
    )?;
    Ok(Some(job))
}

/// The hosts other than this daemon's that hold something of `account`
/// (an instance, a volume, an upload).
fn other_hosts(app: &App, account: &Account) -> Result<Vec<String>> {
    let me = app.host_name();
    let mut hosts: Vec<String> = app
        .catalog
        .list_instances(Some(account.id))?
        .into_iter()
        .map(|i| i.host)
        .chain(
            app.catalog
                .list_volumes(account.id, &Default::default())?
                .into_iter()
                .map(|v| v.host),
        )
        .chain(
            app.catalog
                .list_uploads(account.id)?
                .into_iter()
                .filter_map(|u| app.catalog.upload_host(account.id, &u.id.to_string()).ok()),
        )
        .filter(|h| !h.is_empty() && h != me)
        .collect();
    hosts.sort();
    hosts.dedup();
    Ok(hosts)
}

/// A purge asks each host to delete what it holds: one that is down
/// cannot, so the purge is refused before it changes anything.
fn refuse_purge_while_down(app: &App, account: &Account) -> Result<()> {
    for name in other_hosts(app, account)? {
        let host = crate::hosts::known(app, &name)?;
        if crate::hosts::state(app, &host) == HostState::Down {
            return Err(Error::unavailable(
                "host_down",
                format!(
                    "account '{}' has instances or volumes on host '{name}', which is down: a purge \
                     needs it up to delete them; purge again when it is back",
                    account.name
                ),
            ));
        }
    }
    Ok(())
}

/// Where a purge deletes one resource: here, through the operation, or
/// on the daemon of the host that holds it, through the API as a request
/// sent on (the account named as its caller), waiting for the job it
/// starts.
struct Purge<'a> {
    app: &'a Arc<App>,
    account: &'a Account,
}

impl Purge<'_> {
    fn here(&self, host: &str) -> bool {
        host.is_empty() || host == self.app.host_name()
    }

    async fn on(
        &self,
        host: &str,
        method: axum::http::Method,
        path: String,
        body: Option<serde_json::Value>,
    ) -> Result<()> {
        self.as_caller(self.account, host, method, path, body).await
    }

    /// [`Purge::on`], asked by `caller` (the admin, for what only it may do).
    async fn as_caller(
        &self,
        caller: &Account,
        host: &str,
        method: axum::http::Method,
        path: String,
        body: Option<serde_json::Value>,
    ) -> Result<()> {
        let host = crate::hosts::known(self.app, host)?;
        let caller = crate::http::Authenticated {
            account: caller.clone(),
            key: Uuid::nil(),
        };
        let answer = crate::forward::ask(self.app, &host, &caller, method, &path, body).await?;
        if let Ok(started) = serde_json::from_value::<JobStarted>(answer) {
            jobs::finished(self.app, &started.job).await?;
        }
        Ok(())
    }
}

async fn purge_resources(
    app: &Arc<App>,
    admin: &Account,
    account: &Account,
    ctx: &jobs::JobCtx,
) -> Result<()> {
    use super::{deletes, instances, points, uploads, volumes};
    use axum::http::Method;
    let id = |u: Uuid| u.to_string();
    let purge = Purge { app, account };
    for inst in app.catalog.list_instances(Some(account.id))? {
        let path = format!("/instances/{}", inst.id);
        if purge.here(&inst.host) {
            let fresh = app.catalog.instance_by_id(inst.id)?;
            if fresh.state != InstanceState::Stopped {
                jobs::finished(app, &instances::stop(app, account, &id(inst.id), true)?).await?;
            }
            if !app.catalog.list_points(Some(inst.id))?.is_empty() {
                jobs::finished(app, &points::delete_all(app, account, &id(inst.id))?).await?;
            }
            instances::delete(app, account, &id(inst.id)).await?;
        } else {
            let stop = serde_json::json!({ "force": true });
            if app.catalog.instance_by_id(inst.id)?.state != InstanceState::Stopped {
                purge
                    .on(&inst.host, Method::POST, format!("{path}/stop"), Some(stop))
                    .await?;
            }
            if !app.catalog.list_points(Some(inst.id))?.is_empty() {
                purge
                    .on(&inst.host, Method::DELETE, format!("{path}/points"), None)
                    .await?;
            }
            purge.on(&inst.host, Method::DELETE, path, None).await?;
        }
        ctx.log(format!("instance '{}' deleted", inst.name));
    }
    // A snapshot is removed for good (the account goes: no undelete) on
    // its volume's host (which may hold the volume's marks of what the
    // next increment reads), or here when the volume is gone; deleted
    // ones too.
    for s in app.catalog.list_snapshots(Some(account.id))? {
        let host = app
            .catalog
            .list_volumes_by_id(&[s.volume_id])?
            .into_iter()
            .next()
            .map(|v| v.host)
            .unwrap_or_default();
        if purge.here(&host) {
            jobs::finished(app, &deletes::purge(app, admin, &id(s.id))?).await?;
        } else {
            let path = format!("/snapshots/{}?purge=true", s.id);
            purge
                .as_caller(admin, &host, Method::DELETE, path, None)
                .await?;
        }
        ctx.log(format!("snapshot '{}' deleted", s.name));
    }
    let templates = app.catalog.list_templates(account.id)?;
    for t in templates
        .iter()
        .chain(&app.catalog.deleted_templates(account.id)?)
    {
        if app.catalog.start_template_purge(t.id)? {
            deletes::purge_template(app, t.id).await?;
        }
        ctx.log(format!("template '{}' deleted", t.name));
    }
    for v in app.catalog.list_volumes(account.id, &Default::default())? {
        if purge.here(&v.host) {
            volumes::delete(app, account, &id(v.id)).await?;
        } else {
            let path = format!("/volumes/{}", v.id);
            purge.on(&v.host, Method::DELETE, path, None).await?;
        }
        ctx.log(format!("volume '{}' deleted", v.name));
    }
    for u in app.catalog.list_uploads(account.id)? {
        let host = app.catalog.upload_host(account.id, &id(u.id))?;
        if purge.here(&host) {
            uploads::delete(app, account, &id(u.id)).await?;
        } else {
            let path = format!("/uploads/{}", u.id);
            purge.on(&host, Method::DELETE, path, None).await?;
        }
    }
    Ok(())
}

// ---- keys ------------------------------------------------------------------

pub fn create_key(
    app: &App,
    caller: &Account,
    account: &str,
    req: CreateApiKey,
) -> Result<ApiKeyCreated> {
    let account = visible(app, caller, account)?;
    let made = if req.cloudstack {
        crate::cloudstack::create_key_pair(app, account.id, &req.name)?
    } else {
        app.catalog.create_key(account.id, &req.name)?
    };
    tracing::info!(account = %account.id, key = %made.key.id, name = made.key.name, "API key created");
    Ok(made)
}

pub fn list_keys(app: &App, caller: &Account, account: &str) -> Result<Vec<ApiKey>> {
    let account = visible(app, caller, account)?;
    app.catalog.list_keys(account.id)
}

/// Revoke a key: it fails from the next request on. The admin account
/// keeps at least one key.
pub fn revoke_key(app: &App, caller: &Account, account: &str, key: &str) -> Result<()> {
    let account = visible(app, caller, account)?;
    let key = app.catalog.key(account.id, key)?;
    let bearer_keys = app
        .catalog
        .list_keys(account.id)?
        .iter()
        .filter(|k| k.cloudstack_api_key.is_none())
        .count();
    if account.admin && key.cloudstack_api_key.is_none() && bearer_keys == 1 {
        return Err(Error::conflict(
            "last_admin_key",
            "this is the admin account's last key: create another before revoking it, or rotate it",
        ));
    }
    app.catalog.revoke_key(key.id)?;
    tracing::info!(account = %account.id, key = %key.id, name = key.name, "API key revoked");
    Ok(())
}

/// Replace the key the request came with by a new one of the same name.
/// For the admin key kept in `DATA_DIR/admin.key`, the file is rewritten
/// too, so local commands go on working; nothing restarts.
pub fn rotate_key(app: &App, caller: &Account, used_key: Uuid) -> Result<ApiKeyCreated> {
    let path = app.config.admin_key_path();
    let in_file = caller.admin
        && std::fs::read_to_string(&path)
            .ok()
            .and_then(|k| app.catalog.account_by_key(k.trim()).ok().flatten())
            .is_some_and(|(_, key)| key == used_key);
    let made = app.catalog.rotate_key(used_key)?;
    if in_file {
        crate::write_private(&path, &made.api_key)?;
        tracing::info!(path = %path.display(), "admin key rotated; the file holds the new one");
    }
    tracing::info!(account = %caller.id, key = %made.key.id, name = made.key.name, "API key rotated");
    Ok(made)
}

// ---- plans -----------------------------------------------------------------

/// The plans: all of them for the admin, its own for a tenant.
pub fn list_plans(app: &App, caller: &Account) -> Result<Vec<Plan>> {
    if caller.admin {
        return app.catalog.list_plans();
    }
    Ok(app
        .catalog
        .effective_plan(caller.id, Scope::default())?
        .into_iter()
        .collect())
}

pub fn put_plan(app: &App, caller: &Account, plan: Plan) -> Result<Plan> {
    require_admin(caller, "define plans")?;
    app.catalog.put_plan(&plan)?;
    tracing::info!(plan = plan.name, "plan defined");
    app.catalog.plan(&plan.name)
}

pub fn delete_plan(app: &App, caller: &Account, name: &str) -> Result<()> {
    require_admin(caller, "delete plans")?;
    app.catalog.delete_plan(name)
}

// ---- zones -----------------------------------------------------------------

/// Create a zone with its primary storage directory (default
/// `DATA_DIR/zones/NAME`); the directory is made before the zone is
/// recorded.
pub fn create_zone(app: &App, caller: &Account, req: CreateZone) -> Result<Zone> {
    require_admin(caller, "create zones")?;
    reprise_core::name::validate_name("zone", &req.name)?;
    if app.catalog.zone(&req.name).is_ok() {
        return Err(Error::conflict(
            "name_taken",
            format!("zone '{}' already exists", req.name),
        ));
    }
    let dir = match req.storage_dir.as_deref() {
        Some(d) if !d.is_empty() => {
            let p = PathBuf::from(d);
            if !p.is_absolute() {
                return Err(Error::invalid(
                    "storage_dir_invalid",
                    format!("storage directory '{d}' must be an absolute path"),
                ));
            }
            p
        }
        _ => app.config.data_dir.join("zones").join(&req.name),
    };
    std::fs::create_dir_all(&dir).map_err(|e| {
        Error::invalid(
            "storage_dir_invalid",
            format!("cannot create storage directory {}: {e}", dir.display()),
        )
        .with_source(e)
    })?;
    let zone = app
        .catalog
        .create_zone(caller.id, &req.name, &dir.to_string_lossy())?;
    tracing::info!(zone = zone.name, storage = zone.storage_dir, "zone created");
    Ok(zone)
}
