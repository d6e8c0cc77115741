//! One callback path alone at a fixed rate, open loop (`cphub simulate --load --path …
//! --rate R`). The durable paths' targets are a rate *and* a p99 (enter and quit ≥ 0.1× the
//! ceiling with p99 ≤ 25 ms, sign checks ≥ 0.2×: docs/benchmarks.md). wrk's closed loop
//! of 32 connections cannot say whether cphub meets them: each connection waits for its
//! commit before it sends again, so it measures 32 ÷ latency, not what cphub answers when R
//! requests a second arrive whatever the answers do, as from a fleet of phones.
//!
//! Request `n` is due at `start + n ÷ R`. One pacer starts each request at its due time, as
//! a task that waits for one of `--max-in-flight` permits and then sends on an idle
//! keep-alive connection, the longest idle first (or a new one), one request at a time
//! each: cphub's HTTP/1.1 connections answer in order, so pipelining onto a busy one
//! would only queue it behind another's commit. Latency counts from the due time; the
//! generator's lag is the pacer's own (due → started). A request that finds every permit
//! taken waits for the first free one, and that wait is latency: cphub then has
//! `--max-in-flight` requests unanswered, at 24,000 a second 1,024 of them are 43 ms of
//! answers.

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use clap::ValueEnum;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::{Instant, sleep_until, timeout_at};

use super::lock;
use super::LoadOptions;
use super::record::{Kind, LoadReport, Outcome, Recorder, ReportHeader, Timing};
use super::request::Endpoint;
use super::response::{Answer, ResponseReader};

/// The callback path `--path` plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CallbackPath {
    /// 6.2 and 6.3: enter, then quit, of sessions the book has not seen (bench/events.lua's
    /// bodies), on 100,000 phone ids; every request a first delivery, committed before its 200.
    Events,
    /// 6.1: the sign checks of `--bodies`, each once (a ticket is single-use).
    SignChecks,
}

impl CallbackPath {
    pub fn as_str(self) -> &'static str {
        match self {
            CallbackPath::Events => "events",
            CallbackPath::SignChecks => "sign-checks",
        }
    }
}

/// Why a `--path` run does not start.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("--rate {0}: requests a second, from one a minute to {MAX_RATE}")]
    Rate(f64),
    #[error("--warmup-secs {0} and --window-secs {1}: seconds, 0 or more, a year at most")]
    Seconds(f64, f64),
    #[error("--max-in-flight {0}: from 1 to {MAX_IN_FLIGHT}")]
    InFlight(usize),
    #[error("--path sign-checks needs --bodies FILE (one sign-check body a line)")]
    NoBodies,
    #[error("--bodies {file}: {source}")]
    Bodies { file: PathBuf, source: io::Error },
    #[error("--bodies {file} holds {held} sign checks; --rate {rate} for {secs} s needs {needed}")]
    TooFewBodies {
        file: PathBuf,
        held: usize,
        rate: f64,
        secs: f64,
        needed: u64,
    },
}

impl From<PathError> for io::Error {
    fn from(error: PathError) -> io::Error {
        let kind = match &error {
            PathError::Bodies { source, .. } => source.kind(),
            _ => io::ErrorKind::InvalidInput,
        };
        io::Error::new(kind, error)
    }
}

/// Below one request a minute a run says nothing; above ten million a second the pacer's
/// arithmetic (and any machine) gives out.
const MIN_RATE: f64 = 1.0 / 60.0;
const MAX_RATE: f64 = 1e7;
/// A run's warm-up and window, each (the arithmetic of due times past it is not worth it).
const MAX_SECS: f64 = 365.0 * 86_400.0;
/// More connections than one machine's ports.
const MAX_IN_FLIGHT: usize = 65_536;

/// The phone ids events are spread over: bench/events.lua's `bench-p-0000000` to
/// `bench-p-0099999`, the ids the bench's heartbeat flood stored before.
const EVENT_PHONES: u64 = 100_000;

/// A session's quit is sent this long after its enter was due, so the enter was committed
/// first (its p99 is far below) and the quit takes the same path as bench/events.lua's.
const QUIT_AFTER: Duration = Duration::from_millis(200);

/// An idle connection this old is opened again before it carries a request: cphub
/// (actix-web) closes a keep-alive connection after 5 s idle, and a request written onto
/// one it is closing would be lost.
const REOPEN_IDLE: Duration = Duration::from_secs(2);

/// The requests of one run, by number.
enum Bodies {
    /// Request `2s` enters session `s`; request `2s + 1` quits session `s − quit_lag` (an
    /// enter of a session that never quits while there is none that old yet).
    Events { run: String, quit_lag: u64 },
    SignChecks(Vec<String>),
}

