//! What serve reads from a certificate a peer proved: its serial (to check revocation)
//! and when it expires (shown by `troop agents`).

use x509_parser::prelude::{FromDer, X509Certificate};

/// A proven certificate's serial and expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Lower-case hex of the serial's DER content, as [`crate::pki::Issued`] has it.
    pub serial: String,
    pub not_after_unix_ms: i64,
}

impl CertInfo {
    /// Reads a DER certificate; `None` if it does not parse (the handshake verified it,
    /// so that cannot happen for a connected peer).
    pub fn read(der: &[u8]) -> Option<Self> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        Some(Self {
            serial: hex::encode(cert.tbs_certificate.raw_serial()),
            not_after_unix_ms: cert.validity().not_after.timestamp().saturating_mul(1000),
        })
    }
}
