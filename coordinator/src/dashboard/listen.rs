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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[test]
    fn only_loopback_goes_without_tls() {
        assert!(!needs_tls("127.0.0.1:7081".parse().unwrap()));
        assert!(!needs_tls("[::1]:7081".parse().unwrap()));
        assert!(needs_tls("0.0.0.0:7081".parse().unwrap()));
        assert!(needs_tls("10.0.0.5:7081".parse().unwrap()));
    }

    #[tokio::test]
    async fn off_loopback_the_dashboard_speaks_https_with_serves_certificate() {
        let dir = tempfile::tempdir().unwrap();
        pki::init(dir.path()).unwrap();
        let tls = crate::config::ClientTls {
            cert: dir.path().join(pki::COORDINATOR_CERT),
            key: dir.path().join(pki::COORDINATOR_KEY),
            ca: dir.path().join(pki::CA_CERT),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let routes = axum::Router::new().route(
            "/ui/signin",
            axum::routing::get(|| async { "sign in here" }),
        );
        tokio::spawn(serve(listener, routes, Some(tls_config(&tls).unwrap())));

        // A browser that trusts the fleet CA gets the page over TLS.
        let mut roots = rustls::RootCertStore::empty();
        for cert in troop_common::tls::load_certs(&tls.ca).unwrap() {
            roots.add(cert).unwrap();
        }
        let client = rustls::ClientConfig::builder_with_provider(troop_common::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from(pki::COORDINATOR_NAME).unwrap();
        let mut stream = connector.connect(name, tcp).await.unwrap();
        stream
            .write_all(b"GET /ui/signin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap_or_default();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("sign in here"), "{answer}");

        // Plain HTTP to it gets no page.
        let mut plain = tokio::net::TcpStream::connect(address).await.unwrap();
        plain
            .write_all(b"GET /ui/signin HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut answer)).await;
        assert!(!String::from_utf8_lossy(&answer).contains("sign in here"));
    }
}
