//! Retention: which of a policy's snapshots it keeps. Pure: the snapshots,
//! the rules and the time zone in; a verdict for each snapshot out, with
//! the rules that keep it.
//!
//! The rules are a union, as restic's `forget`: each rule keeps its own
//! snapshots, and a snapshot stays when any rule keeps it.
//! - `last N`: the N newest.
//! - `hourly N`, `daily N`, `weekly N`, `monthly N`, `yearly N`: the newest
//!   snapshot of each of the N most recent hours (days, ISO weeks, months,
//!   years) that have one, in the policy's time zone. Periods without a
//!   snapshot are not counted: `daily 7` keeps seven days' snapshots even
//!   if the policy missed some days.
//!
//! Examples, snapshots newest first:
//! - daily snapshots of 1…10 December, `last 2, daily 5`: 10 and 9 (last
//!   and daily), 8, 7, 6 (daily); 1…5 go.
//! - hourly snapshots over three days, `hourly 3, daily 3`: the three
//!   newest (hourly), and the last of each of the three days (daily): the
//!   newest is kept by both rules; five kept.
//!
//! Only snapshots a policy made are judged, each by its own policy's rules:
//! the caller passes those; a snapshot taken by hand is never pruned.
//! With no rule at all, everything is kept.

use chrono::{DateTime, Datelike, Timelike, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// How many of each a policy keeps (0: that rule keeps none).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct Keep {
    #[serde(default)]
    pub last: u32,
    #[serde(default)]
    pub hourly: u32,
    #[serde(default)]
    pub daily: u32,
    #[serde(default)]
    pub weekly: u32,
    #[serde(default)]
    pub monthly: u32,
    #[serde(default)]
    pub yearly: u32,
}

impl Keep {
    pub fn is_empty(&self) -> bool {
        *self == Keep::default()
    }
}

/// One snapshot to judge.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
}

/// What retention does with one snapshot, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Verdict {
    pub id: Uuid,
    pub keep: bool,
    /// The rules that keep it, like `last`, `daily 2026-12-03`; none when
    /// it goes.
    pub kept_by: Vec<String>,
}

/// The period rules, in the order a verdict names them.
const PERIODS: [&str; 5] = ["hourly", "daily", "weekly", "monthly", "yearly"];

impl Keep {
    fn periods(&self, rule: &str) -> u32 {
        match rule {
            "hourly" => self.hourly,
            "daily" => self.daily,
            "weekly" => self.weekly,
            "monthly" => self.monthly,
            _ => self.yearly,
        }
    }
}

/// The period of `rule` that a local time falls in, as the text a verdict
/// shows.
fn period(rule: &str, t: &DateTime<Tz>) -> String {
    match rule {
        "hourly" => format!("{} {:02}h", t.date_naive(), t.hour()),
        "daily" => t.date_naive().to_string(),
        "weekly" => {
            let w = t.iso_week();
            format!("{}-W{:02}", w.year(), w.week())
        }
        "monthly" => format!("{}-{:02}", t.year(), t.month()),
        _ => t.year().to_string(),
    }
}

/// Judge `snapshots` (any order) by `keep`, in time zone `tz`; verdicts
/// come newest first.
pub fn judge(snapshots: &[Candidate], keep: &Keep, tz: Tz) -> Vec<Verdict> {
    let mut ordered: Vec<&Candidate> = snapshots.iter().collect();
    // Newest first; ties by id, so that a verdict never depends on the
    // order the caller listed them in.
    ordered.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
    let mut verdicts: Vec<Verdict> = ordered
        .iter()
        .map(|c| Verdict {
            id: c.id,
            keep: keep.is_empty(),
            kept_by: if keep.is_empty() {
                vec!["no retention rule".into()]
            } else {
                Vec::new()
            },
        })
        .collect();
    for v in verdicts.iter_mut().take(keep.last as usize) {
        v.kept_by.push("last".into());
    }
    for rule in PERIODS {
        let n = keep.periods(rule) as usize;
        let mut seen: Vec<String> = Vec::new();
        for (c, v) in ordered.iter().zip(verdicts.iter_mut()) {
            if seen.len() == n {
                break;
            }
            let p = period(rule, &c.created_at.with_timezone(&tz));
            if !seen.contains(&p) {
                v.kept_by.push(format!("{rule} {p}"));
                seen.push(p);
            }
        }
    }
    for v in &mut verdicts {
        v.keep |= !v.kept_by.is_empty();
    }
    verdicts
}

