//! The API's edge against slow and greedy clients (docs/security.md): a
//! crowd of half-sent requests from one address is shed, the connections
//! it keeps are closed when their heads are late, a request body that
//! stops is cut, and meanwhile the daemon answers everyone else and takes
//! snapshots.

use reprise_core::model::*;
use reprise_testing::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Connections the crowd opens, and those its address may keep.
const CROWD: usize = 2000;
const PER_PEER: usize = 100;
const HEADER_TIMEOUT: u64 = 3;
const BODY_IDLE: u64 = 3;

async fn connect_from(source: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

/// Whether the daemon closed `c` within `within` (an end of file or a
/// reset), reading whatever it answered first.
async fn closed_within(c: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, c.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

#[test]
fn slow_clients_are_shed_and_the_daemon_still_snapshots() {
    let d = TestDaemon::start_with(|c| {
        c.http.header_timeout_secs = HEADER_TIMEOUT;
        c.http.body_idle_secs = BODY_IDLE;
        c.http.max_connections_per_peer = PER_PEER;
    });
    let addr = d.server().addr;
    let admin = d.admin();
    admin
        .create_volume(&CreateVolume {
            name: "kept".into(),
            size: "64M".into(),
            ..Default::default()
        })
        .unwrap();

    // The crowd, from 127.0.0.2: every connection sends half a head.
    let started = Instant::now();
    let mut crowd = d.block_on(async {
        let mut crowd = Vec::with_capacity(CROWD);
        for _ in 0..CROWD {
            let mut c = connect_from("127.0.0.2", addr).await;
            // Refused ones may be closed before this is written.
            let _ = c
                .write_all(b"GET /api/v1/volumes HTTP/1.1\r\nHost: reprise\r\n")
                .await;
            crowd.push(c);
        }
        crowd
    });
    let shed = d.block_on(async {
        let checks = crowd
            .iter_mut()
            .map(|c| closed_within(c, Duration::from_millis(1500)));
        count_true(checks).await
    });
    assert!(
        shed >= CROWD - PER_PEER,
        "of {CROWD} connections from one address, {shed} were closed at once; at most {PER_PEER} may stay"
    );

    // Everyone else is served while the crowd holds its share: the
    // admin's snapshot is taken, and a head that trickles in byte by byte
    // from another address is still cut at the timeout.
    let snapshot = run_job(
        &admin,
        "/api/v1/snapshots",
        &CreateSnapshot {
            volume: "kept".into(),
            ..Default::default()
        },
    );
    assert_eq!(snapshot.state, JobState::Succeeded, "{snapshot:?}");
    let listed: Vec<Snapshot> = admin.get("/api/v1/snapshots").unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, SnapshotState::BackedUp);

    let trickled = d.block_on(async {
        let mut c = connect_from("127.0.0.3", addr).await;
        let began = Instant::now();
        let head = b"GET /api/v1/volumes HTTP/1.1\r\nHost: reprise\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        for byte in head {
            if c.write_all(&[*byte]).await.is_err() {
                return began.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("a head trickled for {:?} and was never cut", began.elapsed());
    });
    assert!(
        trickled < Duration::from_secs(HEADER_TIMEOUT + 2),
        "a trickled head was cut after {trickled:?}"
    );

    // The crowd's kept connections are closed once their heads are late.
    let waited = started.elapsed();
    let still_open = d.block_on(async {
        let within =
            Duration::from_secs(HEADER_TIMEOUT + 2).saturating_sub(waited) + Duration::from_secs(1);
        let checks = crowd.iter_mut().map(|c| closed_within(c, within));
        CROWD - count_true(checks).await
    });
    assert_eq!(still_open, 0, "connections with late heads left open");

    // A request body that stops is cut, and its request fails.
    let answer = d.block_on(async {
        let mut c = connect_from("127.0.0.4", addr).await;
        let head = format!(
            "POST /api/v1/volumes HTTP/1.1\r\nHost: reprise\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\":",
            d.admin_key
        );
        c.write_all(head.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let read = tokio::time::timeout(
            Duration::from_secs(BODY_IDLE + 5),
            c.read_to_end(&mut answer),
        )
        .await;
        assert!(read.is_ok(), "a stopped body held its request past {BODY_IDLE} s");
        String::from_utf8_lossy(&answer).into_owned()
    });
    assert!(
        answer.starts_with("HTTP/1.1 4"),
        "a stopped body is refused: {answer}"
    );
    let volumes: Vec<Volume> = admin.get("/api/v1/volumes").unwrap();
    assert_eq!(volumes.len(), 1, "the cut request made nothing");
}

/// How many of `checks` come out true, run together.
async fn count_true<F: std::future::Future<Output = bool>>(
    checks: impl Iterator<Item = F>,
) -> usize {
    futures::future::join_all(checks)
        .await
        .into_iter()
        .filter(|closed| *closed)
        .count()
}
