//! The wait queue's SQL, shared by both backends as plain functions over [`Sql`] (like
//! `book.rs`). docs/architecture.md "The wait queue" explains the design: entries live in
//! `queue_entries`; assignment mints a session for the head of an app's queue through the
//! ordinary mint (so the phone is held the usual way and the pick's rules apply); the poll
//! that finds the assignment issues the ticket, which the book keeps only as a hash.
//!
//! Fairness across replicas on PostgreSQL rests on one row lock: a pass locks the head of an
//! app's queue (`FOR UPDATE`, never `SKIP LOCKED`, which would let a pass jump the head while
//! another holds it) before minting for it. A second pass waits on that row, and when the
//! first commits, PostgreSQL re-reads the row, finds it assigned, and hands the second pass
//! the next entry in the same order. SQLite has one writer, which serialises the passes.

use super::book;
use super::mint_batch;
use super::codec::connect;
use super::sql::{Sql, args, json_list};
use super::{Allocation, MintRequest, StoreError};
use crate::access::MintedAccess;
use crate::config::{AccessSettings, Cipher, FleetSettings, GcmIv, KeySize};
use crate::domain::{AppId, Connect, PhoneId, Priority, QueueId, SessionId, UserId, UtcTime};

/// The placeholder key's cipher: any; the issue replaces the key.
const PLACEHOLDER_CIPHER: Cipher = Cipher::Gcm {
    key: KeySize::Aes256,
    iv: GcmIv::Twelve,
};

/// An entry to add at the back of its app's queue.
#[derive(Debug, Clone)]
pub struct NewQueueEntry {
    pub queue_id: QueueId,
    pub app_id: AppId,
    pub user_id: UserId,
    /// The token that queues the player (its name): the entry is that platform's alone.
    pub token_name: String,
    pub priority: Priority,
    pub now: UtcTime,
    pub expires_at: UtcTime,
}

/// An entry as the book holds it, with its place.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QueueEntry {
    pub queue_id: QueueId,
    pub app_id: AppId,
    pub user_id: UserId,
    /// The token that queued the player: only it may poll or leave the entry.
    pub token_name: String,
    pub priority: Priority,
    pub joined_at: UtcTime,
    pub expires_at: UtcTime,
    /// 1 for the head of the app's queue; 0 once a phone is assigned.
    pub position: i64,
    /// The session minted for the entry, once assigned.
    pub session_id: Option<SessionId>,
    pub phone_id: Option<PhoneId>,
    pub assigned_at: Option<UtcTime>,
}

/// The holds of the sessions assignment mints: those of a plain mint at `now`.
#[derive(Debug, Clone, Copy)]
pub struct MintTimes {
    pub now: UtcTime,
    /// Phones not heard from since then are stale and not allocated.
    pub fresh_since: UtcTime,
    /// Ticket expiry as issued: epoch ms.
    pub auth_ts: i64,
    pub hold_until: UtcTime,
    /// Take only a phone that has the app (`MintRequest::match_app`).
    pub match_app: bool,
}

impl MintTimes {
    /// A mint at `now`: the ticket lives `access.ticket_ttl_secs`, and the phone is held
    /// until then plus the allowed clock skew, the latest a sign check may come.
    pub fn new(now: UtcTime, access: &AccessSettings, fleet: &FleetSettings) -> MintTimes {
        let auth_ts = now.plus(access.ticket_ttl()).epoch_millis();
        let expires_at = UtcTime::from_epoch_millis(auth_ts).unwrap_or(now);
        MintTimes {
            now,
            fresh_since: now.minus(fleet.stale_after()),
            auth_ts,
            hold_until: expires_at.plus(access.clock_skew()),
            match_app: access.match_app,
        }
    }

    /// The ticket's expiry as a time.
    pub fn expires_at(&self) -> UtcTime {
        UtcTime::from_epoch_millis(self.auth_ts).unwrap_or(self.now)
    }

    pub fn of(request: &MintRequest) -> MintTimes {
        MintTimes {
            now: request.now,
            fresh_since: request.fresh_since,
            auth_ts: request.auth_ts,
            hold_until: request.hold_until,
            match_app: request.match_app,
        }
    }
}

/// A poll of an assigned entry: the secrets to issue for its session. Only
/// `access.ticket` and `access.aes_key` are used; the session is the entry's.
#[derive(Debug)]
pub struct QueueIssue {
    pub queue_id: QueueId,
    pub access: MintedAccess,
    pub times: MintTimes,
}

