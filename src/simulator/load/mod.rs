//! `cphub simulate --load`: an open-loop fleet load generator (docs/benchmarks.md). It plays
//! the simulator's phones and players at the design rates against a running cphub, sends
//! every request at the time its schedule fixes whatever the answers do, and measures each
//! latency from that intended time.

mod beats;
mod paths;
mod plan;
mod record;
mod request;
mod response;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::Args;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};

pub use paths::CallbackPath;
pub use plan::{FleetPlan, PhonePlan, plan};
pub use record::{Figures, Kind, LoadReport};

use super::fleet::Fleet;
use super::phone::{Assignment, WholeSeconds, event_body, retry_after, sign_check_body};
use beats::{Connection, Lane, Measured, Schedule};
use record::{Outcome, Recorder, ReportHeader, Tally, Timing};
use request::{BeatRequest, Endpoint};

#[derive(Debug, Clone, Args)]
pub struct LoadOptions {
    /// Run the open-loop load generator against `--cphub` instead of the simulator.
    #[arg(long)]
    pub load: bool,
    /// Seconds between a phone's heartbeats (cphub's `fleet.heartbeat_interval_secs`).
    #[arg(long, default_value_t = 5.0)]
    pub heartbeat_interval_secs: f64,
    /// Mean session length (exponential distribution).
    #[arg(long, default_value_t = 1200.0)]
    pub session_mean_secs: f64,
    /// Share of the fleet playing once the ramp is over; sets the mean idle time between
    /// sessions to session_mean × (1 − share) / share unless `--idle-mean-secs` is given.
    #[arg(long, default_value_t = 0.5)]
    pub busy_share: f64,
    /// Mean idle time between a phone's sessions (exponential).
    #[arg(long)]
    pub idle_mean_secs: Option<f64>,
    /// The busy share's sessions start spread evenly over this long.
    #[arg(long, default_value_t = 20.0)]
    pub ramp_secs: f64,
    /// Nothing sent before this is measured (the phones' first heartbeats and the ramp).
    #[arg(long, default_value_t = 30.0)]
    pub warmup_secs: f64,
    /// The measured window, after the warm-up; the run ends with it.
    #[arg(long, default_value_t = 60.0)]
    pub window_secs: f64,
    /// Keep-alive connections the heartbeats are pipelined over: few enough that a write
    /// carries several beats, enough to spread over cphub's workers (docs/benchmarks.md).
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Share of the fleet, taken from the idle phones, that starts a session at once.
    #[arg(long, default_value_t = 0.0)]
    pub flash_share: f64,
    /// The flash crowd's first session starts this long after the run's start…
    #[arg(long, default_value_t = 40.0)]
    pub flash_at_secs: f64,
    /// …and its last this long after that, evenly spread.
    #[arg(long, default_value_t = 10.0)]
    pub flash_within_secs: f64,
    /// cphub's `access.clock_skew_secs`: a session given up after its mint holds its phone
    /// until the mint's `expires_at` plus this, and the player waits for that before it pins
    /// the phone again.
    #[arg(long, default_value_t = 5)]
    pub clock_skew_secs: u64,
    /// The schedule counts as kept while the generator's lag p99.9 stays within this.
    #[arg(long, default_value_t = 20)]
    pub max_lag_ms: u64,
    /// cphub's `callbacks.base_path`: where the phones' sign checks, events and heartbeats
    /// go. A real phone reads the three URLs from its properties (appendix A.1), which cphub
    /// sets through the control plane; the load generator has none to read.
    #[arg(long, default_value = "/cph")]
    pub callbacks_path: String,
    /// Play one callback path alone at `--rate` a second instead of the fleet: what the
    /// durable paths' targets ask (a rate with its p99), which wrk's closed loop cannot
    /// measure (docs/benchmarks.md).
    #[arg(long, value_enum)]
    pub path: Option<CallbackPath>,
    /// `--path`: requests a second, evenly spaced.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// `--path sign-checks`: the sign-check bodies to send, one JSON a line, each once
    /// (examples/bench_prep writes them); at least `--rate` × the run's seconds.
    #[arg(long)]
    pub bodies: Option<std::path::PathBuf>,
    /// `--path`: the most requests in flight, each on a keep-alive connection of its own.
    #[arg(long, default_value_t = 1024)]
    pub max_in_flight: usize,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

impl LoadOptions {
    /// The documented defaults, as `cphub simulate --load` with no other flags would use.
    pub fn defaults() -> LoadOptions {
        use clap::Parser;
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            options: LoadOptions,
        }
        Wrapper::parse_from(["simulate"]).options
    }

