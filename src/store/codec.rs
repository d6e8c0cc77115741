//! How domain values map to columns. [`UtcTime`] is INTEGER epoch milliseconds on SQLite and
//! TIMESTAMPTZ on PostgreSQL; with that one mapping the same row structs and most of the same
//! SQL serve both backends.

use chrono::{DateTime, Utc};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::{Decode, Encode, Postgres, Sqlite, Type};

use super::StoreError;
use crate::domain::{
    Action, CommandRun, EncodeServerState, EndReason, Outcome, PhoneId, Reason, Session,
    SessionState, UtcTime,
};

impl Type<Sqlite> for UtcTime {
    fn type_info() -> <Sqlite as sqlx::Database>::TypeInfo {
        <i64 as Type<Sqlite>>::type_info()
    }
    fn compatible(ty: &<Sqlite as sqlx::Database>::TypeInfo) -> bool {
        <i64 as Type<Sqlite>>::compatible(ty)
    }
}

impl Encode<'_, Sqlite> for UtcTime {
    fn encode_by_ref(
        &self,
        buf: &mut <Sqlite as sqlx::Database>::ArgumentBuffer,
    ) -> Result<IsNull, BoxDynError> {
        <i64 as Encode<Sqlite>>::encode(self.epoch_millis(), buf)
    }
}

impl<'r> Decode<'r, Sqlite> for UtcTime {
    fn decode(value: <Sqlite as sqlx::Database>::ValueRef<'r>) -> Result<Self, BoxDynError> {
        let ms = <i64 as Decode<Sqlite>>::decode(value)?;
        UtcTime::from_epoch_millis(ms).ok_or_else(|| format!("time out of range: {ms}").into())
    }
}

impl Type<Postgres> for UtcTime {
    fn type_info() -> <Postgres as sqlx::Database>::TypeInfo {
        <DateTime<Utc> as Type<Postgres>>::type_info()
    }
}

impl Encode<'_, Postgres> for UtcTime {
    fn encode_by_ref(
        &self,
        buf: &mut <Postgres as sqlx::Database>::ArgumentBuffer,
    ) -> Result<IsNull, BoxDynError> {
        <DateTime<Utc> as Encode<Postgres>>::encode(self.datetime(), buf)
    }
}

impl<'r> Decode<'r, Postgres> for UtcTime {
    fn decode(value: <Postgres as sqlx::Database>::ValueRef<'r>) -> Result<Self, BoxDynError> {
        <DateTime<Utc> as Decode<Postgres>>::decode(value).map(UtcTime::from_datetime)
    }
}

/// `sessions` as stored. Turned into a [`Session`] with its enums checked.
#[derive(sqlx::FromRow)]
pub(crate) struct SessionRow {
    session_id: String,
    phone_id: String,
    app_id: String,
    user_id: Option<String>,
    issued: bool,
    state: String,
    minted_at: Option<UtcTime>,
    verified_at: Option<UtcTime>,
    started_at: Option<UtcTime>,
    ended_at: Option<UtcTime>,
    reported_run_time: Option<i64>,
    duration_seconds: Option<i64>,
    run_time_mismatch: bool,
    end_reason: Option<String>,
    error_msg: Option<String>,
    last_heartbeat_at: Option<UtcTime>,
    created_at: UtcTime,
}

impl TryFrom<SessionRow> for Session {
    type Error = StoreError;

    fn try_from(row: SessionRow) -> Result<Self, Self::Error> {
        let corrupt =
            |what: &str| StoreError::Corrupt(format!("session {}: {what}", row.session_id));
        let state = SessionState::from_db(&row.state).ok_or_else(|| corrupt("state"))?;
        let end_reason = match row.end_reason.as_deref() {
            None => None,
            Some(reason) => Some(EndReason::from_db(reason).ok_or_else(|| corrupt("end_reason"))?),
        };
        Ok(Session {
            phone_id: stored_id(row.phone_id).map_err(|_| corrupt("phone_id"))?,
            app_id: stored_id(row.app_id).map_err(|_| corrupt("app_id"))?,
            user_id: (row.user_id.map(stored_id).transpose()).map_err(|_| corrupt("user_id"))?,
            session_id: stored_id(row.session_id.clone()).map_err(|_| corrupt("session_id"))?,
            issued: row.issued,
            state,
            minted_at: row.minted_at,
            verified_at: row.verified_at,
            started_at: row.started_at,
            ended_at: row.ended_at,
            reported_run_time: row.reported_run_time,
            duration_seconds: row.duration_seconds,
            run_time_mismatch: row.run_time_mismatch,
            end_reason,
            error_msg: row.error_msg,
            last_heartbeat_at: row.last_heartbeat_at,
            created_at: row.created_at,
        })
    }
}

/// An id read back from the book, parsed again: only a corrupt row fails.
fn stored_id<T: TryFrom<String>>(raw: String) -> Result<T, T::Error> {
    T::try_from(raw)
}

