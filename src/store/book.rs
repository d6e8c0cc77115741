//! The write logic of the session book, shared by both backends.
//!
//! Both SQLite and PostgreSQL take `$N` placeholders, `ON CONFLICT … DO UPDATE … WHERE` and
//! `RETURNING`, and [`UtcTime`](crate::domain::UtcTime) encodes natively on each, so the SQL
//! below is written once. sqlx cannot be generic over the database without a wall of trait
//! bounds, so this macro instantiates the same code for each backend; the row-locking
//! clauses are the only difference (PostgreSQL locks rows; SQLite has one writer anyway).
//! Enter/quit events are the exception: they are applied a batch at a time with statements
//! over whole lists (`json_each` on SQLite, `UNNEST` on PostgreSQL), which each backend
//! writes in its own file, around the logic of `event_batch`.

macro_rules! session_book {
    ($db:ty, skip_locked = $skip_locked:literal) => {
        use crate::domain::{Session, UtcTime};
        use crate::store::codec::{EventRecord, IssuedAccessRow, Phone, SessionRow};
        use crate::store::{Allocation, MintRequest, StoreError};

        type Tx = sqlx::Transaction<'static, $db>;

        async fn save_session(tx: &mut Tx, s: &Session, now: UtcTime) -> Result<(), StoreError> {
            sqlx::query(
                "UPDATE sessions SET state = $2, started_at = $3, ended_at = $4, \
                   reported_run_time = $5, duration_seconds = $6, run_time_mismatch = $7, \
                   end_reason = $8, error_msg = $9, updated_at = $10 \
                 WHERE session_id = $1",
            )
            .bind(&s.session_id)
            .bind(s.state.as_str())
            .bind(s.started_at)
            .bind(s.ended_at)
            .bind(s.reported_run_time)
            .bind(s.duration_seconds)
            .bind(s.run_time_mismatch)
            .bind(s.end_reason.map(|r| r.as_str()))
            .bind(s.error_msg.as_deref())
            .bind(now)
            .execute(&mut **tx)
            .await?;
            Ok(())
        }

        pub(super) async fn session(
            pool: &sqlx::Pool<$db>,
            session_id: &str,
        ) -> Result<Option<Session>, StoreError> {
            let row: Option<SessionRow> = sqlx::query_as(concat!(
                "SELECT ",
                $crate::store::book::session_columns!(),
                " FROM sessions WHERE session_id = $1"
            ))
            .bind(session_id)
            .fetch_optional(pool)
            .await?;
            row.map(Session::try_from).transpose()
        }

        /// Newest first (created_at, then session_id), after the cursor `before`.
        pub(super) async fn sessions(
            pool: &sqlx::Pool<$db>,
            f: &crate::store::SessionFilter,
            limit: i64,
        ) -> Result<Vec<Session>, StoreError> {
            let (before_at, before_id) = match &f.before {
                Some((at, id)) => (Some(*at), Some(id.as_str())),
                None => (None, None),
            };
            let rows: Vec<SessionRow> = sqlx::query_as(concat!(
                "SELECT ", $crate::store::book::session_columns!(), " FROM sessions \
                 WHERE ($1 IS NULL OR app_id = $1) AND ($2 IS NULL OR phone_id = $2) \
                   AND ($3 IS NULL OR user_id = $3) AND ($4 IS NULL OR state = $4) \
                   AND ($5 IS NULL OR created_at >= $5) AND ($6 IS NULL OR created_at < $6) \
                   AND ($7 IS NULL OR created_at < $7 OR (created_at = $7 AND session_id < $8)) \
                 ORDER BY created_at DESC, session_id DESC LIMIT $9"
            ))
            .bind(f.app_id.as_deref())
            .bind(f.phone_id.as_deref())
            .bind(f.user_id.as_deref())
            .bind(f.state.as_deref())
            .bind(f.from)
            .bind(f.to)
            .bind(before_at)
            .bind(before_id)
            .bind(limit)
            .fetch_all(pool)
            .await?;
            rows.into_iter().map(Session::try_from).collect()
        }

        pub(super) async fn session_events(
            pool: &sqlx::Pool<$db>,
            session_id: &str,
        ) -> Result<Vec<EventRecord>, StoreError> {
            Ok(sqlx::query_as(
                "SELECT id, CASE status WHEN 0 THEN 'enter' ELSE 'quit' END AS kind, phone_id, \
                   app_id, event_time AS time, run_time, error_msg, outcome, received_at \
                 FROM session_events WHERE session_id = $1 ORDER BY id",
            )
            .bind(session_id)
            .fetch_all(pool)
            .await?)
        }

        pub(super) async fn phone(
            pool: &sqlx::Pool<$db>,
            phone_id: &str,
            fresh_since: UtcTime,
        ) -> Result<Option<Phone>, StoreError> {
            Ok(sqlx::query_as(concat!(
                "SELECT ", $crate::store::book::phone_columns!(), " FROM phones WHERE phone_id = $2"
            ))
            .bind(fresh_since)
            .bind(phone_id)
            .fetch_optional(pool)
            .await?)
        }

        /// Phones in id order, after `after` (keyset paging).
        pub(super) async fn phones(
            pool: &sqlx::Pool<$db>,
            fresh_since: UtcTime,
            after: &str,
            limit: i64,
        ) -> Result<Vec<Phone>, StoreError> {
            Ok(sqlx::query_as(concat!(
                "SELECT ", $crate::store::book::phone_columns!(),
                " FROM phones WHERE phone_id > $2 ORDER BY phone_id LIMIT $3"
            ))
            .bind(fresh_since)
            .bind(after)
            .bind(limit)
            .fetch_all(pool)
            .await?)
        }

        /// Phones heard from before but silent since `fresh_since`, or that the control
        /// plane reports abnormal, restart failed or reset failed.
        pub(super) async fn unhealthy_phones(
            pool: &sqlx::Pool<$db>,
            fresh_since: UtcTime,
        ) -> Result<Vec<crate::store::PhoneHealth>, StoreError> {
            Ok(sqlx::query_as(
                "SELECT phone_id, last_seen_at, cph_status, recovery_state FROM phones \
                 WHERE (last_seen_at IS NOT NULL AND last_seen_at < $1) OR cph_status IN (-5, -6, -7) \
                 ORDER BY phone_id",
            )
            .bind(fresh_since)
            .fetch_all(pool)
            .await?)
        }

        /// Closes playing sessions whose phone went silent, at their last heartbeat.
        pub(super) async fn abandon_sessions_on_stale_phones(
            tx: &mut Tx,
            fresh_since: UtcTime,
            now: UtcTime,
        ) -> Result<Vec<Session>, StoreError> {
            let rows: Vec<SessionRow> = sqlx::query_as(concat!(
                "SELECT ", $crate::store::book::session_columns!(),
                " FROM sessions WHERE state = 'playing' AND phone_id IN \
                   (SELECT phone_id FROM phones WHERE last_seen_at < $1)"
            ))
            .bind(fresh_since)
            .fetch_all(&mut **tx)
            .await?;
            let mut abandoned = Vec::with_capacity(rows.len());
            for row in rows {
                let session = Session::try_from(row)?.abandon();
                save_session(tx, &session, now).await?;
                sqlx::query(
                    "UPDATE phones SET current_session_id = NULL, current_app_id = NULL, \
                       current_session_started_at = NULL, updated_at = $2 \
                     WHERE current_session_id = $1",
                )
                .bind(&session.session_id)
                .bind(now)
                .execute(&mut **tx)
                .await?;
                abandoned.push(session);
            }
            Ok(abandoned)
        }

        pub(super) async fn recoveries(
            pool: &sqlx::Pool<$db>,
            phone_id: Option<&str>,
            since: Option<UtcTime>,
            limit: i64,
        ) -> Result<Vec<crate::store::Recovery>, StoreError> {
            Ok(sqlx::query_as(concat!(
                "SELECT ", $crate::store::book::recovery_columns!(),
                " FROM recoveries WHERE ($1 IS NULL OR phone_id = $1) AND ($2 IS NULL OR started_at >= $2) \
                 ORDER BY id DESC LIMIT $3"
            ))
            .bind(phone_id)
            .bind(since)
            .bind(limit)
            .fetch_all(pool)
            .await?)
        }

        pub(super) async fn pending_recoveries(
            pool: &sqlx::Pool<$db>,
        ) -> Result<Vec<crate::store::Recovery>, StoreError> {
            Ok(sqlx::query_as(concat!(
                "SELECT ", $crate::store::book::recovery_columns!(),
                " FROM recoveries WHERE outcome = 'pending' ORDER BY id"
            ))
            .fetch_all(pool)
            .await?)
        }

        /// Logs a decision and marks the phone `recovering` (or `broken`) in one transaction.
        pub(super) async fn start_recovery(
            tx: &mut Tx,
            r: &crate::store::NewRecovery,
        ) -> Result<crate::store::Recovery, StoreError> {
            let recovery: crate::store::Recovery = sqlx::query_as(concat!(
                "INSERT INTO recoveries (phone_id, reason, action, dry_run, outcome, error, started_at, ended_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING ",
                $crate::store::book::recovery_columns!()
            ))
            .bind(&r.phone_id)
            .bind(r.reason)
            .bind(r.action)
            .bind(r.dry_run)
            .bind(r.outcome)
            .bind(r.error.as_deref())
            .bind(r.started_at)
            .bind(r.ended_at)
            .fetch_one(&mut **tx)
            .await?;
            if let Some(state) = r.phone_state {
                sqlx::query("UPDATE phones SET recovery_state = $2, updated_at = $3 WHERE phone_id = $1")
                    .bind(&r.phone_id)
                    .bind(state)
                    .bind(r.started_at)
                    .execute(&mut **tx)
                    .await?;
            }
            Ok(recovery)
        }

        pub(super) async fn finish_recovery(
            tx: &mut Tx,
            f: &crate::store::FinishedRecovery,
        ) -> Result<(), StoreError> {
            sqlx::query(
                "UPDATE recoveries SET outcome = $2, request_id = COALESCE($3, request_id), \
                   job_id = COALESCE($4, job_id), error = $5, ended_at = $6 \
                 WHERE id = $1 AND outcome = 'pending'",
            )
            .bind(f.id)
            .bind(f.outcome)
            .bind(f.request_id.as_deref())
            .bind(f.job_id.as_deref())
            .bind(f.error.as_deref())
            .bind(f.ended_at)
            .execute(&mut **tx)
            .await?;
            Ok(())
        }

        /// Job accepted but not finished: remember its ids, keep the outcome pending.
        pub(super) async fn note_recovery_job(
            pool: &sqlx::Pool<$db>,
            id: i64,
            request_id: Option<&str>,
            job_id: &str,
        ) -> Result<(), StoreError> {
            sqlx::query("UPDATE recoveries SET request_id = $2, job_id = $3 WHERE id = $1")
                .bind(id)
                .bind(request_id)
                .bind(job_id)
                .execute(pool)
                .await?;
            Ok(())
        }

        /// Phones heard from again while running are no longer recovering or broken.
        pub(super) async fn clear_recovered(tx: &mut Tx, fresh_since: UtcTime) -> Result<u64, StoreError> {
            Ok(sqlx::query(
                "UPDATE phones SET recovery_state = NULL WHERE recovery_state IS NOT NULL \
                 AND last_seen_at >= $1 AND (cph_status IS NULL OR cph_status = 2) \
                 AND NOT EXISTS (SELECT 1 FROM recoveries r WHERE r.phone_id = phones.phone_id \
                   AND r.outcome = 'pending')",
            )
            .bind(fresh_since)
            .execute(&mut **tx)
            .await?
            .rows_affected())
        }

        pub(super) async fn mint_session(tx: &mut Tx, req: &MintRequest) -> Result<Allocation, StoreError> {
            release_lapsed_holds(tx, req.now).await?;
            let session_id = req.access.session_id.as_str();
            // Two statements rather than `$5 IS NULL OR phone_id = $5`: that form hides the
            // key from the planner, so even a pinned mint scanned every phone.
            let statement = match req.pinned_phone {
                Some(_) => concat!(
                    "UPDATE phones SET allocated_session_id = $1, allocated_until = $2, \
                       updated_at = $3 \
                     WHERE phone_id = (SELECT phone_id FROM phones WHERE phone_id = $5 AND ",
                    $crate::store::book::free_phone_sql!(),
                    $skip_locked,
                    ") RETURNING phone_id"
                ),
                None => concat!(
                    "UPDATE phones SET allocated_session_id = $1, allocated_until = $2, \
                       updated_at = $3 \
                     WHERE phone_id = (SELECT phone_id FROM phones WHERE ",
                    $crate::store::book::free_phone_sql!(),
                    " LIMIT 1",
                    $skip_locked,
                    ") RETURNING phone_id"
                ),
            };
            let mut pick = sqlx::query_scalar(statement)
                .bind(session_id)
                .bind(req.hold_until)
                .bind(req.now)
                .bind(req.fresh_since);
            if let Some(pinned) = &req.pinned_phone {
                pick = pick.bind(pinned.as_str());
            }
            let phone: Option<String> = pick.fetch_optional(&mut **tx).await?;
            let Some(phone_id) = phone else {
                return refusal(tx, req.pinned_phone.as_deref()).await;
            };
            sqlx::query(
                "INSERT INTO sessions (session_id, phone_id, app_id, user_id, issued, state, \
                   minted_at, ticket_hash, aes_key, auth_ts, hold_until, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, TRUE, 'minted', $5, $6, $7, $8, $9, $5, $5)",
            )
            .bind(session_id)
            .bind(&phone_id)
            .bind(&req.app_id)
            .bind(&req.user_id)
            .bind(req.now)
            .bind(req.access.ticket.hash_hex())
            .bind(req.access.aes_key.to_hex())
            .bind(req.auth_ts)
            .bind(req.hold_until)
            .execute(&mut **tx)
            .await?;
            Ok(Allocation::Allocated { phone_id })
        }

        async fn refusal(tx: &mut Tx, pinned: Option<&str>) -> Result<Allocation, StoreError> {
            let Some(phone_id) = pinned else {
                return Ok(Allocation::NoFreePhone);
            };
            let known: Option<i32> = sqlx::query_scalar("SELECT 1 FROM phones WHERE phone_id = $1")
                .bind(phone_id)
                .fetch_optional(&mut **tx)
                .await?;
            Ok(if known.is_some() { Allocation::PhoneBusy } else { Allocation::UnknownPhone })
        }

        pub(super) async fn active_sessions_by_app(
            pool: &sqlx::Pool<$db>,
        ) -> Result<Vec<(String, i64)>, StoreError> {
            Ok(sqlx::query_as(
                "SELECT app_id, COUNT(*) FROM sessions WHERE state = 'playing' GROUP BY app_id",
            )
            .fetch_all(pool)
            .await?)
        }

        pub(super) async fn phones_by_state(
            pool: &sqlx::Pool<$db>,
            fresh_since: UtcTime,
        ) -> Result<Vec<(String, i64)>, StoreError> {
            Ok(sqlx::query_as(concat!(
                "SELECT ",
                $crate::store::book::phone_state_sql!(),
                " AS state, COUNT(*) FROM phones GROUP BY 1"
            ))
            .bind(fresh_since)
            .fetch_all(pool)
            .await?)
        }

        /// Records what the control plane says about each phone (name, server, status).
        pub(super) async fn sync_phones(
            tx: &mut Tx,
            phones: &[crate::store::ControlPlanePhone],
            now: UtcTime,
        ) -> Result<(), StoreError> {
            for phone in phones {
                sqlx::query(
                    "INSERT INTO phones (phone_id, phone_name, server_id, cph_status, cph_synced_at, \
                       created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5, $5) \
                     ON CONFLICT (phone_id) DO UPDATE SET phone_name = excluded.phone_name, \
                       server_id = excluded.server_id, cph_status = excluded.cph_status, \
                       cph_synced_at = excluded.cph_synced_at, updated_at = excluded.updated_at",
                )
                .bind(&phone.phone_id)
                .bind(&phone.phone_name)
                .bind(&phone.server_id)
                .bind(phone.status)
                .bind(now)
                .execute(&mut **tx)
                .await?;
            }
            Ok(())
        }

        pub(super) async fn release_lapsed_holds(tx: &mut Tx, now: UtcTime) -> Result<u64, StoreError> {
            let expired = sqlx::query(
                "UPDATE sessions SET state = 'expired', updated_at = $1 \
                 WHERE state IN ('minted', 'verified') AND hold_until < $1",
            )
            .bind(now)
            .execute(&mut **tx)
            .await?
            .rows_affected();
            sqlx::query(
                "UPDATE phones SET allocated_session_id = NULL, allocated_until = NULL, \
                   updated_at = $1 WHERE allocated_until < $1",
            )
            .bind(now)
            .execute(&mut **tx)
            .await?;
            Ok(expired)
        }

        pub(super) async fn issued_access(
            pool: &sqlx::Pool<$db>,
            session_id: &str,
        ) -> Result<Option<crate::access::Issued>, StoreError> {
            let row: Option<IssuedAccessRow> = sqlx::query_as(
                "SELECT session_id, state, ticket_hash, aes_key, auth_ts, verified_at, \
                   sign_check_digest \
                 FROM sessions WHERE session_id = $1 AND issued AND ticket_hash IS NOT NULL",
            )
            .bind(session_id)
            .fetch_optional(pool)
            .await?;
            row.map(crate::access::Issued::try_from).transpose()
        }

        /// Consumes each ticket in order; false where it was consumed already.
        pub(super) async fn mark_verified(
            tx: &mut Tx,
            verifications: &[crate::store::Verification],
        ) -> Result<Vec<bool>, StoreError> {
            let mut consumed = Vec::with_capacity(verifications.len());
            for v in verifications {
                consumed.push(consume_ticket(tx, &v.session_id, &v.digest, v.now, v.hold_until).await?);
            }
            Ok(consumed)
        }

        async fn consume_ticket(
            tx: &mut Tx,
            session_id: &str,
            digest: &str,
            now: UtcTime,
            hold_until: UtcTime,
        ) -> Result<bool, StoreError> {
            let consumed = sqlx::query(
                "UPDATE sessions SET state = 'verified', verified_at = $2, sign_check_digest = $3, \
                   hold_until = $4, updated_at = $2 \
                 WHERE session_id = $1 AND state = 'minted'",
            )
            .bind(session_id)
            .bind(now)
            .bind(digest)
            .bind(hold_until)
            .execute(&mut **tx)
            .await?
            .rows_affected()
                == 1;
            if consumed {
                // The phone minting held is the session's; a key lookup, not a scan.
                sqlx::query(
                    "UPDATE phones SET allocated_until = $2 WHERE allocated_session_id = $1 \
                     AND phone_id = (SELECT phone_id FROM sessions WHERE session_id = $1)",
                )
                    .bind(session_id)
                    .bind(hold_until)
                    .execute(&mut **tx)
                    .await?;
            }
            Ok(consumed)
        }
    };
}

