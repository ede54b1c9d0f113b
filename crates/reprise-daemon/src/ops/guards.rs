//! Checks that several operations share, kept apart so that the `ops`
//! modules do not import each other for them.

use crate::app::App;
use reprise_catalog::{InstanceRow, VolumeRow};
use reprise_core::model::*;
use reprise_core::{Error, ErrorKind, Result};

/// Refuse a caller that is not the admin, saying what it tried.
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

/// Refuse a change of an instance's volumes while it has points, naming
/// them.
pub fn refuse_if_points(app: &App, inst: &InstanceRow, what: &str) -> Result<()> {
    let points = app.catalog.list_points(Some(inst.id))?;
    if points.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = points.iter().map(|p| p.name.as_str()).collect();
    Err(Error::conflict(
        "locked_by_points",
        format!(
            "{what} is refused while instance '{}' has recovery points ({}): every point must cover the same disks; delete them first",
            inst.name,
            names.join(", ")
        ),
    ))
}

/// Refuse a change of a volume while a backup reads it.
pub fn refuse_if_backing_up(app: &App, v: &VolumeRow, what: &str) -> Result<()> {
    match app.catalog.snapshot_in_progress(v.id)? {
        Some(s) => Err(Error::conflict(
            "snapshot_in_progress",
            format!(
                "{what} is refused while snapshot '{}' of volume '{}' is backing up: wait for it",
                s.name, v.name
            ),
        )),
        None => Ok(()),
    }
}

/// Refuse a snapshot or recovery point of an instance whose snapshots an
/// operator disabled.
pub fn refuse_if_snapshots_disabled(inst: &InstanceRow) -> Result<()> {
    if inst.snapshots_enabled {
        return Ok(());
    }
    Err(Error::conflict(
        "snapshots_disabled",
        format!(
            "snapshots are disabled for instance '{}': an operator can enable them",
            inst.name
        ),
    ))
}
