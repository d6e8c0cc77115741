//! Writers' rounds (`Store::write_round`) committed at once on PostgreSQL, as its
//! `database.writers` writers and other replicas' writers commit them: a sign check (6.1)
//! and a quit (6.3) in one transaction each, their phones crossing. On its own each batch
//! function locks sessions then phones in key order; two of them in one transaction took a
//! phone (the sign check's first use holds its phone) before the next part's sessions and
//! phones, so two rounds could each hold the phone the other waited for, until PostgreSQL
//! broke the deadlock after `deadlock_timeout` by failing one. The round now takes all its
//! locks up front, sessions then phones, in key order. SQLite has one writer connection,
//! so lock order is PostgreSQL's question alone.

use cphub::access::{MintedAccess, Rules, Verdict};
use cphub::config::Settings;
use cphub::domain::SessionState;
use cphub::store::{ApplyRules, EventOutcome, Round, RoundDone, Store, StoreError};
use sqlx::{Connection, Executor, PgConnection};

use crate::helpers::*;

crate::postgres_test!(
    /// Round `i` (0, 1) checks the ticket of `s-i`, minted on `p-i`, and applies the quit of
    /// `t-i`, playing on `q-i`, reported from the other round's phone `p-(1-i)`. Another
    /// client holds `t-0` and `t-1` until both rounds wait for them: each round has then done
    /// all it does before its quit. Taking the locks part by part, each had locked its own
    /// `p-i` in its sign check and went on to wait for the other's: a deadlock, every time.
    two_rounds_whose_phones_cross_never_deadlock_6_1_6_3 => rounds_whose_phones_cross_wait_in_line
);

async fn rounds_whose_phones_cross_wait_in_line() {
    let store = open(Backend::Postgres).await;
    idle_phones(&store, &["p-0", "p-1", "q-0", "q-1"], "18:59:00").await;
    let minted = [mint_pinned(&store, 0).await, mint_pinned(&store, 1).await];
    let playing = [
        enter("t-0", "q-0", "18:59:30"),
        enter("t-1", "q-1", "18:59:30"),
    ];
    apply(&store, &playing).await;

    let mut other = PgConnection::connect(store.url()).await.unwrap();
    other.execute("BEGIN").await.unwrap();
    let hold = "SELECT 1 FROM sessions WHERE session_id IN ('t-0', 't-1') FOR UPDATE";
    other.execute(hold).await.unwrap();
    let rounds = minted.into_iter().enumerate().map(|(i, access)| {
        let store = store.shared();
        tokio::spawn(async move { one_round(&*store, i, &access).await })
    });
    let rounds: Vec<_> = rounds.collect();
    wait_for_lock_waiters(&mut other, 2).await;
    other.execute("COMMIT").await.unwrap();

    for (i, round) in rounds.into_iter().enumerate() {
        let done = round.await.unwrap();
        let done = done.unwrap_or_else(|e| panic!("round {i} failed: {e:?}"));
        let (verdict, _) = done.checked[0].verdict.as_ref().expect("admitted");
        assert_eq!(*verdict, Verdict::FirstUse, "round {i}'s sign check");
        assert_eq!(
            done.applied[0].outcome,
            EventOutcome::Accepted,
            "round {i}'s quit"
        );
        let checked = session(&store, &format!("s-{i}")).await.unwrap();
        assert_eq!(checked.state, SessionState::Verified, "s-{i}");
        let quit = session(&store, &format!("t-{i}")).await.unwrap();
        assert_eq!(quit.state, SessionState::Ended, "t-{i}");
    }
}

/// Mints `s-i` on `p-i`; the access minted, to present its ticket.
async fn mint_pinned(store: &TestStore, i: usize) -> MintedAccess {
    let (session, phone) = (format!("s-{i}"), format!("p-{i}"));
    let request = mint_request(&Mint {
        pinned: Some(&phone),
        ..at_seven(&session)
    });
    let allocation = store.mint_session(&request).await.expect("mint runs");
    assert_eq!(allocated(&allocation), Some(phone));
    request.access
}

async fn one_round(
    store: &dyn Store,
    i: usize,
    minted: &MintedAccess,
) -> Result<RoundDone, StoreError> {
    let check = sign_check(&format!("s-{i}"), presented(minted, "a"));
    let other_phone = format!("p-{}", 1 - i);
    let quit = quit(&format!("t-{i}"), &other_phone, "19:00:30", 60);
    let access = Rules::from(&Settings::with_overrides("").unwrap().effective_access());
    let apply = ApplyRules {
        run_time_tolerance_secs: TOLERANCE_SECS,
        record_unknown_sessions: true,
    };
    let round = Round {
        mints: &[],
        checks: &[&check],
        events: &[&quit],
        apply,
        access: &access,
    };
    let (done, durable) = store.write_round(&round).await?;
    durable.wait().await?;
    Ok(done)
}
