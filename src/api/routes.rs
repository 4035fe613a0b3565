//! Which gRPC services keyorchd serves, with their message limits, health and reflection.

use tonic::service::Routes;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use super::{audit, crypto, keys, keystores, vaults, ServeError, MAX_MESSAGE_BYTES};
use crate::proto::v1::{
    audit_service_server::AuditServiceServer, crypto_service_server::CryptoServiceServer,
    key_service_server::KeyServiceServer, keystore_service_server::KeystoreServiceServer,
    vault_service_server::VaultServiceServer,
};
use crate::service::Services;

/// Names reported SERVING by grpc.health.v1 (besides "").
pub const SERVICE_NAMES: &[&str] = &[
    "keyorch.v1.VaultService",
    "keyorch.v1.KeystoreService",
    "keyorch.v1.KeyService",
    "keyorch.v1.CryptoService",
    "keyorch.v1.AuditService",
];

/// Every service keyorchd answers, ready to serve on any listener.
pub async fn routes(services: &Services) -> Result<(Routes, HealthReporter), ServeError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_service_status("", ServingStatus::Serving).await;
    for name in SERVICE_NAMES {
        health
            .set_service_status(*name, ServingStatus::Serving)
            .await;
    }
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        // Each version lists (and describes) the other too, so a client that asks either
        // finds every service the daemon serves.
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let routes = Routes::new(health_service)
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
            CryptoServiceServer::new(crypto::Crypto(services.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(AuditServiceServer::new(audit::Audit(services.clone())));
    Ok((routes, health))
}
