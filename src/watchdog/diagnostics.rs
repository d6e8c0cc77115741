//! Diagnostics before a reset (docs/operations.md "Diagnostics before a reset"). A reset
//! restores factory settings (chapter 4.3.5) and destroys the evidence of why the phone was
//! stuck, so the operator's `watchdog.diagnostics` run first through the synchronous ADB
//! shell API (4.7.5), one after the other, each bounded by `watchdog.diagnostics_timeout_ms`,
//! and their outputs go into the recovery's row. A diagnostic that fails, times out or
//! cannot be sent is recorded as such and the reset goes on: the evidence is worth having,
//! never worth a phone left broken.

use std::time::Duration;

use super::Watchdog;
use crate::domain::{CommandOutcome, CommandRun, PhoneId, ShellCommand};
use crate::store::Diagnostics;

impl Watchdog {
    /// Runs `watchdog.diagnostics` on the phone, in order.
    pub(super) async fn diagnose(&self, phone_id: &PhoneId) -> Diagnostics {
        let mut runs = Vec::with_capacity(self.settings.diagnostics.len());
        for command in &self.settings.diagnostics {
            runs.push(self.exec(phone_id, command).await);
        }
        let failed = (runs.iter())
            .filter(|run| run.outcome != CommandOutcome::Succeeded)
            .count();
        if failed > 0 {
            tracing::warn!(%phone_id, failed, "diagnostics before the reset did not all succeed; resetting all the same");
        }
        Diagnostics(runs)
    }

    /// One command on the phone (4.7.5), its limits already checked by [`ShellCommand`]:
    /// also the operator's ad-hoc look (`cphub phones exec`, `POST
    /// /api/v1/phones/{phone_id}/exec`).
    pub async fn exec(&self, phone_id: &PhoneId, command: &ShellCommand) -> CommandRun {
        let wait = Duration::from_millis(self.settings.diagnostics_timeout_ms);
        self.client
            .run_command(phone_id.as_str(), command, wait)
            .await
    }
}