    fn interval(&self) -> Duration {
        Duration::from_secs_f64(self.heartbeat_interval_secs.max(0.001))
    }

    /// Sessions start once every phone's first heartbeat reached cphub's store (one
    /// interval, plus two seconds for the flush): a mint pins a phone cphub must know.
    pub fn sessions_from(&self) -> Duration {
        self.interval() + Duration::from_secs(2)
    }

    fn idle_mean_secs(&self) -> f64 {
        let busy = self.busy_share.clamp(0.001, 1.0);
        self.idle_mean_secs
            .unwrap_or(self.session_mean_secs * (1.0 - busy) / busy)
    }

    fn idle(&self, rng: &mut SmallRng) -> Duration {
        plan::exponential(rng, self.idle_mean_secs())
    }

    /// A session's length in whole seconds (so the quit's `run_time` is exact), at least 1.
    fn session_length(&self, rng: &mut SmallRng) -> Duration {
        let secs = plan::exponential(rng, self.session_mean_secs).as_secs_f64();
        Duration::from_secs(secs.round().max(1.0) as u64)
    }
}

/// What the generator needs of the simulator's options.
pub struct Target {
    pub cphub: String,
    pub token: Option<String>,
    pub app_id: String,
    pub phones: usize,
    pub seed: u64,
    /// How the players' clients seal their sign checks.
    pub client: super::ClientSeal,
}

/// Everything the pacer and the players' tasks share.
struct Run {
    http: reqwest::Client,
    recorder: Recorder,
    options: LoadOptions,
    target: Target,
    endpoint: Endpoint,
    phone_ids: Vec<String>,
    /// Each phone's heartbeat request: idle, or naming the session it plays (entered, not
    /// yet quit). Swapped at enter and quit, copied by the pacer at every beat.
    beats: Vec<Mutex<BeatRequest>>,
    start: Instant,
    end: Instant,
    /// Answers still due after the end are waited for until then.
    grace: Instant,
    /// Makes this run's mint `Idempotency-Key`s its own: another run against the same
    /// cphub, with the same seed, must not be answered this one's sessions.
    run_id: u64,
}

/// How long to wait before sending a request again when cphub gave no `Retry-After`, or no
/// answer at all: cphub's own `Retry-After` (docs/errors.md).
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// What one attempt of a request came to.
enum Answered {
    /// The expected status, with the body (`Null` if it was not JSON).
    Ok(Value),
    /// A 503, or no answer: the same request may be sent again after this.
    Retry(Duration),
    /// Any other status: final.
    Refused,
}

