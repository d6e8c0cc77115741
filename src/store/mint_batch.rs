//! A batch of plain mints decided set-wise, after `queue::mint_batch` served the queue: a
//! fixed number of statements per batch whatever its size, and for each mint the answer
//! minting one by one in arrival order gives (`book::mint_released`).
//!
//! The reads take no lock: one of the earlier answers of the batch's `Idempotency-Key`s, and
//! one per candidate group — the pinned phones, the first free phones with each app wanted,
//! the first free phones — each list in key order, as the single pick takes them
//! (`book::first_free!`), and as long as the batch (its mints cannot take more). Every mint
//! is then decided in memory in arrival order against what the batch's earlier mints took
//! and which keys they used, so two apps competing for phones that carry both, or a pinned
//! mint after an app-wide one that took its phone, get what they would one by one. Then the
//! writes: on PostgreSQL one lock of the chosen phones (`FOR UPDATE SKIP LOCKED`, never a
//! wait: the batch's only waits stay in `book::release_lapsed_holds`, the documented lock
//! order), one claim of the keys the batch mints with, in key order, and one statement that
//! holds the phones and inserts the sessions.
//!
//! Where the reads cannot decide (a list ran out while full: its next phones may serve a
//! mint with a later `fresh_since`) or the lock or the claim finds that another transaction
//! got there first (another replica took a phone or used a key since the reads), nothing is
//! written and the caller mints one by one.

use std::collections::{BTreeSet, HashMap, HashSet};

use serde::Serialize;

use super::book::{self, free_phone_sql, serving_phone_sql};
use super::codec::{StoredMint, connect};
use super::sql::{Sql, args, json_list};
use super::{Allocation, MintRequest, StoreError};
use crate::domain::{PhoneId, UtcTime};

/// The answers of `requests` (a batch whose queue was served), or None when the batch is to
/// be minted one by one; then nothing was written.
pub(super) async fn mint_set<D: Sql>(
    tx: &mut D,
    requests: &[&MintRequest],
) -> Result<Option<Vec<Allocation>>, StoreError> {
    let reads = Reads::read(tx, requests).await?;
    let Some(plan) = decide::<D>(requests, &reads)? else {
        return Ok(None);
    };
    if !lock_chosen(tx, &plan, requests).await? || !claim_keys::<D>(tx, &plan).await? {
        return Ok(None);
    }
    write::<D>(tx, &plan).await?;
    Ok(Some(plan.answers))
}

/// A phone a candidate list holds, and whether it is free (the pinned list reads busy ones).
#[derive(sqlx::FromRow)]
struct Candidate {
    phone_id: String,
    last_seen_at: Option<UtcTime>,
    server_id: Option<String>,
    access_infos: Option<String>,
    free: i64,
}

#[derive(sqlx::FromRow)]
struct EarlierKey {
    idempotency_key: String,
    #[sqlx(flatten)]
    stored: StoredMint,
}

/// What the batch's mints choose from, read once.
struct Reads {
    /// The earlier answers of the batch's keys, by key.
    earlier: HashMap<String, StoredMint>,
    /// The pinned phones the book knows, free or not, by id.
    pinned: HashMap<String, Candidate>,
    /// The first free phones with each app an app-wide mint wants, in key order.
    with_app: HashMap<String, Vec<Candidate>>,
    /// The first free phones, in key order.
    any: Vec<Candidate>,
    /// How long each free list is at most: the batch's size.
    limit: usize,
}

