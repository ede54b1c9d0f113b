//! Resource names: unique per account and kind, and never mistakable for an
//! id, so that anywhere a name is taken an id is taken too.

use crate::{Error, Result};
use uuid::Uuid;

pub const MAX_NAME_LEN: usize = 63;

/// A name is 1–63 characters of letters, digits, `-`, `_` and `.`, starting
/// with a letter or digit, and is not itself a UUID.
pub fn validate_name(kind: &str, name: &str) -> Result<()> {
    let bad = |why: &str| {
        Error::invalid(
            "name_invalid",
            format!("{kind} name '{name}' is not valid: {why}"),
        )
    };
    if name.is_empty() {
        return Err(bad("it is empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(bad("it is longer than 63 characters"));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(bad("it must start with a letter or a digit"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(bad(&format!(
            "'{c}' is not allowed (letters, digits, '-', '_' and '.')"
        )));
    }
    if Uuid::parse_str(name).is_ok() {
        return Err(bad("a name cannot look like an id"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names() {
        for n in ["db", "web-01", "a.b_c", "9lives"] {
            validate_name("volume", n).unwrap();
        }
    }

    #[test]
    fn names_the_problem() {
        let cases = [
            ("", "empty"),
            ("-x", "start with"),
            ("a b", "' ' is not allowed"),
            ("a/b", "'/' is not allowed"),
            ("6f1c3e2a-8d7b-4c59-9a10-2b3c4d5e6f70", "look like an id"),
        ];
        for (name, why) in cases {
            let err = validate_name("volume", name).unwrap_err();
            assert_eq!(err.code, "name_invalid");
            assert!(err.message.contains(why), "{name}: {}", err.message);
        }
        assert!(validate_name("volume", &"x".repeat(64)).is_err());
    }
}
