//! Certificates renewed over the stream: an attached agent sends a request for a key it
//! just made, and serve signs it for the id the stream proved, records the serial, and
//! answers on the same stream. The stream stays up; the agent uses the new certificate
//! from its next connection (and at once on its own listener).

use std::sync::Arc;
use std::time::{Duration, Instant};

use troop_proto::serve_pb::{self, serve_message};

use super::Enrolment;
use super::certificate::CertInfo;
use crate::live::Link;

/// One agent renews at most this often; a renewal loop cannot make serve sign on and on.
pub const MIN_INTERVAL: Duration = Duration::from_secs(10);

/// One stream's renewals.
pub struct Renewals {
    enrolment: Enrolment,
    last: Option<Instant>,
}

impl Renewals {
    pub fn new(enrolment: Enrolment) -> Self {
        Self {
            enrolment,
            last: None,
        }
    }

    /// Answers `request` on `link`'s stream (signing off the async threads); audited.
    pub async fn answer(&mut self, link: &Arc<Link>, request: serve_pb::RenewCertificate) {
        let now = Instant::now();
        let result = match self.last {
            Some(last) if now.duration_since(last) < MIN_INTERVAL => Err(format!(
                "renewed less than {}s ago; try again later",
                MIN_INTERVAL.as_secs()
            )),
            _ => {
                self.last = Some(now);
                let enrolment = self.enrolment.clone();
                let id = link.id.clone();
                tokio::task::spawn_blocking(move || sign(&enrolment, &id, &request.csr_der))
                    .await
                    .unwrap_or_else(|_| Err("the renewal task failed".into()))
            }
        };
        let renewed = match result {
            Ok((pem, info)) => {
                tracing::info!(agent = %link.id, serial = %info.serial, "renewed an agent's certificate");
                self.enrolment
                    .store
                    .record_call(&link.id, "renew certificate", None);
                let not_after_unix_ms = info.not_after_unix_ms;
                link.renewed(info);
                serve_pb::Renewed {
                    certificate_pem: pem,
                    not_after_unix_ms,
                    refused: String::new(),
                }
            }
            Err(reason) => {
                tracing::warn!(agent = %link.id, %reason, "refused to renew an agent's certificate");
                self.enrolment
                    .store
                    .record_call(&link.id, "renew certificate", Some(&reason));
                serve_pb::Renewed {
                    refused: reason,
                    ..Default::default()
                }
            }
        };
        link.tell(serve_pb::ServeMessage {
            body: Some(serve_message::Body::Renewed(renewed)),
        });
    }
}

fn sign(enrolment: &Enrolment, id: &str, csr_der: &[u8]) -> Result<(String, CertInfo), String> {
    let ca = enrolment.ca.as_ref().ok_or(
        "this troop serve renews no certificates: its [serve] ca_key is not set; \
         issue a new one with `troop pki issue-agent` before this one expires",
    )?;
    let issued = ca
        .sign_agent_csr(id, csr_der, enrolment.lifetime)
        .map_err(|e| troop_telemetry::error_chain(&e))?;
    enrolment
        .store
        .record_certificate(&issued.serial, id, issued.not_after_unix_ms)
        .map_err(|e| format!("audit store: {e}"))?;
    let info = CertInfo {
        serial: issued.serial,
        not_after_unix_ms: issued.not_after_unix_ms,
    };
    Ok((issued.pem, info))
}
