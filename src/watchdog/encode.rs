//! Encoding servers (docs/operations.md "Encoding servers"). An abnormal encoding server
//! (status 2, chapter 4.6.1) breaks the stream of every phone it serves while those phones
//! keep heartbeating: nothing the phone watchdog sees. Every
//! `watchdog.encode_server_interval_secs` the leader lists them into the book, and restarts
//! an abnormal one (4.6.2) under its own cooldown and hourly cap, sharing the jobs-in-flight
//! budget with the phones. Each restart is a recovery-log row (reason
//! `encode_server_abnormal`, action `restart`, `phone_id` holding the encoding server id) and
//! its job is followed like a phone's (4.4). Nothing else is done: no session is closed, no
//! phone touched.

use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use super::{Outcome, Reason, Started, Watchdog, WatchdogError, account_refusal, past};
use crate::cph::{BatchOutcome, CphError, EncodeServer};
use crate::domain::{Action, EncodeServerState, PhoneId, UtcTime};
use crate::store::{ControlPlaneEncodeServer, NewRecovery, StoreError};
use crate::telemetry::ErrorChain;

/// Why an abnormal encoding server is not restarted now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    InProgress,
    Cooldown,
    HourlyCap,
}

/// The encoding server's restarts of the last hour (newest first) against its budgets. A
/// restart refused for the account (7.2) did nothing to the server and counts for nothing;
/// one that ended in an error before any job started (refused "try again later", the
/// control plane unreachable) waits out the cooldown but is not held against the cap, as
/// for phones (`policy::acted`).
fn budget(history: &[super::Past], now: UtcTime, cooldown: Duration, cap: u32) -> Option<Wait> {
    let acted: Vec<_> = (history.iter())
        .filter(|p| p.outcome != Outcome::Skipped && !p.account_blocked)
        .collect();
    let last = acted.first()?;
    if last.outcome == Outcome::Pending {
        return Some(Wait::InProgress);
    }
    if acted.iter().filter(|p| p.reached()).count() as u32 >= cap {
        return Some(Wait::HourlyCap);
    }
    (now < last.started_at.plus(cooldown)).then_some(Wait::Cooldown)
}

impl Watchdog {
    /// Lists and stores the encoding servers when their interval is due, then restarts the
    /// abnormal ones the budgets allow; returns how many restart jobs it started.
    pub(super) async fn watch_encode_servers(
        self: &Arc<Self>,
        now: UtcTime,
        in_flight: usize,
    ) -> Result<usize, WatchdogError> {
        if !self.encode_servers_due() {
            return Ok(0);
        }
        let servers = match self.client.list_encode_servers().await {
            Ok(servers) => servers,
            Err(error) => {
                tracing::warn!(error = %ErrorChain(&error), "encoding servers not listed (chapter 4.6.1); will retry");
                return Ok(0);
            }
        };
        self.store
            .sync_encode_servers(&listed(&servers), now)
            .await?;
        let mut started = 0;
        for server in servers.iter().filter(|s| abnormal(s)) {
            if in_flight + started >= self.settings.max_in_flight {
                break;
            }
            started += self.consider_encode_server(server, now).await? as usize;
        }
        Ok(started)
    }

    fn encode_servers_due(&self) -> bool {
        let every = Duration::from_secs(self.settings.encode_server_interval_secs);
        let mut last = (self.encode_servers_listed)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let due = last.is_none_or(|at| at.elapsed() >= every);
        if due {
            *last = Some(Instant::now());
        }
        due
    }

    /// True when a restart job was started.
    async fn consider_encode_server(
        self: &Arc<Self>,
        server: &EncodeServer,
        now: UtcTime,
    ) -> Result<bool, WatchdogError> {
        let id = PhoneId::parse("encode_server_id", server.encode_server_id.clone())
            .map_err(|e| StoreError::Corrupt(format!("encode server id: {e}")))?;
        let hour_ago = now.minus(Duration::from_secs(3600));
        let log = self.store.recoveries(Some(&id), Some(hour_ago), 50).await?;
        let history: Vec<_> = (log.iter())
            .filter(|r| r.reason == Reason::EncodeServerAbnormal)
            .map(past)
            .collect();
        let cooldown = Duration::from_secs(self.settings.encode_server_cooldown_secs);
        let cap = self.settings.encode_server_hourly_cap;
        if let Some(wait) = budget(&history, now, cooldown, cap) {
            tracing::debug!(encode_server_id = %id, ?wait, "abnormal encoding server not restarted now");
            return Ok(false);
        }
        self.restart_encode_server(&id, server, now).await
    }

