//! Mints committed in groups (`Store::mint_sessions`, the mint writer's batch): a batch
//! answers each mint and leaves the book as minting them one by one in arrival order does,
//! and serves the wait queue before its mints.

use cphub::domain::{IdempotencyKey, Priority, QueueId, UserId};
use cphub::store::{Allocation, MintKey, MintRequest, NewQueueEntry, PhoneApp};

use crate::backend_tests;
use crate::helpers::*;

backend_tests!(
    one_batch_of_random_mints_leaves_what_one_by_one_leaves,
    a_batch_its_lists_cannot_decide_is_minted_one_by_one,
    a_batch_replays_a_key_its_earlier_mint_used_and_mints_after_a_refusal,
    a_batch_serves_the_queue_before_its_mints,
    a_hold_that_lapsed_goes_to_the_queue_before_a_mint,
    a_batch_mints_anew_with_keys_past_their_time,
);

/// Phones p-0 … p-11; p-12 and p-13 are unknown to the book.
const PHONES: u64 = 14;
const KNOWN_PHONES: u64 = 12;
/// `APP` is on p-0 … p-5, `OTHER` on p-4 … p-8 (p-4 and p-5 carry both), `LONELY` on none.
const OTHER: &str = "com.example.other";
const LONELY: &str = "com.example.lonely";

/// A random mix of mints (app-wide for an app with free phones or with none, matching the
/// app or not, pinned to free, busy and unknown phones, some with an `Idempotency-Key`
/// used again or with another request) committed as one batch answers each as the same
/// mints one by one on a second store, and both books end alike: the same sessions, the
/// same phones held for the same sessions. The batches hold more mints for an app than it
/// has free phones, and mints of both apps competing for the phones that carry both: the
/// set-wise pick (`store/mint_batch.rs`) must still give each mint its one-by-one phone.
async fn one_batch_of_random_mints_leaves_what_one_by_one_leaves(backend: Backend) {
    let mut answers = Vec::new();
    let mut shared = [false; 2];
    for seed in 0..SEEDS {
        let requests = random_mints(seed, 6 + 6 * (seed as usize % 6));
        let (together, alone) = (open(backend).await, open(backend).await);
        for store in [&together, &alone] {
            fleet(store).await;
        }

        let refs: Vec<&MintRequest> = requests.iter().collect();
        let batch = together.mint_sessions(&refs).await.expect("batch commits");
        let mut one_by_one = Vec::new();
        for request in &requests {
            one_by_one.push(alone.mint_session(request).await.expect("mint commits"));
        }

        assert_eq!(batch, one_by_one, "seed {seed}");
        for n in 0..requests.len() {
            let id = format!("s-{n}");
            let [a, b] = [&together, &alone].map(|store| session(store, &id));
            assert_eq!(a.await, b.await, "seed {seed}, {id}");
        }
        for n in 0..KNOWN_PHONES {
            let id = format!("p-{n}");
            let [a, b] = [&together, &alone].map(|store| phone(store, &id, at("18:58:00")));
            let (a, b) = (a.await, b.await);
            assert_eq!(format!("{a:?}"), format!("{b:?}"), "seed {seed}, {id}");
        }
        note_shared_phones(&requests, &batch, &mut shared);
        answers.extend(batch);
    }
    assert_mixed(&answers);
    assert_eq!(
        shared, [true; 2],
        "both apps took a phone that carries both"
    );
}

/// How many random batches: each size from 6 to 36 mints, several times over.
const SEEDS: u64 = 36;

/// Marks which app's app-wide mints took p-4 or p-5, the phones that carry both apps.
fn note_shared_phones(requests: &[MintRequest], answers: &[Allocation], shared: &mut [bool; 2]) {
    for (request, answer) in requests.iter().zip(answers) {
        let phone = allocated(answer);
        let on_shared = matches!(phone.as_deref(), Some("p-4" | "p-5"));
        if on_shared && request.match_app && request.pinned_phone.is_none() {
            shared[usize::from(request.app_id.as_str() == OTHER)] = true;
        }
    }
}

/// The test means something only if the batches hold every kind of answer.
fn assert_mixed(answers: &[Allocation]) {
    let has = |kind: fn(&Allocation) -> bool| answers.iter().any(kind);
    assert!(
        has(|a| matches!(a, Allocation::Allocated { .. }))
            && has(|a| matches!(a, Allocation::NoFreePhone))
            && has(|a| matches!(a, Allocation::PhoneBusy))
            && has(|a| matches!(a, Allocation::UnknownPhone))
            && has(|a| matches!(a, Allocation::Replayed(_)))
            && has(|a| matches!(a, Allocation::KeyReused)),
        "the batches mix every answer: {answers:?}"
    );
}

