//! The schedules of snapshot policies, and when they next fire. Pure: the
//! clock and the time zone are passed in.
//!
//! A schedule is one of CloudStack's intervals, or a cron expression:
//!
//! | text | CloudStack | fires |
//! |---|---|---|
//! | `hourly 15` | `HOURLY`, `15` | every hour at minute 15 |
//! | `daily 02:30` | `DAILY`, `30:02` | every day at 02:30 |
//! | `weekly sun 02:30` | `WEEKLY`, `30:02:1` | every Sunday at 02:30 (CloudStack: 1 = Sunday … 7 = Saturday) |
//! | `monthly 31 02:30` | `MONTHLY`, `30:02:31` | on day 31 at 02:30; on the month's last day when it is shorter |
//! | `cron */15 * * * *` | — | minute, hour, day of month, month, day of week (0 or 7 = Sunday), with `*`, `a-b`, `a,b`, `/n` and names; when both days are restricted, either matches (cron's rule); a month without the day is skipped |
//!
//! Times are local to the policy's time zone. Daylight-saving changes: a
//! local time that does not exist that day (02:30 when clocks jump from
//! 02:00 to 03:00) fires once, when the gap ends (03:00); a local time that
//! happens twice (02:30 when clocks go back from 03:00 to 02:00) fires once,
//! at its first occurrence.

use crate::{Error, Result};
use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc, Weekday};
pub use chrono_tz::Tz;

/// A time zone by its IANA name (`Europe/Paris`, `UTC`).
pub fn timezone(name: &str) -> Result<Tz> {
    name.parse().map_err(|_| {
        Error::invalid(
            "timezone_invalid",
            format!("'{name}' is not a time zone (say an IANA name like Europe/Paris, or UTC)"),
        )
    })
}

/// When a policy fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    Hourly {
        minute: u8,
    },
    Daily {
        hour: u8,
        minute: u8,
    },
    Weekly {
        weekday: Weekday,
        hour: u8,
        minute: u8,
    },
    /// On `day` (1–31), or the month's last day when the month is shorter.
    Monthly {
        day: u8,
        hour: u8,
        minute: u8,
    },
    Cron(Cron),
}

/// A five-field cron expression, as sets of the values each field allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    text: String,
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    /// Bit 0 = Sunday.
    weekdays: u8,
    any_day: bool,
    any_weekday: bool,
}

fn invalid(message: impl Into<String>) -> Error {
    Error::invalid("schedule_invalid", message)
}

/// The longest a schedule may go without firing: a cron expression that
/// does not fire within it (`0 0 30 2 *`) is refused.
const HORIZON_DAYS: i64 = 366 * 8 + 2;