impl Reads {
    async fn read<D: Sql>(tx: &mut D, requests: &[&MintRequest]) -> Result<Reads, StoreError> {
        let limit = requests.len();
        // The earliest cut-off of the batch: a phone fresh for any of its mints is read, and
        // each mint checks its own cut-off in memory.
        let fresh = requests.iter().map(|r| r.fresh_since).min();
        let fresh = fresh.unwrap_or_else(UtcTime::now);
        let mut with_app = HashMap::new();
        let apps: BTreeSet<&str> = (requests.iter())
            .filter(|r| r.pinned_phone.is_none() && r.match_app)
            .map(|r| r.app_id.as_str())
            .collect();
        for app in apps {
            let sql = FREE_WITH_APP;
            let list = tx.fetch_all(sql, &args![fresh, limit as i64, app]).await?;
            with_app.insert(app.to_owned(), list);
        }
        let any = match requests.iter().any(|r| r.pinned_phone.is_none() && !r.match_app) {
            true => tx.fetch_all(FREE_ANY, &args![fresh, limit as i64]).await?,
            false => Vec::new(),
        };
        Ok(Reads {
            earlier: read_earlier(tx, requests).await?,
            pinned: read_pinned(tx, requests, fresh).await?,
            with_app,
            any,
            limit,
        })
    }
}

async fn read_earlier<D: Sql>(
    tx: &mut D,
    requests: &[&MintRequest],
) -> Result<HashMap<String, StoredMint>, StoreError> {
    let keys: Vec<&str> = (requests.iter())
        .filter_map(|r| r.key.as_ref().map(|k| k.key.as_str()))
        .collect();
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let sql = match D::LOCKS_ROWS {
        true => EARLIER_POSTGRES,
        false => EARLIER_SQLITE,
    };
    let now = requests.iter().map(|r| r.now).max().unwrap_or_else(UtcTime::now);
    let keys = json_list(&keys)?;
    let rows: Vec<EarlierKey> = tx.fetch_all(sql, &args![keys.as_str(), now]).await?;
    Ok((rows.into_iter())
        .map(|row| (row.idempotency_key, row.stored))
        .collect())
}

async fn read_pinned<D: Sql>(
    tx: &mut D,
    requests: &[&MintRequest],
    fresh: UtcTime,
) -> Result<HashMap<String, Candidate>, StoreError> {
    let pinned: Vec<&str> = (requests.iter())
        .filter_map(|r| r.pinned_phone.as_ref().map(PhoneId::as_str))
        .collect();
    if pinned.is_empty() {
        return Ok(HashMap::new());
    }
    let sql = match D::LOCKS_ROWS {
        true => PINNED_POSTGRES,
        false => PINNED_SQLITE,
    };
    let rows: Vec<Candidate> = (tx.fetch_all(sql, &args![fresh, json_list(&pinned)?.as_str()]))
        .await?;
    Ok((rows.into_iter())
        .map(|row| (row.phone_id.clone(), row))
        .collect())
}

/// The columns of [`Candidate`] but `free`.
macro_rules! candidate_columns {
    () => {
        "SELECT phone_id, last_seen_at, server_id, access_infos, "
    };
}

/// `$1` the freshness cut-off, `$2` how many, `$3` the app: the single pick's
/// `book::pick_phone_sql!` for an app, as a list.
const FREE_WITH_APP: &str = concat!(
    candidate_columns!(),
    "CAST(1 AS BIGINT) AS free FROM phones \
     WHERE EXISTS (SELECT 1 FROM phone_apps a WHERE a.app_id = $3 \
       AND a.phone_id = phones.phone_id) AND ",
    free_phone_sql!("$1"),
    " ORDER BY phone_id LIMIT $2"
);

/// As [`FREE_WITH_APP`], any phone.
const FREE_ANY: &str = concat!(
    candidate_columns!(),
    "CAST(1 AS BIGINT) AS free FROM phones WHERE ",
    free_phone_sql!("$1"),
    " ORDER BY phone_id LIMIT $2"
);

/// `$1` the freshness cut-off, `$2` a JSON array of phone ids.
macro_rules! pinned_sql {
    ($in_list:literal) => {
        concat!(
            candidate_columns!(),
            "CAST(CASE WHEN ",
            free_phone_sql!("$1"),
            " THEN 1 ELSE 0 END AS BIGINT) AS free FROM phones WHERE phone_id ",
            $in_list
        )
    };
}
const PINNED_SQLITE: &str = pinned_sql!("IN (SELECT value FROM json_each($2))");
const PINNED_POSTGRES: &str =
    pinned_sql!("= ANY(ARRAY(SELECT json_array_elements_text($2::json)))");

