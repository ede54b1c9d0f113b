//! The catalog's SQL, apart from the engine that runs it: the catalog's
//! modules write their statements once against [`Db`], and each engine
//! (SQLite, embedded; PostgreSQL, for a region) runs them.
//!
//! The common dialect, kept by every statement in this crate:
//! - parameters are numbered, `?1`, `?2`… (PostgreSQL sees `$1`, `$2`…);
//! - values are integers (64-bit), text, blobs or NULL; booleans are
//!   integers 0/1 on SQLite and `BOOLEAN` on PostgreSQL, converted both
//!   ways here; timestamps are text in one fixed format ([`ToValue`] for
//!   `DateTime`), so text order is time order;
//! - `ON CONFLICT … DO NOTHING / DO UPDATE SET x = excluded.x` for upserts;
//!   `rowid` is SQLite's implicit column and a `BIGSERIAL` column of that
//!   name on PostgreSQL, for insertion order;
//! - sums are wrapped in `CAST(… AS BIGINT)` (PostgreSQL sums to NUMERIC).

use chrono::{DateTime, Utc};
use std::ops::Deref;
use uuid::Uuid;

/// A value going into or coming out of a statement.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
    Blob(Vec<u8>),
}

/// Anything a statement takes as a parameter.
pub trait ToValue {
    fn to_value(&self) -> Value;
}

impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Value {
        (**self).to_value()
    }
}

impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value {
        self.as_ref().map_or(Value::Null, T::to_value)
    }
}

impl ToValue for str {
    fn to_value(&self) -> Value {
        Value::Text(self.to_string())
    }
}

impl ToValue for String {
    fn to_value(&self) -> Value {
        Value::Text(self.clone())
    }
}

impl ToValue for [u8] {
    fn to_value(&self) -> Value {
        Value::Blob(self.to_vec())
    }
}

impl ToValue for i64 {
    fn to_value(&self) -> Value {
        Value::Int(*self)
    }
}

impl ToValue for u32 {
    fn to_value(&self) -> Value {
        Value::Int(i64::from(*self))
    }
}

impl ToValue for bool {
    fn to_value(&self) -> Value {
        Value::Int(i64::from(*self))
    }
}

impl ToValue for Uuid {
    fn to_value(&self) -> Value {
        Value::Text(self.to_string())
    }
}

/// The timestamp format of every catalog row (SQLite's, and what older
/// catalogs hold): `2026-12-03 09:11:02.123456+00:00`.
pub const TIME_FORMAT: &str = "%F %T%.f%:z";

impl ToValue for DateTime<Utc> {
    fn to_value(&self) -> Value {
        Value::Text(self.format(TIME_FORMAT).to_string())
    }
}

/// `params![a, b]`: the parameters of a statement, by reference.
macro_rules! params {
    ($($p:expr),* $(,)?) => {
        &[$($crate::db::ToValue::to_value(&$p)),*][..]
    };
}
pub(crate) use params;

/// One row of a result.
#[derive(Debug, Clone)]
pub struct Row(pub Vec<Value>);

/// What a column can be read as.
pub trait FromValue: Sized {
    /// `None`: the value is not of this type.
    fn from_value(v: &Value) -> Option<Self>;
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Null => Some(None),
            v => T::from_value(v).map(Some),
        }
    }
}

impl FromValue for i64 {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Int(n) => Some(*n),
            _ => None,
        }
    }
}

impl FromValue for u32 {
    fn from_value(v: &Value) -> Option<Self> {
        i64::from_value(v).and_then(|n| u32::try_from(n).ok())
    }
}

impl FromValue for bool {
    fn from_value(v: &Value) -> Option<Self> {
        i64::from_value(v).map(|n| n != 0)
    }
}

impl FromValue for String {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Text(s) => Some(s.clone()),
            _ => None,
        }
    }
}

impl FromValue for Vec<u8> {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Blob(b) => Some(b.clone()),
            _ => None,
        }
    }
}

impl FromValue for DateTime<Utc> {
    fn from_value(v: &Value) -> Option<Self> {
        let text = String::from_value(v)?;
        // The space form is RFC 3339 with a `T`; old rows may lack the offset.
        let rfc = text.replacen(' ', "T", 1);
        DateTime::parse_from_rfc3339(&rfc)
            .map(|t| t.with_timezone(&Utc))
            .ok()
            .or_else(|| {
                chrono::NaiveDateTime::parse_from_str(&text, "%F %T%.f")
                    .ok()
                    .map(|t| t.and_utc())
            })
    }
}

impl Row {
    /// Column `i` as a `T`; a NULL or another type is a decoding error.
    pub fn get<T: FromValue>(&self, i: usize) -> DbResult<T> {
        let v = self
            .0
            .get(i)
            .ok_or_else(|| DbError::new(DbErrorKind::Decode, format!("no column {i}")))?;
        T::from_value(v).ok_or_else(|| {
            DbError::new(
                DbErrorKind::Decode,
                format!(
                    "column {i} holds {v:?}, not a {}",
                    std::any::type_name::<T>()
                ),
            )
        })
    }
}

/// What went wrong in the engine, as much as the catalog acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbErrorKind {
    /// A query for one row found none.
    NoRows,
    /// A `UNIQUE` constraint refused the write.
    Unique,
    /// The engine cannot be reached (a PostgreSQL connection lost).
    Unavailable,
    /// A value was not of the type its reader expects.
    Decode,
    Other,
}