/// How a heartbeat updates a phone that already has a row. `last_seen_at` is cphub's clock
/// and moves on any heartbeat: a phone whose own clock stepped back is still alive and must
/// not look stale to the watchdog. What the heartbeat says (its time, session, app) only
/// replaces older news, so a delayed heartbeat cannot undo a newer one.
macro_rules! heartbeat_upsert {
    () => {
        " ON CONFLICT (phone_id) DO UPDATE SET \
           last_seen_at = CASE WHEN phones.last_seen_at IS NULL \
               OR phones.last_seen_at < excluded.last_seen_at \
             THEN excluded.last_seen_at ELSE phones.last_seen_at END, \
           updated_at = excluded.updated_at, \
           last_heartbeat_at = CASE WHEN phones.last_heartbeat_at IS NULL \
               OR phones.last_heartbeat_at <= excluded.last_heartbeat_at \
             THEN excluded.last_heartbeat_at ELSE phones.last_heartbeat_at END, \
           heartbeat_session_id = CASE WHEN phones.last_heartbeat_at IS NULL \
               OR phones.last_heartbeat_at <= excluded.last_heartbeat_at \
             THEN excluded.heartbeat_session_id ELSE phones.heartbeat_session_id END, \
           heartbeat_app_id = CASE WHEN phones.last_heartbeat_at IS NULL \
               OR phones.last_heartbeat_at <= excluded.last_heartbeat_at \
             THEN excluded.heartbeat_app_id ELSE phones.heartbeat_app_id END"
    };
}
pub(crate) use heartbeat_upsert;

