//! Freezing a guest's filesystems around a snapshot, with a thaw that is
//! guaranteed.
//!
//! Protocol: the agent must answer a ping first; a watchdog is armed
//! *before* `guest-fsfreeze-freeze` is sent (a freeze that hangs may still
//! freeze); the snapshot is cut; `guest-fsfreeze-thaw` is sent and
//! confirmed with `guest-fsfreeze-status`. If the bound
//! (`snapshots.freeze_timeout_secs`) is reached first — a daemon error, a
//! QEMU error, a hung or restarted agent — the watchdog thaws and keeps
//! trying until the status says `thawed`. A snapshot counts as
//! `filesystem`-consistent only if the freeze succeeded and the snapshot was
//! cut before the bound; otherwise it is `crash`-consistent, or an error
//! when the caller required quiescing. The agent channel is not held while
//! the snapshot is cut: the one session (freeze and thaw share it, a
//! reconnect costs a sync round trip) sits behind a lock the watchdog takes
//! too, and every call made under that lock has a deadline.

use crate::app::App;
use crate::jobs::JobCtx;
use reprise_core::{Error, Result};
use reprise_qemu::agent::Agent;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Freeze when the agent answers, else take a crash-consistent snapshot.
    Auto,
    /// Freeze or fail.
    Required,
    /// Never freeze.
    Off,
}

impl Mode {
    pub fn parse(text: Option<&str>) -> Result<Mode> {
        match text.unwrap_or("auto") {
            "auto" => Ok(Mode::Auto),
            "required" => Ok(Mode::Required),
            "none" | "off" => Ok(Mode::Off),
            other => Err(Error::invalid(
                "quiesce_invalid",
                format!("quiesce '{other}' is not one of auto, required, none"),
            )),
        }
    }
}

pub const FILESYSTEM: &str = "filesystem";
pub const CRASH: &str = "crash";

/// What a quiesced operation gives back.
#[derive(Debug)]
pub struct Quiesced<T> {
    pub value: T,
    pub consistency: &'static str,
    pub frozen_ms: Option<u64>,
}

fn required(why: impl std::fmt::Display) -> Error {
    Error::unavailable(
        "quiesce_failed",
        format!("the guest's filesystems could not be frozen ({why}) and quiesce was required"),
    )
}

/// The agent session shared by the snapshot path and the watchdog: one
/// connection for freeze and thaw (a new connection costs a sync round
/// trip, tens of milliseconds in a busy guest), replaced when it fails.
type Shared = Arc<Mutex<Option<Agent>>>;

/// Thaw and confirm through the shared session (reconnecting if there is
/// none), within `within`.
async fn thaw_confirmed(path: &Path, shared: &Shared, within: Duration) -> Result<()> {
    let mut slot = shared.lock().await;
    if slot.is_none() {
        *slot = Some(Agent::connect(path, within).await?);
    }
    let agent = slot.as_mut().expect("just set");
    let result = async {
        agent.thaw(within).await?;
        match agent.freeze_status(within).await?.as_str() {
            "thawed" => Ok(()),
            other => Err(Error::unavailable(
                "thaw_unconfirmed",
                format!("the guest agent reports '{other}' after a thaw"),
            )),
        }
    }
    .await;
    if result.is_err() {
        *slot = None; // a broken session is not reused
    }
    result
}

