//! Whose a fleet certificate is. The fleet CA issues three kinds, told apart by their
//! extended key usage and name: an agent's (server auth, naming the agent id), the
//! coordinator's (client and server auth, naming [`COORDINATOR_NAME`]) and an operator's
//! (client auth, naming the operator). `troop serve` accepts all three on one port and
//! asks [`FleetVerifier::identify`] who called; agents accept only the coordinator.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::DistinguishedName;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};
use webpki::{EndEntityCert, KeyUsage};

use crate::tls::{TlsError, load_certs, provider};

/// The name in the coordinator's certificate (and only there): agents check that a
/// caller, and a `troop serve` they dial, present it, whatever address was dialled.
pub const COORDINATOR_NAME: &str = "troop-coordinator";

/// id-kp-serverAuth and id-kp-clientAuth (RFC 5280), as DER object identifier bytes.
const SERVER_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];
const CLIENT_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];

/// Who presented a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// An agent; the names its certificate holds (its id, and any `--san`).
    Agent(Vec<String>),
    /// The coordinator's own certificate (another `troop serve`, or a CLI without
    /// `[coordinator]`).
    Coordinator,
    /// An operator's client certificate, by the name it holds.
    Operator(String),
}

impl Identity {
    /// Whether an agent certificate names `id`.
    pub fn is_agent(&self, id: &str) -> bool {
        matches!(self, Identity::Agent(names) if names.iter().any(|name| name.eq_ignore_ascii_case(id)))
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Agent(names) => write!(f, "agent certificate for {}", names.join(", ")),
            Identity::Coordinator => write!(f, "the coordinator's certificate"),
            Identity::Operator(name) => write!(f, "operator certificate for {name:?}"),
        }
    }
}

/// Does a verified leaf name `name` (a DNS name)?
pub fn names(leaf: &CertificateDer<'_>, name: &str) -> bool {
    let Ok(server_name) = ServerName::try_from(name) else {
        return false;
    };
    EndEntityCert::try_from(leaf)
        .is_ok_and(|cert| cert.verify_is_valid_for_subject_name(&server_name).is_ok())
}

/// Client certificates of the fleet CA for either usage: `troop serve` takes agents'
/// streams (server-auth certificates) and operators' calls (client-auth) on one port.
#[derive(Debug)]
pub struct FleetVerifier {
    /// Whether a client may come without a certificate (to enrol, and nothing else).
    anonymous: bool,
    anchors: Vec<TrustAnchor<'static>>,
    subjects: Vec<DistinguishedName>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl FleetVerifier {
    pub fn new(ca: &Path) -> Result<Self, TlsError> {
        let mut anchors = Vec::new();
        let mut subjects = Vec::new();
        for cert in load_certs(ca)? {
            let anchor = webpki::anchor_from_trusted_cert(&cert)
                .map_err(|error| {
                    TlsError::Rustls(rustls::Error::General(format!("{}: {error}", ca.display())))
                })?
                .to_owned();
            subjects.push(DistinguishedName::from(anchor.subject.to_vec()));
            anchors.push(anchor);
        }
        Ok(Self {
            anonymous: false,
            anchors,
            subjects,
            provider: provider(),
        })
    }

    /// Also lets clients without a certificate finish the handshake: serve's enrolment
    /// takes them, and every other call refuses them ("no client certificate").
    pub fn allowing_anonymous(mut self) -> Self {
        self.anonymous = true;
        self
    }

    fn chain_for(
        &self,
        leaf: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        usage: &'static [u8],
    ) -> Result<(), rustls::Error> {
        let cert = EndEntityCert::try_from(leaf)
            .map_err(|error| rustls::Error::General(format!("bad certificate: {error}")))?;
        cert.verify_for_usage(
            self.provider.signature_verification_algorithms.all,
            &self.anchors,
            intermediates,
            now,
            KeyUsage::required(usage),
            None,
            None,
        )
        .map(|_| ())
        .map_err(|error| rustls::Error::General(format!("certificate not accepted: {error}")))
    }

    /// Who a leaf (already verified in the handshake) belongs to.
    pub fn identify(&self, leaf: &CertificateDer<'_>) -> Result<Identity, String> {
        let now = UnixTime::now();
        if self.chain_for(leaf, &[], now, CLIENT_AUTH).is_ok() {
            if names(leaf, COORDINATOR_NAME) {
                return Ok(Identity::Coordinator);
            }
            let cert = EndEntityCert::try_from(leaf).map_err(|error| error.to_string())?;
            let name = cert
                .valid_dns_names()
                .next()
                .ok_or("client certificate names nobody")?;
            return Ok(Identity::Operator(name.to_string()));
        }
        self.chain_for(leaf, &[], now, SERVER_AUTH)
            .map_err(|error| error.to_string())?;
        let cert = EndEntityCert::try_from(leaf).map_err(|error| error.to_string())?;
        Ok(Identity::Agent(
            cert.valid_dns_names().map(str::to_string).collect(),
        ))
    }
}

impl ClientCertVerifier for FleetVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.subjects
    }

    fn client_auth_mandatory(&self) -> bool {
        !self.anonymous
    }

    fn verify_client_cert(
        &self,
        leaf: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.chain_for(leaf, intermediates, now, CLIENT_AUTH)
            .or_else(|_| self.chain_for(leaf, intermediates, now, SERVER_AUTH))
            .map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // The server configs offer TLS 1.3 only.
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
