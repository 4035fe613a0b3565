//! Accept loops: each listener hands tonic its connections through a channel, each holding
//! one of the listener's `max_connections` permits; TLS handshakes run here, time-bounded.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use super::authority::AuthorityFix;

/// A TLS handshake that does not finish within this is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after an accept error (e.g. EMFILE) before accepting again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// An accepted connection and the permit it holds until it closes.
pub struct Conn<IO> {
    io: IO,
    _permit: OwnedSemaphorePermit,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Conn<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Conn<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The connection info is the socket's own (SO_PEERCRED, addresses), so identities and
/// `TlsConnectInfo<TcpConnectInfo>` read the same as on tonic's own listeners.
impl<IO: Connected> Connected for Conn<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

/// A stream of connections for `Server::serve_with_incoming_shutdown`.
pub type Incoming<IO> = ReceiverStream<Result<IO, io::Error>>;

/// Waits for a permit, logging once each time the limit is reached.
async fn permit(
    permits: &Arc<Semaphore>,
    max: usize,
    listener: &str,
) -> Option<OwnedSemaphorePermit> {
    match permits.clone().try_acquire_owned() {
        Ok(p) => Some(p),
        Err(_) => {
            tracing::warn!(
                listener,
                max_connections = max,
                "connection limit reached: new connections wait until one closes"
            );
            permits.clone().acquire_owned().await.ok()
        }
    }
}

/// Connections of the Unix socket, at most `max` open at once, each with its HTTP/2
/// `:authority` repaired for h2 where the client sent a socket path (see `authority`).
pub fn unix(listener: UnixListener, max: usize) -> Incoming<AuthorityFix<Conn<UnixStream>>> {
    let (tx, rx) = mpsc::channel(1);
    let permits = Arc::new(Semaphore::new(max));
    tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                _ = tx.closed() => return,
                p = permit(&permits, max, "unix") => match p { Some(p) => p, None => return },
            };
            let accepted = tokio::select! {
                _ = tx.closed() => return,
                a = listener.accept() => a,
            };
            match accepted {
                Ok((io, _)) => {
                    let conn = AuthorityFix::new(Conn {
                        io,
                        _permit: permit,
                    });
                    if tx.send(Ok(conn)).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!("unix socket accept failed: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    });
    ReceiverStream::new(rx)
}

/// Verified mutual-TLS connections of the TCP listener, at most `max` open (or in their
/// handshake) at once. A failed or slow handshake is logged and dropped.
pub fn tls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    max: usize,
) -> Incoming<TlsStream<Conn<TcpStream>>> {
    let (tx, rx) = mpsc::channel(1);
    let permits = Arc::new(Semaphore::new(max));
    tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                _ = tx.closed() => return,
                p = permit(&permits, max, "tcp") => match p { Some(p) => p, None => return },
            };
            let accepted = tokio::select! {
                _ = tx.closed() => return,
                a = listener.accept() => a,
            };
            let (io, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("tcp accept failed: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let _ = io.set_nodelay(true);
            let conn = Conn {
                io,
                _permit: permit,
            };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(conn)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => {
                        tracing::info!(%peer, "TLS handshake refused: {e}");
                    }
                    Err(_) => {
                        tracing::info!(%peer, "TLS handshake timed out");
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