/// The columns of [`SessionRow`](crate::store::codec::SessionRow), in one place.
macro_rules! session_columns {
    () => {
        "session_id, phone_id, app_id, user_id, issued, state, minted_at, verified_at, \
         started_at, ended_at, reported_run_time, duration_seconds, run_time_mismatch, \
         end_reason, error_msg, last_heartbeat_at, created_at"
    };
}

/// A phone that may be given to a new session: in no session, held for none (the part
/// the `phones_free` index covers, so the pick never walks busy phones), heard from since
/// `$4`, and running as far as the control plane knows.
macro_rules! free_phone_sql {
    () => {
        "allocated_session_id IS NULL AND current_session_id IS NULL \
           AND heartbeat_session_id IS NULL \
           AND last_seen_at >= $4 AND (cph_status IS NULL OR cph_status = 2)"
    };
}
pub(crate) use free_phone_sql;

/// A phone's state as the operator sees it, from its row; `$1` is the freshness cut-off.
/// One expression, so the gauge and the phone views can never disagree.
macro_rules! phone_state_sql {
    () => {
        "CASE \
           WHEN recovery_state IS NOT NULL THEN recovery_state \
           WHEN cph_status IS NOT NULL AND cph_status <> 2 THEN 'unavailable' \
           WHEN last_seen_at IS NULL OR last_seen_at < $1 THEN 'stale' \
           WHEN current_session_id IS NOT NULL OR heartbeat_session_id IS NOT NULL THEN 'occupied' \
           WHEN allocated_session_id IS NOT NULL THEN 'allocated' \
           ELSE 'idle' END"
    };
}

/// The columns of [`Phone`](crate::store::Phone); `$1` is the freshness cut-off.
macro_rules! phone_columns {
    () => {
        concat!(
            "phone_id, ",
            $crate::store::book::phone_state_sql!(),
            " AS state, phone_name, server_id, cph_status, cph_synced_at, last_heartbeat_at, \
             last_seen_at, heartbeat_session_id, heartbeat_app_id, current_session_id, \
             current_app_id, recovery_state, allocated_session_id, allocated_until, created_at, \
             updated_at"
        )
    };
}

/// The columns of [`Recovery`](crate::store::Recovery).
macro_rules! recovery_columns {
    () => {
        "id, phone_id, reason, action, dry_run, request_id, job_id, outcome, error, started_at, ended_at"
    };
}

/// Runs `book::$call(&mut tx, args…)` in one write transaction of `$store` and commits it.
macro_rules! in_transaction {
    ($store:ident, $call:ident($($arg:expr),* $(,)?)) => {{
        let mut tx = $store.begin_write().await?;
        let result = book::$call(&mut tx, $($arg),*).await?;
        tx.commit().await?;
        Ok(result)
    }};
}

pub(crate) use {
    in_transaction, phone_columns, phone_state_sql, recovery_columns, session_book, session_columns,
};
