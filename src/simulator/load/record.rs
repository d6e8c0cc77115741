//! What a load run measured: per request kind, the latency from the *intended* send time
//! (so a slow answer that would have delayed later sends still counts against cphub, not
//! hidden as with a closed loop), the generator's own lag, and the errors.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::time::Instant;

use super::lock;

/// The requests a fleet makes: the phones' callbacks (heartbeat 6.4, sign check 6.1, enter
/// 6.2, quit 6.3) and the game platform's mint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Heartbeat,
    Mint,
    SignCheck,
    Enter,
    Quit,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Heartbeat,
        Kind::Mint,
        Kind::SignCheck,
        Kind::Enter,
        Kind::Quit,
    ];

    fn index(self) -> usize {
        Kind::ALL.iter().position(|k| *k == self).unwrap_or(0)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Heartbeat => "heartbeat",
            Kind::Mint => "mint",
            Kind::SignCheck => "sign_check",
            Kind::Enter => "enter",
            Kind::Quit => "quit",
        }
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// cphub answered, with this status rather than the one expected.
    Refused(u16),
    /// No answer: connection refused or reset, or the client's timeout.
    Transport,
}

/// Microseconds, 1 µs to 1 min, 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

pub struct Tally {
    latency: Histogram<u64>,
    lag: Histogram<u64>,
    ok: u64,
    /// By status.
    refused: BTreeMap<u16, u64>,
    transport: u64,
}

impl Tally {
    pub fn new() -> Tally {
        Tally {
            latency: histogram(),
            lag: histogram(),
            ok: 0,
            refused: BTreeMap::new(),
            transport: 0,
        }
    }

    pub fn add(&mut self, outcome: Outcome, lag: Duration, latency: Duration) {
        let micros = |d: Duration| (d.as_micros() as u64).clamp(1, 60_000_000);
        self.lag.saturating_record(micros(lag));
        match outcome {
            Outcome::Ok => self.ok += 1,
            Outcome::Refused(status) => *self.refused.entry(status).or_default() += 1,
            Outcome::Transport => self.transport += 1,
        }
        self.latency.saturating_record(micros(latency));
    }

    /// Answered as expected, answered otherwise, unanswered.
    #[cfg(test)]
    pub fn counts(&self) -> (u64, u64, u64) {
        (self.ok, self.refused.values().sum(), self.transport)
    }

    fn merge(&mut self, other: &Tally) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.latency.add(&other.latency);
        let _ = self.lag.add(&other.lag);
        self.ok += other.ok;
        for (status, n) in &other.refused {
            *self.refused.entry(*status).or_default() += n;
        }
        self.transport += other.transport;
    }
}

/// Shared by every request of a run; only requests intended within the window count.
pub struct Recorder {
    from: Instant,
    until: Instant,
    kinds: [Mutex<Tally>; 5],
    /// The flash crowd's session steps (mint, sign check, enter), also counted by kind.
    flash: Mutex<Tally>,
}

/// One request's times: when the schedule meant it to leave, when it left, when it ended.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub intended: Instant,
    pub sent: Instant,
    pub done: Instant,
}

impl Recorder {
    pub fn new(from: Instant, until: Instant) -> Recorder {
        Recorder {
            from,
            until,
            kinds: std::array::from_fn(|_| Mutex::new(Tally::new())),
            flash: Mutex::new(Tally::new()),
        }
    }

    /// Requests intended within it are measured.
    pub fn window(&self) -> std::ops::Range<Instant> {
        self.from..self.until
    }

    /// Adds what a part of the run measured on its own (a heartbeat connection), so the
    /// beats themselves take no shared lock.
    pub fn merge(&self, kind: Kind, tally: &Tally) {
        lock(&self.kinds[kind.index()]).merge(tally);
    }

    pub fn record(&self, kind: Kind, flash: bool, timing: Timing, outcome: Outcome) {
        if !(self.from..self.until).contains(&timing.intended) {
            return;
        }
        let lag = timing.sent.saturating_duration_since(timing.intended);
        let latency = timing.done.saturating_duration_since(timing.intended);
        lock(&self.kinds[kind.index()]).add(outcome, lag, latency);
        if flash && kind != Kind::Heartbeat {
            lock(&self.flash).add(outcome, lag, latency);
        }
    }

    /// The figures, with `max_lag` the most the generator may fall behind (p99.9) for its
    /// schedule to count as kept.
    pub fn report(&self, header: ReportHeader, max_lag: Duration) -> LoadReport {
        let window = self.until.saturating_duration_since(self.from);
        let mut lag = histogram();
        let kinds = Kind::ALL
            .iter()
            .zip(&self.kinds)
            .map(|(kind, tally)| {
                let tally = lock(tally);
                let _ = lag.add(&tally.lag);
                (kind.as_str(), Figures::of(&tally, window))
            })
            .collect::<Vec<_>>();
        let lag = LagFigures::of(&lag);
        LoadReport {
            schedule_kept: lag.p999_ms <= max_lag.as_secs_f64() * 1e3,
            max_lag_ms: max_lag.as_secs_f64() * 1e3,
            window_secs: window.as_secs_f64(),
            lag,
            kinds,
            flash: Figures::of(&lock(&self.flash), window),
            reconnects: 0,
            header,
        }
    }
}

