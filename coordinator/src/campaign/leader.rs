//! Leadership among `troop serve` replicas that share one store: each keeps claiming the
//! store's lease (see `store::Lease`) and fires schedules only while it holds it. The
//! lease is renewed every third of its length, so two missed renewals in a row (a slow
//! database, a short partition) still leave it held.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::scheduler::close_stale_runs;
use crate::store::{Lease, Store};

/// This replica's name when the config gives none: the host and the process, so two
/// replicas on one host (tests, a rolling restart) differ.
pub fn default_replica_name() -> String {
    format!("{}:{}", host_name(), std::process::id())
}

/// Where the other replicas reach this one when the config does not say: this host's
/// name and the port serve listens on.
pub fn default_advertise(listen_port: u16) -> String {
    format!("{}:{listen_port}", host_name())
}

fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|name| name.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

/// Claims the lease for `replica` until `held` has no receivers left, publishing the lease
/// this replica holds (`None` while another leads or the store cannot be reached); receivers
/// are woken when the epoch changes. At each claim the leader closes the runs that earlier
/// leaders, and replicas that died, left running.
pub async fn keep_claiming(
    store: Arc<Store>,
    replica: String,
    length: Duration,
    held: watch::Sender<Option<Lease>>,
) {
    let renew_every = length / 3;
    let mut last_epoch = None;
    loop {
        let claim = {
            let (store, replica) = (store.clone(), replica.clone());
            tokio::task::spawn_blocking(move || store.claim_lease(&replica, length)).await
        };
        let lease = match claim {
            Ok(Ok(lease)) => lease,
            Ok(Err(error)) => {
                // Not knowing is not leading: stop firing until a claim succeeds again.
                tracing::warn!(%error, "cannot claim the schedule lease; not firing schedules");
                None
            }
            Err(error) => {
                tracing::error!(%error, "the lease claim panicked; not firing schedules");
                None
            }
        };
        match &lease {
            Some(lease) => {
                if last_epoch != Some(lease.epoch) {
                    tracing::info!(
                        replica,
                        epoch = lease.epoch,
                        "leading: this replica fires the schedules"
                    );
                    last_epoch = Some(lease.epoch);
                }
                let (store, lease) = (store.clone(), lease.clone());
                let closed =
                    tokio::task::spawn_blocking(move || close_stale_runs(&store, Some(&lease)))
                        .await;
                if let Ok(Err(error)) = closed {
                    tracing::warn!(%error, "cannot close the runs dead replicas left running");
                }
            }
            None if last_epoch.is_some() => {
                tracing::warn!(
                    replica,
                    "not leading any more: another replica fires the schedules"
                );
                last_epoch = None;
            }
            _ => {}
        }
        // Receivers hear of a change of leadership, not of every renewal.
        held.send_if_modified(|current| {
            let changed = current.as_ref().map(|l| l.epoch) != lease.as_ref().map(|l| l.epoch);
            *current = lease;
            changed
        });
        if held.is_closed() {
            return;
        }
        tokio::time::sleep(renew_every).await;
    }
}

/// Hands the lease over at once (a clean stop), so another replica need not wait it out.
pub fn release(store: &Store, held: &watch::Receiver<Option<Lease>>) {
    if let Some(lease) = held.borrow().clone()
        && let Err(error) = store.release_lease(&lease)
    {
        tracing::warn!(%error, "cannot release the schedule lease; it runs out by itself");
    }
}
