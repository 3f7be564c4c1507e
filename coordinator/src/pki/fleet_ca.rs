//! The fleet CA as `troop serve` holds it to enrol and renew agents: the CA key stays on
//! the serve host, and an agent's own key never leaves its host; serve signs only the
//! public key of the agent's certificate signing request, under a name serve decided.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    CertificateSigningRequestParams, ExtendedKeyUsagePurpose, Issuer, KeyPair, SanType,
    SerialNumber,
};
use rustls::RootCertStore;
use rustls_pki_types::CertificateSigningRequestDer;
use sha2::{Digest, Sha256};

use super::{
    PkiError, ca_params, ca_roots, leaf_params, random_serial_bytes, read_ca_cert, read_to_string,
    set_validity, spki_matches, verify_agent_cert,
};

/// The shortest and longest agent certificate lifetime serve issues.
pub const MIN_LIFETIME: Duration = Duration::from_secs(60);
pub const MAX_LIFETIME: Duration = Duration::from_secs(super::LEAF_VALIDITY_DAYS * 86_400);
/// A certificate signing request is a few hundred bytes; more is not parsed.
const MAX_CSR_BYTES: usize = 16 * 1024;

/// The fleet CA's certificate and key, checked to belong together.
pub struct FleetCa {
    pub(super) cert_path: PathBuf,
    pub(super) roots: RootCertStore,
    key: KeyPair,
    cert_pem: String,
    cert_der: Vec<u8>,
}

/// A certificate serve issued.
#[derive(Debug, Clone)]
pub struct Issued {
    pub pem: String,
    /// The serial number, lower-case hex of its DER content.
    pub serial: String,
    pub not_after_unix_ms: i64,
}

impl FleetCa {
    /// Loads `cert` and `key`; refuses a key that is not the certificate's.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, PkiError> {
        troop_common::tls::check_key_mode(key)?;
        let der = read_ca_cert(cert)?;
        let key_pem = read_to_string(key)?;
        let key_pair = KeyPair::from_pem(&key_pem).map_err(|e| PkiError::Malformed {
            path: key.to_owned(),
            reason: format!("not a PKCS#8 PEM private key ({e})"),
        })?;
        let roots = ca_roots(cert, &der)?;
        // A mismatched pair would sign certificates nobody can verify; say so plainly.
        if !spki_matches(&roots, &key_pair) {
            return Err(PkiError::CaKeyMismatch {
                cert: cert.to_owned(),
                key: key.to_owned(),
            });
        }
        Ok(Self {
            cert_path: cert.to_owned(),
            roots,
            key: key_pair,
            cert_pem: read_to_string(cert)?,
            cert_der: der.to_vec(),
        })
    }

    /// The CA certificate, PEM, as an enrolling agent writes it to `ca.pem`.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// SHA-256 of the CA certificate's DER, lower-case hex: what `--ca-sha256` pins.
    pub fn sha256_hex(&self) -> String {
        hex::encode(Sha256::digest(&self.cert_der))
    }

    pub(super) fn issuer(&self) -> Result<Issuer<'_, &KeyPair>, PkiError> {
        // rcgen cannot parse ca.pem without x509-parser's full chain support, so rebuild
        // the issuer from the parameters `init` used; each issued certificate is verified.
        Ok(Issuer::new(ca_params()?, &self.key))
    }

    /// Signs the public key of `csr_der` into an agent certificate for `name`, valid for
    /// `lifetime`. The request must be signed by its key and name `name` or nobody;
    /// everything in the certificate but the public key is serve's choice.
    pub fn sign_agent_csr(
        &self,
        name: &str,
        csr_der: &[u8],
        lifetime: Duration,
    ) -> Result<Issued, PkiError> {
        super::validate_agent_name(name)?;
        if !(MIN_LIFETIME..=MAX_LIFETIME).contains(&lifetime) {
            return Err(PkiError::Csr {
                reason: format!(
                    "a lifetime of {}s is outside {}s to {}s",
                    lifetime.as_secs(),
                    MIN_LIFETIME.as_secs(),
                    MAX_LIFETIME.as_secs()
                ),
            });
        }
        if csr_der.len() > MAX_CSR_BYTES {
            return Err(PkiError::Csr {
                reason: format!("it is {} bytes; at most {MAX_CSR_BYTES}", csr_der.len()),
            });
        }
        let der = CertificateSigningRequestDer::from(csr_der);
        let request =
            CertificateSigningRequestParams::from_der(&der).map_err(|error| PkiError::Csr {
                reason: format!("not a signed PKCS#10 request ({error})"),
            })?;
        check_names(&request, name)?;
        let serial = random_serial_bytes()?;
        let mut params = leaf_params(name, &[], vec![ExtendedKeyUsagePurpose::ServerAuth])?;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        set_validity(&mut params, lifetime);
        let not_after_unix_ms = params.not_after.unix_timestamp() * 1000;
        let signed = CertificateSigningRequestParams {
            params,
            public_key: request.public_key,
        }
        .signed_by(&self.issuer()?)
        .map_err(super::generate_err("the agent certificate"))?;
        verify_agent_cert(self.roots.clone(), signed.der(), name).map_err(|source| {
            PkiError::Verify {
                name: name.to_owned(),
                ca: self.cert_path.clone(),
                source,
            }
        })?;
        Ok(Issued {
            pem: signed.pem(),
            serial: hex::encode(serial),
            not_after_unix_ms,
        })
    }
}

/// The request names `name` (common name or DNS name) and no one else, or nobody (the
/// host did not know the id its token binds).
fn check_names(request: &CertificateSigningRequestParams, name: &str) -> Result<(), PkiError> {
    let mut named = Vec::new();
    for (_, value) in request.params.distinguished_name.iter() {
        named.push(dn_text(value));
    }
    for san in &request.params.subject_alt_names {
        named.push(match san {
            SanType::DnsName(dns) => dns.as_str().to_string(),
            other => format!("{other:?}"),
        });
    }
    if let Some(other) = named.iter().find(|n| !n.eq_ignore_ascii_case(name)) {
        return Err(PkiError::Csr {
            reason: format!("it names {other:?}, but this enrolment is for {name:?}"),
        });
    }
    Ok(())
}

fn dn_text(value: &rcgen::DnValue) -> String {
    match value {
        rcgen::DnValue::PrintableString(text) => text.as_str().to_string(),
        rcgen::DnValue::Utf8String(text) => text.clone(),
        rcgen::DnValue::Ia5String(text) => text.as_str().to_string(),
        other => format!("{other:?}"),
    }
}
