//! CloudStack's request signature, checked as CloudStack's API server
//! checks it.
//!
//! The signed string is every parameter but `signature`, sorted by name,
//! each `name=value` with the value URL-encoded as Java's `URLEncoder`
//! does (unreserved: `A-Z a-z 0-9 . - * _`; a space is `%20`), joined by
//! `&`, the whole string lower-cased; the signature is the Base64 of its
//! HMAC-SHA1 under the account's secret key.
//!
//! Clients do not all encode alike, and CloudStack accepts what they
//! send, so the string is built three ways and any match is accepted:
//! - Java's encoding ([`Variant::Java`]);
//! - `cs` (Python's `quote`), which leaves `~` unescaped ([`Variant::Cs`]);
//! - Apache Libcloud, which also leaves `[` `]` unescaped, and sorts by
//!   lower-cased name ([`Variant::Libcloud`]).
//!
//! `signatureVersion=3` makes `expires` mandatory, and a past `expires`
//! fails, as does one further ahead than the caller allows (a signed
//! request is a bearer token until it expires); without it `expires` is
//! not checked, as CloudStack does — unless the caller requires it.
//! Signatures are compared in constant time.
//!
//! Parameter names are restricted to CloudStack's own alphabet (letters,
//! digits, `_`, `.`, `[`, `]`): names are not encoded in the signed
//! string, so a name holding `=` or `&` would sign like two parameters —
//! `signatureVersion%3D3%26id=V` like `signatureVersion=3&id=V` — and
//! fold what the server reads differently from what the client signed.

use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};

type HmacSha1 = Hmac<sha1::Sha1>;

/// How a client encodes the string it signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Java,
    Cs,
    Libcloud,
}

impl Variant {
    pub const ALL: [Variant; 3] = [Variant::Java, Variant::Cs, Variant::Libcloud];

    /// Bytes a value keeps as they are, beyond letters and digits.
    fn value_safe(self) -> &'static [u8] {
        match self {
            Variant::Java => b".-*_",
            Variant::Cs => b".-*_~",
            Variant::Libcloud => b".-*_~[]",
        }
    }
}

/// Why a request's signature was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureError {
    Missing,
    Malformed,
    NameInvalid(String),
    ExpiresMissing,
    ExpiresTooFar(String),
    ExpiresInvalid(String),
    Expired(String),
    Mismatch,
}

impl std::fmt::Display for SignatureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SignatureError::Missing => write!(f, "the request is not signed (no 'signature')"),
            SignatureError::Malformed => write!(f, "the signature is not Base64"),
            SignatureError::NameInvalid(n) => write!(
                f,
                "parameter name '{n}' is not one CloudStack uses (letters, digits, '_', '.', '[', ']')"
            ),
            SignatureError::ExpiresTooFar(e) => write!(
                f,
                "'expires' ({e}) is further ahead than this server accepts: sign requests that expire sooner"
            ),
            SignatureError::ExpiresMissing => write!(
                f,
                "an 'expires' parameter is needed (signatureVersion=3, or this server requires it)"
            ),
            SignatureError::ExpiresInvalid(e) => write!(
                f,
                "'expires' ({e}) is not a time like 2026-12-03T10:00:00+0000"
            ),
            SignatureError::Expired(e) => write!(f, "the request expired at {e}"),
            SignatureError::Mismatch => write!(
                f,
                "unable to verify user credentials and/or request signature"
            ),
        }
    }
}

/// `s` URL-encoded: letters, digits and `safe` kept, a space as `%20`,
/// every other byte of its UTF-8 as `%XX`.
pub fn encode(s: &str, safe: &[u8]) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || safe.contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The string a client of `variant` signs for `params` (lower-cased).
pub fn signed_string(params: &[(String, String)], variant: Variant) -> String {
    let mut pairs: Vec<(String, &str)> = params
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("signature"))
        .map(|(k, v)| {
            let key = match variant {
                Variant::Libcloud => encode(&k.to_lowercase(), b".-_~[]"),
                _ => k.clone(),
            };
            (key, v.as_str())
        })
        .collect();
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v, variant.value_safe())))
        .collect::<Vec<_>>()
        .join("&")
        .to_lowercase()
}