/// `$1` a JSON array of keys, `$2` the batch's latest `now`. A key past its time is free
/// again but may still have its row (the holds sweeper forgets them): it is not read, so
/// the batch's claim of it conflicts and the batch is minted one by one, which frees it
/// (`book::claim_key`).
macro_rules! earlier_sql {
    ($in_list:literal) => {
        concat!(
            "SELECT k.idempotency_key, k.request_hash, k.session_id, k.ticket, s.aes_key, \
               s.auth_ts, s.phone_id, k.server_id, k.access_infos \
             FROM mint_keys k JOIN sessions s ON s.session_id = k.session_id \
             WHERE k.expires_at > $2 AND k.idempotency_key ",
            $in_list
        )
    };
}
const EARLIER_SQLITE: &str = earlier_sql!("IN (SELECT value FROM json_each($1))");
const EARLIER_POSTGRES: &str =
    earlier_sql!("= ANY(ARRAY(SELECT json_array_elements_text($1::json)))");

/// What the batch writes and answers, decided in memory.
#[derive(Default)]
struct Plan<'r> {
    answers: Vec<Allocation>,
    /// The mints that take a phone, with it.
    holds: Vec<(&'r MintRequest, &'r Candidate)>,
    /// The keys the batch mints with, as their rows will hold them (what a replay reads).
    claims: Vec<(&'r MintRequest, StoredMint)>,
}

/// What a mint's pick found.
enum Pick<'r> {
    Phone(&'r Candidate),
    Refused(Allocation),
    /// The lists read cannot tell: the batch is minted one by one.
    Undecided,
}

/// Each mint in arrival order, as `book::mint_released` decides it: a key used before (in
/// the book or earlier in the batch) answers again, else the pick; a refused mint's key is
/// not kept, so a later mint with it mints. None when a pick is undecided.
fn decide<'r, D: Sql>(
    requests: &[&'r MintRequest],
    reads: &'r Reads,
) -> Result<Option<Plan<'r>>, StoreError> {
    let mut keys: HashMap<&str, StoredMint> = (reads.earlier.iter())
        .map(|(key, stored)| (key.as_str(), stored.clone()))
        .collect();
    let mut taken = HashSet::new();
    let mut plan = Plan::default();
    for &request in requests {
        let key = request.key.as_ref();
        if let Some(key) = key
            && let Some(stored) = keys.get(key.key.as_str())
        {
            plan.answers.push(match book::constant_time_eq(&stored.request_hash, &key.request_hash) {
                true => Allocation::Replayed(Box::new(book::replay(stored.clone())?)),
                false => Allocation::KeyReused,
            });
            continue;
        }
        let phone = match pick::<D>(request, reads, &taken) {
            Pick::Phone(phone) => phone,
            Pick::Refused(refusal) => {
                plan.answers.push(refusal);
                continue;
            }
            Pick::Undecided => return Ok(None),
        };
        taken.insert(phone.phone_id.as_str());
        if let Some(key) = key {
            let stored = stored_mint(request, phone);
            keys.insert(key.key.as_str(), stored.clone());
            plan.claims.push((request, stored));
        }
        plan.holds.push((request, phone));
        plan.answers.push(allocated(phone)?);
    }
    Ok(Some(plan))
}

/// The single pick's choice (`book::pick_phone`): the pinned phone if free, else the first
/// free phone (with the app) the batch has not taken, fresh for this mint.
fn pick<'r, D: Sql>(request: &MintRequest, reads: &'r Reads, taken: &HashSet<&str>) -> Pick<'r> {
    // Compared as the statement compares them: at the backend's precision.
    let cut_off = D::json_time(request.fresh_since);
    let fresh = |c: &Candidate| c.last_seen_at.is_some_and(|t| D::json_time(t) >= cut_off);
    let available = |c: &&Candidate| fresh(c) && !taken.contains(c.phone_id.as_str());
    if let Some(pinned) = &request.pinned_phone {
        return match reads.pinned.get(pinned.as_str()) {
            None => Pick::Refused(Allocation::UnknownPhone),
            Some(phone) if phone.free != 0 && available(&phone) => Pick::Phone(phone),
            Some(_) => Pick::Refused(Allocation::PhoneBusy),
        };
    }
    let list = match request.match_app {
        true => (reads.with_app.get(request.app_id.as_str())).map_or(&[][..], Vec::as_slice),
        false => &reads.any[..],
    };
    match list.iter().find(available) {
        Some(phone) => Pick::Phone(phone),
        None if list.len() >= reads.limit => Pick::Undecided,
        None => Pick::Refused(Allocation::NoFreePhone),
    }
}

