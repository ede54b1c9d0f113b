//! Ages as people write them: `30d`, `12h`, `90m`, `2w`, `45s`.

use crate::{Error, Result};

/// Parse an age: a whole number and a unit (`s`, `m`, `h`, `d`, `w`).
pub fn parse_age(text: &str) -> Result<chrono::Duration> {
    let bad = || {
        Error::invalid(
            "age_invalid",
            format!("age '{text}' not understood: write a number and a unit, like 30d, 12h or 90m"),
        )
    };
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = t.split_at(split);
    let n: i64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad()),
    };
    n.checked_mul(seconds)
        .filter(|s| *s <= 100 * 365 * 86_400)
        .map(chrono::Duration::seconds)
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_parse_with_their_units_only() {
        assert_eq!(parse_age("30d").unwrap(), chrono::Duration::days(30));
        assert_eq!(parse_age(" 90m").unwrap(), chrono::Duration::minutes(90));
        assert_eq!(parse_age("2w").unwrap(), chrono::Duration::days(14));
        assert_eq!(parse_age("0s").unwrap(), chrono::Duration::zero());
        for bad in [
            "",
            "d",
            "30",
            "30 days",
            "-1d",
            "1.5d",
            "99999999999999999d",
        ] {
            assert_eq!(parse_age(bad).unwrap_err().code, "age_invalid", "{bad}");
        }
    }
}
