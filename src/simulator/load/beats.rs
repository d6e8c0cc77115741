//! The heartbeat flood, cheap enough to measure cphub rather than the generator: one pacer
//! hands the beats due at each wake-up to a fixed set of keep-alive connections, each of
//! which writes them in one go (HTTP/1.1 pipelining on raw TCP) and reads the answers in
//! order on its other half, matching each to its intended send time first in, first out.
//! The writer never waits for an answer, so the schedule stays open-loop.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Mutex;
use std::time::Duration;

use chrono::Utc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::time::{Instant, sleep_until, timeout_at};

use super::lock;
use super::record::{Outcome, Tally};
use super::request::{BeatRequest, BeatTime};
use super::response::{Answer, ReadError, ResponseReader};

/// What one write carries at most: batches queued behind a slow write leave together, up
/// to this, so a backlog drains in few system calls without one unbounded buffer.
const MAX_WRITE: usize = 256 * 1024;

/// Beats due at one wake-up for one connection: their bytes and their intended times.
#[derive(Default)]
pub struct Batch {
    bytes: Vec<u8>,
    intended: Vec<Instant>,
}

/// When beats are due: beat `n` is phone `n % phones`'s, at `start + n × step`.
pub struct Schedule {
    pub start: Instant,
    pub end: Instant,
    pub step: Duration,
}

impl Schedule {
    fn due(&self, n: u64) -> Instant {
        self.start + self.step.mul_f64(n as f64)
    }
}

/// The one pacer: at each wake-up (tokio's timer has a millisecond's resolution) every
/// beat due is copied from its phone's prebuilt request into its connection's batch, and
/// each connection gets its batch in one hand-off; no task per beat. Phone `i` always goes
/// to connection `i % connections`, so a phone's beats arrive in order.
pub async fn pace(schedule: Schedule, phones: &[Mutex<BeatRequest>], lanes: Vec<Lane>) {
    if phones.is_empty() || lanes.is_empty() {
        return;
    }
    let mut batches: Vec<Batch> = lanes.iter().map(|_| Batch::default()).collect();
    let mut n: u64 = 0;
    while schedule.due(n) < schedule.end {
        sleep_until(schedule.due(n)).await;
        let now = Instant::now();
        let time = BeatTime::of(Utc::now());
        let mut due = schedule.due(n);
        while due <= now && due < schedule.end {
            let phone = (n % phones.len() as u64) as usize;
            let batch = &mut batches[phone % lanes.len()];
            lock(&phones[phone]).write_to(&mut batch.bytes, &time);
            batch.intended.push(due);
            n += 1;
            due = schedule.due(n);
        }
        for (batch, lane) in batches.iter_mut().zip(&lanes) {
            if !batch.intended.is_empty() {
                // A closed lane is a connection task that ended: nothing left to send to.
                let _ = lane.send(std::mem::take(batch));
            }
        }
    }
}

/// The pacer's end of one connection.
pub type Lane = UnboundedSender<Batch>;

/// Why a connection was given up (and a new one opened for the next batch).
#[derive(Debug, thiserror::Error)]
enum Broken {
    #[error("cphub answered Connection: close")]
    Closed,
    #[error("cphub closed the connection")]
    Eof,
    #[error("an answer nothing was sent for")]
    Unsolicited,
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Read(#[from] ReadError),
}

/// Beats written in one go: when they left, and when each was meant to.
struct Sent {
    at: Instant,
    intended: Vec<Instant>,
}

/// What a connection measured, merged into the run's report at the end.
pub struct Measured {
    pub tally: Tally,
    pub reconnects: u64,
}

/// One keep-alive connection's life: connect on the first batch, write and read until it
/// breaks or the run is over, reconnect on the next batch if it broke.
pub struct Connection {
    pub authority: String,
    /// Only beats intended within the window are measured.
    pub window: Range<Instant>,
    /// Answers not in by then are counted unanswered.
    pub grace: Instant,
    pub measured: Measured,
}

impl Connection {
    pub fn open(self) -> (Lane, tokio::task::JoinHandle<Measured>) {
        let (lane, batches) = unbounded_channel();
        (lane, tokio::spawn(self.run(batches)))
    }

