//! The webhook outbox's SQL, shared by both backends as plain functions over [`Sql`] (like
//! `book.rs`). The outbox rows are written by the triggers of migration 0013, never here:
//! that is what keeps each in the transaction of the change it reports.

use super::StoreError;
use super::sql::{Sql, args, json_list};
use crate::domain::{DeliveryState, UtcTime, WebhookEventId, WebhookEventType};

/// One fact of the outbox, as the triggers recorded it.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEvent {
    /// Commit order within a subject.
    pub seq: i64,
    /// Stable for the fact: `evt_` + type + subject (docs/webhooks.md).
    pub id: String,
    pub event_type: WebhookEventType,
    /// The session, phone or server the event is about; its deliveries are ordered by it.
    pub subject: String,
    pub occurred_at: UtcTime,
    pub recorded_at: UtcTime,
    /// The fact as the book holds it: times as epoch milliseconds.
    pub data: serde_json::Value,
}

#[derive(sqlx::FromRow)]
struct OutboxRow {
    seq: i64,
    event_id: String,
    r#type: String,
    subject: String,
    occurred_at: UtcTime,
    recorded_at: UtcTime,
    data: String,
}

impl TryFrom<OutboxRow> for OutboxEvent {
    type Error = StoreError;

    fn try_from(row: OutboxRow) -> Result<Self, StoreError> {
        let corrupt = |e: String| StoreError::Corrupt(format!("webhook event {}: {e}", row.seq));
        let event_type = WebhookEventType::try_from(row.r#type.clone()).map_err(corrupt)?;
        let data = serde_json::from_str(&row.data).map_err(|e| corrupt(e.to_string()))?;
        Ok(OutboxEvent {
            seq: row.seq,
            id: row.event_id,
            event_type,
            subject: row.subject,
            occurred_at: row.occurred_at,
            recorded_at: row.recorded_at,
            data,
        })
    }
}

/// The outbox after `after_seq`, in `seq` order.
pub(super) async fn events(
    db: &mut impl Sql,
    after_seq: i64,
    limit: i64,
) -> Result<Vec<OutboxEvent>, StoreError> {
    let sql = "SELECT seq, event_id, type, subject, occurred_at, recorded_at, data \
               FROM webhook_events WHERE seq > $1 ORDER BY seq LIMIT $2";
    let rows: Vec<OutboxRow> = db.fetch_all(sql, &args![after_seq, limit]).await?;
    rows.into_iter().map(OutboxEvent::try_from).collect()
}

/// An endpoint as the fan-out sees it: its name and the event types it wants.
#[derive(Debug, Clone)]
pub struct EndpointFilter {
    pub name: String,
    /// Empty: every type.
    pub events: Vec<WebhookEventType>,
}

impl EndpointFilter {
    fn wants(&self, event_type: WebhookEventType) -> bool {
        self.events.is_empty() || self.events.contains(&event_type)
    }
}

#[derive(sqlx::FromRow)]
struct Unfanned {
    seq: i64,
    r#type: String,
    subject: String,
}

/// Gives up to `limit` outbox rows not yet fanned out a pending delivery per endpoint that
/// wants their type. Each row by its own `seq`: a row of a transaction that commits while
/// this runs is left for the next pass, never marked without its deliveries. Two replicas
/// fanning out the same row insert the same keys, which `ON CONFLICT` makes one. Three
/// statements whatever the pass holds: a statement per row and endpoint held SQLite's one
/// writer for thousands of round trips a second once billing was on (docs/benchmarks.md).
pub(super) async fn fan_out<D: Sql>(
    tx: &mut D,
    endpoints: &[EndpointFilter],
    now: UtcTime,
    first_attempt_at: UtcTime,
    limit: i64,
) -> Result<u64, StoreError> {
    let rows: Vec<Unfanned> = tx.fetch_all(to_fan_out_sql::<D>(), &args![limit]).await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let endpoints = every_replicas_endpoints(tx, endpoints, now).await?;
    let deliveries = new_deliveries(&rows, &endpoints)?;
    if !deliveries.is_empty() {
        let (list, insert) = (json_list(&deliveries)?, insert_deliveries_sql::<D>());
        let args = args![list.as_str(), now, first_attempt_at];
        tx.execute(insert, &args).await?;
    }
    let seqs: Vec<i64> = rows.iter().map(|row| row.seq).collect();
    let seqs = json_list(&seqs)?;
    tx.execute(mark_fanned_out_sql::<D>(), &args![seqs.as_str(), true])
        .await?;
    Ok(rows.len() as u64)
}

/// The first `$1` outbox rows not yet fanned out, in `seq` order. The condition is
/// written as the partial index `webhook_events_to_fan_out` has it, never as a parameter:
/// PostgreSQL's generic plan for `fanned_out = $1` cannot use a partial index and walked
/// the primary key past every row already fanned out (12 ms a pass over 100,000 of them,
/// growing with the outbox, against 0.1 ms through the index). SQLite's planner does not
/// take `FALSE` for its index's `0`.
pub(super) fn to_fan_out_sql<D: Sql>() -> &'static str {
    match D::MULTI_STATEMENT {
        true => "SELECT seq, type, subject FROM webhook_events WHERE fanned_out = 0 \
                 ORDER BY seq LIMIT $1",
        false => "SELECT seq, type, subject FROM webhook_events WHERE NOT fanned_out \
                  ORDER BY seq LIMIT $1",
    }
}

