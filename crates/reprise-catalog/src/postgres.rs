//! The region's engine: PostgreSQL, shared by every daemon of a region.
//!
//! The `postgres` client runs its own small runtime and must not be
//! called from inside the daemon's: each statement runs on the caller's
//! thread outside the daemon's runtime ([`outside_runtime`]) and blocks
//! it, as SQLite's calls do. (Handing each statement to a thread of its
//! own cost two thread wake-ups per statement: as much as the server's
//! round trip on loopback.) A lost connection is opened
//! again at the next statement; a transaction it was in is gone (the
//! server rolled it back), so every later statement of that transaction,
//! its commit included, fails as `catalog_unavailable` instead of running
//! alone on the new connection.
//!
//! Advisory locks, keyed by the catalog's schema (so catalogs in several
//! schemas of one database, as the tests make, do not meet):
//! - every transaction takes [`TX_LOCK`] before anything else: catalog
//!   transactions are serialised across every daemon, as SQLite's `BEGIN
//!   IMMEDIATE` serialises them on one host, so a limit checked in a
//!   transaction holds when its write commits. They are short (a few
//!   statements); single statements outside them run concurrently.
//! - a daemon holds [`HOST_LOCK`] for its host name for as long as its
//!   connection lives: a second daemon started as the same host is
//!   refused, and after a reconnection the catalog answers only if the
//!   lock is taken again.
//! - [`SWEEP_LOCK`], on a connection of its own ([`SweepLock`]): every
//!   daemon with a backup in progress shares it, a garbage-collection
//!   sweep takes it alone (the protocol is in `reprise_backup::gc`).

use crate::db::{Db, DbError, DbErrorKind, DbResult, Row, Value};
use crate::migrations::{LATEST, POSTGRES as STEPS};
use postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use postgres::{Client, NoTls, Statement};
use reprise_core::{Error, Result};
use std::collections::HashMap;
use std::sync::{mpsc, Mutex};
use std::time::Duration;

/// The (class, key) of the lock every transaction takes.
const TX_LOCK: &str = "1, hashtext(current_schema())";
/// The (class, key) of the lock the daemon of host `$1` holds.
const HOST_LOCK: &str = "2, hashtext(current_schema() || '/' || $1)";
/// The (class, key) of the lock shared by backups, taken alone by sweeps.
const SWEEP_LOCK: &str = "3, hashtext(current_schema())";

enum Op {
    Execute(String, Vec<Value>),
    Query(String, Vec<Value>),
    Batch(String),
    Begin,
    Commit,
    Rollback,
    /// Close the connection for good.
    Close,
}

/// Where the connection stands in a transaction.
#[derive(PartialEq)]
enum InTx {
    No,
    Open,
    /// The connection was lost inside it: the server rolled it back, and
    /// every statement fails until the caller ends it.
    Lost,
}

enum Reply {
    Count(usize),
    Rows(Vec<Row>),
    Done,
}

pub(crate) struct Postgres {
    conn: Mutex<Connection>,
}

/// The daemon's connection and what goes with it. `client` is `None`
/// after a failure of the connection itself: the next statement opens a
/// new one (the client does not always notice a cut socket).
struct Connection {
    config: postgres::Config,
    host: String,
    client: Option<Client>,
    prepared: HashMap<String, Statement>,
    tx: InTx,
    /// Closed for good: the daemon stops.
    closed: bool,
}

/// How to connect, parsed from the catalog's URL with reprise's defaults.
fn parse_url(url: &str) -> Result<postgres::Config> {
    let mut config: postgres::Config = url.parse().map_err(|e| {
        Error::invalid(
            "config_invalid",
            format!("[catalog] url is not a PostgreSQL URL: {e}"),
        )
        .with_source(e)
    })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    if config.get_application_name().is_none() {
        config.application_name("reprise");
    }
    Ok(config)
}

/// Where the catalog is, without the password, for messages.
fn place(config: &postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            postgres::config::Host::Tcp(name) => name.clone(),
            postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_default();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgres://{host}:{port}/{}",
        config.get_dbname().unwrap_or("")
    )
}

fn err(e: postgres::Error) -> DbError {
    let kind = if e.is_closed() {
        DbErrorKind::Unavailable
    } else {
        match e.code() {
            Some(c) if *c == postgres::error::SqlState::UNIQUE_VIOLATION => DbErrorKind::Unique,
            // Connection exceptions, an operator's shutdown, no resources.
            Some(c) if ["08", "53", "57"].contains(&&c.code()[..2]) => DbErrorKind::Unavailable,
            Some(_) => DbErrorKind::Other,
            // No SQL state: the connection or the server failed.
            None => DbErrorKind::Unavailable,
        }
    };
    // The client's own message is only "db error": say the server's.
    let message = match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    };
    DbError::caused_by(kind, e).with_message(message)
}

