//! Renewing the agent's certificate over its stream, before it expires: past half its
//! lifetime (plus jitter, so a fleet enrolled at once does not renew at once) the agent
//! makes a new key, sends serve a request for it, checks what comes back (under the
//! fleet CA, naming this agent, for this key) and installs it. A refusal or a lost answer
//! is retried; the old certificate serves meanwhile.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use rcgen::KeyPair;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::time::Instant;
use troop_proto::serve_pb;

use crate::identity::{TlsIdentity, Validity};

/// Retried this soon after a refusal or an unanswered request (sooner near expiry).
const RETRY: Duration = Duration::from_secs(60);
const MIN_RETRY: Duration = Duration::from_secs(10);

pub struct Renewal {
    identity: Arc<TlsIdentity>,
    /// The fleet CA a renewed certificate must chain to.
    ca: PathBuf,
    id: String,
    /// The key made for the request in flight.
    pending: Option<KeyPair>,
    next: Instant,
}

impl Renewal {
    pub fn new(identity: Arc<TlsIdentity>, ca: PathBuf, id: String) -> Self {
        let mut renewal = Self {
            identity,
            ca,
            id,
            pending: None,
            next: Instant::now(),
        };
        renewal.schedule();
        renewal
    }

    /// When to ask next.
    pub fn due(&self) -> Instant {
        self.next
    }

    /// A request for a new key (kept until serve answers); `None` if none could be made.
    pub fn request(&mut self) -> Option<serve_pb::RenewCertificate> {
        self.next = Instant::now() + self.retry();
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .inspect_err(
                |error| tracing::error!(%error, "cannot make a key to renew the certificate"),
            )
            .ok()?;
        let csr_der = crate::identity::csr(Some(&self.id), &key)
            .inspect_err(|error| tracing::error!(%error, "cannot make a renewal request"))
            .ok()?;
        tracing::info!(
            expires = %self.expiry_text(),
            "asking the coordinator to renew this agent's certificate"
        );
        self.pending = Some(key);
        Some(serve_pb::RenewCertificate { csr_der })
    }

    /// Serve's answer: installed if it holds together, else retried later.
    pub fn answered(&mut self, renewed: serve_pb::Renewed) {
        let Some(key) = self.pending.take() else {
            tracing::warn!("ignored a renewed certificate nobody asked for");
            return;
        };
        if !renewed.refused.is_empty() {
            crate::metrics::get().renewal("refused");
            tracing::warn!(reason = %renewed.refused, retry_in_s = self.retry().as_secs(), "the coordinator refused to renew this agent's certificate");
            return;
        }
        match self.install(&key, &renewed.certificate_pem) {
            Ok(validity) => {
                crate::metrics::get().renewal("renewed");
                tracing::info!(
                    serial = %validity.serial,
                    expires = %troop_common::clock::utc(validity.not_after_unix_ms),
                    "renewed this agent's certificate; new connections use it"
                );
                self.schedule();
            }
            Err(reason) => {
                crate::metrics::get().renewal("rejected");
                tracing::error!(%reason, "refused the renewed certificate the coordinator sent");
            }
        }
    }

    fn install(&self, key: &KeyPair, cert_pem: &str) -> Result<Validity, String> {
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| format!("not a PEM certificate: {e}"))?;
        crate::tls::check_certificate_under(&self.ca, std::slice::from_ref(&cert), &self.id)
            .map_err(|problem| problem.to_string())?;
        let validity = Validity::read(&cert).ok_or("an unreadable certificate")?;
        self.identity
            .install(&key.serialize_pem(), cert_pem)
            .map_err(|e| troop_telemetry::error_chain(&e))?;
        Ok(validity)
    }

    /// Past half the certificate's life, plus up to a tenth of it at random.
    fn schedule(&mut self) {
        let now_ms = troop_common::clock::now_unix_ms();
        let wait = match self.identity.validity() {
            Some(validity) => renew_after(&validity, now_ms, rand::rng().random_range(0.0..0.1)),
            None => RETRY,
        };
        self.next = Instant::now() + wait;
    }

    /// Shorter near expiry, so a refused renewal is tried several times before the end.
    fn retry(&self) -> Duration {
        let left = self.identity.validity().map_or(RETRY, |v| {
            let ms = v.not_after_unix_ms - troop_common::clock::now_unix_ms();
            Duration::from_millis(u64::try_from(ms).unwrap_or(0))
        });
        (left / 10).clamp(MIN_RETRY, RETRY)
    }

    fn expiry_text(&self) -> String {
        self.identity.validity().map_or_else(
            || "?".into(),
            |v| troop_common::clock::utc(v.not_after_unix_ms),
        )
    }
}