/// What the run was asked to play.
#[derive(Debug, Clone, Serialize)]
pub struct ReportHeader {
    pub phones: usize,
    pub heartbeat_interval_secs: f64,
    pub busy_at_start: usize,
    pub flash_phones: usize,
    /// Keep-alive connections the heartbeats were pipelined over (`--path`: the most
    /// requests in flight, one a connection).
    pub connections: usize,
    /// `--path`: the one callback path played, instead of the fleet…
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<&'static str>,
    /// …at this many requests a second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    /// Answered as expected.
    pub ok: u64,
    /// Answered with another status (non-2xx, or not the 201 of a mint).
    pub non_2xx: u64,
    /// Those answers by status.
    pub statuses: BTreeMap<u16, u64>,
    /// Not answered: connection errors and timeouts.
    pub transport_errors: u64,
    /// Answered as expected per second of the window.
    pub rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Figures {
    fn of(tally: &Tally, window: Duration) -> Figures {
        let ms = |q: f64| tally.latency.value_at_quantile(q) as f64 / 1e3;
        Figures {
            ok: tally.ok,
            non_2xx: tally.refused.values().sum(),
            statuses: tally.refused.clone(),
            transport_errors: tally.transport,
            rate: tally.ok as f64 / window.as_secs_f64().max(1e-9),
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: tally.latency.max() as f64 / 1e3,
        }
    }

    pub fn errors(&self) -> u64 {
        self.non_2xx + self.transport_errors
    }
}

/// How late requests left against their intended time, over every kind.
#[derive(Debug, Clone, Serialize)]
pub struct LagFigures {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl LagFigures {
    fn of(lag: &Histogram<u64>) -> LagFigures {
        let ms = |q: f64| lag.value_at_quantile(q) as f64 / 1e3;
        LagFigures {
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: lag.max() as f64 / 1e3,
        }
    }
}

/// A load run's result (`--json` prints it as is).
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    #[serde(flatten)]
    pub header: ReportHeader,
    pub window_secs: f64,
    /// Whether the generator kept its schedule: its lag p99.9 within `max_lag_ms`. If not,
    /// the latencies below are not cphub's alone and the run is invalid.
    pub schedule_kept: bool,
    pub max_lag_ms: f64,
    pub lag: LagFigures,
    pub kinds: Vec<(&'static str, Figures)>,
    /// The flash crowd's mints, sign checks and enters together.
    pub flash: Figures,
    /// Heartbeat connections opened again after cphub closed one or it broke.
    pub reconnects: u64,
}

impl LoadReport {
    pub fn kind(&self, kind: Kind) -> &Figures {
        let found = self.kinds.iter().find(|(name, _)| *name == kind.as_str());
        &found.expect("every kind is reported").1
    }

    /// The table `cphub simulate --load` prints.
    pub fn human(&self) -> String {
        let h = &self.header;
        let mut out = match (h.path, h.rate) {
            (Some(path), Some(rate)) => format!(
                "load: {path} alone at {rate} a second, open loop; window {:.0} s\n",
                self.window_secs
            ),
            _ => format!(
                "load: {} phones, heartbeat every {} s, {} busy from the ramp, {} in the flash \
                 crowd; window {:.0} s\n",
                h.phones,
                h.heartbeat_interval_secs,
                h.busy_at_start,
                h.flash_phones,
                self.window_secs
            ),
        };
        out += "kind         rate/s      p50 ms   p99 ms   p99.9 ms  max ms    ok  non-2xx  transport\n";
        let rows = self.kinds.iter().map(|(n, f)| (*n, f));
        let rows = rows.chain([("flash crowd", &self.flash)]);
        // One path alone: only the kinds it sent.
        let played = |f: &Figures| h.path.is_none() || f.ok + f.errors() > 0;
        for (name, f) in rows.filter(|(_, f)| played(f)) {
            let _ = writeln!(
                out,
                "{name:<12} {:>9.1} {:>9.2} {:>8.2} {:>10.2} {:>7.1} {:>6} {:>8} {:>10}",
                f.rate,
                f.p50_ms,
                f.p99_ms,
                f.p999_ms,
                f.max_ms,
                f.ok,
                f.non_2xx,
                f.transport_errors
            );
            if !f.statuses.is_empty() {
                let _ = writeln!(out, "{:<12} non-2xx by status: {:?}", "", f.statuses);
            }
        }
        let _ = match h.path {
            Some(_) => writeln!(out, "at most {} requests in flight", h.connections),
            None => writeln!(
                out,
                "heartbeats pipelined over {} connections, {} reconnects",
                h.connections, self.reconnects
            ),
        };
        let l = &self.lag;
        let _ = write!(
            out,
            "generator lag (sent − intended): p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.1} ms",
            l.p50_ms, l.p99_ms, l.p999_ms, l.max_ms
        );
        if self.schedule_kept {
            let _ = write!(out, "\nschedule kept (p99.9 lag ≤ {} ms)", self.max_lag_ms);
        } else {
            let _ = write!(
                out,
                "\n!!! THE GENERATOR FELL BEHIND ITS SCHEDULE (p99.9 lag > {} ms): \
                 THESE FIGURES ARE INVALID !!!",
                self.max_lag_ms
            );
        }
        out
    }
}