/// The Base64 HMAC-SHA1 of `text` under `secret`: what a client sends.
pub fn sign(text: &str, secret: &str) -> String {
    let mut mac = HmacSha1::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(text.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The value of parameter `name` (names are matched in any case).
pub fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// A time as CloudStack writes `expires`: `2026-12-03T10:00:00+0000`
/// (also `+00:00` or `Z`).
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%z")
        .or_else(|_| DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z"))
        .or_else(|_| DateTime::parse_from_rfc3339(text))
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// What the server accepts of a request's time.
#[derive(Debug, Clone, Copy)]
pub struct Expiry {
    /// The furthest ahead of now an `expires` may be.
    pub max_ahead: chrono::Duration,
    /// Refuse requests without `signatureVersion=3` and `expires`.
    pub required: bool,
}

/// Whether `name` is a parameter name CloudStack uses.
pub fn name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.[]".contains(&b))
}

/// Check a request's parameters against the secret key of the `apiKey`
/// they name, at `now`; the signature's bytes, and when it expires
/// (`None`: a request without expiry).
pub fn verify(
    params: &[(String, String)],
    secret: &str,
    now: DateTime<Utc>,
    expiry: Expiry,
) -> Result<(Vec<u8>, Option<DateTime<Utc>>), SignatureError> {
    if let Some((bad, _)) = params.iter().find(|(k, _)| !name_ok(k)) {
        return Err(SignatureError::NameInvalid(bad.chars().take(80).collect()));
    }
    let given = param(params, "signature").ok_or(SignatureError::Missing)?;
    // A `+` sent unescaped in a query string arrives as a space.
    let given = base64::engine::general_purpose::STANDARD
        .decode(given.trim().replace(' ', "+"))
        .map_err(|_| SignatureError::Malformed)?;
    let mut expires_at = None;
    if param(params, "signatureversion") == Some("3") || expiry.required {
        let expires = param(params, "expires").ok_or(SignatureError::ExpiresMissing)?;
        if param(params, "signatureversion") != Some("3") {
            return Err(SignatureError::ExpiresMissing);
        }
        let at = parse_time(expires)
            .ok_or_else(|| SignatureError::ExpiresInvalid(expires.to_string()))?;
        if at < now {
            return Err(SignatureError::Expired(expires.to_string()));
        }
        if at > now + expiry.max_ahead {
            return Err(SignatureError::ExpiresTooFar(expires.to_string()));
        }
        expires_at = Some(at);
    }
    let mut matched = false;
    for variant in Variant::ALL {
        let mut mac = HmacSha1::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
        mac.update(signed_string(params, variant).as_bytes());
        // Constant time; every variant is tried whatever matched.
        matched |= mac.verify_slice(&given).is_ok();
    }
    if matched {
        Ok((given, expires_at))
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn java_encoding_keeps_what_urlencoder_keeps() {
        assert_eq!(
            encode("a b*~+/é-_.", Variant::Java.value_safe()),
            "a%20b*%7E%2B%2F%C3%A9-_."
        );
        assert_eq!(encode("~[]", Variant::Cs.value_safe()), "~%5B%5D");
        assert_eq!(encode("~[]", Variant::Libcloud.value_safe()), "~[]");
    }

    #[test]
    fn sorting_is_by_name_java_style_or_lower_cased_for_libcloud() {
        let params = p(&[
            ("command", "x"),
            ("apiKey", "K"),
            ("Zed", "1"),
            ("signature", "s"),
        ]);
        assert_eq!(
            signed_string(&params, Variant::Java),
            "zed=1&apikey=k&command=x"
        );
        assert_eq!(
            signed_string(&params, Variant::Libcloud),
            "apikey=k&command=x&zed=1"
        );
    }

    const HOUR: Expiry = Expiry {
        max_ahead: chrono::Duration::hours(1),
        required: false,
    };

    fn verify(
        params: &[(String, String)],
        secret: &str,
        now: DateTime<Utc>,
    ) -> Result<(), SignatureError> {
        super::verify(params, secret, now, HOUR).map(|_| ())
    }

    fn signed(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut params = p(pairs);
        let sig = sign(&signed_string(&params, Variant::Java), "s");
        params.push(("signature".into(), sig));
        params
    }

    /// A name holding `=` and `&` signs like two parameters: refused, so
    /// `signatureVersion=3` cannot hide inside another name.
    #[test]
    fn folded_names_are_refused() {
        let now = parse_time("2026-12-03T10:00:00+0000").unwrap();
        let honest = signed(&[
            ("command", "x"),
            ("signatureVersion", "3"),
            ("virtualmachineid", "v"),
        ]);
        let folded = signed(&[
            ("command", "x"),
            ("signatureVersion=3&virtualmachineid", "v"),
        ]);
        assert_eq!(
            signed_string(&honest[..3], Variant::Java),
            signed_string(&folded[..2], Variant::Java),
            "the same signed string"
        );
        assert!(matches!(
            verify(&folded, "s", now),
            Err(SignatureError::NameInvalid(_))
        ));
        for bad in ["", "a b", "a%3D", "é", &"a".repeat(65)] {
            assert!(!name_ok(bad), "{bad}");
        }
        for good in ["command", "tags[0].key", "snapshot_id", "apiKey"] {
            assert!(name_ok(good), "{good}");
        }
    }

    /// A version 3 request that expires too far ahead is refused; a server
    /// that requires expiry refuses requests without it.
    #[test]
    fn expiry_is_bounded_and_can_be_required() {
        let now = parse_time("2026-12-03T10:00:00+0000").unwrap();
        let far = signed(&[
            ("command", "x"),
            ("signatureVersion", "3"),
            ("expires", "2026-12-03T12:00:00+0000"),
        ]);
        assert!(matches!(
            verify(&far, "s", now),
            Err(SignatureError::ExpiresTooFar(_))
        ));
        let soon = signed(&[
            ("command", "x"),
            ("signatureVersion", "3"),
            ("expires", "2026-12-03T10:10:00+0000"),
        ]);
        let (_, at) = super::verify(&soon, "s", now, HOUR).unwrap();
        assert_eq!(at, parse_time("2026-12-03T10:10:00+0000"));
        let strict = Expiry {
            required: true,
            ..HOUR
        };
        let plain = signed(&[("command", "x")]);
        assert_eq!(
            super::verify(&plain, "s", now, strict).unwrap_err(),
            SignatureError::ExpiresMissing
        );
        assert!(super::verify(&soon, "s", now, strict).is_ok());
    }

    #[test]
    fn expiry_is_checked_with_version_3_only() {
        let now = parse_time("2026-12-03T10:00:00+0000").unwrap();
        let mut params = p(&[
            ("command", "listZones"),
            ("apiKey", "k"),
            ("expires", "2026-12-03T09:00:00+0000"),
        ]);
        let sig = sign(&signed_string(&params, Variant::Java), "s");
        params.push(("signature".into(), sig));
        assert_eq!(verify(&params, "s", now), Ok(()));
        assert_eq!(verify(&params, "wrong", now), Err(SignatureError::Mismatch));

        let mut v3 = p(&[
            ("command", "listZones"),
            ("signatureVersion", "3"),
            ("expires", "2026-12-03T09:00:00+0000"),
        ]);
        let sig = sign(&signed_string(&v3, Variant::Java), "s");
        v3.push(("signature".into(), sig));
        assert!(matches!(
            verify(&v3, "s", now),
            Err(SignatureError::Expired(_))
        ));
        let mut v3 = p(&[("command", "listZones"), ("signatureVersion", "3")]);
        let sig = sign(&signed_string(&v3, Variant::Java), "s");
        v3.push(("signature".into(), sig));
        assert_eq!(verify(&v3, "s", now), Err(SignatureError::ExpiresMissing));
        assert_eq!(
            verify(&p(&[("command", "x")]), "s", now),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify(&p(&[("command", "x"), ("signature", "%%%")]), "s", now),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn times_in_cloudstack_forms() {
        for t in [
            "2026-12-03T10:00:00+0000",
            "2026-12-03T11:00:00+01:00",
            "2026-12-03T10:00:00Z",
        ] {
            assert_eq!(
                parse_time(t).unwrap().to_rfc3339(),
                "2026-12-03T10:00:00+00:00",
                "{t}"
            );
        }
        assert_eq!(parse_time("tomorrow"), None);
    }
}
