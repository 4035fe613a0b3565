//! gRPC front end: decodes keyorch.v1 requests, calls the services, encodes replies and
//! maps errors (one function, `status::to_status`). Also health and reflection.

mod convert;
mod crypto;
mod keys;
mod keystores;
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

use crate::proto::v1::{
    crypto_service_server::CryptoServiceServer, key_service_server::KeyServiceServer,
    keystore_service_server::KeystoreServiceServer, vault_service_server::VaultServiceServer,
};
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
    let (health, health_service) = tonic_health::server::health_reporter();
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;

    for name in [
        "",
        "keyorch.v1.VaultService",
        "keyorch.v1.KeystoreService",
        "keyorch.v1.KeyService",
        "keyorch.v1.CryptoService",
    ] {
        health
            .set_service_status(name, ServingStatus::Serving)
            .await;
    }
    // Follow the HSM: NOT_SERVING while it does not answer.
    let watched = services.clone();
    let reporter = health.clone();
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
                reporter.set_service_status("", status).await;
                last = ok;
            }
        }
    });

    ready();
    Server::builder()
        .timeout(REQUEST_TIMEOUT)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(
            VaultServiceServer::new(vaults::Vaults(services.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            KeystoreServiceServer::new(keystores::Keystores(services.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            KeyServiceServer::new(keys::Keys(services.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            CryptoServiceServer::new(crypto::Crypto(services))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await?;
    Ok(())
}
