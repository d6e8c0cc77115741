//! Players: each asks cphub for a session the way the operator's game platform does
//! (`POST /api/v1/sessions`), then hands what it got to the phone cphub allocated, as a
//! client SDK connecting to that phone would.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::SimOptions;
use super::phone::Assignment;
use super::stats::{Acked, Stats};

pub struct Players {
    pub options: Arc<SimOptions>,
    pub http: reqwest::Client,
    pub stats: Arc<Stats>,
    /// The phone tasks' inboxes, by phone id.
    pub phones: HashMap<String, mpsc::Sender<Assignment>>,
}

impl Players {
    pub async fn run(self) {
        let Some(token) = self.options.token.clone() else {
            tracing::info!("no operator token (--token): the simulator only heartbeats");
            return;
        };
        let url = format!(
            "{}/api/v1/sessions",
            self.options.cphub.trim_end_matches('/')
        );
        let apps = self.options.deployments();
        let mut minted = 0u64;
        while self.options.sessions == 0 || minted < self.options.sessions {
            tokio::time::sleep(Duration::from_millis(self.options.player_interval_ms)).await;
            // The apps in turn, so each is asked for.
            let app_id = &apps[minted as usize % apps.len()].0;
            let body = json!({"app_id": app_id, "user_id": format!("player-{minted}")});
            let answer = self
                .http
                .post(&url)
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await;
            match answer {
                Ok(res) if res.status() == 201 => {
                    let Ok(session) = res.json::<Value>().await else {
                        continue;
                    };
                    minted += 1;
                    self.hand_over(&session, app_id).await;
                }
                Ok(res) if res.status() == 503 => Stats::count(&self.stats.no_free_phone),
                Ok(res) => tracing::warn!(status = %res.status(), "cphub refused a session"),
                Err(error) => tracing::warn!(%error, "cphub unreachable"),
            }
        }
    }

    async fn hand_over(&self, session: &Value, app_id: &str) {
        let assignment = Assignment::from_mint(session, app_id);
        let phone_id = session["phone_id"].as_str().unwrap_or_default();
        self.stats
            .record_acknowledged(Acked::Mint, &assignment.session_id, phone_id);
        match self.phones.get(phone_id) {
            Some(inbox) => {
                let _ = inbox.send(assignment).await;
            }
            None => {
                tracing::warn!(%phone_id, "cphub allocated a phone this simulator does not run")
            }
        }
    }
}