/// The access columns of a minted session.
#[derive(sqlx::FromRow)]
pub(crate) struct IssuedAccessRow {
    session_id: String,
    state: String,
    ticket_hash: String,
    aes_key: String,
    auth_ts: i64,
    verified_at: Option<UtcTime>,
    sign_check_digest: Option<String>,
}

impl IssuedAccessRow {
    /// The session's id with its access, as a batch of sign checks looks them up.
    pub(crate) fn keyed(self) -> Result<(String, crate::access::Issued), StoreError> {
        let session_id = self.session_id.clone();
        Ok((session_id, self.try_into()?))
    }
}

impl TryFrom<IssuedAccessRow> for crate::access::Issued {
    type Error = StoreError;

    fn try_from(row: IssuedAccessRow) -> Result<Self, Self::Error> {
        let corrupt =
            |what: &str| StoreError::Corrupt(format!("session {}: {what}", row.session_id));
        Ok(crate::access::Issued {
            state: SessionState::from_db(&row.state).ok_or_else(|| corrupt("state"))?,
            aes_key: crate::access::AesKey::from_hex(&row.aes_key)
                .ok_or_else(|| corrupt("aes_key"))?,
            ticket_hash: row.ticket_hash,
            auth_ts: row.auth_ts,
            verified_at: row.verified_at,
            sign_check_digest: row.sign_check_digest,
        })
    }
}

/// An accepted event as stored, to tell a re-delivery from a contradiction.
#[derive(sqlx::FromRow)]
pub(crate) struct StoredEvent {
    pub phone_id: String,
    pub app_id: String,
    pub event_time: UtcTime,
    pub run_time: Option<i64>,
}

impl StoredEvent {
    /// Whether `event` is a redelivery of this one. `stored` is the backend's precision
    /// (`BatchTx::stored`): the stored time was cut to it, so the redelivery's is too, or an
    /// event timed finer than a millisecond (SQLite) or microsecond (PostgreSQL) would read
    /// as a contradiction of itself.
    pub fn describes(
        &self,
        event: &crate::domain::GameEvent,
        stored: fn(UtcTime) -> UtcTime,
    ) -> bool {
        self.phone_id == event.phone_id.as_str()
            && self.app_id == event.app_id.as_str()
            && self.event_time == stored(event.time)
            && self.run_time == event.run_time
    }
}

/// One line of a session's event log, as the operator API shows it.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct EventRecord {
    pub id: i64,
    /// "enter" or "quit" (chapter 6.2, 6.3), or "reconnect": a sign check admitted again
    /// while the session was live (`access.reconnect`).
    pub kind: String,
    pub phone_id: String,
    pub app_id: String,
    /// The event's time as the phone sent it; a reconnect's is cphub's time of the sign check.
    pub time: UtcTime,
    pub run_time: Option<i64>,
    pub error_msg: Option<String>,
    /// Whether `error_msg` was cut to its bound (see `ErrorMsg`) rather than refused.
    pub truncated: bool,
    /// "accepted", or "conflict" for a re-delivery that contradicted the accepted one;
    /// "admitted" for a reconnect.
    pub outcome: String,
    pub received_at: UtcTime,
    /// The event names another app than the one the session was minted for.
    pub app_mismatch: bool,
    /// The event names another phone than the one the session was minted on (the player
    /// reached another phone than the one cphub told the client to connect to).
    pub phone_mismatch: bool,
}

/// A phone as the book knows it.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Phone {
    pub phone_id: String,
    /// idle, allocated, occupied, stale, unavailable (in transition or failed, chapter
    /// 4.3.1), out_of_service (frozen, stopped, creation or stopping failed), recovering,
    /// broken, draining (a rollout drained, is updating or verifying it), unlisted (the
    /// control plane no longer lists it, migration 0033).
    pub state: String,
    pub phone_name: Option<String>,
    pub server_id: Option<String>,
    /// Control-plane status (chapter 4.3.1), from the last phone sync.
    pub cph_status: Option<i32>,
    pub cph_synced_at: Option<UtcTime>,
    /// Phone clock of the newest heartbeat.
    pub last_heartbeat_at: Option<UtcTime>,
    /// cphub clock when that heartbeat arrived.
    pub last_seen_at: Option<UtcTime>,
    pub heartbeat_session_id: Option<String>,
    pub heartbeat_app_id: Option<String>,
    pub current_session_id: Option<String>,
    pub current_app_id: Option<String>,
    /// `recovering` or `broken` while the watchdog deals with the phone.
    pub recovery_state: Option<String>,
    /// The minted session the phone is held for, waiting for its sign check or enter.
    pub allocated_session_id: Option<String>,
    pub allocated_until: Option<UtcTime>,
    pub created_at: UtcTime,
    pub updated_at: UtcTime,
}

impl sqlx::postgres::PgHasArrayType for UtcTime {
    fn array_type_info() -> sqlx::postgres::PgTypeInfo {
        <DateTime<Utc> as sqlx::postgres::PgHasArrayType>::array_type_info()
    }
}

