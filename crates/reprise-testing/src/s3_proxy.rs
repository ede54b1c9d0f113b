//! A proxy in front of an S3 server that can refuse connections, the way
//! a busy or failing S3 does: each refused connection has its request read
//! whole, then answered `503 Service Unavailable` and closed; the others
//! are passed through untouched. Plain threads, so sync and async tests
//! can both use it.
//!
//! Refusals count connections, not requests: a client that keeps a
//! connection open past [`S3Proxy::refuse`] is not refused on it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub struct S3Proxy {
    /// `http://127.0.0.1:PORT`, to put in the client's config.
    pub endpoint: String,
    to_refuse: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
}

impl S3Proxy {
    /// A proxy to `upstream` (`http://host:port`) that passes everything.
    pub fn start(upstream: &str) -> S3Proxy {
        let upstream = upstream.trim_start_matches("http://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy listens");
        let endpoint = format!("http://{}", listener.local_addr().expect("address"));
        let to_refuse = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        let (left, count) = (to_refuse.clone(), refused.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let refuse = left
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                if refuse {
                    count.fetch_add(1, Ordering::SeqCst);
                    std::thread::spawn(move || refuse_one(client));
                } else {
                    let upstream = upstream.clone();
                    std::thread::spawn(move || pass(client, &upstream));
                }
            }
        });
        S3Proxy {
            endpoint,
            to_refuse,
            refused,
        }
    }

    /// Refuse the next `n` connections (`usize::MAX`: until told again).
    pub fn refuse(&self, n: usize) {
        self.to_refuse.store(n, Ordering::SeqCst);
    }

    /// How many connections were refused so far.
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }
}

/// Read the request whole, as a server would, then answer 503.
fn refuse_one(mut client: TcpStream) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = client.read(&mut buf) {
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&seen).to_ascii_lowercase();
        if let Some(end) = text.find("\r\n\r\n") {
            let body: usize = text[..end]
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if seen.len() >= end + 4 + body {
                break;
            }
        }
    }
    let _ = client.write_all(
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
}

/// Copy both ways until either side closes.
fn pass(client: TcpStream, upstream: &str) {
    let Ok(server) = TcpStream::connect(upstream) else {
        return;
    };
    let (Ok(mut client_in), Ok(mut server_out)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_in, &mut server_out);
        let _ = server_out.shutdown(std::net::Shutdown::Write);
    });
    let (mut server_in, mut client_out) = (server, client);
    let _ = std::io::copy(&mut server_in, &mut client_out);
    let _ = client_out.shutdown(std::net::Shutdown::Write);
    let _ = up.join();
}
