//! gRPC front end: decodes keyorch.v1 requests, calls the services, encodes replies and
//! maps errors (one function, `status::to_status`). Also health and reflection.

mod convert;
mod crypto;
mod keys;
mod keystores;
pub mod routes;
pub mod status;
mod vaults;

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::Server;
use tonic_health::ServingStatus;

use crate::service::Services;

/// Largest request or response message accepted (payloads are at most 64 KiB).
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// Deadline on every request (RSA-4096 generation in a software HSM can take seconds).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("socket {path}: {source}")]
    Socket {
        path: String,
        source: std::io::Error,
    },
    #[error("another keyorchd is already listening on {0}")]
    InUse(String),
    #[error("reflection service: {0}")]
    Reflection(String),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Binds the Unix socket (mode 0660), replacing a stale one but never a live one.
pub async fn bind(path: &Path) -> Result<UnixListener, ServeError> {
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
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(err)?;
    Ok(listener)
}

/// Serves every service on `listener` until `shutdown` resolves, then drains in-flight
/// requests. `ready` is called once the services are registered and serving.
pub async fn serve(
    services: Services,
    listener: UnixListener,
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

    ready();
    Server::builder()
        .timeout(REQUEST_TIMEOUT)
        .add_routes(routes)
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await?;
    Ok(())
}
