//! Sizes as people write them: `512M`, `10G`, `1T`, binary units.

use crate::{Error, Result};

const UNITS: [(&str, u64); 5] = [
    ("K", 1 << 10),
    ("M", 1 << 20),
    ("G", 1 << 30),
    ("T", 1 << 40),
    ("P", 1 << 50),
];

/// Parse a size: a whole number with an optional binary unit (`K`, `M`, `G`,
/// `T`, `P`, optionally followed by `iB` or `B`); a bare number is bytes.
/// Decimal fractions are accepted when they come out to whole bytes
/// (`1.5G`).
pub fn parse_size(text: &str) -> Result<u64> {
    let bad = || {
        Error::invalid(
            "size_invalid",
            format!(
                "size '{text}' not understood: write a number with a unit, like 512M, 10G or 1T"
            ),
        )
    };
    let t = text.trim();
    let digits_end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(digits_end);
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
        return Err(bad());
    }
    let unit = unit.trim().to_ascii_uppercase();
    let unit = unit
        .strip_suffix("IB")
        .or_else(|| unit.strip_suffix('B'))
        .unwrap_or(&unit);
    let multiplier = if unit.is_empty() {
        1
    } else {
        UNITS
            .iter()
            .find(|(u, _)| *u == unit)
            .map(|(_, m)| *m)
            .ok_or_else(bad)?
    };
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    let whole: u64 = whole.parse().map_err(|_| bad())?;
    let mut bytes = whole.checked_mul(multiplier).ok_or_else(|| too_big(text))?;
    if !frac.is_empty() {
        if frac.contains('.') || frac.len() > 6 {
            return Err(bad());
        }
        let scale = 10u64.pow(frac.len() as u32);
        let frac: u64 = frac.parse().map_err(|_| bad())?;
        let part = (frac as u128 * multiplier as u128) / scale as u128;
        if !(frac as u128 * multiplier as u128).is_multiple_of(scale as u128) {
            return Err(Error::invalid(
                "size_invalid",
                format!("size '{text}' is not a whole number of bytes"),
            ));
        }
        bytes = bytes
            .checked_add(u64::try_from(part).map_err(|_| too_big(text))?)
            .ok_or_else(|| too_big(text))?;
    }
    Ok(bytes)
}

fn too_big(text: &str) -> Error {
    Error::invalid("size_invalid", format!("size '{text}' is too large"))
}

/// Format bytes with the largest binary unit that keeps one decimal:
/// `10G`, `1.5G`, `512M`, `700B`.
pub fn format_size(bytes: u64) -> String {
    for (unit, m) in UNITS.iter().rev() {
        if bytes >= *m {
            let value = bytes as f64 / *m as f64;
            return if bytes.is_multiple_of(*m) {
                format!("{}{unit}", bytes / m)
            } else {
                format!("{value:.1}{unit}")
            };
        }
    }
    format!("{bytes}B")
}

/// A byte count as serde reads it from a config or a body: a number of
/// bytes, or a size string like `"100G"`.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum BytesOrSize {
    Bytes(u64),
    Text(String),
}

impl BytesOrSize {
    fn bytes<E: serde::de::Error>(self) -> Result<u64, E> {
        match self {
            BytesOrSize::Bytes(b) => Ok(b),
            BytesOrSize::Text(t) => parse_size(&t).map_err(|e| E::custom(e.message)),
        }
    }
}

/// For `#[serde(deserialize_with)]`: a byte count, as a number or a size.
pub fn deserialize_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    <BytesOrSize as serde::Deserialize>::deserialize(d)?.bytes()
}

/// For `#[serde(deserialize_with)]`: an optional byte count.
pub fn deserialize_opt_bytes<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<u64>, D::Error> {
    <Option<BytesOrSize> as serde::Deserialize>::deserialize(d)?
        .map(BytesOrSize::bytes)
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_people_sizes() {
        let cases = [
            ("512M", 512 << 20),
            ("10G", 10 << 30),
            ("1T", 1 << 40),
            ("1t", 1 << 40),
            ("64KiB", 64 << 10),
            ("2GB", 2 << 30),
            ("1.5G", 3 << 29),
            ("4096", 4096),
            (" 8 G ", 8 << 30),
        ];
        for (text, want) in cases {
            assert_eq!(parse_size(text).unwrap(), want, "{text}");
        }
    }

    #[test]
    fn refuses_what_it_does_not_understand() {
        for text in ["", "G", "ten", "10X", "-1G", "1..5G", ".5G", "5.G", "1e9"] {
            let err = parse_size(text).unwrap_err();
            assert_eq!(err.code, "size_invalid", "{text}");
            assert!(err.message.contains(text.trim()), "{text}: {}", err.message);
        }
        assert_eq!(parse_size("99999999P").unwrap_err().code, "size_invalid");
        assert!(parse_size("1.3B")
            .unwrap_err()
            .message
            .contains("whole number"));
    }

    #[test]
    fn formats_round_trip() {
        for bytes in [512 << 20, 10u64 << 30, 1 << 40, 700] {
            assert_eq!(parse_size(&format_size(bytes)).unwrap(), bytes);
        }
        assert_eq!(format_size(3 << 29), "1.5G");
    }
}
