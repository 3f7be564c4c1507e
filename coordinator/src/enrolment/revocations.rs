//! Revoked names, as serve enforces them: a certificate for a revoked agent or operator is
//! refused unless serve issued it after the revocation (a re-enrolment). Each replica
//! rereads the store every [`REFRESH_EVERY`] and cuts off streams that became revoked, so
//! `troop pki revoke` takes effect within a second everywhere, with no CRL to distribute.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::certificate::CertInfo;
use crate::live::Registry;
use crate::store::{Revocation, Store};

pub const REFRESH_EVERY: Duration = Duration::from_millis(500);

/// The revocations last read from the store, by lower-case name.
#[derive(Default)]
pub struct Revocations {
    revoked: RwLock<HashMap<String, Revocation>>,
}

impl Revocations {
    /// Why a certificate naming `names` (with `cert`'s serial) is refused, if it is.
    pub fn refusal(&self, names: &[String], cert: Option<&CertInfo>) -> Option<String> {
        let revoked = self.revoked.read().unwrap_or_else(|e| e.into_inner());
        names.iter().find_map(|name| {
            let revocation = revoked.get(&name.to_ascii_lowercase())?;
            let reissued = cert.is_some_and(|cert| revocation.reissued.contains(&cert.serial));
            (!reissued).then(|| {
                format!(
                    "the certificate for {name:?} was revoked at {} (`troop pki revoke`); enrol again with a new join token",
                    crate::describe::unix_ms_text(revocation.revoked_at_ms)
                )
            })
        })
    }

    /// Replaces what is known with `list` (the store's whole list).
    pub fn replace(&self, list: Vec<Revocation>) {
        let by_name = list
            .into_iter()
            .map(|revocation| (revocation.name.to_ascii_lowercase(), revocation))
            .collect();
        *self.revoked.write().unwrap_or_else(|e| e.into_inner()) = by_name;
    }

    /// Until serve stops: rereads the store and ends the streams of revoked agents.
    pub async fn keep_current(self: Arc<Self>, store: Arc<Store>, registry: Arc<Registry>) {
        let mut every = tokio::time::interval(REFRESH_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let store = store.clone();
            match tokio::task::spawn_blocking(move || store.revocations()).await {
                Ok(Ok(list)) => self.replace(list),
                // Keep enforcing what was last known.
                Ok(Err(error)) => tracing::warn!(%error, "audit store: cannot read revocations"),
                Err(_) => continue,
            }
            for (id, reason) in registry.cut_off(|link| {
                self.refusal(std::slice::from_ref(&link.id), link.certificate().as_ref())
            }) {
                tracing::warn!(agent = %id, %reason, "cut off a revoked agent's stream");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revoked(name: &str, reissued: &[&str]) -> Revocation {
        Revocation {
            name: name.into(),
            revoked_at_ms: 1_700_000_000_000,
            reissued: reissued.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn cert(serial: &str) -> CertInfo {
        CertInfo {
            serial: serial.into(),
            not_after_unix_ms: 0,
        }
    }

    #[test]
    fn a_revoked_name_is_refused_unless_its_certificate_came_after() {
        let revocations = Revocations::default();
        revocations.replace(vec![revoked("Web-1", &["bb"])]);
        let names = |n: &str| vec![n.to_string()];
        let refusal = revocations
            .refusal(&names("web-1"), Some(&cert("aa")))
            .unwrap();
        assert!(refusal.contains("\"web-1\" was revoked at"), "{refusal}");
        assert!(revocations.refusal(&names("web-1"), None).is_some());
        assert!(
            revocations
                .refusal(&names("web-1"), Some(&cert("bb")))
                .is_none(),
            "re-enrolled after the revocation"
        );
        assert!(
            revocations
                .refusal(&names("web-2"), Some(&cert("aa")))
                .is_none()
        );
        revocations.replace(Vec::new());
        assert!(revocations.refusal(&names("web-1"), None).is_none());
    }
}