impl Bodies {
    /// Request `n`: its kind, its callback and its body.
    fn request(&self, n: u64) -> (Kind, &'static str, String) {
        match self {
            Bodies::Events { run, quit_lag } => {
                let (kind, body) = event(run, *quit_lag, n);
                (kind, "events", body)
            }
            Bodies::SignChecks(lines) => {
                let body = lines.get(n as usize).cloned().unwrap_or_default();
                (Kind::SignCheck, "sign-check", body)
            }
        }
    }
}

/// Request `n` of an events run (see [`Bodies::Events`]). Session `s` is on phone
/// `s × 7919 mod 100,000`, as bench/events.lua spreads its sessions, so consecutive sessions
/// land on phones far apart in the book.
fn event(run: &str, quit_lag: u64, n: u64) -> (Kind, String) {
    let session = n / 2;
    let (kind, status, id, of, tail) = match (n % 2, session.checked_sub(quit_lag)) {
        (0, _) => (Kind::Enter, 0, format!("{session}"), session, ""),
        (_, Some(quit)) => (Kind::Quit, 1, format!("{quit}"), quit, ",\"run_time\":30"),
        (_, None) => (Kind::Enter, 0, format!("w{session}"), n, ""),
    };
    let time = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
    let body = format!(
        "{{\"event_type\":\"app\",\"event\":{{\"status\":{status},\
         \"phone_id\":\"bench-p-{:07}\",\"app_id\":\"bench.game\",\
         \"session_id\":\"ol-{run}-{id}\",\"time\":\"{time}\"{tail}}}}}",
        of * 7919 % EVENT_PHONES
    );
    (kind, body)
}

/// An idle keep-alive connection, with what it had read beyond its last answer (nothing,
/// as cphub answers only what was asked).
struct Idle {
    stream: TcpStream,
    reader: ResponseReader,
    since: Instant,
}

/// What every request's task shares.
struct PathRun {
    endpoint: Endpoint,
    bodies: Bodies,
    recorder: Recorder,
    in_flight: Semaphore,
    /// Longest idle first. Connections are opened only when none is idle, so there are as
    /// many as requests were ever in flight at once; taking them in turn spreads the
    /// requests over all of them, and so over cphub's workers, which each serve the
    /// connections they accepted (taking the most recent first gave enter and quit a
    /// p99 4–7 ms higher at 9,000 a second, two runs each).
    idle: Mutex<VecDeque<Idle>>,
    /// Nothing is sent after it, and answers not in by then count as transport errors.
    grace: Instant,
}

/// When request `n` of a run at `rate` is due.
fn due(start: Instant, rate: f64, n: u64) -> Instant {
    start + Duration::from_secs_f64(n as f64 / rate)
}

/// How many requests a run at `rate` for `secs` sends: those due before its end (the
/// product's rounding must not add one due at the end itself).
fn request_count(rate: f64, secs: f64) -> u64 {
    let count = (rate * secs).ceil() as u64;
    match count.checked_sub(1) {
        Some(last) if last as f64 / rate >= secs => last,
        _ => count,
    }
}

/// Plays `options.path` at `options.rate` for the warm-up and the window.
pub async fn run(
    options: &LoadOptions,
    path: CallbackPath,
    endpoint: Endpoint,
) -> Result<LoadReport, PathError> {
    check(options)?;
    let rate = options.rate;
    let secs = options.warmup_secs + options.window_secs;
    let count = request_count(rate, secs);
    let bodies = match path {
        CallbackPath::Events => Bodies::Events {
            run: format!("{:06x}", rand::random::<u32>() & 0xff_ffff),
            quit_lag: ((rate * QUIT_AFTER.as_secs_f64() / 2.0).ceil() as u64).max(1),
        },
        CallbackPath::SignChecks => Bodies::SignChecks(sign_check_bodies(options, count)?),
    };
    let start = Instant::now();
    let from = start + Duration::from_secs_f64(options.warmup_secs);
    let end = start + Duration::from_secs_f64(secs);
    let connections = options.max_in_flight;
    let run = Arc::new(PathRun {
        endpoint,
        bodies,
        recorder: Recorder::new(from, end),
        in_flight: Semaphore::new(connections),
        idle: Mutex::new(VecDeque::new()),
        grace: end + Duration::from_secs(10),
    });
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..count {
        let intended = due(start, rate, n);
        if intended > Instant::now() {
            sleep_until(intended).await;
        }
        tasks.spawn(Arc::clone(&run).request(n, intended, Instant::now()));
        // Reap as it goes, so a long run does not hold every finished task.
        while let Some(joined) = tasks.try_join_next() {
            reraise(joined);
        }
    }
    // Every task ends by the grace (its send is bounded by it) after recording its request,
    // a transport error if unanswered: none is cut off unrecorded.
    while let Some(joined) = tasks.join_next().await {
        reraise(joined);
    }
    let header = ReportHeader {
        phones: 0,
        heartbeat_interval_secs: 0.0,
        busy_at_start: 0,
        flash_phones: 0,
        connections,
        path: Some(path.as_str()),
        rate: Some(rate),
    };
    let max_lag = Duration::from_millis(options.max_lag_ms);
    Ok(run.recorder.report(header, max_lag))
}

