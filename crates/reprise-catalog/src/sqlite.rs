//! The embedded engine: one SQLite file (WAL, foreign keys on), one
//! connection, statements cached by their text.

use crate::db::{Db, DbError, DbErrorKind, DbResult, Row, Value};
use crate::migrations::{LATEST, SQLITE as STEPS};
use reprise_core::{Error, Result};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::Connection;
use std::path::Path;

pub(crate) struct Sqlite(Connection);

fn err(e: rusqlite::Error) -> DbError {
    let kind = match &e {
        rusqlite::Error::QueryReturnedNoRows => DbErrorKind::NoRows,
        rusqlite::Error::SqliteFailure(f, msg)
            if f.code == rusqlite::ErrorCode::ConstraintViolation
                && msg.as_deref().unwrap_or("").contains("UNIQUE") =>
        {
            DbErrorKind::Unique
        }
        _ => DbErrorKind::Other,
    };
    DbError::caused_by(kind, e)
}

/// The catalog cannot be opened or migrated: the daemon cannot start.
fn open_err(what: &str) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |e| {
        Error::unavailable("catalog_unavailable", format!("catalog: {what}: {e}")).with_source(e)
    }
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Int(n) => ValueRef::Integer(*n),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

fn value(v: ValueRef<'_>) -> DbResult<Value> {
    Ok(match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(n) => Value::Int(n),
        ValueRef::Text(t) => Value::Text(
            String::from_utf8(t.to_vec())
                .map_err(|e| DbError::caused_by(DbErrorKind::Decode, e))?,
        ),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        ValueRef::Real(r) => {
            return Err(DbError::new(
                DbErrorKind::Decode,
                format!("a real number ({r}) where the catalog keeps none"),
            ))
        }
    })
}

impl Sqlite {
    pub(crate) fn open(path: &Path) -> Result<Sqlite> {
        let conn = Connection::open(path).map_err(|e| {
            Error::unavailable(
                "catalog_unavailable",
                format!("cannot open catalog {}: {e}", path.display()),
            )
            .with_source(e)
        })?;
        Self::with_connection(conn)
    }

    pub(crate) fn in_memory() -> Result<Sqlite> {
        Self::with_connection(Connection::open_in_memory().map_err(open_err("open"))?)
    }

    fn with_connection(mut conn: Connection) -> Result<Sqlite> {
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err("journal_mode"))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err("foreign_keys"))?;
        // FULL: a commit is on disk when it returns (NORMAL may lose the
        // last commits at a power cut, and a state the user saw with them).
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err("synchronous"))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_err("busy_timeout"))?;
        migrate(&mut conn)?;
        Ok(Sqlite(conn))
    }
}

impl Db for Sqlite {
    fn execute(&self, sql: &str, params: &[Value]) -> DbResult<usize> {
        let mut stmt = self.0.prepare_cached(sql).map_err(err)?;
        stmt.execute(rusqlite::params_from_iter(params))
            .map_err(err)
    }

    fn query(&self, sql: &str, params: &[Value]) -> DbResult<Vec<Row>> {
        let mut stmt = self.0.prepare_cached(sql).map_err(err)?;
        let columns = stmt.column_count();
        let mut rows = stmt
            .query(rusqlite::params_from_iter(params))
            .map_err(err)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(err)? {
            let values = (0..columns)
                .map(|i| value(r.get_ref(i).map_err(err)?))
                .collect::<DbResult<Vec<Value>>>()?;
            out.push(Row(values));
        }
        Ok(out)
    }

    fn execute_batch(&self, sql: &str) -> DbResult<()> {
        self.0.execute_batch(sql).map_err(err)
    }

    fn begin(&self) -> DbResult<()> {
        self.0.execute_batch("BEGIN IMMEDIATE").map_err(err)
    }

    fn commit(&self) -> DbResult<()> {
        self.0.execute_batch("COMMIT").map_err(err)
    }

    fn rollback(&self) -> DbResult<()> {
        self.0.execute_batch("ROLLBACK").map_err(err)
    }

    fn schema_version(&self) -> DbResult<u32> {
        self.0
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(err)
    }

    fn engine(&self) -> &'static str {
        "sqlite"
    }
}

pub(crate) fn migrate(conn: &mut Connection) -> Result<()> {
    let current: u32 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(open_err("user_version"))?;
    if current > LATEST {
        return Err(Error::unavailable(
            "catalog_too_new",
            format!(
                "the catalog has schema version {current}, newer than this reprise ({LATEST}): \
                 run a newer reprise"
            ),
        ));
    }
    if current == LATEST {
        return Ok(());
    }
    // Steps that rebuild a table need foreign keys off, and the pragma is
    // a no-op inside a transaction; each step checks them before commit.
    conn.pragma_update(None, "foreign_keys", "OFF")
        .map_err(open_err("migration"))?;
    let migrated = (|| {
        for (i, step) in STEPS.iter().enumerate().skip(current as usize) {
            let version = i as u32 + 1;
            let tx = conn.transaction().map_err(open_err("migration"))?;
            tx.execute_batch(step).map_err(open_err("migration"))?;
            let broken: i64 = tx
                .query_row("SELECT COUNT(*) FROM pragma_foreign_key_check", [], |r| {
                    r.get(0)
                })
                .map_err(open_err("migration"))?;
            if broken > 0 {
                return Err(Error::internal(format!(
                    "catalog migration {version} would break {broken} references"
                )));
            }
            tx.pragma_update(None, "user_version", version)
                .map_err(open_err("migration"))?;
            tx.commit().map_err(open_err("migration"))?;
        }
        Ok(())
    })();
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(open_err("migration"))?;
    migrated
}
