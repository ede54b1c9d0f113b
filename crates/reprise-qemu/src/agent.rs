//! A qemu-guest-agent client over the host end of the virtio-serial port.
//!
//! The channel carries no framing a new client can trust (a previous client
//! may have left a half-read answer in it), so every session starts with
//! `0xFF` and `guest-sync-delimited` with a random id, and discards all
//! that comes before the echo of that id. `0xFF` bytes in replies are
//! skipped. Every call has a deadline: an agent that is absent or hung
//! makes a call fail with `guest_agent_not_responding`, never hang.

use base64::Engine;
use reprise_core::{Error, ErrorKind, Result};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::time::{timeout_at, Instant};

/// The largest message taken from the agent: every answer reprise asks for
/// fits (command output is read in capped pieces); longer lines are
/// dropped unread, so a hostile guest cannot grow the daemon's memory.
pub const MAX_MESSAGE: usize = 8 << 20;

pub struct Agent {
    reader: BufReader<OwnedReadHalf>,
    /// Always `Some` until dropped (see `Drop`).
    writer: Option<OwnedWriteHalf>,
}

/// Dropping a session closes this descriptor of the connection, but does
/// not shut the connection down: another descriptor of it (a freeze's
/// guard, or the daemon after one) goes on using it.
impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(writer) = self.writer.take() {
            writer.forget();
        }
    }
}

fn not_responding(what: impl std::fmt::Display) -> Error {
    Error::unavailable(
        "guest_agent_not_responding",
        format!("the guest agent is not answering: {what}"),
    )
}

/// The outcome of a command run in the guest with `guest-exec`.
#[derive(Debug, Clone)]
pub struct ExecOutput {
    pub exit_code: i64,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Agent {
    /// Connect and synchronise within `within`.
    pub async fn connect(path: &Path, within: Duration) -> Result<Agent> {
        let deadline = Instant::now() + within;
        let stream = timeout_at(deadline, UnixStream::connect(path))
            .await
            .map_err(|_| not_responding("connect timed out"))?
            .map_err(|e| {
                not_responding(format!("cannot connect to {}: {e}", path.display())).with_source(e)
            })?;
        let mut agent = Agent::adopt(stream);
        agent.sync(deadline).await?;
        Ok(agent)
    }

    /// A session over a connection another client (or process) of this
    /// one made and synchronised: no sync of its own (call [`Agent::resync`]
    /// before trusting what is already in the channel).
    pub fn adopt(stream: UnixStream) -> Agent {
        let (r, w) = stream.into_split();
        Agent {
            reader: BufReader::new(r),
            writer: Some(w),
        }
    }

    /// Synchronise again within `within`: whatever an earlier request left
    /// unread (an answer that came after its deadline) is discarded.
    pub async fn resync(&mut self, within: Duration) -> Result<()> {
        self.sync(Instant::now() + within).await
    }

    /// A second descriptor of this session's connection, for a process
    /// that must be able to talk to the agent on its own (a freeze's
    /// guard). Both ends write to one channel: one of them at a time.
    pub fn try_clone_connection(&self) -> std::io::Result<std::os::unix::net::UnixStream> {
        use std::os::fd::AsFd;
        let stream: &UnixStream = self.reader.get_ref().as_ref();
        Ok(stream.as_fd().try_clone_to_owned()?.into())
    }

    fn writer(&mut self) -> &mut OwnedWriteHalf {
        self.writer
            .as_mut()
            .expect("a session has its writer until dropped")
    }

    async fn send(&mut self, msg: &Value, deadline: Instant) -> Result<()> {
        let mut bytes = msg.to_string().into_bytes();
        bytes.push(b'\n');
        timeout_at(deadline, self.writer().write_all(&bytes))
            .await
            .map_err(|_| not_responding("write timed out"))?
            .map_err(|e| not_responding(format!("write: {e}")))
    }

    async fn read_message(&mut self, deadline: Instant) -> Result<Value> {
        let mut line = Vec::new();
        let mut skipping = false;
        loop {
            let read = timeout_at(
                deadline,
                crate::read_line_capped(&mut self.reader, &mut line, MAX_MESSAGE),
            )
            .await
            .map_err(|_| not_responding("no answer in time"))?
            .map_err(|e| not_responding(format!("read: {e}")))?;
            match read {
                crate::Line::Closed => return Err(not_responding("channel closed")),
                // A line longer than any answer is garbage (a guest
                // writing to its own end): dropped piece by piece.
                crate::Line::TooLong => {
                    skipping = true;
                    continue;
                }
                crate::Line::Whole if skipping => {
                    skipping = false;
                    continue;
                }
                crate::Line::Whole => {}
            }
            line.retain(|b| *b != 0xFF);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<Value>(&line) {
                Ok(v) => return Ok(v),
                // Leftovers of an earlier client's session: skip them.
                Err(_) => continue,
            }
        }
    }

    async fn sync(&mut self, deadline: Instant) -> Result<()> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        let id = (std::process::id() ^ nanos) & 0x7fff_ffff;
        timeout_at(deadline, self.writer().write_all(&[0xFF]))
            .await
            .map_err(|_| not_responding("write timed out"))?
            .map_err(|e| not_responding(format!("write: {e}")))?;
        self.send(
            &json!({"execute": "guest-sync-delimited", "arguments": {"id": id}}),
            deadline,
        )
        .await?;
        loop {
            let msg = self.read_message(deadline).await?;
            if msg.get("return").and_then(Value::as_u64) == Some(id as u64) {
                return Ok(());
            }
        }
    }