/// How long from `now_ms` until a certificate of `validity` is due for renewal: at
/// `0.5 + jitter` of its lifetime; now if that has passed.
pub fn renew_after(validity: &Validity, now_ms: i64, jitter: f64) -> Duration {
    let lifetime = (validity.not_after_unix_ms - validity.not_before_unix_ms).max(0);
    let at = validity.not_before_unix_ms + (lifetime as f64 * (0.5 + jitter)) as i64;
    Duration::from_millis(u64::try_from(at - now_ms).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid(from: i64, to: i64) -> Validity {
        Validity {
            not_before_unix_ms: from,
            not_after_unix_ms: to,
            serial: "01".into(),
        }
    }

    #[test]
    fn renewal_falls_past_half_the_lifetime_spread_by_jitter() {
        let day = 86_400_000;
        let cert = valid(0, 30 * day);
        assert_eq!(
            renew_after(&cert, 0, 0.0),
            Duration::from_millis(15 * day as u64)
        );
        assert_eq!(
            renew_after(&cert, 0, 0.1),
            Duration::from_millis(18 * day as u64)
        );
        assert_eq!(
            renew_after(&cert, 10 * day, 0.0),
            Duration::from_millis(5 * day as u64)
        );
        assert_eq!(
            renew_after(&cert, 29 * day, 0.05),
            Duration::ZERO,
            "overdue: now"
        );
        assert_eq!(renew_after(&valid(5, 1), 0, 0.0), Duration::from_millis(5));
    }
}

/// What the agent does with serve's answer, on real certificates: only one that chains
/// to the fleet CA, names this agent and carries the key it made is installed.
#[cfg(test)]
mod answers {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, CertificateSigningRequestParams, IsCa, Issuer,
    };
    use rustls_pki_types::CertificateSigningRequestDer;

    struct Ca {
        params: CertificateParams,
        key: KeyPair,
    }

    impl Ca {
        fn new() -> Self {
            let mut params = CertificateParams::new(Vec::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            Self {
                params,
                key: KeyPair::generate().unwrap(),
            }
        }

        fn pem(&self) -> String {
            self.params.clone().self_signed(&self.key).unwrap().pem()
        }

        /// A certificate for `name` of the public key in `csr`.
        fn sign(&self, name: &str, csr: &[u8]) -> String {
            let request =
                CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr))
                    .unwrap();
            CertificateSigningRequestParams {
                params: CertificateParams::new(vec![name.to_string()]).unwrap(),
                public_key: request.public_key,
            }
            .signed_by(&Issuer::new(self.params.clone(), &self.key))
            .unwrap()
            .pem()
        }

        /// A certificate for `name` of a key of its own.
        fn issue(&self, name: &str) -> (String, String) {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(vec![name.to_string()])
                .unwrap()
                .signed_by(&key, &Issuer::new(self.params.clone(), &self.key))
                .unwrap();
            (key.serialize_pem(), cert.pem())
        }
    }

    fn renewed(certificate_pem: String) -> serve_pb::Renewed {
        serve_pb::Renewed {
            certificate_pem,
            ..Default::default()
        }
    }

    #[test]
    fn only_a_certificate_for_this_agent_and_its_new_key_is_installed() {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        let (ca, other_ca) = (Ca::new(), Ca::new());
        std::fs::write(path("ca.pem"), ca.pem()).unwrap();
        let (key_pem, cert_pem) = ca.issue("web-1");
        crate::state_file::write_atomic_mode(&path("web-1.key"), key_pem.as_bytes(), 0o600)
            .unwrap();
        std::fs::write(path("web-1.pem"), &cert_pem).unwrap();
        let identity = Arc::new(TlsIdentity::load(&path("web-1.pem"), &path("web-1.key")).unwrap());
        let first = identity.validity().unwrap().serial;
        let mut renewal = Renewal::new(identity.clone(), path("ca.pem"), "web-1".into());
        let unchanged = |renewal: &Renewal| {
            assert_eq!(renewal.identity.validity().unwrap().serial, first);
            assert_eq!(
                std::fs::read_to_string(path("web-1.pem")).unwrap(),
                cert_pem
            );
            assert_eq!(std::fs::read_to_string(path("web-1.key")).unwrap(), key_pem);
        };

        // Refused by serve, for another agent, under another CA, for another key, garbage.
        renewal.request().unwrap();
        renewal.answered(serve_pb::Renewed {
            refused: "no ca_key".into(),
            ..Default::default()
        });
        unchanged(&renewal);
        type Answer<'a> = &'a dyn Fn(&[u8]) -> String;
        let bad: [Answer; 4] = [
            &|csr| ca.sign("db-1", csr),
            &|csr| other_ca.sign("web-1", csr),
            &|_| ca.issue("web-1").1,
            &|_| "-----BEGIN CERTIFICATE-----\nnot one\n-----END CERTIFICATE-----\n".into(),
        ];
        for answer in bad {
            let request = renewal.request().unwrap();
            renewal.answered(renewed(answer(&request.csr_der)));
            unchanged(&renewal);
        }
        // An answer nobody asked for (the last request was answered).
        renewal.answered(renewed(ca.issue("web-1").1));
        unchanged(&renewal);

        // The real thing: the files and every later handshake change.
        let request = renewal.request().unwrap();
        let good = ca.sign("web-1", &request.csr_der);
        renewal.answered(renewed(good.clone()));
        assert_ne!(identity.validity().unwrap().serial, first);
        assert_eq!(std::fs::read_to_string(path("web-1.pem")).unwrap(), good);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path("web-1.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(
            renewal.due() > Instant::now(),
            "the next renewal is scheduled ahead"
        );
    }
}
