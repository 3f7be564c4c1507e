//! `troop serve`'s one mutual-TLS port: agents' streams ([`crate::live`]) and the
//! operator API ([`operators`]), told apart by the certificate each caller proves; and,
//! with `[serve] ca_key`, enrolment ([`crate::enrolment`]), the one call a client without
//! a certificate may make.

pub mod access;
pub mod operators;
mod runs;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use troop_common::identity::FleetVerifier;
use troop_common::tls::{TlsError, load_certs, load_key};
use troop_proto::serve_pb::coordinator_server::CoordinatorServer;
use troop_proto::serve_pb::enrolment_server::EnrolmentServer;
use troop_proto::serve_pb::operator_server::OperatorServer;

use crate::config::ClientTls;
use crate::enrolment::Enrolment;
use crate::live::MAX_STREAM_MESSAGE;
use crate::live::streams::Streams;
use access::Operators;

/// An operator's Send carries one command per target.
const MAX_OPERATOR_MESSAGE: usize = 4 * 1024 * 1024;
/// HTTP/2 pings from serve: a peer that answers none within the timeout is gone.
const KEEPALIVE: Duration = Duration::from_secs(5);

/// Serve's TLS: the coordinator's certificate (agents and operators check it names the
/// coordinator), and client certificates of the fleet CA for either usage: agents'
/// streams and operators' calls arrive on one port; [`FleetVerifier::identify`] says
/// which each caller is.
pub fn server_config(
    tls: &ClientTls,
    verifier: Arc<FleetVerifier>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    // The CA goes with the chain: an enrolling agent has no ca.pem yet and checks the one
    // it is shown against the fingerprint it was given. Others ignore it.
    let mut chain = load_certs(&tls.cert)?;
    for ca in load_certs(&tls.ca)? {
        if !chain.contains(&ca) {
            chain.push(ca);
        }
    }
    let mut config = rustls::ServerConfig::builder_with_provider(troop_common::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, load_key(&tls.key)?)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Serves agents' streams, enrolment and the operator API on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    streams: Streams,
    enrolment: Enrolment,
    operators: Operators,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let incoming = troop_common::listener::incoming(listener, tls, Arc::new(|_| Ok(())));
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE))
        .http2_keepalive_timeout(Some(KEEPALIVE))
        .max_concurrent_streams(64)
        .http2_max_pending_accept_reset_streams(Some(32))
        .http2_max_header_list_size(16 * 1024)
        .add_service(
            CoordinatorServer::new(streams)
                .max_decoding_message_size(MAX_STREAM_MESSAGE)
                .max_encoding_message_size(MAX_STREAM_MESSAGE),
        )
        .add_service(
            EnrolmentServer::new(enrolment)
                .max_decoding_message_size(MAX_STREAM_MESSAGE)
                .max_encoding_message_size(MAX_STREAM_MESSAGE),
        )
        .add_service(
            OperatorServer::new(operators)
                .max_decoding_message_size(MAX_OPERATOR_MESSAGE)
                .max_encoding_message_size(64 * 1024 * 1024),
        )
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