/// When each of a policy's snapshots goes if the policy runs on as
/// scheduled after `now`: the first run after which no rule keeps it (now,
/// for one no rule keeps already). None: kept through the next `horizon`
/// runs (a yearly rule on a daily schedule), or no rule at all.
pub fn expiries(
    snapshots: &[Candidate],
    keep: &Keep,
    tz: Tz,
    schedule: &crate::schedule::Schedule,
    now: DateTime<Utc>,
    horizon: usize,
) -> Vec<(Uuid, Option<DateTime<Utc>>)> {
    let mut expiry: Vec<(Uuid, Option<DateTime<Utc>>)> =
        snapshots.iter().map(|c| (c.id, None)).collect();
    if keep.is_empty() {
        return expiry;
    }
    let mut kept: Vec<Candidate> = snapshots.to_vec();
    let mut at = now;
    for run in 0..=horizon {
        let verdicts = judge(&kept, keep, tz);
        for v in verdicts.iter().filter(|v| !v.keep) {
            if let Some(e) = expiry.iter_mut().find(|(id, _)| *id == v.id) {
                e.1 = Some(at);
            }
        }
        kept.retain(|c| verdicts.iter().any(|v| v.id == c.id && v.keep));
        let pending = expiry
            .iter()
            .any(|(id, when)| when.is_none() && kept.iter().any(|c| c.id == *id));
        if !pending || run == horizon {
            break;
        }
        let Some(next) = schedule.next_after(at, tz) else {
            break;
        };
        at = next;
        // A future run's snapshot: ids from the top, never a real one's.
        kept.push(Candidate {
            id: Uuid::from_u128(u128::MAX - run as u128),
            created_at: at,
        });
    }
    expiry
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    fn snaps(times: &[DateTime<Utc>]) -> Vec<Candidate> {
        times
            .iter()
            .enumerate()
            .map(|(i, t)| Candidate {
                id: Uuid::from_u128(i as u128 + 1),
                created_at: *t,
            })
            .collect()
    }

    /// The creation times kept, newest first, as `MM-DD HH:MM`.
    fn kept(candidates: &[Candidate], keep: Keep, tz: &str) -> Vec<String> {
        let verdicts = judge(candidates, &keep, tz.parse().unwrap());
        verdicts
            .iter()
            .filter(|v| v.keep)
            .map(|v| {
                let c = candidates.iter().find(|c| c.id == v.id).unwrap();
                c.created_at.format("%m-%d %H:%M").to_string()
            })
            .collect()
    }

    fn daily_at_0230(days: std::ops::RangeInclusive<u32>) -> Vec<Candidate> {
        snaps(&days.map(|d| at(2026, 12, d, 2, 30)).collect::<Vec<_>>())
    }

    #[test]
    fn the_documented_examples() {
        let k = Keep {
            last: 2,
            daily: 5,
            ..Default::default()
        };
        assert_eq!(
            kept(&daily_at_0230(1..=10), k, "UTC"),
            [
                "12-10 02:30",
                "12-09 02:30",
                "12-08 02:30",
                "12-07 02:30",
                "12-06 02:30"
            ]
        );
        let mut hourly = Vec::new();
        for d in 1..=3 {
            for h in 0..24 {
                hourly.push(at(2026, 12, d, h, 0));
            }
        }
        let k = Keep {
            hourly: 3,
            daily: 3,
            ..Default::default()
        };
        assert_eq!(
            kept(&snaps(&hourly), k, "UTC"),
            [
                "12-03 23:00",
                "12-03 22:00",
                "12-03 21:00",
                "12-02 23:00",
                "12-01 23:00"
            ]
        );
    }

    #[test]
    fn rules_alone_and_combined() {
        let ten = daily_at_0230(1..=10);
        let cases: &[(Keep, usize)] = &[
            (Keep::default(), 10),
            (
                Keep {
                    last: 1,
                    ..Default::default()
                },
                1,
            ),
            (
                Keep {
                    last: 20,
                    ..Default::default()
                },
                10,
            ),
            (
                Keep {
                    daily: 3,
                    ..Default::default()
                },
                3,
            ),
            (
                Keep {
                    hourly: 4,
                    ..Default::default()
                },
                4,
            ),
            // 1–10 December 2026: ISO weeks 49 (1–6) and 50 (7–10).
            (
                Keep {
                    weekly: 5,
                    ..Default::default()
                },
                2,
            ),
            (
                Keep {
                    monthly: 3,
                    ..Default::default()
                },
                1,
            ),
            (
                Keep {
                    yearly: 1,
                    ..Default::default()
                },
                1,
            ),
            (
                Keep {
                    last: 1,
                    weekly: 2,
                    ..Default::default()
                },
                2,
            ),
            (
                Keep {
                    last: 3,
                    daily: 2,
                    monthly: 1,
                    ..Default::default()
                },
                3,
            ),
        ];
        for (keep, n) in cases {
            assert_eq!(kept(&ten, *keep, "UTC").len(), *n, "{keep:?}");
        }
        // The weekly rule keeps the newest of each week: the 10th and the 6th.
        assert_eq!(
            kept(
                &ten,
                Keep {
                    weekly: 2,
                    ..Default::default()
                },
                "UTC"
            ),
            ["12-10 02:30", "12-06 02:30"]
        );
    }

    #[test]
    fn periods_are_local_to_the_time_zone() {
        // 23:30 UTC on the 1st is 00:30 on the 2nd in Paris: two days in
        // UTC are one day there.
        let s = snaps(&[at(2026, 12, 1, 23, 30), at(2026, 12, 2, 8, 0)]);
        let k = Keep {
            daily: 2,
            ..Default::default()
        };
        assert_eq!(kept(&s, k, "UTC").len(), 2);
        assert_eq!(kept(&s, k, "Europe/Paris"), ["12-02 08:00"]);
        // Across the change back to winter time, an hour that happens
        // twice is two hourly periods in UTC but one local hour.
        let fold = snaps(&[at(2026, 10, 25, 0, 30), at(2026, 10, 25, 1, 30)]);
        let k = Keep {
            hourly: 5,
            ..Default::default()
        };
        assert_eq!(kept(&fold, k, "Europe/Paris"), ["10-25 01:30"]);
        assert_eq!(kept(&fold, k, "UTC").len(), 2);
    }

    #[test]
    fn month_and_year_ends_and_leap_days() {
        let s = snaps(&[
            at(2027, 12, 31, 23, 0),
            at(2028, 1, 1, 1, 0),
            at(2028, 2, 28, 12, 0),
            at(2028, 2, 29, 12, 0),
            at(2028, 3, 1, 12, 0),
        ]);
        assert_eq!(
            kept(
                &s,
                Keep {
                    monthly: 3,
                    ..Default::default()
                },
                "UTC"
            ),
            ["03-01 12:00", "02-29 12:00", "01-01 01:00"]
        );
        assert_eq!(
            kept(
                &s,
                Keep {
                    yearly: 2,
                    ..Default::default()
                },
                "UTC"
            ),
            ["03-01 12:00", "12-31 23:00"]
        );
        // 31 December 2027 and 1 January 2028 are one ISO week (2027-W52);
        // 28 February to 1 March 2028, another (2028-W09).
        assert_eq!(
            kept(
                &s,
                Keep {
                    weekly: 10,
                    ..Default::default()
                },
                "UTC"
            ),
            ["03-01 12:00", "01-01 01:00"]
        );
    }

    #[test]
    fn expiries_follow_the_runs_to_come() {
        use crate::schedule::Schedule;
        let daily = Schedule::parse("daily 02:30").unwrap();
        let s = daily_at_0230(1..=3);
        let now = at(2026, 12, 3, 12, 0);
        let when = |keep: Keep, horizon| {
            expiries(&s, &keep, Tz::UTC, &daily, now, horizon)
                .into_iter()
                .map(|(_, t)| t.map(|t| t.format("%m-%d %H:%M").to_string()))
                .collect::<Vec<_>>()
        };
        let some = |t: &str| Some(t.to_string());
        // last 3: each goes when three newer ones exist.
        assert_eq!(
            when(
                Keep {
                    last: 3,
                    ..Default::default()
                },
                100
            ),
            [
                some("12-04 02:30"),
                some("12-05 02:30"),
                some("12-06 02:30")
            ]
        );
        // last 2: the oldest goes now (the next run's pruning would).
        assert_eq!(
            when(
                Keep {
                    last: 2,
                    ..Default::default()
                },
                100
            )[0],
            some("12-03 12:00")
        );
        // weekly 2: the 1st and the 3rd are outdone in their week (the
        // 1st already by the 3rd, the 3rd by the 4th's run); the week's
        // last, the 6th, would stay two weeks.
        let w = when(
            Keep {
                weekly: 2,
                ..Default::default()
            },
            100,
        );
        assert_eq!(
            w,
            [
                some("12-03 12:00"),
                some("12-03 12:00"),
                some("12-04 02:30")
            ]
        );
        // monthly 12: the last of December stays a year, beyond 100 daily
        // runs: no date; no rule at all: none either.
        let ends = snaps(&[at(2026, 12, 30, 2, 30), at(2026, 12, 31, 2, 30)]);
        let m = expiries(
            &ends,
            &Keep {
                monthly: 12,
                ..Default::default()
            },
            Tz::UTC,
            &daily,
            at(2026, 12, 31, 12, 0),
            100,
        );
        assert_eq!((m[0].1.is_some(), m[1].1), (true, None));
        assert_eq!(when(Keep::default(), 100), [None, None, None]);
    }

    #[test]
    fn verdicts_say_why_and_do_not_depend_on_order() {
        let mut s = daily_at_0230(1..=3);
        let k = Keep {
            last: 1,
            daily: 2,
            ..Default::default()
        };
        let v = judge(&s, &k, Tz::UTC);
        assert_eq!(v[0].kept_by, ["last", "daily 2026-12-03"]);
        assert_eq!(v[1].kept_by, ["daily 2026-12-02"]);
        assert!(!v[2].keep && v[2].kept_by.is_empty());
        s.reverse();
        assert_eq!(judge(&s, &k, Tz::UTC), v);
        // Two snapshots of one instant: one is the newest, by id, always.
        let twins = snaps(&[at(2026, 12, 1, 0, 0), at(2026, 12, 1, 0, 0)]);
        let one = Keep {
            last: 1,
            ..Default::default()
        };
        let a = judge(&twins, &one, Tz::UTC);
        let mut flipped = twins.clone();
        flipped.reverse();
        assert_eq!(judge(&flipped, &one, Tz::UTC), a);
        assert!(judge(&[], &one, Tz::UTC).is_empty());
    }
}