/// The flags a run's arithmetic rests on, refused before anything is sent.
fn check(options: &LoadOptions) -> Result<(), PathError> {
    if !(MIN_RATE..=MAX_RATE).contains(&options.rate) {
        return Err(PathError::Rate(options.rate));
    }
    let (warmup, window) = (options.warmup_secs, options.window_secs);
    if ![warmup, window].iter().all(|s| (0.0..=MAX_SECS).contains(s)) {
        return Err(PathError::Seconds(warmup, window));
    }
    if !(1..=MAX_IN_FLIGHT).contains(&options.max_in_flight) {
        return Err(PathError::InFlight(options.max_in_flight));
    }
    Ok(())
}

/// A request task's panic is the generator's bug: it stops the run rather than leave a
/// request uncounted.
fn reraise(joined: Result<(), tokio::task::JoinError>) {
    if let Err(error) = joined
        && error.is_panic()
    {
        std::panic::resume_unwind(error.into_panic());
    }
}

/// `--bodies`' lines; refused up front if they are fewer than the run sends, since a run
/// that ran out would report a rate it never offered.
fn sign_check_bodies(options: &LoadOptions, needed: u64) -> Result<Vec<String>, PathError> {
    let file = options.bodies.as_deref().ok_or(PathError::NoBodies)?;
    let lines = read_lines(file).map_err(|source| PathError::Bodies {
        file: file.to_owned(),
        source,
    })?;
    if (lines.len() as u64) < needed {
        return Err(PathError::TooFewBodies {
            file: file.to_owned(),
            held: lines.len(),
            rate: options.rate,
            secs: options.warmup_secs + options.window_secs,
            needed,
        });
    }
    Ok(lines)
}

fn read_lines(file: &Path) -> io::Result<Vec<String>> {
    let text = std::fs::read_to_string(file)?;
    let lines = text.lines().filter(|l| !l.trim().is_empty());
    Ok(lines.map(str::to_owned).collect())
}

impl PathRun {
    /// Request `n`: waits for a permit, sends on an idle connection (or a new one), reads the
    /// answer, records it from its due time. Past the grace nothing is sent: the request
    /// counts unanswered, and cphub is not handed work after the run.
    async fn request(self: Arc<Self>, n: u64, intended: Instant, started: Instant) {
        let (kind, callback, body) = self.bodies.request(n);
        let outcome = match timeout_at(self.grace, self.send(callback, &body)).await {
            Ok(Ok(answer)) if answer.status == 200 => Outcome::Ok,
            Ok(Ok(answer)) => Outcome::Refused(answer.status),
            Ok(Err(error)) => {
                tracing::debug!(%error, "load: {callback} connection given up");
                Outcome::Transport
            }
            Err(_) => Outcome::Transport,
        };
        let timing = Timing {
            intended,
            sent: started,
            done: Instant::now(),
        };
        self.recorder.record(kind, false, timing, outcome);
    }

    async fn send(&self, callback: &str, body: &str) -> io::Result<Answer> {
        let _permit = self.in_flight.acquire().await.map_err(io::Error::other)?;
        let mut connection = match self.take_idle() {
            Some(idle) => idle,
            None => self.connect().await?,
        };
        let mut bytes = self.endpoint.head(callback, body.len()).into_bytes();
        bytes.extend_from_slice(body.as_bytes());
        connection.stream.write_all(&bytes).await?;
        let answer = read_answer(&mut connection.stream, &mut connection.reader).await?;
        if !answer.close {
            connection.since = Instant::now();
            lock(&self.idle).push_back(connection);
        }
        Ok(answer)
    }

    /// The idle connection that has waited longest, dropping those idle long enough that
    /// cphub may be closing them.
    fn take_idle(&self) -> Option<Idle> {
        let mut idle = lock(&self.idle);
        while let Some(connection) = idle.pop_front() {
            if connection.since.elapsed() < REOPEN_IDLE {
                return Some(connection);
            }
        }
        None
    }