impl Schedule {
    /// A schedule from its text: `hourly MM`, `daily HH:MM`,
    /// `weekly DAY HH:MM`, `monthly DD HH:MM`, `cron EXPR` (or a bare
    /// five-field cron expression).
    pub fn parse(text: &str) -> Result<Schedule> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let schedule = match words.as_slice() {
            [kind, rest @ ..] if kind.eq_ignore_ascii_case("cron") => {
                Schedule::Cron(Cron::parse(&rest.join(" "))?)
            }
            [kind, minute] if kind.eq_ignore_ascii_case("hourly") => Schedule::Hourly {
                minute: number(minute.trim_start_matches(':'), 0, 59, "minute")?,
            },
            [kind, time] if kind.eq_ignore_ascii_case("daily") => {
                let (hour, minute) = clock(time)?;
                Schedule::Daily { hour, minute }
            }
            [kind, day, time] if kind.eq_ignore_ascii_case("weekly") => {
                let (hour, minute) = clock(time)?;
                Schedule::Weekly {
                    weekday: weekday_named(day)?,
                    hour,
                    minute,
                }
            }
            [kind, day, time] if kind.eq_ignore_ascii_case("monthly") => {
                let (hour, minute) = clock(time)?;
                Schedule::Monthly {
                    day: number(day, 1, 31, "day of month")?,
                    hour,
                    minute,
                }
            }
            fields if fields.len() == 5 => Schedule::Cron(Cron::parse(text)?),
            _ => {
                return Err(invalid(format!(
                    "schedule '{text}' not understood: say 'hourly MM', 'daily HH:MM', 'weekly DAY HH:MM', \
                     'monthly DD HH:MM' or 'cron MIN HOUR DOM MON DOW'"
                )))
            }
        };
        Ok(schedule)
    }

    /// CloudStack's form: `intervaltype` (HOURLY, DAILY, WEEKLY, MONTHLY)
    /// and `schedule` (`MM`, `MM:HH`, `MM:HH:D` with 1 = Sunday, `MM:HH:DD`).
    pub fn cloudstack(interval: &str, schedule: &str) -> Result<Schedule> {
        let parts: Vec<&str> = schedule.split(':').collect();
        let bad = || {
            invalid(format!(
                "schedule '{schedule}' does not fit intervaltype {interval} (HOURLY: MM, DAILY: MM:HH, \
                 WEEKLY: MM:HH:D, MONTHLY: MM:HH:DD)"
            ))
        };
        let minute = |s: &str| number(s, 0, 59, "minute");
        let hour = |s: &str| number(s, 0, 23, "hour");
        Ok(
            match (interval.to_ascii_uppercase().as_str(), parts.as_slice()) {
                ("HOURLY", [m]) => Schedule::Hourly { minute: minute(m)? },
                ("DAILY", [m, h]) => Schedule::Daily {
                    hour: hour(h)?,
                    minute: minute(m)?,
                },
                ("WEEKLY", [m, h, d]) => Schedule::Weekly {
                    weekday: Weekday::try_from(
                        (number(d, 1, 7, "day of week")? + 5) % 7, // 1 = Sunday → Weekday 6
                    )
                    .map_err(|_| bad())?,
                    hour: hour(h)?,
                    minute: minute(m)?,
                },
                ("MONTHLY", [m, h, d]) => Schedule::Monthly {
                    day: number(d, 1, 31, "day of month")?,
                    hour: hour(h)?,
                    minute: minute(m)?,
                },
                ("HOURLY" | "DAILY" | "WEEKLY" | "MONTHLY", _) => return Err(bad()),
                _ => {
                    return Err(invalid(format!(
                        "intervaltype '{interval}' is not HOURLY, DAILY, WEEKLY or MONTHLY"
                    )))
                }
            },
        )
    }

    /// CloudStack's `intervaltype` and `schedule`; none for cron.
    pub fn to_cloudstack(&self) -> Option<(&'static str, String)> {
        Some(match self {
            Schedule::Hourly { minute } => ("HOURLY", format!("{minute:02}")),
            Schedule::Daily { hour, minute } => ("DAILY", format!("{minute:02}:{hour:02}")),
            Schedule::Weekly {
                weekday,
                hour,
                minute,
            } => (
                "WEEKLY",
                format!(
                    "{minute:02}:{hour:02}:{}",
                    weekday.num_days_from_sunday() + 1
                ),
            ),
            Schedule::Monthly { day, hour, minute } => {
                ("MONTHLY", format!("{minute:02}:{hour:02}:{day:02}"))
            }
            Schedule::Cron(_) => return None,
        })
    }

    /// The first instant after `after` when it fires, in time zone `tz`.
    pub fn next_after(&self, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        // From the day before: a local day starts before or after the UTC
        // one, and a gap can push a time of one day into the next.
        let first = after.with_timezone(&tz).date_naive() - Duration::days(1);
        for offset in 0..HORIZON_DAYS {
            let day = first + Duration::days(offset);
            for (hour, minute) in self.times_on(day) {
                let local = day
                    .and_hms_opt(u32::from(hour), u32::from(minute), 0)
                    .expect("hours and minutes are in range");
                let at = resolve(tz, local);
                if at > after {
                    return Some(at);
                }
            }
        }
        None
    }

    /// The local times it fires on `day`, in order.
    fn times_on(&self, day: NaiveDate) -> Vec<(u8, u8)> {
        match self {
            Schedule::Hourly { minute } => (0..24).map(|h| (h, *minute)).collect(),
            Schedule::Daily { hour, minute } => vec![(*hour, *minute)],
            Schedule::Weekly {
                weekday,
                hour,
                minute,
            } if day.weekday() == *weekday => vec![(*hour, *minute)],
            Schedule::Monthly {
                day: d,
                hour,
                minute,
            } if day.day() == u32::from(*d).min(last_day(day)) => {
                vec![(*hour, *minute)]
            }
            Schedule::Cron(c) if c.fires_on(day) => {
                let mut times = Vec::new();
                for h in (0..24u8).filter(|h| c.hours & (1 << h) != 0) {
                    for m in (0..60u8).filter(|m| c.minutes & (1 << m) != 0) {
                        times.push((h, m));
                    }
                }
                times
            }
            _ => Vec::new(),
        }
    }
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Schedule::Hourly { minute } => write!(f, "hourly {minute:02}"),
            Schedule::Daily { hour, minute } => write!(f, "daily {hour:02}:{minute:02}"),
            Schedule::Weekly {
                weekday,
                hour,
                minute,
            } => write!(
                f,
                "weekly {} {hour:02}:{minute:02}",
                weekday.to_string().to_ascii_lowercase()
            ),
            Schedule::Monthly { day, hour, minute } => {
                write!(f, "monthly {day} {hour:02}:{minute:02}")
            }
            Schedule::Cron(c) => write!(f, "cron {}", c.text),
        }
    }
}

