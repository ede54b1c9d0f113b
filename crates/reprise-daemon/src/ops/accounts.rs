//! Accounts and zones: region administration, for the admin account.

use crate::app::App;
use reprise_core::model::{Account, AccountCreated, CreateAccount, CreateZone, Zone};
use reprise_core::{Error, ErrorKind, Result};
use std::path::PathBuf;

pub fn require_admin(caller: &Account, what: &str) -> Result<()> {
    if caller.admin {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::Forbidden,
            "admin_only",
            format!("only the admin account can {what}"),
        ))
    }
}

pub fn create_account(app: &App, caller: &Account, req: CreateAccount) -> Result<AccountCreated> {
    require_admin(caller, "create accounts")?;
    let made = app.catalog.create_account(&req.name, false)?;
    tracing::info!(account = %made.account.id, name = made.account.name, "account created");
    Ok(made)
}

pub fn list_accounts(app: &App, caller: &Account) -> Result<Vec<Account>> {
    if caller.admin {
        app.catalog.list_accounts()
    } else {
        Ok(vec![caller.clone()])
    }
}

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
    })?;
    let zone = app
        .catalog
        .create_zone(caller.id, &req.name, &dir.to_string_lossy())?;
    tracing::info!(zone = zone.name, storage = zone.storage_dir, "zone created");
    Ok(zone)
}
