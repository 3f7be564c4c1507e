//! Where the dashboard listens: plain HTTP on a loopback address (the browser is on the
//! serve host, or comes through an SSH tunnel), HTTPS with serve's own certificate
//! anywhere else. Browsers bring no client certificate; the operator token is the
//! credential.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// A TLS handshake slower than this is dropped, so half-open connections cannot pile up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether the dashboard on `address` must use TLS.
pub fn needs_tls(address: SocketAddr) -> bool {
    !address.ip().is_loopback()
}

/// TLS with serve's certificate and no client authentication.
pub fn tls_config(
    tls: &crate::config::ClientTls,
) -> Result<Arc<rustls::ServerConfig>, troop_common::tls::TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(troop_common::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(
            troop_common::tls::load_certs(&tls.cert)?,
            troop_common::tls::load_key(&tls.key)?,
        )?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `routes` on `listener`, over TLS when `tls` is given, until the task ends.
pub async fn serve(
    listener: TcpListener,
    routes: axum::Router,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> std::io::Result<()> {
    let Some(tls) = tls else {
        return axum::serve(listener, routes).await;
    };
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "dashboard: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(routes.clone());
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    tracing::debug!(%remote, %error, "dashboard: TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let served = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .http1_only()
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await;
            if let Err(error) = served {
                tracing::debug!(%remote, %error, "dashboard: connection ended");
            }
        });
    }
}
