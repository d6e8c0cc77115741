//! The writers' topology: which group-commit writers there are and which write goes to which.
//!
//! Every writer takes every kind of durable write ([`Write`]) and commits each round's jobs,
//! whatever their kinds, in one transaction ([`Store::write_round`]). On SQLite there is one
//! writer (`DatabaseSettings::writer_count`): the three kinds and their fsyncs no longer
//! queue for the one write connection one after another, a round costs one fsync. On
//! PostgreSQL there are `database.writers`, and a job goes to the writer its session id
//! hashes to: one session's callbacks are committed in order by one writer, other sessions'
//! in parallel on the pool.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use async_trait::async_trait;
use prometheus::IntCounter;
use tokio::task::JoinHandle;

use super::group_commit::{Commit, GroupCommit, QueueMeter, WriterLimits};
use super::round::{Round, RoundDone};
use super::{
    Allocation, Applied, ApplyRules, MintRequest, PresentedSignCheck, ReceivedEvent,
    SignCheckOutcome, Store, StoreError,
};
use crate::access::Rules;

/// One durable write, as a writer takes it.
pub enum Write {
    /// `POST /api/v1/sessions`; shared with the requester, who answers with its ticket and key.
    Mint(Arc<MintRequest>),
    /// 6.1.
    SignCheck(PresentedSignCheck),
    /// 6.2, 6.3.
    Event(ReceivedEvent),
}

/// A write's answer.
pub enum Written {
    Minted(Allocation),
    Checked(SignCheckOutcome),
    Applied(Applied),
}

/// Commits a round's jobs in one transaction.
pub struct CommitRounds {
    pub store: Arc<dyn Store>,
    pub apply: ApplyRules,
    pub access: Rules,
    /// `cphub_write_rounds_total`, by how many kinds a round carried (`Metrics::round_meter`).
    pub rounds: [IntCounter; 3],
    /// `cphub_write_rounds_raced_total`.
    pub raced: IntCounter,
}

/// How often a round that raced another writer is decided afresh before its jobs are answered
/// `Raced` (a 503 the phone sends again). On PostgreSQL two writers race when their rounds
/// both create one row, a phone cphub has not seen that two sessions enter at once: the loser
/// committed nothing, and its second read waits for the winner's row and sees it. A third
/// race in a row would take a third writer creating the same row meanwhile.
const RACE_ATTEMPTS: u32 = 3;

#[async_trait]
impl Commit for CommitRounds {
    type Job = Write;
    type Done = Written;
    const WHAT: &'static str = "write round";

    /// As each kind's batch was named when it had a writer of its own.
    fn what(job: &Write) -> &'static str {
        match job {
            Write::Mint(_) => "mint batch",
            Write::SignCheck(_) => "sign-check batch",
            Write::Event(_) => "event batch",
        }
    }

    async fn commit(&self, jobs: &[Write]) -> Result<Vec<Written>, StoreError> {
        let sorted = ByKind::of(jobs);
        let done = self.write_deciding_races_afresh(&sorted.round(self)).await?;
        self.count(&sorted);
        let (mut minted, mut checked) = (done.minted.into_iter(), done.checked.into_iter());
        let mut applied = done.applied.into_iter();
        let answer = |job: &Write| match job {
            Write::Mint(_) => minted.next().map(Written::Minted),
            Write::SignCheck(_) => checked.next().map(Written::Checked),
            Write::Event(_) => applied.next().map(Written::Applied),
        };
        jobs.iter()
            .map(answer)
            .collect::<Option<_>>()
            .ok_or_else(|| StoreError::Corrupt("a round answered fewer jobs than it had".into()))
    }
}

impl CommitRounds {
    async fn write_deciding_races_afresh(
        &self,
        round: &Round<'_>,
    ) -> Result<RoundDone, StoreError> {
        let mut attempt = 1;
        loop {
            match self.store.write_round(round).await {
                Err(StoreError::Raced) if attempt < RACE_ATTEMPTS => {
                    self.raced.inc();
                    tracing::debug!(attempt, "write round raced another writer; deciding it afresh");
                    attempt += 1;
                }
                done => return done,
            }
        }
    }

    fn count(&self, sorted: &ByKind<'_>) {
        let kinds = [
            !sorted.mints.is_empty(),
            !sorted.checks.is_empty(),
            !sorted.events.is_empty(),
        ];
        let kinds = kinds.into_iter().filter(|k| *k).count();
        if let Some(rounds) = kinds.checked_sub(1).and_then(|i| self.rounds.get(i)) {
            rounds.inc();
        }
    }
}

/// A round's jobs sorted by kind, each kind in arrival order.
struct ByKind<'a> {
    mints: Vec<&'a MintRequest>,
    checks: Vec<&'a PresentedSignCheck>,
    events: Vec<&'a ReceivedEvent>,
}

impl<'a> ByKind<'a> {
    fn of(jobs: &'a [Write]) -> Self {
        let mut sorted = ByKind {
            mints: Vec::new(),
            checks: Vec::new(),
            events: Vec::new(),
        };
        for job in jobs {
            match job {
                Write::Mint(request) => sorted.mints.push(request),
                Write::SignCheck(check) => sorted.checks.push(check),
                Write::Event(event) => sorted.events.push(event),
            }
        }
        sorted
    }

    fn round<'r>(&'r self, rounds: &'r CommitRounds) -> Round<'r> {
        Round {
            mints: &self.mints,
            checks: &self.checks,
            events: &self.events,
            apply: rounds.apply,
            access: &rounds.access,
        }
    }
}

