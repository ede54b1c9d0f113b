//! A blocking client of the reprise HTTP API, used by the CLI, the
//! end-to-end tests and the benchmarks. API errors come back as
//! [`reprise_core::Error`] with the daemon's own kind, code and message.
//!
//! The routes are typed methods (`api.rs`, each path written once); the
//! raw `get`/`post`/`delete` stay public for tests that send what no
//! typed method would.

mod api;

use reprise_core::error::ErrorBody;
use reprise_core::model::{CreateUpload, Job, JobStarted, Upload};
use reprise_core::{Error, ErrorKind, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::{Duration, Instant};

/// Bytes sent per upload request: a failed request costs at most this.
const UPLOAD_PIECE: usize = 16 << 20;

struct HashWriter<'a>(&'a mut Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Clone)]
pub struct Client {
    base: String,
    key: Option<String>,
    agent: ureq::Agent,
}

/// Percent-encode one path segment (names and ids are safe already; this
/// keeps anything else from changing the route).
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The largest answer read from the daemon.
const MAX_ANSWER: u64 = 256 << 20;

impl Client {
    pub fn new(base: &str, key: Option<String>) -> Client {
        Client {
            base: base.trim_end_matches('/').to_string(),
            key,
            agent: ureq::AgentBuilder::new()
                .timeout_connect(Duration::from_secs(5))
                .timeout(Duration::from_secs(300))
                .build(),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    fn request(&self, method: &str, path: &str) -> ureq::Request {
        let req = self.agent.request(method, &format!("{}{path}", self.base));
        match &self.key {
            Some(k) => req.set("Authorization", &format!("Bearer {k}")),
            None => req,
        }
    }

    fn answer(
        &self,
        result: std::result::Result<ureq::Response, ureq::Error>,
    ) -> Result<ureq::Response> {
        match result {
            Ok(resp) => Ok(resp),
            Err(ureq::Error::Status(status, resp)) => {
                let text = resp.into_string().unwrap_or_default();
                match serde_json::from_str::<ErrorBody>(&text) {
                    Ok(body) => Err(body.error.into()),
                    Err(_) => Err(Error::new(
                        if status >= 500 { ErrorKind::Unavailable } else { ErrorKind::Invalid },
                        "http_error",
                        format!("the daemon answered HTTP {status}: {}", text.trim()),
                    )),
                }
            }
            Err(e) => Err(Error::unavailable(
                "daemon_unreachable",
                format!(
                    "cannot reach the reprise daemon at {}: {e} (is `reprise serve` running? see --url)",
                    self.base
                ),
            )),
        }
    }

    /// An answer's body, up to [`MAX_ANSWER`] (ureq's own `into_string`
    /// stops at 10 MB: a list of a thousand jobs with their logs is more).
    fn text(resp: ureq::Response) -> Result<String> {
        let mut text = String::new();
        resp.into_reader()
            .take(MAX_ANSWER)
            .read_to_string(&mut text)
            .map_err(|e| Error::unavailable("daemon_unreachable", e.to_string()))?;
        Ok(text)
    }

    fn parse<T: DeserializeOwned>(resp: ureq::Response) -> Result<T> {
        let text = Self::text(resp)?;
        serde_json::from_str(&text)
            .map_err(|e| Error::internal(format!("unexpected answer from the daemon: {e}: {text}")))
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        Self::parse(self.answer(self.request("GET", path).call())?)
    }

    pub fn get_text(&self, path: &str) -> Result<String> {
        Self::text(self.answer(self.request("GET", path).call())?)
    }

    pub fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        Self::parse(self.answer(self.request("POST", path).send_json(body))?)
    }

    pub fn delete(&self, path: &str) -> Result<()> {
        self.answer(self.request("DELETE", path).call()).map(|_| ())
    }

    /// POST a request that starts a job.
    pub fn start_job<B: Serialize>(&self, path: &str, body: &B) -> Result<Job> {
        self.post::<B, JobStarted>(path, body).map(|s| s.job)
    }

    /// DELETE a resource whose deletion is a job.
    pub fn delete_job(&self, path: &str) -> Result<Job> {
        Self::parse::<JobStarted>(self.answer(self.request("DELETE", path).call())?).map(|s| s.job)
    }

    /// Upload a local file (see the daemon's `ops::uploads`): announced,
    /// then sent in pieces; a piece that fails is sent again from where
    /// the daemon says the upload stands, a few times. The daemon's SHA-256
    /// of the whole file is checked against ours. `progress(sent, total)`
    /// is called after each piece.
    pub fn upload(&self, path: &Path, mut progress: impl FnMut(u64, u64)) -> Result<Upload> {
        let local = |e: std::io::Error| {
            Error::invalid(
                "file_unreadable",
                format!("cannot read {}: {e}", path.display()),
            )
        };
        let mut file = std::fs::File::open(path).map_err(local)?;
        let size = file.metadata().map_err(local)?.len();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "upload".into());
        let mut upload = self.announce_upload(&CreateUpload {
            name,
            size_bytes: size,
        })?;
        let id = upload.id.to_string();
        let mut hash = Sha256::new();
        let mut hashed = 0u64;
        let mut piece = vec![0u8; UPLOAD_PIECE];
        let mut failures = 0;
        while upload.received_bytes < size {
            let at = upload.received_bytes;
            let len = (size - at).min(UPLOAD_PIECE as u64) as usize;
            file.seek(SeekFrom::Start(at)).map_err(local)?;
            file.read_exact(&mut piece[..len]).map_err(local)?;
            if at == hashed {
                hash.update(&piece[..len]);
                hashed += len as u64;
            }
            let sent = self.answer(
                self.request("PUT", &Self::upload_data_path(&id, at))
                    .set("Content-Type", "application/octet-stream")
                    .send_bytes(&piece[..len]),
            );
            match sent.and_then(Self::parse::<Upload>) {
                Ok(u) => upload = u,
                Err(e) if failures < 5 && e.kind != ErrorKind::Invalid => {
                    failures += 1;
                    std::thread::sleep(Duration::from_millis(200 << failures));
                    upload = self.upload_status(&id)?;
                    if upload.received_bytes < hashed {
                        // Bytes we hashed were not kept: hash again from the start.
                        hash = Sha256::new();
                        file.seek(SeekFrom::Start(0)).map_err(local)?;
                        let mut prefix = (&mut file).take(upload.received_bytes);
                        std::io::copy(&mut prefix, &mut HashWriter(&mut hash)).map_err(local)?;
                        hashed = upload.received_bytes;
                    }
                }
                Err(e) => return Err(e),
            }
            progress(upload.received_bytes, size);
        }
        let ours = hex_of(&hash.finalize());
        match upload.sha256.as_deref() {
            Some(theirs) if theirs == ours => Ok(upload),
            theirs => Err(Error::unavailable(
                "upload_corrupted",
                format!(
                    "the daemon holds {} for {} but the file's SHA-256 is {ours}: upload it again",
                    theirs.unwrap_or("no checksum"),
                    path.display()
                ),
            )),
        }
    }