    async fn restart_encode_server(
        self: &Arc<Self>,
        id: &PhoneId,
        server: &EncodeServer,
        now: UtcTime,
    ) -> Result<bool, WatchdogError> {
        let dry_run = self.settings.dry_run;
        let record = NewRecovery {
            phone_id: id.clone(),
            reason: Reason::EncodeServerAbnormal,
            action: Action::Restart,
            dry_run,
            outcome: if dry_run {
                Outcome::DryRun
            } else {
                Outcome::Pending
            },
            error: None,
            started_at: now,
            ended_at: dry_run.then_some(now),
            detail: Some(format!(
                "encoding server {} of server {} reported abnormal (status {}, chapter 4.6.1): restarted (4.6.2)",
                server.encode_server_name, server.server_id, server.status
            )),
            phone_state: None,
            diagnostics: Default::default(),
            unheard_since: None,
            in_flight_cap: Some(self.settings.max_in_flight),
        };
        let recovery = match self.store.start_recovery(&record).await {
            Ok(recovery) => recovery,
            Err(StoreError::InFlightCap(cap)) => {
                tracing::info!(encode_server_id = %id, cap, "encoding server not restarted now: watchdog.max_in_flight jobs were started meanwhile");
                return Ok(false);
            }
            Err(error) => return Err(error.into()),
        };
        tracing::warn!(encode_server_id = %id, server_id = server.server_id, dry_run, "watchdog restarts an abnormal encoding server");
        if dry_run {
            return Ok(false);
        }
        let answer = self.client.restart_encode_servers(&[id.to_string()]).await;
        if let Err(error) = &answer
            && self.pause_if_account_level(error, id.as_str())
        {
            let refusal = account_refusal(error.code().unwrap_or_default(), &error.to_string());
            (self.finish(
                recovery.id,
                Action::Restart,
                Outcome::Error,
                None,
                Some(refusal),
            ))
            .await?;
            return Ok(false);
        }
        match started(answer, id.as_str()) {
            Ok(Started::Job { request_id, job_id }) => {
                (self.store)
                    .note_recovery_job(recovery.id, request_id.as_deref(), Some(&job_id), None)
                    .await?;
                self.follow(recovery.id, id.as_str(), Action::Restart, job_id);
                Ok(true)
            }
            Ok(Started::Unknown { request_id, error }) => {
                tracing::warn!(encode_server_id = %id, request_id, error, "encoding server restart sent, its answer lost (chapter 7.1.2): pending until reconciled");
                (self.store)
                    .note_recovery_job(recovery.id, request_id.as_deref(), None, None)
                    .await?;
                Ok(true)
            }
            Err((outcome, error)) => {
                (self.finish(recovery.id, Action::Restart, outcome, None, Some(error))).await?;
                Ok(false)
            }
        }
    }

    /// An encoding server's restart whose answer was lost and whose jobs were not found:
    /// its status (4.6.1) tells how it went. None while it is still restarting or unknown.
    pub(super) async fn settle_encode_server(&self, id: &str) -> Option<(Outcome, String)> {
        let servers = self.client.list_encode_servers().await.ok()?;
        let status = servers.iter().find(|s| s.encode_server_id == id)?.status;
        let outcome = match EncodeServerState::of(status) {
            EncodeServerState::Running => Outcome::Succeeded,
            EncodeServerState::Restarting => return None,
            _ => Outcome::Failed,
        };
        let note = format!(
            "outcome unknown (chapter 7.1.2), no job found; re-listed (4.6.1): status {status} ({})",
            EncodeServerState::of(status)
        );
        Some((outcome, note))
    }
}