    /// Run one agent command, waiting at most `within` for its answer.
    pub async fn execute(
        &mut self,
        command: &str,
        arguments: Value,
        within: Duration,
    ) -> Result<Value> {
        let deadline = Instant::now() + within;
        let mut msg = json!({"execute": command});
        if !arguments.is_null() {
            msg["arguments"] = arguments;
        }
        self.send(&msg, deadline).await?;
        let reply = self.read_message(deadline).await?;
        if let Some(ret) = reply.get("return") {
            return Ok(ret.clone());
        }
        let desc = reply
            .pointer("/error/desc")
            .and_then(Value::as_str)
            .unwrap_or("unknown error");
        Err(Error::new(
            ErrorKind::Conflict,
            "guest_agent_error",
            format!("the guest agent refused {command}: {desc}"),
        ))
    }

    /// `guest-ping`.
    pub async fn ping(&mut self, within: Duration) -> Result<()> {
        self.execute("guest-ping", Value::Null, within)
            .await
            .map(|_| ())
    }

    /// `guest-fsfreeze-freeze`: returns how many filesystems were frozen.
    pub async fn freeze(&mut self, within: Duration) -> Result<u64> {
        let n = self
            .execute("guest-fsfreeze-freeze", Value::Null, within)
            .await?;
        Ok(n.as_u64().unwrap_or(0))
    }

    /// `guest-fsfreeze-thaw`: returns how many filesystems were thawed.
    pub async fn thaw(&mut self, within: Duration) -> Result<u64> {
        let n = self
            .execute("guest-fsfreeze-thaw", Value::Null, within)
            .await?;
        Ok(n.as_u64().unwrap_or(0))
    }

    /// `guest-fsfreeze-status`: `thawed` or `frozen`.
    pub async fn freeze_status(&mut self, within: Duration) -> Result<String> {
        let s = self
            .execute("guest-fsfreeze-status", Value::Null, within)
            .await?;
        Ok(s.as_str().unwrap_or("unknown").to_string())
    }