    async fn connect(&self) -> io::Result<Idle> {
        let stream = TcpStream::connect(&self.endpoint.authority).await?;
        let _ = stream.set_nodelay(true);
        Ok(Idle {
            stream,
            reader: ResponseReader::default(),
            since: Instant::now(),
        })
    }
}

async fn read_answer(tcp: &mut TcpStream, reader: &mut ResponseReader) -> io::Result<Answer> {
    loop {
        if let Some(answer) = reader.next_answer().map_err(io::Error::other)? {
            return Ok(answer);
        }
        if tcp.read_buf(reader.buffer()).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "cphub closed the connection",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> serde_json::Value {
        serde_json::from_str(body).unwrap()
    }

    #[test]
    fn each_session_enters_then_quits_on_one_phone_and_the_first_quits_are_enters() {
        let bodies = Bodies::Events {
            run: "r".into(),
            quit_lag: 2,
        };
        let event = |n| {
            let (kind, callback, body) = bodies.request(n);
            assert_eq!(callback, "events");
            (kind, parse(&body)["event"].clone())
        };
        // Sessions 0 and 1 have nothing old enough to quit: request 1 and 3 enter others.
        for n in [1, 3] {
            let (kind, warm) = event(n);
            assert_eq!(kind, Kind::Enter);
            assert_eq!(warm["session_id"], format!("ol-r-w{}", n / 2));
        }
        let (kind, enter) = event(4);
        assert_eq!((kind, enter["status"].as_u64()), (Kind::Enter, Some(0)));
        assert_eq!(enter["session_id"], "ol-r-2");
        assert_eq!(enter["phone_id"], "bench-p-0015838");
        let (kind, quit) = event(9);
        assert_eq!((kind, quit["status"].as_u64()), (Kind::Quit, Some(1)));
        assert_eq!(quit["session_id"], "ol-r-2");
        assert_eq!(quit["phone_id"], enter["phone_id"]);
        assert_eq!(quit["run_time"], 30);
        assert_eq!(parse(&bodies.request(0).2)["event_type"], "app");
        // Consecutive sessions, phones far apart; 100,000 sessions, every phone once.
        assert_eq!(event(6).1["phone_id"], "bench-p-0023757");
        let phones: std::collections::HashSet<u64> =
            (0..EVENT_PHONES).map(|s| s * 7919 % EVENT_PHONES).collect();
        assert_eq!(phones.len() as u64, EVENT_PHONES);
    }

    #[test]
    fn rates_seconds_and_in_flight_out_of_range_are_refused_before_a_run() {
        let valid = LoadOptions::defaults();
        assert!(check(&valid).is_ok());
        let with = |change: fn(&mut LoadOptions)| {
            let mut options = valid.clone();
            change(&mut options);
            check(&options).unwrap_err().to_string()
        };
        assert!(with(|o| o.rate = 0.0).starts_with("--rate 0"));
        assert!(with(|o| o.rate = f64::NAN).starts_with("--rate NaN"));
        assert!(with(|o| o.window_secs = -1.0).contains("--window-secs -1"));
        assert!(with(|o| o.warmup_secs = f64::INFINITY).contains("--warmup-secs inf"));
        assert!(with(|o| o.max_in_flight = 0).starts_with("--max-in-flight 0"));
    }

    #[test]
    fn sign_checks_are_the_lines_in_order() {
        let bodies = Bodies::SignChecks(vec!["{\"a\":1}".into(), "{\"b\":2}".into()]);
        assert_eq!(
            bodies.request(1),
            (Kind::SignCheck, "sign-check", "{\"b\":2}".to_owned())
        );
    }

    /// The run sends exactly the requests due before its end, each at `n ÷ rate`, for any
    /// rate: a sign-check file of `request_count` lines is never read past its end.
    #[test]
    fn requests_are_due_at_n_over_the_rate_and_counted_to_the_run_s_end() {
        let start = Instant::now();
        assert_eq!(due(start, 4.0, 6), start + Duration::from_millis(1500));
        assert_eq!(request_count(3.0, 90.0), 270);
        assert_eq!(request_count(200.0, 3.0), 600);
        assert_eq!(request_count(16_759.0, 5.0), 83_795);
        let cases = [(3.0, 90.0), (7.0, 1.3), (24_000.0, 4.0), (0.5, 7.0), (10.0, 0.3)];
        for (rate, secs) in cases {
            let count = request_count(rate, secs);
            let end = start + Duration::from_secs_f64(secs);
            assert!(due(start, rate, count - 1) < end, "{rate} {secs}");
            assert!(due(start, rate, count) >= end, "{rate} {secs}");
        }
    }
}