impl Postgres {
    /// Connect to the catalog at `url` (`postgres://user:password@host:port/db`)
    /// as the daemon of `host`, and migrate it.
    pub(crate) fn connect(url: &str, host: &str) -> Result<Postgres> {
        let config = parse_url(url)?;
        let where_ = place(&config);
        let client =
            outside_runtime(|| claimed_within(&config, host, CLAIM_WAIT)).map_err(|e| {
                match e.kind {
                    DbErrorKind::Unique => Error::conflict(
                        "catalog_in_use",
                        format!(
                        "another reprise daemon serves host '{host}' of the catalog at {where_}: \
                         stop it first, or give this daemon its own [host] name"
                    ),
                    ),
                    _ => Error::unavailable(
                        "catalog_unavailable",
                        format!("cannot connect to the catalog at {where_}: {e}"),
                    )
                    .with_source(e),
                }
            })?;
        let db = Postgres {
            conn: Mutex::new(Connection {
                config,
                host: host.to_string(),
                client: Some(client),
                prepared: HashMap::new(),
                tx: InTx::No,
                closed: false,
            }),
        };
        migrate(&db).map_err(|e| {
            Error::unavailable(
                "catalog_unavailable",
                format!("catalog at {where_}: migration: {e}"),
            )
            .with_source(e)
        })?;
        Ok(db)
    }

    fn ask(&self, op: Op) -> DbResult<Reply> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let conn: &mut Connection = &mut conn;
        outside_runtime(|| conn.run(op))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Closing the client runs its runtime.
        let client = self.conn.get_mut().map_or(None, |c| c.client.take());
        outside_runtime(|| drop(client));
    }
}

/// Run a call of the `postgres` client, which blocks on a runtime of its
/// own and so cannot run inside another: on a worker of a multi-thread
/// runtime through `block_in_place` (the worker's other tasks move to
/// another thread; the caller waits for nothing but the server), on a
/// current-thread runtime on a thread of its own, elsewhere directly.
fn outside_runtime<R: Send>(call: impl FnOnce() -> R + Send) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(call),
        Ok(_) => std::thread::scope(|s| s.spawn(call).join().expect("a catalog call panicked")),
        Err(_) => call(),
    }
}

/// A connection holding the [`HOST_LOCK`] of `host`; a lock held by
/// another daemon is reported as [`DbErrorKind::Unique`].
fn claimed(config: &postgres::Config, host: &str) -> DbResult<Client> {
    let mut client = config.connect(NoTls).map_err(err)?;
    let row = client
        .query_one(
            &format!("SELECT pg_try_advisory_lock({HOST_LOCK})"),
            &[&host],
        )
        .map_err(err)?;
    if row.get::<_, bool>(0) {
        Ok(client)
    } else {
        Err(DbError::new(
            DbErrorKind::Unique,
            "another daemon holds the catalog",
        ))
    }
}

/// How long a starting daemon waits for the catalog's previous daemon to
/// let go (its server process exits just after its connection closes).
const CLAIM_WAIT: Duration = Duration::from_secs(3);

fn claimed_within(config: &postgres::Config, host: &str, wait: Duration) -> DbResult<Client> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        match claimed(config, host) {
            Err(e) if e.kind == DbErrorKind::Unique && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100))
            }
            outcome => return outcome,
        }
    }
}

impl Connection {
    /// One statement (or transaction step), on the caller's thread.
    fn run(&mut self, op: Op) -> DbResult<Reply> {
        if self.closed {
            return Err(DbError::new(
                DbErrorKind::Unavailable,
                "the catalog was closed",
            ));
        }
        if matches!(op, Op::Close) {
            drop(self.client.take());
            self.closed = true;
            return Ok(Reply::Done);
        }
        if self.client.as_ref().is_none_or(Client::is_closed) {
            drop(self.client.take());
            if self.tx == InTx::Open {
                self.tx = InTx::Lost;
            }
            // The old server process may still hold the lock a moment.
            match claimed_within(&self.config, &self.host, CLAIM_WAIT) {
                Ok(c) => {
                    self.client = Some(c);
                    self.prepared.clear();
                }
                Err(mut e) => {
                    if e.kind == DbErrorKind::Unique {
                        e.kind = DbErrorKind::Unavailable;
                    }
                    return Err(e);
                }
            }
        }
        let connection = self.client.as_mut().expect("connected above");
        let lost = || {
            Err(DbError::new(
                DbErrorKind::Unavailable,
                "the connection to the catalog was lost inside a transaction: none of it was committed",
            ))
        };
        match (&op, &self.tx) {
            (Op::Rollback, InTx::Lost) => {
                self.tx = InTx::No;
                Ok(Reply::Done)
            }
            (Op::Commit, InTx::Lost) => {
                self.tx = InTx::No;
                lost()
            }
            (Op::Begin, _) | (_, InTx::No | InTx::Open) => {
                let begins = matches!(op, Op::Begin);
                let ends = matches!(op, Op::Commit | Op::Rollback);
                let outcome = run(connection, &mut self.prepared, op);
                if matches!(&outcome, Err(e) if e.kind == DbErrorKind::Unavailable) {
                    self.client = None;
                }
                if begins && outcome.is_ok() {
                    self.tx = InTx::Open;
                }
                if ends {
                    self.tx = InTx::No;
                }
                outcome
            }
            (_, InTx::Lost) => lost(),
        }
    }
}