/// What one pass of the queue did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueuePass {
    /// Entries dropped unserved: nobody polled them in time.
    pub expired: u64,
    /// Entries given a phone.
    pub assigned: u64,
}

/// What a poll of an assigned entry found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Issue {
    /// No such entry (never joined, left, or expired).
    Unknown,
    /// Not assigned yet.
    Waiting,
    /// The session holds its phone and now has the issued ticket.
    Issued(Seat),
    /// The entry's session moved on (verified, played, ended, expired): nothing to issue.
    Closed,
}

/// A session issued to a queued player.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seat {
    pub session_id: SessionId,
    pub phone_id: PhoneId,
    /// The ticket's expiry, epoch ms: set by the first issue and kept by every later one.
    pub auth_ts: i64,
    /// Time from joining to assignment, set on the first issue only (so a wait is
    /// counted once however many polls re-issue).
    pub first_wait_ms: Option<i64>,
    /// Where to connect to the phone (chapter 4.3.2 `access_infos`, from phone sync).
    pub connect: Connect,
}

#[derive(sqlx::FromRow)]
struct EntryRow {
    queue_id: String,
    app_id: String,
    user_id: String,
    token_name: String,
    priority: i64,
    joined_at: UtcTime,
    expires_at: UtcTime,
    position: i64,
    session_id: Option<String>,
    phone_id: Option<String>,
    assigned_at: Option<UtcTime>,
}

impl TryFrom<EntryRow> for QueueEntry {
    type Error = StoreError;

    fn try_from(row: EntryRow) -> Result<Self, Self::Error> {
        let corrupt =
            |what: &str| StoreError::Corrupt(format!("queue entry {}: {what}", row.queue_id));
        Ok(QueueEntry {
            app_id: AppId::try_from(row.app_id.clone()).map_err(|_| corrupt("app_id"))?,
            user_id: UserId::try_from(row.user_id.clone()).map_err(|_| corrupt("user_id"))?,
            priority: Priority::parse("priority", row.priority).map_err(|_| corrupt("priority"))?,
            session_id: (row.session_id.clone().map(SessionId::try_from).transpose())
                .map_err(|_| corrupt("session_id"))?,
            phone_id: (row.phone_id.clone().map(PhoneId::try_from).transpose())
                .map_err(|_| corrupt("phone_id"))?,
            queue_id: QueueId::try_from(row.queue_id)
                .map_err(|e| StoreError::Corrupt(format!("queue entry: queue_id: {e}")))?,
            token_name: row.token_name,
            joined_at: row.joined_at,
            expires_at: row.expires_at,
            position: row.position,
            assigned_at: row.assigned_at,
        })
    }
}

/// The columns of [`EntryRow`] for entry `q`; `$1` is now. The position counts the live
/// waiting entries of the same app served before this one.
macro_rules! entry_columns {
    () => {
        "q.queue_id, q.app_id, q.user_id, q.token_name, q.priority, q.joined_at, q.expires_at, \
         q.session_id, q.phone_id, q.assigned_at, \
         CASE WHEN q.session_id IS NOT NULL THEN 0 ELSE 1 + (SELECT COUNT(*) \
           FROM queue_entries a WHERE a.app_id = q.app_id AND a.session_id IS NULL \
             AND a.expires_at >= $1 \
             AND (a.priority > q.priority OR (a.priority = q.priority AND a.seq < q.seq))) \
         END AS position"
    };
}

/// The entry a join stands for, and whether the join made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    pub queue_id: QueueId,
    pub new: bool,
}

