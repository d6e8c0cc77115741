//! A dead server is one incident, not a restart storm (docs/operations.md "A dead server is
//! one incident"). When most phones of one server (chapter 4.3.1 `server_id`) fall silent
//! together, the fault is the server's: restarting its phones one by one cannot help and
//! burns every budget. The watchdog then logs one row for the server (reason
//! `server_incident`, action `hold`, outcome `open`), restarts and resets none of its phones
//! while it lasts, and closes it once the share of silent phones drops below the threshold;
//! per-phone recovery then resumes for any phone still silent, after the grace a phone gets
//! after a recovery that went well (`watchdog.grace_after_recovery_secs`): the server's
//! phones come back one by one, and the last ones must not be restarted while they boot.
//! Abandoned sessions are closed as before: that runs ahead of this, for every silent phone.
//!
//! cphub does not restart servers (chapter 4.1.5): an operator does, see the runbook.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::{Watchdog, WatchdogError, candidate};
use crate::config::WatchdogSettings;
use crate::domain::{Action, Outcome, PhoneId, Reason, UtcTime};
use crate::store::{NewRecovery, PhoneHealth, Recovery};

/// When a server's silent phones make one incident (`watchdog.server_incident_*`).
#[derive(Debug, Clone, Copy)]
pub struct IncidentRule {
    pub share: f64,
    pub min_phones: usize,
}

impl IncidentRule {
    pub fn of(settings: &WatchdogSettings) -> IncidentRule {
        IncidentRule {
            share: settings.server_incident_share,
            min_phones: settings.server_incident_min_phones,
        }
    }

    /// Whether a server of `total` phones is big enough for the rule to apply.
    pub fn watches(&self, total: usize) -> bool {
        total >= self.min_phones
    }

    /// Whether `silent` of a server's `total` phones make it one incident.
    pub fn dark(&self, silent: usize, total: usize) -> bool {
        self.watches(total) && silent as f64 >= self.share * total as f64
    }
}

/// The silent recovery candidates of `phones`, counted per server. A phone stopped, frozen
/// or in transition is silent for a reason of its own and does not count; nor does one
/// `set_aside` (broken, or on `watchdog.exclude`): it may have been silent for days, and
/// counted it would make one more silent phone of a healthy server an incident, held (and
/// never recovered) for as long as the broken one stays silent.
pub fn silent_per_server(
    phones: &[PhoneHealth],
    fresh_since: UtcTime,
    set_aside: impl Fn(&PhoneHealth) -> bool,
) -> HashMap<&str, usize> {
    let mut silent = HashMap::new();
    for phone in phones {
        let quiet = phone.last_seen_at.is_some_and(|seen| seen < fresh_since);
        if let (Some(server), true) = (&phone.server_id, quiet)
            && candidate(phone.cph_status, true).is_some()
            && !set_aside(phone)
        {
            *silent.entry(server.as_str()).or_default() += 1;
        }
    }
    silent
}

/// What the server incidents make of one pass.
#[derive(Debug, Default)]
pub struct Servers {
    /// Servers with an open incident: none of their phones is restarted or reset.
    held: HashSet<String>,
    /// Servers the rule applies to (big enough).
    watched: HashSet<String>,
    /// Servers whose incident closed within the grace after a recovery: their phones still
    /// silent are given that time to come back, as after a restart that went well.
    settling: HashSet<String>,
}

impl Servers {
    /// The phone's server has an open incident, or one that just closed.
    pub fn holds(&self, phone: &PhoneHealth) -> bool {
        (phone.server_id.as_ref())
            .is_some_and(|s| self.held.contains(s) || self.settling.contains(s))
    }

    /// A phone of a watched server that fell silent less than `window` ago (before
    /// `fresh_since`) waits: phones of a server that dies stop within one heartbeat
    /// interval of each other, so until then its server-mates may not all look stale yet,
    /// and a per-phone restart would come before the incident it belongs to. The window is
    /// two intervals: a phone whose last heartbeat before the end was lost or late (a
    /// starved machine, a congested link) fell silent one interval before its mates.
    pub fn waits(&self, phone: &PhoneHealth, fresh_since: UtcTime, window: Duration) -> bool {
        let watched = phone
            .server_id
            .as_ref()
            .is_some_and(|s| self.watched.contains(s));
        let recent = phone
            .last_seen_at
            .is_some_and(|seen| seen < fresh_since && seen >= fresh_since.minus(window));
        watched && recent
    }
}

