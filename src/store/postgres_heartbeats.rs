//! A heartbeat flush chunk on PostgreSQL, which skips the rows other writers hold.
//!
//! The flush touches every playing session and upserts every heartbeating phone, and the
//! enter/quit events, sign checks and mints of the same moment lock some of those rows
//! until they commit. A flush that waited for each (in key order, as every writer locks)
//! waited for several commits in a row, holding the rows it had already locked meanwhile:
//! the session lock alone took 40-146 ms per chunk in the fleet benchmark, and events on
//! the chunk's rows waited behind it. Heartbeats are soft state: a row that is busy now is
//! simply written by the next flush. So the flush locks with `SKIP LOCKED` and hands the
//! heartbeats of busy rows back to the buffer (`HeartbeatBuffer`), which writes them in
//! the next interval unless newer ones arrived. It never waits for a row another writer
//! holds, so it is never part of a lock cycle either: the sessions it touches are open
//! ones, which have no rollup rows (0025's trigger adds only sessions with both ends).

use std::collections::HashSet;

use sqlx::{Postgres, Transaction};

use super::StoreError;
use crate::domain::{Heartbeat, UtcTime};

/// Of the keys `$1` of `$table`, those whose row exists but another transaction holds;
/// locks the others, in key order. The lock runs to its end (MATERIALIZED) before the
/// difference is taken.
macro_rules! busy_rows {
    ($table:literal, $key:literal) => {
        concat!(
            "WITH locked AS MATERIALIZED (SELECT ", $key, " FROM ", $table,
            " WHERE ", $key, " = ANY($1::text[]) ORDER BY ", $key, " FOR UPDATE SKIP LOCKED) ",
            "SELECT ", $key, " FROM ", $table, " WHERE ", $key, " = ANY($1::text[]) ",
            "EXCEPT SELECT ", $key, " FROM locked"
        )
    };
}

const BUSY_SESSIONS: &str = busy_rows!("sessions", "session_id");
const BUSY_PHONES: &str = busy_rows!("phones", "phone_id");

/// Writes what of `heartbeats` it can in `tx`; returns the indices of those deferred
/// because their session or phone was busy. The caller commits.
pub(super) async fn write(
    tx: &mut Transaction<'_, Postgres>,
    heartbeats: &[Heartbeat],
) -> Result<Vec<usize>, StoreError> {
    // Not sorted here: each statement orders its own locks (the busy queries lock in key
    // order, the upsert inserts in key order), and the touch updates only sessions this
    // transaction holds already.
    let session_ids: Vec<&str> = (heartbeats.iter())
        .filter_map(|hb| hb.session_id.as_ref().map(|s| s.as_str()))
        .collect();
    let phone_ids: Vec<&str> = heartbeats.iter().map(|hb| hb.phone_id.as_str()).collect();
    let busy_sessions = busy(tx, BUSY_SESSIONS, &session_ids).await?;
    let busy_phones = busy(tx, BUSY_PHONES, &phone_ids).await?;

    let session_busy = |hb: &Heartbeat| {
        (hb.session_id.as_ref()).is_some_and(|s| busy_sessions.contains(s.as_str()))
    };
    let phone_busy = |hb: &Heartbeat| busy_phones.contains(hb.phone_id.as_str());
    touch_sessions(tx, heartbeats.iter().filter(|hb| !session_busy(hb))).await?;
    upsert_phones(tx, heartbeats.iter().filter(|hb| !phone_busy(hb))).await?;
    Ok((heartbeats.iter().enumerate())
        .filter(|(_, hb)| session_busy(hb) || phone_busy(hb))
        .map(|(i, _)| i)
        .collect())
}

async fn busy(
    tx: &mut Transaction<'_, Postgres>,
    query: &'static str,
    ids: &[&str],
) -> Result<HashSet<String>, StoreError> {
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let rows: Vec<String> = sqlx::query_scalar(query)
        .bind(ids)
        .fetch_all(&mut **tx)
        .await?;
    Ok(rows.into_iter().collect())
}

/// `last_heartbeat_at` of the sessions the heartbeats name, never moved back, while they are
/// open. An ended session is left alone: a heartbeat sent just before its quit changes
/// nothing billed, and its update would run the rollups' trigger (0025) over every bucket
/// the session counts in, locking rows a quit of the same quarter hour may hold.
async fn touch_sessions<'h>(
    tx: &mut Transaction<'_, Postgres>,
    heartbeats: impl Iterator<Item = &'h Heartbeat>,
) -> Result<(), StoreError> {
    let (sessions, times): (Vec<&str>, Vec<UtcTime>) = heartbeats
        .filter_map(|hb| hb.session_id.as_ref().map(|s| (s.as_str(), hb.time)))
        .unzip();
    if sessions.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE sessions SET last_heartbeat_at = u.t \
         FROM UNNEST($1::text[], $2::timestamptz[]) AS u(s, t) \
         WHERE sessions.session_id = u.s AND sessions.ended_at IS NULL \
           AND (sessions.last_heartbeat_at IS NULL OR sessions.last_heartbeat_at < u.t)",
    )
    .bind(&sessions)
    .bind(&times)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Creates or updates the phones, in key order. A phone no row exists for yet is inserted;
/// another writer creating it at the same moment makes this one wait (once per phone).
async fn upsert_phones<'h>(
    tx: &mut Transaction<'_, Postgres>,
    heartbeats: impl Iterator<Item = &'h Heartbeat>,
) -> Result<(), StoreError> {
    let heartbeats: Vec<&Heartbeat> = heartbeats.collect();
    if heartbeats.is_empty() {
        return Ok(());
    }
    let column = |f: fn(&Heartbeat) -> Option<&str>| -> Vec<Option<&str>> {
        heartbeats.iter().map(|hb| f(hb)).collect()
    };
    let times: Vec<UtcTime> = heartbeats.iter().map(|hb| hb.time).collect();
    let received: Vec<UtcTime> = heartbeats.iter().map(|hb| hb.received_at).collect();
    sqlx::query(concat!(
        "INSERT INTO phones (phone_id, last_heartbeat_at, last_seen_at, \
           heartbeat_session_id, heartbeat_app_id, created_at, updated_at) \
         SELECT p, t, r, s, a, r, r \
         FROM UNNEST($1::text[], $2::timestamptz[], $3::timestamptz[], $4::text[], $5::text[]) \
           AS u(p, t, r, s, a) ORDER BY p",
        crate::store::book::heartbeat_upsert!()
    ))
    .bind(column(|hb| Some(hb.phone_id.as_str())))
    .bind(&times)
    .bind(&received)
    .bind(column(|hb| hb.session_id.as_ref().map(|s| s.as_str())))
    .bind(column(|hb| hb.app_id.as_ref().map(|a| a.as_str())))
    .execute(&mut **tx)
    .await?;
    Ok(())
}
