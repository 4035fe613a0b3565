//! The HTTP/1.1 listeners (the AWS KMS-compatible endpoint, the XKS proxy): the accept
//! loop with its connection limit, the optional TLS handshake (time-bounded, with an
//! optional check of the client certificate), and the graceful drain on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// A TLS handshake must finish within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Request headers must arrive within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// What answers the listener's requests.
pub(crate) trait Handler: Send + Sync + 'static {
    fn handle(&self, req: Request<Incoming>) -> impl Future<Output = Response<Full<Bytes>>> + Send;
}

/// A check of a finished TLS handshake (e.g. the client certificate's subject): an error
/// closes the connection before any request is read.
pub(crate) type PeerCheck = Arc<dyn Fn(&TlsStream<TcpStream>) -> Result<(), String> + Send + Sync>;

/// The listener's TLS: the acceptor and the optional peer check.
#[derive(Clone)]
pub(crate) struct Tls {
    pub acceptor: TlsAcceptor,
    pub check: Option<PeerCheck>,
}

/// Serves until `stop` turns true, then lets every open connection finish its request.
pub(crate) async fn serve<H: Handler>(
    name: &'static str,
    listener: TcpListener,
    tls: Option<Tls>,
    handler: Arc<H>,
    max_connections: usize,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let permit = tokio::select! {
            _ = stopped(&mut stop) => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = stopped(&mut stop) => break,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("{name}: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        let handler = handler.clone();
        let tls = tls.clone();
        let stop = stop.clone();
        connections.spawn(async move {
            let _permit = permit;
            let Some(tls) = tls else {
                return connection(name, TokioIo::new(stream), handler, stop).await;
            };
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor.accept(stream)).await {
                Ok(Ok(s)) => {
                    if let Some(check) = &tls.check {
                        if let Err(why) = check(&s) {
                            tracing::info!(%peer, "{name}: client certificate refused: {why}");
                            return;
                        }
                    }
                    connection(name, TokioIo::new(s), handler, stop).await
                }
                Ok(Err(e)) => tracing::debug!(%peer, "{name}: TLS handshake failed: {e}"),
                Err(_) => tracing::debug!(%peer, "{name}: TLS handshake timed out"),
            }
        });
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Resolves once `stop` turns true (or its sender is gone).
pub(crate) async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn connection<I, H>(
    name: &'static str,
    io: I,
    handler: Arc<H>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    H: Handler,
{
    let service = hyper::service::service_fn(move |req| {
        let handler = handler.clone();
        async move { Ok::<_, Infallible>(handler.handle(req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => if let Err(e) = r { tracing::debug!("{name} connection: {e}") },
        _ = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
