//! External keystore targets: the places outside keyorch's own token where managed keys are
//! installed, one module per keystore type, and the error every target reports.

pub mod aws_kms;
pub mod pkcs11;
pub mod xks;

use crate::hsm::HsmError;

/// Why a target operation failed, classified for the keystore's `connection_error_code`.
///
/// Messages name the failing call and the `CKR_` value where there is one; they never contain
/// a PIN or key bytes.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The target refused the credentials (wrong PIN: `CKR_PIN_INCORRECT`,
    /// `CKR_PIN_LEN_RANGE`, `CKR_PIN_LOCKED`, ...).
    #[error("the target rejected the credentials: {0}")]
    InvalidCredentials(String),
    /// The configured token (label or serial) is not there.
    #[error("target not found: {0}")]
    TargetNotFound(String),
    /// The module is missing or not PKCS#11, or the configuration is otherwise unusable.
    #[error("invalid target configuration: {0}")]
    InvalidConfiguration(String),
    /// `EKMF-BYOK-KEK-FOR-IMPORT` is not in the target (deleted there); reconnecting recreates it.
    #[error(
        "the import key EKMF-BYOK-KEK-FOR-IMPORT is missing in the target; reconnect the keystore to recreate it"
    )]
    ImportKekMissing,
    /// The target lacks a mechanism or function keyorch needs.
    #[error("not supported by the target: {0}")]
    NotSupported(String),
    /// The target cannot be reached: connection refused or reset, DNS, TLS.
    #[error("cannot reach the target: {0}")]
    Network(String),
    /// The target did not answer within the call's deadline.
    #[error("the target did not answer in time: {0}")]
    TimedOut(String),
    /// The credentials were accepted but lack these of the provider's required permissions
    /// (its action names, e.g. `CreateKey`).
    #[error("the target denied required permissions: {}", .0.join(", "))]
    PermissionDenied(Vec<String>),
    /// XKS proxy: 403 AccessDeniedException.
    #[error("the XKS proxy denied access: {0}")]
    XksAccessDenied(String),
    /// XKS proxy: no endpoint at the URI path (404 InvalidUriPathException, ...).
    #[error("the XKS proxy is not configured for this keystore: {0}")]
    XksInvalidConfiguration(String),
    /// XKS proxy: an answer that is not the spec's.
    #[error("invalid answer from the XKS proxy: {0}")]
    XksInvalidResponse(String),
    /// XKS proxy: the TLS handshake failed (certificate, CA, client certificate).
    #[error("TLS with the XKS proxy failed: {0}")]
    XksInvalidTls(String),
    /// XKS proxy: nothing answers (refused, DNS), or every external key manager is UNAVAILABLE.
    #[error("the XKS proxy is not reachable: {0}")]
    XksNotReachable(String),
    /// XKS proxy: no answer in time.
    #[error("the XKS proxy did not answer in time: {0}")]
    XksTimedOut(String),
    /// Anything else, with the failing call and its `CKR_` name.
    #[error("target failure: {0}")]
    Internal(String),
}

impl From<HsmError> for TargetError {
    fn from(e: HsmError) -> Self {
        match e {
            HsmError::ModuleLoad { .. } => TargetError::InvalidConfiguration(e.to_string()),
            HsmError::TokenNotFound(_) => TargetError::TargetNotFound(e.to_string()),
            HsmError::PinIncorrect | HsmError::PinLocked => {
                TargetError::InvalidCredentials(e.to_string())
            }
            HsmError::Unsupported(what) => TargetError::NotSupported(what),
            HsmError::KekMissing
            | HsmError::KekInvalid(_)
            | HsmError::InvalidCiphertext
            | HsmError::KeyBlobInvalid(_)
            | HsmError::KeyKindMismatch { .. }
            | HsmError::Device { .. }
            | HsmError::Pkcs11 { .. } => TargetError::Internal(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hsm_errors_map_to_connection_error_classes() {
        assert!(matches!(
            TargetError::from(HsmError::PinLocked),
            TargetError::InvalidCredentials(_)
        ));
        assert!(matches!(
            TargetError::from(HsmError::TokenNotFound("label \"x\"".into())),
            TargetError::TargetNotFound(_)
        ));
        assert!(matches!(
            TargetError::from(HsmError::ModuleLoad {
                path: "/nope.so".into(),
                detail: "missing".into()
            }),
            TargetError::InvalidConfiguration(_)
        ));
        let e = TargetError::from(HsmError::Pkcs11 {
            op: "C_UnwrapKey",
            rv: "CKR_GENERAL_ERROR".into(),
        });
        assert_eq!(
            e.to_string(),
            "target failure: PKCS#11 C_UnwrapKey failed: CKR_GENERAL_ERROR"
        );
    }
}
