//! Usage rollups (`usage_rollups`, maintained by triggers as sessions end) answer exactly
//! what the raw computation over the sessions answers: `Store::usage` against
//! `Store::usage_raw` on random books and random windows, both backends.
//!
//! The books are built through the store's own paths, as the phones drive them: enters and
//! quits (6.2, 6.3) in random batches, quits overtaking their enters, redeliveries, sessions
//! left open, the watchdog abandoning sessions of silent phones and their late quits
//! arriving afterwards. Windows cut at random milliseconds or at midnights of zones with
//! whole, half and three-quarter hour offsets and DST changes, grouped every way.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use cphub::config::Settings;
use cphub::domain::{EndReason, EventKind, GameEvent, UtcTime};
use cphub::store::ReceivedEvent;
use cphub::usage::{self, Rounding, UsageParams, UsageRow, UsageSettings};
use sqlx::{Executor, PgPool};

use crate::backend_tests;
use crate::helpers::*;

backend_tests!(
    a_session_ending_in_the_year_9999_leaves_the_reports_answering,
    rollups_answer_exactly_what_the_sessions_answer,
    a_late_quit_changes_an_abandoned_sessions_usage,
    sessions_closed_before_the_rollups_are_rolled_up_by_their_migration,
    a_session_of_years_is_counted_from_the_sessions,
    a_window_bound_inside_a_millisecond_is_cut_to_it_on_both_backends,
);

crate::postgres_test!(sessions_inserted_whole_are_rolled_up_and_announced => a_session_inserted_whole_is_rolled_up_and_announced);

/// A seeded SplitMix64: the same seed builds the same book, so a failure can be replayed.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// Around the night Europe/Berlin springs forward (2026-03-29), so days of 23 hours too.
fn base() -> DateTime<Utc> {
    "2026-03-27T00:00:00Z".parse().unwrap()
}

const SPAN_MILLIS: u64 = 4 * 86_400_000;
const APPS: [&str; 3] = ["com.example.alpha", "com.example.beta", "com.example.gamma"];
const ZONES: [&str; 6] = [
    "UTC",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Europe/Berlin",
    "America/St_Johns",
    "Australia/Eucla",
];
const GROUPINGS: [&str; 8] = [
    "", "app", "day", "app,day", "day,app", "phone", "user", "app,user",
];