impl Watchdog {
    /// Opens an incident for each server that went dark, closes those whose phones came
    /// back, and says which servers' phones to leave alone in this pass.
    pub(super) async fn server_incidents(
        &self,
        phones: &[PhoneHealth],
        fresh_since: UtcTime,
        now: UtcTime,
    ) -> Result<Servers, WatchdogError> {
        let rule = IncidentRule::of(&self.settings);
        let totals: HashMap<String, usize> = (self.store.phones_per_server().await?)
            .into_iter()
            .map(|(server, count)| (server, usize::try_from(count).unwrap_or(0)))
            .collect();
        let silent = silent_per_server(phones, fresh_since, |p| self.set_aside(p));
        let counts = |server: &str| {
            let total = totals.get(server).copied().unwrap_or(0);
            (silent.get(server).copied().unwrap_or(0), total)
        };
        let mut servers = Servers::default();
        for incident in self.store.open_incidents().await? {
            let (quiet, total) = counts(&incident.phone_id);
            if rule.dark(quiet, total) {
                servers.held.insert(incident.phone_id);
            } else {
                self.close_incident(&incident, quiet, total, now).await?;
            }
        }
        for (&server, &quiet) in &silent {
            let total = counts(server).1;
            if !servers.held.contains(server) && rule.dark(quiet, total) {
                self.open_incident(server, phones, fresh_since, total, now)
                    .await?;
                servers.held.insert(server.to_owned());
            }
        }
        self.metrics
            .server_incidents_open
            .set(servers.held.len() as i64);
        servers.settling = self.settling(now).await?;
        servers.watched = (totals.into_iter())
            .filter(|(_, total)| rule.watches(*total))
            .map(|(server, _)| server)
            .collect();
        Ok(servers)
    }

    async fn open_incident(
        &self,
        server: &str,
        phones: &[PhoneHealth],
        fresh_since: UtcTime,
        total: usize,
        now: UtcTime,
    ) -> Result<(), WatchdogError> {
        let silent: Vec<&str> = phones
            .iter()
            .filter(|p| p.server_id.as_deref() == Some(server))
            .filter(|p| p.last_seen_at.is_some_and(|seen| seen < fresh_since))
            .map(|p| p.phone_id.as_str())
            .collect();
        tracing::error!(
            server_id = server,
            silent = silent.len(),
            total,
            "server incident: most of a server's phones fell silent together; none of them \
             is restarted or reset while it lasts (cphub does not restart servers)"
        );
        let server_id = PhoneId::parse("server_id", server.to_owned())
            .map_err(|e| crate::store::StoreError::Corrupt(format!("server id: {e}")))?;
        let detail = format!(
            "{} of {total} phones of server {server} silent together: {}; none of them is \
             restarted or reset while the incident lasts",
            silent.len(),
            silent.join(", ")
        );
        let record = NewRecovery {
            phone_id: server_id,
            reason: Reason::ServerIncident,
            action: Action::Hold,
            dry_run: self.settings.dry_run,
            outcome: Outcome::Open,
            error: None,
            started_at: now,
            ended_at: None,
            detail: Some(detail),
            phone_state: None,
            diagnostics: Default::default(),
            unheard_since: None,
            in_flight_cap: None,
        };
        self.store.start_recovery(&record).await?;
        self.metrics.server_incidents.inc();
        Ok(())
    }

    async fn close_incident(
        &self,
        incident: &Recovery,
        silent: usize,
        total: usize,
        now: UtcTime,
    ) -> Result<(), WatchdogError> {
        tracing::info!(
            server_id = incident.phone_id,
            silent,
            total,
            "server incident over: per-phone recovery resumes"
        );
        let note = format!("closed: {silent} of {total} phones silent");
        self.store.close_incident(incident.id, now, &note).await?;
        Ok(())
    }

