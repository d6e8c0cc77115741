//! The heartbeat buffer holds back a heartbeat that changes nothing but the time
//! (`store::Unchanged`), and must never let that change what staleness (DESIGN: no heartbeat
//! for `heartbeat_interval × miss_threshold`) or an abandoned session's end (its last
//! heartbeat, chapter 6.4's `session_id`) are judged from. Phones beat every 5 s and are
//! stale after 3 missed beats (15 s): a beat 7.5 s newer than the written one is written,
//! one held back is written after 6 s without a newer one.

use std::sync::Arc;
use std::time::Duration;

use cphub::clock::{Clock, ManualClock};
use cphub::store::{HeartbeatBuffer, HeartbeatFlusher, Unchanged};

use crate::backend_tests;
use crate::helpers::*;

backend_tests!(
    an_unchanged_heartbeat_is_held_back_until_it_is_news,
    a_heartbeat_that_names_another_session_is_written_at_once,
    a_silent_phones_last_heartbeat_is_written_before_its_row_looks_stale,
    stopping_writes_what_is_held_back,
);

const LIMIT: Duration = Duration::from_secs(60);

fn buffer(clock: &Arc<ManualClock>) -> HeartbeatBuffer {
    let rule = Unchanged::for_fleet(Duration::from_secs(5), 3).expect("room for it at 3 misses");
    let clock: Arc<dyn Clock> = Arc::clone(clock) as Arc<dyn Clock>;
    HeartbeatBuffer::new(250).holding_back_unchanged(rule, clock)
}

/// The heartbeat the phone sends at `time`, arriving then, the manual clock moved there.
fn beat(clock: &ManualClock, time: &str, session: Option<&str>) -> cphub::domain::Heartbeat {
    let to = at(time);
    clock.advance(Duration::from_millis(
        (to.epoch_millis() - clock.now().epoch_millis()).max(0) as u64,
    ));
    heartbeat("p-1", time, session, time)
}

fn seen(p: &Option<cphub::store::Phone>) -> Option<cphub::domain::UtcTime> {
    p.as_ref().and_then(|p| p.last_seen_at)
}

/// A store, a manual clock at 19:00:00 and a buffer that has just written p-1's first
/// heartbeat (naming `session`, which has entered a minute before, if any).
async fn first_beat_written(
    backend: Backend,
    session: Option<&str>,
) -> (TestStore, Arc<ManualClock>, HeartbeatBuffer) {
    let store = open(backend).await;
    if let Some(id) = session {
        apply(&store, &[enter(id, "p-1", "18:59:59")]).await;
    }
    let clock = Arc::new(ManualClock::new(at("19:00:00")));
    let buffer = buffer(&clock);
    buffer.record(beat(&clock, "19:00:00", session));
    assert_eq!(buffer.flush(&*store, LIMIT).await.unwrap(), 1, "new phone");
    (store, clock, buffer)
}

async fn an_unchanged_heartbeat_is_held_back_until_it_is_news(backend: Backend) {
    let (store, clock, buffer) = first_beat_written(backend, None).await;
    buffer.record(beat(&clock, "19:00:05", None));
    assert_eq!(buffer.flush(&*store, LIMIT).await.unwrap(), 0, "same news");
    assert_eq!(buffer.held_back().await, 1);
    assert_eq!(
        seen(&phone(&store, "p-1", at("18:00:00")).await),
        Some(at("19:00:00"))
    );

    buffer.record(beat(&clock, "19:00:10", None));
    assert_eq!(
        buffer.flush(&*store, LIMIT).await.unwrap(),
        1,
        "10 s behind: news"
    );
    assert_eq!(
        buffer.held_back().await,
        0,
        "the older one held back is replaced"
    );
    let p = phone(&store, "p-1", at("18:00:00")).await;
    assert_eq!(seen(&p), Some(at("19:00:10")));
    assert_eq!(p.unwrap().last_heartbeat_at, Some(at("19:00:10")));
}

/// Entering a game (6.4: the heartbeat now names a session) is news at once, and so is
/// leaving it (blank again): the row says whether the phone is free, and the mint reads it.
async fn a_heartbeat_that_names_another_session_is_written_at_once(backend: Backend) {
    let (store, clock, buffer) = first_beat_written(backend, None).await;

    buffer.record(beat(&clock, "19:00:01", Some("s-1")));
    assert_eq!(buffer.flush(&*store, LIMIT).await.unwrap(), 1);
    assert_eq!(phone_state(&store, "p-1", at("18:00:00")).await, "occupied");

    buffer.record(beat(&clock, "19:00:02", None));
    assert_eq!(buffer.flush(&*store, LIMIT).await.unwrap(), 1);
    assert_eq!(phone_state(&store, "p-1", at("18:00:00")).await, "idle");
}

/// A phone playing s-1 beats at :00 (written), :05 (held back), then falls silent. Its row
/// must get the :05 beat, and the session its last heartbeat, before the row could look
/// stale (15 s after :00): else the watchdog would close s-1 at :00, five seconds short.
async fn a_silent_phones_last_heartbeat_is_written_before_its_row_looks_stale(backend: Backend) {
    let (store, clock, buffer) = first_beat_written(backend, Some("s-1")).await;
    buffer.record(beat(&clock, "19:00:05", Some("s-1")));
    buffer.flush(&*store, LIMIT).await.unwrap();

    clock.advance(Duration::from_millis(5_900)); // 19:00:10.9: the next beat may be late
    assert_eq!(buffer.flush(&*store, LIMIT).await.unwrap(), 0);
    clock.advance(Duration::from_millis(100)); // 19:00:11: quiet for 6 s
    assert_eq!(buffer.flush(&*store, LIMIT).await.unwrap(), 1);

    let fresh_since = clock.now().minus(Duration::from_secs(15));
    assert_eq!(
        phone_state(&store, "p-1", fresh_since).await,
        "occupied",
        "never stale"
    );
    let p = phone(&store, "p-1", at("18:00:00")).await;
    assert_eq!(seen(&p), Some(at("19:00:05")));
    let s = session(&store, "s-1").await.expect("s-1");
    assert_eq!(s.last_heartbeat_at, Some(at("19:00:05")));
}

/// SIGTERM flushes what is held back too (`HeartbeatFlusher::stop`): a restart loses none.
async fn stopping_writes_what_is_held_back(backend: Backend) {
    let (store, clock, buffer) = first_beat_written(backend, None).await;
    buffer.record(beat(&clock, "19:00:05", None));
    assert_eq!(buffer.flush(&*store, LIMIT).await.unwrap(), 0);

    let buffer = Arc::new(buffer);
    let every = Duration::from_secs(3600);
    HeartbeatFlusher::spawn(Arc::clone(&buffer), store.shared(), every, LIMIT)
        .stop()
        .await;

    assert_eq!(buffer.held_back().await, 0);
    assert_eq!(
        seen(&phone(&store, "p-1", at("18:00:00")).await),
        Some(at("19:00:05"))
    );
}
