//! Freezing a guest's filesystems around a snapshot, with a thaw that is
//! guaranteed — even if the daemon dies, hangs or is stopped while the
//! guest is frozen.
//!
//! The agent session of a freeze belongs to a *guard*: a process of its
//! own (the daemon's executable run as `__freeze-guard AGENT BOUND_MS`,
//! in its own process group), or a task of the daemon where the
//! executable cannot be one (the daemon embedded in a test). The daemon
//! leases the instance's agent connection ([`crate::agents`]: synchronised,
//! and kept open between uses) and gives the guard a descriptor of it (the
//! process's stdin); the daemon does not use the connection again until
//! the guard has said `thawed`, and closes its own descriptor otherwise.
//! The two talk by lines on a socket pair (the process's stdout):
//!
//! ```text
//! guard  → frozen | failed <why>
//! daemon → thaw            (or closes its end: it died)
//! guard  → thawed <ms frozen> | stuck <why>
//! ```
//!
//! The guard sends `guest-fsfreeze-freeze` (its success is the
//! confirmation: another round trip would only lengthen the freeze, and the
//! guest answers both), under the bound (`snapshots.freeze_timeout_secs`);
//! then it thaws when the daemon says so, when its input closes (the
//! daemon died), or when the bound is reached (the daemon hangs or is
//! stopped) — and keeps thawing, reconnecting, until the status says
//! `thawed` (ten minutes at most). The time it reports frozen runs from the
//! freeze request to the thaw's answer (the guest runs again then; the
//! status check after it is not counted). A freeze that failed or hung is thawed
//! too: a freeze that hangs may still freeze. A snapshot counts as
//! `filesystem`-consistent only if the freeze succeeded and the snapshot
//! was cut before the bound; otherwise it is `crash`-consistent, or an
//! error when the caller required quiescing. A daemon that starts thaws any
//! guest it finds frozen ([`thaw_if_frozen`]), a second line of defence.

use crate::agents::AgentLinks;
use crate::app::App;
use crate::jobs::JobCtx;
use reprise_core::{Error, Result};
use reprise_qemu::agent::Agent;
use std::future::Future;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt};
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

/// A guard's agent session: the daemon's connection for freeze and thaw,
/// dropped when it fails and made again (through the socket) when needed.
type Session = Option<Agent>;

