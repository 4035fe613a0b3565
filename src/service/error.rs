//! Errors of the use cases: a domain rule, the store, the HSM, or a feature not built yet.

use crate::domain::DomainError;
use crate::hsm::HsmError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("HSM error: {0}")]
    Hsm(#[from] HsmError),
    /// A feature that is not there yet.
    #[error("{0}")]
    Unimplemented(String),
    #[error(
        "ciphertext cannot be decrypted with key {key_id}: wrong key, wrong aad, or altered data"
    )]
    InvalidCiphertext { key_id: String },
    /// Start-up refused (wrong token, missing KEK, ...).
    #[error("{0}")]
    Startup(String),
    #[error("internal error: {0}")]
    Internal(String),
}
