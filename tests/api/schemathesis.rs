//! schemathesis (PyPI, pinned in tools/schemathesis/requirements.txt) against the real
//! `cphub serve`, wired to the simulator, on each backend: it reads `/api/v1/openapi.json`
//! and sends valid and invalid requests to every operator, callback and service route. Every
//! schemathesis check must pass (no 5xx, answers as documented, valid input accepted,
//! invalid input refused; the few exceptions are in tools/schemathesis/schemathesis.toml,
//! each with its reason) and the process must not panic.
//!
//! CI runs a few examples per operation with a fixed seed. The long run of docs/fuzzing.md:
//! `CPHUB_SCHEMATHESIS_EXAMPLES=500 CPHUB_SCHEMATHESIS_SEED=random scripts/test --test api -- schemathesis`.

use std::path::Path;
use std::time::Duration;

use cphub::simulator::Simulator;

use crate::backend_tests;
use crate::binary::{cphub, start_serve, stop};
use crate::helpers::{Backend, TOKEN, TestDb};
use crate::simulation::{configure_callbacks, simulator_options};

/// Enough phones that minting never runs out while schemathesis holds some of them: a
/// minted session holds its phone for `ticket_ttl_secs` (1 s here).
const PHONES: usize = 32;

fn setting(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

async fn schemathesis_finds_no_server_error_and_no_departure_from_the_document(backend: Backend) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let st = root.join(".venv/bin/st");
    assert!(
        st.exists(),
        "{} is missing: scripts/test makes .venv (tools/*/requirements.txt); run it once",
        st.display()
    );
    let db = TestDb::new(backend).await;
    let port = crate::watchdog::free_port();
    let address = format!("http://127.0.0.1:{port}");

    let options = simulator_options(&address, PHONES);
    let simulator = Simulator::start(options.clone()).await.unwrap();

    let mut command = cphub(&db);
    command
        .env("CPHUB__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("CPHUB__CPH__ENDPOINT", simulator.cph_endpoint())
        .env("CPHUB__CPH__PROJECT_ID", &options.project_id)
        .env("CPHUB__CPH__AUTH__AK", &options.ak)
        .env("CPHUB__CPH__AUTH__SK", &options.sk)
        .env("CPHUB__FLEET__HEARTBEAT_INTERVAL_SECS", "1")
        .env("CPHUB__ACCESS__TICKET_TTL_SECS", "1")
        .env("CPHUB__ACCESS__CLOCK_SKEW_SECS", "0")
        // Thousands of requests with one token: the rate limit would answer most of them
        // 429 (as documented); its own test is tests/api/tokens.rs.
        .env("CPHUB__API__RATE_LIMIT_PER_SECOND", "0");
    let served = start_serve(&mut command);
    configure_callbacks(&address, &simulator, &options).await;
    // Two heartbeats: the phones are free to mint on.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let examples = setting("CPHUB_SCHEMATHESIS_EXAMPLES", "25");
    let seed = setting("CPHUB_SCHEMATHESIS_SEED", "20261128");
    let mut args = vec![
        "--config-file".to_owned(),
        root.join("tools/schemathesis/schemathesis.toml")
            .display()
            .to_string(),
        "run".to_owned(),
        format!("{address}/api/v1/openapi.json"),
        "--header".to_owned(),
        format!("Authorization: Bearer {TOKEN}"),
        "--max-examples".to_owned(),
        examples,
        "--no-color".to_owned(),
    ];
    if seed != "random" {
        args.extend(["--seed".to_owned(), seed]);
    }
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(st)
            .args(args)
            // Its crash cache (for `st replay`) goes under target/tmp, not into the tree.
            .current_dir(env!("CARGO_TARGET_TMPDIR"))
            .env("NO_PROXY", "127.0.0.1,localhost")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    println!("{report}{}", String::from_utf8_lossy(&output.stderr));

    let status = stop(served.child).await;
    simulator.stop().await;
    let log = served.log.lock().unwrap().join("\n");
    assert!(!log.contains("panicked"), "cphub panicked:\n{log}");
    assert!(
        output.status.success(),
        "schemathesis found failures (report above)"
    );
    // A run that tested nothing would pass too.
    let count = |label: &str| {
        let line = report.lines().find(|l| l.trim_start().starts_with(label));
        line.and_then(|l| l.rsplit(['/', ' ']).next()?.trim().parse::<usize>().ok())
    };
    let (selected, tested) = (count("Selected:"), count("Tested:"));
    assert!(
        selected.is_some_and(|n| n >= 15) && tested == selected,
        "every operation must be tested: selected {selected:?}, tested {tested:?}"
    );
    assert!(status.success(), "cphub exited with {status}");
}

backend_tests!(schemathesis_finds_no_server_error_and_no_departure_from_the_document);
