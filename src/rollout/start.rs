//! Starting a rollout: the target resolved to phones with the app, the versions checked on
//! (or pushed to) their servers, the rollout recorded.

use std::collections::BTreeSet;

use super::{RolloutError, Rollouts, ids};
use crate::cph::INVALID_PARAMETERS;
use crate::cph::model::job_status;
use crate::domain::{AppId, PhoneId, RolloutPlan, RolloutTarget};
use crate::store::{NewRollout, Rollout};

/// What an operator asks for.
#[derive(Debug, Clone)]
pub struct StartRollout {
    pub app_id: AppId,
    pub app_version_ids: Vec<String>,
    pub target: RolloutTarget,
    pub plan: RolloutPlan,
    /// Push the versions (5.3.4) to the servers that lack them, rather than refuse.
    pub push_first: bool,
}

/// Phones the book's phone sync lists per page when the target is resolved.
const PAGE: i64 = 1000;

impl Rollouts {
    /// Resolves the target, checks the versions are on the phones' servers (5.3.7 requires
    /// it; 5.3.1 tells), pushes them first if asked (5.3.4, job type 31, followed to its
    /// end), then records the rollout: the leader's engine takes it from there.
    pub async fn start(&self, ask: &StartRollout) -> Result<Rollout, RolloutError> {
        let candidates = self.phones_with_app(&ask.app_id).await?;
        let phones = resolve_target(&ask.target, &candidates)?;
        if phones.is_empty() {
            return Err(RolloutError::NoPhones(ask.app_id.clone()));
        }
        let servers = servers_of(&phones, &candidates);
        let lacking = self.servers_lacking(&servers, &ask.app_version_ids).await?;
        if !lacking.is_empty() {
            if !ask.push_first {
                return Err(RolloutError::NotPushed(lacking));
            }
            self.push(&ask.app_version_ids, &lacking).await?;
        }
        let new = NewRollout {
            app_id: ask.app_id.clone(),
            app_version_ids: ask.app_version_ids.clone(),
            target: serde_json::to_value(&ask.target).unwrap_or_default(),
            plan: ask.plan,
            phones,
            now: self.clock.now(),
        };
        let created = self.store.create_rollout(&new).await?;
        let rollout = created.ok_or_else(|| RolloutError::AppBusy(ask.app_id.clone()))?;
        tracing::info!(rollout = rollout.id, app_id = %rollout.app_id, phones = new.phones.len(), "rollout started");
        Ok(rollout)
    }

    /// Every phone the book knows has the app, with its server, in phone id order.
    async fn phones_with_app(
        &self,
        app: &AppId,
    ) -> Result<Vec<(PhoneId, Option<String>)>, RolloutError> {
        let now = self.clock.now();
        let mut all = Vec::new();
        loop {
            let after = all.last().map(|(p, _): &(PhoneId, _)| p.clone());
            let page = (self.store)
                .phones(now, after.as_ref(), Some(app), PAGE)
                .await?;
            let full = page.len() as i64 == PAGE;
            for phone in page {
                let id = PhoneId::try_from(phone.phone_id)
                    .map_err(|e| crate::store::StoreError::Corrupt(e.to_string()))?;
                all.push((id, phone.server_id));
            }
            if !full {
                return Ok(all);
            }
        }
    }

    /// The servers whose deployed versions (5.3.1) lack one of `versions`.
    async fn servers_lacking(
        &self,
        servers: &BTreeSet<String>,
        versions: &[String],
    ) -> Result<Vec<String>, RolloutError> {
        let mut lacking = Vec::new();
        for server in servers {
            let deployed: BTreeSet<String> = (self.client.server_apps(server).await?)
                .into_iter()
                .filter_map(|app| app.app_version_id)
                .collect();
            if versions.iter().any(|v| !deployed.contains(v)) {
                lacking.push(server.clone());
            }
        }
        Ok(lacking)
    }