/// Thaw and confirm through the shared session (reconnecting if there is
/// none), within `within`.
/// `thawed_at` is set when a thaw is answered.
async fn thaw_confirmed(
    path: &Path,
    slot: &mut Session,
    within: Duration,
    thawed_at: &mut Option<Instant>,
) -> Result<()> {
    if slot.is_none() {
        *slot = Some(Agent::connect(path, within).await?);
    }
    let agent = slot.as_mut().expect("just set");
    let result = async {
        agent.thaw(within).await?;
        *thawed_at = Some(Instant::now());
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

/// Thaw until the agent confirms (reconnecting as needed), for up to ten
/// minutes: a guest is never given up on sooner.
async fn thaw_until_confirmed(
    path: &Path,
    session: &mut Session,
    thawed_at: &mut Option<Instant>,
) -> Result<()> {
    let give_up = Instant::now() + Duration::from_secs(600);
    loop {
        match thaw_confirmed(path, session, Duration::from_secs(3), thawed_at).await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= give_up => return Err(e),
            Err(e) => {
                eprintln!("freeze guard: thaw failed ({e}); retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// The guard's side: hold the agent session for one freeze, in the
/// daemon or in a process of its own (see [`Guard`]), speaking the line
/// protocol of the module's docs on `input`/`output`.
pub async fn run_guard<R, W>(
    agent: &Path,
    connection: tokio::net::UnixStream,
    bound: Duration,
    input: R,
    mut output: W,
) where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // The daemon synchronised the connection: it answers, no ping needed.
    let mut session: Session = Some(Agent::adopt(connection));
    let started = Instant::now();
    let deadline = tokio::time::Instant::from_std(started + bound);
    // The freeze is sent under the bound: a freeze that hangs may still
    // freeze, so whatever it answers the guest is thawed below.
    let frozen = tokio::time::timeout_at(deadline, async {
        let agent = session.as_mut().expect("connected above");
        agent.freeze(bound).await.map(|_| ())
    })
    .await
    .unwrap_or_else(|_| {
        Err(Error::unavailable(
            "freeze_timeout",
            "the freeze did not finish within the bound",
        ))
    });
    if frozen.is_err() {
        // A session with a request unanswered is not reused: the thaw
        // below connects again.
        session = None;
    }
    match frozen {
        Ok(()) => {
            tell(&mut output, "frozen".into()).await;
            // Until the daemon says thaw, closes the pipe (it died), or
            // the bound is reached (it hangs, or is stopped).
            let mut lines = input.lines();
            let _ = tokio::time::timeout_at(deadline, lines.next_line()).await;
        }
        Err(e) => tell(&mut output, format!("failed {}", one_line(&e.message))).await,
    }
    let mut thawed_at = None;
    let line = match thaw_until_confirmed(agent, &mut session, &mut thawed_at).await {
        Ok(()) => format!(
            "thawed {}",
            thawed_at
                .unwrap_or_else(Instant::now)
                .duration_since(started)
                .as_millis()
        ),
        Err(e) => format!("stuck {}", one_line(&e.message)),
    };
    tell(&mut output, line).await;
}

/// One line of the guard's protocol (a daemon gone is not the guard's
/// concern: it thaws all the same).
async fn tell<W: AsyncWrite + Unpin>(output: &mut W, line: String) {
    let _ = output.write_all(format!("{line}\n").as_bytes()).await;
    let _ = output.flush().await;
}

fn one_line(text: &str) -> String {
    text.replace('\n', " ")
}

/// Where a freeze's guard runs.
#[derive(Debug, Clone, Default)]
pub enum Guard {
    /// A task of the daemon: a daemon that stops or hangs while the guest
    /// is frozen leaves the thaw to the next start.
    #[default]
    InProcess,
    /// A process of its own (this executable, `__freeze-guard`): the guest
    /// is thawed by the bound whatever happens to the daemon.
    Process(PathBuf),
}

/// The argument that makes a reprise binary a freeze guard.
pub const GUARD_ARG: &str = "__freeze-guard";

static CAN_GUARD: std::sync::OnceLock<()> = std::sync::OnceLock::new();

/// Called first in a daemon binary's `main`: run as a freeze guard when
/// started as one (and exit), else note that this executable can start
/// guards of its own.
pub fn guard_if_asked() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) != Some(GUARD_ARG) {
        let _ = CAN_GUARD.set(());
        return;
    }
    let (Some(agent), Some(bound)) = (args.get(2), args.get(3).and_then(|b| b.parse().ok())) else {
        eprintln!("usage: {GUARD_ARG} AGENT_SOCKET BOUND_MS");
        std::process::exit(2);
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let guarded = rt.block_on(async {
        // The agent's connection on stdin, the daemon's socket on stdout.
        let connection = socket_of(std::io::stdin().as_fd())?;
        let (from_daemon, to_daemon) = socket_of(std::io::stdout().as_fd())?.into_split();
        run_guard(
            Path::new(agent),
            connection,
            Duration::from_millis(bound),
            tokio::io::BufReader::new(from_daemon),
            to_daemon,
        )
        .await;
        std::io::Result::Ok(())
    });
    if let Err(e) = guarded {
        eprintln!("{GUARD_ARG}: stdin and stdout must be sockets: {e}");
        std::process::exit(2);
    }
    std::process::exit(0);
}

/// A socket of the tokio runtime from a descriptor of this process.
fn socket_of(fd: std::os::fd::BorrowedFd<'_>) -> std::io::Result<tokio::net::UnixStream> {
    let socket = std::os::unix::net::UnixStream::from(fd.try_clone_to_owned()?);
    socket.set_nonblocking(true)?;
    tokio::net::UnixStream::from_std(socket)
}

/// The guard this daemon's freezes use: a process when the executable
/// can be one ([`guard_if_asked`] ran), else a task.
pub fn default_guard() -> Guard {
    match (CAN_GUARD.get(), std::env::current_exe()) {
        (Some(()), Ok(exe)) => Guard::Process(exe),
        _ => Guard::InProcess,
    }
}

type Reader = tokio::io::Lines<tokio::io::BufReader<Box<dyn AsyncRead + Send + Unpin>>>;
type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// Start a guard for one freeze over `connection` (a descriptor of the
/// daemon's agent connection); the daemon's ends of its pipes.
fn start_guard(
    guard: &Guard,
    agent: &Path,
    connection: std::os::unix::net::UnixStream,
    bound: Duration,
) -> Result<(Writer, Reader)> {
    let cannot = |e: std::io::Error| {
        Error::unavailable(
            "quiesce_failed",
            format!("cannot start the freeze guard: {e}"),
        )
        .with_source(e)
    };
    match guard {
        Guard::InProcess => {
            let (to_guard, guard_in) = tokio::io::duplex(256);
            let (guard_out, from_guard) = tokio::io::duplex(256);
            let agent = agent.to_path_buf();
            connection.set_nonblocking(true).map_err(cannot)?;
            let connection = tokio::net::UnixStream::from_std(connection).map_err(cannot)?;
            tokio::spawn(async move {
                run_guard(
                    &agent,
                    connection,
                    bound,
                    tokio::io::BufReader::new(guard_in),
                    guard_out,
                )
                .await
            });
            let from: Box<dyn AsyncRead + Send + Unpin> = Box::new(from_guard);
            Ok((Box::new(to_guard), tokio::io::BufReader::new(from).lines()))
        }
        Guard::Process(exe) => {
            let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(cannot)?;
            let mut child = tokio::process::Command::new(exe)
                .arg(GUARD_ARG)
                .arg(agent)
                .arg(bound.as_millis().to_string())
                .stdin(std::os::fd::OwnedFd::from(connection))
                .stdout(std::os::fd::OwnedFd::from(theirs))
                // Its own group: a signal to the daemon's is not for it.
                .process_group(0)
                .spawn()
                .map_err(|e| {
                    Error::unavailable(
                        "quiesce_failed",
                        format!("cannot start the freeze guard {}: {e}", exe.display()),
                    )
                    .with_source(e)
                })?;
            // Reaped when it exits; it outlives the daemon if it must.
            tokio::spawn(async move {
                let _ = child.wait().await;
            });
            ours.set_nonblocking(true).map_err(cannot)?;
            let (from, to) = tokio::net::UnixStream::from_std(ours)
                .map_err(cannot)?
                .into_split();
            let from: Box<dyn AsyncRead + Send + Unpin> = Box::new(from);
            Ok((Box::new(to), tokio::io::BufReader::new(from).lines()))
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
        guard: app.freeze_guard.clone(),
        links: app.agents.clone(),
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
    /// Where the freeze's guard runs.
    pub guard: Guard,
    /// Where its agent connection is leased.
    pub links: Arc<AgentLinks>,
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
    let bound = guest.bound;
    let started = Instant::now();
    let mut lease = match guest
        .links
        .lease(guest.instance, &guest.agent, Duration::from_secs(2))
        .await
    {
        Ok(lease) => lease,
        Err(e) => return not_frozen(log, mode, e, cut).await,
    };
    let connection = match lease.agent().try_clone_connection() {
        Ok(c) => c,
        Err(e) => {
            lease.discard();
            let e = Error::unavailable(
                "guest_agent_not_responding",
                format!("cannot share the agent's connection: {e}"),
            );
            return not_frozen(log, mode, e, cut).await;
        }
    };
    let (mut to_guard, mut from_guard) =
        match start_guard(&guest.guard, &guest.agent, connection, bound) {
            Ok(pipes) => pipes,
            Err(e) => {
                lease.discard();
                return Err(e);
            }
        };
    // The guard answers within the bound.
    let first = tokio::time::timeout(bound + Duration::from_secs(4), from_guard.next_line())
        .await
        .ok()
        .and_then(|l| l.ok().flatten())
        .unwrap_or_else(|| "failed the freeze guard did not answer".into());
    let (word, why) = first.split_once(' ').unwrap_or((first.as_str(), ""));
    match word {
        "frozen" => {}
        _ => {
            // The guard thaws on the connection, or on one of its own.
            lease.discard();
            log(format!("freeze failed: {why}; thawing"));
            if mode == Mode::Required {
                return Err(required(why));
            }
            return Ok(crash(cut().await?));
        }
    }
    if !guest.hold_frozen.is_zero() {
        // Tests wait for this line to act while the guest is frozen.
        log(format!(
            "holding the guest frozen {} ms (a test seam)",
            guest.hold_frozen.as_millis()
        ));
        tokio::time::sleep(guest.hold_frozen).await;
    }
    let value = cut().await;
    // Logged after the cut: a log line is a catalog commit, not to be
    // waited for while the guest is frozen.
    log("the guest agent reports the guest frozen".into());
    let cut_in_time = started.elapsed() < bound;
    let _ = to_guard.write_all(b"thaw\n").await;
    let _ = to_guard.flush().await;
    let thawed = tokio::time::timeout(Duration::from_secs(3), from_guard.next_line())
        .await
        .ok()
        .and_then(|l| l.ok().flatten())
        .unwrap_or_default();
    let frozen_ms = match thawed.strip_prefix("thawed ").map(str::parse::<u64>) {
        // The guard is done with the connection: kept for the next use.
        Some(Ok(ms)) => {
            log(format!("guest filesystems were frozen {ms} ms"));
            ms
        }
        _ => {
            lease.discard();
            log(format!(
                "thaw not confirmed ({thawed}); the freeze guard keeps at it"
            ));
            started.elapsed().as_millis() as u64
        }
    };
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

/// At daemon start, first of all (before anything that can fail): every
/// guest found frozen is thawed — a second line of defence behind the
/// freeze's guard.
pub async fn thaw_frozen_guests(
    config: &crate::config::Config,
    catalog: &reprise_catalog::Catalog,
) {
    let Ok(instances) = catalog.local_instances() else {
        return;
    };
    for inst in instances {
        let run = reprise_qemu::cmdline::RunPaths::new(config.instance_run_dir(inst.id));
        thaw_if_frozen(&run.agent(), inst.id).await;
    }
}

/// Thaw a guest if its agent says it is frozen.
async fn thaw_if_frozen(path: &Path, id: Uuid) {
    let Ok(mut agent) = Agent::connect(path, Duration::from_secs(2)).await else {
        return;
    };
    if agent.freeze_status(Duration::from_secs(2)).await.as_deref() == Ok("frozen") {
        tracing::warn!(instance = %id, "guest found frozen at startup: thawing");
        let _ = thaw_confirmed(path, &mut Some(agent), Duration::from_secs(5), &mut None).await;
    }
}