fn at_millis(ms: u64) -> DateTime<Utc> {
    base() + Duration::milliseconds(ms as i64)
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn delivery(kind: EventKind, session: &Played, time: DateTime<Utc>) -> ReceivedEvent {
    let time = UtcTime::from_datetime(time);
    ReceivedEvent {
        event: GameEvent {
            kind,
            session_id: sid(&session.id),
            phone_id: pid(&session.phone),
            app_id: aid(session.app),
            time,
            run_time: (kind == EventKind::Quit).then_some(session.run_time),
            error_msg: None,
        },
        received_at: time.plus(std::time::Duration::from_secs(2)),
    }
}

struct Played {
    id: String,
    phone: String,
    app: &'static str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    run_time: i64,
}

/// One session's deliveries, in the order the phone's network hands them over: usually
/// enter then quit; sometimes the quit first, a delivery twice, or no quit (still open).
fn deliveries(dice: &mut Dice, n: usize) -> (Played, Vec<ReceivedEvent>) {
    let start = at_millis(dice.below(SPAN_MILLIS));
    let length = match dice.below(4) {
        0 => dice.below(3_000),          // under a few seconds, even 0
        1 => dice.below(40 * 60_000),    // a usual session
        _ => dice.below(14 * 3_600_000), // long: across buckets and midnights
    };
    let end = start + Duration::milliseconds(length as i64);
    let played = Played {
        id: format!("s-{n}"),
        phone: format!("p-{}", dice.below(12)),
        app: APPS[dice.below(APPS.len() as u64) as usize],
        start,
        end,
        run_time: length as i64 / 1000 + *dice.pick(&[0, 0, 300]),
    };
    let enter = delivery(EventKind::Enter, &played, start);
    let quit = delivery(EventKind::Quit, &played, end);
    let mut events = match dice.below(10) {
        0 => vec![enter],               // still playing
        1 => vec![quit.clone(), enter], // the quit overtook its enter
        2 => vec![quit],                // only the quit ever arrived
        _ => vec![enter, quit],
    };
    if dice.chance(20) {
        let again = dice.pick(&events).clone();
        events.push(again);
    }
    (played, events)
}

fn random_params(dice: &mut Dice) -> UsageParams {
    let zone = *dice.pick(&ZONES);
    let bound = |dice: &mut Dice| match dice.below(3) {
        0 => (at_millis(dice.below(SPAN_MILLIS)) - Duration::hours(12))
            .date_naive()
            .to_string(),
        1 => rfc3339(at_millis(dice.below(SPAN_MILLIS / 900_000) * 900_000)),
        _ => rfc3339(at_millis(dice.below(SPAN_MILLIS + 86_400_000))),
    };
    let (mut from, mut to) = (bound(dice), bound(dice));
    if dice.chance(30) {
        (from, to) = (base().date_naive().to_string(), "2026-04-02".to_owned());
    }
    UsageParams {
        from,
        to,
        group_by: dice.pick(&GROUPINGS).to_string(),
        time_zone: Some(zone.to_owned()),
    }
}

fn sorted(mut rows: Vec<UsageRow>) -> Vec<UsageRow> {
    rows.sort_by(|a, b| {
        let key = |r: &UsageRow| (r.day.clone(), r.app_id.clone(), r.phone_id.clone());
        (key(a), a.user_id.clone()).cmp(&(key(b), b.user_id.clone()))
    });
    rows
}

/// Compares the two answers on random windows; returns the raw totals seen, so the caller
/// can check the book really held what the comparison is about.
async fn compare_windows(store: &impl Book, dice: &mut Dice, seed: u64) -> usage::Counts {
    let mut seen = usage::Counts::default();
    for _ in 0..25 {
        let params = random_params(dice);
        let rounding = *dice.pick(&[
            Rounding::StartedMinute,
            Rounding::CompletedMinute,
            Rounding::NearestMinute,
        ]);
        let settings = UsageSettings {
            time_zone: chrono_tz::Tz::UTC,
            billing_rounding: rounding,
        };
        let Ok(plan) = usage::plan(&settings, &params) else {
            continue; // an empty or reversed window: refused before the store
        };
        let rolled = store.usage(&plan.query).await.expect("usage");
        let raw = store.usage_raw(&plan.query).await.expect("raw usage");
        assert_eq!(
            sorted(rolled),
            sorted(raw.clone()),
            "seed {seed}, {params:?}, {rounding:?}"
        );
        raw.iter().for_each(|r| seen.add(&r.counts));
    }
    seen
}

/// A book played before migration 0011 existed: the migration's backfill rolls its closed
/// sessions up, and later quits keep them exact.
async fn sessions_closed_before_the_rollups_are_rolled_up_by_their_migration(backend: Backend) {
    let db = TestDb::new(backend).await;
    migrate_before(backend, &db.url, 11).await;
    given_todays_event_key(backend, &db.url).await;
    lend_todays_phone_column(backend, &db.url, true).await;
    let settings = Settings::with_overrides(&format!("[database]\nurl = \"{}\"\n", db.url))
        .expect("test settings");
    let store = cphub::store::connect(&settings.database)
        .await
        .expect("store opens");
    let mut dice = Dice(7);
    let (mut played, mut pending) = (Vec::new(), Vec::new());
    for n in 0..60 {
        let (session, events) = deliveries(&mut dice, n);
        played.push(session);
        pending.extend(events);
    }
    let late = pending.split_off(pending.len() / 2);
    apply(&store, &pending).await;
    lend_todays_phone_column(backend, &db.url, false).await;
    store.migrate().await.expect("0011 runs");

    let seen = compare_windows(&store, &mut dice, 7).await;
    assert!(seen.sessions > 0 && seen.seconds > 0, "{seen:?}");
    apply(&store, &late).await;
    compare_windows(&store, &mut dice, 7).await;
}

/// A phone whose clock jumped years: its session is too long to roll up (one bucket per
/// quarter hour of years, written by the quit), so reports read the sessions while it is in
/// the book, and still count it, exactly as the raw computation does.
async fn a_session_of_years_is_counted_from_the_sessions(backend: Backend) {
    let store = open(backend).await;
    let mut dice = Dice(3);
    let mut events = Vec::new();
    for n in 0..20 {
        events.extend(deliveries(&mut dice, n).1);
    }
    let wild = Played {
        id: "s-wild".to_owned(),
        phone: "p-wild".to_owned(),
        app: APPS[0],
        start: "2021-03-27T10:00:00Z".parse().unwrap(),
        end: at_millis(3_600_000),
        run_time: 60,
    };
    events.push(delivery(EventKind::Enter, &wild, wild.start));
    events.push(delivery(EventKind::Quit, &wild, wild.end));
    apply(&store, &events).await;

    let seen = compare_windows(&store, &mut dice, 3).await;
    assert!(seen.seconds > 0, "{seen:?}");
    let query = by_app("2021-01-01", "2027-01-01");
    let rows = store.usage(&query).await.expect("usage");
    let alpha = rows.iter().find(|r| r.app_id.as_deref() == Some(APPS[0]));
    let wild_secs = (wild.end - wild.start).num_seconds();
    assert!(alpha.unwrap().counts.seconds >= wild_secs, "{rows:?}");
}

/// A quit stamped 9999-12-31 by a phone whose clock is wrong (nothing refuses a time the
/// reference's format allows): the raw computation looks back from each window as far as
/// the longest session, and on PostgreSQL that bound fell before the earliest timestamp it
/// has, so every report failed ("timestamp out of range") while the session was in the
/// book. It counts the session's part inside the window, as the other backend does.
async fn a_session_ending_in_the_year_9999_leaves_the_reports_answering(backend: Backend) {
    let store = open(backend).await;
    let far = Played {
        id: "s-far".to_owned(),
        phone: "p-far".to_owned(),
        app: APPS[0],
        start: "2026-11-30T10:00:00Z".parse().unwrap(),
        end: "9999-12-31T00:00:00Z".parse().unwrap(),
        run_time: 60,
    };
    let events = [
        delivery(EventKind::Enter, &far, far.start),
        delivery(EventKind::Quit, &far, far.end),
    ];
    apply(&store, &events).await;

    let window = by_app("2026-11-30T12:00:00Z", "2026-12-01T00:00:00Z");
    let rows = (store.usage(&window).await).expect("usage");
    let raw = (store.usage_raw(&window).await).expect("usage from the sessions alone");

    let alpha = rows.iter().find(|r| r.app_id.as_deref() == Some(APPS[0]));
    assert_eq!(alpha.unwrap().counts.seconds, 12 * 3600, "{rows:?}");
    assert_eq!(sorted(raw), sorted(rows));
}

/// The watchdog abandons a session at its last heartbeat; its quit (6.3) arrives later,
/// adds its `run_time` and leaves the end where it was (docs/operations.md), so the session
/// now disagrees with its reported run time. That is a change of a session that already had
/// both ends: the rollups must take its old contribution back as they add the new one (the
/// random books above rarely make one, as few of their abandoned sessions still have a quit
/// to come).
async fn a_late_quit_changes_an_abandoned_sessions_usage(backend: Backend) {
    let store = open(backend).await;
    let played = Played {
        id: "s-late".to_owned(),
        phone: "p-late".to_owned(),
        app: APPS[1],
        start: at_millis(3_600_000),
        end: at_millis(3_600_000 + 50 * 60_000),
        run_time: 3_000,
    };
    apply(&store, &[delivery(EventKind::Enter, &played, played.start)]).await;
    let beat = rfc3339(played.start + Duration::minutes(20));
    record(
        &store,
        &[heartbeat(&played.phone, &beat, Some(&played.id), &beat)],
    )
    .await;
    let fresh_since = UtcTime::from_datetime(played.start + Duration::minutes(30));
    let now = UtcTime::from_datetime(played.start + Duration::minutes(31));
    store
        .abandon_sessions(fresh_since, GAME_GONE_AFTER, now)
        .await
        .expect("abandon");
    let abandoned = session(&store, &played.id).await.expect("session");
    assert_eq!(
        abandoned.end_reason,
        Some(EndReason::Abandoned),
        "{abandoned:?}"
    );
    let before = compare_whole_span(&store).await;
    assert_eq!(
        (before.abandoned, before.seconds),
        (1, 20 * 60),
        "{before:?}"
    );

    assert_eq!(before.run_time_mismatches, 0, "{before:?}");

    apply(&store, &[delivery(EventKind::Quit, &played, played.end)]).await;
    let late = session(&store, &played.id).await.expect("session");
    let seen = (
        late.end_reason,
        late.reported_run_time,
        late.run_time_mismatch,
    );
    assert_eq!(
        seen,
        (Some(EndReason::Abandoned), Some(3_000), true),
        "{late:?}"
    );
    let after = compare_whole_span(&store).await;
    let counts = (
        after.sessions,
        after.abandoned,
        after.seconds,
        after.run_time_mismatches,
    );
    assert_eq!(counts, (1, 1, 20 * 60, 1), "{after:?}");
    let mut dice = Dice(5);
    compare_windows(&store, &mut dice, 5).await;
}

/// RFC 3339 lets a window's bound fall inside a millisecond, and PostgreSQL keeps session
/// times to the microsecond: sessions entering 200 µs after a quarter hour, and adjacent
/// windows meeting 500 µs after one. Bounds are cut to the millisecond, so the rollups and
/// the sessions, and both backends, answer alike, and each session is in one window.
async fn a_window_bound_inside_a_millisecond_is_cut_to_it_on_both_backends(backend: Backend) {
    let store = open(backend).await;
    let micros = |at: &str| at.parse::<DateTime<Utc>>().unwrap();
    let played = |id: &str, start: &str| Played {
        id: id.to_owned(),
        phone: format!("p-{id}"),
        app: APPS[0],
        start: micros(start),
        end: micros(start) + Duration::minutes(5),
        run_time: 300,
    };
    for session in [
        played("s-on", "2026-03-27T10:00:00.000200Z"),
        played("s-end", "2026-03-27T11:00:00.000200Z"),
    ] {
        let enter = delivery(EventKind::Enter, &session, session.start);
        apply(
            &store,
            &[enter, delivery(EventKind::Quit, &session, session.end)],
        )
        .await;
    }
    let mut sessions = Vec::new();
    for (from, to) in [
        ("2026-03-27T10:00:00.000500Z", "2026-03-27T11:00:00.000500Z"),
        ("2026-03-27T11:00:00.000500Z", "2026-03-27T12:00:00Z"),
    ] {
        let query = by_app(from, to);
        let rolled = store.usage(&query).await.expect("usage");
        let raw = store.usage_raw(&query).await.expect("raw usage");
        assert_eq!(sorted(rolled), sorted(raw.clone()), "{from} to {to}");
        sessions.push(raw.iter().map(|row| row.counts.sessions).sum::<i64>());
    }
    assert_eq!(sessions, [1, 1], "each session counted once, by its start");
}

/// The rollups' and the raw answer over the whole span by app, compared; the raw totals.
async fn compare_whole_span(store: &impl Book) -> usage::Counts {
    let query = by_app(&base().date_naive().to_string(), "2026-04-02");
    let rolled = store.usage(&query).await.expect("usage");
    let raw = store.usage_raw(&query).await.expect("raw usage");
    assert_eq!(sorted(rolled), sorted(raw.clone()));
    let mut seen = usage::Counts::default();
    raw.iter().for_each(|r| seen.add(&r.counts));
    seen
}

/// Usage by app from `from` to `to` in UTC, billed by completed minute.
fn by_app(from: &str, to: &str) -> usage::UsageQuery {
    let params = UsageParams {
        from: from.to_owned(),
        to: to.to_owned(),
        group_by: "app".to_owned(),
        time_zone: None,
    };
    let settings = UsageSettings {
        time_zone: chrono_tz::Tz::UTC,
        billing_rounding: Rounding::CompletedMinute,
    };
    usage::plan(&settings, &params).unwrap().query
}

/// Several rounds per seed: a batch of deliveries in shuffled order, sometimes the watchdog
/// abandoning what silent phones were playing, then the comparison. Later rounds deliver
/// late quits of sessions the earlier rounds already rolled up.
async fn rollups_answer_exactly_what_the_sessions_answer(backend: Backend) {
    let mut seen = usage::Counts::default();
    for seed in [17, 4242, 90210] {
        let store = open(backend).await;
        let mut dice = Dice(seed);
        let (mut played, mut pending) = (Vec::new(), Vec::new());
        for n in 0..80 {
            let (session, events) = deliveries(&mut dice, n);
            played.push(session);
            pending.extend(events);
        }
        for round in 0..4 {
            let take = pending.len().min(60 + round * 10);
            let mut batch: Vec<_> = pending.drain(..take).collect();
            for i in (1..batch.len()).rev() {
                batch.swap(i, dice.below(i as u64 + 1) as usize);
            }
            apply(&store, &batch).await;
            if dice.chance(60) {
                abandon_some(&store, &mut dice, &played).await;
            }
            seen.add(&compare_windows(&store, &mut dice, seed).await);
        }
    }
    // The comparison covered what it claims to: closed, abandoned and open sessions.
    assert!(seen.sessions > 0 && seen.seconds > 0, "{seen:?}");
    assert!(seen.abandoned > 0 && seen.open_sessions > 0, "{seen:?}");
    assert!(seen.run_time_mismatches > 0, "{seen:?}");
}

/// A heartbeat naming a played session at a time within it, then the watchdog closing, at
/// their last heartbeat, the sessions of phones silent since a random time; their quits may
/// still come in a later round.
async fn abandon_some(store: &TestStore, dice: &mut Dice, played: &[Played]) {
    let session = dice.pick(played);
    let length = (session.end - session.start).num_milliseconds() as u64;
    let beat = session.start + Duration::milliseconds(dice.below(length + 1) as i64);
    let beat = rfc3339(beat);
    let named = Some(session.id.as_str());
    record(store, &[heartbeat(&session.phone, &beat, named, &beat)]).await;
    let fresh_since = UtcTime::from_datetime(at_millis(dice.below(SPAN_MILLIS)));
    let now = UtcTime::from_datetime(at_millis(SPAN_MILLIS + 86_400_000));
    store
        .abandon_sessions(fresh_since, GAME_GONE_AFTER, now)
        .await
        .expect("abandon");
}

/// Sessions written by an `INSERT` with both ends (a bulk load, an operator's import) are
/// rolled up and announced by the insert triggers, as a quit's update would (migration
/// 0022 made those triggers skip the inserts that have nothing to record: a mint's session,
/// an event batch's that has not started). PostgreSQL only: SQLite's rollups and outbox are
/// written by cphub's own statements, not by triggers on `sessions`.
async fn a_session_inserted_whole_is_rolled_up_and_announced() {
    let store = open(Backend::Postgres).await;
    let pool = PgPool::connect(store.url()).await.expect("test database");
    let insert = "INSERT INTO sessions (session_id, phone_id, app_id, user_id, state, \
          started_at, ended_at, reported_run_time, duration_seconds, end_reason, created_at, \
          updated_at) VALUES \
        ('s-whole', 'p-1', 'com.example.alpha', 'u-1', 'ended', '2026-03-27 10:00:00+00', \
         '2026-03-27 10:40:30+00', 2430, 2430, 'quit', '2026-03-27 10:00:00+00', \
         '2026-03-27 10:40:31+00'), \
        ('s-minted', 'p-2', 'com.example.alpha', 'u-2', 'minted', NULL, NULL, NULL, NULL, \
         NULL, '2026-03-27 10:00:00+00', '2026-03-27 10:00:00+00')";
    pool.execute(insert).await.expect("the sessions go in");

    let seen = compare_windows(&store, &mut Dice(11), 11).await;
    assert!(seen.sessions > 0, "windows saw s-whole: {seen:?}");
    let announced: Vec<(String, String)> =
        sqlx::query_as("SELECT subject, type FROM webhook_events ORDER BY seq")
            .fetch_all(&pool)
            .await
            .expect("the outbox");
    let expected = [("s-whole", "session.started"), ("s-whole", "session.ended")];
    let expected = expected.map(|(s, t)| (s.to_owned(), t.to_owned()));
    assert_eq!(announced, expected);
}