fn run(client: &mut Client, prepared: &mut HashMap<String, Statement>, op: Op) -> DbResult<Reply> {
    let (sql, params, query) = match op {
        Op::Batch(sql) => return batch(client, &sql),
        Op::Begin => {
            return batch(
                client,
                &format!("BEGIN; SELECT pg_advisory_xact_lock({TX_LOCK})"),
            )
        }
        Op::Commit => return batch(client, "COMMIT"),
        Op::Rollback => return batch(client, "ROLLBACK"),
        Op::Execute(sql, params) => (sql, params, false),
        Op::Query(sql, params) => (sql, params, true),
        Op::Close => return Ok(Reply::Done),
    };
    let statement = match prepared.get(&sql) {
        Some(s) => s.clone(),
        None => {
            let s = client.prepare(&numbered(&sql)).map_err(err)?;
            prepared.insert(sql, s.clone());
            s
        }
    };
    let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
    if query {
        let rows = client.query(&statement, &params).map_err(err)?;
        rows.iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| value(r, i))
                    .collect::<DbResult<Vec<_>>>()
                    .map(Row)
            })
            .collect::<DbResult<Vec<Row>>>()
            .map(Reply::Rows)
    } else {
        let n = client.execute(&statement, &params).map_err(err)?;
        Ok(Reply::Count(n as usize))
    }
}

fn batch(client: &mut Client, sql: &str) -> DbResult<Reply> {
    client.batch_execute(sql).map(|_| Reply::Done).map_err(err)
}

/// `?1` → `$1`, outside quoted strings.
fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quoted = false;
    for c in sql.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                out.push(c);
            }
            '?' if !quoted => out.push('$'),
            _ => out.push(c),
        }
    }
    out
}

fn value(row: &postgres::Row, i: usize) -> DbResult<Value> {
    let ty = row.columns()[i].type_();
    let decode = |e: postgres::Error| DbError::caused_by(DbErrorKind::Decode, e);
    let v = if *ty == Type::BOOL {
        row.try_get::<_, Option<bool>>(i)
            .map_err(decode)?
            .map(|b| Value::Int(i64::from(b)))
    } else if *ty == Type::INT8 {
        row.try_get::<_, Option<i64>>(i)
            .map_err(decode)?
            .map(Value::Int)
    } else if *ty == Type::INT4 {
        row.try_get::<_, Option<i32>>(i)
            .map_err(decode)?
            .map(|n| Value::Int(n.into()))
    } else if *ty == Type::INT2 {
        row.try_get::<_, Option<i16>>(i)
            .map_err(decode)?
            .map(|n| Value::Int(n.into()))
    } else if *ty == Type::BYTEA {
        row.try_get::<_, Option<Vec<u8>>>(i)
            .map_err(decode)?
            .map(Value::Blob)
    } else if [Type::TEXT, Type::VARCHAR, Type::NAME, Type::BPCHAR].contains(ty) {
        row.try_get::<_, Option<String>>(i)
            .map_err(decode)?
            .map(Value::Text)
    } else {
        return Err(DbError::new(
            DbErrorKind::Decode,
            format!("column {i} is a {ty}, a type the catalog does not read"),
        ));
    };
    Ok(v.unwrap_or(Value::Null))
}

