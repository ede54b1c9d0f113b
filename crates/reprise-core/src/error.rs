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
/// and a message that names the problem. The failure underneath (an I/O,
/// SQLite, S3 or JSON error) is kept as its `source` for the logs; the
/// wire format ([`WireError`]) carries only kind, code and message.
#[derive(Debug, Clone)]
pub struct Error {
    pub kind: ErrorKind,
    pub code: String,
    pub message: String,
    source: Option<Cause>,
}

/// An error as the API shows it (and as a job's row keeps it): what a
/// client acts on, nothing of the host. Made from an [`Error`] at the edge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "Error")]
pub struct WireError {
    pub kind: ErrorKind,
    /// Stable machine-readable code, e.g. `volume_not_found`.
    pub code: String,
    pub message: String,
}

impl From<&Error> for WireError {
    fn from(e: &Error) -> WireError {
        WireError {
            kind: e.kind,
            code: e.code.clone(),
            message: e.message.clone(),
        }
    }
}

impl From<WireError> for Error {
    fn from(w: WireError) -> Error {
        Error::new(w.kind, w.code, w.message)
    }
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// A cause, shared so that errors stay cheap to clone.
type Cause = std::sync::Arc<dyn std::error::Error + Send + Sync>;

impl PartialEq for Error {
    /// Errors are equal when a caller would act on them alike.
    fn eq(&self, other: &Error) -> bool {
        (self.kind, &self.code, &self.message) == (other.kind, &other.code, &other.message)
    }
}

impl Eq for Error {}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|c| c as &(dyn std::error::Error + 'static))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, code: impl Into<String>, message: impl Into<String>) -> Self {
        Error {
            kind,
            code: code.into(),
            message: message.into(),
            source: None,
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

    /// Keep the failure underneath, for the logs.
    pub fn with_source(mut self, cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(std::sync::Arc::new(cause));
        self
    }

    /// The message and every cause under it, for the logs:
    /// `message (caused by: cause: its cause)`.
    pub fn chain(&self) -> String {
        let mut causes = Vec::new();
        let mut next = std::error::Error::source(self);
        while let Some(cause) = next {
            causes.push(cause.to_string());
            next = cause.source();
        }
        if causes.is_empty() {
            self.message.clone()
        } else {
            format!("{} (caused by: {})", self.message, causes.join(": "))
        }
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
    pub error: WireError,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cause_is_kept_for_the_logs_and_never_sent() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied");
        let e = Error::unavailable("io_error", "cannot open /x").with_source(io);
        assert_eq!(e.chain(), "cannot open /x (caused by: denied)");
        assert!(std::error::Error::source(&e).is_some());
        let wire = serde_json::to_value(ErrorBody { error: (&e).into() }).unwrap();
        assert_eq!(
            wire,
            serde_json::json!({"error": {"kind": "unavailable", "code": "io_error", "message": "cannot open /x"}})
        );
        let back: ErrorBody = serde_json::from_value(wire).unwrap();
        assert_eq!(Error::from(back.error), e, "equal without the cause");
        assert_eq!(Error::internal("x").chain(), "x");
    }
}