/// The oldest outbox row not yet fanned out, through the same index ([`to_fan_out_sql`]).
pub(super) fn oldest_unfanned_sql<D: Sql>() -> &'static str {
    match D::MULTI_STATEMENT {
        true => "SELECT recorded_at FROM webhook_events WHERE fanned_out = 0 \
                 ORDER BY seq LIMIT 1",
        false => "SELECT recorded_at FROM webhook_events WHERE NOT fanned_out \
                  ORDER BY seq LIMIT 1",
    }
}

/// A delivery the fan-out creates.
#[derive(serde::Serialize)]
struct NewDelivery<'a> {
    endpoint: &'a str,
    event_seq: i64,
    subject: &'a str,
}

/// How far back a newly seen endpoint's feed starts: rows recorded this long before its
/// first dispatcher are its history (migration 0035); later ones, which a restart may have
/// left unfanned, are its feed.
pub const NEW_ENDPOINT_LOOKBACK: std::time::Duration = std::time::Duration::from_secs(600);

/// How long after a dispatcher last ran with an endpoint every replica's fan-out still
/// gives it deliveries (migration 0036). A dispatcher writes its endpoints again well within
/// it (`webhooks::dispatch`); an endpoint removed from every replica stops getting
/// deliveries this long after.
pub const ENDPOINT_SEEN_WITHIN: std::time::Duration = std::time::Duration::from_secs(600);

/// Writes where the feed of each endpoint of `endpoints` not seen before starts: after the
/// last row recorded before `now` less [`NEW_ENDPOINT_LOOKBACK`] (migration 0035); endpoints
/// seen before keep theirs. Then each one's event filter and that it was seen `now`
/// (migration 0036), for the other replicas' fan-outs.
pub(super) async fn register_endpoints<D: Sql>(
    tx: &mut D,
    endpoints: &[EndpointFilter],
    now: UtcTime,
) -> Result<(), StoreError> {
    let names: Vec<String> = endpoints.iter().map(|e| e.name.clone()).collect();
    start_feeds(tx, &names, now).await?;
    let sql = "UPDATE webhook_endpoints SET events = $2, seen_at = $3 WHERE name = $1";
    for endpoint in endpoints {
        let events = json_list(&endpoint.events)?;
        tx.execute(sql, &args![endpoint.name.as_str(), events.as_str(), now])
            .await?;
    }
    Ok(())
}

/// Migration 0035's start of each new endpoint's feed.
async fn start_feeds<D: Sql>(tx: &mut D, names: &[String], now: UtcTime) -> Result<(), StoreError> {
    let before = now.minus(NEW_ENDPOINT_LOOKBACK);
    // A name seen before reads nothing; a new one reads the outbox backwards from its
    // newest row through the last ten minutes only (the outbox is never pruned: a
    // `max(seq)` over the older rows scanned all of it, on SQLite inside the one writer).
    let sql = "INSERT INTO webhook_endpoints (name, first_seq) \
               SELECT $1, coalesce((SELECT seq FROM webhook_events WHERE recorded_at < $2 \
                 ORDER BY seq DESC LIMIT 1), 0) \
               WHERE NOT EXISTS (SELECT 1 FROM webhook_endpoints WHERE name = $1) \
               ON CONFLICT (name) DO NOTHING";
    for name in names {
        tx.execute(sql, &args![name.as_str(), before]).await?;
    }
    Ok(())
}

#[derive(sqlx::FromRow)]
struct SeenEndpoint {
    name: String,
    events: String,
}

/// `endpoints` (this replica's) and those another replica ran with within
/// [`ENDPOINT_SEEN_WITHIN`] of `now`, with the filters it wrote (migration 0036): a row is
/// fanned out once for all of them, so an endpoint this replica lacks (a rolling deploy
/// adding one) still gets it. A filter naming only types this binary does not know is
/// left out: read as empty, it would want every type.
async fn every_replicas_endpoints<D: Sql>(
    tx: &mut D,
    endpoints: &[EndpointFilter],
    now: UtcTime,
) -> Result<Vec<EndpointFilter>, StoreError> {
    let sql = "SELECT name, events FROM webhook_endpoints \
               WHERE seen_at > $1 AND events IS NOT NULL ORDER BY name";
    let since = now.minus(ENDPOINT_SEEN_WITHIN);
    let seen: Vec<SeenEndpoint> = tx.fetch_all(sql, &args![since]).await?;
    let mut all = endpoints.to_vec();
    for row in seen {
        if all.iter().any(|e| e.name == row.name) {
            continue;
        }
        let named: Vec<String> = serde_json::from_str(&row.events)
            .map_err(|e| StoreError::Corrupt(format!("webhook endpoint {}: {e}", row.name)))?;
        let events: Vec<WebhookEventType> = (named.iter().cloned())
            .filter_map(|t| WebhookEventType::try_from(t).ok())
            .collect();
        if events.is_empty() && !named.is_empty() {
            continue;
        }
        all.push(EndpointFilter {
            name: row.name,
            events,
        });
    }
    Ok(all)
}