/// A value as the type the server expects for its parameter.
impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(n) if *ty == Type::INT8 => n.to_sql(ty, out),
            Value::Int(n) if *ty == Type::INT4 => i32::try_from(*n)?.to_sql(ty, out),
            Value::Int(n) if *ty == Type::INT2 => i16::try_from(*n)?.to_sql(ty, out),
            Value::Int(n) if *ty == Type::BOOL => (*n != 0).to_sql(ty, out),
            Value::Int(n) if *ty == Type::TEXT || *ty == Type::VARCHAR => {
                n.to_string().to_sql(ty, out)
            }
            Value::Text(s) => s.as_str().to_sql(ty, out),
            Value::Blob(b) => b.as_slice().to_sql(ty, out),
            Value::Int(_) => Err(format!("an integer where the statement wants a {ty}").into()),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

impl Db for Postgres {
    fn execute(&self, sql: &str, params: &[Value]) -> DbResult<usize> {
        match self.ask(Op::Execute(sql.into(), params.to_vec()))? {
            Reply::Count(n) => Ok(n),
            _ => Err(DbError::new(DbErrorKind::Other, "unexpected reply")),
        }
    }

    fn query(&self, sql: &str, params: &[Value]) -> DbResult<Vec<Row>> {
        match self.ask(Op::Query(sql.into(), params.to_vec()))? {
            Reply::Rows(rows) => Ok(rows),
            _ => Err(DbError::new(DbErrorKind::Other, "unexpected reply")),
        }
    }

    fn execute_batch(&self, sql: &str) -> DbResult<()> {
        self.ask(Op::Batch(sql.into())).map(|_| ())
    }

    fn begin(&self) -> DbResult<()> {
        self.ask(Op::Begin).map(|_| ())
    }

    fn commit(&self) -> DbResult<()> {
        self.ask(Op::Commit).map(|_| ())
    }

    fn rollback(&self) -> DbResult<()> {
        self.ask(Op::Rollback).map(|_| ())
    }

    fn schema_version(&self) -> DbResult<u32> {
        let rows = self.query("SELECT version FROM reprise_schema", &[])?;
        let v: i64 = rows.first().map(|r| r.get(0)).transpose()?.unwrap_or(0);
        Ok(v as u32)
    }

    fn engine(&self) -> &'static str {
        "postgres"
    }

    fn close(&self) {
        // The connection is closed (and the lock released) when this
        // returns.
        let _ = self.ask(Op::Close);
    }
}

/// The region's sweep lock ([`SWEEP_LOCK`]), on a connection of its own
/// so that waiting for it never holds up the catalog's statements. Its
/// calls block: the caller runs them off the async runtime.
///
/// Each connection has a *generation*; a lock taken under one generation
/// is held exactly as long as that connection lives. While it holds the
/// lock the thread checks its connection every second, so that a cut is
/// noticed (and the generation moves on) even when nobody asks.
pub struct SweepLock {
    requests: mpsc::Sender<(LockOp, mpsc::Sender<DbResult<u64>>)>,
}

enum LockOp {
    Share,
    Unshare,
    Exclusive,
    Unexclusive,
    /// Whether the lock taken under this generation is still held.
    Check(u64),
}

impl SweepLock {
    pub(crate) fn connect(url: &str) -> Result<SweepLock> {
        let config = parse_url(url)?;
        let (requests, incoming) = mpsc::channel();
        std::thread::Builder::new()
            .name("catalog-sweep-lock".into())
            .spawn(move || hold_sweep_lock(config, incoming))
            .map_err(|e| Error::internal(format!("sweep lock thread: {e}")).with_source(e))?;
        Ok(SweepLock { requests })
    }

    fn ask(&self, op: LockOp) -> DbResult<u64> {
        let (reply, answer) = mpsc::channel();
        let stopped = || DbError::new(DbErrorKind::Unavailable, "the sweep lock's thread stopped");
        self.requests.send((op, reply)).map_err(|_| stopped())?;
        answer.recv().map_err(|_| stopped())?
    }

    /// Share the lock (wait while a sweep holds it); the generation it is
    /// held under.
    pub fn share(&self) -> DbResult<u64> {
        self.ask(LockOp::Share)
    }

    /// Stop sharing it (does not wait).
    pub fn unshare(&self) {
        let (reply, _) = mpsc::channel();
        let _ = self.requests.send((LockOp::Unshare, reply));
    }

    /// Take it alone (wait until no other daemon shares it).
    pub fn exclusive(&self) -> DbResult<u64> {
        self.ask(LockOp::Exclusive)
    }

    /// Let go of it alone (does not wait).
    pub fn unexclusive(&self) {
        let (reply, _) = mpsc::channel();
        let _ = self.requests.send((LockOp::Unexclusive, reply));
    }

    /// Whether the lock taken under `generation` has been held without a
    /// break until now (a round trip to the server).
    pub fn still_held(&self, generation: u64) -> bool {
        self.ask(LockOp::Check(generation)).is_ok()
    }
}