    /// Run `path args…` in the guest, feeding `stdin`, and wait for it to
    /// exit; its output is returned.
    pub async fn exec(
        &mut self,
        path: &str,
        args: &[&str],
        stdin: Option<&[u8]>,
        within: Duration,
    ) -> Result<ExecOutput> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let deadline = Instant::now() + within;
        let mut arguments = json!({"path": path, "arg": args, "capture-output": true});
        if let Some(input) = stdin {
            arguments["input-data"] = json!(b64.encode(input));
        }
        let started = self.execute("guest-exec", arguments, within).await?;
        let pid = started
            .get("pid")
            .and_then(Value::as_i64)
            .ok_or_else(|| not_responding(format!("guest-exec gave no pid: {started}")))?;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(not_responding(format!(
                    "{path} did not exit within {within:?}"
                )));
            }
            let status = self
                .execute("guest-exec-status", json!({"pid": pid}), left)
                .await?;
            if status.get("exited").and_then(Value::as_bool) == Some(true) {
                let field = |name: &str| {
                    status
                        .get(name)
                        .and_then(Value::as_str)
                        .and_then(|s| b64.decode(s).ok())
                        .unwrap_or_default()
                };
                return Ok(ExecOutput {
                    exit_code: status.get("exitcode").and_then(Value::as_i64).unwrap_or(-1),
                    stdout: field("out-data"),
                    stderr: field("err-data"),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncBufReadExt;
    use tokio::net::UnixListener;

    /// A guest that floods its end of the channel with a line longer than
    /// any answer: the line is dropped piece by piece (memory stays within
    /// one piece), and the real answer after it is read.
    #[tokio::test]
    async fn a_flood_is_dropped_in_bounded_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("qga.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (r, mut w) = stream.into_split();
            let mut r = BufReader::new(r);
            let junk = vec![b'x'; 1 << 20];
            for _ in 0..((3 * MAX_MESSAGE) >> 20) {
                w.write_all(&junk).await.unwrap();
            }
            w.write_all(b"\n").await.unwrap();
            let mut line = Vec::new();
            while r.read_until(b'\n', &mut line).await.unwrap() > 0 {
                line.retain(|b| *b != 0xFF);
                let v: Value = match serde_json::from_slice(&line) {
                    Ok(v) => v,
                    Err(_) => {
                        line.clear();
                        continue;
                    }
                };
                line.clear();
                if v["execute"] == "guest-sync-delimited" {
                    let id = v["arguments"]["id"].clone();
                    w.write_all(format!("{{\"return\": {id}}}\n").as_bytes())
                        .await
                        .unwrap();
                }
            }
        });
        let agent = Agent::connect(&sock, Duration::from_secs(20)).await;
        assert!(agent.is_ok(), "{:?}", agent.err());
    }

    /// A scripted agent that first leaves garbage in the channel, like a
    /// previous client's unread answer, then answers sync and ping.
    #[tokio::test]
    async fn sync_skips_leftovers_and_ping_answers() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("qga.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (r, mut w) = stream.into_split();
            let mut r = BufReader::new(r);
            w.write_all(b"{\"return\": {\"half\": \n{\"return\": 7}\n")
                .await
                .unwrap();
            let mut line = Vec::new();
            while r.read_until(b'\n', &mut line).await.unwrap() > 0 {
                line.retain(|b| *b != 0xFF);
                let cmd: Value = serde_json::from_slice(&line).unwrap();
                line.clear();
                let reply = match cmd["execute"].as_str().unwrap() {
                    "guest-sync-delimited" => {
                        w.write_all(&[0xFF]).await.unwrap();
                        json!({"return": cmd["arguments"]["id"]})
                    }
                    "guest-ping" => json!({"return": {}}),
                    _ => json!({"error": {"class": "CommandNotFound", "desc": "nope"}}),
                };
                w.write_all(format!("{reply}\n").as_bytes()).await.unwrap();
            }
        });
        let mut agent = Agent::connect(&sock, Duration::from_secs(2)).await.unwrap();
        agent.ping(Duration::from_secs(1)).await.unwrap();
        let err = agent
            .execute("guest-fsfreeze-freeze", Value::Null, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert_eq!(err.code, "guest_agent_error");
    }

    /// A peer that accepts and never answers: the call ends at its deadline.
    #[tokio::test]
    async fn a_silent_agent_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("qga.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        tokio::spawn(async move {
            let (_stream, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(10)).await;
        });
        let started = Instant::now();
        let err = Agent::connect(&sock, Duration::from_millis(200))
            .await
            .err()
            .unwrap();
        assert_eq!(err.code, "guest_agent_not_responding");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
