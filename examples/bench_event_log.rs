//! The event log's partitioning (migration 0014) on the write path: the event batch, the
//! most performance-sensitive statement pair, on an unpartitioned log (the schema before
//! 0014, with the column today's code writes) and on the log partitioned by day with a
//! month of partitions, alternately in the same run, so a machine shared with other work
//! shows up in both (docs/scaling.md#partitioning-the-event-log).
//!
//! Usage: `CPHUB_TEST_DATABASE_URL=postgres://USER:PASSWORD@HOST:PORT/postgres
//! cargo run --release --example bench_event_log [BATCHES]`. Each variant gets its own
//! database, dropped at the end.

use std::time::{Duration, Instant};

use cphub::config::Settings;
use cphub::domain::{AppId, EventKind, GameEvent, PhoneId, SessionId, UtcTime};
use cphub::store::{ApplyRules, ReceivedEvent};
use sqlx::{Connection, Executor, PgConnection, PgPool};

/// Sessions per batch: a batch carries their enters, the next their quits.
const BATCH: usize = 100;

#[derive(Clone, Copy, Debug)]
enum Log {
    Unpartitioned,
    Partitioned,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let admin = std::env::var("CPHUB_TEST_DATABASE_URL")?;
    let batches: usize = std::env::args().nth(1).map_or(Ok(200), |n| n.parse())?;
    println!("{batches} batches of {BATCH} events per run");
    for round in 0..2 {
        for log in [Log::Unpartitioned, Log::Partitioned] {
            let rate = run(&admin, log, batches, round).await?;
            println!("round {round} {log:?}: {rate:.0} events/s");
        }
    }
    Ok(())
}

async fn run(admin: &str, log: Log, batches: usize, round: usize) -> anyhow::Result<f64> {
    let name = format!("cphub_bench_log_{}", uuid::Uuid::new_v4().simple());
    let mut conn = PgConnection::connect(admin).await?;
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await?;
    let url = format!("{}/{name}", admin.rsplit_once('/').unwrap().0);
    let rate = measure(&url, log, batches, round).await;
    let drop = format!("DROP DATABASE {name} WITH (FORCE)");
    conn.execute(sqlx::AssertSqlSafe(drop)).await?;
    rate
}

async fn measure(url: &str, log: Log, batches: usize, round: usize) -> anyhow::Result<f64> {
    let settings = Settings::with_overrides(&format!("[database]\nurl = \"{url}\"\n"))?;
    let store = cphub::store::connect(&settings.database).await?;
    let start = UtcTime::parse("t", "2030-01-01T00:00:00Z")?;
    match log {
        Log::Unpartitioned => unpartitioned(url).await?,
        Log::Partitioned => {
            store.migrate().await?;
            // A month of day partitions, as a 30-day retention keeps.
            for week in 0..5 {
                let at = start.plus(Duration::from_secs(week * 7 * 86_400));
                store.maintain_event_log(at, None).await?;
            }
        }
    }
    let rules = ApplyRules {
        run_time_tolerance_secs: 60,
        record_unknown_sessions: true,
    };
    let began = Instant::now();
    for b in 0..batches / 2 {
        // Sessions spread over the month, so their events go to many partitions.
        let at = start.plus(Duration::from_secs((b as u64 * 3_600) % (30 * 86_400)));
        let ids: Vec<String> = (0..BATCH).map(|i| format!("s-{round}-{b}-{i}")).collect();
        for kind in [EventKind::Enter, EventKind::Quit] {
            let events: Vec<ReceivedEvent> = (ids.iter().enumerate())
                .map(|(i, id)| event(kind, id, i, at))
                .collect();
            store.apply_events(&events, rules).await?;
        }
    }
    Ok((batches / 2 * 2 * BATCH) as f64 / began.elapsed().as_secs_f64())
}

/// Every migration before 0014, and the column and key today's code writes.
async fn unpartitioned(url: &str) -> anyhow::Result<()> {
    let mut migrator = sqlx::migrate!("./migrations/postgres");
    let before: Vec<_> = (migrator.iter())
        .filter(|m| m.version < 14)
        .cloned()
        .collect();
    migrator.migrations = before.into();
    let pool = PgPool::connect(url).await?;
    migrator.run(&pool).await?;
    pool.execute(
        "ALTER TABLE session_events ADD COLUMN session_created_at TIMESTAMPTZ NOT NULL \
           DEFAULT '-infinity'; \
         CREATE UNIQUE INDEX session_events_once_by_key \
           ON session_events (session_id, status, session_created_at) \
           WHERE outcome = 'accepted'",
    )
    .await?;
    Ok(())
}

fn event(kind: EventKind, session: &str, i: usize, at: UtcTime) -> ReceivedEvent {
    let quit = matches!(kind, EventKind::Quit);
    let time = at.plus(Duration::from_secs(if quit { 600 } else { 0 }));
    ReceivedEvent {
        event: GameEvent {
            kind,
            session_id: SessionId::parse("session_id", session.to_owned()).unwrap(),
            phone_id: PhoneId::parse("phone_id", format!("p-{i}")).unwrap(),
            app_id: AppId::parse("app_id", "com.example.game".to_owned()).unwrap(),
            time,
            run_time: quit.then_some(600),
            error_msg: None,
        },
        received_at: time,
    }
}