/// The queue series of each kind of write (`Metrics::queue_meter`).
#[derive(Clone)]
pub struct WriteMeters {
    pub mints: QueueMeter,
    pub sign_checks: QueueMeter,
    pub events: QueueMeter,
}

/// A kind of write the writers take: how it is routed, counted and answered.
pub trait Job: Sized {
    type Done;
    /// The session whose writer commits it.
    fn session_id(&self) -> &str;
    fn meter(meters: &WriteMeters) -> &QueueMeter;
    fn into_write(self) -> Write;
    fn answer(written: Written) -> Option<Self::Done>;
}

impl Job for ReceivedEvent {
    type Done = Applied;
    fn session_id(&self) -> &str {
        self.event.session_id.as_str()
    }
    fn meter(meters: &WriteMeters) -> &QueueMeter {
        &meters.events
    }
    fn into_write(self) -> Write {
        Write::Event(self)
    }
    fn answer(written: Written) -> Option<Applied> {
        match written {
            Written::Applied(applied) => Some(applied),
            _ => None,
        }
    }
}

impl Job for PresentedSignCheck {
    type Done = SignCheckOutcome;
    fn session_id(&self) -> &str {
        self.session_id.as_str()
    }
    fn meter(meters: &WriteMeters) -> &QueueMeter {
        &meters.sign_checks
    }
    fn into_write(self) -> Write {
        Write::SignCheck(self)
    }
    fn answer(written: Written) -> Option<SignCheckOutcome> {
        match written {
            Written::Checked(outcome) => Some(outcome),
            _ => None,
        }
    }
}

/// Routed by the session id it mints, drawn before the write: its later callbacks go to
/// the same writer.
impl Job for Arc<MintRequest> {
    type Done = Allocation;
    fn session_id(&self) -> &str {
        self.access.session_id.as_str()
    }
    fn meter(meters: &WriteMeters) -> &QueueMeter {
        &meters.mints
    }
    fn into_write(self) -> Write {
        Write::Mint(self)
    }
    fn answer(written: Written) -> Option<Allocation> {
        match written {
            Written::Minted(allocation) => Some(allocation),
            _ => None,
        }
    }
}

/// The writers, and the routing of each write to one of them.
#[derive(Clone)]
pub struct Writers {
    writers: Arc<[GroupCommit<CommitRounds>]>,
    meters: WriteMeters,
}

/// What the enter/quit handler holds: the [`Writers`] (named for what it submits).
pub type EventWriter = Writers;
/// What the sign-check handler holds: the [`Writers`].
pub type TicketWriter = Writers;

impl Writers {
    /// Starts `count` writers (at least one), each committing with what `committer` makes.
    /// They end once every handle has been dropped and their queues drained.
    pub fn spawn(
        count: usize,
        committer: impl Fn() -> CommitRounds,
        limits: WriterLimits,
        meters: WriteMeters,
    ) -> (Self, Vec<JoinHandle<()>>) {
        let (writers, tasks) = (0..count.max(1))
            .map(|_| GroupCommit::spawn(committer(), limits))
            .unzip::<_, _, Vec<_>, _>();
        let writers = Writers {
            writers: writers.into(),
            meters,
        };
        (writers, tasks)
    }

    /// Writes `job` on its session's writer and returns once it is committed (or the commit
    /// failed, or it waited too long to be tried).
    pub async fn submit<J: Job>(&self, job: J) -> Result<J::Done, Arc<StoreError>> {
        let writer = &self.writers[route(job.session_id(), self.writers.len())];
        let written = writer.submit(job.into_write(), J::meter(&self.meters)).await?;
        J::answer(written)
            .ok_or_else(|| Arc::new(StoreError::Corrupt("a write answered as another".into())))
    }
}

/// The writer of `session_id` among `count`. Any stable hash does: it only has to send a
/// session's every write to one writer and spread sessions evenly.
pub fn route(session_id: &str, count: usize) -> usize {
    let mut hasher = DefaultHasher::new();
    session_id.hash(&mut hasher);
    (hasher.finish() % count.max(1) as u64) as usize
}

/// How `POST /api/v1/sessions` mints: through group-commit writers, whose rounds fold a
/// flash crowd's mints into a few set-wise statements and one commit (`store/mint_batch.rs`).
/// On SQLite they are the callbacks' one writer (`DatabaseSettings::mints_share_the_writers`
/// says why); on PostgreSQL a writer of their own.
#[derive(Clone)]
pub struct Minter(pub Writers);

impl Minter {
    pub async fn mint(&self, request: Arc<MintRequest>) -> Result<Allocation, Arc<StoreError>> {
        self.0.submit(request).await
    }
}

#[cfg(test)]
mod tests {
    use super::route;

    #[test]
    fn a_session_always_goes_to_the_same_writer_and_sessions_spread_over_all() {
        let ids: Vec<String> = (0..400).map(|n| format!("{n:032x}")).collect();
        let mut per_writer = [0; 4];
        for id in &ids {
            let writer = route(id, 4);
            assert_eq!(route(id, 4), writer, "{id} routed twice alike");
            per_writer[writer] += 1;
        }
        assert!(per_writer.iter().all(|n| *n > 50), "{per_writer:?}");
        assert!(ids.iter().all(|id| route(id, 1) == 0));
    }
}