#[derive(Debug)]
pub struct DbError {
    pub kind: DbErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

pub type DbResult<T> = std::result::Result<T, DbError>;

impl DbError {
    pub fn new(kind: DbErrorKind, message: impl Into<String>) -> DbError {
        DbError {
            kind,
            message: message.into(),
            source: None,
        }
    }

    pub fn caused_by(
        kind: DbErrorKind,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> DbError {
        DbError {
            kind,
            message: cause.to_string(),
            source: Some(Box::new(cause)),
        }
    }
}

impl DbError {
    pub fn with_message(mut self, message: String) -> DbError {
        self.message = message;
        self
    }
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DbError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// `query_row(…).optional()`: no row is `None`, not an error.
pub trait Optional<T> {
    fn optional(self) -> DbResult<Option<T>>;
}

impl<T> Optional<T> for DbResult<T> {
    fn optional(self) -> DbResult<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.kind == DbErrorKind::NoRows => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A connection to one engine. Statements are short; the catalog holds
/// its connection behind a mutex.
pub trait Db {
    /// Run a statement; the number of rows it changed.
    fn execute(&self, sql: &str, params: &[Value]) -> DbResult<usize>;
    /// Run a query; its rows.
    fn query(&self, sql: &str, params: &[Value]) -> DbResult<Vec<Row>>;
    /// Run several statements without parameters (migrations).
    fn execute_batch(&self, sql: &str) -> DbResult<()>;
    /// Start a transaction. Transactions are serialised: one at a time
    /// changes the catalog (SQLite's `BEGIN IMMEDIATE`; on PostgreSQL a
    /// transaction-scoped advisory lock), so a check and the write it
    /// allows are atomic across every daemon.
    fn begin(&self) -> DbResult<()>;
    fn commit(&self) -> DbResult<()>;
    fn rollback(&self) -> DbResult<()>;
    /// The schema version the catalog is at (see `migrations`).
    fn schema_version(&self) -> DbResult<u32>;
    /// Which engine: `sqlite` or `postgres`.
    fn engine(&self) -> &'static str;
    /// Let the catalog go (PostgreSQL: close the connection, and with it
    /// the daemon's lock); later statements fail as unavailable.
    fn close(&self) {}
}

/// What every connection offers on top of [`Db`].
pub trait DbExt: Db {
    /// The first row of a query, mapped; [`DbErrorKind::NoRows`] if none.
    fn query_row<T>(
        &self,
        sql: &str,
        params: &[Value],
        map: impl FnOnce(&Row) -> DbResult<T>,
    ) -> DbResult<T> {
        let rows = self.query(sql, params)?;
        let row = rows
            .first()
            .ok_or_else(|| DbError::new(DbErrorKind::NoRows, "no row"))?;
        map(row)
    }

    /// Every row of a query, mapped.
    fn query_map<T>(
        &self,
        sql: &str,
        params: &[Value],
        map: impl FnMut(&Row) -> DbResult<T>,
    ) -> DbResult<Vec<T>> {
        self.query(sql, params)?.iter().map(map).collect()
    }

    /// A transaction: committed by [`Tx::commit`], rolled back if dropped.
    fn transaction(&self) -> DbResult<Tx<'_, Self>> {
        self.begin()?;
        Ok(Tx {
            db: self,
            open: true,
        })
    }
}

impl<D: Db + ?Sized> DbExt for D {}

pub struct Tx<'a, D: Db + ?Sized> {
    db: &'a D,
    open: bool,
}

impl<D: Db + ?Sized> Tx<'_, D> {
    pub fn commit(mut self) -> DbResult<()> {
        self.open = false;
        self.db.commit()
    }
}

impl<D: Db + ?Sized> Drop for Tx<'_, D> {
    fn drop(&mut self) {
        if self.open {
            let _ = self.db.rollback();
        }
    }
}

/// A transaction, a boxed connection and a locked one are connections.
macro_rules! delegate {
    ($via:ident) => {
        fn execute(&self, sql: &str, params: &[Value]) -> DbResult<usize> {
            self.$via().execute(sql, params)
        }
        fn query(&self, sql: &str, params: &[Value]) -> DbResult<Vec<Row>> {
            self.$via().query(sql, params)
        }
        fn execute_batch(&self, sql: &str) -> DbResult<()> {
            self.$via().execute_batch(sql)
        }
        fn begin(&self) -> DbResult<()> {
            self.$via().begin()
        }
        fn commit(&self) -> DbResult<()> {
            self.$via().commit()
        }
        fn rollback(&self) -> DbResult<()> {
            self.$via().rollback()
        }
        fn schema_version(&self) -> DbResult<u32> {
            self.$via().schema_version()
        }
        fn engine(&self) -> &'static str {
            self.$via().engine()
        }
        fn close(&self) {
            self.$via().close()
        }
    };
}

impl<D: Db + ?Sized> Tx<'_, D> {
    fn inner(&self) -> &D {
        self.db
    }
}

impl<D: Db + ?Sized> Db for Tx<'_, D> {
    delegate!(inner);
}

impl<D: Db + ?Sized> Db for Box<D> {
    delegate!(as_ref);
}

impl<D: Db + ?Sized> Db for std::sync::MutexGuard<'_, D> {
    delegate!(deref);
}

/// `a, b, c` as the SQL list `'a', 'b', 'c'`, for names the code itself
/// spells (states of a lifecycle table, never user input).
pub fn literal_list(names: &[&'static str]) -> String {
    names
        .iter()
        .map(|n| {
            debug_assert!(n.chars().all(|c| c.is_ascii_alphanumeric()));
            format!("'{n}'")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `?first, ?first+1, …` for `n` parameters.
pub fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}