/// The deliveries of `rows`, in `seq` order, then the endpoints' order.
fn new_deliveries<'a>(
    rows: &'a [Unfanned],
    endpoints: &'a [EndpointFilter],
) -> Result<Vec<NewDelivery<'a>>, StoreError> {
    let mut deliveries = Vec::new();
    for row in rows {
        let event_type = WebhookEventType::try_from(row.r#type.clone())
            .map_err(|e| StoreError::Corrupt(format!("webhook event {}: {e}", row.seq)))?;
        let wanting = endpoints.iter().filter(|e| e.wants(event_type));
        deliveries.extend(wanting.map(|endpoint| NewDelivery {
            endpoint: &endpoint.name,
            event_seq: row.seq,
            subject: &row.subject,
        }));
    }
    Ok(deliveries)
}

/// `$1`: the [`NewDelivery`] list; `$2`: now; `$3`: when the first attempt is due. In
/// `seq` order, so two replicas inserting the same keys wait for each other in one order.
/// An event at or before where its endpoint's feed starts ([`register_endpoints`]) is its
/// history: no delivery.
fn insert_deliveries_sql<D: Sql>() -> &'static str {
    match D::MULTI_STATEMENT {
        true => {
            "INSERT INTO webhook_deliveries (endpoint, event_seq, subject, state, attempts, \
               next_attempt_at, created_at, updated_at) \
             SELECT value ->> 'endpoint', value ->> 'event_seq', value ->> 'subject', \
               'pending', 0, $3, $2, $2 \
             FROM json_each($1) \
             WHERE NOT EXISTS (SELECT 1 FROM webhook_endpoints w \
               WHERE w.name = value ->> 'endpoint' AND w.first_seq >= value ->> 'event_seq') \
             ORDER BY key \
             ON CONFLICT (endpoint, event_seq) DO NOTHING"
        }
        false => {
            "INSERT INTO webhook_deliveries (endpoint, event_seq, subject, state, attempts, \
               next_attempt_at, created_at, updated_at) \
             SELECT e.value ->> 'endpoint', (e.value ->> 'event_seq')::bigint, \
               e.value ->> 'subject', 'pending', 0, $3, $2, $2 \
             FROM json_array_elements($1::json) WITH ORDINALITY AS e(value, n) \
             WHERE NOT EXISTS (SELECT 1 FROM webhook_endpoints w \
               WHERE w.name = e.value ->> 'endpoint' \
                 AND w.first_seq >= (e.value ->> 'event_seq')::bigint) \
             ORDER BY e.n \
             ON CONFLICT (endpoint, event_seq) DO NOTHING"
        }
    }
}

/// `$1`: the rows' `seq`s; `$2`: true.
fn mark_fanned_out_sql<D: Sql>() -> &'static str {
    match D::MULTI_STATEMENT {
        true => "UPDATE webhook_events SET fanned_out = $2 \
                 WHERE seq IN (SELECT value FROM json_each($1))",
        false => "UPDATE webhook_events SET fanned_out = $2 \
                  WHERE seq = ANY(ARRAY(SELECT json_array_elements_text($1::json)::bigint))",
    }
}

/// A delivery a worker holds: the event, how many attempts came before, and the claim
/// (`Claim::by`) it is held under, which its attempt names when recorded.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub event: OutboxEvent,
    pub attempts: i64,
    pub lease: String,
}

#[derive(sqlx::FromRow)]
struct ClaimedRow {
    #[sqlx(flatten)]
    event: OutboxRow,
    attempts: i64,
}

/// A claim on an endpoint's due deliveries until `lease_until`, under the token `by`.
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    pub endpoint: &'a str,
    pub now: UtcTime,
    pub lease_until: UtcTime,
    pub by: &'a str,
    pub limit: i64,
    /// The worker's previous claim's attempts, recorded first in the claim's transaction:
    /// a worker's round is then one write transaction instead of two (SQLite's one writer
    /// commits and syncs each), and a delivered event's successor on its subject is
    /// claimable at once.
    pub recording: &'a [AttemptRecord],
}

