//! The time side of a usage query: the window, the calendar days that split it, and how
//! the operator may write its bounds.
//!
//! The database never sees a time zone. Days are cut here, with the IANA rules of
//! `chrono-tz` (a day may last 23 or 25 hours), and handed to the store as a list of UTC
//! intervals; the store only clips sessions to intervals, the same way on both backends.

use chrono::{Days, NaiveDate, SubsecRound, TimeZone};
use chrono_tz::Tz;

use crate::domain::{ParseError, Problem, UtcTime};

/// More days than any billing period needs; bounds the work one request can ask for.
pub const MAX_DAYS: usize = 1100;

/// `[from, to)`, non-empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from: UtcTime,
    pub to: UtcTime,
}

impl Window {
    /// Each bound is an RFC 3339 time, or a date meaning midnight in `zone`, so
    /// `from=2026-11-01&to=2026-12-01` is November as the operator's calendar has it. A
    /// bound inside a millisecond is cut to it: SQLite keeps times to the millisecond,
    /// PostgreSQL to the microsecond, and the rollups' edges are cut in milliseconds; one
    /// precision for every bound makes both backends, and rollups and sessions, agree, and
    /// adjacent windows still split the sessions between them.
    pub fn parse(from: &str, to: &str, zone: Tz) -> Result<Window, ParseError> {
        let window = Window {
            from: parse_bound("from", from, zone)?,
            to: parse_bound("to", to, zone)?,
        };
        if window.from >= window.to {
            return Err(ParseError::new(
                "to",
                Problem::Invalid("must be after from"),
            ));
        }
        Ok(window)
    }
}

fn parse_bound(field: &'static str, raw: &str, zone: Tz) -> Result<UtcTime, ParseError> {
    let bound = match NaiveDate::parse_from_str(raw.trim(), "%Y-%m-%d") {
        // A date is checked like a time: `0002-11-01` must not reach the store.
        Ok(date) => UtcTime::in_range(field, midnight(date, zone).datetime()),
        Err(_) => UtcTime::parse(field, raw).map_err(|e| match e.problem {
            Problem::BadTime => ParseError::new(
                field,
                Problem::Invalid("expected a date such as 2026-11-01 or an RFC 3339 time"),
            ),
            _ => e,
        }),
    };
    Ok(UtcTime::from_datetime(bound?.datetime().trunc_subsecs(3)))
}

/// A stretch of the window whose usage is reported together: the whole window, or the
/// part of it inside one calendar day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub day: Option<NaiveDate>,
    pub start: UtcTime,
    pub end: UtcTime,
}

/// The window as one piece, or cut at every midnight of `zone` when grouping by day.
pub fn pieces(window: Window, by_day: bool, zone: Tz) -> Result<Vec<Piece>, ParseError> {
    if !by_day {
        return Ok(vec![Piece {
            day: None,
            start: window.from,
            end: window.to,
        }]);
    }
    let mut day = window.from.datetime().with_timezone(&zone).date_naive();
    let mut pieces = Vec::new();
    loop {
        let next = day + Days::new(1);
        let (start, end) = (midnight(day, zone), midnight(next, zone));
        pieces.push(Piece {
            day: Some(day),
            start: start.max(window.from),
            end: end.min(window.to),
        });
        if end >= window.to {
            return Ok(pieces);
        }
        if pieces.len() == MAX_DAYS {
            return Err(ParseError::new(
                "to",
                Problem::Invalid("grouping by day covers at most 1100 days"),
            ));
        }
        day = next;
    }
}

/// The first instant of `date` in `zone`. Where a DST change skips midnight itself, the day
/// starts at the first local time that exists.
fn midnight(date: NaiveDate, zone: Tz) -> UtcTime {
    let mut local = date.and_hms_opt(0, 0, 0).unwrap_or_default();
    loop {
        if let Some(start) = zone.from_local_datetime(&local).earliest() {
            return UtcTime::from_datetime(start.to_utc());
        }
        local += chrono::TimeDelta::minutes(15);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(raw: &str) -> UtcTime {
        UtcTime::parse("t", raw).unwrap()
    }

    #[test]
    fn dates_are_midnights_of_the_zone() {
        let w = Window::parse("2026-11-01", "2026-11-02", chrono_tz::Asia::Shanghai).unwrap();
        assert_eq!(w.from, t("2026-10-31T16:00:00Z"));
        assert_eq!(w.to, t("2026-11-01T16:00:00Z"));
        let w = Window::parse("2026-11-01T10:00:00+02:00", "2026-11-02", Tz::UTC).unwrap();
        assert_eq!(w.from, t("2026-11-01T08:00:00Z"));
    }

    #[test]
    fn empty_or_reversed_windows_are_refused() {
        for (from, to) in [("2026-11-02", "2026-11-01"), ("2026-11-01", "2026-11-01")] {
            let e = Window::parse(from, to, Tz::UTC).unwrap_err();
            assert_eq!(e.field, "to");
        }
        assert_eq!(
            Window::parse("yesterday", "2026-11-01", Tz::UTC)
                .unwrap_err()
                .field,
            "from"
        );
    }

    #[test]
    fn days_clip_to_the_window_and_cover_it_exactly() {
        let w = Window::parse("2026-11-01T12:00:00Z", "2026-11-03T06:00:00Z", Tz::UTC).unwrap();
        let p = pieces(w, true, Tz::UTC).unwrap();
        let spans: Vec<_> = p.iter().map(|p| (p.start, p.end)).collect();
        assert_eq!(
            spans,
            [
                (t("2026-11-01T12:00:00Z"), t("2026-11-02T00:00:00Z")),
                (t("2026-11-02T00:00:00Z"), t("2026-11-03T00:00:00Z")),
                (t("2026-11-03T00:00:00Z"), t("2026-11-03T06:00:00Z")),
            ]
        );
        assert_eq!(p[0].day, NaiveDate::from_ymd_opt(2026, 11, 1));
        assert_eq!(pieces(w, false, Tz::UTC).unwrap().len(), 1);
    }

    #[test]
    fn a_dst_day_has_its_real_length() {
        // Europe/Berlin leaves summer time on 2026-10-25: that day lasts 25 hours.
        let zone = chrono_tz::Europe::Berlin;
        let w = Window::parse("2026-10-25", "2026-10-26", zone).unwrap();
        let p = pieces(w, true, zone).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].end.seconds_since(p[0].start), 25 * 3600);
    }

    #[test]
    fn dates_outside_the_time_range_are_refused() {
        // Found by fuzz/fuzz_targets/time.rs: a date bound skipped the 1970..=9999 check.
        for (from, to, zone) in [
            ("2-11-01", "2026-12-02", chrono_tz::Asia::Shanghai),
            ("1970-01-01", "2026-12-02", chrono_tz::Asia::Shanghai), // 1969-12-31T16:00Z
            ("2026-11-01", "+10000-01-01", Tz::UTC),
        ] {
            let e = Window::parse(from, to, zone).unwrap_err();
            assert_eq!(e.problem, Problem::TimeOutOfRange, "{from} {to}");
        }
        assert!(Window::parse("1970-01-01", "9999-12-31", Tz::UTC).is_ok());
    }

    #[test]
    fn day_grouping_is_bounded() {
        let w = Window::parse("2020-01-01", "2026-01-01", Tz::UTC).unwrap();
        assert!(pieces(w, true, Tz::UTC).is_err());
        assert!(pieces(w, false, Tz::UTC).is_ok());
    }
}
