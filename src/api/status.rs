//! The one place errors become gRPC statuses: a code, a message naming the field and
//! rule, and a `google.rpc.ErrorInfo` whose reason uses AWS KMS exception names.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::domain::{ConnectionErrorCode, DomainError};
use crate::hsm::HsmError;
use crate::service::ServiceError;

/// `ErrorInfo.domain` of every keyorch error.
pub const ERROR_DOMAIN: &str = "keyorch.v1";

/// Maps a service error to its status. Exhaustive: a new error variant must be mapped here.
pub fn to_status(err: ServiceError) -> Status {
    let err = match err {
        // The cause decides code and reason; the message says the key exists.
        ServiceError::NotActivated { key_id, cause } => {
            let message =
                format!("key {key_id} was created (PRE_ACTIVE) but not activated: {cause}");
            let inner = to_status(*cause);
            let (reason, mut meta) = match inner.get_details_error_info() {
                Some(info) => (info.reason, info.metadata),
                None => ("KMSInternalException".to_string(), HashMap::new()),
            };
            meta.insert("key_id".into(), key_id);
            return Status::with_error_details(
                inner.code(),
                message,
                ErrorDetails::with_error_info(reason, ERROR_DOMAIN, meta),
            );
        }
        other => other,
    };
    let message = err.to_string();
    let mut meta: HashMap<String, String> = HashMap::new();
    let (code, reason) = classify(&err, &mut meta);
    if matches!(code, Code::Internal | Code::Unavailable) {
        tracing::error!(error = %message, "request failed");
    }
    Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(reason, ERROR_DOMAIN, meta),
    )
}

/// The gRPC code a service error maps to (for audit outcomes of non-gRPC callers).
pub fn code_of(err: &ServiceError) -> Code {
    classify(err, &mut HashMap::new()).0
}

/// Code, reason and metadata of an error: the one exhaustive match.
fn classify(err: &ServiceError, meta: &mut HashMap<String, String>) -> (Code, &'static str) {
    match err {
        ServiceError::Domain(d) => {
            if let Some(f) = d.field() {
                meta.insert("field".into(), f.to_string());
            }
            match d {
                DomainError::Invalid { rule, .. } => {
                    meta.insert("rule".into(), rule.clone());
                    (Code::InvalidArgument, "ValidationException")
                }
                DomainError::VaultNotFound(id) | DomainError::KeyNotFound(id) => {
                    meta.insert("resource_id".into(), id.clone());
                    (Code::NotFound, "NotFoundException")
                }
                DomainError::KeystoreNotFound(id) => {
                    meta.insert("resource_id".into(), id.clone());
                    (Code::NotFound, "CustomKeyStoreNotFoundException")
                }
                DomainError::VaultNameInUse(_) | DomainError::KeyNameInUse { .. } => {
                    (Code::AlreadyExists, "AlreadyExistsException")
                }
                DomainError::KeystoreNameInUse { .. } => {
                    (Code::AlreadyExists, "CustomKeyStoreNameInUseException")
                }
                DomainError::VaultNotEmpty { .. } => {
                    (Code::FailedPrecondition, "VaultNotEmptyException")
                }
                DomainError::KeystoreState { state, .. } => {
                    meta.insert("connection_state".into(), state.to_string());
                    (
                        Code::FailedPrecondition,
                        "CustomKeyStoreInvalidStateException",
                    )
                }
                DomainError::KeystoreHasKeys { keys, .. } => {
                    meta.insert("key_ids".into(), keys.join(","));
                    (Code::FailedPrecondition, "CustomKeyStoreHasCMKsException")
                }
                DomainError::StrandedKeys { keys, .. } => {
                    meta.insert("key_ids".into(), keys.join(","));
                    (
                        Code::FailedPrecondition,
                        "CustomKeyStoreInvalidStateException",
                    )
                }
                DomainError::KeyState { state, .. }
                | DomainError::KeyUnavailableState { state, .. } => {
                    meta.insert("key_state".into(), state.to_string());
                    (Code::FailedPrecondition, "KMSInvalidStateException")
                }
                DomainError::LastInstance { .. } => {
                    (Code::FailedPrecondition, "KMSInvalidStateException")
                }
                DomainError::KeyUsage { .. } | DomainError::SigningAlgorithm { .. } => {
                    (Code::InvalidArgument, "InvalidKeyUsageException")
                }
                DomainError::KeyUnavailable { .. } => (
                    Code::FailedPrecondition,
                    "CustomKeyStoreInvalidStateException",
                ),
                DomainError::ExternalKey { keystore_id, .. } => {
                    meta.insert("keystore_id".into(), keystore_id.clone());
                    (Code::FailedPrecondition, "UnsupportedOperationException")
                }
                DomainError::ExternalKeyInUse { key_id, .. } => {
                    meta.insert("resource_id".into(), key_id.clone());
                    (Code::AlreadyExists, "XksKeyAlreadyInUseException")
                }
            }
        }
        ServiceError::PermissionDenied {
            principal, action, ..
        } => {
            meta.insert("principal".into(), principal.clone());
            meta.insert("action".into(), action.clone());
            (Code::PermissionDenied, "AccessDeniedException")
        }
        ServiceError::Target {
            keystore_id, code, ..
        } => {
            meta.insert("keystore_id".into(), keystore_id.clone());
            meta.insert("connection_error_code".into(), code.as_str().to_string());
            match code {
                ConnectionErrorCode::ImportKekMissing => {
                    (Code::FailedPrecondition, "ImportKekMissingException")
                }
                ConnectionErrorCode::NetworkErrors | ConnectionErrorCode::TimedOut => {
                    (Code::Unavailable, "KeystoreTargetException")
                }
                _ => (Code::FailedPrecondition, "KeystoreTargetException"),
            }
        }
        ServiceError::InvalidCiphertext { .. } => {
            (Code::InvalidArgument, "InvalidCiphertextException")
        }
        ServiceError::Unimplemented(_) => (Code::Unimplemented, "UnsupportedOperationException"),
        ServiceError::ExternalKey {
            keystore_id,
            missing,
            ..
        } => {
            meta.insert("keystore_id".into(), keystore_id.clone());
            if *missing {
                (Code::FailedPrecondition, "XksKeyNotFoundException")
            } else {
                (
                    Code::FailedPrecondition,
                    "XksKeyInvalidConfigurationException",
                )
            }
        }
        ServiceError::Hsm(h) => match h {
            HsmError::Device { .. } => (Code::Unavailable, "KMSInternalException"),
            _ => (Code::Internal, "KMSInternalException"),
        },
        ServiceError::NotActivated { cause, .. } => classify(cause, meta),
        ServiceError::Store(_) | ServiceError::Startup(_) | ServiceError::Internal(_) => {
            (Code::Internal, "KMSInternalException")
        }
    }
}

