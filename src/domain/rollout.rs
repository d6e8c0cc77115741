//! The vocabulary of game version rollouts (chapter 5.3.7 applied a batch at a time): a
//! rollout's state, each target phone's step, the target and the plan as the operator
//! gives them, parsed once.

use serde::Serialize;
use utoipa::ToSchema;

use super::recovery::column_enum;
use super::{ParseError, PhoneId, Problem};

column_enum!(
    /// Where a rollout stands.
    RolloutState {
        /// Taking batches and updating phones.
        Running = "running",
        /// Takes no new phones (a person or a failed batch stopped it); phones already
        /// being updated are followed to their end.
        Paused = "paused",
        /// Stopped for good: no new updates, drained phones returned to the pool.
        Aborted = "aborted",
        /// Every target phone is done or failed.
        Done = "done",
    }
);

impl RolloutState {
    /// Whether it still holds its app (one active rollout per app).
    pub fn is_active(self) -> bool {
        matches!(self, RolloutState::Running | RolloutState::Paused)
    }
}

column_enum!(
    /// A change of a rollout's state, as its `fleet.rollout` webhook names it.
    RolloutTransition {
        /// Created, running its first batch.
        Started = "started",
        /// By an operator, or by cphub when a batch failed more than the plan allows.
        Paused = "paused",
        Resumed = "resumed",
        Aborted = "aborted",
        /// Every target phone done or failed.
        Done = "done",
    }
);

impl RolloutTransition {
    /// The transition into `state` from another state; `Running` is a resume, since a
    /// rollout is created running (its start is [`RolloutTransition::Started`]).
    pub fn entering(state: RolloutState) -> Self {
        match state {
            RolloutState::Running => RolloutTransition::Resumed,
            RolloutState::Paused => RolloutTransition::Paused,
            RolloutState::Aborted => RolloutTransition::Aborted,
            RolloutState::Done => RolloutTransition::Done,
        }
    }
}

column_enum!(
    /// A target phone's step in its rollout.
    PhoneStep {
        /// Not taken by a batch yet.
        Pending = "pending",
        /// Taken: allocation and the wait queue skip it while its session plays to its end.
        Draining = "draining",
        /// Its 5.3.7 update (job type 32) was sent and is followed (4.4.1).
        Updating = "updating",
        /// The job succeeded; waiting for a fresh heartbeat and for 5.3.6 to list the version.
        Verifying = "verifying",
        /// Runs the new version, back in the pool.
        Done = "done",
        /// The update or its verification failed; back in the pool on its old version.
        Failed = "failed",
        /// Its session outlived the drain deadline: back in the pool, taken again by a
        /// later batch.
        Skipped = "skipped",
    }
);

impl PhoneStep {
    /// The steps in which a phone is out of the pool (allocation and the queue skip it).
    pub const DRAINED: [PhoneStep; 3] = [
        PhoneStep::Draining,
        PhoneStep::Updating,
        PhoneStep::Verifying,
    ];

    pub fn is_drained(self) -> bool {
        Self::DRAINED.contains(&self)
    }
}

/// Which phones with the app a rollout updates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RolloutTarget {
    /// Every phone the book knows has the app (`phone_apps`, from phone sync).
    All,
    /// Those on one server (chapter 4.3.1 `server_id`).
    ServerId(String),
    /// These phones (each must have the app).
    Phones(Vec<PhoneId>),
    /// This share of them, 1 to 100, the first in phone id order.
    Percent(u8),
}

/// At most this many phones listed as a rollout's target.
pub const MAX_LISTED_PHONES: usize = 1_000;
/// At most this many versions in one rollout.
pub const MAX_VERSIONS: usize = 16;
/// The plan's counts above this are refused: no fleet is that large, and a typo is likelier.
pub const MAX_PLAN_COUNT: u32 = 1_000_000;

