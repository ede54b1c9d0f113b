//! Damaged replies. The guest agent's replies come from inside a guest (a
//! tenant's), QMP's from a QEMU that may be failing: both clients must end
//! every call with an answer or a named error, before their deadline,
//! whatever arrives. Real replies of qemu-guest-agent and QEMU 7.2 (the
//! corpus, `tests/replies.txt`) are served damaged from a fixed seed — bits
//! flipped, cut short, bytes removed, inserted or repeated, a value swapped
//! for one of another type or at a limit (huge numbers, long strings,
//! nesting past any parser's depth), or the reply of another command — and
//! each case is one session: connect, then one call. No case may panic,
//! hang past its deadline, or fail without a code. CI runs 400 cases a
//! client; `REPRISE_MUTATIONS=N` runs N.

use reprise_qemu::agent::Agent;
use reprise_qemu::qmp::Qmp;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// The deadline of each call, and how much later than it a case may end.
const WITHIN: Duration = Duration::from_millis(300);
const SLACK: Duration = Duration::from_secs(2);

/// xorshift64*, from a fixed seed: a failing case replays.
#[derive(Clone)]
struct Dice(u64);

impl Dice {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

fn cases() -> u64 {
    std::env::var("REPRISE_MUTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400)
}

/// The corpus: (client, command, reply) with `ID` to be replaced.
fn corpus() -> Vec<(String, String, String)> {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/replies.txt"))
            .expect("tests/replies.txt");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let mut parts = l.splitn(3, ' ');
            let mut next = || parts.next().expect("CLIENT COMMAND REPLY").to_string();
            (next(), next(), next())
        })
        .collect()
}

/// A value of another type, or at a limit.
fn odd_value(dice: &mut Dice) -> Value {
    match dice.below(10) {
        0 => Value::Null,
        1 => json!(true),
        2 => json!(-1),
        3 => json!(1e308),
        4 => serde_json::from_str("18446744073709551616").expect("a big number"),
        5 => json!(""),
        6 => json!("x".repeat(64 << 10)),
        7 => json!([]),
        8 => json!({}),
        _ => json!({"return": {"nested": [1, {"id": "1"}]}}),
    }
}

/// Replace one node of `v` (a random walk down from the top) by an odd one.
fn swap_a_value(v: &mut Value, dice: &mut Dice) {
    let children = match v {
        Value::Object(o) => o.len(),
        Value::Array(a) => a.len(),
        _ => 0,
    };
    if children == 0 || dice.below(3) == 0 {
        *v = odd_value(dice);
        return;
    }
    let i = dice.below(children as u64) as usize;
    match v {
        Value::Object(o) => {
            let key = o.keys().nth(i).expect("a key").clone();
            swap_a_value(o.get_mut(&key).expect("its value"), dice);
        }
        Value::Array(a) => swap_a_value(&mut a[i], dice),
        _ => unreachable!("only containers have children"),
    }
}

/// `reply` damaged one way or another.
fn damage(reply: &str, others: &[String], dice: &mut Dice) -> Vec<u8> {
    let mut b = reply.as_bytes().to_vec();
    let at = |dice: &mut Dice, len: usize| dice.below(len as u64 + 1) as usize;
    match dice.below(9) {
        0 => {
            let i = at(dice, b.len() - 1);
            b[i] ^= 1 << dice.below(8);
        }
        1 => b.truncate(at(dice, b.len())),
        2 => {
            let from = at(dice, b.len());
            let to = from + at(dice, b.len() - from);
            b.drain(from..to);
        }
        3 => {
            let i = at(dice, b.len());
            let junk: Vec<u8> = (0..1 + dice.below(16))
                .map(|_| [0u8, 0xFF, b'"', b'{', b']', b'\\', b'9', 0xC3][dice.below(8) as usize])
                .collect();
            b.splice(i..i, junk);
        }
        4 => {
            let from = at(dice, b.len());
            let to = from + at(dice, b.len() - from);
            let copy = b[from..to].to_vec();
            b.splice(to..to, copy);
        }
        5 | 6 => {
            if let Ok(mut v) = serde_json::from_slice::<Value>(&b) {
                swap_a_value(&mut v, dice);
                b = v.to_string().into_bytes();
            }
        }
        7 => {
            let depth = 1 + dice.below(100_000) as usize;
            b = format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes();
        }
        _ => {
            b = others[dice.below(others.len() as u64) as usize]
                .clone()
                .into_bytes()
        }
    }
    // A newline inside the damage splits it into lines, as on the wire.
    b
}