/// The key row of a mint of the batch, as `claim_key` and `keep_connect` leave it.
fn stored_mint(request: &MintRequest, phone: &Candidate) -> StoredMint {
    StoredMint {
        request_hash: (request.key.as_ref()).map_or_else(String::new, |k| k.request_hash.clone()),
        session_id: request.access.session_id.clone(),
        ticket: request.access.ticket.expose().to_owned(),
        aes_key: request.access.aes_key.to_hex(),
        auth_ts: request.auth_ts,
        phone_id: phone.phone_id.clone(),
        server_id: phone.server_id.clone(),
        access_infos: phone.access_infos.clone(),
    }
}

fn allocated(phone: &Candidate) -> Result<Allocation, StoreError> {
    let phone_id = PhoneId::parse("phone_id", phone.phone_id.clone())
        .map_err(|e| StoreError::Corrupt(format!("allocated phone: {e}")))?;
    let connect = connect(phone.server_id.clone(), phone.access_infos.as_deref())?;
    Ok(Allocation::Allocated { phone_id, connect })
}

/// On PostgreSQL, locks the chosen phones, skipping rows another transaction holds; false
/// when one was skipped or is no longer free (taken since the read). Pinned phones are
/// this transaction's already (`book::lock_pinned`). SQLite's one writer holds them all.
async fn lock_chosen<D: Sql>(
    tx: &mut D,
    plan: &Plan<'_>,
    requests: &[&MintRequest],
) -> Result<bool, StoreError> {
    if !D::LOCKS_ROWS || plan.holds.is_empty() {
        return Ok(true);
    }
    let fresh = requests.iter().map(|r| r.fresh_since).min();
    let chosen: Vec<&str> = plan.holds.iter().map(|(_, p)| p.phone_id.as_str()).collect();
    let chosen_json = json_list(&chosen)?;
    let args = args![fresh, chosen_json.as_str()];
    let locked: Vec<(String,)> = tx.fetch_all(LOCK_CHOSEN, &args).await?;
    Ok(locked.len() == chosen.len())
}

/// `$1` the freshness cut-off, `$2` a JSON array of phone ids.
const LOCK_CHOSEN: &str = concat!(
    "SELECT phone_id FROM phones \
     WHERE phone_id = ANY(ARRAY(SELECT json_array_elements_text($2::json))) AND ",
    free_phone_sql!("$1"),
    " ORDER BY phone_id FOR UPDATE SKIP LOCKED"
);

/// A key row as the claim's JSON carries it; times as [`Sql::json_time`].
#[derive(Serialize)]
struct Claim<'a> {
    key: &'a str,
    request_hash: &'a str,
    session_id: &'a str,
    ticket: &'a str,
    server_id: Option<&'a str>,
    access_infos: Option<&'a str>,
    now: i64,
    expires_at: i64,
}

