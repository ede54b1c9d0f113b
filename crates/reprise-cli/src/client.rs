//! A blocking client of the reprise HTTP API, used by the CLI and by the
//! end-to-end tests. API errors come back as [`reprise_core::Error`] with
//! the daemon's own kind, code and message.

use reprise_core::error::ErrorBody;
use reprise_core::model::{Job, JobStarted};
use reprise_core::{Error, ErrorKind, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::time::{Duration, Instant};

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
                    Ok(body) => Err(body.error),
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

    fn parse<T: DeserializeOwned>(resp: ureq::Response) -> Result<T> {
        let text = resp
            .into_string()
            .map_err(|e| Error::unavailable("daemon_unreachable", e.to_string()))?;
        serde_json::from_str(&text)
            .map_err(|e| Error::internal(format!("unexpected answer from the daemon: {e}: {text}")))
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        Self::parse(self.answer(self.request("GET", path).call())?)
    }

    pub fn get_text(&self, path: &str) -> Result<String> {
        self.answer(self.request("GET", path).call())?
            .into_string()
            .map_err(|e| Error::unavailable("daemon_unreachable", e.to_string()))
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

    pub fn job(&self, id: &str) -> Result<Job> {
        self.get(&format!("/api/v1/jobs/{}", segment(id)))
    }

    /// Follow a job until it ends (long-polling, so its end is seen at
    /// once), calling `seen` at least every quarter second; a failed job
    /// returns its error.
    pub fn wait_job(&self, id: &str, timeout: Duration, mut seen: impl FnMut(&Job)) -> Result<Job> {
        let started = Instant::now();
        loop {
            let job: Job = self.get(&format!("/api/v1/jobs/{}?wait_ms=250", segment(id)))?;
            seen(&job);
            if job.state.is_final() {
                return match job.error {
                    Some(e) => Err(e),
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
