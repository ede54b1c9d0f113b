//! CloudStack's JSON envelopes, errors, times and pages.
//!
//! Every answer is one object under `<command lower-cased>response`. A
//! list is `{"count": N, "<item>": [...]}`, `count` being the total across
//! pages (clients page until they hold `count` items); an empty list is
//! `{}`. An error is `{"uuidList": [], "errorcode", "cserrorcode",
//! "errortext"}`, `errorcode` being the HTTP status it is sent with.

use chrono::{DateTime, Utc};
use reprise_core::{Error, ErrorKind};
use serde_json::{json, Map, Value};

/// The key an answer to `command` goes under.
pub fn response_key(command: &str) -> String {
    format!("{}response", command.to_lowercase())
}

/// `value` under the answer's key.
pub fn envelope(command: &str, value: Value) -> Value {
    let mut out = Map::new();
    out.insert(response_key(command), value);
    Value::Object(out)
}

/// A list answer: `{}` when empty.
pub fn list(item: &str, items: Vec<Value>, count: usize) -> Value {
    if count == 0 {
        return json!({});
    }
    json!({ "count": count, item: items })
}

/// A time as CloudStack writes it: `2026-12-03T10:00:00+0000`.
pub fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%z").to_string()
}

/// CloudStack's exception codes (`cserrorcode`).
pub mod cs_code {
    pub const INVALID_PARAMETER: u32 = 4350;
    pub const PERMISSION_DENIED: u32 = 4365;
    pub const RESOURCE_ALLOCATION: u32 = 4370;
    pub const RESOURCE_IN_USE: u32 = 4375;
    pub const RESOURCE_UNAVAILABLE: u32 = 4380;
    pub const SERVER: u32 = 9999;
}

/// An error as CloudStack answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsError {
    /// CloudStack's `ApiErrorCode`, also the HTTP status.
    pub errorcode: u16,
    pub cserrorcode: u32,
    pub errortext: String,
}

impl CsError {
    /// 431: a parameter is missing, wrong, or names nothing the caller has.
    pub fn invalid(text: impl Into<String>) -> CsError {
        CsError {
            errorcode: 431,
            cserrorcode: cs_code::INVALID_PARAMETER,
            errortext: text.into(),
        }
    }

    /// 401: no key, a key that names no account, or a bad signature.
    pub fn unauthorized(text: impl Into<String>) -> CsError {
        CsError {
            errorcode: 401,
            cserrorcode: cs_code::SERVER,
            errortext: text.into(),
        }
    }

    /// 432: a command reprise does not serve.
    pub fn unsupported(command: &str) -> CsError {
        CsError {
            errorcode: 432,
            cserrorcode: cs_code::SERVER,
            errortext: format!(
                "The given command '{command}' does not exist or it is not available for user (see listApis)"
            ),
        }
    }

    /// The CloudStack error for a reprise error: its message is kept, its
    /// code named in it.
    pub fn from_error(e: &Error) -> CsError {
        let limit = e.code.contains("limit") || e.code.contains("quota");
        let (errorcode, cserrorcode) = match e.kind {
            ErrorKind::NotFound | ErrorKind::Invalid => (431, cs_code::INVALID_PARAMETER),
            ErrorKind::Forbidden if limit => (532, cs_code::RESOURCE_ALLOCATION),
            ErrorKind::Forbidden => (531, cs_code::PERMISSION_DENIED),
            ErrorKind::Conflict => (536, cs_code::RESOURCE_IN_USE),
            ErrorKind::Unauthorized => (401, cs_code::SERVER),
            ErrorKind::Unavailable => (530, cs_code::RESOURCE_UNAVAILABLE),
            _ => (530, cs_code::SERVER),
        };
        CsError {
            errorcode,
            cserrorcode,
            errortext: format!("{} ({})", e.message, e.code),
        }
    }

    /// The error's body (under the command's key).
    pub fn body(&self) -> Value {
        json!({
            "uuidList": [],
            "errorcode": self.errorcode,
            "cserrorcode": self.cserrorcode,
            "errortext": self.errortext,
        })
    }
}

/// One page of `items` (`page` from 1) and the total, as CloudStack pages:
/// `page` needs `pagesize`; no `page` is everything.
pub fn page<T>(
    items: Vec<T>,
    page: Option<&str>,
    pagesize: Option<&str>,
) -> Result<(Vec<T>, usize), CsError> {
    let count = items.len();
    let number = |name: &str, v: &str| {
        v.parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| CsError::invalid(format!("{name} '{v}' is not a whole number above 0")))
    };
    let size = pagesize.map(|s| number("pagesize", s)).transpose()?;
    let Some(page) = page.map(|p| number("page", p)).transpose()? else {
        return Ok((items, count));
    };
    let Some(size) = size else {
        return Err(CsError::invalid("'page' needs 'pagesize'"));
    };
    let start = (page - 1).saturating_mul(size);
    Ok((items.into_iter().skip(start).take(size).collect(), count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_lists_and_times() {
        assert_eq!(
            envelope("listZones", json!({})),
            json!({"listzonesresponse": {}})
        );
        assert_eq!(list("zone", vec![], 0), json!({}));
        assert_eq!(
            list("zone", vec![json!(1)], 3),
            json!({"count": 3, "zone": [1]})
        );
        let t = DateTime::parse_from_rfc3339("2026-12-03T10:00:05Z").unwrap();
        assert_eq!(time(t.with_timezone(&Utc)), "2026-12-03T10:00:05+0000");
    }

    #[test]
    fn pages_count_everything() {
        let items: Vec<u32> = (1..=7).collect();
        assert_eq!(page(items.clone(), None, None).unwrap(), (items.clone(), 7));
        assert_eq!(
            page(items.clone(), Some("2"), Some("3")).unwrap(),
            (vec![4, 5, 6], 7)
        );
        assert_eq!(
            page(items.clone(), Some("3"), Some("3")).unwrap(),
            (vec![7], 7)
        );
        assert_eq!(
            page(items.clone(), Some("9"), Some("3")).unwrap(),
            (vec![], 7)
        );
        assert_eq!(
            page(items.clone(), Some("1"), None).unwrap_err().errorcode,
            431
        );
        assert_eq!(
            page(items, Some("x"), Some("3")).unwrap_err().errorcode,
            431
        );
    }

    #[test]
    fn errors_keep_their_message_and_name_their_code() {
        let e = CsError::from_error(&Error::not_found("volume", "v1"));
        assert_eq!((e.errorcode, e.cserrorcode), (431, 4350));
        assert!(e.errortext.contains("v1"), "{}", e.errortext);
        let e = CsError::from_error(&Error::conflict("volume_in_use", "attached"));
        assert_eq!((e.errorcode, e.cserrorcode), (536, 4375));
        assert_eq!(e.body()["uuidList"], json!([]));
    }
}