/// Plays the fleet for the warm-up and the window, then waits (at most the client timeout)
/// for the answers still due.
pub async fn run(options: LoadOptions, target: Target) -> std::io::Result<LoadReport> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(4096)
        .build()
        .map_err(std::io::Error::other)?;
    let plan = plan(&options, target.phones, target.seed);
    let start = Instant::now();
    let from = start + Duration::from_secs_f64(options.warmup_secs);
    let end = from + Duration::from_secs_f64(options.window_secs);
    let endpoint = Endpoint::parse(&target.cphub, &options.callbacks_path)?;
    let phone_ids: Vec<String> = Fleet::new(target.phones, target.seed)
        .phones
        .into_iter()
        .map(|p| p.phone_id)
        .collect();
    let beats = phone_ids
        .iter()
        .map(|id| Mutex::new(BeatRequest::new(&endpoint, id, None)))
        .collect();
    let run = Arc::new(Run {
        http,
        recorder: Recorder::new(from, end),
        endpoint,
        phone_ids,
        beats,
        options,
        target,
        start,
        end,
        grace: end + Duration::from_secs(11),
        run_id: rand::random(),
    });
    let (lanes, connections) = run.connections();
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(Arc::clone(&run).heartbeats(lanes));
    if run.target.token.is_some() {
        for (index, phone) in plan.phones.iter().enumerate() {
            tasks.spawn(Arc::clone(&run).player(index, *phone));
        }
    }
    while tokio::time::timeout_at(run.grace, tasks.join_next())
        .await
        .is_ok_and(|next| next.is_some())
    {}
    tasks.abort_all();
    let header = ReportHeader {
        phones: run.target.phones,
        heartbeat_interval_secs: run.options.heartbeat_interval_secs,
        busy_at_start: plan.busy_at_start,
        flash_phones: plan.flash_phones,
        connections: connections.len(),
        path: None,
        rate: None,
    };
    let reconnects = run.merge_heartbeats(connections).await;
    let max_lag = Duration::from_millis(run.options.max_lag_ms);
    let mut report = run.recorder.report(header, max_lag);
    report.reconnects = reconnects;
    Ok(report)
}

/// A mutex's value even if a holder panicked: the load generator's shared state (counts,
/// prebuilt requests, idle connections) stays usable, and a panic is reported on its own.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `--path`: plays the callback path `options.path` alone against `cphub` at `--rate` a
/// second, for the warm-up and the window (paths.rs).
pub async fn run_path(options: &LoadOptions, cphub: &str) -> std::io::Result<LoadReport> {
    let Some(path) = options.path else {
        let why = "one path alone needs --path events or --path sign-checks";
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, why));
    };
    let endpoint = Endpoint::parse(cphub, &options.callbacks_path)?;
    Ok(paths::run(options, path, endpoint).await?)
}

/// `cphub simulate --load`: runs and prints the report.
pub async fn run_and_print(options: LoadOptions, target: Target) -> std::io::Result<()> {
    let json = options.json;
    let report = match options.path {
        Some(_) => run_path(&options, &target.cphub).await?,
        None => run(options, target).await?,
    };
    if json {
        println!(
            "{}",
            serde_json::to_string(&report).map_err(std::io::Error::other)?
        );
    } else {
        println!("{}", report.human());
    }
    Ok(())
}

impl Run {
    /// The heartbeat connections (no more than there are phones, so none sits idle past
    /// cphub's keep-alive), each waiting for its first batch.
    fn connections(&self) -> (Vec<Lane>, Vec<JoinHandle<Measured>>) {
        let count = self
            .options
            .connections
            .clamp(1, self.phone_ids.len().max(1));
        (0..count)
            .map(|_| {
                Connection {
                    authority: self.endpoint.authority.clone(),
                    window: self.recorder.window(),
                    grace: self.grace,
                    measured: Measured {
                        tally: Tally::new(),
                        reconnects: 0,
                    },
                }
                .open()
            })
            .unzip()
    }

    /// Heartbeat `n` is phone `n % phones`'s, due at `n × interval / phones`: every phone
    /// once per interval, the fleet's beats spread evenly rather than in bursts.
    async fn heartbeats(self: Arc<Self>, lanes: Vec<Lane>) {
        let schedule = Schedule {
            start: self.start,
            end: self.end,
            step: self
                .options
                .interval()
                .div_f64(self.phone_ids.len().max(1) as f64),
        };
        beats::pace(schedule, &self.beats, lanes).await;
    }

    /// Waits for every connection's answers (each gives up at the grace) and adds what
    /// they measured to the report; the reconnects they made.
    async fn merge_heartbeats(&self, connections: Vec<JoinHandle<Measured>>) -> u64 {
        let mut reconnects = 0;
        for connection in connections {
            if let Ok(measured) = connection.await {
                self.recorder.merge(Kind::Heartbeat, &measured.tally);
                reconnects += measured.reconnects;
            }
        }
        reconnects
    }

