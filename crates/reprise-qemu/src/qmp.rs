//! A QMP client over a unix socket.
//!
//! One connection is one session: the greeting is read, capabilities are
//! negotiated, then commands are sent one at a time, each tagged with an id
//! so its answer is told apart from events. Events that arrive meanwhile are
//! kept, in order, for [`Qmp::wait_event`].

use reprise_core::{Error, ErrorKind, Result};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::time::{timeout, Instant};

/// A QMP event as QEMU sent it.
#[derive(Debug, Clone)]
pub struct Event {
    pub name: String,
    pub data: Value,
    /// QEMU's timestamp of the event, in microseconds since the epoch.
    pub at_us: u64,
}

fn event_time(msg: &Value) -> u64 {
    let t = &msg["timestamp"];
    // Saturating: a damaged timestamp must not overflow (found by
    // tests/replies.rs).
    (t["seconds"].as_u64().unwrap_or(0))
        .saturating_mul(1_000_000)
        .saturating_add(t["microseconds"].as_u64().unwrap_or(0))
}

/// The largest QMP message taken (answers and events are far smaller).
pub const MAX_MESSAGE: usize = 16 << 20;

pub struct Qmp {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    events: VecDeque<Event>,
    next_id: u64,
    /// Upper bound for one command's answer.
    pub command_timeout: Duration,
}

fn unavailable(what: impl std::fmt::Display) -> Error {
    Error::unavailable("qmp_unavailable", format!("QMP: {what}"))
}

impl Qmp {
    /// Connect and negotiate capabilities, waiting at most `wait` for the
    /// socket to accept.
    pub async fn connect(path: &Path, wait: Duration) -> Result<Qmp> {
        let stream = timeout(wait, UnixStream::connect(path))
            .await
            .map_err(|_| unavailable(format!("{} did not accept in {wait:?}", path.display())))?
            .map_err(|e| unavailable(format!("cannot connect to {}: {e}", path.display())))?;
        let (r, w) = stream.into_split();
        let mut qmp = Qmp {
            reader: BufReader::new(r),
            writer: w,
            events: VecDeque::new(),
            next_id: 1,
            command_timeout: Duration::from_secs(30),
        };
        let greeting = timeout(wait, qmp.read_message())
            .await
            .map_err(|_| unavailable("no greeting (is another client connected?)"))??;
        if greeting.get("QMP").is_none() {
            return Err(unavailable(format!("unexpected greeting {greeting}")));
        }
        qmp.execute("qmp_capabilities", json!({})).await?;
        Ok(qmp)
    }

    async fn read_message(&mut self) -> Result<Value> {
        let mut line = Vec::new();
        loop {
            let read = crate::read_line_capped(&mut self.reader, &mut line, MAX_MESSAGE)
                .await
                .map_err(|e| unavailable(format!("read: {e}")))?;
            match read {
                crate::Line::Closed => return Err(unavailable("connection closed by QEMU")),
                crate::Line::TooLong => {
                    return Err(unavailable(format!(
                        "a QMP message longer than {MAX_MESSAGE} bytes"
                    )))
                }
                crate::Line::Whole => {}
            }
            if !line.iter().all(u8::is_ascii_whitespace) {
                return serde_json::from_slice(&line).map_err(|e| {
                    unavailable(format!(
                        "bad message {:?}: {e}",
                        String::from_utf8_lossy(&line[..line.len().min(200)])
                    ))
                });
            }
        }
    }

