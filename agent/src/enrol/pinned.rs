//! Trust on first contact, made safe by a fingerprint: an enrolling host has no `ca.pem`
//! yet, so it accepts serve's certificate only if serve also shows a CA certificate whose
//! SHA-256 is the one the admin gave (`--ca-sha256`), and the certificate chains to it and
//! names the coordinator. An impostor with another CA fails here, before the token is sent.

use std::sync::{Arc, Mutex};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};

/// What the handshake showed, for a clear error after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Nothing,
    /// The pinned CA, as serve showed it.
    Pinned(CertificateDer<'static>),
    /// Serve showed no certificate with the pinned fingerprint; these are the ones it showed.
    OtherCa(Vec<String>),
}

#[derive(Debug)]
pub struct PinnedCa {
    pin: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
    seen: Mutex<Seen>,
}

pub fn sha256_hex(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

impl PinnedCa {
    /// `pin`: lower-case hex SHA-256 of the CA certificate's DER.
    pub fn new(pin: &str) -> Self {
        Self {
            pin: pin.to_ascii_lowercase(),
            provider: troop_common::tls::provider(),
            seen: Mutex::new(Seen::Nothing),
        }
    }

    pub fn seen(&self) -> Seen {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn saw(&self, seen: Seen) {
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = seen;
    }
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(ca) = intermediates.iter().find(|c| sha256_hex(c) == self.pin) else {
            let shown = std::iter::once(end_entity)
                .chain(intermediates)
                .map(|c| sha256_hex(c))
                .collect();
            self.saw(Seen::OtherCa(shown));
            return Err(rustls::Error::General(
                "no CA certificate with the pinned SHA-256".into(),
            ));
        };
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        let verified = verifier.verify_server_cert(end_entity, &[], server_name, ocsp, now)?;
        self.saw(Seen::Pinned(ca.clone().into_owned()));
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