/// Queues the player, or finds the entry an earlier join of theirs made for the app that is
/// still in play: live (not past its expiry) and waiting, or assigned a session not used
/// yet. A platform whose join timed out joins again; a second entry would hold a place, and
/// then a phone, for a `queue_id` nobody polls. Only the same token's entries count: two
/// platforms' player ids may be equal, and each player is its own platform's. The entry
/// found keeps its place and
/// priority, and lives at least as long as a new one would. On PostgreSQL two joins of one
/// player at once (a retry racing its first attempt) take turns on a transaction lock of
/// the player's own, so the second finds the first's entry.
pub(super) async fn join<D: Sql>(tx: &mut D, e: &NewQueueEntry) -> Result<Joined, StoreError> {
    let (app, user, token) = (e.app_id.as_str(), e.user_id.as_str(), e.token_name.as_str());
    if D::LOCKS_ROWS {
        let lock = "SELECT pg_advisory_xact_lock(hashtext($1), hashtext($2))::text";
        let _: Option<(String,)> = tx.fetch_optional(lock, &args![app, user]).await?;
    }
    let mine = "SELECT q.queue_id FROM queue_entries q \
                WHERE q.app_id = $1 AND q.user_id = $2 AND q.token_name IN ($4, '') \
                  AND q.expires_at >= $3 \
                  AND (q.session_id IS NULL OR EXISTS (SELECT 1 FROM sessions s \
                    WHERE s.session_id = q.session_id AND s.state = 'minted' \
                      AND s.hold_until >= $3)) \
                ORDER BY q.seq LIMIT 1";
    let found: Option<(String,)> = tx.fetch_optional(mine, &args![app, user, e.now, token]).await?;
    if let Some((queue_id,)) = found {
        let queue_id =
            QueueId::try_from(queue_id).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let later = "UPDATE queue_entries SET token_name = $3, \
                       expires_at = CASE WHEN expires_at < $2 THEN $2 ELSE expires_at END \
                     WHERE queue_id = $1";
        tx.execute(later, &args![queue_id.as_str(), e.expires_at, token])
            .await?;
        return Ok(Joined { queue_id, new: false });
    }
    insert(tx, e).await?;
    Ok(Joined {
        queue_id: e.queue_id.clone(),
        new: true,
    })
}

async fn insert(tx: &mut impl Sql, e: &NewQueueEntry) -> Result<(), StoreError> {
    let sql = "INSERT INTO queue_entries (queue_id, app_id, user_id, priority, joined_at, \
                 expires_at, token_name) VALUES ($1, $2, $3, $4, $5, $6, $7)";
    let args = args![
        e.queue_id.as_str(),
        e.app_id.as_str(),
        e.user_id.as_str(),
        e.priority.value(),
        e.now,
        e.expires_at,
        e.token_name.as_str(),
    ];
    tx.execute(sql, &args).await?;
    Ok(())
}

/// The live entry (not past its expiry), with its place.
pub(super) async fn entry(
    db: &mut impl Sql,
    queue_id: &QueueId,
    now: UtcTime,
) -> Result<Option<QueueEntry>, StoreError> {
    let sql = concat!(
        "SELECT ",
        entry_columns!(),
        " FROM queue_entries q WHERE q.queue_id = $2 AND q.expires_at >= $1"
    );
    let row: Option<EntryRow> = db
        .fetch_optional(sql, &args![now, queue_id.as_str()])
        .await?;
    row.map(QueueEntry::try_from).transpose()
}

/// Live entries in serving order per app.
pub(super) async fn entries(
    db: &mut impl Sql,
    now: UtcTime,
    limit: i64,
) -> Result<Vec<QueueEntry>, StoreError> {
    let sql = concat!(
        "SELECT ",
        entry_columns!(),
        " FROM queue_entries q WHERE q.expires_at >= $1 \
         ORDER BY q.app_id, q.session_id IS NULL, q.priority DESC, q.seq LIMIT $2"
    );
    let rows: Vec<EntryRow> = db.fetch_all(sql, &args![now, limit]).await?;
    rows.into_iter().map(QueueEntry::try_from).collect()
}

/// Moves a live entry of `token_name`'s expiry on (a poll); false when it is gone, already
/// expired (so a late poll cannot bring back an entry whose place was freed), or another
/// token's.
pub(super) async fn extend(
    tx: &mut impl Sql,
    queue_id: &QueueId,
    token_name: &str,
    now: UtcTime,
    expires_at: UtcTime,
) -> Result<bool, StoreError> {
    let sql = "UPDATE queue_entries SET expires_at = $3, token_name = $4 \
               WHERE queue_id = $1 AND token_name IN ($4, '') AND expires_at >= $2 \
                 AND expires_at < $3";
    let args = args![queue_id.as_str(), now, expires_at, token_name];
    if tx.execute(sql, &args).await? == 1 {
        return Ok(true);
    }
    // Already extended further (a concurrent poll): still live.
    let found = entry(tx, queue_id, now).await?;
    Ok(found.is_some_and(|entry| [token_name, ""].contains(&entry.token_name.as_str())))
}

