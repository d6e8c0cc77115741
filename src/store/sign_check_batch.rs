//! A batch of sign checks (chapter 6.1), decided and recorded in the ticket writer's one
//! transaction: one read of the batch's sessions, every check decided in memory in arrival
//! order by `access::decide`, then one write of the first uses (`book::mark_verified`). A
//! sign check so costs no round trip of its own, as an event costs none in `event_batch`.

use std::borrow::Borrow;
use std::collections::HashMap;

use super::book::{self, issued_access_columns};
use super::codec::IssuedAccessRow;
use super::sql::{Sql, args};
use super::{Admission, PresentedSignCheck, SignCheckOutcome, StoreError, Verification};
use crate::access::{self, Issued, Refusal, Rules, Verdict};
use crate::domain::UtcTime;

/// Decides `checks` in order and records what they admit; one outcome per check. Owned or
/// borrowed: a writer's round lends the checks it holds among its other jobs.
pub(super) async fn check_signs<S: Sql, C: Borrow<PresentedSignCheck> + Sync>(
    tx: &mut S,
    checks: &[C],
    rules: &Rules,
) -> Result<Vec<SignCheckOutcome>, StoreError> {
    let mut issued = read_issued(tx, checks).await?;
    let mut outcomes = Vec::with_capacity(checks.len());
    let (mut places, mut verifications) = (Vec::new(), Vec::new());
    for (place, check) in checks.iter().map(Borrow::borrow).enumerate() {
        let session = issued.get_mut(check.session_id.as_str());
        let verified_at = session.as_ref().and_then(|s| s.verified_at);
        let outcome = decide(session, check, rules);
        if let Ok((verdict, _)) = &outcome.verdict
            && let Some(verification) = to_record(check, *verdict, verified_at)
        {
            places.push(place);
            verifications.push(verification);
        }
        outcomes.push(outcome);
    }
    let recorded = book::mark_verified(tx, &verifications).await?;
    for ((place, verification), recorded) in places.into_iter().zip(&verifications).zip(recorded) {
        if !recorded {
            outcomes[place].verdict = Err(lost(verification.admission));
        }
    }
    Ok(outcomes)
}

/// The batch's sessions that were issued a ticket, by id, read once. PostgreSQL locks
/// them in key order, as every writer locks sessions, so nothing changes them between this
/// read and the write; SQLite's one writer connection is the lock there.
async fn read_issued<S: Sql, C: Borrow<PresentedSignCheck>>(
    tx: &mut S,
    checks: &[C],
) -> Result<HashMap<String, Issued>, StoreError> {
    let ids: Vec<&str> = checks.iter().map(|c| c.borrow().session_id.as_str()).collect();
    let ids = serde_json::to_string(&ids).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let sql = match S::LOCKS_ROWS {
        true => READ_ISSUED_POSTGRES,
        false => READ_ISSUED_SQLITE,
    };
    let rows: Vec<IssuedAccessRow> = tx.fetch_all(sql, &args![ids.as_str()]).await?;
    rows.into_iter().map(IssuedAccessRow::keyed).collect()
}

/// `$1`: a JSON array of session ids.
const READ_ISSUED_SQLITE: &str = concat!(
    "SELECT ",
    issued_access_columns!(),
    " FROM sessions WHERE session_id IN (SELECT value FROM json_each($1)) \
       AND issued AND ticket_hash IS NOT NULL"
);

/// `$1` as on SQLite; gathered into one array, the ids probe the primary key.
const READ_ISSUED_POSTGRES: &str = concat!(
    "SELECT ",
    issued_access_columns!(),
    " FROM sessions \
     WHERE session_id = ANY(ARRAY(SELECT json_array_elements_text($1::json))) \
       AND issued AND ticket_hash IS NOT NULL \
     ORDER BY session_id FOR UPDATE"
);

/// One check against its session as the batch left it; a session cphub never issued a
/// ticket for is unknown.
fn decide(
    issued: Option<&mut Issued>,
    check: &PresentedSignCheck,
    rules: &Rules,
) -> SignCheckOutcome {
    let Some(issued) = issued else {
        return SignCheckOutcome {
            data: None,
            verdict: Err(Refusal::UnknownSession),
        };
    };
    let decision = access::decide(issued, &check.presented, check.now, rules);
    SignCheckOutcome {
        data: decision.data,
        verdict: decision.verdict.map(|v| (v, issued.aes_key.clone())),
    }
}

/// What an admitted check writes: a first use consumes the ticket, a reconnect logs a
/// line (and holds a phone not entered yet again); a retry writes nothing. `verified_at`:
/// the session's first use, before this check.
fn to_record(
    check: &PresentedSignCheck,
    verdict: Verdict,
    verified_at: Option<UtcTime>,
) -> Option<Verification> {
    let admission = match verdict {
        Verdict::FirstUse => Admission::FirstUse {
            hold_until: check.hold_until,
        },
        Verdict::Reconnect => Admission::Reconnect {
            hold_until: reconnect_hold(check, verified_at),
        },
        Verdict::Retry => return None,
    };
    Some(Verification {
        session_id: check.session_id.clone(),
        digest: check.presented.digest().to_owned(),
        now: check.now,
        admission,
    })
}

/// How long a reconnect before the enter holds the phone: an enter window from now, as the
/// first use gave, but at most one window past the first use's own, so that a client
/// reconnecting in a loop (a game that crashes at launch) cannot hold the phone for good.
fn reconnect_hold(check: &PresentedSignCheck, verified_at: Option<UtcTime>) -> UtcTime {
    let window = check.hold_until.epoch_millis() - check.now.epoch_millis();
    let cap = verified_at.and_then(|at| UtcTime::from_epoch_millis(at.epoch_millis() + 2 * window));
    cap.map_or(check.hold_until, |cap| cap.min(check.hold_until))
}

/// What a check is told when its write found the session moved on. The read holds the
/// sessions until the commit, so this answers a book changed behind the writer's back (not
/// expected): the ticket was used, or the session ended.
fn lost(admission: Admission) -> Refusal {
    match admission {
        Admission::FirstUse { .. } => Refusal::Replayed,
        Admission::Reconnect { .. } => Refusal::SessionEnded,
    }
}
