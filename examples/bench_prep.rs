//! Benchmark pre-step for sign checks (`bench/run` calls it). A ticket is single-use, so
//! measuring the accepted path needs one freshly minted session per request. This makes the
//! phones known (one heartbeat each), mints one session per phone through the operator API
//! (`POST /api/v1/sessions`, as the game platform does) and writes, one JSON line each, the
//! sign-check body a client SDK would make the phone send: ticket, `auth_ts`, and
//! `encrypted_data` sealed under the session key (AES-256-GCM, cphub's default encodings),
//! so every replayed body takes the full path, decryption included.
//!
//! Usage: `bench_prep URL TOKEN SESSIONS OUT_FILE [CONCURRENCY]`

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aes_gcm::aead::Aead;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use base64::Engine;
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, token, sessions, out, rest @ ..] = args.as_slice() else {
        anyhow::bail!("usage: bench_prep URL TOKEN SESSIONS OUT_FILE [CONCURRENCY]");
    };
    let sessions: usize = sessions.parse()?;
    let concurrency: usize = rest.first().map_or(Ok(16), |c| c.parse())?;
    let http = reqwest::Client::new();
    let started = Instant::now();

    // Distinct phones, each heard from once, so each can be allocated to one session.
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let phone = |i: usize| format!("bench-sc-{i:07}");
    let beat = |i: usize| {
        let body = json!({"event_type": "heartbeat",
            "event": {"phone_id": phone(i), "time": now, "app_id": "", "session_id": ""}});
        let request = http.post(format!("{url}/cph/heartbeat")).json(&body);
        async move {
            let status = request.send().await?.status();
            anyhow::ensure!(status == 200, "heartbeat answered {status}");
            Ok(())
        }
    };
    in_parallel(sessions, concurrency, beat).await?;

    // Mint on each phone (pinned: no hunting for an idle one). A phone becomes allocatable
    // once the next heartbeat flush stored it, so early refusals are retried.
    let mint = |i: usize| {
        let (http, url, token) = (http.clone(), url.clone(), token.clone());
        async move {
            let body =
                json!({"app_id": "bench.game", "user_id": format!("u-{i}"), "phone_id": phone(i)});
            for _ in 0..200 {
                let res = http
                    .post(format!("{url}/api/v1/sessions"))
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await?;
                match res.status().as_u16() {
                    201 => return sign_check_body(&res.json::<Value>().await?),
                    404 | 409 | 503 => tokio::time::sleep(Duration::from_millis(100)).await,
                    status => anyhow::bail!("mint answered {status}"),
                }
            }
            anyhow::bail!("phone {} never became allocatable", phone(i))
        }
    };
    let bodies = in_parallel(sessions, concurrency, mint).await?;

    let mut file = std::io::BufWriter::new(std::fs::File::create(out)?);
    for body in &bodies {
        writeln!(file, "{body}")?;
    }
    file.flush()?;
    eprintln!(
        "bench_prep: {} sessions minted in {:.1} s",
        bodies.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Runs `task(0..n)` with at most `concurrency` in flight; results in index order.
async fn in_parallel<T, F, Fut>(n: usize, concurrency: usize, task: F) -> anyhow::Result<Vec<T>>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>> + Send + 'static,
{
    let next = Arc::new(AtomicUsize::new(0));
    let task = Arc::new(task);
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (next, task) = (Arc::clone(&next), Arc::clone(&task));
        // Futures are made here (not in the spawned task) so `task` need not be Send.
        let mut mine = Vec::new();
        workers.push(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return anyhow::Ok(mine);
                }
                mine.push((i, tokio::spawn(task(i)).await??));
            }
        });
    }
    let mut all: Vec<(usize, T)> = futures_util::future::try_join_all(workers)
        .await?
        .into_iter()
        .flatten()
        .collect();
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, t)| t).collect())
}

/// The body a phone sends after the player's client handed it the session: the client
/// seals something under the session key with a fresh IV.
fn sign_check_body(session: &Value) -> anyhow::Result<String> {
    let text = |field: &str| session[field].as_str().unwrap_or_default().to_owned();
    let key = hex::decode(text("aes_key"))?;
    let cipher = Aes256Gcm::new_from_slice(&key)?;
    let iv: [u8; 12] = rand::random();
    let sealed = cipher
        .encrypt(&Nonce::from(iv), b"cphub bench client hello".as_ref())
        .map_err(|_| anyhow::anyhow!("sealing failed"))?;
    Ok(json!({
        "session_id": text("session_id"),
        "ticket": text("ticket"),
        "auth_ts": text("auth_ts"),
        "encrypted_data": base64::engine::general_purpose::STANDARD.encode(sealed),
        "aes_iv": hex::encode(iv),
    })
    .to_string())
}