/// Whether the table has no rows at all (live, expired or served): then a pass has nothing
/// to do and need not take the write lock.
pub(super) async fn is_empty(db: &mut impl Sql) -> Result<bool, StoreError> {
    let sql = "SELECT 1 FROM queue_entries LIMIT 1";
    let any: Option<(i32,)> = db.fetch_optional(sql, &[]).await?;
    Ok(any.is_none())
}

/// Waiting entries per app.
pub(super) async fn lengths(
    db: &mut impl Sql,
    now: UtcTime,
) -> Result<Vec<(String, i64)>, StoreError> {
    let sql = "SELECT app_id, COUNT(*) FROM queue_entries \
               WHERE session_id IS NULL AND expires_at >= $1 GROUP BY app_id";
    Ok(db.fetch_all(sql, &args![now]).await?)
}

/// Sessions of `app_id` started since `since`: how fast the app's phones turn over.
pub(super) async fn started_since(
    db: &mut impl Sql,
    app_id: &AppId,
    since: UtcTime,
) -> Result<i64, StoreError> {
    let sql = "SELECT COUNT(*) FROM sessions WHERE started_at >= $2 AND app_id = $1";
    let (count,): (i64,) = db
        .fetch_optional(sql, &args![app_id.as_str(), since])
        .await?
        .unwrap_or((0,));
    Ok(count)
}

/// Releases the lapsed holds, then gives free phones to the heads of the queues: a phone
/// whose hold lapsed goes to the players waiting for its app before any new mint. The
/// number of entries assigned. `pinned` are the phones a batch of mints names, locked with
/// the lapsed ones (see `book::release_lapsed_holds`).
pub(super) async fn serve<D: Sql>(
    tx: &mut D,
    times: &MintTimes,
    pinned: &[&PhoneId],
) -> Result<u64, StoreError> {
    book::release_lapsed_holds(tx, times.now, pinned).await?;
    assign(tx, times).await
}

/// Gives free phones to the waiting entries, the highest priority and the longest waiting
/// first whatever their app (the design's fairness: taken app by app, the first app in
/// name order took every freed phone its players could use, and another app's urgent
/// player waited behind them), until no app's head finds a phone: an app whose head finds
/// none is passed over for the rest of the pass. The number of entries assigned.
async fn assign<D: Sql>(tx: &mut D, times: &MintTimes) -> Result<u64, StoreError> {
    let mut passed_over: Vec<String> = Vec::new();
    let mut assigned = 0;
    loop {
        let skip = json_list(&passed_over)?;
        let head: Option<Head> = tx
            .fetch_optional(head_sql::<D>(), &args![times.now, skip.as_str()])
            .await?;
        let Some(head) = head else {
            return Ok(assigned);
        };
        let app_id = head.app_id.clone();
        match assign_head(tx, head, times).await? {
            true => assigned += 1,
            false => passed_over.push(app_id),
        }
    }
}

#[derive(sqlx::FromRow)]
struct Head {
    seq: i64,
    app_id: String,
    user_id: String,
}

/// The next entry to serve, of an app not in `$2` (a JSON list), locked on PostgreSQL until
/// the transaction ends. Every pass and mint takes heads in this one order, so two never
/// wait for each other's.
fn head_sql<D: Sql>() -> &'static str {
    macro_rules! head {
        ($skip:literal, $lock:literal) => {
            concat!(
                "SELECT seq, app_id, user_id FROM queue_entries \
                 WHERE session_id IS NULL AND expires_at >= $1 AND app_id NOT IN (",
                $skip,
                ") ORDER BY priority DESC, seq LIMIT 1",
                $lock
            )
        };
    }
    match D::LOCKS_ROWS {
        true => head!("SELECT json_array_elements_text($2::json)", " FOR UPDATE"),
        false => head!("SELECT value FROM json_each($2)", ""),
    }
}

