//! Retention of the session book: closed sessions past `book.retention_days` and their event
//! log are removed in batches, never one the usage rollups have not folded in, nor one whose
//! webhook events are not delivered yet (docs/scaling.md#retention-of-the-session-book).

use super::StoreError;
use super::sql::{Sql, args};
use crate::domain::UtcTime;
use crate::usage::LONGEST_ROLLED_UP_SECS;

/// What one retention pass may remove.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Sessions that ended (by the phone's clock), or expired unplayed (by cphub's), before
    /// this are old enough.
    pub before: UtcTime,
    /// Sessions per transaction: a pass is short, so the event writer waits little for it.
    pub batch: i64,
    /// Whether the webhook dispatcher runs. Without it the outbox is never fanned out, so an
    /// event not fanned out holds nobody back; with it, its session waits until it is.
    pub webhooks_enabled: bool,
}

/// The sessions a batch may take. Closed (`ended`, `abandoned`) with a known start and a
/// length the rollups keep (0011 leaves out sessions longer than 31 days), or `expired`
/// without a start: neither live nor waiting for a late enter. None with an outbox row not
/// fanned out, or a delivery not delivered (pending, or failed until an operator retries it).
/// On PostgreSQL they are locked, skipping those a writer holds: those wait for the next pass.
fn pick_sql<D: Sql>() -> &'static str {
    macro_rules! pick {
        ($lock:literal) => {
            concat!(
                "INSERT INTO retention_batch (session_id) \
                 SELECT s.session_id FROM sessions AS s \
                 WHERE ((s.state IN ('ended', 'abandoned') AND s.started_at < $1 \
                         AND s.ended_at < $1 AND s.duration_seconds < $2) \
                     OR (s.state = 'expired' AND s.started_at IS NULL AND s.created_at < $1)) \
                   AND NOT EXISTS (SELECT 1 FROM webhook_deliveries AS d \
                       WHERE d.subject = s.session_id AND d.state <> 'delivered') \
                   AND (NOT $3 OR NOT EXISTS (SELECT 1 FROM webhook_events AS e \
                       WHERE e.subject = s.session_id AND NOT e.fanned_out)) \
                 LIMIT $4",
                $lock
            )
        };
    }
    match D::LOCKS_ROWS {
        true => pick!(" FOR UPDATE OF s SKIP LOCKED"),
        false => pick!(""),
    }
}

/// The batch's events. On PostgreSQL only those outside the day partitions of the event
/// log (0014): a day's partition is dropped whole once it is past retention
/// (`session_events_maintain`), with the events of every session removed before.
fn forget_events_sql<D: Sql>() -> &'static str {
    match D::LOCKS_ROWS {
        true => "SELECT session_events_forget()",
        false => {
            "DELETE FROM session_events \
             WHERE session_id IN (SELECT session_id FROM retention_batch)"
        }
    }
}

/// Removes one batch in the caller's transaction; how many sessions went. The rollups keep
/// their figures: the delete trigger leaves the sessions of `retention_batch` alone (0014).
pub(super) async fn remove_batch<D: Sql>(tx: &mut D, r: &Retention) -> Result<u64, StoreError> {
    let picked = args![
        r.before,
        LONGEST_ROLLED_UP_SECS,
        r.webhooks_enabled,
        r.batch
    ];
    tx.execute(pick_sql::<D>(), &picked).await?;
    tx.execute(forget_events_sql::<D>(), &args![]).await?;
    let sessions =
        "DELETE FROM sessions WHERE session_id IN (SELECT session_id FROM retention_batch)";
    let removed = tx.execute(sessions, &args![]).await?;
    tx.execute("DELETE FROM retention_batch", &args![]).await?;
    Ok(removed)
}
