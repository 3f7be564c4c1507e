//! The agent's own certificate and key, swappable while it runs: its listener and its
//! streams to serve ask for them at each handshake, so a renewal over the stream or a
//! SIGHUP after a certificate was replaced takes effect without a restart, and without
//! touching active faults or open connections.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{SignatureScheme, crypto::CryptoProvider};
use rustls_pki_types::CertificateDer;
use troop_common::tls::{TlsError, load_certs, load_key};
use x509_parser::prelude::{FromDer, X509Certificate};

/// The certificate at `cert` with the key at `key`, as last loaded or installed.
#[derive(Debug)]
pub struct TlsIdentity {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

/// A certificate's validity and serial, for renewal timing and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validity {
    pub not_before_unix_ms: i64,
    pub not_after_unix_ms: i64,
    /// Lower-case hex of the serial's DER content, as serve records it.
    pub serial: String,
}

impl Validity {
    pub fn read(der: &[u8]) -> Option<Self> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        Some(Self {
            not_before_unix_ms: cert.validity().not_before.timestamp().saturating_mul(1000),
            not_after_unix_ms: cert.validity().not_after.timestamp().saturating_mul(1000),
            serial: hex::encode(cert.tbs_certificate.raw_serial()),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("the new key and certificate do not fit together")]
    Mismatch(#[source] rustls::Error),
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
}

impl TlsIdentity {
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let provider = troop_common::tls::provider();
        let current = certified(load_certs(cert)?, load_key(key)?, &provider)?;
        observe(&current);
        Ok(Self {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            provider,
            current: RwLock::new(current),
        })
    }

    /// Reads both files again (SIGHUP); on any problem the identity in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let next = certified(
            load_certs(&self.cert)?,
            load_key(&self.key)?,
            &self.provider,
        )?;
        self.replace(next);
        Ok(())
    }

    /// The certificate in use.
    pub fn validity(&self) -> Option<Validity> {
        Validity::read(&self.current().cert[0])
    }

    /// Writes a renewed key and certificate over the files (each to a temporary file,
    /// synced, then renamed: a crash leaves the old pair or the new one, never half),
    /// then uses them for every handshake from now on.
    pub fn install(&self, key_pem: &str, cert_pem: &str) -> Result<(), InstallError> {
        use rustls_pki_types::PrivateKeyDer;
        use rustls_pki_types::pem::PemObject;
        let chain = vec![
            CertificateDer::from_pem_slice(cert_pem.as_bytes())
                .map_err(|e| InstallError::Mismatch(rustls::Error::General(e.to_string())))?,
        ];
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| InstallError::Mismatch(rustls::Error::General(e.to_string())))?;
        let next = certified(chain, key, &self.provider).map_err(|e| match e {
            TlsError::Rustls(e) => InstallError::Mismatch(e),
            other => InstallError::Tls(other),
        })?;
        // The key first: a certificate on disk whose key is not is the worse half.
        replace_file(&self.key, key_pem.as_bytes(), 0o600)?;
        replace_file(&self.cert, cert_pem.as_bytes(), 0o644)?;
        self.replace(next);
        Ok(())
    }

    /// Every handshake from now on uses `next`; the metrics show its expiry.
    fn replace(&self, next: Arc<CertifiedKey>) {
        observe(&next);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = next;
    }

    fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A certificate signing request for `key`, naming `id` (or nobody, when a join token is
/// to say which id): what enrolment and renewal send serve.
pub fn csr(id: Option<&str>, key: &rcgen::KeyPair) -> Result<Vec<u8>, rcgen::Error> {
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    if let Some(id) = id {
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, id);
    }
    Ok(params.serialize_request(key)?.der().to_vec())
}

/// Shows the certificate now in use in the metrics.
fn observe(certified: &CertifiedKey) {
    if let Some(validity) = Validity::read(&certified.cert[0]) {
        crate::metrics::get()
            .certificate_expiry
            .set(validity.not_after_unix_ms / 1000);
    }
}

fn certified(
    chain: Vec<CertificateDer<'static>>,
    key: rustls_pki_types::PrivateKeyDer<'static>,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let certified = CertifiedKey::from_der(chain, key, provider)?;
    Ok(Arc::new(certified))
}

fn replace_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), InstallError> {
    crate::state_file::write_atomic_mode(path, contents, mode).map_err(|source| {
        InstallError::Write {
            path: path.to_path_buf(),
            source,
        }
    })
}

impl ResolvesServerCert for TlsIdentity {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ResolvesClientCert for TlsIdentity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256};
    use std::fs;

    fn pair(name: &str) -> (String, String) {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (key.serialize_pem(), cert.pem())
    }

    /// An identity loaded from a fresh pair in `dir`: (identity, cert path, key path,
    /// key PEM, cert PEM).
    fn loaded(dir: &Path) -> (TlsIdentity, PathBuf, PathBuf, String, String) {
        let (cert, key) = (dir.join("a.pem"), dir.join("a.key"));
        let (key_pem, cert_pem) = pair("a");
        fs::write(&cert, &cert_pem).unwrap();
        replace_file(&key, key_pem.as_bytes(), 0o600).unwrap();
        let identity = TlsIdentity::load(&cert, &key).unwrap();
        (identity, cert, key, key_pem, cert_pem)
    }

    #[test]
    fn an_installed_pair_replaces_the_files_and_the_one_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let (identity, cert, key, _, _) = loaded(dir.path());
        let before = identity.validity().unwrap();

        let (new_key, new_cert) = pair("a");
        identity.install(&new_key, &new_cert).unwrap();
        let after = identity.validity().unwrap();
        assert_ne!(before.serial, after.serial);
        assert_eq!(fs::read_to_string(&cert).unwrap(), new_cert);
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        identity.reload().unwrap();
        assert_eq!(identity.validity().unwrap().serial, after.serial);
    }

    #[test]
    fn a_key_that_is_not_the_certificates_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (identity, cert, key, key_pem, cert_pem) = loaded(dir.path());
        let (other_key, _) = pair("a");
        let (_, new_cert) = pair("a");
        let error = identity.install(&other_key, &new_cert).unwrap_err();
        assert!(matches!(error, InstallError::Mismatch(_)), "{error}");
        assert_eq!(fs::read_to_string(&cert).unwrap(), cert_pem);
        assert_eq!(fs::read_to_string(&key).unwrap(), key_pem);
    }
}