/// Records the keys the batch mints with, in key order (two batches claiming the same keys
/// wait for each other in one order, never crosswise); false when another transaction
/// recorded one since the read, and then the batch's are taken back.
async fn claim_keys<D: Sql>(tx: &mut D, plan: &Plan<'_>) -> Result<bool, StoreError> {
    let mut claims: Vec<Claim> = (plan.claims.iter())
        .filter_map(|(request, stored)| {
            let key = request.key.as_ref()?;
            Some(Claim {
                key: key.key.as_str(),
                request_hash: &stored.request_hash,
                session_id: &stored.session_id,
                ticket: &stored.ticket,
                server_id: stored.server_id.as_deref(),
                access_infos: stored.access_infos.as_deref(),
                now: D::json_time(request.now),
                expires_at: D::json_time(key.expires_at),
            })
        })
        .collect();
    if claims.is_empty() {
        return Ok(true);
    }
    claims.sort_unstable_by(|a, b| a.key.cmp(b.key));
    let (claim, undo) = match D::LOCKS_ROWS {
        true => (CLAIM_POSTGRES, UNDO_CLAIM_POSTGRES),
        false => (CLAIM_SQLITE, UNDO_CLAIM_SQLITE),
    };
    let claimed: Vec<(String,)> = tx.fetch_all(claim, &args![json_list(&claims)?.as_str()]).await?;
    if claimed.len() == claims.len() {
        return Ok(true);
    }
    let claimed: Vec<&str> = claimed.iter().map(|(key,)| key.as_str()).collect();
    tx.execute(undo, &args![json_list(&claimed)?.as_str()])
        .await?;
    Ok(false)
}

/// `$1`: a JSON array of [`Claim`], times in epoch milliseconds.
const CLAIM_SQLITE: &str = "\
    INSERT INTO mint_keys (idempotency_key, request_hash, session_id, ticket, server_id, \
      access_infos, created_at, expires_at) \
    SELECT value ->> 'key', value ->> 'request_hash', value ->> 'session_id', \
      value ->> 'ticket', value ->> 'server_id', value ->> 'access_infos', value ->> 'now', \
      value ->> 'expires_at' \
    FROM json_each($1) WHERE true ON CONFLICT (idempotency_key) DO NOTHING \
    RETURNING idempotency_key";

/// As [`CLAIM_SQLITE`], times in epoch microseconds; rows go in the array's order.
const CLAIM_POSTGRES: &str = "\
    INSERT INTO mint_keys (idempotency_key, request_hash, session_id, ticket, server_id, \
      access_infos, created_at, expires_at) \
    SELECT value ->> 'key', value ->> 'request_hash', value ->> 'session_id', \
      value ->> 'ticket', value ->> 'server_id', value ->> 'access_infos', \
      to_timestamp(0) + (value ->> 'now')::bigint * interval '1 microsecond', \
      to_timestamp(0) + (value ->> 'expires_at')::bigint * interval '1 microsecond' \
    FROM json_array_elements($1::json) ON CONFLICT (idempotency_key) DO NOTHING \
    RETURNING idempotency_key";

/// `$1`: a JSON array of keys this transaction just claimed.
const UNDO_CLAIM_SQLITE: &str =
    "DELETE FROM mint_keys WHERE idempotency_key IN (SELECT value FROM json_each($1))";
const UNDO_CLAIM_POSTGRES: &str = "DELETE FROM mint_keys \
    WHERE idempotency_key = ANY(ARRAY(SELECT json_array_elements_text($1::json)))";

/// A new session as the write's JSON carries it; times as [`Sql::json_time`].
#[derive(Serialize)]
struct NewSession<'a> {
    session_id: &'a str,
    phone_id: &'a str,
    app_id: &'a str,
    user_id: &'a str,
    ticket_hash: String,
    aes_key: String,
    auth_ts: i64,
    now: i64,
    hold_until: i64,
}

/// Holds the chosen phones and inserts their sessions, in one round trip.
async fn write<D: Sql>(tx: &mut D, plan: &Plan<'_>) -> Result<(), StoreError> {
    if plan.holds.is_empty() {
        return Ok(());
    }
    let sessions: Vec<NewSession> = (plan.holds.iter())
        .map(|(request, phone)| NewSession {
            session_id: &request.access.session_id,
            phone_id: &phone.phone_id,
            app_id: request.app_id.as_str(),
            user_id: request.user_id.as_str(),
            ticket_hash: request.access.ticket.hash_hex(),
            aes_key: request.access.aes_key.to_hex(),
            auth_ts: request.auth_ts,
            now: D::json_time(request.now),
            hold_until: D::json_time(request.hold_until),
        })
        .collect();
    let sql = match D::MULTI_STATEMENT {
        true => WRITE_SQLITE,
        false => WRITE_POSTGRES,
    };
    tx.execute(sql, &args![json_list(&sessions)?.as_str()])
        .await?;
    Ok(())
}

