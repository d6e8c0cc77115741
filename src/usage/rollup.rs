//! Which parts of a usage query the rollups answer (`usage_rollups`, migration 0011), and
//! how their answer joins the rest.
//!
//! Every figure of the raw query is additive over time: a session's seconds in `[a, c)` are
//! `g(c) - g(a)`, with `g(x)` the whole seconds from its start to `x` clipped to the session,
//! so they are the seconds in `[a, b)` plus those in `[b, c)` for any `b`; its billable
//! minutes likewise (`minutes(g(c)) - minutes(g(a))`), and a start falls in exactly one
//! part. So a piece of time is cut at the first and last rollup bucket bounds inside it:
//! the whole buckets between come from the rollups, the ragged edges from the sessions,
//! and the sum is exactly the raw answer.

use std::collections::HashMap;

use super::{GroupKey, Piece, UsageQuery, UsageRow};
use crate::domain::UtcTime;

/// The rollups' bucket: a quarter hour, on which every time zone in use has its midnights.
pub const BUCKET_MILLIS: i64 = 15 * 60 * 1000;

/// Longer sessions are not rolled up (migration 0011: one quit must not write a bucket per
/// quarter hour of years); the rollups' query reads them from the sessions, and retention
/// keeps them.
pub const LONGEST_ROLLED_UP_SECS: i64 = 31 * 86_400;

/// A usage query cut in two: what the rollups answer and what the sessions answer.
#[derive(Debug, Clone)]
pub struct Split {
    /// Whole buckets only.
    pub rollups: UsageQuery,
    /// The edges, and pieces too short to hold a whole bucket.
    pub raw: UsageQuery,
}

impl UsageQuery {
    /// None when the query groups by phone or user, which the rollups do not keep.
    pub fn split_for_rollups(&self) -> Option<Split> {
        if self.group_by.has(GroupKey::Phone) || self.group_by.has(GroupKey::User) {
            return None;
        }
        let (mut rollups, mut raw) = (Vec::new(), Vec::new());
        for piece in &self.pieces {
            cut(piece, &mut rollups, &mut raw);
        }
        let with = |pieces| UsageQuery {
            pieces,
            ..self.clone()
        };
        Some(Split {
            rollups: with(rollups),
            raw: with(raw),
        })
    }
}

fn cut(piece: &Piece, rollups: &mut Vec<Piece>, raw: &mut Vec<Piece>) {
    let (start, end) = (piece.start.epoch_millis(), piece.end.epoch_millis());
    let first = start.div_euclid(BUCKET_MILLIS) * BUCKET_MILLIS;
    let first = if first < start {
        first + BUCKET_MILLIS
    } else {
        first
    };
    let last = end.div_euclid(BUCKET_MILLIS) * BUCKET_MILLIS;
    let part = |from: i64, to: i64| Piece {
        day: piece.day,
        start: time(from),
        end: time(to),
    };
    if first >= last {
        raw.push(piece.clone());
        return;
    }
    rollups.push(part(first, last));
    if start < first {
        raw.push(part(start, first));
    }
    if last < end {
        raw.push(part(last, end));
    }
}

/// A bucket bound between two valid times is a valid time.
fn time(millis: i64) -> UtcTime {
    UtcTime::from_epoch_millis(millis).expect("a bucket bound inside the window")
}

/// A row's day, app, phone and user.
type GroupOf = [Option<String>; 4];

/// Rows of the same group (from the rollups and from the edges) summed into one.
pub fn merge(rows: Vec<UsageRow>) -> Vec<UsageRow> {
    let mut merged: Vec<UsageRow> = Vec::with_capacity(rows.len());
    let mut index: HashMap<GroupOf, usize> = HashMap::new();
    for row in rows {
        let key = [&row.day, &row.app_id, &row.phone_id, &row.user_id].map(Clone::clone);
        match index.get(&key) {
            Some(&at) => merged[at].counts.add(&row.counts),
            None => {
                index.insert(key, merged.len());
                merged.push(row);
            }
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::{Counts, GroupBy, Rounding, Window, pieces};
    use chrono_tz::Tz;

    fn query(from: &str, to: &str, group_by: &str, zone: Tz) -> UsageQuery {
        let window = Window::parse(from, to, zone).unwrap();
        let group_by = GroupBy::parse(group_by).unwrap();
        UsageQuery {
            pieces: pieces(window, group_by.has(GroupKey::Day), zone).unwrap(),
            group_by,
            rounding: Rounding::StartedMinute,
        }
    }

    fn spans(q: &UsageQuery) -> Vec<(String, String)> {
        let text = |t: UtcTime| t.datetime().format("%d %H:%M:%S").to_string();
        q.pieces
            .iter()
            .map(|p| (text(p.start), text(p.end)))
            .collect()
    }

    #[test]
    fn whole_buckets_from_rollups_ragged_edges_from_sessions() {
        let q = query(
            "2026-11-01T10:07:00Z",
            "2026-11-02T00:20:30Z",
            "app",
            Tz::UTC,
        );
        let split = q.split_for_rollups().unwrap();
        let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());
        assert_eq!(spans(&split.rollups), [pair("01 10:15:00", "02 00:15:00")]);
        assert_eq!(
            spans(&split.raw),
            [
                pair("01 10:07:00", "01 10:15:00"),
                pair("02 00:15:00", "02 00:20:30")
            ]
        );
    }

    #[test]
    fn days_of_a_half_hour_zone_are_whole_buckets() {
        let q = query("2026-11-01", "2026-11-04", "day", chrono_tz::Asia::Kolkata);
        let split = q.split_for_rollups().unwrap();
        assert_eq!(split.rollups.pieces, q.pieces);
        assert!(split.raw.pieces.is_empty());
    }

    #[test]
    fn a_piece_shorter_than_a_bucket_is_all_edge() {
        let q = query("2026-11-01T10:01:00Z", "2026-11-01T10:29:00Z", "", Tz::UTC);
        let split = q.split_for_rollups().unwrap();
        assert!(split.rollups.pieces.is_empty());
        assert_eq!(split.raw.pieces, q.pieces);
    }

    #[test]
    fn phone_and_user_groupings_read_the_sessions() {
        for group_by in ["phone", "app,user", "day,phone"] {
            let q = query("2026-11-01", "2026-11-02", group_by, Tz::UTC);
            assert!(q.split_for_rollups().is_none(), "{group_by}");
        }
    }

    #[test]
    fn merge_sums_rows_of_one_group() {
        let row = |app: &str, seconds| UsageRow {
            day: None,
            app_id: Some(app.to_owned()),
            phone_id: None,
            user_id: None,
            counts: Counts {
                seconds,
                ..Counts::default()
            },
        };
        let merged = merge(vec![row("a", 1), row("b", 2), row("a", 3)]);
        assert_eq!(merged, [row("a", 4), row("b", 2)]);
    }
}