/// Due deliveries, the earliest pending one of each subject only (so a subject's events
/// reach the endpoint in order), not held by a live lease; the `event_seq`s claimed. The
/// candidates are read in outbox order through `webhook_deliveries_pending` (migration
/// 0028), so a claim reads about as many as it takes, however long the backlog. On
/// PostgreSQL the candidates are locked `SKIP LOCKED`, and the outer `WHERE` re-checked on
/// rows another replica changed meanwhile: two replicas never claim one delivery. The
/// candidates are MATERIALIZED: as a plain subquery PostgreSQL may run them again per row,
/// each run skipping other rows, and claim more than the limit. The update and the read-back
/// find the claimed rows by key.
fn claim_sql<D: Sql>() -> &'static str {
    macro_rules! claim {
        ($lock:literal) => {
            concat!(
                "WITH picked AS MATERIALIZED (SELECT d.event_seq FROM webhook_deliveries d \
                   WHERE d.endpoint = $1 AND d.state = 'pending' AND d.next_attempt_at <= $2 \
                     AND (d.leased_until IS NULL OR d.leased_until <= $2) \
                     AND NOT EXISTS (SELECT 1 FROM webhook_deliveries p \
                       WHERE p.endpoint = d.endpoint AND p.subject = d.subject \
                         AND p.state = 'pending' AND p.event_seq < d.event_seq) \
                   ORDER BY d.event_seq LIMIT $5",
                $lock,
                ") UPDATE webhook_deliveries SET leased_until = $3, leased_by = $4 \
                 WHERE endpoint = $1 AND event_seq IN (SELECT event_seq FROM picked) \
                   AND state = 'pending' AND (leased_until IS NULL OR leased_until <= $2) \
                 RETURNING event_seq"
            )
        };
    }
    match D::LOCKS_ROWS {
        true => claim!(" FOR UPDATE SKIP LOCKED"),
        false => claim!(""),
    }
}

/// The claimed deliveries with their events, by primary key: `$2` the claimed `event_seq`s.
fn claimed_sql<D: Sql>() -> &'static str {
    macro_rules! claimed {
        ($seqs:literal) => {
            concat!(
                "SELECT e.seq, e.event_id, e.type, e.subject, e.occurred_at, e.recorded_at, \
                   e.data, d.attempts \
                 FROM webhook_deliveries d JOIN webhook_events e ON e.seq = d.event_seq \
                 WHERE d.endpoint = $1 AND d.event_seq IN (",
                $seqs,
                ") ORDER BY e.seq"
            )
        };
    }
    match D::MULTI_STATEMENT {
        true => claimed!("SELECT value FROM json_each($2)"),
        false => claimed!("SELECT json_array_elements_text($2::json)::bigint"),
    }
}

pub(super) async fn claim<D: Sql>(
    tx: &mut D,
    c: &Claim<'_>,
) -> Result<Vec<ClaimedDelivery>, StoreError> {
    record_attempts(tx, c.recording).await?;
    let args = args![c.endpoint, c.now, c.lease_until, c.by, c.limit];
    let picked: Vec<(i64,)> = tx.fetch_all(claim_sql::<D>(), &args).await?;
    if picked.is_empty() {
        return Ok(Vec::new());
    }
    let seqs: Vec<i64> = picked.into_iter().map(|(seq,)| seq).collect();
    let seqs = json_list(&seqs)?;
    let args = args![c.endpoint, seqs.as_str()];
    let rows: Vec<ClaimedRow> = tx.fetch_all(claimed_sql::<D>(), &args).await?;
    (rows.into_iter())
        .map(|row| {
            Ok(ClaimedDelivery {
                event: OutboxEvent::try_from(row.event)?,
                attempts: row.attempts,
                lease: c.by.to_owned(),
            })
        })
        .collect()
}

/// One attempt to send a delivery, and what becomes of the delivery after it.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub endpoint: String,
    pub event_seq: i64,
    pub attempted_at: UtcTime,
    /// The HTTP status, when the endpoint answered at all.
    pub status: Option<i32>,
    pub latency_ms: i64,
    /// A bounded excerpt of the answer's body.
    pub response: Option<String>,
    /// Why the attempt did not count (`None` for a 2xx).
    pub error: Option<String>,
    pub next: NextStep,
    /// The claim the delivery was sent under ([`ClaimedDelivery::lease`]). An operator's
    /// retry or replay while the attempt was in flight took the delivery from that claim:
    /// the attempt is kept in its history but does not move the delivery, or a failure
    /// would undo the retry.
    pub lease: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    Delivered,
    RetryAt(UtcTime),
    Failed,
}

/// Records the attempts and moves each delivery still held under its attempt's claim on,
/// releasing its lease; one retried or replayed meanwhile only has its lease released (it
/// is due again as the operator set it). A claim's
/// attempts together, in two statements, in the next claim's transaction (SQLite's one
/// writer took a transaction per attempt, and delivered under 300 a second,
/// docs/benchmarks.md).
async fn record_attempts<D: Sql>(
    tx: &mut D,
    attempts: &[AttemptRecord],
) -> Result<(), StoreError> {
    if attempts.is_empty() {
        return Ok(());
    }
    let rows: Vec<AttemptRow> = attempts.iter().map(AttemptRow::of::<D>).collect();
    let rows = json_list(&rows)?;
    let sql = match D::MULTI_STATEMENT {
        true => RECORD_ATTEMPTS_SQLITE,
        false => RECORD_ATTEMPTS_POSTGRES,
    };
    tx.execute(sql, &args![rows.as_str()]).await?;
    Ok(())
}

/// An attempt as the statements read it, and the delivery's next state; times as the
/// backend reads them from JSON ([`Sql::json_time`]).
#[derive(serde::Serialize)]
struct AttemptRow<'a> {
    endpoint: &'a str,
    event_seq: i64,
    attempted_at: i64,
    status: Option<i32>,
    latency_ms: i64,
    response: Option<&'a str>,
    error: Option<&'a str>,
    state: &'static str,
    next_attempt_at: i64,
    lease: &'a str,
}

