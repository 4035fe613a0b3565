//! Errors of the use cases: a domain rule, the store, the HSM, or a feature not built yet.

use crate::domain::{Action, ConnectionErrorCode, DomainError, Principal, Requirement};
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
    /// The policy does not let the caller do this.
    #[error("{principal} may not {action}: it needs {need} {place}")]
    PermissionDenied {
        principal: String,
        action: String,
        need: String,
        place: String,
    },
    /// A keystore's target failed during an operation (install, uninstall, status).
    #[error("keystore {keystore_id}: {message}")]
    Target {
        keystore_id: String,
        code: ConnectionErrorCode,
        message: String,
    },
    /// CreateKey with activate: the key exists (PRE_ACTIVE) but activation failed.
    #[error("key {key_id} was created (PRE_ACTIVE) but not activated: {cause}")]
    NotActivated {
        key_id: String,
        cause: Box<ServiceError>,
    },
    /// The external key behind a key of an xks keystore cannot serve: the proxy does not
    /// know it (`missing`), or it is not an enabled AES-256 key for Encrypt and Decrypt.
    #[error("key {key_id}: keystore {keystore_id}: {message}")]
    ExternalKey {
        key_id: String,
        keystore_id: String,
        missing: bool,
        message: String,
    },
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

impl ServiceError {
    pub fn denied(p: &Principal, action: Action, vault: Option<&str>) -> Self {
        let need = match action.requirement() {
            Requirement::Role(r) => format!("role {r}"),
            Requirement::AnyRole => "any role".to_string(),
        };
        let place = match vault {
            Some(v) => format!("in vault {v}"),
            None => "on every vault (\"*\")".to_string(),
        };
        ServiceError::PermissionDenied {
            principal: p.to_string(),
            action: action.name(),
            need,
            place,
        }
    }
}
