//! The one place the AWS endpoint turns keyorch's errors into AWS exceptions (the gRPC
//! API's counterpart is `api::status`). Exhaustive: a new error variant must be mapped here.

use super::wire::{AwsError, Exception};
use crate::domain::{ConnectionErrorCode, DomainError, KeyState};
use crate::service::ServiceError;

/// What kind of call failed: crypto with a key whose custom key store is disconnected is
/// `KMSInvalidStateException` in AWS (the key is `Unavailable`), while creating a key in a
/// disconnected store is `CustomKeyStoreInvalidStateException`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    Management,
    Crypto,
}

pub fn exception(err: ServiceError, ctx: Context) -> AwsError {
    let message = err.to_string();
    let ex = match &err {
        ServiceError::Domain(d) => match d {
            DomainError::Invalid { .. } => Exception::Validation,
            DomainError::VaultNotFound(_) => Exception::KmsInternal,
            DomainError::KeyNotFound(_) => Exception::NotFound,
            DomainError::KeystoreNotFound(_) => Exception::CustomKeyStoreNotFound,
            // Vault names are the config's; key names are generated: neither is the caller's.
            DomainError::VaultNameInUse(_) | DomainError::KeyNameInUse { .. } => {
                Exception::KmsInternal
            }
            DomainError::KeystoreNameInUse { .. } => Exception::CustomKeyStoreNameInUse,
            DomainError::VaultNotEmpty { .. } => Exception::KmsInternal,
            DomainError::KeystoreState { .. } | DomainError::StrandedKeys { .. } => {
                Exception::CustomKeyStoreInvalidState
            }
            DomainError::KeystoreHasKeys { .. } => Exception::CustomKeyStoreHasCmks,
            // AWS's Disabled keys (PRE_ACTIVE, DEACTIVATED) answer DisabledException.
            DomainError::KeyUnavailableState {
                state: KeyState::PreActive | KeyState::Deactivated,
                ..
            } => Exception::Disabled,
            DomainError::KeyState { .. }
            | DomainError::KeyUnavailableState { .. }
            | DomainError::LastInstance { .. } => Exception::KmsInvalidState,
            DomainError::KeyUsage { .. } | DomainError::SigningAlgorithm { .. } => {
                Exception::InvalidKeyUsage
            }
            DomainError::KeyUnavailable { .. } => match ctx {
                Context::Crypto => Exception::KmsInvalidState,
                Context::Management => Exception::CustomKeyStoreInvalidState,
            },
            DomainError::ExternalKey { .. } => Exception::UnsupportedOperation,
            DomainError::ExternalKeyInUse { .. } => Exception::XksKeyAlreadyInUse,
        },
        // AWS KMS: a cryptographic operation that fails on the external key or its proxy is
        // KMSInvalidStateException (the cause in the message); the Xks* names are for
        // CreateKey and the key store operations.
        ServiceError::ExternalKey { .. } if ctx == Context::Crypto => Exception::KmsInvalidState,
        ServiceError::ExternalKey { missing: true, .. } => Exception::XksKeyNotFound,
        ServiceError::ExternalKey { missing: false, .. } => Exception::XksKeyInvalidConfiguration,
        ServiceError::PermissionDenied { .. } => Exception::AccessDenied,
        // The backing token refused (import KEK missing, a mechanism, the network):
        // AWS's word for a backing cluster that cannot serve is this one.
        ServiceError::Target { code, .. } if ctx == Context::Crypto && code.is_xks() => {
            Exception::KmsInvalidState
        }
        ServiceError::Target { code, .. } => match code {
            // AWS's exceptions for a proxy of an external key store that fails.
            ConnectionErrorCode::XksProxyInvalidResponse => Exception::XksProxyInvalidResponse,
            ConnectionErrorCode::XksProxyNotReachable | ConnectionErrorCode::XksProxyTimedOut => {
                Exception::XksProxyUriUnreachable
            }
            ConnectionErrorCode::XksProxyAccessDenied
            | ConnectionErrorCode::XksProxyInvalidConfiguration
            | ConnectionErrorCode::XksProxyInvalidTlsConfiguration => {
                Exception::XksProxyInvalidConfiguration
            }
            _ => Exception::CloudHsmClusterInvalidConfiguration,
        },
        ServiceError::InvalidCiphertext { .. } => Exception::InvalidCiphertext,
        ServiceError::Unimplemented(_) => Exception::UnsupportedOperation,
        ServiceError::NotActivated { .. } => {
            let ServiceError::NotActivated { cause, .. } = err else {
                unreachable!("matched above")
            };
            let inner = exception(*cause, ctx);
            return AwsError::new(inner.exception, message);
        }
        ServiceError::Hsm(_)
        | ServiceError::Store(_)
        | ServiceError::Startup(_)
        | ServiceError::Internal(_) => Exception::KmsInternal,
    };
    if ex == Exception::KmsInternal {
        tracing::error!(error = %message, "AWS endpoint request failed");
    }
    AwsError::new(ex, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ConnectionErrorCode, ConnectionState, CryptoOp, KeystoreAction};

    /// AWS KMS: a cryptographic call that fails on the external key or its proxy is
    /// KMSInvalidStateException; CreateKey names the cause (XksKey*, XksProxy*).
    #[test]
    fn external_key_failures_are_invalid_state_in_crypto_calls() {
        let missing = || ServiceError::ExternalKey {
            key_id: "key-1".into(),
            keystore_id: "ks-1".into(),
            missing: true,
            message: "no such key".into(),
        };
        assert_eq!(
            exception(missing(), Context::Crypto).exception,
            Exception::KmsInvalidState
        );
        assert_eq!(
            exception(missing(), Context::Management).exception,
            Exception::XksKeyNotFound
        );
        let proxy = || ServiceError::Target {
            keystore_id: "ks-1".into(),
            code: ConnectionErrorCode::XksProxyNotReachable,
            message: "refused".into(),
        };
        assert_eq!(
            exception(proxy(), Context::Crypto).exception,
            Exception::KmsInvalidState
        );
        assert_eq!(
            exception(proxy(), Context::Management).exception,
            Exception::XksProxyUriUnreachable
        );
        let msg = exception(missing(), Context::Crypto).message;
        assert!(msg.contains("no such key"), "{msg}");
    }

    #[test]
    fn rules_map_to_aws_names() {
        let unavailable = || DomainError::KeyUnavailable {
            id: "key-1".into(),
            reason: "its keystore is DISCONNECTED".into(),
        };
        assert_eq!(
            exception(unavailable().into(), Context::Crypto).exception,
            Exception::KmsInvalidState
        );
        assert_eq!(
            exception(unavailable().into(), Context::Management).exception,
            Exception::CustomKeyStoreInvalidState
        );
        let state = DomainError::KeystoreState {
            id: "ks".into(),
            state: ConnectionState::Failed,
            action: KeystoreAction::Connect,
            allowed: vec![],
        };
        assert_eq!(
            exception(state.into(), Context::Management).exception,
            Exception::CustomKeyStoreInvalidState
        );
        let disabled = DomainError::KeyUnavailableState {
            id: "k".into(),
            state: KeyState::Deactivated,
            op: CryptoOp::Encrypt,
        };
        assert_eq!(
            exception(disabled.into(), Context::Crypto).exception,
            Exception::Disabled
        );
        let destroyed = DomainError::KeyUnavailableState {
            id: "k".into(),
            state: KeyState::Destroyed,
            op: CryptoOp::Decrypt,
        };
        assert_eq!(
            exception(destroyed.into(), Context::Crypto).exception,
            Exception::KmsInvalidState
        );
        let wrapped = ServiceError::NotActivated {
            key_id: "key-1".into(),
            cause: Box::new(ServiceError::Target {
                keystore_id: "ks".into(),
                code: ConnectionErrorCode::ImportKekMissing,
                message: "gone".into(),
            }),
        };
        let e = exception(wrapped, Context::Management);
        assert_eq!(e.exception, Exception::CloudHsmClusterInvalidConfiguration);
        assert!(e.message.contains("key-1"), "{}", e.message);
        assert_eq!(
            exception(ServiceError::Internal("x".into()), Context::Crypto).exception,
            Exception::KmsInternal
        );
    }
}