impl<'a> AttemptRow<'a> {
    fn of<D: Sql>(a: &'a AttemptRecord) -> Self {
        let (state, next_at) = match a.next {
            NextStep::Delivered => ("delivered", a.attempted_at),
            NextStep::RetryAt(at) => ("pending", at),
            NextStep::Failed => ("failed", a.attempted_at),
        };
        AttemptRow {
            endpoint: &a.endpoint,
            event_seq: a.event_seq,
            attempted_at: D::json_time(a.attempted_at),
            status: a.status,
            latency_ms: a.latency_ms,
            response: a.response.as_deref(),
            error: a.error.as_deref(),
            state,
            next_attempt_at: D::json_time(next_at),
            lease: &a.lease,
        }
    }
}

/// `$1`: the [`AttemptRow`] list, times in epoch milliseconds.
const RECORD_ATTEMPTS_SQLITE: &str = "\
    INSERT INTO webhook_attempts \
      (endpoint, event_seq, attempted_at, status, latency_ms, response, error) \
    SELECT value ->> 'endpoint', value ->> 'event_seq', value ->> 'attempted_at', \
      value ->> 'status', value ->> 'latency_ms', value ->> 'response', value ->> 'error' \
    FROM json_each($1) ORDER BY key; \
    UPDATE webhook_deliveries SET leased_until = NULL \
    FROM (SELECT value ->> 'endpoint' AS endpoint, value ->> 'event_seq' AS event_seq \
      FROM json_each($1)) AS a \
    WHERE webhook_deliveries.endpoint = a.endpoint \
      AND webhook_deliveries.event_seq = a.event_seq AND webhook_deliveries.leased_by IS NULL; \
    UPDATE webhook_deliveries SET state = a.state, attempts = attempts + 1, \
      next_attempt_at = a.next_attempt_at, last_error = a.error, leased_until = NULL, \
      leased_by = NULL, updated_at = a.attempted_at \
    FROM (SELECT value ->> 'endpoint' AS endpoint, value ->> 'event_seq' AS event_seq, \
        value ->> 'state' AS state, value ->> 'next_attempt_at' AS next_attempt_at, \
        value ->> 'error' AS error, value ->> 'attempted_at' AS attempted_at, \
        value ->> 'lease' AS lease \
      FROM json_each($1)) AS a \
    WHERE webhook_deliveries.endpoint = a.endpoint \
      AND webhook_deliveries.event_seq = a.event_seq AND webhook_deliveries.leased_by = a.lease";

/// As [`RECORD_ATTEMPTS_SQLITE`], times in epoch microseconds, as a data-modifying CTE.
const RECORD_ATTEMPTS_POSTGRES: &str = "\
    WITH a AS (SELECT r.value ->> 'endpoint' AS endpoint, \
        (r.value ->> 'event_seq')::bigint AS event_seq, \
        to_timestamp(0) + (r.value ->> 'attempted_at')::bigint * interval '1 microsecond' \
          AS attempted_at, \
        (r.value ->> 'status')::bigint AS status, (r.value ->> 'latency_ms')::bigint AS latency_ms, \
        r.value ->> 'response' AS response, r.value ->> 'error' AS error, \
        r.value ->> 'state' AS state, \
        to_timestamp(0) + (r.value ->> 'next_attempt_at')::bigint * interval '1 microsecond' \
          AS next_attempt_at, r.value ->> 'lease' AS lease, r.n \
      FROM json_array_elements($1::json) WITH ORDINALITY AS r(value, n)), \
    recorded AS (INSERT INTO webhook_attempts \
        (endpoint, event_seq, attempted_at, status, latency_ms, response, error) \
      SELECT endpoint, event_seq, attempted_at, status, latency_ms, response, error \
      FROM a ORDER BY n), \
    released AS (UPDATE webhook_deliveries d SET leased_until = NULL \
      FROM a WHERE d.endpoint = a.endpoint AND d.event_seq = a.event_seq \
        AND d.leased_by IS NULL) \
    UPDATE webhook_deliveries d SET state = a.state, attempts = d.attempts + 1, \
      next_attempt_at = a.next_attempt_at, last_error = a.error, leased_until = NULL, \
      leased_by = NULL, updated_at = a.attempted_at \
    FROM a WHERE d.endpoint = a.endpoint AND d.event_seq = a.event_seq \
      AND d.leased_by = a.lease";

#[derive(sqlx::FromRow)]
struct Playing {
    session_id: String,
    phone_id: String,
    app_id: String,
    user_id: Option<String>,
    started_at: UtcTime,
}

