//! One writer's round in one transaction: the mints, sign checks (6.1) and enter/quit events
//! (6.2, 6.3) that queued together, each kind through its own set-wise batch function. On
//! SQLite every durable write then costs the round's one fsync instead of one per kind.

use super::event_batch::{self, BatchTx};
use super::sql::{Sql, args, json_list};
use super::{
    Allocation, Applied, ApplyRules, MintRequest, PresentedSignCheck, ReceivedEvent,
    SignCheckOutcome, StoreError, queue, sign_check_batch,
};
use crate::access::Rules;

/// What a round writes, by kind, each kind in arrival order.
pub struct Round<'a> {
    pub mints: &'a [&'a MintRequest],
    pub checks: &'a [&'a PresentedSignCheck],
    pub events: &'a [&'a ReceivedEvent],
    pub apply: ApplyRules,
    pub access: &'a Rules,
}

/// One answer per job of each kind of the [`Round`], in its order.
pub struct RoundDone {
    pub minted: Vec<Allocation>,
    pub checked: Vec<SignCheckOutcome>,
    pub applied: Vec<Applied>,
}

/// Writes `round` in `tx`; the caller commits. Mints, then sign checks, then events: a
/// session's own order (minted, its ticket checked, entered, quit). Every job of a round was
/// waiting for its answer when the round began, so none was answered before another was
/// sent: any order among them is one the callers could have seen, and this one decides a
/// sign check and the enter that raced it as the phone meant them.
pub(super) async fn write<T: Sql + BatchTx>(
    tx: &mut T,
    round: &Round<'_>,
) -> Result<RoundDone, StoreError> {
    lock_in_order(tx, round).await?;
    let minted = match round.mints.is_empty() {
        true => Vec::new(),
        false => queue::mint_batch(tx, round.mints).await?,
    };
    let checked = match round.checks.is_empty() {
        true => Vec::new(),
        false => sign_check_batch::check_signs(tx, round.checks, round.access).await?,
    };
    let applied = event_batch::apply(tx, round.events, round.apply).await?;
    Ok(RoundDone {
        minted,
        checked,
        applied,
    })
}

/// On PostgreSQL, when a round holds sign checks: locks every session of the round, then
/// every phone they hold or the events name, each in key order. Each batch
/// function locks its own sessions then phones in key order, as every writer does; two of
/// them in one transaction would lock sessions after phones, and two writers (or
/// replicas) could then wait for each other in a cycle. Taken up front, the round's locks
/// follow the one order, and the batch functions find their rows already held. SQLite's
/// one writer connection is the lock there. On PostgreSQL mints have a writer of their own
/// (`DatabaseSettings::mints_share_the_writers`), so a round holds mints or callbacks, not
/// both: a mint's pick of a free phone locks phones before the session it creates.
async fn lock_in_order<S: Sql>(tx: &mut S, round: &Round<'_>) -> Result<(), StoreError> {
    // With sign checks alone too: a first use's consumption updates its phone in the
    // statement's join order, not key order, and crossed a heartbeat flush's upsert (which
    // takes phones in key order): PostgreSQL's log showed the deadlock under the capacity
    // mix, and the round failed after `deadlock_timeout`. Events alone lock their own rows
    // in key order (`event_batch`).
    if !S::LOCKS_ROWS || round.checks.is_empty() {
        return Ok(());
    }
    let sessions = round.checks.iter().map(|c| c.session_id.as_str());
    let sessions = sessions.chain(round.events.iter().map(|r| r.event.session_id.as_str()));
    let sessions = json_list(&sessions.collect::<Vec<_>>())?;
    let phones: Vec<_> = round.events.iter().map(|r| r.event.phone_id.as_str()).collect();
    let phones = json_list(&phones)?;
    let _: Vec<(String,)> = tx.fetch_all(LOCK_SESSIONS, &args![sessions.as_str()]).await?;
    let args = args![sessions.as_str(), phones.as_str()];
    let _: Vec<(String,)> = tx.fetch_all(LOCK_PHONES, &args).await?;
    Ok(())
}

/// `$1`: a JSON array of session ids.
const LOCK_SESSIONS: &str = "\
    SELECT session_id FROM sessions \
    WHERE session_id = ANY(ARRAY(SELECT json_array_elements_text($1::json))) \
    ORDER BY session_id FOR UPDATE";

/// `$1` as in [`LOCK_SESSIONS`], `$2` the events' phone ids: the phones the event batch's
/// read locks (those the events name and the sessions hold), which include those a first
/// use's hold writes. A separate statement, so every session is held before any phone.
const LOCK_PHONES: &str = "\
    SELECT phone_id FROM phones \
    WHERE phone_id = ANY(ARRAY( \
        SELECT json_array_elements_text($2::json) \
        UNION SELECT phone_id FROM sessions \
          WHERE session_id = ANY(ARRAY(SELECT json_array_elements_text($1::json))))) \
    ORDER BY phone_id FOR UPDATE";
