//! The freeze protocol (`quiesce::freeze_around`) against a scripted agent
//! (`reprise_testing::fake_agent`): every outcome, in milliseconds, with
//! faults a real guest cannot be made to show on demand. The same protocol
//! runs against the real agent in a real guest in `tests/points.rs`.

use reprise_daemon::quiesce::{freeze_around, Guard, Guest, Mode, CRASH, FILESYSTEM};
use reprise_testing::fake_agent::{FakeAgent, Freeze, Script};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

struct Setup {
    _dir: tempfile::TempDir,
    agent: FakeAgent,
    guest: Guest,
    log: Mutex<Vec<String>>,
    cuts: AtomicUsize,
}

fn setup(script: Script, bound_ms: u64) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("qga.sock");
    let agent = FakeAgent::start(&socket, script);
    Setup {
        guest: Guest {
            instance: uuid::Uuid::new_v4(),
            agent: socket,
            bound: Duration::from_millis(bound_ms),
            hold_frozen: Duration::ZERO,
            guard: Guard::InProcess,
            links: Default::default(),
        },
        _dir: dir,
        agent,
        log: Mutex::new(Vec::new()),
        cuts: AtomicUsize::new(0),
    }
}

impl Setup {
    /// Freeze around a cut that takes `cut_ms`; the value is whether the
    /// guest was frozen when the cut began.
    async fn run(&self, mode: Mode, cut_ms: u64) -> reprise_core::Result<(bool, &'static str)> {
        let log = |m: String| self.log.lock().unwrap().push(m);
        let q = freeze_around(&self.guest, &log, mode, || async {
            self.cuts.fetch_add(1, Ordering::SeqCst);
            let frozen = self.agent.frozen();
            tokio::time::sleep(Duration::from_millis(cut_ms)).await;
            Ok(frozen)
        })
        .await?;
        Ok((q.value, q.consistency))
    }

    fn count(&self, command: &str) -> usize {
        self.agent
            .commands()
            .iter()
            .filter(|c| *c == command)
            .count()
    }
}