/// After `bound`, thaw until the agent confirms, unless `done` is set.
async fn watchdog(path: PathBuf, shared: Shared, bound: Duration, done: Arc<AtomicBool>, id: Uuid) {
    tokio::time::sleep(bound).await;
    let give_up = Instant::now() + Duration::from_secs(600);
    while !done.load(Ordering::SeqCst) && Instant::now() < give_up {
        tracing::warn!(instance = %id, "freeze bound reached: the watchdog thaws the guest");
        match thaw_confirmed(&path, &shared, Duration::from_secs(3)).await {
            Ok(()) => {
                tracing::info!(instance = %id, "watchdog: guest thawed");
                done.store(true, Ordering::SeqCst);
            }
            Err(e) => {
                tracing::warn!(instance = %id, "watchdog: thaw failed ({e}); retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Run `cut` (which takes the snapshot) with the instance's guest frozen
/// as `mode` asks.
pub async fn around<T, F, Fut>(
    app: &App,
    ctx: &JobCtx,
    id: Uuid,
    mode: Mode,
    cut: F,
) -> Result<Quiesced<T>>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let guest = Guest {
        instance: id,
        agent: app.run_paths(id).agent(),
        bound: Duration::from_secs(app.config.snapshots.freeze_timeout_secs.max(1)),
        hold_frozen: app.seams.hold_frozen,
    };
    freeze_around(&guest, &|m| ctx.log(m), mode, cut).await
}

/// The guest a freeze is about, and its bound.
pub struct Guest {
    pub instance: Uuid,
    /// The agent's socket.
    pub agent: PathBuf,
    /// The longest the guest may stay frozen.
    pub bound: Duration,
    /// A pause with the guest frozen before the cut (tests widen the
    /// window with it).
    pub hold_frozen: Duration,
}

/// Where a freeze says what it did (a job's log).
pub type Log<'a> = &'a (dyn Fn(String) + Send + Sync);

/// [`around`] without the daemon: the protocol against any agent socket.
pub async fn freeze_around<T, F, Fut>(
    guest: &Guest,
    log: Log<'_>,
    mode: Mode,
    cut: F,
) -> Result<Quiesced<T>>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let crash = |value| Quiesced {
        value,
        consistency: CRASH,
        frozen_ms: None,
    };
    if mode == Mode::Off {
        return Ok(crash(cut().await?));
    }
    let (path, bound, id) = (guest.agent.clone(), guest.bound, guest.instance);
    let agent = match Agent::connect(&path, Duration::from_secs(2)).await {
        Ok(mut a) => match a.ping(Duration::from_secs(1)).await {
            Ok(()) => a,
            Err(e) => return not_frozen(log, mode, e, cut).await,
        },
        Err(e) => return not_frozen(log, mode, e, cut).await,
    };
    let shared: Shared = Arc::new(Mutex::new(Some(agent)));
    let done = Arc::new(AtomicBool::new(false));
    let dog = tokio::spawn(watchdog(
        path.clone(),
        shared.clone(),
        bound,
        done.clone(),
        id,
    ));
    let started = Instant::now();
    let frozen = {
        let mut slot = shared.lock().await;
        let agent = slot.as_mut().expect("connected above");
        let mut r = agent.freeze(bound).await;
        if r.is_ok() {
            // Confirm: an agent that says it froze must also report it.
            r = match agent.freeze_status(bound).await {
                Ok(s) if s == "frozen" => r,
                Ok(s) => Err(Error::unavailable(
                    "freeze_unconfirmed",
                    format!("the agent reports '{s}' after a freeze"),
                )),
                Err(e) => Err(e),
            };
        }
        if r.is_err() {
            *slot = None;
        }
        r
    };
    if let Err(e) = frozen {
        log(format!("freeze failed: {e}; thawing"));
        let left = bound
            .saturating_sub(started.elapsed())
            .max(Duration::from_millis(500));
        if thaw_confirmed(&path, &shared, left).await.is_ok() {
            done.store(true, Ordering::SeqCst);
            dog.abort();
        }
        if mode == Mode::Required {
            return Err(required(e));
        }
        return Ok(crash(cut().await?));
    }
    log("the guest agent reports the guest frozen".into());
    if !guest.hold_frozen.is_zero() {
        tokio::time::sleep(guest.hold_frozen).await;
    }
    let value = cut().await;
    let cut_in_time = started.elapsed() < bound;
    let thawed = thaw_confirmed(&path, &shared, Duration::from_secs(3)).await;
    let frozen_ms = started.elapsed().as_millis() as u64;
    match thawed {
        Ok(()) => {
            done.store(true, Ordering::SeqCst);
            dog.abort();
            log(format!("guest filesystems were frozen {frozen_ms} ms"));
        }
        Err(e) => log(format!(
            "thaw not confirmed ({e}); the watchdog keeps at it"
        )),
    }
    let value = value?;
    if !cut_in_time {
        log(format!(
            "the snapshot was cut after the freeze bound of {}s: it is crash-consistent",
            bound.as_secs()
        ));
        if mode == Mode::Required {
            return Err(required(
                "the freeze bound was reached before the snapshot was cut",
            ));
        }
        return Ok(Quiesced {
            value,
            consistency: CRASH,
            frozen_ms: Some(frozen_ms),
        });
    }
    Ok(Quiesced {
        value,
        consistency: FILESYSTEM,
        frozen_ms: Some(frozen_ms),
    })
}

async fn not_frozen<T, F, Fut>(log: Log<'_>, mode: Mode, why: Error, cut: F) -> Result<Quiesced<T>>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    if mode == Mode::Required {
        return Err(required(why));
    }
    log(format!(
        "the guest agent does not answer ({}): the snapshot is crash-consistent",
        why.message
    ));
    Ok(Quiesced {
        value: cut().await?,
        consistency: CRASH,
        frozen_ms: None,
    })
}

/// At daemon start: a guest left frozen by a daemon that died mid-snapshot
/// is thawed.
pub async fn thaw_if_frozen(app: &App, id: Uuid) {
    let path = app.run_paths(id).agent();
    let Ok(mut agent) = Agent::connect(&path, Duration::from_secs(2)).await else {
        return;
    };
    if agent.freeze_status(Duration::from_secs(2)).await.as_deref() == Ok("frozen") {
        tracing::warn!(instance = %id, "guest found frozen at startup: thawing");
        let shared: Shared = Arc::new(Mutex::new(Some(agent)));
        let _ = thaw_confirmed(&path, &shared, Duration::from_secs(5)).await;
    }
}
