//! The usage query (see `crate::usage` for the rules it implements), aggregated in the
//! database so a month of millions of sessions never crosses the wire row by row.
//!
//! Shape, on both backends: the pieces of time (the window, or its days) are a small
//! table; each piece is joined to the sessions that overlap it, found through the
//! `sessions_by_start` index. A session overlapping a piece started before its end and at
//! most the longest recorded duration before its start, so the index range is bounded by
//! `max(duration_seconds)` (itself read from the `sessions_by_duration` index) instead of
//! reaching back to the first session ever recorded.
//!
//! Each (piece, session) pair yields `sa`/`sb`: whole seconds from the session's start to
//! where the piece clips it. Seconds of the part are `sb - sa`, billable minutes
//! `minutes(sb) - minutes(sa)` with the configured rounding, so parts always add up to the
//! session's rounded total. Only the time arithmetic differs between the backends.

use crate::usage::{GroupKey, UsageQuery};

/// The aggregation over the (piece, session) pairs, common to both backends.
/// `$5` is the rounding offset in seconds.
macro_rules! usage_sql {
    (with = $with:expr, pairs = $pairs:expr) => {
        concat!(
            $with,
            "SELECT day, app_id, phone_id, user_id, \
               CAST(coalesce(sum(CASE WHEN closed AND starts_here THEN 1 ELSE 0 END), 0) AS BIGINT) \
                 AS sessions, \
               CAST(coalesce(sum(CASE WHEN closed THEN sb - sa ELSE 0 END), 0) AS BIGINT) AS seconds, \
               CAST(coalesce(sum(CASE WHEN closed THEN (sb + $5) / 60 - (sa + $5) / 60 ELSE 0 END), 0) \
                 AS BIGINT) AS billable_minutes, \
               CAST(coalesce(sum(CASE WHEN closed AND starts_here AND abandoned THEN 1 ELSE 0 END), 0) \
                 AS BIGINT) AS abandoned, \
               CAST(coalesce(sum(CASE WHEN closed AND starts_here AND mismatch THEN 1 ELSE 0 END), 0) \
                 AS BIGINT) AS run_time_mismatches, \
               CAST(coalesce(sum(CASE WHEN NOT closed AND starts_here THEN 1 ELSE 0 END), 0) \
                 AS BIGINT) AS open_sessions \
             FROM (",
            $pairs,
            ") AS pairs GROUP BY day, app_id, phone_id, user_id"
        )
    };
}

/// SQLite's pieces of time as a table `p(day, d0, d1)`, from the JSON array `$1`.
macro_rules! sqlite_pieces {
    () => {
        "WITH p AS MATERIALIZED (SELECT json_extract(value, '$[0]') AS day, \
       json_extract(value, '$[1]') AS d0, json_extract(value, '$[2]') AS d1 \
       FROM json_each($1)) "
    };
}

/// SQLite: times are INTEGER milliseconds; the pieces arrive as a JSON array of
/// `[day, start_ms, end_ms]`, unpacked once: inlined, SQLite would call json_extract again
/// for every session row, which cost more than the rest of the query. `CROSS JOIN` keeps
/// the pieces as the outer loop (SQLite's rule for CROSS JOIN), so each piece is one index
/// range scan.
/// `sa`, `sb`: whole seconds from a session's start to where piece `p` clips its start and
/// its end (never before its start). The raw query and the rollups' long sessions both
/// measure with these, so the two cannot drift apart.
macro_rules! sqlite_clip {
    () => {
        "(max(s.started_at, p.d0) - s.started_at) / 1000 AS sa, \
         (min(max(s.ended_at, s.started_at), p.d1) - s.started_at) / 1000 AS sb"
    };
}