fn hold_sweep_lock(
    config: postgres::Config,
    requests: mpsc::Receiver<(LockOp, mpsc::Sender<DbResult<u64>>)>,
) {
    let mut client: Option<Client> = None;
    let mut generation = 0u64;
    // How many ways it is held: shared (0/1) and alone (0/1).
    let (mut shared, mut alone) = (false, false);
    let lost = |client: &mut Option<Client>, shared: &mut bool, alone: &mut bool| {
        *client = None;
        *shared = false;
        *alone = false;
    };
    loop {
        let next = if shared || alone {
            match requests.recv_timeout(Duration::from_secs(1)) {
                Ok(request) => Some(request),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        } else {
            match requests.recv() {
                Ok(request) => Some(request),
                Err(_) => return,
            }
        };
        let alive = |client: &mut Option<Client>| {
            client
                .as_mut()
                .is_some_and(|c| c.simple_query("SELECT 1").is_ok())
        };
        let Some((op, reply)) = next else {
            if !alive(&mut client) {
                lost(&mut client, &mut shared, &mut alone);
            }
            continue;
        };
        let mut take = |sql: &str, client: &mut Option<Client>| -> DbResult<u64> {
            if client.as_ref().is_none_or(Client::is_closed) {
                *client = Some(config.connect(NoTls).map_err(err)?);
                generation += 1;
            }
            let c = client.as_mut().expect("connected above");
            c.batch_execute(sql).map_err(err)?;
            Ok(generation)
        };
        let outcome = match op {
            LockOp::Share => take(
                &format!("SELECT pg_advisory_lock_shared({SWEEP_LOCK})"),
                &mut client,
            )
            .inspect(|_| shared = true),
            LockOp::Exclusive => take(
                &format!("SELECT pg_advisory_lock({SWEEP_LOCK})"),
                &mut client,
            )
            .inspect(|_| alone = true),
            LockOp::Unshare | LockOp::Unexclusive => {
                let (flag, sql) = match op {
                    LockOp::Unshare => (&mut shared, "pg_advisory_unlock_shared"),
                    _ => (&mut alone, "pg_advisory_unlock"),
                };
                if *flag {
                    *flag = false;
                    if let Some(c) = client.as_mut() {
                        let _ = c.batch_execute(&format!("SELECT {sql}({SWEEP_LOCK})"));
                    }
                }
                Ok(generation)
            }
            LockOp::Check(g) => {
                if g == generation && (shared || alone) && alive(&mut client) {
                    Ok(g)
                } else {
                    Err(DbError::new(
                        DbErrorKind::Unavailable,
                        "the sweep lock was lost with its connection",
                    ))
                }
            }
        };
        if matches!(&outcome, Err(e) if e.kind == DbErrorKind::Unavailable) {
            lost(&mut client, &mut shared, &mut alone);
        }
        let _ = reply.send(outcome);
    }
}

/// Bring the schema to [`LATEST`], each step in a transaction under the
/// catalog's lock: daemons starting together migrate once.
fn migrate(db: &Postgres) -> DbResult<()> {
    db.execute_batch("CREATE TABLE IF NOT EXISTS reprise_schema (version BIGINT NOT NULL)")?;
    loop {
        db.begin()?;
        let step = (|| {
            let current = db.schema_version()?;
            if current > LATEST {
                return Err(DbError::new(
                    DbErrorKind::Other,
                    format!(
                        "the catalog has schema version {current}, newer than this reprise \
                         ({LATEST}): run a newer reprise"
                    ),
                ));
            }
            if current == LATEST {
                return Ok(false);
            }
            // A new catalog starts at the first step with tables in it.
            let next = STEPS
                .iter()
                .enumerate()
                .skip(current as usize)
                .find(|(_, s)| !s.trim().is_empty())
                .map(|(i, _)| i as u32 + 1)
                .unwrap_or(LATEST);
            db.execute_batch(STEPS[next as usize - 1])?;
            db.execute("DELETE FROM reprise_schema", &[])?;
            db.execute(
                "INSERT INTO reprise_schema (version) VALUES (?1)",
                &[Value::Int(next.into())],
            )?;
            Ok(true)
        })();
        match step {
            Ok(true) => db.commit()?,
            Ok(false) => {
                db.commit()?;
                return Ok(());
            }
            Err(e) => {
                let _ = db.rollback();
                return Err(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn parameters_are_numbered_outside_quotes() {
        assert_eq!(
            super::numbered("SELECT '?1', x FROM t WHERE a = ?1 AND b = ?12"),
            "SELECT '?1', x FROM t WHERE a = $1 AND b = $12"
        );
    }
}