/// `$1`: a JSON array of [`NewSession`], times in epoch milliseconds. The same rows as the
/// single mint's pick and `insert_minted` write.
const WRITE_SQLITE: &str = "\
    UPDATE phones SET allocated_session_id = b.session_id, allocated_until = b.hold_until, \
      updated_at = b.now \
    FROM (SELECT value ->> 'session_id' AS session_id, value ->> 'phone_id' AS phone_id, \
        value ->> 'now' AS now, value ->> 'hold_until' AS hold_until FROM json_each($1)) AS b \
    WHERE phones.phone_id = b.phone_id; \
    INSERT INTO sessions (session_id, phone_id, app_id, user_id, issued, state, minted_at, \
      ticket_hash, aes_key, auth_ts, hold_until, created_at, updated_at) \
    SELECT value ->> 'session_id', value ->> 'phone_id', value ->> 'app_id', \
      value ->> 'user_id', TRUE, 'minted', value ->> 'now', value ->> 'ticket_hash', \
      value ->> 'aes_key', value ->> 'auth_ts', value ->> 'hold_until', value ->> 'now', \
      value ->> 'now' \
    FROM json_each($1)";

/// As [`WRITE_SQLITE`], times in epoch microseconds, as data-modifying CTEs. The phones are
/// named twice, as in `book::CONSUME_TICKETS_POSTGRES` and for the same reason: the join
/// alone lets a planner that misjudges the batch or the book scan every phone.
const WRITE_POSTGRES: &str = "\
    WITH b AS (SELECT value ->> 'session_id' AS session_id, value ->> 'phone_id' AS phone_id, \
        value ->> 'app_id' AS app_id, value ->> 'user_id' AS user_id, \
        value ->> 'ticket_hash' AS ticket_hash, value ->> 'aes_key' AS aes_key, \
        (value ->> 'auth_ts')::bigint AS auth_ts, \
        to_timestamp(0) + (value ->> 'now')::bigint * interval '1 microsecond' AS now, \
        to_timestamp(0) + (value ->> 'hold_until')::bigint * interval '1 microsecond' \
          AS hold_until \
      FROM json_array_elements($1::json)), \
    held AS (UPDATE phones SET allocated_session_id = b.session_id, \
        allocated_until = b.hold_until, updated_at = b.now \
      FROM b WHERE phones.phone_id = ANY(ARRAY(SELECT phone_id FROM b)) \
        AND phones.phone_id = b.phone_id) \
    INSERT INTO sessions (session_id, phone_id, app_id, user_id, issued, state, minted_at, \
      ticket_hash, aes_key, auth_ts, hold_until, created_at, updated_at) \
    SELECT session_id, phone_id, app_id, user_id, TRUE, 'minted', now, ticket_hash, aes_key, \
      auth_ts, hold_until, now, now FROM b";

#[cfg(test)]
mod tests {
    use std::future::Future;

    use super::*;
    use crate::access::MintedAccess;
    use crate::config::{Cipher, GcmIv, KeySize, Settings};
    use crate::domain::{AppId, IdempotencyKey, UserId};
    use crate::store::sql::{Arg, BookRow};
    use crate::store::{MintKey, backend::Backend, queue, sqlite::SqliteStore};

    /// An [`Sql`] that counts the round trips it passes on.
    struct Counting<S> {
        inner: S,
        statements: usize,
    }

    impl<S: Sql> Sql for Counting<S> {
        const LOCKS_ROWS: bool = S::LOCKS_ROWS;
        const MULTI_STATEMENT: bool = S::MULTI_STATEMENT;

        fn json_time(time: UtcTime) -> i64 {
            S::json_time(time)
        }

