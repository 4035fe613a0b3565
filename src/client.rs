//! A gRPC channel to keyorchd over its Unix domain socket (used by the CLI, tests, bench).

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tower::service_fn;

use crate::proto::v1::{
    audit_service_client::AuditServiceClient, crypto_service_client::CryptoServiceClient,
    key_service_client::KeyServiceClient, keystore_service_client::KeystoreServiceClient,
    vault_service_client::VaultServiceClient,
};

/// Opens a channel to the daemon listening on `socket`.
pub async fn connect(socket: &Path) -> Result<Channel, tonic::transport::Error> {
    let path: PathBuf = socket.to_path_buf();
    // The URI is required by the API but unused: the connector dials the socket.
    Endpoint::from_static("http://keyorchd.local")
        .connect_with_connector(service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
}

/// Every keyorch.v1 client on one channel.
#[derive(Clone)]
pub struct Clients {
    pub vaults: VaultServiceClient<Channel>,
    pub keystores: KeystoreServiceClient<Channel>,
    pub keys: KeyServiceClient<Channel>,
    pub crypto: CryptoServiceClient<Channel>,
    pub audit: AuditServiceClient<Channel>,
}

impl Clients {
    pub fn new(channel: Channel) -> Self {
        Clients {
            vaults: VaultServiceClient::new(channel.clone()),
            keystores: KeystoreServiceClient::new(channel.clone()),
            keys: KeyServiceClient::new(channel.clone()),
            crypto: CryptoServiceClient::new(channel.clone()),
            audit: AuditServiceClient::new(channel),
        }
    }

    pub async fn connect(socket: &Path) -> Result<Self, tonic::transport::Error> {
        Ok(Self::new(connect(socket).await?))
    }
}