/// The instant of a local time: its first occurrence when it happens
/// twice; the end of the gap when it does not happen.
fn resolve(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    let mut probe = local;
    loop {
        match tz.from_local_datetime(&probe) {
            chrono::LocalResult::Single(t) => return t.with_timezone(&Utc),
            chrono::LocalResult::Ambiguous(first, _) => return first.with_timezone(&Utc),
            // Gaps are whole minutes (at most a few hours): the first
            // minute after one exists.
            chrono::LocalResult::None => probe += Duration::minutes(1),
        }
    }
}

fn last_day(day: NaiveDate) -> u32 {
    let (y, m) = (day.year(), day.month());
    let next = if m == 12 {
        NaiveDate::from_ymd_opt(y + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(y, m + 1, 1)
    };
    next.expect("a valid date")
        .pred_opt()
        .expect("a valid date")
        .day()
}

fn number(text: &str, low: u8, high: u8, what: &str) -> Result<u8> {
    text.parse::<u8>()
        .ok()
        .filter(|n| (low..=high).contains(n))
        .ok_or_else(|| {
            invalid(format!(
                "{what} '{text}' is not a number from {low} to {high}"
            ))
        })
}

/// `HH:MM`.
fn clock(text: &str) -> Result<(u8, u8)> {
    let (h, m) = text
        .split_once(':')
        .ok_or_else(|| invalid(format!("time '{text}' is not HH:MM")))?;
    Ok((number(h, 0, 23, "hour")?, number(m, 0, 59, "minute")?))
}

const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];

fn weekday_named(text: &str) -> Result<Weekday> {
    let lower = text.to_ascii_lowercase();
    WEEKDAYS
        .iter()
        .position(|d| lower.starts_with(d) && lower.len() >= 3)
        .map(|i| Weekday::try_from(((i + 6) % 7) as u8).expect("0..7"))
        .ok_or_else(|| invalid(format!("'{text}' is not a day of the week (sun, mon, …)")))
}

impl Cron {
    /// Five fields: minute, hour, day of month, month, day of week.
    pub fn parse(text: &str) -> Result<Cron> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        let [min, hour, dom, mon, dow] = fields.as_slice() else {
            return Err(invalid(format!(
                "cron expression '{text}' needs five fields: minute hour day-of-month month day-of-week"
            )));
        };
        let weekdays = field(dow, 0, 7, &WEEKDAYS, "day of week")?;
        let cron = Cron {
            text: fields.join(" "),
            minutes: field(min, 0, 59, &[], "minute")?,
            hours: field(hour, 0, 23, &[], "hour")? as u32,
            days: field(dom, 1, 31, &[], "day of month")? as u32,
            months: (field(mon, 1, 12, &MONTHS, "month")? >> 1) as u16,
            // 7 is Sunday too.
            weekdays: ((weekdays | (weekdays >> 7)) & 0x7f) as u8,
            any_day: *dom == "*",
            any_weekday: *dow == "*",
        };
        let probe = Schedule::Cron(cron.clone());
        let start = DateTime::from_timestamp(946_684_800, 0).expect("2000-01-01");
        if probe.next_after(start, Tz::UTC).is_none() {
            return Err(invalid(format!("cron expression '{text}' never fires")));
        }
        Ok(cron)
    }

    fn fires_on(&self, day: NaiveDate) -> bool {
        if self.months & (1 << (day.month() - 1)) == 0 {
            return false;
        }
        let dom = self.days & (1 << day.day()) != 0;
        let dow = self.weekdays & (1 << day.weekday().num_days_from_sunday()) != 0;
        match (self.any_day, self.any_weekday) {
            (false, false) => dom || dow,
            _ => dom && dow,
        }
    }
}

