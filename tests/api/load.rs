//! The open-loop load generator (`cphub simulate --load`) against the real app: it keeps its
//! schedule for a small fleet (every request the schedule fixes is sent, answered, and
//! counted once by cphub too), plays every kind of request, and the flash crowd plays.

use cphub::simulator::load::{self, Kind, LoadOptions, Target};

use crate::helpers::{Backend, TOKEN, TestApp};

const PHONES: usize = 200;

/// 200 phones beating every second over a 6 s run: sessions from 3 s (one interval and two
/// seconds for the flush), half of the fleet busy from a 1 s ramp, a flash crowd of 20 %
/// at 4 s within 1 s, sessions of 1 s on average so that quits happen within the run.
fn small_fleet() -> LoadOptions {
    let mut options = LoadOptions::defaults();
    options.heartbeat_interval_secs = 1.0;
    options.session_mean_secs = 1.0;
    options.busy_share = 0.5;
    options.ramp_secs = 1.0;
    options.warmup_secs = 0.0;
    options.window_secs = 6.0;
    options.flash_share = 0.2;
    options.flash_at_secs = 4.0;
    options.flash_within_secs = 1.0;
    options
}

async fn metric(app: &TestApp, name: &str) -> f64 {
    let text = app.get("/metrics", None).await.text().await.unwrap();
    text.lines()
        .filter(|line| line.starts_with(name))
        .map(|line| line.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

async fn load_generator_keeps_its_schedule_for_a_small_fleet(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let target = Target {
        cphub: app.address.clone(),
        token: Some(TOKEN.to_owned()),
        app_id: "load.game".to_owned(),
        phones: PHONES,
        seed: 17,
    };
    let report = load::run(small_fleet(), target).await.unwrap();

    // The schedule fixes the heartbeats exactly: every phone once a second for 6 s.
    let beats = report.kind(Kind::Heartbeat);
    assert_eq!(beats.ok, (PHONES * 6) as u64, "{}", report.human());
    assert_eq!(
        metric(&app, "cphub_heartbeats_total").await,
        beats.ok as f64
    );
    assert_eq!(
        (report.header.busy_at_start, report.header.flash_phones),
        (100, 40)
    );
    for kind in Kind::ALL {
        let figures = report.kind(kind);
        assert_eq!(figures.errors(), 0, "{kind:?}: {}", report.human());
        assert!(figures.ok > 0, "{kind:?} never played: {}", report.human());
    }
    // Each session that was minted went on, as the schedule leaves time for all of them.
    let (mints, checks, enters) = (
        report.kind(Kind::Mint).ok,
        report.kind(Kind::SignCheck).ok,
        report.kind(Kind::Enter).ok,
    );
    assert!(
        mints >= 140,
        "the ramp's 100 and the flash crowd's 40: {mints}"
    );
    assert_eq!((checks, enters), (mints, mints), "{}", report.human());
    assert_eq!(
        report.flash.ok,
        3 * 40,
        "the flash crowd's mints, checks, enters"
    );
    let started = metric(&app, "cphub_sessions_started_total").await;
    assert_eq!(started, enters as f64);
    app.stop().await;
}

// On PostgreSQL the generator finds a defect: a mint pinned to a phone picks it `FOR UPDATE
// SKIP LOCKED`, so while the heartbeat flush holds the phone's row the mint answers 409
// CPHUB.PHONE_BUSY (a few per run). Left to the write-path work (issue #17 part 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "bug: on PostgreSQL a pinned mint skips a row the heartbeat flush locks: 409"]
async fn load_generator_keeps_its_schedule_for_a_small_fleet_on_postgres() {
    if crate::helpers::postgres_available() {
        load_generator_keeps_its_schedule_for_a_small_fleet(Backend::Postgres).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_generator_keeps_its_schedule_for_a_small_fleet_on_sqlite() {
    load_generator_keeps_its_schedule_for_a_small_fleet(Backend::Sqlite).await
}