    /// 5.3.4: one job (type 31) per server and version, each followed to its end (4.4.1).
    async fn push(&self, versions: &[String], servers: &[String]) -> Result<(), RolloutError> {
        let batch = match self.client.push_app_version(versions, servers).await {
            Err(error) if error.code() == Some(INVALID_PARAMETERS) => {
                return Err(RolloutError::VersionRefused(error.to_string()));
            }
            pushed => pushed?,
        };
        if let Some(item) = batch.failures().next() {
            let code = item.error_code.clone().unwrap_or_default();
            let message = item.error_msg.clone().unwrap_or_default();
            let refused = format!("{code}: {message}");
            return Err(match code == INVALID_PARAMETERS {
                true => RolloutError::VersionRefused(refused),
                false => RolloutError::PushFailed(refused),
            });
        }
        for (_, job_id) in batch.jobs() {
            let job = self.client.follow_job(job_id).await?;
            if job.status != job_status::SUCCEEDED {
                let code = job.error_code.unwrap_or_default();
                let message = job.error_msg.unwrap_or_default();
                let server = job.server_id.unwrap_or_default();
                return Err(RolloutError::PushFailed(format!(
                    "job {job_id} (server {server}) {code}: {message}"
                )));
            }
        }
        tracing::info!(
            servers = servers.len(),
            "versions pushed before the rollout"
        );
        Ok(())
    }
}

/// The target's phones among `candidates` (the phones with the app, in id order). Listed
/// phones without the app are refused by name rather than left out silently.
pub fn resolve_target(
    target: &RolloutTarget,
    candidates: &[(PhoneId, Option<String>)],
) -> Result<Vec<PhoneId>, RolloutError> {
    let all = candidates.iter().map(|(p, _)| p.clone());
    Ok(match target {
        RolloutTarget::All => all.collect(),
        RolloutTarget::ServerId(server) => (candidates.iter())
            .filter(|(_, s)| s.as_deref() == Some(server.as_str()))
            .map(|(p, _)| p.clone())
            .collect(),
        RolloutTarget::Phones(listed) => {
            let known: BTreeSet<&PhoneId> = candidates.iter().map(|(p, _)| p).collect();
            let missing: Vec<PhoneId> = (listed.iter())
                .filter(|p| !known.contains(p))
                .cloned()
                .collect();
            if !missing.is_empty() {
                return Err(RolloutError::PhonesWithoutApp(ids(&missing)));
            }
            let unique: BTreeSet<PhoneId> = listed.iter().cloned().collect();
            unique.into_iter().collect()
        }
        RolloutTarget::Percent(percent) => {
            let count = (candidates.len() * usize::from(*percent)).div_ceil(100);
            all.take(count).collect()
        }
    })
}

/// The servers of `phones`; a phone whose server the book does not know counts as one
/// named by its own id, which no server lists: it is refused rather than updated blind.
fn servers_of(phones: &[PhoneId], candidates: &[(PhoneId, Option<String>)]) -> BTreeSet<String> {
    let chosen: BTreeSet<&PhoneId> = phones.iter().collect();
    (candidates.iter())
        .filter(|(p, _)| chosen.contains(p))
        .map(|(p, s)| {
            s.clone()
                .unwrap_or_else(|| format!("(unknown server of {p})"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidates() -> Vec<(PhoneId, Option<String>)> {
        (1..=7)
            .map(|i| {
                let phone = PhoneId::parse("p", format!("p-{i}")).unwrap();
                (phone, Some(format!("s-{}", i % 2)))
            })
            .collect()
    }

    fn names(phones: &[PhoneId]) -> Vec<String> {
        ids(phones)
    }

    #[test]
    fn a_target_resolves_to_phones_with_the_app() {
        let c = candidates();
        assert_eq!(resolve_target(&RolloutTarget::All, &c).unwrap().len(), 7);
        let server = RolloutTarget::ServerId("s-0".into());
        assert_eq!(
            names(&resolve_target(&server, &c).unwrap()),
            ["p-2", "p-4", "p-6"]
        );
        // 30 % of 7 is 2.1: rounded up, so a small share still takes a phone.
        let share = RolloutTarget::Percent(30);
        assert_eq!(
            names(&resolve_target(&share, &c).unwrap()),
            ["p-1", "p-2", "p-3"]
        );
    }

    #[test]
    fn listed_phones_without_the_app_are_named() {
        let listed = ["p-1", "p-9"].map(|p| PhoneId::parse("p", p.into()).unwrap());
        let target = RolloutTarget::Phones(listed.to_vec());
        match resolve_target(&target, &candidates()) {
            Err(RolloutError::PhonesWithoutApp(missing)) => assert_eq!(missing, ["p-9"]),
            other => panic!("{other:?}"),
        }
    }
}