    /// Run one command and return its `return` value. A QMP error becomes an
    /// [`ErrorKind::Conflict`] error with code `qmp_error` carrying QEMU's
    /// class and description.
    pub async fn execute(&mut self, command: &str, arguments: Value) -> Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({"execute": command, "id": id});
        if arguments.as_object().is_some_and(|o| !o.is_empty()) {
            msg["arguments"] = arguments;
        }
        let mut text = msg.to_string();
        text.push('\n');
        self.writer
            .write_all(text.as_bytes())
            .await
            .map_err(|e| unavailable(format!("write {command}: {e}")))?;
        let deadline = Instant::now() + self.command_timeout;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.read_message())
                .await
                .map_err(|_| unavailable(format!("{command}: no answer in time")))??;
            if let Some(name) = msg.get("event").and_then(Value::as_str) {
                self.events.push_back(Event {
                    name: name.to_string(),
                    data: msg.get("data").cloned().unwrap_or(Value::Null),
                    at_us: event_time(&msg),
                });
                continue;
            }
            if msg.get("id").and_then(Value::as_u64) != Some(id) {
                continue;
            }
            if let Some(ret) = msg.get("return") {
                return Ok(ret.clone());
            }
            if let Some(err) = msg.get("error") {
                let class = err.get("class").and_then(Value::as_str).unwrap_or("");
                let desc = err.get("desc").and_then(Value::as_str).unwrap_or("");
                return Err(Error::new(
                    ErrorKind::Conflict,
                    "qmp_error",
                    format!("QEMU refused {command}: {desc} ({class})"),
                ));
            }
            return Err(unavailable(format!("unexpected answer {msg}")));
        }
    }

    /// Wait for an event named `name` whose data satisfies `matches`,
    /// looking first at events that came while commands ran.
    pub async fn wait_event(
        &mut self,
        name: &str,
        matches: impl Fn(&Value) -> bool,
        within: Duration,
    ) -> Result<Event> {
        if let Some(pos) = self
            .events
            .iter()
            .position(|e| e.name == name && matches(&e.data))
        {
            return Ok(self.events.remove(pos).expect("position is in range"));
        }
        let deadline = Instant::now() + within;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.read_message())
                .await
                .map_err(|_| unavailable(format!("no {name} event within {within:?}")))??;
            if msg.get("event").and_then(Value::as_str) == Some(name) {
                let data = msg.get("data").cloned().unwrap_or(Value::Null);
                if matches(&data) {
                    return Ok(Event {
                        name: name.to_string(),
                        data,
                        at_us: event_time(&msg),
                    });
                }
            }
        }
    }

    /// Run a job-based command (`snapshot-save`, `snapshot-load`,
    /// `snapshot-delete`…) under `job_id`, wait until it concludes, dismiss
    /// it, and return its error if it failed.
    pub async fn run_job(
        &mut self,
        command: &str,
        mut arguments: Value,
        job_id: &str,
        within: Duration,
    ) -> Result<()> {
        arguments["job-id"] = json!(job_id);
        self.execute(command, arguments).await?;
        let deadline = Instant::now() + within;
        loop {
            let jobs = self.execute("query-jobs", json!({})).await?;
            let job = jobs
                .as_array()
                .and_then(|a| a.iter().find(|j| j["id"] == job_id))
                .cloned()
                .ok_or_else(|| unavailable(format!("job {job_id} vanished")))?;
            if job["status"] == "concluded" {
                let _ = self.execute("job-dismiss", json!({"id": job_id})).await;
                if let Some(err) = job.get("error").and_then(Value::as_str) {
                    return Err(Error::new(
                        ErrorKind::Conflict,
                        "qmp_error",
                        format!("QEMU {command} failed: {err}"),
                    ));
                }
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = self.execute("job-cancel", json!({"id": job_id})).await;
                return Err(unavailable(format!(
                    "{command} did not finish in {within:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Wait for the running migration to end (`query-migrate`): its info
    /// when `completed`, an error naming QEMU's reason when it failed or
    /// was cancelled; past `within` it is cancelled.
    pub async fn wait_migration(&mut self, within: Duration) -> Result<Value> {
        let deadline = Instant::now() + within;
        loop {
            let info = self.execute("query-migrate", json!({})).await?;
            match info.get("status").and_then(Value::as_str) {
                Some("completed") => return Ok(info),
                Some(s @ ("failed" | "cancelled")) => {
                    let why = info
                        .get("error-desc")
                        .and_then(Value::as_str)
                        .unwrap_or("no reason given");
                    return Err(Error::new(
                        ErrorKind::Unavailable,
                        "migration_failed",
                        format!("QEMU's migration {s}: {why}"),
                    ));
                }
                _ => {}
            }
            if Instant::now() >= deadline {
                let _ = self.execute("migrate_cancel", json!({})).await;
                return Err(unavailable(format!(
                    "the migration did not finish in {within:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The events received so far (while commands ran), oldest first.
    pub fn received_events(&self) -> impl Iterator<Item = &Event> {
        self.events.iter()
    }

    /// `query-status`: the VM's run state (`running`, `paused`…).
    pub async fn run_state(&mut self) -> Result<String> {
        let status = self.execute("query-status", json!({})).await?;
        Ok(status
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncBufReadExt;
    use tokio::net::UnixListener;

    /// A scripted QMP peer: answers each command with the next canned reply,
    /// optionally sending an event first.
    async fn fake_qemu(listener: UnixListener, replies: Vec<Value>) {
        let (stream, _) = listener.accept().await.unwrap();
        let (r, mut w) = stream.into_split();
        let mut r = BufReader::new(r);
        w.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n")
            .await
            .unwrap();
        let mut replies = replies.into_iter();
        let mut line = String::new();
        while r.read_line(&mut line).await.unwrap() > 0 {
            let cmd: Value = serde_json::from_str(&line).unwrap();
            line.clear();
            let id = cmd["id"].clone();
            let mut reply = if cmd["execute"] == "qmp_capabilities" {
                json!({"return": {}})
            } else {
                replies.next().unwrap()
            };
            if let Some(event) = reply.get("__event").cloned() {
                w.write_all(format!("{event}\n").as_bytes()).await.unwrap();
                reply.as_object_mut().unwrap().remove("__event");
            }
            reply["id"] = id;
            w.write_all(format!("{reply}\n").as_bytes()).await.unwrap();
        }
    }

    #[tokio::test]
    async fn commands_errors_and_events() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        tokio::spawn(fake_qemu(
            listener,
            vec![
                json!({"return": {"status": "running", "running": true},
                       "__event": {"event": "RESUME", "data": {}}}),
                json!({"error": {"class": "GenericError", "desc": "Device 'x' not found"}}),
            ],
        ));
        let mut qmp = Qmp::connect(&sock, Duration::from_secs(2)).await.unwrap();
        assert_eq!(qmp.run_state().await.unwrap(), "running");
        let err = qmp
            .execute("device_del", json!({"id": "x"}))
            .await
            .unwrap_err();
        assert_eq!(err.code, "qmp_error");
        assert!(
            err.message.contains("Device 'x' not found"),
            "{}",
            err.message
        );
        let ev = qmp
            .wait_event("RESUME", |_| true, Duration::from_millis(100))
            .await
            .unwrap();
        assert_eq!(ev.name, "RESUME");
        let err = qmp
            .wait_event("SHUTDOWN", |_| true, Duration::from_millis(50))
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unavailable);
    }

    #[tokio::test]
    async fn a_missing_socket_is_unavailable() {
        let err = Qmp::connect(
            Path::new("/nonexistent/qmp.sock"),
            Duration::from_millis(100),
        )
        .await
        .err()
        .unwrap();
        assert_eq!(err.code, "qmp_unavailable");
        assert!(err.message.contains("/nonexistent/qmp.sock"));
    }
}
