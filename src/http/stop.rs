//! When a server of cphub's stops: at the first SIGTERM or SIGINT (Ctrl-C).

use std::future::Future;

/// Completes at the first SIGTERM or SIGINT. The handlers are installed by this call, not
/// when the future is first polled: a signal that arrives in between must still count.
/// actix-web installs its own only when its server is first polled, after `serve` has logged
/// "cphub listening", and a SIGTERM sent in between met the default action: the process died
/// by the signal, without draining and without exit code 0
/// (`binary::a_sigterm_right_after_listening_stops_gracefully`). Create it once, before the
/// loop that waits for it: one made anew per turn would miss a signal between turns.
#[cfg(unix)]
pub fn stop_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received; stopping gracefully"),
            _ = int.recv() => tracing::info!("SIGINT received; stopping gracefully"),
        }
    })
}

/// Ctrl-C only, where there are no Unix signals.
#[cfg(not(unix))]
pub fn stop_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
