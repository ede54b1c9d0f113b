//! Garbage collection of the region's store, in the background.
//!
//! A delete (snapshot, template) does not collect: it asks
//! ([`App::request_gc`]), and [`run_when_asked`] collects once the asks
//! stop for `gc.delay_ms` — at most ten delays after the first ask, so a
//! tenant looping create/delete can neither run a collection per delete
//! nor put collections off for ever; and in the whole region, one such
//! collection begins at most every `gc.min_interval_minutes`. One
//! collection runs at a time
//! (`App::gc_running`), the admin's `reprise gc` included. The protocol
//! that keeps chunks of running backups is in `reprise_backup::gc`.

use crate::app::App;
use crate::jobs::JobCtx;
use reprise_core::model::GcResult;
use reprise_core::Result;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Collect whenever asked, for as long as the daemon runs.
pub async fn run_when_asked(app: Arc<App>) {
    loop {
        app.gc_wanted.notified().await;
        let delay = Duration::from_millis(app.config.gc.delay_ms);
        let latest = Instant::now() + delay * 10;
        loop {
            let wait = delay.min(latest.saturating_duration_since(Instant::now()));
            if wait.is_zero() {
                break;
            }
            tokio::select! {
                _ = app.gc_wanted.notified() => continue,
                _ = tokio::time::sleep(wait) => break,
            }
        }
        wait_for_spacing(&app).await;
        match collect(&app).await {
            Ok(r) => tracing::info!(
                chunks_examined = r.chunks_examined,
                chunks_deleted = r.chunks_deleted,
                bytes_freed = r.bytes_freed,
                chunks_in_grace = r.chunks_in_grace,
                "garbage collection after deletes"
            ),
            Err(e) => tracing::warn!("garbage collection failed; the next delete asks again: {e}"),
        }
    }
}

/// Wait until the region's last sweep after deletes began at least
/// `[gc] min_interval_minutes` ago, whichever daemon ran it, and claim
/// this one: a tenant deleting every minute (a retention rule on a cron of
/// every minute) cannot make the region sweep its whole store every minute.
/// Asks that come meanwhile are answered by this sweep.
async fn wait_for_spacing(app: &App) {
    let spacing = Duration::from_secs(app.config.gc.min_interval_minutes * 60);
    if spacing.is_zero() {
        return;
    }
    loop {
        match app.catalog.claim_spaced(SPACED_SWEEP, spacing) {
            Ok(true) => return,
            Ok(false) => tokio::time::sleep(spacing.min(Duration::from_secs(30))).await,
            Err(e) => {
                tracing::warn!("cannot read when the region last swept ({e}): sweeping now");
                return;
            }
        }
    }
}

/// The region's record of its last sweep after deletes.
const SPACED_SWEEP: &str = "sweep-after-deletes";

/// Sweep the region's store now (after any collection already running).
/// The sweep is marked in the catalog while it runs: one cut short by
/// the daemon's death is swept again by the region's leader, or by this
/// host when it starts again ([`take_over_cut_short`]).
pub async fn collect(app: &App) -> Result<GcResult> {
    let _one_at_a_time = app.gc_running.lock().await;
    let me = app.host_name();
    app.catalog.sweep_began(me)?;
    let swept = sweep(app).await;
    // Ended, well or not: a failed sweep is asked again by the next delete.
    if let Err(e) = app.catalog.sweep_ended(me) {
        tracing::warn!("the sweep's mark stays (it will be swept again): {e}");
    }
    swept
}

/// Sweep the sweeps cut short of the hosts `whose` says (taking each
/// over, so only one daemon does): true when one was taken.
pub fn take_over_cut_short(app: &App, whose: impl Fn(&str) -> bool) -> Result<bool> {
    let mut taken = false;
    for host in app.catalog.sweeps_cut_short()? {
        if whose(&host) && app.catalog.sweep_ended(&host)? {
            tracing::warn!(
                host,
                "a sweep of the region's store was cut short there: sweeping again"
            );
            taken = true;
        }
    }
    if taken {
        app.request_gc();
    }
    Ok(taken)
}

/// What the catalog says is in use: what a sweep keeps.
pub fn live(app: &App) -> Result<reprise_backup::Live> {
    let (chunks, snapshots) = app.catalog.live_references()?;
    Ok(reprise_backup::Live {
        chunks: chunks.into_iter().map(reprise_chunks::ChunkName).collect(),
        snapshots,
    })
}

async fn sweep(app: &App) -> Result<GcResult> {
    // Only the store's own catalog, no older than the store has seen it,
    // deletes anything (see `crate::binding`).
    crate::binding::may_sweep(app).await?;
    let started = Instant::now();
    let r = reprise_backup::gc(app.region().await?, &app.refs, || live(app)).await?;
    app.metrics.orphans(r.orphans.len() as u64);
    for m in &r.orphans {
        tracing::warn!(
            snapshot = %m.snapshot_id,
            name = m.name,
            volume = m.volume_name,
            "the store holds a snapshot this catalog does not know: kept (`reprise region recover` brings it back)"
        );
    }
    let deleted: Vec<[u8; 32]> = r.deleted.iter().map(|n| n.0).collect();
    app.catalog.forget_chunks(&deleted)?;
    app.metrics
        .collected(started.elapsed(), r.chunks_deleted, r.bytes_freed);
    Ok(GcResult {
        chunks_examined: r.chunks_examined,
        chunks_deleted: r.chunks_deleted,
        bytes_freed: r.bytes_freed,
        snapshot_objects_deleted: r.snapshot_objects_deleted,
        chunks_in_grace: r.chunks_in_grace,
        orphans: r.orphans.len() as u64,
        orphans_unreadable: r.unreadable.len() as u64,
    })
}

/// Collect from within a job, saying what went in its log.
pub async fn collect_and_log(app: &App, ctx: &JobCtx) -> Result<()> {
    let r = collect(app).await?;
    ctx.log(format!(
        "garbage collection: examined {} chunks; removed {} ({} bytes) that nothing references, and {} objects of backups that never completed; left {} unreferenced chunks written within the last {} minutes",
        r.chunks_examined, r.chunks_deleted, r.bytes_freed, r.snapshot_objects_deleted,
        r.chunks_in_grace, app.config.gc.grace_minutes
    ));
    if r.orphans > 0 {
        ctx.log(format!(
            "kept {} snapshots and templates the store holds that this catalog does not know, with their chunks: `reprise region recover --dry-run` lists them",
            r.orphans
        ));
    }
    if r.orphans_unreadable > 0 {
        ctx.log(format!(
            "no chunk was removed: {} of them cannot be read, so what they need cannot be told (the daemon's log names them)",
            r.orphans_unreadable
        ));
    }
    Ok(())
}
