//! Mutual TLS for the agent's listener: TLS 1.3 only, a client certificate chained to the
//! fleet CA and naming the coordinator required (never another agent's or an operator's),
//! handshakes bounded by [`troop_common::listener`].

use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ServerConfig};
use tokio::net::TcpListener;
use tokio_stream::wrappers::ReceiverStream;

use troop_common::identity::{COORDINATOR_NAME, names};
use troop_common::listener::{self, TlsConnection};
use troop_common::tls::{TlsError, load_certs, provider, root_store};

use crate::config::TlsPaths;
use crate::identity::TlsIdentity;

/// The agent's server config: its own certificate (as `identity` has it at each
/// handshake), clients must present one from the CA.
pub fn server_config(
    paths: &TlsPaths,
    identity: Arc<TlsIdentity>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(
        Arc::new(root_store(&paths.ca)?),
        provider.clone(),
    )
    .build()?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(identity);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The agent's client config for its streams to serve: its own certificate (as
/// `identity` has it at each handshake), serve's checked against the fleet CA alone.
pub fn client_config(
    paths: &TlsPaths,
    identity: Arc<TlsIdentity>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(root_store(&paths.ca)?)
        .with_client_cert_resolver(identity);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Checks the agent's own certificate the way a coordinator will: it chains to the
/// fleet CA (so `ca` is a CA, and the right one) and names `id`. Says what is wrong.
pub fn check_identity(paths: &TlsPaths, id: &str) -> Result<(), String> {
    let chain = load_certs(&paths.cert).map_err(|error| troop_telemetry::error_chain(&error))?;
    check_certificate_under(&paths.ca, &chain, id).map_err(|problem| match problem {
        Problem::OtherName => format!(
            "{} does not name this agent's id {id:?} (the coordinator would refuse it)",
            paths.cert.display()
        ),
        Problem::NotUnderCa(error) => format!(
            "{} is not accepted under the CA in {} ({error}); is `tls.ca` the fleet's CA certificate?",
            paths.cert.display(),
            paths.ca.display()
        ),
        Problem::Other(message) => message,
    })
}

/// Why a certificate would not do as this agent's.
#[derive(Debug)]
pub enum Problem {
    OtherName,
    NotUnderCa(rustls::Error),
    Other(String),
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::OtherName => f.write_str("it does not name this agent"),
            Problem::NotUnderCa(error) => {
                write!(f, "it is not accepted under the fleet CA ({error})")
            }
            Problem::Other(message) => f.write_str(message),
        }
    }
}

/// [`check_certificate`] under the CA certificate(s) in the file `ca`.
pub fn check_certificate_under(
    ca: &std::path::Path,
    chain: &[rustls_pki_types::CertificateDer<'_>],
    id: &str,
) -> Result<(), Problem> {
    let roots = root_store(ca).map_err(|error| {
        Problem::Other(format!(
            "{}: {}",
            ca.display(),
            troop_telemetry::error_chain(&error)
        ))
    })?;
    check_certificate(roots, chain, id)
}

/// `chain` (leaf first) is valid now under `roots` and names `id`: what serve checks of
/// an agent's certificate.
pub fn check_certificate(
    roots: rustls::RootCertStore,
    chain: &[rustls_pki_types::CertificateDer<'_>],
    id: &str,
) -> Result<(), Problem> {
    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::ServerCertVerifier;
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|error| Problem::Other(format!("the fleet CA: {error}")))?;
    let (leaf, intermediates) = chain
        .split_first()
        .ok_or_else(|| Problem::Other("no certificate".into()))?;
    let name = rustls_pki_types::ServerName::try_from(id.to_string()).map_err(|_| {
        Problem::Other(format!(
            "agent id {id:?} is not a DNS name a certificate can name"
        ))
    })?;
    let now = rustls_pki_types::UnixTime::now();
    match verifier.verify_server_cert(leaf, intermediates, &name, &[], now) {
        Ok(_) => Ok(()),
        Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
        | Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::NotValidForNameContext { .. },
        )) => Err(Problem::OtherName),
        Err(error) => Err(Problem::NotUnderCa(error)),
    }
}

/// The agent's connections: only the coordinator's certificate may command it directly.
pub fn incoming(
    tcp: TcpListener,
    config: Arc<ServerConfig>,
) -> ReceiverStream<std::io::Result<TlsConnection>> {
    listener::incoming(
        tcp,
        config,
        Arc::new(|leaf| {
            let leaf = leaf.ok_or("no client certificate")?;
            if names(leaf, COORDINATOR_NAME) {
                Ok(())
            } else {
                Err(format!(
                    "the client certificate does not name {COORDINATOR_NAME}: agents take direct calls from the coordinator only"
                ))
            }
        }),
    )
}
