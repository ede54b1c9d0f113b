//! The region's hosts: this daemon's registration and heartbeat, which
//! hosts are up, and where new volumes and instances go.
//!
//! A host is `Up` while its last heartbeat is younger than the lease
//! (`[host] lease_secs`), `Down` after: nobody marks a dead host, every
//! reader judges. Heartbeats go every third of the lease, so a host that
//! dies shows `Down` within one lease of its last heartbeat. The hosts'
//! clocks are compared with each other: keep them in sync (NTP).
//!
//! Placement: a new volume or instance of zone Z goes to the `Up` host
//! serving Z with the least volume bytes (ties by name), or to the host
//! the admin names; what must sit beside something else (an instance
//! beside its upload or its data volumes) goes to that thing's host.

use crate::app::App;
use chrono::Utc;
use reprise_catalog::HostRow;
use reprise_core::model::{Account, Host, HostState, Zone};
use reprise_core::{Error, Result};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Record this daemon as its host, reachable at `listening` unless the
/// config names an address.
pub fn register(app: &App, listening: SocketAddr) -> Result<()> {
    let h = &app.config.host;
    let address = h
        .address
        .clone()
        .unwrap_or_else(|| format!("http://{listening}"));
    app.catalog.register_host(&h.name, &address, &h.zones)?;
    // The first host of a region leads it from its start.
    app.catalog
        .take_lease(LEADER_LEASE, &h.name, Duration::from_secs(h.lease_secs))?;
    tracing::info!(host = h.name, address, zones = ?h.zones, "registered as a host of the region");
    Ok(())
}

/// The lease of the region's leader: the one daemon that runs the
/// region's periodic work.
pub const LEADER_LEASE: &str = "region-leader";

