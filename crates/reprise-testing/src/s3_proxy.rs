//! A proxy in front of an S3 server that can refuse connections, the way
//! a busy or failing S3 does: each refused connection has its request read
//! whole, then answered `503 Service Unavailable` and closed; the others
//! are passed through untouched. Plain threads, so sync and async tests
//! can both use it.
//!
//! Refusals count connections, not requests: a client that keeps a
//! connection open past [`S3Proxy::refuse`] is not refused on it.
//!
//! In [`S3Proxy::chaos`] mode each new connection is, at random, refused,
//! cut in the middle (closed after a few bytes either way: a request or
//! an answer left half-sent), slowed (held before it reaches the server),
//! answered with an S3 error of another kind (`500 InternalError` or
//! `503 SlowDown`, with S3's XML body), or dripped (its answer passed on
//! in 16 KiB pieces 10 ms apart, as an overloaded server streams), each
//! with the given chance; the rest pass. Its request gets
//! `Connection: close`, so that each request comes on a connection of its
//! own and the chances are per request.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct S3Proxy {
    /// `http://127.0.0.1:PORT`, to put in the client's config.
    pub endpoint: String,
    to_refuse: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
    chaos: Arc<Mutex<Option<Chaos>>>,
    faults: Arc<Faults>,
}

/// The random faults of [`S3Proxy::chaos`].
struct Chaos {
    state: u64,
    per_mille: u64,
}

