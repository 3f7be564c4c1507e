//! Mutual TLS for the agent's listener: TLS 1.3 only, a client certificate chained to the
//! fleet CA and naming the coordinator required (never another agent's or an operator's),
//! handshakes bounded by [`troop_common::listener`].

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpListener;
use tokio_stream::wrappers::ReceiverStream;

use troop_common::identity::{COORDINATOR_NAME, names};
use troop_common::listener::{self, TlsConnection};
use troop_common::tls::{TlsError, load_certs, load_key, provider, root_store};

use crate::config::TlsPaths;

/// The agent's server config: its own certificate, clients must present one from the CA.
pub fn server_config(paths: &TlsPaths) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(
        Arc::new(root_store(&paths.ca)?),
        provider.clone(),
    )
    .build()?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(&paths.cert)?, load_key(&paths.key)?)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Checks the agent's own certificate the way a coordinator will: it chains to the
/// fleet CA (so `ca` is a CA, and the right one) and names `id`. Says what is wrong.
pub fn check_identity(paths: &TlsPaths, id: &str) -> Result<(), String> {
    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::ServerCertVerifier;
    let roots = root_store(&paths.ca).map_err(|error| {
        format!(
            "{}: {}",
            paths.ca.display(),
            troop_telemetry::error_chain(&error)
        )
    })?;
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|error| format!("{}: {error}", paths.ca.display()))?;
    let chain = load_certs(&paths.cert).map_err(|error| troop_telemetry::error_chain(&error))?;
    let name = rustls_pki_types::ServerName::try_from(id.to_string())
        .map_err(|_| format!("agent id {id:?} is not a DNS name a certificate can name"))?;
    let now = rustls_pki_types::UnixTime::now();
    match verifier.verify_server_cert(&chain[0], &chain[1..], &name, &[], now) {
        Ok(_) => Ok(()),
        Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
        | Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::NotValidForNameContext { .. },
        )) => Err(format!(
            "{} does not name this agent's id {id:?} (the coordinator would refuse it)",
            paths.cert.display()
        )),
        Err(error) => Err(format!(
            "{} is not accepted under the CA in {} ({error}); is `tls.ca` the fleet's CA certificate?",
            paths.cert.display(),
            paths.ca.display()
        )),
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
