//! The audit trail (docs/operations.md "The audit trail"): a restart, a rollout pause and a
//! webhook replay made with a named token each leave one line naming the token, the
//! `x-request-id` of the answer, the target and the outcome; a call refused for its scope
//! (403) is recorded as refused; `GET /api/v1/audit` pages newest first; `cphub audit list`
//! reads the same lines, and the CLI's own acting commands write `cli:<user>` lines.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use wiremock::ResponseTemplate;

use crate::backend_tests;
use crate::helpers::{Backend, TOKEN, assert_error, cli_on};
use crate::rollouts::{Rig, start_with};
use crate::webhooks::{hook_url, receiver, webhooks};

backend_tests!(
    restart_pause_and_replay_each_leave_one_audit_line_with_their_outcome,
    a_nul_in_a_path_is_audited_and_one_in_a_filter_is_refused,
    a_call_cut_short_by_a_stop_is_still_in_the_audit_trail,
);

/// Stopping cphub ends a call still running past `server.shutdown_timeout_secs` (here a
/// restart whose control plane accepts the connection and never answers): the call's
/// future is dropped. Its line, written after the answer, was lost with it; it is now
/// written as the call begins, status 499 (cut short) until the answer settles it. The
/// restart may have reached the control plane, and who asked must stay in the trail.
async fn a_call_cut_short_by_a_stop_is_still_in_the_audit_trail(backend: Backend) {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let overrides = format!(
        "[server]\nshutdown_timeout_secs = 1\n\
         [cph]\nendpoint = \"http://{}\"\nproject_id = \"0a1b2c3d4e5f60718293a4b5c6d7e8f9\"\n\
         [cph.auth]\nak = \"TESTAK\"\nsk = \"TESTSK\"\n",
        silent.local_addr().unwrap()
    );
    let app = crate::helpers::TestApp::spawn_with(backend, &overrides).await;
    app.idle_phones(&["p-1"]).await;
    let client = app.client.clone();
    let url = format!("{}/api/v1/phones/p-1/restart", app.address);
    let call = tokio::spawn(async move { client.post(url).bearer_auth(TOKEN).send().await });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    let db = app.stop().await;

    assert!(call.await.unwrap().is_err(), "the call got no answer");
    let again = crate::helpers::TestApp::spawn_on(db, "").await;
    let page = again.get("/api/v1/audit?target=p-1", Some(TOKEN)).await;
    let page: Value = page.json().await.unwrap();
    let line = &page["entries"][0];
    assert_eq!(line["action"], "POST /phones/{phone_id}/restart", "{page}");
    assert_eq!(line["status"], 499, "{page}");
    assert_eq!(line["error_code"], Value::Null, "{page}");
    drop(silent);
}

/// A path value holding a NUL (`%00`) refused for its scope still leaves its line, the NUL
/// kept as U+FFFD; a filter holding one is a 400. On PostgreSQL, whose text refuses NUL,
/// the line was lost and the filter answered 500.
async fn a_nul_in_a_path_is_audited_and_one_in_a_filter_is_refused(backend: Backend) {
    let app = crate::helpers::TestApp::spawn_with(backend, &tokens()).await;
    let res = (app.client)
        .post(format!("{}/api/v1/phones/p%00x/restart", app.address))
        .bearer_auth(READER)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);

    let lines: Value = (app.get("/api/v1/audit?token=reader", Some(TOKEN)).await)
        .json()
        .await
        .unwrap();
    assert_eq!(lines["entries"][0]["target"], "p\u{FFFD}x", "{lines}");
    let filtered = app.get("/api/v1/audit?target=p%00x", Some(TOKEN)).await;
    crate::helpers::assert_error(filtered, 400, "CPHUB.INVALID_FIELD").await;
}

const OPS: &str = "ops-token-0123456789abcdef0123456789";
const READER: &str = "reader-token-0123456789abcdef01234567";

fn tokens() -> String {
    let digest = |t: &str| hex::encode(Sha256::digest(t.as_bytes()));
    format!(
        "[api]\ntokens = [\"{TOKEN}\", \
         {{ name = \"ops\", sha256 = \"{}\", \
            scopes = [\"phones:operate\", \"rollouts:write\", \"webhooks:write\"] }}, \
         {{ name = \"reader\", sha256 = \"{}\", scopes = [\"phones:read\"] }}]\n",
        digest(OPS),
        digest(READER)
    )
}

/// An answer as the audit line must repeat it.
struct Answer {
    status: u16,
    request_id: String,
    /// `error_code` of an error answer, null otherwise.
    error_code: Value,
}

/// POSTs `body` with `token`.
async fn act(rig: &Rig, token: &str, path: &str, body: &Value) -> Answer {
    let res = (rig.app.client)
        .post(format!("{}/api/v1{path}", rig.app.address))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    let request_id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    let status = res.status().as_u16();
    let body: Value = res.json().await.unwrap_or_default();
    Answer {
        status,
        request_id,
        error_code: body["error_code"].clone(),
    }
}

async fn audit(rig: &Rig, query: &str) -> Value {
    rig.get(&format!("/api/v1/audit?{query}")).await
}