    /// Servers whose incident closed less than the grace after a recovery ago, as the
    /// recovery log says: before, each replica kept its own in memory, and one taking the
    /// watchdog over (or cphub restarted) restarted the phones still booting at once.
    async fn settling(&self, now: UtcTime) -> Result<HashSet<String>, WatchdogError> {
        let grace = Duration::from_secs(self.settings.grace_after_recovery_secs);
        let closed = self.store.incidents_closed_since(now.minus(grace)).await?;
        Ok(closed.into_iter().map(|incident| incident.phone_id).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_764_324_000_000;

    fn at(secs: i64) -> UtcTime {
        UtcTime::from_epoch_millis(T0 + secs * 1000).unwrap()
    }

    fn phone(id: &str, server: &str, seen: i64, status: i32) -> PhoneHealth {
        PhoneHealth {
            phone_id: PhoneId::parse("phone_id", id.to_owned()).unwrap(),
            server_id: Some(server.to_owned()),
            last_seen_at: Some(at(seen)),
            cph_status: Some(status),
            recovery_state: None,
        }
    }

    #[test]
    fn a_server_is_dark_from_the_share_on_and_only_when_big_enough() {
        let rule = IncidentRule {
            share: 0.5,
            min_phones: 4,
        };
        assert!(rule.dark(2, 4));
        assert!(rule.dark(4, 4));
        assert!(!rule.dark(1, 4));
        assert!(!rule.dark(3, 3), "below min_phones the rule never applies");
        assert!(!rule.dark(7, 16));
        assert!(rule.dark(8, 16));
        let all = IncidentRule {
            share: 1.0,
            min_phones: 1,
        };
        assert!(all.dark(1, 1) && !all.dark(3, 4));
    }

    /// Chapter 4.3.1: a phone stopped (8) or restarting (4) is silent for its own reason and
    /// does not make its server look dead; a fresh phone is not silent.
    #[test]
    fn only_silent_recovery_candidates_count_4_3_1() {
        let phones = [
            phone("p1", "s1", 0, 2),
            phone("p2", "s1", 0, 8),
            phone("p3", "s1", 0, 4),
            phone("p4", "s1", 20, 2),
            phone("p5", "s2", 0, -7),
        ];
        let silent = silent_per_server(&phones, at(10), |_| false);
        assert_eq!(silent.get("s1"), Some(&1));
        assert_eq!(silent.get("s2"), Some(&1));
    }

    /// A broken or excluded phone, silent maybe for days, does not make one more silent
    /// phone of its server an incident.
    #[test]
    fn a_phone_set_aside_does_not_count_as_silent() {
        let broken = PhoneHealth {
            recovery_state: Some("broken".to_owned()),
            ..phone("p1", "s1", 0, 2)
        };
        let phones = [broken, phone("p2", "s1", 0, 2), phone("p3", "s1", 20, 2)];
        let set_aside = |p: &PhoneHealth| p.recovery_state.as_deref() == Some("broken");
        let silent = silent_per_server(&phones, at(10), set_aside);
        assert_eq!(silent.get("s1"), Some(&1));
    }

    #[test]
    fn a_phone_just_fallen_silent_on_a_watched_server_waits_one_window() {
        let servers = Servers {
            held: HashSet::from(["s1".to_owned()]),
            watched: HashSet::from(["s1".to_owned(), "s2".to_owned()]),
            settling: HashSet::from(["s4".to_owned()]),
        };
        let window = Duration::from_secs(5);
        assert!(servers.holds(&phone("p1", "s1", 0, 2)));
        assert!(!servers.holds(&phone("p2", "s2", 0, 2)));
        assert!(
            servers.holds(&phone("p5", "s4", 0, 2)),
            "its incident just closed"
        );
        assert!(servers.waits(&phone("p2", "s2", 6, 2), at(10), window));
        assert!(!servers.waits(&phone("p2", "s2", 4, 2), at(10), window));
        assert!(!servers.waits(&phone("p3", "s3", 6, 2), at(10), window));
        assert!(
            !servers.waits(&phone("p4", "s2", 12, -7), at(10), window),
            "a phone still heartbeating (abnormal, -7) is not silent and does not wait"
        );
    }
}