/// Say this host is alive every third of the lease, for as long as the
/// daemon runs; take or renew the leader's lease each time, and, as the
/// leader, start the region's periodic work when it is due.
pub async fn heartbeat(app: Arc<App>) {
    let lease = Duration::from_secs(app.config.host.lease_secs);
    let mut tick = tokio::time::interval(lease / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let me = app.config.host.name.clone();
    let mut leading = false;
    loop {
        tick.tick().await;
        // Each is a durable commit, which can take a second while the
        // disk is busy (a backup writing its chunks): on a worker thread
        // it would hold up every task scheduled there.
        let (beat, name) = (app.clone(), me.clone());
        let now_leading = tokio::task::spawn_blocking(move || {
            if let Err(e) = beat.catalog.heartbeat(&name) {
                tracing::warn!("heartbeat not recorded: {e}");
            }
            beat.catalog
                .take_lease(LEADER_LEASE, &name, lease)
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        if now_leading != leading {
            leading = now_leading;
            tracing::info!(
                leader = leading,
                "{}",
                if leading {
                    "this host leads the region's periodic work"
                } else {
                    "another host leads the region's periodic work"
                }
            );
        }
        if leading {
            let (work, name) = (app.clone(), me.clone());
            let _ = tokio::task::spawn_blocking(move || run_periodic_work(&work, &name)).await;
        }
    }
}

/// The region's periodic work, each piece claimed when due (one claimer
/// wins, whoever leads): a garbage collection every `[gc] every_hours`,
/// and at once when a host that is down left a sweep cut short.
fn run_periodic_work(app: &Arc<App>, me: &str) {
    let down = |host: &str| {
        host != me
            && app
                .catalog
                .host(host)
                .is_ok_and(|h| state(app, &h) == HostState::Down)
    };
    if let Err(e) = crate::gc::take_over_cut_short(app, down) {
        tracing::warn!("sweeps cut short not read: {e}");
    }
    let due = |what: &str, hours: u64| {
        hours > 0
            && app
                .catalog
                .claim_due(what, me, Duration::from_secs(hours * 3600))
                .unwrap_or(false)
    };
    if due("periodic-gc", app.config.gc.every_hours) {
        tracing::info!("periodic garbage collection of the region's store");
        app.request_gc();
    }
    if due("catalog-backup", app.config.catalog.backup_every_hours) {
        let app = app.clone();
        tokio::spawn(async move {
            // A catalog that is not the store's (made anew, not recovered
            // yet) is not what a restore should find.
            if let Err(e) = crate::binding::may_sweep(&app).await {
                tracing::warn!("no periodic catalog backup: {e}");
            } else if let Err(e) = crate::catalog_backup::take(&app).await {
                tracing::warn!("the catalog's backup into the region's store failed: {e}");
            }
        });
    }
}

/// Whether a host is up, judged now against this daemon's lease.
pub fn state(app: &App, host: &HostRow) -> HostState {
    let lease = chrono::Duration::seconds(app.config.host.lease_secs as i64);
    if Utc::now() - host.heartbeat_at <= lease {
        HostState::Up
    } else {
        HostState::Down
    }
}

/// Whether `host` serves `zone`.
pub fn serves(host: &HostRow, zone: &str) -> bool {
    host.zones.is_empty() || host.zones.iter().any(|z| z == zone)
}

/// The hosts of the region (admin only).
pub fn list(app: &App, me: &Account) -> Result<Vec<Host>> {
    crate::ops::guards::require_admin(me, "list the region's hosts")?;
    let usage = app.catalog.host_usage()?;
    let leader = app
        .catalog
        .lease(LEADER_LEASE)?
        .filter(|(_, until)| *until >= Utc::now())
        .map(|(holder, _)| holder);
    let rows = app.catalog.list_hosts()?;
    *app.hosts_seen.lock().unwrap_or_else(|p| p.into_inner()) =
        Some((std::time::Instant::now(), rows.clone()));
    Ok(rows
        .into_iter()
        .map(|h| {
            let used = usage.get(&h.name).cloned().unwrap_or_default();
            Host {
                state: state(app, &h),
                leader: leader.as_deref() == Some(h.name.as_str()),
                this_daemon: h.name == app.config.host.name,
                address: h.address,
                zones: h.zones,
                instances: used.instances,
                volumes: used.volumes,
                volume_bytes: used.volume_bytes,
                started_at: h.started_at,
                last_heartbeat: h.heartbeat_at,
                name: h.name,
            }
        })
        .collect())
}

/// The host a new volume or instance of `zone` goes to: `wanted` (an
/// admin's choice, refused to anyone else before it is looked up: a
/// tenant learns nothing of the region's hosts) if it is up and serves the
/// zone, else the up host serving it with the least volume bytes.
pub fn place(app: &App, me: &Account, zone: &Zone, wanted: Option<&str>) -> Result<HostRow> {
    if let Some(name) = wanted {
        crate::ops::guards::require_admin(me, "choose a host")?;
        let host = known(app, name)?;
        check_can_take(app, &host, zone)?;
        return Ok(host);
    }
    let usage = app.catalog.host_usage()?;
    app.catalog
        .list_hosts()?
        .into_iter()
        .filter(|h| serves(h, &zone.name) && state(app, h) == HostState::Up)
        .min_by_key(|h| {
            let bytes = usage.get(&h.name).map_or(0, |u| u.volume_bytes);
            (bytes, h.name.clone())
        })
        .ok_or_else(|| {
            Error::unavailable(
                "no_host_up",
                format!("no host serving zone '{}' is up", zone.name),
            )
        })
}

/// Refuse a host that is down or does not serve `zone`.
pub fn check_can_take(app: &App, host: &HostRow, zone: &Zone) -> Result<()> {
    if !serves(host, &zone.name) {
        return Err(Error::invalid(
            "zone_not_served",
            format!(
                "host '{}' does not serve zone '{}' (it serves {})",
                host.name,
                zone.name,
                host.zones.join(", ")
            ),
        ));
    }
    if state(app, host) == HostState::Down {
        return Err(down(host));
    }
    Ok(())
}

/// What a request for a resource of a `Down` host answers.
pub fn down(host: &HostRow) -> Error {
    let silent = (Utc::now() - host.heartbeat_at).num_seconds();
    Error::unavailable(
        "host_down",
        format!(
            "host '{}' is down (no heartbeat for {silent} s): its instances and volumes wait for it; \
             its volumes' snapshots can be restored into another zone",
            host.name
        ),
    )
}

/// How long the hosts read from the catalog are used before they are read
/// again: a second, against leases of seconds.
const HOSTS_FRESH: Duration = Duration::from_secs(1);

/// Host `name` as the catalog said at most a second ago (requests ask
/// where their resource lives; that need not cost each a round trip).
pub fn known(app: &App, name: &str) -> Result<HostRow> {
    let fresh = |hosts: &[HostRow]| hosts.iter().any(|h| h.name == name);
    app.hosts_known(HOSTS_FRESH, fresh)?
        .into_iter()
        .find(|h| h.name == name)
        .ok_or_else(|| Error::not_found("host", name))
}

/// Whether a resource on `host` is out of reach: its host is another,
/// and `Down` (or unknown to the catalog).
pub fn is_down(app: &App, host: &str) -> bool {
    host != app.config.host.name
        && known(app, host).map_or(true, |h| state(app, &h) == HostState::Down)
}

/// Check a host a request names: the admin's alone, and it must be this
/// daemon's (the request was sent here for it, unless something else
/// decided the host).
pub fn check_wanted(app: &App, me: &Account, wanted: Option<&str>) -> Result<()> {
    let Some(name) = wanted else { return Ok(()) };
    crate::ops::guards::require_admin(me, "choose a host")?;
    if name != app.host_name() {
        return Err(Error::invalid(
            "host_conflict",
            format!(
                "it goes on host '{}' (beside what it is made from), not on '{name}'",
                app.host_name()
            ),
        ));
    }
    Ok(())
}

/// Refuse to make a volume or instance of `zone` on this daemon's host
/// when it does not serve that zone.
pub fn check_here(app: &App, zone: &Zone) -> Result<()> {
    let me = known(app, &app.config.host.name)?;
    if serves(&me, &zone.name) {
        Ok(())
    } else {
        Err(Error::invalid(
            "zone_not_served",
            format!(
                "host '{}' does not serve zone '{}' (it serves {})",
                me.name,
                zone.name,
                me.zones.join(", ")
            ),
        ))
    }
}