/// A rollout's version ids (chapter 5.2), from the API (`field` `app_version_ids`) or the
/// CLI (`--version`): 1 to 16, each with the characters of any other id, none twice — 5.3.7
/// starts a job per id listed (Table 5-36), so a repeated one installed its version twice,
/// restarting the game each time.
pub fn rollout_versions(field: &'static str, raw: Vec<String>) -> Result<Vec<String>, ParseError> {
    if raw.is_empty() || raw.len() > MAX_VERSIONS {
        return Err(ParseError::new(
            field,
            Problem::Invalid("1 to 16 version ids"),
        ));
    }
    let versions = (raw.into_iter())
        .map(|v| PhoneId::parse(field, v).map(|id| id.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let distinct: std::collections::HashSet<&String> = versions.iter().collect();
    if distinct.len() < versions.len() {
        return Err(ParseError::new(
            field,
            Problem::Invalid("distinct version ids: one is listed twice"),
        ));
    }
    Ok(versions)
}

impl RolloutTarget {
    /// Listed phones, 1 to 1,000 of them.
    pub fn phones(field: &'static str, raw: Vec<String>) -> Result<RolloutTarget, ParseError> {
        if raw.is_empty() || raw.len() > MAX_LISTED_PHONES {
            return Err(ParseError::new(field, Problem::Invalid("1 to 1000 phones")));
        }
        let phones = raw.into_iter().map(|p| PhoneId::parse(field, p));
        Ok(RolloutTarget::Phones(phones.collect::<Result<_, _>>()?))
    }

    pub fn percent(raw: i64) -> Result<RolloutTarget, ParseError> {
        match u8::try_from(raw) {
            Ok(p @ 1..=100) => Ok(RolloutTarget::Percent(p)),
            _ => Err(ParseError::new(
                "target.percent",
                Problem::Invalid("must be 1 to 100"),
            )),
        }
    }
}

/// Who a pause cphub makes itself (a batch failed too many phones, the account refused)
/// is recorded as; an operator's is `operator`. A resume after such a pause opens a new
/// batch, so the batch that paused the rollout is not judged again.
pub const PAUSED_BY_CPHUB: &str = "cphub";

/// Why an operator paused a rollout, as stored (`rollouts.pause_reason`) and sent in its
/// `fleet.rollout` webhook: at most 500 characters, and no NUL, which PostgreSQL's text
/// refuses (a 500 instead of the operator's 400).
pub fn pause_reason(raw: String) -> Result<String, ParseError> {
    if raw.chars().count() > 500 {
        return Err(ParseError::new("reason", Problem::TooLong(500)));
    }
    if raw.contains('\0') {
        let problem = Problem::Invalid("holds a NUL character");
        return Err(ParseError::new("reason", problem));
    }
    Ok(raw)
}

/// How the phones are taken: a canary, then batches; when to pause; how long to wait for
/// a session to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RolloutPlan {
    canary: u32,
    batch_size: u32,
    max_failures: u32,
    drain_deadline_secs: u32,
    force: bool,
}

impl RolloutPlan {
    /// `batch_size` at least 1; the drain deadline at least 1 s and at most a day.
    pub fn new(
        canary: u32,
        batch_size: u32,
        max_failures: u32,
        drain_deadline_secs: u32,
        force: bool,
    ) -> Result<RolloutPlan, ParseError> {
        if batch_size == 0 {
            return Err(ParseError::new(
                "batch_size",
                Problem::Invalid("must be at least 1"),
            ));
        }
        let counts = [("canary", canary), ("batch_size", batch_size)];
        let counts = counts.into_iter().chain([("max_failures", max_failures)]);
        if let Some((field, _)) = counts.into_iter().find(|(_, n)| *n > MAX_PLAN_COUNT) {
            return Err(ParseError::new(field, Problem::Invalid("out of range")));
        }
        if !(1..=86_400).contains(&drain_deadline_secs) {
            return Err(ParseError::new(
                "drain_deadline_secs",
                Problem::Invalid("must be 1 to 86400"),
            ));
        }
        Ok(RolloutPlan {
            canary,
            batch_size,
            max_failures,
            drain_deadline_secs,
            force,
        })
    }

    pub fn canary(&self) -> u32 {
        self.canary
    }

    pub fn batch_size(&self) -> u32 {
        self.batch_size
    }

    pub fn max_failures(&self) -> u32 {
        self.max_failures
    }

    pub fn drain_deadline_secs(&self) -> u32 {
        self.drain_deadline_secs
    }

    pub fn force(&self) -> bool {
        self.force
    }

    /// How many phones the next batch takes: the canary's size until the canary has ended
    /// (`ended`: a phone of the rollout ran its update to the end, done or failed), when
    /// there is a canary. Not by the batch's number: a canary paused and resumed before it
    /// ran, or whose phone was skipped (its session outlived the drain), proved nothing, and
    /// the next batch must not take `batch_size` phones on its word. A failure within
    /// `max_failures` is the operator's allowance: the batches go on at `batch_size`, as a
    /// canary repeated after each failure would take the whole fleet one failing phone at
    /// a time without ever pausing.
    pub fn next_batch_size(&self, ended: bool) -> u32 {
        match (ended, self.canary) {
            (false, 1..) => self.canary,
            _ => self.batch_size,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_step_and_state_reads_back_from_its_column_text() {
        for s in PhoneStep::ALL {
            assert_eq!(PhoneStep::try_from(s.as_str().to_owned()), Ok(*s));
        }
        for s in RolloutState::ALL {
            assert_eq!(RolloutState::try_from(s.as_str().to_owned()), Ok(*s));
        }
    }

    #[test]
    fn the_canary_size_holds_until_a_phone_runs_the_version_when_there_is_one() {
        let plan = RolloutPlan::new(2, 5, 0, 60, false).unwrap();
        assert_eq!(plan.next_batch_size(false), 2);
        assert_eq!(plan.next_batch_size(true), 5);
        let plan = RolloutPlan::new(0, 5, 0, 60, false).unwrap();
        assert_eq!(plan.next_batch_size(false), 5);
    }

    /// The API and the CLI take the same bounds from here: the CLI used to start what the
    /// API refused (17 versions, 1,001 listed phones, a canary of ten million).
    #[test]
    fn versions_listed_phones_and_counts_are_bounded_for_every_caller() {
        let many = |n: usize| (0..n).map(|i| format!("v{i}")).collect::<Vec<_>>();
        assert_eq!(rollout_versions("--version", many(16)).unwrap().len(), 16);
        for n in [0, 17] {
            let refused = rollout_versions("--version", many(n)).unwrap_err();
            assert_eq!(refused.field, "--version", "{n}");
        }
        let twice = vec!["v1".to_owned(), "v2".to_owned(), "v1".to_owned()];
        assert!(
            rollout_versions("--version", twice).is_err(),
            "5.3.7: a job per id"
        );
        assert!(RolloutTarget::phones("--phone-id", many(1_000)).is_ok());
        assert!(RolloutTarget::phones("--phone-id", many(1_001)).is_err());
        assert!(RolloutTarget::phones("--phone-id", vec!["a b".into()]).is_err());
        let over = MAX_PLAN_COUNT + 1;
        assert!(
            RolloutPlan::new(MAX_PLAN_COUNT, MAX_PLAN_COUNT, MAX_PLAN_COUNT, 60, false).is_ok()
        );
        for (plan, field) in [
            (RolloutPlan::new(over, 5, 0, 60, false), "canary"),
            (RolloutPlan::new(1, over, 0, 60, false), "batch_size"),
            (RolloutPlan::new(1, 5, over, 60, false), "max_failures"),
        ] {
            assert_eq!(plan.unwrap_err().field, field);
        }
    }

    #[test]
    fn a_plan_refuses_empty_batches_and_unbounded_drains() {
        assert_eq!(
            RolloutPlan::new(1, 0, 0, 60, false).unwrap_err().field,
            "batch_size"
        );
        assert!(RolloutPlan::new(1, 1, 0, 0, false).is_err());
        assert!(RolloutPlan::new(1, 1, 0, 86_401, false).is_err());
        assert!(RolloutTarget::percent(0).is_err());
        assert!(RolloutTarget::percent(101).is_err());
        assert_eq!(RolloutTarget::percent(50), Ok(RolloutTarget::Percent(50)));
    }
}
