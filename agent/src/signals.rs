//! Signals: none that can end the agent may leave a fault behind. SIGHUP (which an agent
//! started from an ssh session gets when the session ends) reloads; every other signal
//! whose default would end the process is caught, and the agent reverts every fault and
//! exits cleanly. Only SIGKILL cannot be caught: the next start undoes what it leaves.

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

/// Signals that end the agent after it reverted everything, by name.
const STOPPING: &[(libc::c_int, &str)] = &[
    (libc::SIGTERM, "SIGTERM"),
    (libc::SIGINT, "SIGINT"),
    (libc::SIGQUIT, "SIGQUIT"),
    (libc::SIGUSR1, "SIGUSR1"),
    (libc::SIGUSR2, "SIGUSR2"),
    (libc::SIGALRM, "SIGALRM"),
    (libc::SIGVTALRM, "SIGVTALRM"),
    (libc::SIGPROF, "SIGPROF"),
    (libc::SIGIO, "SIGIO"),
    (libc::SIGPWR, "SIGPWR"),
    (libc::SIGXCPU, "SIGXCPU"),
    (libc::SIGXFSZ, "SIGXFSZ"),
    (libc::SIGSTKFLT, "SIGSTKFLT"),
];

/// Resolves once a stopping signal arrives (its name is logged); calls `on_hangup` for
/// every SIGHUP meanwhile.
pub async fn until_stopped(mut on_hangup: impl FnMut()) {
    let (sender, mut received) = mpsc::channel::<&'static str>(8);
    for &(number, name) in STOPPING.iter().chain([(libc::SIGHUP, "SIGHUP")].iter()) {
        let mut stream = match signal(SignalKind::from_raw(number)) {
            Ok(stream) => stream,
            Err(error) => {
                tracing::error!(signal = name, %error, "cannot catch this signal");
                continue;
            }
        };
        let sender = sender.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                if sender.send(name).await.is_err() {
                    return;
                }
            }
        });
    }
    drop(sender);
    while let Some(name) = received.recv().await {
        if name == "SIGHUP" {
            tracing::info!("SIGHUP: reloading the config");
            on_hangup();
        } else {
            tracing::info!(signal = name, "stopping: reverting every fault first");
            return;
        }
    }
}