/// One cron field as a bit set of the values it allows (bit n = value n).
fn field(text: &str, low: u8, high: u8, names: &[&str], what: &str) -> Result<u64> {
    let value = |s: &str| -> Result<u8> {
        let lower = s.to_ascii_lowercase();
        if let Some(i) = names.iter().position(|n| *n == lower) {
            // Months are named from 1 (their `low`), days of the week from 0.
            return Ok(i as u8 + low);
        }
        number(s, low, high, what)
    };
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, number(s, 1, high.max(1), &format!("{what} step"))?),
            None => (part, 1),
        };
        let (from, to) = if range == "*" {
            (low, high)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a)?, value(b)?)
        } else {
            let v = value(range)?;
            // `5/15`: from 5 to the end, every 15.
            (v, if part.contains('/') { high } else { v })
        };
        if from > to {
            return Err(invalid(format!("{what} range '{range}' runs backwards")));
        }
        for v in (from..=to).step_by(usize::from(step)) {
            bits |= 1 << v;
        }
    }
    Ok(bits)
}

/// A stable offset in `0..window` for one resource: a fleet's runs of one
/// slot spread over the window instead of all firing at its first second.
pub fn spread(resource: uuid::Uuid, window: std::time::Duration) -> std::time::Duration {
    let secs = window.as_secs();
    if secs == 0 {
        return std::time::Duration::ZERO;
    }
    let h = resource.as_u128();
    std::time::Duration::from_secs(((h ^ (h >> 64)) as u64) % secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn tz(name: &str) -> Tz {
        name.parse().unwrap()
    }

    /// The first `n` firings after `from`, in UTC.
    fn firings(schedule: &str, zone: &str, from: &str, n: usize) -> Vec<String> {
        let s = Schedule::parse(schedule).unwrap();
        let mut at = utc(from);
        let mut out = Vec::new();
        for _ in 0..n {
            at = s.next_after(at, tz(zone)).unwrap();
            out.push(at.format("%Y-%m-%dT%H:%MZ").to_string());
        }
        out
    }

    #[test]
    fn intervals_fire_when_they_say() {
        let cases: &[(&str, &str, &str, &[&str])] = &[
            (
                "hourly 15",
                "UTC",
                "2026-12-03T10:15:00Z",
                &["2026-12-03T11:15Z", "2026-12-03T12:15Z"],
            ),
            (
                "hourly 00",
                "UTC",
                "2026-12-31T23:30:00Z",
                &["2027-01-01T00:00Z"],
            ),
            (
                "daily 02:30",
                "UTC",
                "2026-12-03T02:29:59Z",
                &["2026-12-03T02:30Z", "2026-12-04T02:30Z"],
            ),
            (
                "daily 02:30",
                "Europe/Paris",
                "2026-12-03T00:00:00Z",
                &["2026-12-03T01:30Z"],
            ),
            (
                "daily 02:30",
                "America/New_York",
                "2026-12-03T00:00:00Z",
                &["2026-12-03T07:30Z"],
            ),
            // Thursday 3 December 2026: the next Sunday is the 6th.
            (
                "weekly sun 02:30",
                "UTC",
                "2026-12-03T00:00:00Z",
                &["2026-12-06T02:30Z", "2026-12-13T02:30Z"],
            ),
            (
                "weekly thu 02:30",
                "UTC",
                "2026-12-03T02:30:00Z",
                &["2026-12-10T02:30Z"],
            ),
            // Day 31: the last day of shorter months.
            (
                "monthly 31 02:30",
                "UTC",
                "2027-01-31T03:00:00Z",
                &[
                    "2027-02-28T02:30Z",
                    "2027-03-31T02:30Z",
                    "2027-04-30T02:30Z",
                ],
            ),
            // A leap year's February.
            (
                "monthly 30 00:00",
                "UTC",
                "2028-01-30T01:00:00Z",
                &["2028-02-29T00:00Z", "2028-03-30T00:00Z"],
            ),
            (
                "monthly 1 00:00",
                "UTC",
                "2026-12-15T00:00:00Z",
                &["2027-01-01T00:00Z"],
            ),
        ];
        for (schedule, zone, from, want) in cases {
            assert_eq!(
                firings(schedule, zone, from, want.len()),
                *want,
                "{schedule} in {zone} from {from}"
            );
        }
    }

    #[test]
    fn cron_expressions() {
        let cases: &[(&str, &str, &[&str])] = &[
            (
                "*/15 * * * *",
                "2026-12-03T10:07:00Z",
                &[
                    "2026-12-03T10:15Z",
                    "2026-12-03T10:30Z",
                    "2026-12-03T10:45Z",
                    "2026-12-03T11:00Z",
                ],
            ),
            (
                "5/20 9-10 * * *",
                "2026-12-03T00:00:00Z",
                &[
                    "2026-12-03T09:05Z",
                    "2026-12-03T09:25Z",
                    "2026-12-03T09:45Z",
                    "2026-12-03T10:05Z",
                ],
            ),
            (
                "0 0 * * mon-fri",
                "2026-12-04T12:00:00Z",
                &["2026-12-07T00:00Z"],
            ),
            ("0 0 * * 7", "2026-12-03T00:00:00Z", &["2026-12-06T00:00Z"]),
            (
                "0 12 1,15 * *",
                "2026-12-02T00:00:00Z",
                &["2026-12-15T12:00Z", "2027-01-01T12:00Z"],
            ),
            // Both days restricted: either matches.
            (
                "0 0 13 * fri",
                "2026-12-01T00:00:00Z",
                &[
                    "2026-12-04T00:00Z",
                    "2026-12-11T00:00Z",
                    "2026-12-13T00:00Z",
                ],
            ),
            // Day 31 skips the months without it (cron's rule).
            ("0 0 31 * *", "2027-01-31T01:00:00Z", &["2027-03-31T00:00Z"]),
            // 29 February: every leap year.
            (
                "0 0 29 feb *",
                "2026-01-01T00:00:00Z",
                &["2028-02-29T00:00Z", "2032-02-29T00:00Z"],
            ),
        ];
        for (expr, from, want) in cases {
            assert_eq!(
                firings(&format!("cron {expr}"), "UTC", from, want.len()),
                *want,
                "{expr}"
            );
        }
        assert_eq!(
            Schedule::parse("*/5 * * * *").unwrap(),
            Schedule::parse("cron */5 * * * *").unwrap()
        );
    }

    #[test]
    fn daylight_saving_changes_fire_each_run_once() {
        // Europe/Paris: 29 March 2026 02:00 → 03:00; 25 October 2026
        // 03:00 → 02:00. America/New_York: 8 March 2026 02:00 → 03:00;
        // 1 November 2026 02:00 → 01:00.
        let cases: &[(&str, &str, &str, &[&str])] = &[
            // 02:30 does not exist: it fires at 03:00 local (01:00 UTC), once.
            (
                "daily 02:30",
                "Europe/Paris",
                "2026-03-28T02:00:00Z",
                &["2026-03-29T01:00Z", "2026-03-30T00:30Z"],
            ),
            // 02:30 happens twice: the first (CEST, 00:30 UTC) only.
            (
                "daily 02:30",
                "Europe/Paris",
                "2026-10-24T02:00:00Z",
                &["2026-10-25T00:30Z", "2026-10-26T01:30Z"],
            ),
            (
                "daily 02:30",
                "America/New_York",
                "2026-03-07T08:00:00Z",
                &["2026-03-08T07:00Z", "2026-03-09T06:30Z"],
            ),
            (
                "daily 01:30",
                "America/New_York",
                "2026-10-31T06:00:00Z",
                &["2026-11-01T05:30Z", "2026-11-02T06:30Z"],
            ),
            // Hourly across the jump forward: 01:30, then 03:00 (for the
            // missing 02:30, once), 03:30.
            (
                "hourly 30",
                "Europe/Paris",
                "2026-03-29T00:00:00Z",
                &[
                    "2026-03-29T00:30Z",
                    "2026-03-29T01:00Z",
                    "2026-03-29T01:30Z",
                ],
            ),
            // Every 15 minutes across the jump: the gap's four times fire once, at 03:00.
            (
                "cron */15 * * * *",
                "Europe/Paris",
                "2026-03-29T00:40:00Z",
                &[
                    "2026-03-29T00:45Z",
                    "2026-03-29T01:00Z",
                    "2026-03-29T01:15Z",
                ],
            ),
            // Back: 02:00–02:59 happens twice; each local time fires once.
            (
                "hourly 30",
                "Europe/Paris",
                "2026-10-24T23:00:00Z",
                &[
                    "2026-10-24T23:30Z",
                    "2026-10-25T00:30Z",
                    "2026-10-25T02:30Z",
                ],
            ),
        ];
        for (schedule, zone, from, want) in cases {
            assert_eq!(
                firings(schedule, zone, from, want.len()),
                *want,
                "{schedule} in {zone} from {from}"
            );
        }
    }

    #[test]
    fn cloudstack_forms_round_trip() {
        let cases = [
            ("HOURLY", "05", "hourly 05"),
            ("DAILY", "30:02", "daily 02:30"),
            ("weekly", "30:02:1", "weekly sun 02:30"),
            ("WEEKLY", "00:23:7", "weekly sat 23:00"),
            ("MONTHLY", "30:02:31", "monthly 31 02:30"),
        ];
        for (interval, schedule, text) in cases {
            let s = Schedule::cloudstack(interval, schedule).unwrap();
            assert_eq!(s.to_string(), text);
            assert_eq!(Schedule::parse(text).unwrap(), s);
            let (i, back) = s.to_cloudstack().unwrap();
            assert_eq!(Schedule::cloudstack(i, &back).unwrap(), s);
        }
        assert_eq!(
            Schedule::parse("cron 0 * * * *").unwrap().to_cloudstack(),
            None
        );
    }

    #[test]
    fn bad_schedules_are_named() {
        for text in [
            "daily 24:00",
            "daily 2:60",
            "hourly 60",
            "weekly funday 02:00",
            "monthly 0 02:00",
            "monthly 32 02:00",
            "cron * * *",
            "cron 60 * * * *",
            "cron 0 0 30 2 *",
            "cron 5-1 * * * *",
            "cron */0 * * * *",
            "sometimes",
            "",
        ] {
            let e = Schedule::parse(text).unwrap_err();
            assert_eq!(e.code, "schedule_invalid", "{text}: {e}");
        }
        for (interval, schedule) in [
            ("DAILY", "30"),
            ("WEEKLY", "30:02:8"),
            ("YEARLY", "1"),
            ("HOURLY", "x"),
        ] {
            let e = Schedule::cloudstack(interval, schedule).unwrap_err();
            assert_eq!(e.code, "schedule_invalid", "{interval} {schedule}: {e}");
        }
    }

    #[test]
    fn a_fleet_spreads_over_its_window() {
        let window = std::time::Duration::from_secs(600);
        // A hundred ids, fixed so that the test is too.
        let offsets: Vec<u64> = (1..=100u128)
            .map(|i| {
                uuid::Uuid::from_u128(i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835))
            })
            .map(|id| spread(id, window).as_secs())
            .collect();
        assert!(offsets.iter().all(|o| *o < 600));
        // A resource keeps its offset.
        let id = uuid::Uuid::new_v4();
        assert_eq!(spread(id, window), spread(id, window));
        // Spread: every tenth of the window holds some of the 100.
        for tenth in 0..10 {
            assert!(
                offsets.iter().any(|o| o / 60 == tenth),
                "nothing in minute {tenth}"
            );
        }
    }
}
