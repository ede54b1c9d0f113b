//! Pure domain logic of reprise, shared by the daemon, the CLI and the tests.
//!
//! Nothing here does I/O: it holds the resource types that travel over the
//! HTTP API, their states and the rules that move them, the parsing of sizes
//! and names, and the one error type whose [`ErrorKind`] every caller
//! branches on (the HTTP status is derived from the kind in exactly one
//! place, [`ErrorKind::http_status`]).

pub mod age;
pub mod codes;
pub mod defaults;
pub mod error;
pub mod lifecycle;
pub mod model;
pub mod name;
pub mod plan;
pub mod retention;
pub mod schedule;
pub mod size;

pub use error::{Error, ErrorKind, Result};