    async fn run(mut self, mut batches: UnboundedReceiver<Batch>) -> Measured {
        let mut connected = false;
        while let Some(batch) = batches.recv().await {
            self.measured.reconnects += u64::from(connected);
            match TcpStream::connect(&self.authority).await {
                Ok(stream) => {
                    connected = true;
                    self.serve(stream, batch, &mut batches).await;
                }
                Err(error) => {
                    tracing::debug!(%error, "load: heartbeat connection refused");
                    self.unanswered(Instant::now(), batch.intended);
                }
            }
        }
        self.measured
    }

    /// Writes batches while reading answers, until the run is over and every answer is in
    /// (or the grace is past), or the connection breaks; whatever was sent and is still
    /// unanswered then is counted as a transport error.
    async fn serve(
        &mut self,
        stream: TcpStream,
        first: Batch,
        batches: &mut UnboundedReceiver<Batch>,
    ) {
        let _ = stream.set_nodelay(true); // batching is ours: Nagle would only add delay
        let (read, mut write) = stream.into_split();
        let (sent_tx, mut sent_rx) = unbounded_channel();
        let mut in_flight = VecDeque::new();
        let ended = {
            let tally = &mut self.measured.tally;
            let window = self.window.clone();
            let reading = read_answers(read, &mut sent_rx, &mut in_flight, tally, window);
            tokio::pin!(reading);
            let writing = write_batches(&mut write, first, batches, sent_tx);
            tokio::select! {
                ended = &mut reading => Some(ended),
                written = writing => match written {
                    Ok(()) => timeout_at(self.grace, &mut reading).await.ok(),
                    Err(error) => Some(Err(error.into())),
                },
            }
        };
        if let Some(Err(broken)) = ended {
            tracing::debug!(%broken, "load: heartbeat connection given up");
        }
        while let Ok(sent) = sent_rx.try_recv() {
            in_flight.push_back((sent.at, sent.intended.into()));
        }
        for (at, intended) in std::mem::take(&mut in_flight) {
            self.unanswered(at, intended);
        }
    }