/// For each playing session, its latest `session.tick` due by `now`: tick n at n times
/// `interval_secs` after its start, id `evt_session.tick_<session>_<n>`, so a second pass or
/// a second replica writes nothing new. One statement for the whole pass: it leaves out the
/// ticks already written before it reads a session again, so only sessions due a new tick
/// are read under a row lock on PostgreSQL (a session ending meanwhile gets no tick after
/// its `session.ended`), taken in key order as every writer of sessions takes them. The
/// pass used to run one locking insert per playing session in one transaction, a no-op for
/// nearly all: thousands of share locks in heap order held to its commit, which quits
/// queued behind and which could close a lock cycle with an events batch.
pub(super) async fn write_ticks<D: Sql>(
    tx: &mut D,
    interval_secs: i64,
    now: UtcTime,
) -> Result<u64, StoreError> {
    let sql = "SELECT session_id, phone_id, app_id, user_id, started_at FROM sessions \
               WHERE state = 'playing' AND started_at IS NOT NULL";
    let playing: Vec<Playing> = tx.fetch_all(sql, &args![]).await?;
    let ticks: Vec<Tick> = (playing.into_iter())
        .filter_map(|s| Tick::due::<D>(s, interval_secs, now))
        .collect();
    if ticks.is_empty() {
        return Ok(0);
    }
    let ticks = json_list(&ticks)?;
    Ok(tx.execute(tick_sql::<D>(), &args![ticks.as_str(), now]).await?)
}

/// One session's latest tick, as the insert reads it from its JSON list.
#[derive(serde::Serialize)]
struct Tick {
    event_id: String,
    session_id: String,
    /// [`Sql::json_time`].
    at: i64,
    data: String,
}

impl Tick {
    fn due<D: Sql>(s: Playing, interval_secs: i64, now: UtcTime) -> Option<Tick> {
        let tick = now.seconds_since(s.started_at) / interval_secs;
        if tick < 1 {
            return None;
        }
        let played = tick * interval_secs;
        let at = s.started_at.plus(std::time::Duration::from_secs(played as u64));
        let data = serde_json::json!({
            "session_id": s.session_id, "phone_id": s.phone_id, "app_id": s.app_id,
            "user_id": s.user_id, "started_at": s.started_at.epoch_millis(),
            "tick": tick, "seconds_played": played,
        });
        Some(Tick {
            event_id: format!("evt_session.tick_{}_{tick}", s.session_id),
            session_id: s.session_id,
            at: D::json_time(at),
            data: data.to_string(),
        })
    }
}

/// `$1`: the ticks due (a JSON list of [`Tick`]), `$2` now.
fn tick_sql<D: Sql>() -> &'static str {
    match D::LOCKS_ROWS {
        true => {
            "INSERT INTO webhook_events (event_id, type, subject, occurred_at, recorded_at, data) \
             SELECT t.event_id, 'session.tick', s.session_id, \
               to_timestamp(0) + t.at * interval '1 microsecond', $2, t.data \
             FROM json_to_recordset($1::json) \
               AS t(event_id text, session_id text, at bigint, data text) \
             JOIN sessions s ON s.session_id = t.session_id AND s.state = 'playing' \
             WHERE NOT EXISTS (SELECT 1 FROM webhook_events w WHERE w.event_id = t.event_id) \
             ORDER BY s.session_id FOR SHARE OF s \
             ON CONFLICT (event_id) DO NOTHING"
        }
        false => {
            "INSERT INTO webhook_events (event_id, type, subject, occurred_at, recorded_at, data) \
             SELECT t.value ->> 'event_id', 'session.tick', s.session_id, t.value ->> 'at', \
               $2, t.value ->> 'data' \
             FROM json_each($1) AS t \
             JOIN sessions s ON s.session_id = t.value ->> 'session_id' AND s.state = 'playing' \
             WHERE NOT EXISTS (SELECT 1 FROM webhook_events w \
               WHERE w.event_id = t.value ->> 'event_id') \
             ON CONFLICT (event_id) DO NOTHING"
        }
    }
}

/// Deletes deliveries delivered before `before`, with their attempts; failed ones stay.
pub(super) async fn prune(tx: &mut impl Sql, before: UtcTime) -> Result<u64, StoreError> {
    let attempts = "DELETE FROM webhook_attempts WHERE (endpoint, event_seq) IN \
        (SELECT endpoint, event_seq FROM webhook_deliveries \
         WHERE state = 'delivered' AND updated_at < $1)";
    tx.execute(attempts, &args![before]).await?;
    let deliveries = "DELETE FROM webhook_deliveries WHERE state = 'delivered' AND updated_at < $1";
    Ok(tx.execute(deliveries, &args![before]).await?)
}

/// How far behind the endpoints are, for the console: what each has pending, and the commit
/// time of the oldest event not yet fanned out (pending for every endpoint). Counting reads
/// every pending row; the dispatcher's gauge reads [`oldest_undelivered`] instead.
#[derive(Debug, Clone, Default)]
pub struct WebhookBacklog {
    pub per_endpoint: Vec<EndpointBacklog>,
    pub not_fanned_out: Option<UtcTime>,
}

impl WebhookBacklog {
    /// The endpoint's backlog; `None` when it has nothing pending.
    pub fn of(&self, endpoint: &str) -> Option<&EndpointBacklog> {
        self.per_endpoint.iter().find(|b| b.endpoint == endpoint)
    }
}

/// One endpoint's pending deliveries: how many, and the commit time of the oldest's event.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EndpointBacklog {
    pub endpoint: String,
    pub pending: i64,
    pub oldest: UtcTime,
}

/// The commit time of one outbox row.
#[derive(sqlx::FromRow)]
struct OldestUnfanned {
    recorded_at: UtcTime,
}