    fn base(&self) -> &str {
        self.target.cphub.trim_end_matches('/')
    }

    /// `{cphub}{callbacks_path}/{callback}`.
    fn callback_url(&self, callback: &str) -> String {
        let path = self.options.callbacks_path.trim_end_matches('/');
        format!("{}{path}/{callback}", self.base())
    }

    /// One request, timed from `intended`: what it came to.
    async fn send(
        &self,
        kind: Kind,
        flash: bool,
        intended: Instant,
        expected: u16,
        request: reqwest::RequestBuilder,
    ) -> Answered {
        let sent = Instant::now();
        let (outcome, answered) = match request.send().await {
            Ok(res) if res.status().as_u16() == expected => match res.bytes().await {
                Ok(bytes) => {
                    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                    (Outcome::Ok, Answered::Ok(body))
                }
                Err(_) => (Outcome::Transport, Answered::Retry(RETRY_AFTER)),
            },
            Ok(res) => {
                let status = res.status().as_u16();
                let answered = match status {
                    503 => Answered::Retry(retry_after(&res).unwrap_or(RETRY_AFTER)),
                    _ => Answered::Refused,
                };
                let _ = res.bytes().await; // read it, so the connection is reused
                (Outcome::Refused(status), answered)
            }
            Err(_) => (Outcome::Transport, Answered::Retry(RETRY_AFTER)),
        };
        let done = Instant::now();
        let timing = Timing {
            intended,
            sent,
            done,
        };
        self.recorder.record(kind, flash, timing, outcome);
        answered
    }

