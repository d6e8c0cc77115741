//! A virtual phone: what Huawei's engine does once its `com.cph.cg.*` properties are set.
//! It heartbeats every `heartbeat_interval` (idle, or naming its session) and plays the
//! sessions the players bring it: sign check with `encrypted_data` sealed the way a client
//! SDK does, enter, heartbeats, quit with `run_time`. A restart or reset ends its session
//! without a quit, as a reboot would.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{ClientSeal, SimOptions};
use super::fleet::SharedFleet;
use super::stats::{Acked, PlayedSession, Stats};
use crate::cph::properties::{EVENT_NOTIFY_URL, HEARTBEAT_INTERVAL, HEARTBEAT_URL, SIGN_CHECK_URL};

/// A session a player obtained from cphub and hands to the phone it was allocated.
#[derive(Debug, Clone)]
pub struct Assignment {
    pub session_id: String,
    pub ticket: String,
    /// As minted, in `access.key_encoding`.
    pub aes_key: String,
    pub auth_ts: String,
    pub app_id: String,
}

impl Assignment {
    /// What a mint answered (`POST /api/v1/sessions`, 201), for the phone it allocated.
    pub fn from_mint(answer: &Value, app_id: &str) -> Assignment {
        let text = |field: &str| answer[field].as_str().unwrap_or_default().to_owned();
        Assignment {
            session_id: text("session_id"),
            ticket: text("ticket"),
            aes_key: text("aes_key"),
            auth_ts: text("auth_ts"),
            app_id: app_id.to_owned(),
        }
    }
}

/// Where and how often the phone calls back; present only while it is up and configured.
struct Callbacks {
    sign_check: String,
    events: String,
    heartbeat: String,
    interval: Duration,
    boots: u64,
}

pub struct VirtualPhone {
    pub index: usize,
    pub fleet: SharedFleet,
    pub http: reqwest::Client,
    pub stats: Arc<Stats>,
    pub options: Arc<SimOptions>,
    pub assignments: mpsc::Receiver<Assignment>,
}