/// The simulator's jobs take 20 s, so the rollout's canary is still updating when it is
/// paused (5.3.7) and the restarted phone's job (4.4.1) is still running.
async fn restart_pause_and_replay_each_leave_one_audit_line_with_their_outcome(backend: Backend) {
    let billing = receiver(ResponseTemplate::new(204)).await;
    let extra = format!(
        "{}{}",
        tokens(),
        webhooks(&[("billing", hook_url(&billing))], "")
    );
    let rig = start_with(backend, 3, &extra, |_| {}).await;
    // The canary's update runs while the calls below are made.
    rig.slow_jobs_from_now(std::time::Duration::from_secs(20));
    let version = rig.new_version();
    rig.push_by_hand(&version);
    let rollout = rig
        .start_rollout(&json!({
            "app_id": "sim.game", "app_version_ids": [version], "canary": 1, "batch_size": 2,
        }))
        .await;
    let id = &rollout["id"];
    rig.wait(|| async { rig.rollout(id).await["phones"][0]["state"] == "updating" })
        .await;
    let other = rig.rollout(id).await["phones"][1]["phone_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // On a machine too slow for the simulated phones' heartbeats the watchdog may be
    // recovering the phone, or the rollout may have paused itself: the line must then say
    // so (409 and its code). On a quiet one these are 202, 200, 200.
    let restart = act(&rig, OPS, &format!("/phones/{other}/restart"), &json!({})).await;
    assert!(
        matches!(restart.status, 202 | 409),
        "4.4.1 restart: {}",
        restart.status
    );
    let reason = json!({"reason": "audit test"});
    let pause = act(&rig, OPS, &format!("/rollouts/{id}/pause"), &reason).await;
    assert!(matches!(pause.status, 200 | 409), "pause: {}", pause.status);
    let since = json!({"since": "2026-12-01T00:00:00Z"});
    let replay = act(&rig, OPS, "/webhooks/billing/replay", &since).await;
    assert_eq!(replay.status, 200);
    let refused = act(&rig, READER, &format!("/phones/{other}/reset"), &json!({})).await;
    assert_eq!(refused.status, 403);

    let ops = audit(&rig, "token=ops").await;
    let lines = ops["entries"].as_array().unwrap();
    let expected = [
        (
            &replay,
            "POST /webhooks/{endpoint}/replay",
            "billing".to_owned(),
        ),
        (&pause, "POST /rollouts/{rollout_id}/pause", id.to_string()),
        (&restart, "POST /phones/{phone_id}/restart", other.clone()),
    ];
    assert_eq!(
        lines.len(),
        expected.len(),
        "one line each, newest first: {ops}"
    );
    for (line, (answer, action, target)) in lines.iter().zip(expected) {
        assert_eq!(line["token_name"], "ops", "{line}");
        assert_eq!(line["request_id"], answer.request_id, "{line}");
        assert_eq!(line["action"], action, "{line}");
        assert_eq!(line["target"], target, "{line}");
        assert_eq!(line["status"], answer.status, "{line}");
        assert_eq!(line["error_code"], answer.error_code, "{line}");
    }

    let reader = audit(&rig, "token=reader").await;
    let line = &reader["entries"][0];
    assert_eq!(line["request_id"], refused.request_id, "{reader}");
    assert_eq!(line["status"], 403);
    assert_eq!(line["error_code"], "CPHUB.FORBIDDEN");
    assert_eq!(line["target"], other);

    pages_newest_first(&rig, &ops).await;
    rig.simulator.stop().await;
    // The CLI after the service stops: on SQLite a busy `serve` can hold the one writer
    // past the CLI's wait, which is not what this test is about.
    let db = rig.app.stop().await;
    the_cli_reads_and_writes_the_trail(&db.url, id).await;
}

async fn listed(url: &str, token: &str) -> Vec<Value> {
    let out = cli_on(
        url,
        &["audit", "list", "--token", token, "--format", "json"],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Pages of 2 give back the same lines as one page, in the same order, then stop.
async fn pages_newest_first(rig: &Rig, whole: &Value) {
    let first = audit(rig, "token=ops&limit=2").await;
    assert_eq!(first["entries"].as_array().unwrap().len(), 2);
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let second = audit(rig, &format!("token=ops&limit=2&cursor={cursor}")).await;
    assert!(second["next_cursor"].is_null(), "{second}");
    let paged: Vec<Value> = [first, second]
        .iter()
        .flat_map(|page| page["entries"].as_array().unwrap().clone())
        .collect();
    assert_eq!(&paged, whole["entries"].as_array().unwrap());
    let bad = rig.app.get("/api/v1/audit?cursor=abc", Some(TOKEN)).await;
    assert_error(bad, 400, "CPHUB.INVALID_FIELD").await;
}

/// `cphub audit list` shows the API's lines; `cphub rollout resume`, which writes the book
/// itself, adds a `cli:<user>` line (the test runs it with no `USER`: `cli:unknown`).
async fn the_cli_reads_and_writes_the_trail(url: &str, id: &Value) {
    let id = id.to_string();
    assert_eq!(listed(url, "ops").await.len(), 3);
    // Resumes the paused rollout (fails if the pause above was refused: the line says so).
    let out = cli_on(url, &["rollout", "resume", &id]).await;
    let lines = listed(url, "cli:unknown").await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["action"], "cphub rollout resume");
    assert_eq!(lines[0]["target"], id);
    assert_eq!(
        lines[0]["status"],
        if out.status.success() { 0 } else { 1 },
        "{out:?}"
    );
}
