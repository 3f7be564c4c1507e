//! TLS material as troop keeps it: PEM files, keys only their owner may read, the
//! fleet CA as the one root, and rustls with the ring provider and TLS 1.3 only.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} from {path}")]
    Read {
        what: &'static str,
        path: String,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("{path} holds no certificate")]
    Empty { path: String },
    #[error(transparent)]
    KeyMode(#[from] ExposedKey),
    #[error("TLS configuration rejected")]
    Rustls(#[from] rustls::Error),
    #[error("client certificate verifier")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Read {
            what: "certificates",
            path: path.display().to_string(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            path: path.display().to_string(),
        });
    }
    Ok(certs)
}

/// A private key file that others than its owner may read.
#[derive(Debug, thiserror::Error)]
#[error(
    "private key {} is readable by group or others (mode {mode:04o}); `chmod 600` it",
    path.display()
)]
pub struct ExposedKey {
    pub path: PathBuf,
    pub mode: u32,
}

/// Refuses a private key file with any group or other permission bits. A file that
/// cannot be inspected is left to the read that follows, which names the problem.
pub fn check_key_mode(path: &Path) -> Result<(), ExposedKey> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Ok(metadata) if metadata.permissions().mode() & 0o077 != 0 => Err(ExposedKey {
            path: path.to_path_buf(),
            mode: metadata.permissions().mode() & 0o7777,
        }),
        _ => Ok(()),
    }
}

pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    check_key_mode(path)?;
    PrivateKeyDer::from_pem_file(path).map_err(|source| TlsError::Read {
        what: "a private key",
        path: path.display().to_string(),
        source,
    })
}

pub fn root_store(ca: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs(ca)? {
        roots.add(cert)?;
    }
    Ok(roots)
}

/// A mutual-TLS client config: `cert` and `key` as this side's identity, servers checked
/// against the CA in `ca` alone, TLS 1.3, HTTP/2 offered (gRPC).
pub fn client_config(cert: &Path, key: &Path, ca: &Path) -> Result<ClientConfig, TlsError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(root_store(ca)?)
        .with_client_auth_cert(load_certs(cert)?, load_key(key)?)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_others_can_read_is_refused_naming_the_file_and_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("web-1.key");
        std::fs::write(&key, "not read").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = load_key(&key).unwrap_err().to_string();
        assert!(
            error.contains("web-1.key") && error.contains("0644"),
            "{error}"
        );
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(check_key_mode(&key).is_err());
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(check_key_mode(&key).is_ok());
    }
}