/// One line of the recovery log.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Recovery {
    pub id: i64,
    pub phone_id: String,
    #[sqlx(try_from = "String")]
    pub reason: Reason,
    #[sqlx(try_from = "String")]
    pub action: Action,
    pub dry_run: bool,
    pub request_id: Option<String>,
    pub job_id: Option<String>,
    #[sqlx(try_from = "String")]
    pub outcome: Outcome,
    pub error: Option<String>,
    pub started_at: UtcTime,
    pub ended_at: Option<UtcTime>,
    /// What else was done or seen: the phone properties a reset re-applied (chapter 4.3.5
    /// restores factory settings), or why a decision was skipped.
    pub detail: Option<String>,
    /// The diagnostic commands run on the phone right before a reset (chapter 4.7.5), in
    /// order, with what each gave; empty when none ran.
    #[sqlx(try_from = "Option<String>")]
    #[schema(value_type = Vec<CommandRun>)]
    pub diagnostics: Diagnostics,
}

/// The diagnostics of a recovery, stored as one JSON array (`recoveries.diagnostics`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct Diagnostics(pub Vec<CommandRun>);

impl Diagnostics {
    /// The column's text: NULL when none ran.
    pub fn to_column(&self) -> Option<String> {
        (!self.0.is_empty()).then(|| serde_json::to_string(&self.0).expect("plain data"))
    }
}

impl TryFrom<Option<String>> for Diagnostics {
    type Error = String;

    fn try_from(text: Option<String>) -> Result<Self, String> {
        let Some(text) = text else {
            return Ok(Diagnostics::default());
        };
        serde_json::from_str(&text)
            .map(Diagnostics)
            .map_err(|e| format!("recoveries.diagnostics is not a list of command runs: {e}"))
    }
}

/// An encoding server as the last sync saw it (chapter 4.6.1).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct EncodeServer {
    pub encode_server_id: String,
    pub encode_server_name: String,
    /// The cloud phone server it serves.
    pub server_id: String,
    /// 0 server, 1 container.
    pub server_type: i32,
    /// The control plane's status (Table 4-55).
    pub status: i32,
    /// What the status means.
    #[sqlx(try_from = "i32")]
    pub state: EncodeServerState,
    pub synced_at: UtcTime,
}

/// A phone's properties (chapter 4.3.2 `property`, appendix A.1) as phone sync last read
/// them: what a reset re-applies when the phone cannot be read right before it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SyncedProperty {
    pub property: String,
    pub read_at: UtcTime,
}

/// What the watchdog needs to know about a phone that looks unwell.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PhoneHealth {
    #[sqlx(try_from = "String")]
    pub phone_id: PhoneId,
    /// The server it runs on (chapter 4.3.1, from phone sync): a server whose phones fall
    /// silent together is one incident, not one recovery per phone.
    pub server_id: Option<String>,
    pub last_seen_at: Option<UtcTime>,
    pub cph_status: Option<i32>,
    pub recovery_state: Option<String>,
}

/// The phone a mint picked, with where to connect to it.
#[derive(sqlx::FromRow)]
pub(crate) struct PickedPhone {
    pub phone_id: String,
    pub server_id: Option<String>,
    pub access_infos: Option<String>,
}

/// A phone's `server_id` and stored `access_infos` (a JSON array) as the mint answers them.
pub(crate) fn connect(
    server_id: Option<String>,
    access_infos: Option<&str>,
) -> Result<crate::domain::Connect, StoreError> {
    let access = access_infos
        .map(serde_json::from_str)
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("phones.access_infos: {e}")))?
        .unwrap_or_default();
    Ok(crate::domain::Connect { server_id, access })
}

/// The `access_infos` column: a JSON array; encoding plain structs cannot fail.
pub(crate) fn access_infos_json(access: &[crate::domain::AccessInfo]) -> String {
    serde_json::to_string(access).unwrap_or_else(|_| "[]".to_owned())
}

/// An idempotency key as recorded by the mint that first used it, with its session.
#[derive(Clone, sqlx::FromRow)]
pub(crate) struct StoredMint {
    pub request_hash: String,
    pub session_id: String,
    pub ticket: String,
    pub aes_key: String,
    pub auth_ts: i64,
    pub phone_id: String,
    pub server_id: Option<String>,
    pub access_infos: Option<String>,
}

/// A row of `phone_apps`.
#[derive(sqlx::FromRow)]
pub(crate) struct PhoneAppRow {
    pub phone_id: String,
    pub app_id: String,
    pub app_version_id: Option<String>,
    pub version_code: Option<String>,
    pub version_name: Option<String>,
}

impl TryFrom<PhoneAppRow> for super::PhoneApp {
    type Error = StoreError;

    fn try_from(row: PhoneAppRow) -> Result<Self, Self::Error> {
        let corrupt =
            |e: crate::domain::ParseError| StoreError::Corrupt(format!("phone_apps: {e}"));
        Ok(super::PhoneApp {
            phone_id: PhoneId::try_from(row.phone_id).map_err(corrupt)?,
            app_id: crate::domain::AppId::try_from(row.app_id).map_err(corrupt)?,
            app_version_id: row.app_version_id,
            version_code: row.version_code,
            version_name: row.version_name,
        })
    }
}
