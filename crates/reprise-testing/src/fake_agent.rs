//! A scripted qemu-guest-agent on a unix socket: speaks the agent's
//! protocol (the `0xFF` sync, `guest-sync-delimited`, JSON lines) and
//! keeps a guest's freeze state, so the daemon's quiesce logic can be
//! tested in milliseconds, with faults a real guest cannot be made to
//! show on demand (a freeze that hangs or is refused, thaws that fail).
//!
//! A fake is an extra test: quiesce is also tested against the real agent
//! in a real guest (`tests/points.rs`, `tests/snapshots.rs`).

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

/// How the fake answers `guest-fsfreeze-freeze`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freeze {
    /// Freezes and says so.
    Works,
    /// Answers an error (as qemu-ga does when a filesystem cannot freeze).
    Refused,
    /// Freezes but never answers (a guest stuck in the freeze ioctl).
    Hangs,
}

/// What the fake does, and what happened to it.
#[derive(Debug)]
pub struct Script {
    pub freeze: Freeze,
    /// Thaws that fail before one succeeds.
    pub failing_thaws: usize,
    /// Whether it answers at all (false: it accepts and stays silent).
    pub answers: bool,
    /// The guest's state now.
    pub frozen: bool,
    /// Every command received, in order.
    pub commands: Vec<String>,
    /// Connections accepted.
    pub connections: usize,
}

impl Default for Script {
    fn default() -> Script {
        Script {
            freeze: Freeze::Works,
            failing_thaws: 0,
            answers: true,
            frozen: false,
            commands: Vec::new(),
            connections: 0,
        }
    }
}

pub struct FakeAgent {
    pub socket: PathBuf,
    pub script: Arc<Mutex<Script>>,
}

impl FakeAgent {
    /// Listen on `socket` (on the current tokio runtime) with `script`.
    pub fn start(socket: &Path, script: Script) -> FakeAgent {
        let listener = UnixListener::bind(socket).expect("bind the fake agent's socket");
        let script = Arc::new(Mutex::new(script));
        let shared = script.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                shared.lock().unwrap().connections += 1;
                tokio::spawn(serve(stream, shared.clone()));
            }
        });
        FakeAgent {
            socket: socket.to_path_buf(),
            script,
        }
    }

    pub fn frozen(&self) -> bool {
        self.script.lock().unwrap().frozen
    }

    pub fn commands(&self) -> Vec<String> {
        self.script.lock().unwrap().commands.clone()
    }
}

async fn serve(stream: tokio::net::UnixStream, script: Arc<Mutex<Script>>) {
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r).split(b'\n');
    while let Ok(Some(line)) = lines.next_segment().await {
        let line: Vec<u8> = line.into_iter().filter(|b| *b != 0xFF).collect();
        let Ok(msg) = serde_json::from_slice::<Value>(&line) else {
            continue;
        };
        let command = msg["execute"].as_str().unwrap_or("").to_string();
        let (reply, delimited) = {
            let mut s = script.lock().unwrap();
            s.commands.push(command.clone());
            if !s.answers {
                (None, false)
            } else {
                answer(&mut s, &command, &msg)
            }
        };
        let Some(reply) = reply else {
            // Silent: keep the connection open, answer nothing.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return;
        };
        let mut bytes = if delimited { vec![0xFF] } else { Vec::new() };
        bytes.extend(reply.to_string().into_bytes());
        bytes.push(b'\n');
        if w.write_all(&bytes).await.is_err() {
            return;
        }
    }
}

/// The reply to one command (`None`: no reply), and whether it is
/// preceded by the sync delimiter.
fn answer(s: &mut Script, command: &str, msg: &Value) -> (Option<Value>, bool) {
    let error = |desc: &str| json!({"error": {"class": "GenericError", "desc": desc}});
    match command {
        "guest-sync-delimited" => (Some(json!({"return": msg["arguments"]["id"]})), true),
        "guest-ping" => (Some(json!({"return": {}})), false),
        "guest-fsfreeze-freeze" => match s.freeze {
            Freeze::Works => {
                s.frozen = true;
                (Some(json!({"return": 1})), false)
            }
            Freeze::Refused => (Some(error("failed to freeze /data: Device busy")), false),
            Freeze::Hangs => {
                s.frozen = true;
                (None, false)
            }
        },
        "guest-fsfreeze-thaw" if s.failing_thaws > 0 => {
            s.failing_thaws -= 1;
            (Some(error("thaw failed")), false)
        }
        "guest-fsfreeze-thaw" => {
            s.frozen = false;
            (Some(json!({"return": 1})), false)
        }
        "guest-fsfreeze-status" => {
            let state = if s.frozen { "frozen" } else { "thawed" };
            (Some(json!({"return": state})), false)
        }
        other => (
            Some(error(&format!("the fake agent does not know {other}"))),
            false,
        ),
    }
}