/// Twelve fresh phones with their apps (5.1.2), p-1 already held for an earlier session.
async fn fleet(store: &TestStore) {
    let phones: Vec<String> = (0..KNOWN_PHONES).map(|n| format!("p-{n}")).collect();
    idle_phones(
        store,
        &phones.iter().map(String::as_str).collect::<Vec<_>>(),
        "18:59:00",
    )
    .await;
    let deployed = |phone: String, app: &str| PhoneApp {
        phone_id: pid(&phone),
        app_id: aid(app),
        app_version_id: None,
        version_code: Some("1".into()),
        version_name: None,
    };
    let apps: Vec<PhoneApp> = (0..9)
        .flat_map(|n| {
            let app = (n < 6).then(|| deployed(format!("p-{n}"), APP));
            let other = (n >= 4).then(|| deployed(format!("p-{n}"), OTHER));
            app.into_iter().chain(other)
        })
        .collect();
    store.sync_phone_apps(&apps, at("18:59:30")).await.unwrap();
    let mut busy = mint_request(&at_seven("s-busy"));
    busy.pinned_phone = Some(pid("p-1"));
    store.mint_session(&busy).await.unwrap();
}

/// `count` mints drawn from `seed` ([`draws`]), a
/// second apart from 19:00:00, each holding its phone until 19:05 (so no hold lapses
/// within the batch).
fn random_mints(seed: u64, count: usize) -> Vec<MintRequest> {
    let mut next = draws(seed);
    (0..count)
        .map(|n| {
            let session = format!("s-{n}");
            let now = format!("19:00:{n:02}");
            let mut request = mint_request(&Mint {
                session: &session,
                pinned: None,
                now: &now,
                hold_until: "19:05:00",
                fresh_since: "18:58:00",
            });
            request.app_id = aid([APP, OTHER, LONELY][next(3) as usize]);
            request.match_app = next(4) != 0;
            if next(3) == 0 {
                request.pinned_phone = Some(pid(&format!("p-{}", next(PHONES))));
            }
            if next(2) == 0 {
                request.key = Some(key(next(3), next(2)));
            }
            request
        })
        .collect()
}

/// The key `k-{key}` with the request hash `h-{hash}`: the same key with another hash is
/// another request.
fn key(key: u64, hash: u64) -> MintKey {
    MintKey {
        key: IdempotencyKey::parse("key", format!("k-{key}")).unwrap(),
        request_hash: format!("h-{hash}"),
        expires_at: at("19:10:00"),
    }
}

fn waiting(i: usize) -> NewQueueEntry {
    NewQueueEntry {
        queue_id: QueueId::parse("queue_id", format!("q-{i:02}")).unwrap(),
        app_id: aid(APP),
        user_id: UserId::parse("user_id", format!("u-{i:02}")).unwrap(),
        token_name: "platform".to_owned(),
        priority: Priority::parse("priority", 0).unwrap(),
        now: at("18:59:30"),
        expires_at: at("19:10:00"),
    }
}

/// A player waiting for the app comes before every mint of a batch, as before a single
/// mint: of two phones freed for the batch, the queue's head gets one, the batch's first
/// mint the other, and its second none.
async fn a_batch_serves_the_queue_before_its_mints(backend: Backend) {
    let store = open(backend).await;
    store.join_queue(&waiting(1), &mint_times()).await.unwrap();
    idle_phones(&store, &["p-1", "p-2"], "18:59:00").await;

    let requests = [
        mint_request(&at_seven("s-1")),
        mint_request(&at_seven("s-2")),
    ];
    let minted = store.mint_sessions(&[&requests[0], &requests[1]]).await;

    let minted = minted.expect("batch commits");
    assert!(allocated(&minted[0]).is_some(), "{minted:?}");
    assert_eq!(minted[1], Allocation::NoFreePhone);
    let entry = store
        .queue_entry(&waiting(1).queue_id, at("19:00:00"))
        .await;
    let entry = entry.unwrap().expect("entry still there");
    assert!(entry.phone_id.is_some(), "the waiting player was served");
    assert_ne!(entry.phone_id.map(|p| p.to_string()), allocated(&minted[0]));
}

/// docs/api.md "The wait queue": a phone freed by a lapsed hold goes to the players
/// already waiting for its app before any new mint. The mint releases the hold before it
/// serves the queue, so the queue sees the phone first.
async fn a_hold_that_lapsed_goes_to_the_queue_before_a_mint(backend: Backend) {
    let store = open(backend).await;
    idle_phones(&store, &["p-1"], "18:59:00").await;
    mint(&store, at_seven("s-old")).await;
    store.join_queue(&waiting(1), &mint_times()).await.unwrap();
    idle_phones(&store, &["p-1"], "19:01:00").await;

    let late = mint(
        &store,
        Mint {
            now: "19:01:30",
            hold_until: "19:02:30",
            fresh_since: "19:00:00",
            ..at_seven("s-new")
        },
    )
    .await;

    assert_eq!(late, Allocation::NoFreePhone);
    let entry = store
        .queue_entry(&waiting(1).queue_id, at("19:01:30"))
        .await;
    let entry = entry.unwrap().expect("entry still there");
    assert_eq!(
        entry.phone_id.map(|p| p.to_string()).as_deref(),
        Some("p-1")
    );
}