        fn execute(
            &mut self,
            sql: &'static str,
            args: &[Arg<'_>],
        ) -> impl Future<Output = Result<u64, sqlx::Error>> + Send {
            self.statements += 1;
            self.inner.execute(sql, args)
        }

        fn fetch_all<R: BookRow>(
            &mut self,
            sql: &'static str,
            args: &[Arg<'_>],
        ) -> impl Future<Output = Result<Vec<R>, sqlx::Error>> + Send {
            self.statements += 1;
            self.inner.fetch_all(sql, args)
        }

        fn fetch_optional<R: BookRow>(
            &mut self,
            sql: &'static str,
            args: &[Arg<'_>],
        ) -> impl Future<Output = Result<Option<R>, sqlx::Error>> + Send {
            self.statements += 1;
            self.inner.fetch_optional(sql, args)
        }
    }

    fn at(ms: i64) -> UtcTime {
        UtcTime::from_epoch_millis(1_800_000_000_000 + ms).unwrap()
    }

    /// Mint `n` of a batch: every third pinned to its phone, the others app-wide or for any
    /// phone, each with a key of its own.
    fn request(n: usize) -> MintRequest {
        let cipher = Cipher::Gcm {
            key: KeySize::Aes256,
            iv: GcmIv::Twelve,
        };
        MintRequest {
            access: MintedAccess::mint(cipher),
            app_id: AppId::try_from(format!("app-{}", n % 2)).unwrap(),
            user_id: UserId::try_from("u-1".to_owned()).unwrap(),
            pinned_phone: n.is_multiple_of(3).then(|| PhoneId::try_from(format!("p-{n:03}")).unwrap()),
            auth_ts: at(60_000).epoch_millis(),
            hold_until: at(60_000),
            now: at(n as i64),
            fresh_since: at(-60_000),
            match_app: n % 3 == 1,
            key: Some(MintKey {
                key: IdempotencyKey::try_from(format!("k-{n}")).unwrap(),
                request_hash: "h".to_owned(),
                expires_at: at(600_000),
            }),
        }
    }

    /// The statements `queue::mint_batch` sends for a batch of `count` mints, each of
    /// which finds a phone, on a fresh SQLite book with twice as many phones.
    async fn statements_for(count: usize) -> usize {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("book.db").display());
        let settings = Settings::with_overrides("").unwrap().database;
        let store = SqliteStore::connect(&url, &settings).await;
        let store = store.unwrap();
        store.migrate().await.unwrap();
        let mut tx = store.begin_write().await.unwrap();
        for n in 0..2 * count {
            let phone = format!("p-{n:03}");
            let seen = at(0);
            let sql = "INSERT INTO phones (phone_id, last_seen_at, created_at, updated_at) \
                       VALUES ($1, $2, $2, $2)";
            tx.execute(sql, &args![phone.as_str(), seen]).await.unwrap();
            let sql = "INSERT INTO phone_apps (app_id, phone_id, synced_at) VALUES ($1, $2, $3)";
            let app = format!("app-{}", n % 2);
            let args = args![app.as_str(), phone.as_str(), seen];
            tx.execute(sql, &args).await.unwrap();
        }
        let requests: Vec<MintRequest> = (0..count).map(request).collect();
        let refs: Vec<&MintRequest> = requests.iter().collect();
        let mut counting = Counting {
            inner: tx,
            statements: 0,
        };
        let minted = queue::mint_batch(&mut counting, &refs).await.unwrap();
        let held = minted.iter().filter(|a| matches!(a, Allocation::Allocated { .. }));
        assert_eq!(held.count(), count, "every mint finds a phone: {minted:?}");
        counting.statements
    }

    /// Issue #17: a batch's round trips do not grow with its size (on PostgreSQL the same
    /// statements, plus the one lock of the chosen phones and `book::lock_pinned`).
    #[tokio::test]
    async fn a_batch_of_mints_sends_as_many_statements_whatever_its_size() {
        let (small, large) = (statements_for(6).await, statements_for(120).await);
        assert_eq!(small, large, "6 mints: {small} statements, 120 mints: {large}");
        assert!(small <= 12, "{small} statements");
    }
}
