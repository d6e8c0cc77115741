//! The writers' topology: which group-commit writers there are and which write goes to which.
//!
//! Every writer takes every kind of durable write ([`Write`]) and commits each round's jobs,
//! whatever their kinds, in one transaction ([`Store::write_round`]). On SQLite there is one
//! writer (`DatabaseSettings::writer_count`): the three kinds and their fsyncs no longer
//! queue for the one write connection one after another, a round costs one fsync. On
//! PostgreSQL there are up to `database.writers`, filled one after another (`pick`): a job
//! goes to the first writer with fewer than `database.writer_room` jobs waiting, and the
//! next writer takes new sessions only when that many wait. A round's cost is mostly fixed
//! (its round trips, its commit), so a few large rounds carry more than many small ones:
//! four writers taking a quarter of the load each committed 4.8 events a round and 1,340
//! events a second, one writer 16.0 and 2,170 (docs/benchmarks.md). A session's jobs stay
//! on the writer its unanswered ones are on, so its callbacks are committed in the order
//! they came.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use prometheus::IntCounter;
use tokio::task::JoinHandle;

use super::group_commit::{Commit, GroupCommit, QueueMeter, WriterLimits};
use super::round::{Round, RoundDone};
use super::{
    Allocation, Applied, ApplyRules, Durable, MintRequest, PresentedSignCheck, ReceivedEvent,
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

    async fn commit(&self, jobs: &[Write]) -> Result<(Vec<Written>, Durable), StoreError> {
        let sorted = ByKind::of(jobs);
        let (done, durable) = self.write_deciding_races_afresh(&sorted.round(self)).await?;
        self.count(&sorted);
        let (mut minted, mut checked) = (done.minted.into_iter(), done.checked.into_iter());
        let mut applied = done.applied.into_iter();
        let answer = |job: &Write| match job {
            Write::Mint(_) => minted.next().map(Written::Minted),
            Write::SignCheck(_) => checked.next().map(Written::Checked),
            Write::Event(_) => applied.next().map(Written::Applied),
        };
        let answers = jobs.iter().map(answer).collect::<Option<_>>();
        let answers = answers
            .ok_or_else(|| StoreError::Corrupt("a round answered fewer jobs than it had".into()))?;
        Ok((answers, durable))
    }
}

impl CommitRounds {
    async fn write_deciding_races_afresh(
        &self,
        round: &Round<'_>,
    ) -> Result<(RoundDone, Durable), StoreError> {
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
    /// Where each session's unanswered jobs are.
    pending: Arc<Pending>,
    /// Jobs waiting for one writer before the next takes new sessions.
    room: usize,
}

/// What the enter/quit handler holds: the [`Writers`] (named for what it submits).
pub type EventWriter = Writers;
/// What the sign-check handler holds: the [`Writers`].
pub type TicketWriter = Writers;

impl Writers {
    /// Starts `count` writers (at least one), each committing with what `committer` makes,
    /// the next taking new sessions once `room` jobs wait for one. They end once every
    /// handle has been dropped and their queues drained.
    pub fn spawn(
        (count, room): (usize, usize),
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
            pending: Arc::default(),
            room: room.max(1),
        };
        (writers, tasks)
    }

    /// Writes `job` on its session's writer (the one its unanswered jobs are on, else the
    /// first with room: `pick`) and returns once it is committed (or the commit failed, or
    /// it waited too long to be tried).
    pub async fn submit<J: Job>(&self, job: J) -> Result<J::Done, Arc<StoreError>> {
        let waiting = |w: usize| self.writers[w].waiting();
        let (count, room) = (self.writers.len(), self.room);
        let claim = self.pending.claim(job.session_id(), (count, room), waiting);
        let writer = &self.writers[claim.writer];
        let written = writer.submit(job.into_write(), J::meter(&self.meters)).await?;
        drop(claim);
        J::answer(written)
            .ok_or_else(|| Arc::new(StoreError::Corrupt("a write answered as another".into())))
    }
}

/// The sessions whose jobs are on a writer, unanswered, and on which: by a hash of the
/// session id (no allocation per job; two sessions sharing a hash only share a writer).
#[derive(Default)]
struct Pending {
    hasher: RandomState,
    sessions: Mutex<HashMap<u64, OnWriter>>,
}

