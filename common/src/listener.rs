//! Accepting mutual-TLS connections for a gRPC server (the agent's listener, and `troop
//! serve`'s): handshakes bounded in time and number, per peer and in total, and each
//! authenticated peer checked by the server's own rule before tonic sees it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::ServerConfig;
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

/// A slow or silent client gets this long to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Handshakes in flight at once, from everyone and from one address. Past either, the
/// oldest pending handshake is closed to make room: a flood of idle connections cycles
/// itself out, and a fresh connection (a coordinator's halt) always gets its turn.
const MAX_HANDSHAKES: usize = 128;
const MAX_HANDSHAKES_PER_PEER: usize = 16;

/// Decides, after a handshake, whether the peer's proven certificate (the leaf; `None`
/// when the server let it come without one) may talk to this server at all; the error is
/// logged as the reason.
pub type Admit = Arc<dyn Fn(Option<&CertificateDer<'_>>) -> Result<(), String> + Send + Sync>;

/// Who is on the other end of an accepted connection.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub remote: Option<SocketAddr>,
    /// The leaf certificate the client proved; `None` only where the server admits peers
    /// without one (serve's enrolment).
    pub certificate: Option<CertificateDer<'static>>,
}

/// An established, authenticated connection, as tonic wants it.
#[derive(Debug)]
pub struct TlsConnection(TlsStream<TcpStream>);

impl Connected for TlsConnection {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        let (tcp, session) = self.0.get_ref();
        PeerInfo {
            remote: tcp.peer_addr().ok(),
            certificate: session
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|leaf| leaf.clone().into_owned()),
        }
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Handshakes in flight; dropping an entry's sender closes that connection.
#[derive(Default)]
struct Pending {
    next: u64,
    by_age: BTreeMap<u64, (IpAddr, oneshot::Sender<()>)>,
    by_peer: HashMap<IpAddr, VecDeque<u64>>,
}

impl Pending {
    /// Makes room for a handshake from `peer` (closing the oldest where a cap is hit)
    /// and registers it; the receiver resolves when it is closed to make room.
    fn admit(&mut self, peer: IpAddr) -> (u64, oneshot::Receiver<()>) {
        let from_peer = self.by_peer.get(&peer).map_or(0, VecDeque::len);
        if from_peer >= MAX_HANDSHAKES_PER_PEER
            && let Some(oldest) = self.by_peer.get(&peer).and_then(|ids| ids.front().copied())
        {
            self.remove(oldest, peer);
        }
        if self.by_age.len() >= MAX_HANDSHAKES
            && let Some((&oldest, &(owner, _))) = self.by_age.first_key_value()
        {
            self.remove(oldest, owner);
        }
        let id = self.next;
        self.next += 1;
        let (close, closed) = oneshot::channel();
        self.by_age.insert(id, (peer, close));
        self.by_peer.entry(peer).or_default().push_back(id);
        (id, closed)
    }

    fn remove(&mut self, id: u64, peer: IpAddr) {
        self.by_age.remove(&id);
        if let Some(ids) = self.by_peer.get_mut(&peer) {
            ids.retain(|other| *other != id);
            if ids.is_empty() {
                self.by_peer.remove(&peer);
            }
        }
    }
}

/// Accepts TCP connections and completes TLS handshakes concurrently, yielding only the
/// connections whose client proved a fleet certificate. Failed handshakes (plaintext, no
/// certificate, another CA, too slow, or closed to make room) are logged and dropped.
/// Accepting never waits on handshakes, so an unauthenticated peer can hold at most
/// [`MAX_HANDSHAKES_PER_PEER`] connections for at most [`HANDSHAKE_TIMEOUT`].
pub fn incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    admit: Admit,
) -> ReceiverStream<std::io::Result<TlsConnection>> {
    let (sender, receiver) = mpsc::channel(MAX_HANDSHAKES);
    let acceptor = TlsAcceptor::from(config);
    let pending = Arc::new(Mutex::new(Pending::default()));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                // The server is gone: stop accepting, and let the socket close.
                () = sender.closed() => return,
            };
            let (tcp, remote) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let peer = remote.ip();
            let (id, closed) = pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .admit(peer);
            let acceptor = acceptor.clone();
            let sender = sender.clone();
            let pending = pending.clone();
            let admit = admit.clone();
            tokio::spawn(async move {
                let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
                let outcome = tokio::select! {
                    outcome = handshake => Some(outcome),
                    _ = closed => None,
                };
                pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(id, peer);
                match outcome {
                    Some(Ok(Ok(stream))) => {
                        let leaf = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first());
                        match admit(leaf) {
                            Ok(()) => {
                                let _ = sender.send(Ok(TlsConnection(stream))).await;
                            }
                            Err(reason) => {
                                tracing::warn!(%remote, %reason, "refused connection")
                            }
                        }
                    }
                    Some(Ok(Err(error))) => {
                        tracing::warn!(%remote, %error, "refused connection: TLS handshake failed")
                    }
                    Some(Err(_)) => {
                        tracing::warn!(%remote, "refused connection: TLS handshake timed out")
                    }
                    None => tracing::warn!(
                        %remote,
                        "closed a pending TLS handshake to make room for newer connections"
                    ),
                }
            });
        }
    });
    ReceiverStream::new(receiver)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_pending_handshake_of_a_peer_makes_room_first() {
        let mut pending = Pending::default();
        let flooder: IpAddr = "10.0.0.9".parse().unwrap();
        let mut closed = Vec::new();
        for _ in 0..MAX_HANDSHAKES_PER_PEER + 3 {
            closed.push(pending.admit(flooder).1);
        }
        let gone = closed
            .iter_mut()
            .map(|receiver| receiver.try_recv())
            .filter(|result| *result == Err(oneshot::error::TryRecvError::Closed))
            .count();
        assert_eq!(gone, 3);
        assert_eq!(pending.by_peer[&flooder].len(), MAX_HANDSHAKES_PER_PEER);
    }

    #[test]
    fn past_the_total_the_oldest_of_anyone_makes_room() {
        let mut pending = Pending::default();
        let mut first = None;
        for i in 0..MAX_HANDSHAKES {
            let peer = IpAddr::from([10, 1, (i / 256) as u8, (i % 256) as u8]);
            let (_, closed) = pending.admit(peer);
            first.get_or_insert(closed);
        }
        let coordinator: IpAddr = "10.9.9.9".parse().unwrap();
        pending.admit(coordinator);
        assert_eq!(pending.by_age.len(), MAX_HANDSHAKES);
        assert!(pending.by_peer.contains_key(&coordinator));
        assert_eq!(
            first.unwrap().try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        );
    }
}
