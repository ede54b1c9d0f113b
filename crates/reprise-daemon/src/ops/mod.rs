//! The operations behind the API, one module per resource. Each checks
//! everything it can before changing anything, so that a refused request
//! changes nothing, and takes the caller's account so that another
//! account's resources are never found.

pub mod accounts;
pub mod clones;
pub mod deletes;
pub mod guards;
pub mod instance_rules;
pub mod instances;
pub mod points;
pub mod policies;
pub mod recovery;
pub mod restore;
pub mod snapshots;
pub mod templates;
pub mod uploads;
pub mod volumes;

use reprise_core::{Error, Result};

/// The name of a new resource of `kind`: the one given (checked, and free
/// by `taken`), or one generated from `prefix` when none is given.
pub fn chosen_name(
    kind: &str,
    given: Option<&str>,
    prefix: &str,
    taken: impl Fn(&str) -> Result<bool>,
) -> Result<String> {
    match given.map(str::trim) {
        Some(n) if !n.is_empty() => {
            reprise_core::name::validate_name(kind, n)?;
            if taken(n)? {
                return Err(Error::conflict(
                    "name_taken",
                    format!("a {kind} named '{n}' already exists"),
                ));
            }
            Ok(n.to_string())
        }
        _ => generated_name(prefix, taken),
    }
}

/// A name for something the user did not name: `prefix` and the UTC time,
/// with `-2`, `-3`… until `taken` says it is free.
pub fn generated_name(prefix: &str, taken: impl Fn(&str) -> Result<bool>) -> Result<String> {
    let base: String = format!("{prefix}-{}", chrono::Utc::now().format("%Y%m%d-%H%M%S"))
        .chars()
        .take(reprise_core::name::MAX_NAME_LEN - 3)
        .collect();
    let mut name = base.clone();
    let mut n = 2;
    while taken(&name)? {
        name = format!("{base}-{n}");
        n += 1;
    }
    Ok(name)
}

/// A size from the API: parsed, non-zero, a multiple of 512 bytes and at
/// most `max`.
pub fn parse_size_field(field: &str, text: &str, max: u64) -> Result<u64> {
    let bytes = reprise_core::size::parse_size(text)?;
    if bytes == 0 {
        return Err(Error::invalid(
            "size_invalid",
            format!("{field} '{text}' is zero"),
        ));
    }
    if bytes % 512 != 0 {
        return Err(Error::invalid(
            "size_invalid",
            format!("{field} '{text}' is not a multiple of 512 bytes"),
        ));
    }
    if bytes > max {
        return Err(Error::invalid(
            "size_invalid",
            format!(
                "{field} '{text}' is larger than the limit of {}",
                reprise_core::size::format_size(max)
            ),
        ));
    }
    Ok(bytes)
}

/// Volumes are capped at 64 TiB.
pub const MAX_VOLUME_SIZE: u64 = 64 << 40;
