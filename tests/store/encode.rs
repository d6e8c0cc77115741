//! Encoding servers and diagnostics (migration 0017): a sync replaces the encoding servers
//! with what the control plane listed (chapter 4.6.1), each read back with what its status
//! means; a recovery keeps the diagnostics run before it (chapter 4.7.5), in order.

use cphub::domain::{CommandOutcome, CommandRun, EncodeServerState};
use cphub::store::{ControlPlaneEncodeServer, Diagnostics};

use crate::backend_tests;
use crate::helpers::*;

backend_tests!(
    a_sync_replaces_the_encode_servers_and_each_reads_back_with_its_state_4_6_1,
    a_recovery_keeps_its_diagnostics_in_order_4_7_5,
);

fn listed(id: &str, status: i32) -> ControlPlaneEncodeServer {
    ControlPlaneEncodeServer {
        encode_server_id: id.to_owned(),
        encode_server_name: format!("name-{id}"),
        server_id: "s-1".to_owned(),
        server_type: 0,
        status,
    }
}

async fn a_sync_replaces_the_encode_servers_and_each_reads_back_with_its_state_4_6_1(
    backend: Backend,
) {
    let store = open(backend).await;
    let first = [listed("e-1", 1), listed("e-2", 2), listed("e-3", 1014)];
    store
        .sync_encode_servers(&first, at("19:00:00"))
        .await
        .unwrap();
    store
        .sync_encode_servers(&[listed("e-2", 3), listed("e-3", 1)], at("19:01:00"))
        .await
        .unwrap();

    let servers = store.encode_servers().await.unwrap();

    let seen: Vec<(&str, i32, EncodeServerState)> = servers
        .iter()
        .map(|e| (e.encode_server_id.as_str(), e.status, e.state))
        .collect();
    assert_eq!(
        seen,
        [
            ("e-2", 3, EncodeServerState::Restarting),
            ("e-3", 1, EncodeServerState::Running),
        ],
        "e-1 is no longer listed"
    );
    assert_eq!(servers[0].synced_at, at("19:01:00"));
}

async fn a_recovery_keeps_its_diagnostics_in_order_4_7_5(backend: Backend) {
    let store = open(backend).await;
    let runs = vec![
        CommandRun {
            command: "getprop sys.boot_completed".into(),
            outcome: CommandOutcome::Succeeded,
            output: Some("1".into()),
            error: None,
        },
        CommandRun {
            command: "dumpsys activity".into(),
            outcome: CommandOutcome::TimedOut,
            output: None,
            error: Some("no answer within 2000 ms".into()),
        },
    ];
    let mut with = server_incident("p-1", "19:00:00");
    with.diagnostics = Diagnostics(runs.clone());
    let without = server_incident("p-2", "19:00:00");

    let kept = store.start_recovery(&with).await.unwrap();
    let none = store.start_recovery(&without).await.unwrap();

    let read = store.recovery(kept.id).await.unwrap().expect("it is there");
    assert_eq!(read.diagnostics, Diagnostics(runs));
    assert_eq!(kept.diagnostics, read.diagnostics);
    let read = store.recovery(none.id).await.unwrap().expect("it is there");
    assert_eq!(read.diagnostics, Diagnostics::default());
    assert!(store.recovery(none.id + 100).await.unwrap().is_none());
}
