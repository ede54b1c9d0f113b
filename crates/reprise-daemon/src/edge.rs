//! The API's edge: how connections are accepted and served (HTTP/1.1).
//!
//! Whatever a client does, it holds the daemon for a bounded time with a
//! bounded number of connections ([`HttpConfig`]):
//! - a connection that has not sent a whole request head within
//!   `header_timeout_secs` — a first one, or the next one on a kept-alive
//!   connection — is closed;
//! - a request body that sends nothing for `body_idle_secs` fails;
//! - an answer the client does not read for `write_stall_secs` is dropped
//!   with its connection;
//! - at most `max_connections` are open, at most `max_connections_per_peer`
//!   from one address (an IPv6 /64 counting as one): one more is closed at
//!   once, before anything is read.
//!
//! So no client, authenticated or not, can use up the file descriptors a
//! root daemon needs for QMP sockets and `qemu-img`, and other addresses
//! are served while one is shed — until the total cap, which a crowd from
//! several addresses can still fill.

use crate::config::HttpConfig;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;
use tower::ServiceExt;
use tower_http::timeout::TimeoutBody;

/// How long a stop waits for requests in flight before it leaves them.
const DRAIN: Duration = Duration::from_secs(10);

/// Serve `router` on `listener` within `limits` until `shutdown` resolves,
/// then let requests in flight finish (at most [`DRAIN`]).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpConfig,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let open = Arc::new(Open::default());
    let body_idle = Duration::from_secs(limits.body_idle_secs);
    let header_timeout = Duration::from_secs(limits.header_timeout_secs);
    let write_stall = Duration::from_secs(limits.write_stall_secs);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors, most likely: let some close.
                    tracing::warn!("accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Some(slot) = Open::take(&open, peer_of(peer.ip()), &limits) else {
            tracing::debug!(%peer, "connection refused: the edge is full");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            router
                .clone()
                .oneshot(req.map(|body| TimeoutBody::new(body_idle, body)))
        });
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(TokioIo::new(StallGuard::new(stream, write_stall)), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = conn.await {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight after {DRAIN:?} are left to finish alone");
    }
}

/// The address a connection is counted under: an IPv4 address (mapped
/// ones too), or an IPv6 /64 — one host's usual allotment, whose
/// addresses would otherwise each count as another peer.
fn peer_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// The connections open, in all and by peer address.
#[derive(Default)]
struct Open {
    counts: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One open connection, counted until dropped.
struct Slot {
    open: Arc<Open>,
    peer: IpAddr,
}

impl Open {
    fn take(open: &Arc<Open>, peer: IpAddr, limits: &HttpConfig) -> Option<Slot> {
        let mut counts = open.counts.lock().unwrap_or_else(|p| p.into_inner());
        let (all, by_peer) = &mut *counts;
        let mine = by_peer.entry(peer).or_default();
        if *all >= limits.max_connections || *mine >= limits.max_connections_per_peer {
            if *mine == 0 {
                by_peer.remove(&peer);
            }
            return None;
        }
        *all += 1;
        *mine += 1;
        Some(Slot {
            open: open.clone(),
            peer,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.open.counts.lock().unwrap_or_else(|p| p.into_inner());
        let (all, by_peer) = &mut *counts;
        *all -= 1;
        if let Some(mine) = by_peer.get_mut(&self.peer) {
            *mine -= 1;
            if *mine == 0 {
                by_peer.remove(&self.peer);
            }
        }
    }
}

/// A connection whose writes fail once the client has read nothing for
/// the limit: hyper would otherwise wait on a full socket for ever.
struct StallGuard {
    stream: TcpStream,
    limit: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl StallGuard {
    fn new(stream: TcpStream, limit: Duration) -> StallGuard {
        StallGuard {
            stream,
            limit,
            stalled: None,
        }
    }

    /// The outcome of a write: ready resets the clock, pending runs it.
    fn judge<T>(
        &mut self,
        cx: &mut Context<'_>,
        outcome: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if outcome.is_ready() {
            self.stalled = None;
            return outcome;
        }
        let limit = self.limit;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client read nothing of its answer for {limit:?}"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for StallGuard {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for StallGuard {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let outcome = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.judge(cx, outcome)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let outcome = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.judge(cx, outcome)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let outcome = Pin::new(&mut this.stream).poll_flush(cx);
        this.judge(cx, outcome)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Let this process open as many files as its hard limit allows: each
/// connection, QMP socket and disk is one.
pub fn raise_open_files_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!("cannot raise the open files limit: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_ipv6_peer_is_its_slash_64() {
        let a: IpAddr = "2001:db8:1:2::5".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::5".parse().unwrap();
        assert_eq!(peer_of(a), peer_of(b));
        assert_ne!(peer_of(a), peer_of(other));
        let mapped: IpAddr = "::ffff:127.0.0.2".parse().unwrap();
        assert_eq!(peer_of(mapped), "127.0.0.2".parse::<IpAddr>().unwrap());
    }

    use super::*;

    #[test]
    fn connections_are_counted_in_all_and_by_peer() {
        let limits = HttpConfig {
            max_connections: 3,
            max_connections_per_peer: 2,
            ..HttpConfig::default()
        };
        let open = Arc::new(Open::default());
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let a1 = Open::take(&open, a, &limits).expect("first of a");
        let _a2 = Open::take(&open, a, &limits).expect("second of a");
        assert!(
            Open::take(&open, a, &limits).is_none(),
            "a third from one peer"
        );
        let b1 = Open::take(&open, b, &limits).expect("b");
        assert!(Open::take(&open, b, &limits).is_none(), "a fourth in all");
        drop(a1);
        let _a3 = Open::take(&open, a, &limits).expect("a slot freed");
        drop(b1);
        assert!(
            !open.counts.lock().unwrap().1.contains_key(&b),
            "peers with none open are forgotten"
        );
    }

    #[tokio::test]
    async fn an_answer_nobody_reads_fails_at_the_limit() {
        use tokio::io::AsyncWriteExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let reader = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let mut guarded = StallGuard::new(stream, Duration::from_millis(300));
        let began = std::time::Instant::now();
        let chunk = vec![0u8; 1 << 20];
        let err = loop {
            if let Err(e) = guarded.write_all(&chunk).await {
                break e;
            }
            assert!(
                began.elapsed() < Duration::from_secs(10),
                "the writes never stalled"
            );
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        drop(reader);
    }
}
