//! The error every reprise boundary speaks: a kind to branch on, a stable
//! machine-readable code, and a message for people that names the problem.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What a caller can do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The named resource does not exist (or belongs to another account).
    NotFound,
    /// The request itself is wrong: fix it and retry.
    Invalid,
    /// The request is valid but the resource's state forbids it now.
    Conflict,
    /// No API key, or one that matches no account.
    Unauthorized,
    /// The key is valid but the account may not do this.
    Forbidden,
    /// Something outside reprise (QEMU, the host, storage) is missing or
    /// failing; retrying later may help (the one retryable kind).
    Unavailable,
    /// Stored data is damaged (an object in the region's store, a qcow2
    /// file's tables): retrying will not help; use another copy.
    Corrupt,
    /// A bug or an unexpected failure inside reprise.
    Internal,
}

impl ErrorKind {
    /// The HTTP status for this kind; the only place where it is chosen.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::NotFound => 404,
            ErrorKind::Invalid => 400,
            ErrorKind::Conflict => 409,
            ErrorKind::Unauthorized => 401,
            ErrorKind::Forbidden => 403,
            ErrorKind::Unavailable => 503,
            ErrorKind::Corrupt | ErrorKind::Internal => 500,
        }
    }

    /// Whether the same request may succeed later.
    pub fn is_retryable(self) -> bool {
        self == ErrorKind::Unavailable
    }
}

/// An error with a kind, a stable code (`volume_not_found`, `size_invalid`…)
/// and a message that names the problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error, JsonSchema)]
#[error("{message}")]
pub struct Error {
    pub kind: ErrorKind,
    pub code: String,
    pub message: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, code: impl Into<String>, message: impl Into<String>) -> Self {
        Error {
            kind,
            code: code.into(),
            message: message.into(),
        }
    }

    /// `{kind}_not_found`, e.g. "volume 'db' not found".
    pub fn not_found(resource: &str, name: &str) -> Self {
        Error::new(
            ErrorKind::NotFound,
            format!("{resource}_not_found"),
            format!("{resource} '{name}' not found"),
        )
    }

    pub fn invalid(code: impl Into<String>, message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Invalid, code, message)
    }

    pub fn conflict(code: impl Into<String>, message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Conflict, code, message)
    }

    pub fn unavailable(code: impl Into<String>, message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Unavailable, code, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Internal, "internal", message)
    }

    /// The same error with another code.
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = code.into();
        self
    }

    /// Prefix the message with what was being done, keeping kind and code.
    pub fn context(mut self, what: impl std::fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }
}

/// The JSON body of every API error: `{"error": {"code", "message", "kind"}}`.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    pub error: Error,
}