/// Mints for `head` on a free phone of its app and records the assignment; false when no
/// phone is free for the app.
async fn assign_head<D: Sql>(tx: &mut D, head: Head, t: &MintTimes) -> Result<bool, StoreError> {
    // A ticket and key nobody will ever see: the session needs them to exist, and the poll
    // replaces both with the ones it hands out (the key of `access.cipher`'s size).
    let request = MintRequest {
        access: MintedAccess::mint(PLACEHOLDER_CIPHER),
        app_id: AppId::try_from(head.app_id).map_err(corrupt_head)?,
        user_id: UserId::try_from(head.user_id).map_err(corrupt_head)?,
        pinned_phone: None,
        auth_ts: t.auth_ts,
        hold_until: t.hold_until,
        now: t.now,
        fresh_since: t.fresh_since,
        match_app: t.match_app,
        key: None,
    };
    let Allocation::Allocated { phone_id, .. } = book::mint_released(tx, &request).await? else {
        return Ok(false);
    };
    let sql = "UPDATE queue_entries SET session_id = $2, phone_id = $3, assigned_at = $4 \
               WHERE seq = $1";
    let session_id = request.access.session_id.as_str();
    let args = args![head.seq, session_id, phone_id.as_str(), t.now];
    tx.execute(sql, &args).await?;
    Ok(true)
}

fn corrupt_head(e: crate::domain::ParseError) -> StoreError {
    StoreError::Corrupt(format!("queue entry: {e}"))
}

/// Plain mints in arrival order, in one transaction (the mint writer's batch, or a batch of
/// one): the queue is served first, so a phone that became free goes to the players already
/// waiting for its app before anyone new (docs/api.md "The wait queue"). The queue is served
/// once, at the batch's latest `now`, and every mint then gets what it would alone: each one
/// leaves what it would have left one by one, except that a hold lapsing within the batch's
/// few milliseconds counts as lapsed for all of it (it is, by the time the batch commits).
/// Serving once also keeps the lock order on PostgreSQL: lapsed and pinned phones, then the
/// queue heads, then only rows the batch holds or skips (`book::pick_phone_sql`); serving
/// before each mint would lock heads after phones the batch already holds.
///
/// The mints are decided set-wise (`mint_batch.rs`): a fixed number of statements for the
/// whole batch rather than four to six per mint. Where that cannot decide, or finds that
/// another transaction took a phone or a key first, it writes nothing and the batch mints
/// one by one here (`book::mint_released`), as does a batch of one, whose single mint's
/// statements are fewer.
pub(super) async fn mint_batch<D: Sql>(
    tx: &mut D,
    requests: &[&MintRequest],
) -> Result<Vec<Allocation>, StoreError> {
    let Some(latest) = requests.iter().max_by_key(|r| r.now) else {
        return Ok(Vec::new());
    };
    let mut pinned: Vec<&PhoneId> = requests
        .iter()
        .filter_map(|r| r.pinned_phone.as_ref())
        .collect();
    pinned.sort_unstable();
    pinned.dedup();
    serve(tx, &MintTimes::of(latest), &pinned).await?;
    // A batch of one takes the single mint's statements, fewer than the set-wise ones.
    if requests.len() > 1
        && let Some(allocations) = mint_batch::mint_set(tx, requests).await?
    {
        return Ok(allocations);
    }
    let mut allocations = Vec::with_capacity(requests.len());
    for request in requests {
        allocations.push(book::mint_released(tx, request).await?);
    }
    Ok(allocations)
}

#[derive(sqlx::FromRow)]
struct Assigned {
    seq: i64,
    session_id: Option<String>,
    phone_id: Option<String>,
    joined_at: UtcTime,
    assigned_at: Option<UtcTime>,
    issued_at: Option<UtcTime>,
}

fn assigned_sql<D: Sql>() -> &'static str {
    macro_rules! assigned {
        ($lock:literal) => {
            concat!(
                "SELECT seq, session_id, phone_id, joined_at, assigned_at, issued_at \
                 FROM queue_entries WHERE queue_id = $1 AND expires_at >= $2",
                $lock
            )
        };
    }
    match D::LOCKS_ROWS {
        true => assigned!(" FOR UPDATE"),
        false => assigned!(""),
    }
}

