//! The API's edge (docs/security.md). Against slow and greedy clients: a
//! crowd of half-sent requests from one address is shed, the connections
//! it keeps are closed when their heads are late, a request body that
//! stops is cut, and meanwhile the daemon answers everyone else and takes
//! snapshots. Against someone who sees the traffic between hosts: a
//! request sent on is accepted once, as it was made, for the host it was
//! made for, while it is fresh.

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

/// A request as another daemon of the region sends it on to `d`'s host:
/// its status and answer.
#[derive(Clone)]
struct SentOn<'a> {
    method: &'a str,
    path: &'a str,
    /// The `x-reprise-caller` header: `ACCOUNT KEY`.
    caller: String,
    body: &'a str,
    /// The host it is marked for, its time and nonce.
    host: &'a str,
    time: i64,
    nonce: String,
}

impl SentOn<'_> {
    fn mark(&self, d: &TestDaemon) -> String {
        let mut headers = reprise_daemon::forward::HeaderMap::new();
        headers.insert("x-reprise-caller", self.caller.parse().unwrap());
        let method: reprise_daemon::forward::Method = self.method.parse().unwrap();
        reprise_daemon::forward::MarkOf {
            host: self.host,
            method: &method,
            path_and_query: self.path,
            headers: &headers,
            time: self.time,
            nonce: &self.nonce,
            body: Some(blake3::hash(self.body.as_bytes())),
        }
        .header(&d.server().app.forward_key())
    }
}

/// Send `req` to `d` with `mark`, and `body` (which may differ from the
/// one marked).
fn send(d: &TestDaemon, req: &SentOn, mark: &str, body: &str) -> (u16, String) {
    let answer = ureq::request(req.method, &format!("{}{}", d.url, req.path))
        .set("x-reprise-caller", &req.caller)
        .set("x-reprise-forwarded", mark)
        .set("content-type", "application/json")
        .send_string(body);
    match answer {
        Ok(r) => (r.status(), r.into_string().unwrap()),
        Err(ureq::Error::Status(s, r)) => (s, r.into_string().unwrap()),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn requests_between_hosts_are_accepted_once_as_made_while_fresh() {
    let d = TestDaemon::start();
    let admin = d.admin();
    let me: Account = admin.get("/api/v1/whoami").unwrap();
    let alice = d.account("alice");
    let alice_id = alice.get::<Account>("/api/v1/whoami").unwrap().id;
    let alice_key: ApiKeyCreated = admin
        .post(
            &format!("/api/v1/accounts/{alice_id}/keys"),
            &serde_json::json!({"name": "second"}),
        )
        .unwrap();
    let now = chrono::Utc::now().timestamp();
    let nonce = |n: u8| format!("{n:032x}");
    let body = r#"{"name":"made-by-a-peer","size":"16M"}"#;
    let create = SentOn {
        method: "POST",
        path: "/api/v1/volumes",
        caller: format!("{} {}", me.id, uuid::Uuid::nil()),
        body,
        host: "local",
        time: now,
        nonce: nonce(1),
    };
    let code = |(status, answer): (u16, String)| -> (u16, String) {
        let v: serde_json::Value = serde_json::from_str(&answer).unwrap_or_default();
        (
            status,
            v["error"]["code"].as_str().unwrap_or("").to_string(),
        )
    };
    let volumes = || admin.get::<Vec<Volume>>("/api/v1/volumes").unwrap().len();

    // Its body changed on the way: refused, nothing made.
    let mark = create.mark(&d);
    let other = r#"{"name":"made-by-someone","size":"16M"}"#;
    assert_eq!(
        code(send(&d, &create, &mark, other)),
        (401, "forward_invalid".into())
    );
    // Made for another host: refused.
    let elsewhere = SentOn {
        host: "h2",
        ..create.clone()
    };
    assert_eq!(
        code(send(&d, &elsewhere, &elsewhere.mark(&d), body)),
        (401, "forward_invalid".into())
    );
    // Made two minutes ago: refused, naming the clocks.
    let stale = SentOn {
        time: now - 120,
        nonce: nonce(2),
        ..create.clone()
    };
    assert_eq!(
        code(send(&d, &stale, &stale.mark(&d), body)),
        (401, "forward_expired".into())
    );
    // A forged mark: refused.
    let forged = format!("{now} {} - {}", nonce(3), "0".repeat(64));
    assert_eq!(
        code(send(&d, &create, &forged, body)),
        (401, "forward_invalid".into())
    );
    assert_eq!(volumes(), 0, "a refused request made nothing");

    // As made: accepted once; the same again is a replay.
    let (status, _) = send(&d, &create, &mark, body);
    assert_eq!(status, 201);
    assert_eq!(volumes(), 1);
    assert_eq!(
        code(send(&d, &create, &mark, body)),
        (401, "forward_replayed".into())
    );
    assert_eq!(volumes(), 1, "the replay made nothing");

    // A caller's key revoked since the request was made: refused.
    let as_alice = SentOn {
        method: "GET",
        path: "/api/v1/volumes",
        caller: format!("{alice_id} {}", alice_key.key.id),
        body: "",
        host: "local",
        time: now,
        nonce: nonce(4),
    };
    let (status, _) = send(&d, &as_alice, &as_alice.mark(&d), "");
    assert_eq!(status, 200, "alice's key speaks for her");
    admin
        .delete(&format!(
            "/api/v1/accounts/{alice_id}/keys/{}",
            alice_key.key.id
        ))
        .unwrap();
    let later = SentOn {
        nonce: nonce(5),
        ..as_alice.clone()
    };
    assert_eq!(
        code(send(&d, &later, &later.mark(&d), "")),
        (401, "api_key_invalid".into())
    );
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
