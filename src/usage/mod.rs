//! Usage for billing: sessions, seconds and billable minutes per app, day, phone or user,
//! over a window. The operator API (`GET /api/v1/usage`) and the CLI (`cphub usage`) both
//! [`plan`] the query, ask `Store::usage`, and build a [`UsageReport`], so they give the same
//! numbers. Pure: no I/O here.
//!
//! The rules, chosen so that reports add up (two halves of a month sum to the month, the
//! days of a month sum to the month):
//! - A session's measured time (`started_at` to `ended_at`) is split at the window's bounds
//!   and, when grouping by day, at every midnight of the configured zone. Each part is
//!   counted where it falls.
//! - Billable minutes are the session's rounded total, handed out minute by minute: the
//!   k-th billable minute belongs where second `60·k` of the session falls. So the parts of
//!   a session always sum to its whole rounded total, wherever it is cut.
//! - `sessions`, `abandoned` and `run_time_mismatches` count a session once, where it
//!   started; `open_sessions` counts sessions still playing that started there. Time of
//!   open sessions is not billed until they end (their end is not known yet).
//! - Sessions without a start (only the quit arrived) are not counted: nothing was measured.

mod render;
mod rollup;
mod window;

use chrono_tz::Tz;
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};

pub use render::{to_csv, to_table};
pub use rollup::{BUCKET_MILLIS, LONGEST_ROLLED_UP_SECS, Split, merge};
pub use window::{MAX_DAYS, Piece, Window, pieces};

use crate::domain::{ParseError, Problem, UtcTime};

/// What one report may be grouped by, in the order the operator asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum GroupKey {
    App,
    Day,
    Phone,
    User,
}

impl GroupKey {
    /// The column name in JSON and CSV.
    pub fn column(self) -> &'static str {
        match self {
            GroupKey::App => "app_id",
            GroupKey::Day => "day",
            GroupKey::Phone => "phone_id",
            GroupKey::User => "user_id",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupBy(Vec<GroupKey>);

impl GroupBy {
    /// `app,day` and the like; empty means one row with the totals.
    pub fn parse(raw: &str) -> Result<GroupBy, ParseError> {
        let mut keys = Vec::new();
        for name in raw.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let key = match name {
                "app" => GroupKey::App,
                "day" => GroupKey::Day,
                "phone" => GroupKey::Phone,
                "user" => GroupKey::User,
                _ => {
                    return Err(ParseError::new(
                        "group_by",
                        Problem::Invalid("comma-separated list of app, day, phone, user"),
                    ));
                }
            };
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        Ok(GroupBy(keys))
    }

    pub fn keys(&self) -> &[GroupKey] {
        &self.0
    }

    pub fn has(&self, key: GroupKey) -> bool {
        self.0.contains(&key)
    }
}

/// `[usage]` in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageSettings {
    /// IANA name, parsed at start-up so a typo stops cphub instead of a report.
    pub time_zone: Tz,
    pub billing_rounding: Rounding,
}

/// How measured seconds become billable minutes (`usage.billing_rounding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rounding {
    /// Every minute begun is billed: 61 s → 2.
    StartedMinute,
    /// Only whole minutes: 119 s → 1.
    CompletedMinute,
    /// Half a minute or more rounds up: 89 s → 1, 90 s → 2.
    NearestMinute,
}

impl Rounding {
    /// Seconds added before the whole-minute division; the store computes with it too.
    pub fn offset_secs(self) -> i64 {
        match self {
            Rounding::StartedMinute => 59,
            Rounding::CompletedMinute => 0,
            Rounding::NearestMinute => 30,
        }
    }

    pub fn minutes(self, seconds: i64) -> i64 {
        (seconds.max(0) + self.offset_secs()) / 60
    }
}

/// What the store is asked: usage per piece of time, grouped.
#[derive(Debug, Clone)]
pub struct UsageQuery {
    pub pieces: Vec<Piece>,
    pub group_by: GroupBy,
    pub rounding: Rounding,
}

/// The figures of one group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[cfg_attr(feature = "server", derive(sqlx::FromRow))]
pub struct Counts {
    /// Sessions that started in the group (each counted once, where it started).
    pub sessions: i64,
    /// Measured seconds falling in the group (sessions are split at its bounds).
    pub seconds: i64,
    /// Billed minutes falling in the group, by `usage.billing_rounding`.
    pub billable_minutes: i64,
    /// Sessions that started in the group and were closed by the watchdog.
    pub abandoned: i64,
    /// Sessions whose reported run_time disagrees with the measured duration.
    pub run_time_mismatches: i64,
    /// Sessions still playing that started in the group (not billed yet).
    pub open_sessions: i64,
}

impl Counts {
    pub const COLUMNS: [&'static str; 6] = [
        "sessions",
        "seconds",
        "billable_minutes",
        "abandoned",
        "run_time_mismatches",
        "open_sessions",
    ];

    pub fn values(&self) -> [i64; 6] {
        [
            self.sessions,
            self.seconds,
            self.billable_minutes,
            self.abandoned,
            self.run_time_mismatches,
            self.open_sessions,
        ]
    }

    pub fn add(&mut self, other: &Counts) {
        self.sessions += other.sessions;
        self.seconds += other.seconds;
        self.billable_minutes += other.billable_minutes;
        self.abandoned += other.abandoned;
        self.run_time_mismatches += other.run_time_mismatches;
        self.open_sessions += other.open_sessions;
    }
}