    /// Sends the request `build` makes until it is answered as expected, or finally
    /// refused, or the run is over. A 503 or no answer is sent again, the same request,
    /// after `Retry-After`: what a game platform does with a mint it has no answer to (the
    /// same `Idempotency-Key` gets the same session, docs/api.md "Minting is idempotent"),
    /// and a phone with a sign check (the same ticket verifies again, 6.1) or an event (a
    /// redelivery is recognised, 6.2, 6.3). Giving up instead and pinning the phone again
    /// for a new session is what no platform does: cphub still holds the phone for the
    /// session the first request may have minted, and answers 409 `CPHUB.PHONE_BUSY`.
    /// Each attempt is measured from its own intended time, its 503 counted.
    async fn send_until_answered(
        &self,
        kind: Kind,
        flash: bool,
        mut intended: Instant,
        expected: u16,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Option<Value> {
        while intended < self.end {
            match self.send(kind, flash, intended, expected, build()).await {
                Answered::Ok(body) => return Some(body),
                Answered::Refused => return None,
                Answered::Retry(after) => intended = Instant::now() + after,
            }
            sleep_until(intended.min(self.end)).await;
        }
        None
    }

    /// One phone's player side: sessions one after another, idle gaps between, for as long
    /// as the run lasts. Steps of a session depend on the previous answer (no sign check
    /// without a ticket), so a step is due when the previous one was answered; the first
    /// step (mint) and the quit are due at the times the schedule drew.
    async fn player(self: Arc<Self>, index: usize, phone: PhonePlan) {
        let mut rng = SmallRng::seed_from_u64(self.target.seed ^ (index as u64) << 8);
        let mut next = self.start + phone.first_start;
        let mut flash = phone.flash;
        let mut round = 0;
        while next < self.end {
            sleep_until(next).await;
            let length = self.options.session_length(&mut rng);
            let ended = self.session(index, round, flash, next, length).await;
            // The quit frees the phone at once (its heartbeats name no session once the
            // game has exited, chapter 6.4): the next session may follow after any idle time.
            next = ended.max(next) + self.options.idle(&mut rng);
            flash = false;
            round += 1;
        }
    }

    /// Mint → sign check → enter → (heartbeats naming it) → quit. Returns when the phone
    /// may be pinned again: when the session ended, or — a step after the mint finally
    /// refused, or the run over — when cphub's hold on the phone for it lapses.
    async fn session(
        &self,
        index: usize,
        round: usize,
        flash: bool,
        intended: Instant,
        length: Duration,
    ) -> Instant {
        let Some(minted) = self.mint(index, round, flash, intended).await else {
            return Instant::now(); // finally refused: nothing held
        };
        // After a sign check the hold runs to the enter timeout instead; enters are sent
        // until the run ends, so only a session cut short by the end gets there.
        let released = self.hold_lapses(&minted);
        let session = Assignment::from_mint(&minted, &self.target.app_id);
        let body = sign_check_body(&session, &self.target.client);
        let url = self.callback_url("sign-check");
        let check = || self.http.post(&url).json(&body);
        let now = Instant::now();
        if (self.send_until_answered(Kind::SignCheck, flash, now, 200, check).await).is_none() {
            return released;
        }
        let entered = Utc::now().with_nanosecond_zero();
        let enter = event_body(&self.phone_ids[index], &session, 0, entered, None);
        if self
            .event(Kind::Enter, flash, Instant::now(), &enter)
            .await
            .is_none()
        {
            return released;
        }
        self.play(index, Some(&session));
        let quit_due = Instant::now() + length;
        if quit_due >= self.end {
            return quit_due; // the run ends first: the session is left playing
        }
        sleep_until(quit_due).await;
        self.play(index, None);
        let quit_at = entered + chrono::TimeDelta::seconds(length.as_secs() as i64);
        let quit = event_body(
            &self.phone_ids[index],
            &session,
            1,
            quit_at,
            Some(length.as_secs()),
        );
        self.event(Kind::Quit, false, quit_due, &quit).await;
        Instant::now()
    }

    /// `POST /api/v1/sessions` pinned to the phone, as the game platform asks for a session,
    /// with an `Idempotency-Key` of the session's own; the mint's answer.
    async fn mint(
        &self,
        index: usize,
        round: usize,
        flash: bool,
        intended: Instant,
    ) -> Option<Value> {
        let token = self.target.token.as_deref().unwrap_or_default();
        let body = json!({
            "app_id": self.target.app_id, "user_id": format!("load-{index}-{round}"),
            "phone_id": self.phone_ids[index],
        });
        let key = format!("load-{:x}-{index}-{round}", self.run_id);
        let url = format!("{}/api/v1/sessions", self.base());
        let mint = || {
            let request = self.http.post(&url).bearer_auth(token);
            request.header("Idempotency-Key", &key).json(&body)
        };
        self.send_until_answered(Kind::Mint, flash, intended, 201, mint)
            .await
    }

    /// When cphub's hold on the phone for `minted` lapses: the mint's `expires_at` (the
    /// ticket's expiry) plus the clock skew cphub allows (docs/api.md, holds).
    fn hold_lapses(&self, minted: &Value) -> Instant {
        let expires_at = minted["expires_at"].as_str();
        let expires_at = expires_at.and_then(|t| DateTime::parse_from_rfc3339(t).ok());
        let left = expires_at.and_then(|t| (t.to_utc() - Utc::now()).to_std().ok());
        Instant::now() + left.unwrap_or_default() + Duration::from_secs(self.options.clock_skew_secs)
    }

    async fn event(
        &self,
        kind: Kind,
        flash: bool,
        intended: Instant,
        body: &Value,
    ) -> Option<Value> {
        let url = self.callback_url("events");
        let event = || self.http.post(&url).json(body);
        self.send_until_answered(kind, flash, intended, 200, event)
            .await
    }

    /// From now on phone `index`'s heartbeats name `session` (or none): its request is
    /// built here, once, not at each beat.
    fn play(&self, index: usize, session: Option<&Assignment>) {
        let request = BeatRequest::new(&self.endpoint, &self.phone_ids[index], session);
        *lock(&self.beats[index]) = request;
    }
}