macro_rules! sqlite_sql {
    () => {
        usage_sql!(
            with = sqlite_pieces!(),
            pairs = concat!(
                "SELECT p.day AS day, \
       CASE WHEN $2 THEN s.app_id END AS app_id, \
       CASE WHEN $3 THEN s.phone_id END AS phone_id, \
       CASE WHEN $4 THEN s.user_id END AS user_id, \
       s.ended_at IS NOT NULL AS closed, \
       s.started_at >= p.d0 AS starts_here, \
       coalesce(s.end_reason = 'abandoned', 0) AS abandoned, \
       s.run_time_mismatch AS mismatch, ",
                sqlite_clip!(),
                " FROM p CROSS JOIN sessions AS s \
     WHERE s.started_at >= p.d0 - \
             (SELECT coalesce(max(duration_seconds), 0) + 1 FROM sessions) * 1000 \
       AND s.started_at < p.d1 \
       AND (s.started_at >= p.d0 OR s.ended_at > p.d0)"
            )
        )
    };
}
pub(super) const SQLITE: &str = sqlite_sql!();
/// The plan, as `cphub usage --explain` shows it.
pub(super) const SQLITE_EXPLAIN: &str = concat!("EXPLAIN QUERY PLAN ", sqlite_sql!());

/// As [`sqlite_clip`], on TIMESTAMPTZ.
macro_rules! postgres_clip {
    () => {
        "floor(extract(epoch FROM greatest(s.started_at, p.d0) - s.started_at))::bigint AS sa, \
         floor(extract(epoch FROM least(greatest(s.ended_at, s.started_at), p.d1) \
         - s.started_at))::bigint AS sb"
    };
}

/// PostgreSQL: TIMESTAMPTZ; the pieces arrive as three arrays. The look back from each
/// piece (as far as the longest session) is taken in epoch seconds and held at 4685 BC,
/// inside PostgreSQL's timestamps: a quit stamped 9999 by a phone with a wrong clock made
/// `d0 - interval` overflow, and every report failed while that session was in the book.
macro_rules! postgres_sql {
    () => {
        usage_sql!(
            with = "",
            pairs = concat!(
                "SELECT p.day AS day, \
       CASE WHEN $2::boolean THEN s.app_id END AS app_id, \
       CASE WHEN $3::boolean THEN s.phone_id END AS phone_id, \
       CASE WHEN $4::boolean THEN s.user_id END AS user_id, \
       s.ended_at IS NOT NULL AS closed, \
       s.started_at >= p.d0 AS starts_here, \
       coalesce(s.end_reason = 'abandoned', false) AS abandoned, \
       s.run_time_mismatch AS mismatch, ",
                postgres_clip!(),
                " FROM unnest($1::text[], $6::timestamptz[], $7::timestamptz[]) AS p(day, d0, d1) \
     JOIN sessions AS s \
       ON s.started_at >= to_timestamp(greatest(extract(epoch FROM p.d0) - \
            (SELECT coalesce(max(duration_seconds), 0) + 1 FROM sessions), -210000000000)) \
      AND s.started_at < p.d1 \
     WHERE s.started_at >= p.d0 OR s.ended_at > p.d0"
            )
        )
    };
}
pub(super) const POSTGRES: &str = postgres_sql!();
/// Runs the query and reports the plan with real row counts and buffer use.
pub(super) const POSTGRES_EXPLAIN: &str = concat!("EXPLAIN (ANALYZE, BUFFERS) ", postgres_sql!());

/// Which keys to group by, as the `$2..$4` flags (day grouping is in the pieces).
pub(super) fn grouped(query: &UsageQuery) -> [bool; 3] {
    [GroupKey::App, GroupKey::Phone, GroupKey::User].map(|k| query.group_by.has(k))
}

/// The day label of each piece (None when not grouping by day).
pub(super) fn day_labels(query: &UsageQuery) -> Vec<Option<String>> {
    query
        .pieces
        .iter()
        .map(|p| p.day.map(|d| d.to_string()))
        .collect()
}