    /// Follow a job until it ends (long-polling, so its end is seen at
    /// once), calling `seen` at least every quarter second; a failed job
    /// returns its error.
    pub fn wait_job(&self, id: &str, timeout: Duration, mut seen: impl FnMut(&Job)) -> Result<Job> {
        let started = Instant::now();
        loop {
            let job = self.job_after(id, 250)?;
            seen(&job);
            if job.state.is_final() {
                return match job.error {
                    Some(e) => Err(e.into()),
                    None => Ok(job),
                };
            }
            if started.elapsed() > timeout {
                return Err(Error::unavailable(
                    "job_wait_timeout",
                    format!(
                        "job {id} is still {} after {}s",
                        job.state,
                        timeout.as_secs()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(150));
        }
    }
}

#[cfg(test)]
mod answer_tests {
    use super::Client;
    use std::io::{BufRead, BufReader, Write};

    /// A list bigger than ureq's 10 MB string limit (a thousand jobs with
    /// their logs) is read whole.
    #[test]
    fn an_answer_over_ten_megabytes_is_read() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let items: Vec<String> = (0..12_000).map(|i| format!("{i:01000}")).collect();
        let body = serde_json::to_vec(&items).unwrap();
        assert!(body.len() > 12_000_000);
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap() > 2 {
                line.clear();
            }
            let mut stream = stream;
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .unwrap();
            stream.write_all(&body).unwrap();
        });
        let client = Client::new(&format!("http://{addr}"), None);
        let got: Vec<String> = client.get("/api/v1/jobs").unwrap();
        assert_eq!(got, items);
        server.join().unwrap();
    }
}