    fn unanswered(&mut self, sent: Instant, intended: impl IntoIterator<Item = Instant>) {
        let now = Instant::now();
        for intended in intended {
            record(
                &mut self.measured.tally,
                &self.window,
                intended,
                sent,
                now,
                Outcome::Transport,
            );
        }
    }
}

type InFlight = VecDeque<(Instant, VecDeque<Instant>)>;

/// Sends each batch as it comes, joined with any queued behind it. Every write is announced
/// to the reader before it starts, so an answer never arrives before its send time is known.
async fn write_batches(
    write: &mut OwnedWriteHalf,
    first: Batch,
    batches: &mut UnboundedReceiver<Batch>,
    sent_tx: UnboundedSender<Sent>,
) -> std::io::Result<()> {
    let mut next = Some(first);
    while let Some(Batch {
        mut bytes,
        mut intended,
    }) = next
    {
        while bytes.len() < MAX_WRITE {
            let Ok(more) = batches.try_recv() else { break };
            bytes.extend_from_slice(&more.bytes);
            intended.extend_from_slice(&more.intended);
        }
        let at = Instant::now();
        let _ = sent_tx.send(Sent { at, intended });
        write.write_all(&bytes).await?;
        next = batches.recv().await;
    }
    Ok(())
}

/// Reads answers in order, each matched to the oldest beat sent and not yet answered. Ends
/// with Ok once the writer is done and everything sent is answered.
async fn read_answers(
    mut read: OwnedReadHalf,
    sent_rx: &mut UnboundedReceiver<Sent>,
    in_flight: &mut InFlight,
    tally: &mut Tally,
    window: Range<Instant>,
) -> Result<(), Broken> {
    let mut reader = ResponseReader::default();
    loop {
        while let Some(answer) = reader.next_answer()? {
            let (sent, intended) = oldest(in_flight, sent_rx).ok_or(Broken::Unsolicited)?;
            record(
                tally,
                &window,
                intended,
                sent,
                Instant::now(),
                outcome(answer),
            );
            if answer.close {
                return Err(Broken::Closed);
            }
        }
        if in_flight.is_empty() {
            // Nothing awaited: wait for the next write, or notice cphub closing.
            tokio::select! {
                sent = sent_rx.recv() => match sent {
                    Some(sent) => in_flight.push_back((sent.at, sent.intended.into())),
                    None => return Ok(()),
                },
                read = read.read_buf(reader.buffer()) => if read? == 0 { return Err(Broken::Eof) },
            }
        } else if read.read_buf(reader.buffer()).await? == 0 {
            return Err(Broken::Eof);
        }
    }
}

/// The oldest beat in flight: its write's time and its own intended time. A write leaves
/// the queue with its last beat, so an empty queue means nothing is awaited.
fn oldest(
    in_flight: &mut InFlight,
    sent_rx: &mut UnboundedReceiver<Sent>,
) -> Option<(Instant, Instant)> {
    if in_flight.is_empty() {
        let sent = sent_rx.try_recv().ok()?;
        in_flight.push_back((sent.at, sent.intended.into()));
    }
    let (at, intended) = in_flight.front_mut()?;
    let beat = (*at, intended.pop_front()?);
    if intended.is_empty() {
        in_flight.pop_front();
    }
    Some(beat)
}

fn outcome(answer: Answer) -> Outcome {
    match answer.status {
        200 => Outcome::Ok,
        status => Outcome::Refused(status),
    }
}

fn record(
    tally: &mut Tally,
    window: &Range<Instant>,
    intended: Instant,
    sent: Instant,
    done: Instant,
    outcome: Outcome,
) {
    if window.contains(&intended) {
        let lag = sent.saturating_duration_since(intended);
        tally.add(outcome, lag, done.saturating_duration_since(intended));
    }
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;
    use tokio::sync::oneshot;

    use super::*;

    const CLOSE: &[u8] = b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
    const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";

    fn batch(beats: usize) -> Batch {
        let now = Instant::now();
        Batch {
            bytes: b"POST / HTTP/1.1\r\ncontent-length: 0\r\n\r\n".repeat(beats),
            intended: vec![now; beats],
        }
    }

    /// Answers once on an accepted connection, then reads until the client lets go.
    async fn answer_once(listener: &TcpListener, answer: &[u8]) {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = stream.read(&mut buf).await.unwrap();
        stream.write_all(answer).await.unwrap();
        while stream.read(&mut buf).await.unwrap_or(0) > 0 {}
    }

    /// A connection to `authority` whose window covers the whole test.
    fn connection_to(authority: String) -> Connection {
        let start = Instant::now();
        Connection {
            authority,
            window: start..start + Duration::from_secs(3600),
            grace: start + Duration::from_secs(60),
            measured: Measured {
                tally: Tally::new(),
                reconnects: 0,
            },
        }
    }

    /// A server that closes after its first answer while three beats are in flight: that
    /// answer counts, the two others are transport errors, and the next batch goes out on
    /// a new connection. The test's steps wait on the server, never on a clock.
    #[tokio::test]
    async fn connection_close_counts_the_beats_in_flight_and_the_next_batch_reconnects() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority = listener.local_addr().unwrap().to_string();
        let (first_done, first_closed) = oneshot::channel();
        let server = tokio::spawn(async move {
            answer_once(&listener, CLOSE).await;
            first_done.send(()).unwrap();
            answer_once(&listener, OK).await;
        });
        let connection = connection_to(authority);
        let (lane, task) = connection.open();
        lane.send(batch(3)).unwrap_or_else(|_| panic!("lane open"));
        // The client let go of the first connection: its next batch needs a new one.
        first_closed.await.unwrap();
        lane.send(batch(1)).unwrap_or_else(|_| panic!("lane open"));
        drop(lane);
        let measured = task.await.unwrap();
        server.await.unwrap();

        assert_eq!(measured.tally.counts(), (2, 0, 2));
        assert_eq!(measured.reconnects, 1);
    }

    /// An answer that is not HTTP gives the connection up: every beat on it is unanswered.
    #[tokio::test]
    async fn a_malformed_answer_counts_every_beat_in_flight_as_unanswered() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move { answer_once(&listener, b"SSH-2.0-x\r\n").await });
        let connection = connection_to(authority);
        let (lane, task) = connection.open();
        lane.send(batch(2)).unwrap_or_else(|_| panic!("lane open"));
        drop(lane);
        let measured = task.await.unwrap();
        server.await.unwrap();
        assert_eq!(measured.tally.counts(), (0, 0, 2));
    }
}