/// The corpus reply of `client` to `command` (any, for an unknown one),
/// its `ID` the request's.
fn reply_to(
    corpus: &[(String, String, String)],
    client: &str,
    command: &str,
    id: &str,
    dice: &mut Dice,
) -> String {
    let mine: Vec<&String> = corpus
        .iter()
        .filter(|(c, cmd, _)| c == client && cmd == command)
        .map(|(_, _, r)| r)
        .collect();
    let all: Vec<&String> = corpus
        .iter()
        .filter(|(c, _, _)| c == client)
        .map(|(_, _, r)| r)
        .collect();
    let pool = if mine.is_empty() { all } else { mine };
    pool[dice.below(pool.len() as u64) as usize].replace("ID", id)
}

/// Serve one agent session: every reply from the corpus, damaged half the
/// time for `guest-sync-delimited` (so that most sessions get past their
/// start) and always for the command under test; the connection is closed
/// after a damaged reply (a client must not wait for more).
async fn serve_agent(stream: UnixStream, corpus: Vec<(String, String, String)>, mut dice: Dice) {
    let others: Vec<String> = corpus.iter().map(|(_, _, r)| r.clone()).collect();
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut line = Vec::new();
    while r.read_until(b'\n', &mut line).await.unwrap_or(0) > 0 {
        line.retain(|b| *b != 0xFF);
        let Ok(cmd) = serde_json::from_slice::<Value>(&line) else {
            line.clear();
            continue;
        };
        line.clear();
        let command = cmd["execute"].as_str().unwrap_or("").to_string();
        let id = cmd["arguments"]["id"].to_string();
        let reply = reply_to(&corpus, "agent", &command, &id, &mut dice);
        let routine = matches!(command.as_str(), "guest-sync-delimited" | "guest-exec");
        let damaged = !routine || dice.below(2) == 0;
        let mut out = if damaged {
            damage(&reply, &others, &mut dice)
        } else {
            reply.into_bytes()
        };
        if command == "guest-sync-delimited" {
            out.insert(0, 0xFF);
        }
        out.push(b'\n');
        if w.write_all(&out).await.is_err() || damaged {
            return;
        }
    }
}

/// Serve one QMP session the same way: a greeting (damaged a third of the
/// time), `qmp_capabilities` (damaged half the time), then the command
/// under test, damaged; the connection is closed after a damaged message.
async fn serve_qmp(stream: UnixStream, corpus: Vec<(String, String, String)>, mut dice: Dice) {
    let others: Vec<String> = corpus.iter().map(|(_, _, r)| r.clone()).collect();
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let greeting = reply_to(&corpus, "qmp", "greeting", "0", &mut dice);
    let damaged = dice.below(3) == 0;
    let mut out = if damaged {
        damage(&greeting, &others, &mut dice)
    } else {
        greeting.into_bytes()
    };
    out.push(b'\n');
    if w.write_all(&out).await.is_err() || damaged {
        return;
    }
    let mut line = Vec::new();
    while r.read_until(b'\n', &mut line).await.unwrap_or(0) > 0 {
        let Ok(cmd) = serde_json::from_slice::<Value>(&line) else {
            line.clear();
            continue;
        };
        line.clear();
        let command = cmd["execute"].as_str().unwrap_or("").to_string();
        let reply = reply_to(&corpus, "qmp", &command, &cmd["id"].to_string(), &mut dice);
        let damaged = command != "qmp_capabilities" || dice.below(2) == 0;
        let mut out = if damaged {
            damage(&reply, &others, &mut dice)
        } else {
            reply.into_bytes()
        };
        out.push(b'\n');
        if w.write_all(&out).await.is_err() || damaged {
            return;
        }
    }
}