pub(super) async fn backlog<D: Sql>(db: &mut D) -> Result<WebhookBacklog, StoreError> {
    let sql = "SELECT d.endpoint, count(*) AS pending, min(e.recorded_at) AS oldest \
               FROM webhook_deliveries d JOIN webhook_events e ON e.seq = d.event_seq \
               WHERE d.state = 'pending' GROUP BY d.endpoint";
    let per_endpoint: Vec<EndpointBacklog> = db.fetch_all(sql, &args![]).await?;
    let unfanned = oldest_unfanned_sql::<D>();
    let oldest: Option<OldestUnfanned> = db.fetch_optional(unfanned, &args![]).await?;
    Ok(WebhookBacklog {
        per_endpoint,
        not_fanned_out: oldest.map(|o| o.recorded_at),
    })
}

/// The commit time of the oldest event `$1` has pending, read in outbox order through
/// `webhook_deliveries_pending`: one index entry, however long the backlog. The gauge used
/// to read [`backlog`], whose count reads every pending row: every fan-out pass, it cost a
/// flash crowd its latency once an endpoint was disabled and its deliveries piled up. Outbox
/// order and commit time agree to within concurrent commits' microseconds.
const OLDEST_PENDING: &str = "SELECT e.recorded_at FROM webhook_deliveries d \
    JOIN webhook_events e ON e.seq = d.event_seq \
    WHERE d.endpoint = $1 AND d.state = 'pending' ORDER BY d.event_seq LIMIT 1";

/// For each of `endpoints`, the commit time of the oldest event it has still to take: its
/// oldest pending delivery, or an event not fanned out yet, whichever is older.
pub(super) async fn oldest_undelivered<D: Sql>(
    db: &mut D,
    endpoints: &[String],
) -> Result<Vec<Option<UtcTime>>, StoreError> {
    let unfanned = oldest_unfanned_sql::<D>();
    let unfanned: Option<OldestUnfanned> = db.fetch_optional(unfanned, &args![]).await?;
    let unfanned = unfanned.map(|o| o.recorded_at);
    let mut oldest = Vec::with_capacity(endpoints.len());
    for endpoint in endpoints {
        let args = args![endpoint.as_str()];
        let pending: Option<OldestUnfanned> = db.fetch_optional(OLDEST_PENDING, &args).await?;
        let pending = pending.map(|o| o.recorded_at);
        oldest.push(pending.into_iter().chain(unfanned).min());
    }
    Ok(oldest)
}

/// A delivery as the operator sees it: no secret, no payload.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct DeliveryView {
    pub endpoint: String,
    /// The outbox row's place in commit order; pages are in this order, newest first.
    pub event_seq: i64,
    #[sqlx(try_from = "String")]
    pub event_id: WebhookEventId,
    #[sqlx(rename = "type", try_from = "String")]
    #[serde(rename = "type")]
    pub event_type: WebhookEventType,
    /// The ordering key: the session, phone or server the event is about.
    pub subject: String,
    #[sqlx(try_from = "String")]
    pub state: DeliveryState,
    pub attempts: i64,
    pub next_attempt_at: UtcTime,
    pub last_error: Option<String>,
    pub updated_at: UtcTime,
}

/// One attempt as the operator sees it.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct AttemptView {
    pub attempted_at: UtcTime,
    /// The HTTP status; null when no answer came (timeout, refused, unresolvable).
    pub status: Option<i64>,
    pub latency_ms: i64,
    /// The answer's first 1 KiB.
    pub response: Option<String>,
    pub error: Option<String>,
}

/// Which deliveries to list, newest first; `before` continues after a page's last one.
#[derive(Debug, Clone)]
pub struct DeliveryFilter {
    pub endpoint: Option<String>,
    pub state: Option<DeliveryState>,
    pub before: Option<DeliveryPosition>,
    pub limit: i64,
}

/// A delivery's place in the listing order: `event_seq` descending, then endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryPosition {
    pub event_seq: i64,
    pub endpoint: String,
}

macro_rules! delivery_view {
    () => {
        "SELECT d.endpoint, d.event_seq, e.event_id, e.type, d.subject, d.state, d.attempts, \
                d.next_attempt_at, d.last_error, d.updated_at \
         FROM webhook_deliveries d JOIN webhook_events e ON e.seq = d.event_seq "
    };
}

/// Newest first; `endpoint` and `state` narrow it, `before` pages on.
pub(super) async fn deliveries(
    db: &mut impl Sql,
    filter: &DeliveryFilter,
) -> Result<Vec<DeliveryView>, StoreError> {
    let sql = concat!(
        delivery_view!(),
        "WHERE ($1 IS NULL OR d.endpoint = $1) AND ($2 IS NULL OR d.state = $2) \
           AND ($3 IS NULL OR d.event_seq < $3 OR (d.event_seq = $3 AND d.endpoint > $4)) \
         ORDER BY d.event_seq DESC, d.endpoint LIMIT $5"
    );
    let state = filter.state.map(DeliveryState::as_str);
    let (seq, after) = match &filter.before {
        Some(p) => (Some(p.event_seq), Some(p.endpoint.as_str())),
        None => (None, None),
    };
    let args = args![filter.endpoint.as_deref(), state, seq, after, filter.limit];
    Ok(db.fetch_all(sql, &args).await?)
}