/// Wait until the fake reports the guest thawed, or fail.
async fn thawed_within(agent: &FakeAgent, within: Duration) {
    let until = Instant::now() + within;
    while agent.frozen() {
        assert!(
            Instant::now() < until,
            "the guest stayed frozen: {:?}",
            agent.commands()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_working_agent_gives_a_filesystem_consistent_cut_and_a_thawed_guest() {
    let s = setup(Script::default(), 5000);
    let (frozen_during_cut, consistency) = s.run(Mode::Auto, 10).await.unwrap();
    assert!(frozen_during_cut);
    assert_eq!(consistency, FILESYSTEM);
    assert!(!s.agent.frozen());
    let commands = s.agent.commands();
    let after_sync: Vec<&str> = commands
        .iter()
        .map(String::as_str)
        .filter(|c| *c != "guest-sync-delimited")
        .collect();
    assert_eq!(
        after_sync,
        [
            "guest-fsfreeze-freeze",
            "guest-fsfreeze-thaw",
            "guest-fsfreeze-status"
        ],
        "synced, frozen (its answer the confirmation), thaw confirmed: no other round trip while frozen"
    );
    let log = s.log.lock().unwrap().join("\n");
    assert!(log.contains("were frozen"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_freeze_is_crash_consistent_or_an_error_when_required() {
    let script = || Script {
        freeze: Freeze::Refused,
        ..Script::default()
    };
    let s = setup(script(), 5000);
    let (frozen, consistency) = s.run(Mode::Auto, 0).await.unwrap();
    assert_eq!((frozen, consistency), (false, CRASH));
    assert_eq!(s.cuts.load(Ordering::SeqCst), 1);

    let s = setup(script(), 5000);
    let e = s.run(Mode::Required, 0).await.unwrap_err();
    assert_eq!(e.code, "quiesce_failed");
    assert!(e.message.contains("Device busy"), "{}", e.message);
    assert_eq!(s.cuts.load(Ordering::SeqCst), 0, "nothing is cut");
    assert!(!s.agent.frozen());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_agent_means_a_crash_consistent_cut_and_required_fails() {
    let dir = tempfile::tempdir().unwrap();
    let guest = Guest {
        instance: uuid::Uuid::new_v4(),
        agent: dir.path().join("nobody-listens.sock"),
        bound: Duration::from_secs(5),
        hold_frozen: Duration::ZERO,
        guard: Guard::InProcess,
        links: Default::default(),
    };
    let log = |_: String| {};
    let q = freeze_around(&guest, &log, Mode::Auto, || async { Ok(7) })
        .await
        .unwrap();
    assert_eq!((q.value, q.consistency, q.frozen_ms), (7, CRASH, None));
    let e = freeze_around(&guest, &log, Mode::Required, || async { Ok(7) })
        .await
        .unwrap_err();
    assert_eq!(e.code, "quiesce_failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiesce_off_never_talks_to_the_agent() {
    let s = setup(Script::default(), 5000);
    let (frozen, consistency) = s.run(Mode::Off, 0).await.unwrap();
    assert_eq!((frozen, consistency), (false, CRASH));
    assert!(s.agent.commands().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_freeze_is_thawed_and_the_cut_is_crash_consistent() {
    let s = setup(
        Script {
            freeze: Freeze::Hangs,
            ..Script::default()
        },
        300,
    );
    let (_, consistency) = s.run(Mode::Auto, 0).await.unwrap();
    assert_eq!(consistency, CRASH);
    assert_eq!(s.count("guest-fsfreeze-freeze"), 1);
    thawed_within(&s.agent, Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_past_the_bound_is_thawed_by_the_guard_and_not_called_consistent() {
    let s = setup(Script::default(), 200);
    let started = Instant::now();
    let (frozen_at_cut, consistency) = s.run(Mode::Auto, 600).await.unwrap();
    assert!(frozen_at_cut);
    assert_eq!(consistency, CRASH, "cut after the bound");
    assert!(!s.agent.frozen());
    assert!(started.elapsed() < Duration::from_secs(3));
    let s = setup(Script::default(), 200);
    let e = s.run(Mode::Required, 600).await.unwrap_err();
    assert_eq!(e.code, "quiesce_failed");
    assert!(!s.agent.frozen());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_thaws_are_retried_until_the_guest_is_thawed() {
    let s = setup(
        Script {
            failing_thaws: 3,
            ..Script::default()
        },
        300,
    );
    let (_, consistency) = s.run(Mode::Auto, 0).await.unwrap();
    assert_eq!(consistency, FILESYSTEM, "cut within the bound");
    // The guard retries (every half second) while the daemon waits for
    // its answer, a few seconds at most; past that it keeps at it alone.
    thawed_within(&s.agent, Duration::from_secs(5)).await;
    assert_eq!(
        s.count("guest-fsfreeze-thaw"),
        4,
        "three failures, then the guard's success"
    );
}

/// Many freezes, each with a fault drawn at random (none, a cut past the
/// bound, a refused freeze, a hung freeze, failing thaws): every guest is
/// thawed, none later than the bound plus a second. Prints its figures;
/// `REPRISE_FREEZE_TRIALS` sets how many (30 by default, about 10 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freezes_with_random_faults_all_end_thawed() {
    let trials: u64 = std::env::var("REPRISE_FREEZE_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let bound = Duration::from_millis(150);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut roll = |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let mut by_fault = std::collections::BTreeMap::new();
    let mut worst = Duration::ZERO;
    for _ in 0..trials {
        let (fault, script, cut_ms) = match roll(5) {
            0 => ("none", Script::default(), roll(100)),
            1 => ("cut past the bound", Script::default(), 200 + roll(100)),
            2 => (
                "freeze refused",
                Script {
                    freeze: Freeze::Refused,
                    ..Script::default()
                },
                roll(50),
            ),
            3 => (
                "freeze hangs",
                Script {
                    freeze: Freeze::Hangs,
                    ..Script::default()
                },
                roll(50),
            ),
            _ => (
                "thaws fail",
                Script {
                    failing_thaws: 1 + roll(3) as usize,
                    ..Script::default()
                },
                roll(100),
            ),
        };
        let s = setup(script, bound.as_millis() as u64);
        let started = Instant::now();
        let _ = s.run(Mode::Auto, cut_ms).await;
        thawed_within(&s.agent, bound + Duration::from_secs(3)).await;
        let over = started.elapsed().saturating_sub(bound);
        assert!(
            over < Duration::from_millis(cut_ms) + Duration::from_secs(1) || fault == "thaws fail",
            "{fault}: thawed {over:?} past the bound"
        );
        if fault != "cut past the bound" {
            worst = worst.max(over);
        }
        *by_fault.entry(fault).or_insert(0) += 1;
    }
    eprintln!(
        "{trials} freezes, faults {by_fault:?}: all thawed; at most {worst:?} past the bound (cuts past the bound aside)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freezes_in_a_row_share_one_agent_connection_until_it_idles() {
    let s = setup(Script::default(), 5000);
    for _ in 0..3 {
        assert_eq!(s.run(Mode::Auto, 0).await.unwrap().1, FILESYSTEM);
    }
    let connections = || s.agent.script.lock().unwrap().connections;
    assert_eq!(connections(), 1, "one connection, kept between freezes");
    tokio::time::sleep(reprise_daemon::agents::IDLE + Duration::from_millis(300)).await;
    assert_eq!(s.run(Mode::Auto, 0).await.unwrap().1, FILESYSTEM);
    assert_eq!(connections(), 2, "closed when idle, made again");
    let syncs = s.count("guest-sync-delimited");
    assert_eq!(
        syncs,
        4,
        "each freeze synchronised once: {:?}",
        s.agent.commands()
    );
    // Closed, its entry is forgotten at the next instance's lease.
    tokio::time::sleep(reprise_daemon::agents::IDLE + Duration::from_millis(300)).await;
    let other = s
        .guest
        .links
        .lease(uuid::Uuid::new_v4(), &s.guest.agent, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        s.guest.links.known(),
        1,
        "only the new lease's entry is kept"
    );
    drop(other);
}