/// Hands out a fresh ticket and key for an assigned entry's session while the session is
/// still `minted`. The book holds only the ticket's hash, so a ticket cannot be shown
/// twice; a repeated poll (a lost answer) gets a new one, and the older stops working.
/// The first issue restarts the hold from now; later ones keep its expiry, so polling
/// again and again cannot hold a phone for ever.
pub(super) async fn issue<D: Sql>(tx: &mut D, req: &QueueIssue) -> Result<Issue, StoreError> {
    let found: Option<Assigned> = tx
        .fetch_optional(
            assigned_sql::<D>(),
            &args![req.queue_id.as_str(), req.times.now],
        )
        .await?;
    let Some(entry) = found else {
        return Ok(Issue::Unknown);
    };
    let (Some(session_id), Some(phone_id)) = (&entry.session_id, &entry.phone_id) else {
        return Ok(Issue::Waiting);
    };
    let first = entry.issued_at.is_none();
    // Not handed out yet: a phone that stopped serving since it was assigned (silent,
    // recovering, out of service, drained by a rollout) or a hold that lapsed first left the
    // player a phone they could not reach, then their place gone (`Closed`). The entry goes
    // back to waiting, at its place, and the next pass gives it a phone that serves.
    if first && !still_serves(tx, session_id, phone_id, req.times.fresh_since).await? {
        requeue(tx, &req.queue_id, session_id, req.times.now).await?;
        return Ok(Issue::Waiting);
    }
    let Some(auth_ts) = reissue(tx, session_id, req, first).await? else {
        // Its hold lapsed between the check and here (a sweep committed meanwhile): never
        // handed out, so the entry waits again too.
        if first {
            requeue(tx, &req.queue_id, session_id, req.times.now).await?;
            return Ok(Issue::Waiting);
        }
        return Ok(Issue::Closed);
    };
    if first {
        first_issue(tx, session_id, phone_id, req).await?;
    }
    let connect = phone_connect(tx, phone_id).await?;
    seat(entry, auth_ts, first, connect)
}

/// Whether the assigned phone would still be given out (as `book::free_phone_sql` judges,
/// held for this session) and the session still waits for its ticket.
async fn still_serves(
    tx: &mut impl Sql,
    session_id: &str,
    phone_id: &str,
    fresh_since: UtcTime,
) -> Result<bool, StoreError> {
    let sql = concat!(
        "SELECT EXISTS (SELECT 1 FROM phones WHERE phone_id = $2 \
           AND allocated_session_id = $1 AND current_session_id IS NULL AND ",
        book::serving_phone_sql!("$3"),
        " AND EXISTS (SELECT 1 FROM sessions s WHERE s.session_id = $1 \
           AND s.state = 'minted'))"
    );
    let row: Option<(bool,)> = tx
        .fetch_optional(sql, &args![session_id, phone_id, fresh_since])
        .await?;
    Ok(row.is_some_and(|(serves,)| serves))
}

/// An assignment never handed out, undone: its session expired and its phone freed (as a
/// leave does), the entry waiting again with its `seq`, so its place and priority.
async fn requeue(
    tx: &mut impl Sql,
    queue_id: &QueueId,
    session_id: &str,
    now: UtcTime,
) -> Result<(), StoreError> {
    let unissued = Removed {
        session_id: Some(session_id.to_owned()),
        issued_at: None,
    };
    release_unissued(tx, &unissued, now).await?;
    let sql = "UPDATE queue_entries SET session_id = NULL, phone_id = NULL, assigned_at = NULL \
               WHERE queue_id = $1 AND session_id = $2 AND issued_at IS NULL";
    tx.execute(sql, &args![queue_id.as_str(), session_id]).await?;
    tracing::info!(queue_id = %queue_id, session_id, "assigned phone no longer serves before the first poll: the entry waits again at its place");
    Ok(())
}

/// Where to connect to the phone, as a plain mint answers it.
async fn phone_connect(tx: &mut impl Sql, phone_id: &str) -> Result<Connect, StoreError> {
    let sql = "SELECT server_id, access_infos FROM phones WHERE phone_id = $1";
    let row: Option<(Option<String>, Option<String>)> =
        tx.fetch_optional(sql, &args![phone_id]).await?;
    let (server_id, access_infos) = row.unwrap_or_default();
    connect(server_id, access_infos.as_deref())
}

/// Replaces the session's ticket and key, and on the first issue its expiry; the ticket's
/// expiry, or None once the session left `minted` (its ticket used, or its hold lapsed).
async fn reissue(
    tx: &mut impl Sql,
    session_id: &str,
    req: &QueueIssue,
    first: bool,
) -> Result<Option<i64>, StoreError> {
    let t = &req.times;
    let sql = "UPDATE sessions SET ticket_hash = $2, aes_key = $3, \
                 auth_ts = CASE WHEN $7 THEN $4 ELSE auth_ts END, \
                 hold_until = CASE WHEN $7 THEN $5 ELSE hold_until END, updated_at = $6 \
               WHERE session_id = $1 AND state = 'minted' RETURNING auth_ts";
    let ticket_hash = req.access.ticket.hash_hex();
    let aes_key = req.access.aes_key.to_hex();
    let args = args![
        session_id,
        ticket_hash.as_str(),
        aes_key.as_str(),
        t.auth_ts,
        t.hold_until,
        t.now,
        first,
    ];
    let auth_ts: Option<(i64,)> = tx.fetch_optional(sql, &args).await?;
    Ok(auth_ts.map(|(ts,)| ts))
}