/// The batch reads the first free phones in key order, as many as it has mints, from the
/// earliest freshness cut-off of its mints. Here that list is p-0 and p-1, heard from at
/// 18:59; the second mint takes only phones heard from since 19:00, so the list cannot
/// tell whether a phone further on (p-2, heard from at 19:01) is free for it, and the batch
/// is minted one by one: that mint gets p-2, where the list alone would answer
/// `NO_FREE_PHONE`.
async fn a_batch_its_lists_cannot_decide_is_minted_one_by_one(backend: Backend) {
    let store = open(backend).await;
    idle_phones(&store, &["p-0", "p-1"], "18:59:00").await;
    idle_phones(&store, &["p-2"], "19:01:00").await;
    let early = Mint {
        now: "19:02:00",
        hold_until: "19:05:00",
        ..at_seven("s-early")
    };
    let late = Mint {
        fresh_since: "19:00:00",
        ..early
    };
    let requests = [
        mint_request(&early),
        mint_request(&Mint {
            session: "s-late",
            ..late
        }),
    ];

    let minted = store.mint_sessions(&[&requests[0], &requests[1]]).await;

    let minted = minted.expect("batch commits");
    let phones: Vec<Option<String>> = minted.iter().map(allocated).collect();
    assert_eq!(
        phones,
        [Some("p-0".into()), Some("p-2".into())],
        "{minted:?}"
    );
}

/// As one by one (`book::mint_released`): a key the batch's first mint refused with is
/// not kept, so the next mint with it mints; a key a mint of the batch minted with is
/// replayed to the same request and refused to another (`KEY_REUSED`).
async fn a_batch_replays_a_key_its_earlier_mint_used_and_mints_after_a_refusal(backend: Backend) {
    let store = open(backend).await;
    idle_phones(&store, &["p-0"], "18:59:00").await;
    let keyed = |session: &str, pinned: Option<&str>, hash: u64| {
        let mut request = mint_request(&Mint {
            pinned,
            hold_until: "19:05:00",
            ..at_seven(session)
        });
        request.key = Some(key(0, hash));
        request
    };
    let requests = [
        keyed("s-0", Some("p-9"), 0),
        keyed("s-1", None, 1),
        keyed("s-2", None, 1),
        keyed("s-3", None, 0),
    ];
    let refs: Vec<&MintRequest> = requests.iter().collect();

    let minted = store.mint_sessions(&refs).await.expect("batch commits");

    assert_eq!(minted[0], Allocation::UnknownPhone);
    assert_eq!(allocated(&minted[1]).as_deref(), Some("p-0"));
    let Allocation::Replayed(replay) = &minted[2] else {
        panic!("the same request again is replayed: {minted:?}");
    };
    assert_eq!(replay.access.session_id, "s-1".to_string());
    assert_eq!(replay.phone_id, pid("p-0"));
    assert_eq!(minted[3], Allocation::KeyReused);
    let again = store.mint_session(&keyed("s-4", None, 1)).await.unwrap();
    assert_eq!(again, minted[2], "the key row holds the batch's answer");
}

/// docs/api.md "Minting is idempotent": a key past its time is free again. The batch does not
/// sweep lapsed keys (the holds sweeper does), so their rows are still there: the batch must
/// read past them, mint with them anew (another request with a lapsed key is no
/// `KEY_REUSED`, the same request no replay), and keep the new answers for the next replay.
async fn a_batch_mints_anew_with_keys_past_their_time(backend: Backend) {
    let store = open(backend).await;
    idle_phones(&store, &["p-0", "p-1"], "18:59:00").await;
    let keyed = |session: &str, now: &str, key: u64, hash: u64, expires_at: &str| {
        let mut request = mint_request(&Mint {
            now,
            hold_until: "19:01:00",
            fresh_since: "18:58:00",
            ..at_seven(session)
        });
        request.key = Some(MintKey {
            expires_at: at(expires_at),
            ..self::key(key, hash)
        });
        request
    };
    let first = [
        keyed("s-1", "19:00:00", 0, 0, "19:02:00"),
        keyed("s-2", "19:00:00", 1, 0, "19:02:00"),
    ];
    let minted = store.mint_sessions(&[&first[0], &first[1]]).await.unwrap();
    assert!(minted.iter().all(|m| allocated(m).is_some()), "{minted:?}");

    let later = [
        keyed("s-3", "19:03:00", 0, 1, "19:10:00"),
        keyed("s-4", "19:03:00", 1, 0, "19:10:00"),
    ];
    let minted = store.mint_sessions(&[&later[0], &later[1]]).await.unwrap();

    let phones: Vec<Option<String>> = minted.iter().map(allocated).collect();
    assert_eq!(
        phones,
        [Some("p-0".into()), Some("p-1".into())],
        "{minted:?}"
    );
    let again = [
        keyed("s-5", "19:04:00", 0, 1, "19:10:00"),
        keyed("s-6", "19:04:00", 1, 1, "19:10:00"),
    ];
    let replayed = store.mint_sessions(&[&again[0], &again[1]]).await.unwrap();
    let Allocation::Replayed(replay) = &replayed[0] else {
        panic!("the key keeps the new answer: {replayed:?}");
    };
    assert_eq!(replay.access.session_id, "s-3".to_string());
    assert_eq!(replayed[1], Allocation::KeyReused);
}
