//! PostgreSQL backend: for production and for several cphub replicas on one database.
//! Sessions are row-locked (`FOR UPDATE`) while an event is applied, so replicas applying
//! the enter and quit of one session at once serialise instead of overwriting each other.

use std::str::FromStr;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::{
    Allocation, Applied, ApplyRules, ControlPlanePhone, MintRequest, ReceivedEvent, Store,
    StoreError, Verification,
};
use crate::config::DatabaseSettings;
use crate::domain::{Heartbeat, Session, UtcTime};
use crate::store::{
    EventRecord, FinishedRecovery, Lease, NewRecovery, Phone, PhoneHealth, Recovery,
};

use crate::store::book::in_transaction;
use crate::store::usage;
use crate::usage::{UsageQuery, UsageRow};

mod book {
    crate::store::book::session_book!(
        sqlx::Postgres,
        lock = " FOR UPDATE",
        skip_locked = " FOR UPDATE SKIP LOCKED"
    );
}

pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
        Ok(self.pool.begin().await?)
    }

    pub async fn connect(
        url: &SecretString,
        settings: &DatabaseSettings,
    ) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url.expose_secret())?.application_name("cphub");
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections.max(1))
            .acquire_timeout(settings.acquire_timeout())
            .connect_with(options)
            .await?;
        Ok(PostgresStore { pool })
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("./migrations/postgres")
            .run(&self.pool)
            .await?;
        Ok(())
    }

    async fn usage(&self, query: &UsageQuery) -> Result<Vec<UsageRow>, StoreError> {
        Ok(bind_usage(sqlx::query_as(usage::POSTGRES), query)
            .fetch_all(&self.pool)
            .await?)
    }

    async fn explain_usage(&self, query: &UsageQuery) -> Result<Vec<String>, StoreError> {
        let steps: Vec<(String,)> = bind_usage(sqlx::query_as(usage::POSTGRES_EXPLAIN), query)
            .fetch_all(&self.pool)
            .await?;
        Ok(steps.into_iter().map(|(step,)| step).collect())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn apply_events(
        &self,
        events: &[ReceivedEvent],
        rules: ApplyRules,
    ) -> Result<Vec<Applied>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut outcomes = Vec::with_capacity(events.len());
        for received in events {
            outcomes.push(book::apply_event(&mut tx, received, rules).await?);
        }
        tx.commit().await?;
        Ok(outcomes)
    }

    /// One statement per table for the whole batch (arrays + UNNEST), so a flush of tens of
    /// thousands of phones is two round trips, not tens of thousands.
    async fn record_heartbeats(&self, heartbeats: &[Heartbeat]) -> Result<(), StoreError> {
        let column = |f: fn(&Heartbeat) -> Option<&str>| -> Vec<Option<String>> {
            heartbeats
                .iter()
                .map(|hb| f(hb).map(str::to_owned))
                .collect()
        };
        let phone_ids = column(|hb| Some(hb.phone_id.as_str()));
        let session_ids = column(|hb| hb.session_id.as_ref().map(|s| s.as_str()));
        let app_ids = column(|hb| hb.app_id.as_ref().map(|a| a.as_str()));
        let times: Vec<UtcTime> = heartbeats.iter().map(|hb| hb.time).collect();
        let received: Vec<UtcTime> = heartbeats.iter().map(|hb| hb.received_at).collect();

        let mut tx = self.pool.begin().await?;
        sqlx::query(concat!(
            "INSERT INTO phones (phone_id, last_heartbeat_at, last_seen_at, \
               heartbeat_session_id, heartbeat_app_id, created_at, updated_at) \
             SELECT p, t, r, s, a, r, r \
             FROM UNNEST($1::text[], $2::timestamptz[], $3::timestamptz[], $4::text[], $5::text[]) \
               AS u(p, t, r, s, a)",
            crate::store::book::heartbeat_upsert!()
        ))
        .bind(&phone_ids)
        .bind(&times)
        .bind(&received)
        .bind(&session_ids)
        .bind(&app_ids)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE sessions SET last_heartbeat_at = u.t \
             FROM UNNEST($1::text[], $2::timestamptz[]) AS u(s, t) \
             WHERE sessions.session_id = u.s \
               AND (sessions.last_heartbeat_at IS NULL OR sessions.last_heartbeat_at < u.t)",
        )
        .bind(&session_ids)
        .bind(&times)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn session(&self, session_id: &str) -> Result<Option<Session>, StoreError> {
        book::session(&self.pool, session_id).await
    }

    async fn sessions(
        &self,
        filter: &crate::store::SessionFilter,
        limit: i64,
    ) -> Result<Vec<Session>, StoreError> {
        book::sessions(&self.pool, filter, limit).await
    }

    async fn session_events(&self, session_id: &str) -> Result<Vec<EventRecord>, StoreError> {
        book::session_events(&self.pool, session_id).await
    }

    async fn mint_session(&self, request: &MintRequest) -> Result<Allocation, StoreError> {
        in_transaction!(self, mint_session(request))
    }

    async fn issued_access(
        &self,
        session_id: &str,
    ) -> Result<Option<crate::access::Issued>, StoreError> {
        book::issued_access(&self.pool, session_id).await
    }

    async fn mark_verified(&self, verifications: &[Verification]) -> Result<Vec<bool>, StoreError> {
        in_transaction!(self, mark_verified(verifications))
    }

    async fn active_sessions_by_app(&self) -> Result<Vec<(String, i64)>, StoreError> {
        book::active_sessions_by_app(&self.pool).await
    }

    async fn phones_by_state(
        &self,
        fresh_since: UtcTime,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        book::phones_by_state(&self.pool, fresh_since).await
    }

    async fn sync_phones(
        &self,
        phones: &[ControlPlanePhone],
        now: UtcTime,
    ) -> Result<(), StoreError> {
        in_transaction!(self, sync_phones(phones, now))
    }

    async fn release_lapsed_holds(&self, now: UtcTime) -> Result<u64, StoreError> {
        in_transaction!(self, release_lapsed_holds(now))
    }

    async fn phone(
        &self,
        phone_id: &str,
        fresh_since: UtcTime,
    ) -> Result<Option<Phone>, StoreError> {
        book::phone(&self.pool, phone_id, fresh_since).await
    }

    async fn phones(
        &self,
        fresh_since: UtcTime,
        after: &str,
        limit: i64,
    ) -> Result<Vec<Phone>, StoreError> {
        book::phones(&self.pool, fresh_since, after, limit).await
    }

    async fn unhealthy_phones(&self, fresh_since: UtcTime) -> Result<Vec<PhoneHealth>, StoreError> {
        book::unhealthy_phones(&self.pool, fresh_since).await
    }

    async fn abandon_sessions_on_stale_phones(
        &self,
        fresh_since: UtcTime,
        now: UtcTime,
    ) -> Result<Vec<Session>, StoreError> {
        in_transaction!(self, abandon_sessions_on_stale_phones(fresh_since, now))
    }

    async fn recoveries(
        &self,
        phone_id: Option<&str>,
        since: Option<UtcTime>,
        limit: i64,
    ) -> Result<Vec<Recovery>, StoreError> {
        book::recoveries(&self.pool, phone_id, since, limit).await
    }

    async fn pending_recoveries(&self) -> Result<Vec<Recovery>, StoreError> {
        book::pending_recoveries(&self.pool).await
    }

    async fn start_recovery(&self, recovery: &NewRecovery) -> Result<Recovery, StoreError> {
        in_transaction!(self, start_recovery(recovery))
    }

    async fn note_recovery_job(
        &self,
        id: i64,
        request_id: Option<&str>,
        job_id: &str,
    ) -> Result<(), StoreError> {
        book::note_recovery_job(&self.pool, id, request_id, job_id).await
    }

    async fn finish_recovery(&self, finished: &FinishedRecovery) -> Result<(), StoreError> {
        in_transaction!(self, finish_recovery(finished))
    }

    async fn clear_recovered(&self, fresh_since: UtcTime) -> Result<u64, StoreError> {
        in_transaction!(self, clear_recovered(fresh_since))
    }

    /// A session-level advisory lock on a connection taken out of the pool: it is released
    /// when this replica dies or loses the connection, and another replica takes over.
    async fn try_lead(&self) -> Result<Option<Box<dyn Lease>>, StoreError> {
        let mut conn = self.pool.acquire().await?.detach();
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(WATCHDOG_LOCK)
            .fetch_one(&mut conn)
            .await?;
        Ok(got.then(|| Box::new(AdvisoryLease(conn)) as Box<dyn Lease>))
    }
}

/// Key of the advisory lock the acting watchdog holds ("cphw").
const WATCHDOG_LOCK: i64 = 0x6370_6877;

struct AdvisoryLease(sqlx::PgConnection);

#[async_trait]
impl Lease for AdvisoryLease {
    async fn held(&mut self) -> bool {
        sqlx::query("SELECT 1").execute(&mut self.0).await.is_ok()
    }
}

/// The usage query's parameters: day labels, grouping flags, rounding offset, then the
/// pieces' bounds as arrays.
fn bind_usage<'q, O>(
    statement: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    query: &UsageQuery,
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
    let starts: Vec<UtcTime> = query.pieces.iter().map(|p| p.start).collect();
    let ends: Vec<UtcTime> = query.pieces.iter().map(|p| p.end).collect();
    let [app, phone, user] = usage::grouped(query);
    statement
        .bind(usage::day_labels(query))
        .bind(app)
        .bind(phone)
        .bind(user)
        .bind(query.rounding.offset_secs())
        .bind(starts)
        .bind(ends)
}