/// With the first ticket issued: restarts the phone's hold, as a mint would hold it, and
/// marks the entry issued.
async fn first_issue(
    tx: &mut impl Sql,
    session_id: &str,
    phone_id: &str,
    req: &QueueIssue,
) -> Result<(), StoreError> {
    let t = &req.times;
    let sql = "UPDATE phones SET allocated_until = $2, updated_at = $3 \
               WHERE phone_id = $4 AND allocated_session_id = $1";
    let args = args![session_id, t.hold_until, t.now, phone_id];
    tx.execute(sql, &args).await?;
    let issued = "UPDATE queue_entries SET issued_at = $2 WHERE session_id = $1";
    tx.execute(issued, &args![session_id, t.now]).await?;
    Ok(())
}

fn seat(entry: Assigned, auth_ts: i64, first: bool, connect: Connect) -> Result<Issue, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("queue entry {}: {what}", entry.seq));
    let waited = entry
        .assigned_at
        .map(|at| at.epoch_millis() - entry.joined_at.epoch_millis());
    let (session_id, phone_id) = (entry.session_id.clone(), entry.phone_id.clone());
    Ok(Issue::Issued(Seat {
        session_id: SessionId::try_from(session_id.unwrap_or_default())
            .map_err(|_| corrupt("session_id"))?,
        phone_id: PhoneId::try_from(phone_id.unwrap_or_default())
            .map_err(|_| corrupt("phone_id"))?,
        auth_ts,
        first_wait_ms: waited.filter(|_| first),
        connect,
    }))
}

#[derive(sqlx::FromRow)]
struct Removed {
    session_id: Option<String>,
    issued_at: Option<UtcTime>,
}

/// Takes `token_name`'s entry out of the queue; false when it had none by that id. A
/// session assigned to it but never issued is expired and its phone freed at once for the
/// next in line.
pub(super) async fn leave(
    tx: &mut impl Sql,
    queue_id: &QueueId,
    token_name: &str,
    now: UtcTime,
) -> Result<bool, StoreError> {
    let sql = "DELETE FROM queue_entries WHERE queue_id = $1 AND token_name IN ($3, '') \
                 AND expires_at >= $2 RETURNING session_id, issued_at";
    let removed: Option<Removed> = tx
        .fetch_optional(sql, &args![queue_id.as_str(), now, token_name])
        .await?;
    let Some(removed) = removed else {
        return Ok(false);
    };
    release_unissued(tx, &removed, now).await?;
    Ok(true)
}

/// Drops entries past their expiry. Those never served (no ticket issued) are the expired
/// ones and are counted; entries already served simply leave the table.
pub(super) async fn expire(tx: &mut impl Sql, now: UtcTime) -> Result<u64, StoreError> {
    let sql = "DELETE FROM queue_entries WHERE expires_at < $1 RETURNING session_id, issued_at";
    let removed: Vec<Removed> = tx.fetch_all(sql, &args![now]).await?;
    let mut expired = 0;
    for entry in &removed {
        if entry.issued_at.is_none() {
            expired += 1;
        }
        release_unissued(tx, entry, now).await?;
    }
    Ok(expired)
}

async fn release_unissued(
    tx: &mut impl Sql,
    removed: &Removed,
    now: UtcTime,
) -> Result<(), StoreError> {
    let (Some(session_id), None) = (removed.session_id.as_deref(), removed.issued_at) else {
        return Ok(());
    };
    let expire = "UPDATE sessions SET state = 'expired', updated_at = $2 \
                  WHERE session_id = $1 AND state = 'minted'";
    tx.execute(expire, &args![session_id, now]).await?;
    // The phone by its key (the session names it), not a scan for the session.
    let free = "UPDATE phones SET allocated_session_id = NULL, allocated_until = NULL, \
                  updated_at = $2 WHERE allocated_session_id = $1 \
                  AND phone_id = (SELECT phone_id FROM sessions WHERE session_id = $1)";
    tx.execute(free, &args![session_id, now]).await?;
    Ok(())
}