impl Chaos {
    fn next(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// How many connections were refused, cut and slowed by chaos.
#[derive(Debug, Default)]
pub struct Faults {
    /// Connections chaos drew a fate for.
    pub drawn: AtomicUsize,
    pub refused: AtomicUsize,
    pub cut: AtomicUsize,
    pub slowed: AtomicUsize,
    /// Answered with an S3 error body (500 InternalError, 503 SlowDown).
    pub erred: AtomicUsize,
    /// Answered slowly, piece by piece.
    pub dripped: AtomicUsize,
}

/// What chaos does to one connection.
enum Fate {
    Pass,
    Refuse,
    /// Close after this many bytes: of the request when `upload`, else of
    /// the answer.
    Cut {
        after: u64,
        upload: bool,
    },
    Slow(Duration),
    /// Answer this S3 error (status, code) to the whole request.
    Err(u16, &'static str),
    Drip,
}

impl S3Proxy {
    /// A proxy to `upstream` (`http://host:port`) that passes everything.
    pub fn start(upstream: &str) -> S3Proxy {
        let upstream = upstream.trim_start_matches("http://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy listens");
        let endpoint = format!("http://{}", listener.local_addr().expect("address"));
        let to_refuse = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        let chaos: Arc<Mutex<Option<Chaos>>> = Arc::new(Mutex::new(None));
        let faults = Arc::new(Faults::default());
        let (left, count) = (to_refuse.clone(), refused.clone());
        let (dice, seen) = (chaos.clone(), faults.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let refuse = left
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                let one_request = dice.lock().unwrap_or_else(|p| p.into_inner()).is_some();
                let fate = if refuse {
                    count.fetch_add(1, Ordering::SeqCst);
                    Fate::Refuse
                } else {
                    fate(&dice, &seen)
                };
                let upstream = upstream.clone();
                std::thread::spawn(move || match fate {
                    Fate::Refuse => refuse_one(client, 503, None),
                    Fate::Err(status, code) => refuse_one(client, status, Some(code)),
                    Fate::Pass => pass(client, &upstream, None, one_request),
                    Fate::Drip => pass(client, &upstream, Some((u64::MAX, false)), one_request),
                    Fate::Cut { after, upload } => {
                        pass(client, &upstream, Some((after, upload)), one_request)
                    }
                    Fate::Slow(by) => {
                        std::thread::sleep(by);
                        pass(client, &upstream, None, one_request)
                    }
                });
            }
        });
        S3Proxy {
            endpoint,
            to_refuse,
            refused,
            chaos,
            faults,
        }
    }

    /// From now on, each new connection is refused, cut, slowed, answered
    /// with an S3 error or dripped, each with a chance of `per_mille` in a
    /// thousand (the draws follow `seed`).
    pub fn chaos(&self, seed: u64, per_mille: u64) {
        *self.chaos.lock().unwrap_or_else(|p| p.into_inner()) = Some(Chaos {
            state: seed.max(1),
            per_mille,
        });
    }

    /// Back to passing every connection.
    pub fn calm(&self) {
        *self.chaos.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The faults chaos made so far.
    pub fn faults(&self) -> &Faults {
        &self.faults
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

/// Read the request whole, as a server would, then answer `status`: bare,
/// or with S3's XML error body naming `code`.
fn refuse_one(mut client: TcpStream, status: u16, code: Option<&str>) {
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
    let body = code
        .map(|c| {
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{c}</Code><Message>a fault the test proxy made</Message><RequestId>proxy</RequestId></Error>"
            )
        })
        .unwrap_or_default();
    let reason = if status == 500 {
        "Internal Server Error"
    } else {
        "Service Unavailable"
    };
    let kind = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/xml\r\n"
    };
    let _ = client.write_all(
        format!(
            "HTTP/1.1 {status} {reason}\r\n{kind}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
}

/// The request's head (read up to its blank line, a byte at a time so
/// that nothing of the body is taken), with `Connection: close` added.
fn head_with_close(mut client: &TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte).ok()? == 0 || head.len() > 64 * 1024 {
            return None;
        }
        head.push(byte[0]);
    }
    head.truncate(head.len() - 2);
    head.extend_from_slice(b"Connection: close\r\n\r\n");
    Some(head)
}

/// Draw the fate of a new connection.
fn fate(chaos: &Mutex<Option<Chaos>>, faults: &Faults) -> Fate {
    let mut guard = chaos.lock().unwrap_or_else(|p| p.into_inner());
    let Some(c) = guard.as_mut() else {
        return Fate::Pass;
    };
    faults.drawn.fetch_add(1, Ordering::SeqCst);
    let roll = c.next() % 1000;
    let p = c.per_mille;
    if roll < p {
        faults.refused.fetch_add(1, Ordering::SeqCst);
        Fate::Refuse
    } else if roll < 2 * p {
        faults.cut.fetch_add(1, Ordering::SeqCst);
        Fate::Cut {
            after: c.next() % 65536,
            upload: c.next() % 2 == 0,
        }
    } else if roll < 3 * p {
        faults.slowed.fetch_add(1, Ordering::SeqCst);
        Fate::Slow(Duration::from_millis(100 + c.next() % 500))
    } else if roll < 4 * p {
        faults.erred.fetch_add(1, Ordering::SeqCst);
        if c.next() % 2 == 0 {
            Fate::Err(500, "InternalError")
        } else {
            Fate::Err(503, "SlowDown")
        }
    } else if roll < 5 * p {
        faults.dripped.fetch_add(1, Ordering::SeqCst);
        Fate::Drip
    } else {
        Fate::Pass
    }
}

/// Copy both ways until either side closes; with `cut`, close both after
/// that many bytes of the request (`true`) or of the answer — a cut after
/// `u64::MAX` bytes of the answer is a drip instead: the whole answer,
/// slowly; with `one_request`, the request asks the server to close after
/// answering.
fn pass(client: TcpStream, upstream: &str, cut: Option<(u64, bool)>, one_request: bool) {
    let drip = cut == Some((u64::MAX, false));
    let cut = cut.filter(|_| !drip);
    let Ok(server) = TcpStream::connect(upstream) else {
        return;
    };
    let (Ok(client_in), Ok(mut server_out)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let limit = |upload: bool| match cut {
        Some((after, dir)) if dir == upload => after,
        _ => u64::MAX,
    };
    let (up_limit, down_limit) = (limit(true), limit(false));
    let up = std::thread::spawn(move || {
        let mut from_client: Box<dyn Read> = Box::new(&client_in);
        if one_request {
            match head_with_close(&client_in) {
                Some(head) => {
                    from_client = Box::new(std::io::Cursor::new(head).chain(&client_in));
                }
                None => return,
            }
        }
        let _ = std::io::copy(&mut from_client.take(up_limit), &mut server_out);
        if up_limit == u64::MAX {
            let _ = server_out.shutdown(std::net::Shutdown::Write);
        } else {
            // The request cut: both ends closed, the answer never comes.
            let _ = server_out.shutdown(std::net::Shutdown::Both);
            let _ = client_in.shutdown(std::net::Shutdown::Both);
        }
    });
    let (server_in, mut client_out) = (server, client);
    if drip {
        let mut piece = vec![0u8; 16 << 10];
        while let Ok(n) = (&server_in).read(&mut piece) {
            if n == 0 || client_out.write_all(&piece[..n]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    } else {
        let _ = std::io::copy(&mut (&server_in).take(down_limit), &mut client_out);
    }
    if cut.is_some() {
        // Both ways closed at once: what was half-sent stays half-sent.
        let _ = client_out.shutdown(std::net::Shutdown::Both);
        let _ = server_in.shutdown(std::net::Shutdown::Both);
    } else {
        let _ = client_out.shutdown(std::net::Shutdown::Write);
    }
    let _ = up.join();
}