/// The rollups' part of a query (see `crate::usage::Split`): its pieces are whole buckets
/// of `usage_rollups`, read through the table's primary key, plus what the rollups do not
/// hold: the sessions still open that started in them (the `sessions_open` index), and the
/// closed sessions longer than 31 days that overlap them (0011 leaves those out; the
/// `sessions_by_duration` index finds the few there are), measured as the raw query
/// measures them. A group is reported when a session overlaps it (`touching`), as the raw
/// query does. `$2` groups by app, `$3` is the rounding offset, which picks the minutes column.
macro_rules! rollup_sql {
    (with = $with:expr, cast = $cast:literal, null = $null:literal, long = $long:expr) => {
        concat!(
            $with,
            "SELECT day, app_id, ",
            $null,
            " AS phone_id, ",
            $null,
            " AS user_id, \
               CAST(sum(sessions) AS BIGINT) AS sessions, \
               CAST(sum(seconds) AS BIGINT) AS seconds, \
               CAST(sum(billable_minutes) AS BIGINT) AS billable_minutes, \
               CAST(sum(abandoned) AS BIGINT) AS abandoned, \
               CAST(sum(run_time_mismatches) AS BIGINT) AS run_time_mismatches, \
               CAST(sum(open) AS BIGINT) AS open_sessions \
             FROM (\
               SELECT p.day AS day, CASE WHEN $2",
            $cast,
            " THEN r.app_id END AS app_id, \
                 r.touching AS touching, r.sessions AS sessions, r.seconds AS seconds, \
                 CASE $3 WHEN 59 THEN r.minutes_started WHEN 30 THEN r.minutes_nearest \
                   ELSE r.minutes_completed END AS billable_minutes, \
                 r.abandoned AS abandoned, r.run_time_mismatches AS run_time_mismatches, \
                 0 AS open \
               FROM p CROSS JOIN usage_rollups AS r \
               WHERE r.bucket_start >= p.d0 AND r.bucket_start < p.d1 \
               UNION ALL \
               SELECT p.day, CASE WHEN $2",
            $cast,
            " THEN s.app_id END, 1, 0, 0, 0, 0, 0, 1 \
               FROM p CROSS JOIN sessions AS s \
               WHERE s.ended_at IS NULL AND s.started_at >= p.d0 AND s.started_at < p.d1 \
               UNION ALL \
               SELECT day, app_id, 1, CASE WHEN starts_here THEN 1 ELSE 0 END, sb - sa, \
                 (sb + $3) / 60 - (sa + $3) / 60, \
                 CASE WHEN starts_here AND abandoned THEN 1 ELSE 0 END, \
                 CASE WHEN starts_here AND mismatch THEN 1 ELSE 0 END, 0 \
               FROM (SELECT p.day AS day, CASE WHEN $2",
            $cast,
            " THEN s.app_id END AS app_id, \
                   s.started_at >= p.d0 AS starts_here, \
                   s.end_reason IS NOT NULL AND s.end_reason = 'abandoned' AS abandoned, \
                   s.run_time_mismatch AS mismatch, ",
            $long,
            ") AS long\
             ) AS parts GROUP BY day, app_id HAVING sum(touching) > 0"
        )
    };
}

/// Closed sessions the rollups leave out (0011's trigger: longer than 31 days), as
/// `(sa, sb)` pairs with each piece they overlap, computed as the raw query computes them.
/// `duration_seconds` (whole seconds of the same difference) narrows them through its
/// index; the difference itself is the trigger's exact test.
macro_rules! long_pairs {
    (clip = $clip:expr, longer = $longer:literal) => {
        concat!(
            $clip,
            " FROM p CROSS JOIN sessions AS s \
             WHERE s.duration_seconds >= 2678400 AND ",
            $longer,
            " AND s.started_at < p.d1 AND (s.started_at >= p.d0 OR s.ended_at > p.d0)"
        )
    };
}

macro_rules! sqlite_rollup_sql {
    () => {
        rollup_sql!(
            with = sqlite_pieces!(),
            cast = "",
            null = "NULL",
            long = long_pairs!(
                clip = sqlite_clip!(),
                longer = "s.ended_at - s.started_at > 2678400000"
            )
        )
    };
}
pub(super) const SQLITE_ROLLUPS: &str = sqlite_rollup_sql!();
pub(super) const SQLITE_ROLLUPS_EXPLAIN: &str =
    concat!("EXPLAIN QUERY PLAN ", sqlite_rollup_sql!());

macro_rules! postgres_rollup_sql {
    () => {
        rollup_sql!(
            with = "WITH p AS (SELECT * FROM unnest($1::text[], $4::timestamptz[], \
       $5::timestamptz[]) AS p(day, d0, d1)) ",
            cast = "::boolean",
            null = "NULL::text",
            long = long_pairs!(
                clip = postgres_clip!(),
                longer = "s.ended_at - s.started_at > interval '31 days'"
            )
        )
    };
}
pub(super) const POSTGRES_ROLLUPS: &str = postgres_rollup_sql!();
pub(super) const POSTGRES_ROLLUPS_EXPLAIN: &str =
    concat!("EXPLAIN (ANALYZE, BUFFERS) ", postgres_rollup_sql!());