/// One group as the store returns it: keys not grouped by are None. A grouped key can be
/// None too (a session cphub did not mint has no user).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "server", derive(sqlx::FromRow))]
pub struct UsageRow {
    pub day: Option<String>,
    pub app_id: Option<String>,
    pub phone_id: Option<String>,
    pub user_id: Option<String>,
    #[cfg_attr(feature = "server", sqlx(flatten))]
    pub counts: Counts,
}

impl UsageRow {
    pub fn key(&self, key: GroupKey) -> Option<&str> {
        match key {
            GroupKey::App => self.app_id.as_deref(),
            GroupKey::Day => self.day.as_deref(),
            GroupKey::Phone => self.phone_id.as_deref(),
            GroupKey::User => self.user_id.as_deref(),
        }
    }
}

/// What the operator asks for, as typed (query string or command line).
#[derive(Debug, Clone, clap::Args)]
pub struct UsageParams {
    /// Start of the window: RFC 3339, or a date (midnight in the time zone).
    #[arg(long)]
    pub from: String,
    /// End of the window, excluded: RFC 3339, or a date.
    #[arg(long)]
    pub to: String,
    /// Comma-separated: app, day, phone, user. Empty: one row of totals.
    #[arg(long, default_value = "")]
    pub group_by: String,
    /// IANA zone whose midnights split days (default: usage.time_zone).
    #[arg(long)]
    pub time_zone: Option<String>,
}

#[derive(Debug, Clone)]
pub struct UsageReport {
    pub from: UtcTime,
    pub to: UtcTime,
    pub time_zone: Tz,
    pub rounding: Rounding,
    pub group_by: GroupBy,
    /// Sorted by the group keys, in the order asked.
    pub rows: Vec<UsageRow>,
    pub totals: Counts,
}

/// What the operator typed, parsed: the window, the zone of its days, the store's query.
#[derive(Debug, Clone)]
pub struct Plan {
    pub window: Window,
    pub time_zone: Tz,
    pub query: UsageQuery,
}

pub fn plan(settings: &UsageSettings, params: &UsageParams) -> Result<Plan, ParseError> {
    let time_zone = match params.time_zone.as_deref() {
        None => settings.time_zone,
        Some(name) => name.parse::<Tz>().map_err(|_| {
            ParseError::new("time_zone", Problem::Invalid("not an IANA time zone name"))
        })?,
    };
    let window = Window::parse(&params.from, &params.to, time_zone)?;
    let group_by = GroupBy::parse(&params.group_by)?;
    let query = UsageQuery {
        pieces: pieces(window, group_by.has(GroupKey::Day), time_zone)?,
        group_by,
        rounding: settings.billing_rounding,
    };
    Ok(Plan {
        window,
        time_zone,
        query,
    })
}

impl UsageReport {
    /// The store's answer to `plan.query` (`Store::usage`), sorted by the group keys in the
    /// order asked, with the totals.
    pub fn new(plan: Plan, mut rows: Vec<UsageRow>) -> UsageReport {
        let Plan {
            window,
            time_zone,
            query,
        } = plan;
        let group_by = query.group_by;
        rows.sort_by(|a, b| {
            let keys = group_by.keys().iter();
            keys.map(|k| a.key(*k).cmp(&b.key(*k)))
                .find(|order| order.is_ne())
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        let mut totals = Counts::default();
        rows.iter().for_each(|r| totals.add(&r.counts));
        UsageReport {
            from: window.from,
            to: window.to,
            time_zone,
            rounding: query.rounding,
            group_by,
            rows,
            totals,
        }
    }
}

impl Serialize for UsageReport {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let rows: Vec<_> = self
            .rows
            .iter()
            .map(|row| GroupedRow {
                row,
                group_by: &self.group_by,
            })
            .collect();
        let mut map = serializer.serialize_map(Some(7))?;
        map.serialize_entry("from", &self.from)?;
        map.serialize_entry("to", &self.to)?;
        map.serialize_entry("time_zone", self.time_zone.name())?;
        map.serialize_entry("billing_rounding", &self.rounding)?;
        let keys: Vec<_> = self.group_by.keys().iter().map(|k| k.column()).collect();
        map.serialize_entry("group_by", &keys)?;
        map.serialize_entry("rows", &rows)?;
        map.serialize_entry("totals", &self.totals)?;
        map.end()
    }
}

/// A row in JSON: only the keys grouped by, then the figures.
struct GroupedRow<'a> {
    row: &'a UsageRow,
    group_by: &'a GroupBy,
}

impl Serialize for GroupedRow<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for key in self.group_by.keys() {
            map.serialize_entry(key.column(), &self.row.key(*key))?;
        }
        for (name, value) in Counts::COLUMNS.iter().zip(self.row.counts.values()) {
            map.serialize_entry(name, &value)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_by_keeps_the_order_asked_and_drops_repeats() {
        let g = GroupBy::parse("day, app,day").unwrap();
        assert_eq!(g.keys(), [GroupKey::Day, GroupKey::App]);
        assert_eq!(GroupBy::parse("").unwrap().keys(), []);
        assert_eq!(GroupBy::parse("app,month").unwrap_err().field, "group_by");
    }

    #[test]
    fn rounding_rules() {
        let cases = [
            (0, 0, 0, 0),
            (1, 1, 0, 0),
            (60, 1, 1, 1),
            (61, 2, 1, 1),
            (89, 2, 1, 1),
        ];
        for (secs, started, completed, nearest) in cases {
            assert_eq!(Rounding::StartedMinute.minutes(secs), started, "{secs}");
            assert_eq!(Rounding::CompletedMinute.minutes(secs), completed, "{secs}");
            assert_eq!(Rounding::NearestMinute.minutes(secs), nearest, "{secs}");
        }
        assert_eq!(Rounding::NearestMinute.minutes(90), 2);
    }
}
