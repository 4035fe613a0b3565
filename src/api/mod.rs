//! gRPC front end: decodes keyorch.v1 requests, calls the services, encodes replies and
//! maps errors (one function, `status::to_status`). Also health and reflection.

mod accept;
mod audit;
pub(crate) mod authority;
pub mod aws;
pub(crate) mod convert;
mod crypto;
mod gate;
mod guard;
mod http1;
pub mod identity;
mod keys;
pub(crate) mod keystores;
pub mod routes;
pub mod status;
pub mod tls;
mod vaults;
pub mod xks;

use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;
use tonic::transport::Server;
use tonic_health::ServingStatus;

use crate::service::Services;

/// Largest request or response message accepted (payloads are at most 64 KiB); the
/// default of `[limits] max_message_bytes`, which may only lower it.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// Deadline on every request (RSA-4096 generation in a software HSM can take seconds);
/// the default of `[limits] request_timeout_secs`.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Default of `[limits] per_connection_concurrency`.
pub const PER_CONNECTION_CONCURRENCY: usize = 32;
/// Default of `[limits] max_connections` (per listener).
pub const MAX_CONNECTIONS: usize = 256;
/// HTTP/2 streams a connection may have open; more wait for the concurrency limit.
const MAX_CONCURRENT_STREAMS: u32 = 256;
/// HTTP/2 pings find dead peers so that their connection permits come back.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// What one client may ask of the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest request message, in bytes (at most [`MAX_MESSAGE_BYTES`]).
    pub max_message_bytes: usize,
    /// Requests one connection may have in progress; more wait.
    pub per_connection_concurrency: usize,
    /// Deadline of every request (a client's shorter `grpc-timeout` wins).
    pub request_timeout: Duration,
    /// Open connections per listener; more wait in the listen backlog.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: MAX_MESSAGE_BYTES,
            per_connection_concurrency: PER_CONNECTION_CONCURRENCY,
            request_timeout: REQUEST_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("socket {path}: {source}")]
    Socket {
        path: String,
        source: std::io::Error,
    },
    #[error("another keyorchd is already listening on {0}")]
    InUse(String),
    #[error("listen.socket_group: cannot give {path} to group {gid}: {source}")]
    SocketGroup {
        path: String,
        gid: u32,
        source: nix::Error,
    },
    #[error("listen.tcp: cannot listen on {addr}: {source}")]
    Tcp {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("aws.listen: cannot listen on {addr}: {source}")]
    Aws {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("xks.listen: cannot listen on {addr}: {source}")]
    Xks {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("reflection service: {0}")]
    Reflection(String),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// The bound listeners: the Unix socket always, TCP with mutual TLS if configured, and the
/// AWS KMS-compatible endpoint if configured.
pub struct Listeners {
    pub unix: UnixListener,
    pub tcp: Option<TlsListener>,
    pub aws: Option<aws::AwsListener>,
    pub xks: Option<xks::XksListener>,
}

/// A bound TCP listener and its TLS policy.
pub struct TlsListener {
    listener: TcpListener,
    acceptor: TlsAcceptor,
}

impl TlsListener {
    /// The address actually bound (port 0 in the config picks a free port).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// Binds the Unix socket (mode 0660, and group `group` if given), replacing a stale one
/// but never a live one.
pub async fn bind(path: &Path, group: Option<u32>) -> Result<UnixListener, ServeError> {
    let err = |source| ServeError::Socket {
        path: path.display().to_string(),
        source,
    };
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(ServeError::InUse(path.display().to_string()));
        }
        std::fs::remove_file(path).map_err(err)?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    if let Some(gid) = group {
        if let Err(source) = nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(gid))) {
            let _ = std::fs::remove_file(path);
            return Err(ServeError::SocketGroup {
                path: path.display().to_string(),
                gid,
                source,
            });
        }
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(err)?;
    Ok(listener)
}

/// Binds the TCP listener; every connection must then pass `tls` (see [`tls`]).
pub async fn bind_tls(addr: SocketAddr, tls: Arc<ServerConfig>) -> Result<TlsListener, ServeError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Tcp { addr, source })?;
    Ok(TlsListener {
        listener,
        acceptor: TlsAcceptor::from(tls),
    })
}

/// Serves every service on every listener until `shutdown` resolves, then drains
/// in-flight requests on all of them. `ready` is called once all are serving.
pub async fn serve(
    services: Services,
    listeners: Listeners,
    limits: &Limits,
    shutdown: impl Future<Output = ()>,
    ready: impl FnOnce(),
) -> Result<(), ServeError> {
    let (routes, health) = routes::routes(&services).await?;
    // Follow the HSM: NOT_SERVING while it does not answer.
    let watched = services.clone();
    tokio::spawn(async move {
        let mut last = true;
        loop {
            tokio::time::sleep(Duration::from_secs(10)).await;
            let ok = watched.hsm_healthy().await;
            if ok != last {
                let status = if ok {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                };
                tracing::warn!(%status, "HSM health changed");
                health.set_service_status("", status).await;
                last = ok;
            }
        }
    });

    let builder = || {
        Server::builder()
            .timeout(limits.request_timeout)
            .concurrency_limit_per_connection(limits.per_connection_concurrency)
            .max_concurrent_streams(Some(MAX_CONCURRENT_STREAMS))
            .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
            .layer(gate::GateLayer::new(limits.max_message_bytes))
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let unix = builder()
        .add_routes(routes.clone())
        .serve_with_incoming_shutdown(
            accept::unix(listeners.unix, limits.max_connections),
            stopped(stop_rx.clone()),
        );
    let tcp = async {
        match listeners.tcp {
            Some(t) => {
                builder()
                    .add_routes(routes)
                    .serve_with_incoming_shutdown(
                        accept::tls(t.listener, t.acceptor, limits.max_connections),
                        stopped(stop_rx.clone()),
                    )
                    .await
            }
            None => Ok(()),
        }
    };
    let aws = async {
        match listeners.aws {
            Some(a) => aws::serve(a, services.clone(), limits, stop_rx.clone()).await,
            None => Ok(()),
        }
    };
    let xks = async {
        match listeners.xks {
            Some(x) => xks::serve(x, services.clone(), limits, stop_rx.clone()).await,
            None => Ok(()),
        }
    };
    let signal = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
        Ok(())
    };
    ready();
    let tcp = async { tcp.await.map_err(ServeError::from) };
    let unix = async { unix.await.map_err(ServeError::from) };
    tokio::try_join!(unix, tcp, aws, xks, signal)?;
    Ok(())
}