/// A field-rule violation detected while decoding a request.
pub fn invalid(field: &str, rule: impl Into<String>) -> Status {
    to_status(DomainError::invalid(field, rule).into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ConnectionState, KeyAction, KeyState, KeystoreAction};
    use proptest::prelude::*;

    fn reason(s: &Status) -> String {
        s.get_details_error_info()
            .map(|i| i.reason)
            .unwrap_or_default()
    }

    proptest! {
        /// Every rejected keystore transition maps to FAILED_PRECONDITION with
        /// CustomKeyStoreInvalidStateException, as DESIGN §2 documents.
        #[test]
        fn rejected_keystore_transitions_map_as_documented(
            state in proptest::sample::select(ConnectionState::ALL.to_vec()),
            action in proptest::sample::select(vec![KeystoreAction::Connect, KeystoreAction::Disconnect, KeystoreAction::Delete, KeystoreAction::Install]),
        ) {
            prop_assume!(!state.allows(action));
            let e = DomainError::KeystoreState { id: "ks".into(), state, action, allowed: vec![] };
            let s = to_status(e.into());
            prop_assert_eq!(s.code(), Code::FailedPrecondition);
            prop_assert_eq!(reason(&s), "CustomKeyStoreInvalidStateException");
        }

        /// Every rejected key transition maps to FAILED_PRECONDITION with
        /// KMSInvalidStateException and names the states it needed.
        #[test]
        fn rejected_key_transitions_map_as_documented(
            state in proptest::sample::select(KeyState::ALL.to_vec()),
            action in proptest::sample::select(KeyAction::ALL.to_vec()),
        ) {
            prop_assume!(state.next(action).is_none());
            let allowed = KeyState::allowed_from(action);
            let e = DomainError::KeyState { id: "k".into(), state, action, allowed: allowed.clone() };
            let s = to_status(e.into());
            prop_assert_eq!(s.code(), Code::FailedPrecondition);
            prop_assert_eq!(reason(&s), "KMSInvalidStateException");
            for a in allowed { prop_assert!(s.message().contains(&a.to_string())); }
        }
    }

    #[test]
    fn validation_names_field_and_rule() {
        let s = invalid("name", "must not be empty");
        assert_eq!(s.code(), Code::InvalidArgument);
        let info = s.get_details_error_info().unwrap();
        assert_eq!(info.reason, "ValidationException");
        assert_eq!(info.domain, ERROR_DOMAIN);
        assert_eq!(info.metadata.get("field").map(String::as_str), Some("name"));
        assert!(s.message().starts_with("name:"));
    }
}