fn abnormal(server: &EncodeServer) -> bool {
    EncodeServerState::of(server.status) == EncodeServerState::Abnormal
}

fn listed(servers: &[EncodeServer]) -> Vec<ControlPlaneEncodeServer> {
    (servers.iter())
        .map(|s| ControlPlaneEncodeServer {
            encode_server_id: s.encode_server_id.clone(),
            encode_server_name: s.encode_server_name.clone(),
            server_id: s.server_id.clone(),
            server_type: s.server_type,
            status: s.status,
        })
        .collect()
}

/// What 4.6.2's answer came to for encoding server `id`.
fn started(answer: Result<BatchOutcome, CphError>, id: &str) -> Result<Started, (Outcome, String)> {
    let batch = match answer {
        Err(error) if error.is_outcome_unknown() => {
            let request_id = match &error {
                CphError::AnswerLost { request_id, .. } => request_id.clone(),
                _ => None,
            };
            let error = ErrorChain(&error).to_string();
            return Ok(Started::Unknown { request_id, error });
        }
        Err(error) => return Err((Outcome::Error, ErrorChain(&error).to_string())),
        Ok(batch) => batch,
    };
    let mine =
        (batch.items.iter()).find(|item| item.encode_server_id.as_deref().is_none_or(|e| e == id));
    match mine {
        Some(item) if item.error_code.is_none() && item.job_id.is_some() => Ok(Started::Job {
            request_id: batch.request_id.clone(),
            job_id: item.job_id.clone().unwrap_or_default(),
        }),
        // Refused in its entry: no job started, nothing known against the server (the
        // same rule as a phone's refused entry).
        Some(item) => Err((
            Outcome::Error,
            format!(
                "{}: {}",
                item.error_code.clone().unwrap_or_default(),
                item.error_msg.clone().unwrap_or_default()
            ),
        )),
        None => Err((Outcome::Failed, "no job in the answer".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watchdog::Past;

    fn at(secs: i64) -> UtcTime {
        UtcTime::from_epoch_millis(1_764_324_000_000 + secs * 1000).unwrap()
    }

    fn restart(started: i64, outcome: Outcome) -> Past {
        Past {
            action: Action::Restart,
            outcome,
            started_at: at(started),
            ended_at: Some(at(started + 5)),
            account_blocked: false,
            job_started: true,
        }
    }

    #[test]
    fn an_encoding_server_is_restarted_within_its_cooldown_and_hourly_cap() {
        let cooldown = Duration::from_secs(600);
        assert_eq!(budget(&[], at(0), cooldown, 2), None);
        let once = [restart(0, Outcome::Succeeded)];
        assert_eq!(budget(&once, at(10), cooldown, 2), Some(Wait::Cooldown));
        assert_eq!(budget(&once, at(601), cooldown, 2), None);
        let twice = [
            restart(700, Outcome::Failed),
            restart(0, Outcome::Succeeded),
        ];
        assert_eq!(budget(&twice, at(1400), cooldown, 2), Some(Wait::HourlyCap));
        let running = [restart(0, Outcome::Pending)];
        assert_eq!(
            budget(&running, at(900), cooldown, 2),
            Some(Wait::InProgress)
        );
        let skipped = [restart(0, Outcome::Skipped)];
        assert_eq!(budget(&skipped, at(10), cooldown, 2), None);
        let refused = [Past {
            account_blocked: true,
            ..restart(0, Outcome::Error)
        }];
        assert_eq!(
            budget(&refused, at(10), cooldown, 2),
            None,
            "7.2: the account, not the server"
        );
        let unsent = |started| Past {
            job_started: false,
            ..restart(started, Outcome::Error)
        };
        let outage = [unsent(1400), unsent(700), unsent(0)];
        assert_eq!(
            budget(&outage, at(2001), cooldown, 2),
            None,
            "errors that started no job: an outage, not the server"
        );
        assert_eq!(budget(&outage, at(1500), cooldown, 2), Some(Wait::Cooldown));
    }
}