pub(super) async fn delivery(
    db: &mut impl Sql,
    endpoint: &str,
    event_id: &WebhookEventId,
) -> Result<Option<(DeliveryView, Vec<AttemptView>)>, StoreError> {
    let sql = concat!(
        delivery_view!(),
        "WHERE d.endpoint = $1 AND e.event_id = $2"
    );
    let args = args![endpoint, event_id.as_str()];
    let found: Option<DeliveryView> = db.fetch_optional(sql, &args).await?;
    let Some(found) = found else { return Ok(None) };
    let sql = "SELECT attempted_at, status, latency_ms, response, error FROM webhook_attempts \
               WHERE endpoint = $1 AND event_seq = $2 ORDER BY id";
    let attempts = db.fetch_all(sql, &args![endpoint, found.event_seq]).await?;
    Ok(Some((found, attempts)))
}

/// Puts a delivery back to pending, due now, with a fresh schedule; false when unknown.
/// A delivery being sent is taken from its claim (`leased_by` cleared) but stays leased
/// until the attempt in flight is recorded: that attempt then moves nothing (its failure
/// would undo the retry), and no second send starts while it is under way.
pub(super) async fn retry(
    tx: &mut impl Sql,
    endpoint: &str,
    event_id: &WebhookEventId,
    now: UtcTime,
) -> Result<bool, StoreError> {
    let sql = "UPDATE webhook_deliveries SET state = 'pending', attempts = 0, \
                 next_attempt_at = $3, updated_at = $3, leased_by = NULL \
               WHERE endpoint = $1 \
                 AND event_seq = (SELECT seq FROM webhook_events WHERE event_id = $2)";
    Ok(tx
        .execute(sql, &args![endpoint, event_id.as_str(), now])
        .await?
        > 0)
}

/// How many deliveries one write of a replay makes or puts back. A replay is as large as
/// the operator's window (a busy day is tens of millions of events), and SQLite has one
/// writer: a single statement held it, and every callback behind it, for seconds a
/// million rows (2.6 s to create a million deliveries, 4.4 s to put them back to pending,
/// measured with the `sqlite3` shell on a book of a million events). 5,000 rows took 12 to
/// 40 ms there; 2,000 keep a callback's wait behind one chunk within its p99 target.
pub(super) const REPLAY_CHUNK: i64 = 2_000;

/// The first and last `seq` of the events that happened since `since`; None when none
/// did. Read before a replay's chunks, which go no further than the last: events recorded
/// after it are the fan-out's.
pub(super) async fn replay_range(
    db: &mut impl Sql,
    since: UtcTime,
) -> Result<Option<(i64, i64)>, StoreError> {
    let sql = "SELECT min(seq), max(seq) FROM webhook_events WHERE occurred_at >= $1";
    let row: Option<(Option<i64>, Option<i64>)> = db.fetch_optional(sql, &args![since]).await?;
    Ok(row.and_then(|(first, last)| first.zip(last)))
}

/// One chunk of a replay: sends `filter`'s endpoint again the next [`REPLAY_CHUNK`] events
/// of its types that happened since `since`, after `after` and up to `last` in outbox
/// order, under the same ids: new deliveries, or delivered/failed ones put back to pending
/// (taken from an attempt in flight as [`retry`] does). How many it covered and the newest
/// seq among them; None when the replay is done. Paged by key on the outbox's primary key, so an endpoint
/// of rare types is not replayed through thousands of empty chunks.
pub(super) async fn replay(
    tx: &mut impl Sql,
    filter: &EndpointFilter,
    since: UtcTime,
    (after, last): (i64, i64),
    now: UtcTime,
) -> Result<Option<(u64, i64)>, StoreError> {
    let types: Vec<&str> = filter.events.iter().map(|t| t.as_str()).collect();
    let types = types.join(",");
    let sql = "INSERT INTO webhook_deliveries (endpoint, event_seq, subject, state, \
                 attempts, next_attempt_at, created_at, updated_at) \
               SELECT $1, seq, subject, 'pending', 0, $3, $3, $3 FROM webhook_events \
               WHERE seq > $5 AND seq <= $6 AND occurred_at >= $2 \
                 AND ($4 = '' OR (',' || $4 || ',') LIKE ('%,' || type || ',%')) \
               ORDER BY seq LIMIT $7 \
               ON CONFLICT (endpoint, event_seq) DO UPDATE SET state = 'pending', \
                 attempts = 0, next_attempt_at = excluded.next_attempt_at, \
                 updated_at = excluded.updated_at, leased_by = NULL \
               RETURNING event_seq";
    let args = args![
        filter.name.as_str(),
        since,
        now,
        types.as_str(),
        after,
        last,
        REPLAY_CHUNK
    ];
    let rows: Vec<(i64,)> = tx.fetch_all(sql, &args).await?;
    let newest = rows.iter().map(|&(seq,)| seq).max();
    Ok(newest.map(|newest| (rows.len() as u64, newest)))
}