/// How the cases ended: (answers, named errors).
fn judge(
    case: u64,
    started: Instant,
    ended: Result<reprise_core::Result<()>, tokio::time::error::Elapsed>,
) -> (u64, u64) {
    let took = started.elapsed();
    let Ok(result) = ended else {
        panic!("case {case}: no end in {took:?}");
    };
    assert!(
        took < WITHIN * 2 + SLACK,
        "case {case}: ended after {took:?}"
    );
    match result {
        Ok(()) => (1, 0),
        Err(e) => {
            assert!(
                !e.code.is_empty() && !e.message.is_empty(),
                "case {case}: unnamed {e:?}"
            );
            (0, 1)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_client_ends_every_call_on_damaged_replies() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("qga.sock");
    let listener = std::sync::Arc::new(UnixListener::bind(&sock).unwrap());
    let corpus = corpus();
    let mut dice = Dice(0x5eed_a6e7);
    let (mut answered, mut refused) = (0, 0);
    for case in 0..cases() {
        let server = tokio::spawn({
            let corpus = corpus.clone();
            let dice = Dice(dice.below(u64::MAX) | 1);
            let listener = listener.clone();
            async move {
                if let Ok((stream, _)) = listener.accept().await {
                    serve_agent(stream, corpus, dice).await;
                }
            }
        });
        let call = dice.below(5);
        let started = Instant::now();
        let ended = tokio::time::timeout(WITHIN * 2 + SLACK, async {
            let mut agent = Agent::connect(&sock, WITHIN).await?;
            match call {
                0 => agent.ping(WITHIN).await,
                1 => agent.freeze(WITHIN).await.map(|_| ()),
                2 => agent.thaw(WITHIN).await.map(|_| ()),
                3 => agent.freeze_status(WITHIN).await.map(|_| ()),
                _ => agent.exec("/bin/true", &[], None, WITHIN).await.map(|_| ()),
            }
        })
        .await;
        let (a, r) = judge(case, started, ended);
        answered += a;
        refused += r;
        server.abort();
    }
    eprintln!("agent: {} damaged sessions: {answered} answered, {refused} named errors, none hung or panicked", answered + refused);
    assert!(refused > 0, "the damage was never noticed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_qmp_client_ends_every_call_on_damaged_replies() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("qmp.sock");
    let listener = std::sync::Arc::new(UnixListener::bind(&sock).unwrap());
    let corpus = corpus();
    let mut dice = Dice(0x0a11_5eed);
    let (mut answered, mut refused) = (0, 0);
    for case in 0..cases() {
        let server = tokio::spawn({
            let corpus = corpus.clone();
            let dice = Dice(dice.below(u64::MAX) | 1);
            let listener = listener.clone();
            async move {
                if let Ok((stream, _)) = listener.accept().await {
                    serve_qmp(stream, corpus, dice).await;
                }
            }
        });
        let call = dice.below(4);
        let started = Instant::now();
        let ended = tokio::time::timeout(WITHIN * 2 + SLACK, async {
            let mut qmp = Qmp::connect(&sock, WITHIN).await?;
            qmp.command_timeout = WITHIN;
            match call {
                0 => qmp.run_state().await.map(|_| ()),
                1 => qmp
                    .execute("transaction", json!({"actions": []}))
                    .await
                    .map(|_| ()),
                2 => qmp.execute("stop", json!({})).await.map(|_| ()),
                _ => qmp.execute("query-migrate", json!({})).await.map(|_| ()),
            }
        })
        .await;
        let (a, r) = judge(case, started, ended);
        answered += a;
        refused += r;
        server.abort();
    }
    eprintln!("QMP: {} damaged sessions: {answered} answered, {refused} named errors, none hung or panicked", answered + refused);
    assert!(refused > 0, "the damage was never noticed");
}