impl VirtualPhone {
    pub async fn run(mut self) {
        loop {
            let Some(callbacks) = self.callbacks() else {
                // Down or unconfigured: a session handed over now is never started.
                while self.assignments.try_recv().is_ok() {}
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            let next_beat = callbacks.interval + self.jitter();
            tokio::select! {
                Some(assignment) = self.assignments.recv() => self.play(&callbacks, assignment).await,
                _ = tokio::time::sleep(next_beat) => self.heartbeat(&callbacks, None).await,
            }
        }
    }

    fn jitter(&self) -> Duration {
        Duration::from_millis(rand::random_range(0..=self.options.heartbeat_jitter_ms))
    }

    fn phone_id(&self) -> String {
        self.fleet.lock().phones[self.index].phone_id.clone()
    }

    fn callbacks(&self) -> Option<Callbacks> {
        let fleet = self.fleet.lock();
        let phone = &fleet.phones[self.index];
        if !phone.is_alive() {
            return None;
        }
        let property = |key: &str| phone.properties.get(key).cloned();
        let seconds = property(HEARTBEAT_INTERVAL)
            .and_then(|s| s.parse().ok())
            .unwrap_or(5u64);
        Some(Callbacks {
            sign_check: property(SIGN_CHECK_URL)?,
            events: property(EVENT_NOTIFY_URL)?,
            heartbeat: property(HEARTBEAT_URL)?,
            interval: Duration::from_secs(seconds.max(1)),
            boots: phone.boots,
        })
    }

    /// Still up, and not rebooted since `boots`.
    fn still_running(&self, boots: u64) -> bool {
        self.callbacks().is_some_and(|c| c.boots == boots)
    }

    async fn play(&self, callbacks: &Callbacks, session: Assignment) {
        if !self.sign_check(callbacks, &session).await {
            return;
        }
        Stats::count(&self.stats.sessions_started);
        let (min, max) = self.options.session_range();
        let length = rand::random_range(min.as_secs()..=max.as_secs());
        // Whole seconds, so cphub's measured duration equals the length exactly.
        let entered = Utc::now().with_nanosecond_zero();
        let quit_at = entered + chrono::TimeDelta::seconds(length as i64);
        let reorder = rand::random_bool(self.options.reorder_rate.clamp(0.0, 1.0));
        let enter = self.event(&session, 0, entered, None);
        if !reorder {
            self.deliver(callbacks, &enter, Acked::Enter, &session)
                .await;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(length);
        while tokio::time::Instant::now() < deadline {
            let left = deadline - tokio::time::Instant::now();
            tokio::time::sleep(left.min(callbacks.interval)).await;
            if !self.still_running(callbacks.boots) {
                return; // rebooted or gone silent mid-game: no quit, as on a real phone
            }
            self.heartbeat(callbacks, Some(&session)).await;
        }
        let quit = self.event(&session, 1, quit_at, Some(length));
        self.deliver(callbacks, &quit, Acked::Quit, &session).await;
        if reorder {
            self.deliver(callbacks, &enter, Acked::Enter, &session)
                .await;
        }
        self.stats.record_played(PlayedSession {
            session_id: session.session_id.clone(),
            phone_id: self.phone_id(),
            duration_secs: length as i64,
        });
    }

    /// Sent again, the same body, while the attempt fails (dropped, no answer, a 5xx or
    /// 429): cphub answers an identical retry of an admitted check as it did the first.
    async fn sign_check(&self, callbacks: &Callbacks, session: &Assignment) -> bool {
        let body = sign_check_body(session, &self.options.client);
        let answer = self.send(callbacks, &callbacks.sign_check, &body).await;
        let admitted = matches!(&answer, Some(a) if a["aes_key"] == session.aes_key.as_str());
        if admitted {
            let phone_id = self.phone_id();
            self.stats
                .record_acknowledged(Acked::SignCheck, &session.session_id, &phone_id);
        } else {
            Stats::count(&self.stats.sign_checks_refused);
        }
        admitted
    }

    async fn heartbeat(&self, callbacks: &Callbacks, session: Option<&Assignment>) {
        let body = heartbeat_body(&self.phone_id(), session);
        if let Attempt::Answered(_) = self.post(&callbacks.heartbeat, &body).await {
            Stats::count(&self.stats.heartbeats);
            self.fleet.lock().phones[self.index].heard = true;
        }
    }

    fn event(
        &self,
        session: &Assignment,
        status: i32,
        time: DateTime<Utc>,
        run_time: Option<u64>,
    ) -> Value {
        event_body(&self.phone_id(), session, status, time, run_time)
    }

    /// At-least-once, like the engine: sent until acknowledged (sometimes twice), refused,
    /// or given up (counted in the summary).
    async fn deliver(&self, callbacks: &Callbacks, body: &Value, what: Acked, session: &Assignment) {
        let Some(_) = self.send(callbacks, &callbacks.events, body).await else {
            Stats::count(&self.stats.events_undelivered);
            return;
        };
        let phone_id = self.phone_id();
        self.stats
            .record_acknowledged(what, &session.session_id, &phone_id);
        if rand::random_bool(self.options.duplicate_rate.clamp(0.0, 1.0)) {
            self.post(&callbacks.events, body).await;
        }
    }

    /// The answer to `body`, sent again while an attempt fails and the phone runs, waiting
    /// what a 503 or 429 asks (`Retry-After`) or [`RETRY_WAIT`]; None once refused (a 4xx
    /// other than 429: the same body would be refused again), after [`PATIENCE`], or when
    /// the phone reboots or goes silent (its engine with it). The reference is silent on
    /// how an engine retries.
    async fn send(&self, callbacks: &Callbacks, url: &str, body: &Value) -> Option<Value> {
        let give_up = tokio::time::Instant::now() + PATIENCE;
        loop {
            let wait = match self.post(url, body).await {
                Attempt::Answered(answer) => return Some(answer),
                Attempt::Refused => return None,
                Attempt::Failed(wait) => wait,
            };
            if tokio::time::Instant::now() + wait > give_up || !self.still_running(callbacks.boots)
            {
                return None;
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// One callback attempt; a failure is counted in `callback_errors`.
    async fn post(&self, url: &str, body: &Value) -> Attempt {
        if self.options.callback_delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.options.callback_delay_ms)).await;
        }
        if rand::random_bool(self.options.drop_rate.clamp(0.0, 1.0)) {
            Stats::count(&self.stats.callback_errors);
            return Attempt::Failed(RETRY_WAIT);
        }
        let attempt = match self.http.post(url).json(body).send().await {
            Ok(res) if res.status().is_success() => {
                return Attempt::Answered(res.json().await.unwrap_or(Value::Null));
            }
            Ok(res) if res.status().is_server_error() || res.status().as_u16() == 429 => {
                Attempt::Failed(retry_after(&res).unwrap_or(RETRY_WAIT))
            }
            Ok(_) => Attempt::Refused,
            Err(_) => Attempt::Failed(RETRY_WAIT),
        };
        Stats::count(&self.stats.callback_errors);
        attempt
    }
}

/// How long a phone keeps sending one callback that fails.
const PATIENCE: Duration = Duration::from_secs(60);
/// The wait before sending a failed callback again when cphub named none.
const RETRY_WAIT: Duration = Duration::from_millis(200);

/// What one callback attempt came to.
enum Attempt {
    /// A 2xx, with its body (null if it was not JSON).
    Answered(Value),
    /// A 4xx other than 429: this body will not be taken.
    Refused,
    /// Dropped, unanswered, a 5xx or a 429: worth sending again after the wait.
    Failed(Duration),
}

/// `Retry-After` in whole seconds, as cphub sends it (docs/errors.md).
pub(super) fn retry_after(res: &reqwest::Response) -> Option<Duration> {
    let header = res.headers().get(reqwest::header::RETRY_AFTER)?;
    let secs = header.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(secs))
}

/// A heartbeat callback (6.4): `app_id` and `session_id` blank when no game is running.
pub(super) fn heartbeat_body(phone_id: &str, session: Option<&Assignment>) -> Value {
    json!({"event_type": "heartbeat", "event": {
        "phone_id": phone_id,
        "app_id": session.map_or("", |s| s.app_id.as_str()),
        "session_id": session.map_or("", |s| s.session_id.as_str()),
        "time": Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
    }})
}

/// An app event callback: entering the game (6.2, `status` 0) or quitting it (6.3, `status`
/// 1, with `run_time`).
pub(super) fn event_body(
    phone_id: &str,
    session: &Assignment,
    status: i32,
    time: DateTime<Utc>,
    run_time: Option<u64>,
) -> Value {
    let mut event = json!({
        "phone_id": phone_id, "status": status, "session_id": session.session_id,
        "ticket": session.ticket, "time": time.to_rfc3339_opts(SecondsFormat::Secs, true),
        "app_id": session.app_id, "error_msg": null,
    });
    if let Some(run_time) = run_time {
        event["run_time"] = json!(run_time);
    }
    json!({"event_type": "app", "event": event})
}

/// The access verification the phone sends when the player's client connects (6.1),
/// carrying what the client sealed under the session key; when the key is not one of the
/// client's configuration (`client`) it seals nothing and the phone sends 6.1's example's
/// empty `encrypted_data` and `aes_iv`, which cphub admits unless it enforces and requires
/// the data.
pub(super) fn sign_check_body(session: &Assignment, client: &ClientSeal) -> Value {
    let (data, iv) = client.seal(&session.aes_key).unwrap_or_default();
    json!({
        "session_id": session.session_id, "ticket": session.ticket, "auth_ts": session.auth_ts,
        "encrypted_data": data, "aes_iv": iv,
    })
}

pub(super) trait WholeSeconds {
    fn with_nanosecond_zero(self) -> Self;
}

impl WholeSeconds for DateTime<Utc> {
    fn with_nanosecond_zero(self) -> Self {
        use chrono::Timelike;
        self.with_nanosecond(0).unwrap_or(self)
    }
}