/// A session's unanswered jobs: their writer, and how many.
struct OnWriter {
    writer: usize,
    jobs: usize,
}

impl Pending {
    /// The writer of a job of `session_id` among `count` whose queues hold `waiting(w)`
    /// jobs: the one the session's unanswered jobs are on, so they commit in order; else
    /// [`pick`]'s. Held until the job is answered (or its requester gone).
    fn claim(
        &self,
        session_id: &str,
        (count, room): (usize, usize),
        waiting: impl Fn(usize) -> usize,
    ) -> Claim<'_> {
        if count <= 1 {
            return Claim { pending: None, key: 0, writer: 0 };
        }
        let key = self.hasher.hash_one(session_id);
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        let on = sessions.entry(key).or_insert_with(|| OnWriter {
            writer: pick((count, room), &waiting),
            jobs: 0,
        });
        on.jobs += 1;
        Claim { pending: Some(self), key, writer: on.writer }
    }

    fn release(&self, key: u64) {
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(on) = sessions.get_mut(&key) {
            on.jobs -= 1;
            if on.jobs == 0 {
                sessions.remove(&key);
            }
        }
    }
}

/// A job's place on its writer, given back when the job is answered or dropped.
struct Claim<'a> {
    pending: Option<&'a Pending>,
    key: u64,
    writer: usize,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if let Some(pending) = self.pending {
            pending.release(self.key);
        }
    }
}

/// The writer a session with nothing pending goes to among `count`: the first with fewer
/// than `room` jobs waiting, else the one with the fewest. A writer's round holds what
/// waited while the last one committed, and its cost is mostly fixed, so filling one
/// writer before the next keeps rounds large; `room` bounds the wait a job adds by
/// joining a long queue.
fn pick((count, room): (usize, usize), waiting: impl Fn(usize) -> usize) -> usize {
    let depths = (0..count).map(|w| (w, waiting(w)));
    let mut least = (0, usize::MAX);
    for (w, depth) in depths {
        if depth < room {
            return w;
        }
        if depth < least.1 {
            least = (w, depth);
        }
    }
    least.0
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
    use super::{Pending, pick};

    const ROOM: usize = 64;
    const FOUR: (usize, usize) = (4, ROOM);

    #[test]
    fn the_first_writer_with_room_takes_a_new_session() {
        assert_eq!(pick(FOUR, |_| 0), 0);
        assert_eq!(pick(FOUR, |w| [ROOM, ROOM - 1, 0, 0][w]), 1);
        assert_eq!(pick(FOUR, |w| [ROOM + 5, ROOM, ROOM + 1, 70][w]), 1, "all full: the least");
        assert_eq!(pick((1, ROOM), |_| 1000), 0);
        assert_eq!(pick((4, 1), |w| [1, 0, 0, 0][w]), 1, "room 1: only an empty queue");
    }

    #[test]
    fn a_session_with_jobs_unanswered_stays_on_their_writer_until_all_are_answered() {
        let pending = Pending::default();
        let first = pending.claim("s1", FOUR, |_| 0);
        assert_eq!(first.writer, 0);
        // Writer 0 is full now: a new session goes to writer 1, but s1 stays on 0.
        let full = |w: usize| if w == 0 { ROOM } else { 0 };
        let second = pending.claim("s1", FOUR, full);
        let other = pending.claim("s2", FOUR, full);
        assert_eq!((second.writer, other.writer), (0, 1));
        drop(first);
        assert_eq!(pending.claim("s1", FOUR, full).writer, 0, "one job still pending");
        drop(second);
        assert_eq!(pending.claim("s1", FOUR, full).writer, 1, "nothing pending: picked afresh");
        drop(other);
        assert!(pending.sessions.lock().unwrap().is_empty(), "every claim given back");
    }

    #[test]
    fn one_writer_keeps_no_book() {
        let pending = Pending::default();
        let claim = pending.claim("s1", (1, ROOM), |_| 1000);
        assert_eq!(claim.writer, 0);
        assert!(pending.sessions.lock().unwrap().is_empty());
    }
}
