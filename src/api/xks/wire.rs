//! The XKS proxy API's error answers: the spec's error names and HTTP statuses, the body
//! `{"errorName": …, "errorMessage": …}`, and the one mapping from keyorch's errors.
//! Exhaustive: a new error variant must be mapped here.

use http::StatusCode;

use crate::domain::DomainError;
use crate::service::ServiceError;

/// The spec's error names ("Error codes"), plus 405 for a method other than POST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XksException {
    Validation,
    InvalidState,
    InvalidCiphertext,
    InvalidKeyUsage,
    AuthenticationFailed,
    AccessDenied,
    KeyNotFound,
    InvalidUriPath,
    Throttling,
    UnsupportedOperation,
    DependencyTimeout,
    Internal,
    /// Not in the spec's table: it asks for 405 Method Not Allowed and names no error.
    MethodNotAllowed,
}

impl XksException {
    pub fn name(self) -> &'static str {
        use XksException::*;
        match self {
            Validation => "ValidationException",
            InvalidState => "InvalidStateException",
            InvalidCiphertext => "InvalidCiphertextException",
            InvalidKeyUsage => "InvalidKeyUsageException",
            AuthenticationFailed => "AuthenticationFailedException",
            AccessDenied => "AccessDeniedException",
            KeyNotFound => "KeyNotFoundException",
            InvalidUriPath => "InvalidUriPathException",
            Throttling => "ThrottlingException",
            UnsupportedOperation => "UnsupportedOperationException",
            DependencyTimeout => "DependencyTimeoutException",
            Internal => "InternalException",
            MethodNotAllowed => "UnsupportedOperationException",
        }
    }

    pub fn status(self) -> StatusCode {
        use XksException::*;
        match self {
            Validation | InvalidState | InvalidCiphertext | InvalidKeyUsage => {
                StatusCode::BAD_REQUEST
            }
            AuthenticationFailed => StatusCode::UNAUTHORIZED,
            AccessDenied => StatusCode::FORBIDDEN,
            KeyNotFound | InvalidUriPath => StatusCode::NOT_FOUND,
            Throttling => StatusCode::TOO_MANY_REQUESTS,
            UnsupportedOperation => StatusCode::NOT_IMPLEMENTED,
            DependencyTimeout => StatusCode::SERVICE_UNAVAILABLE,
            Internal => StatusCode::INTERNAL_SERVER_ERROR,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }
}

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XksError {
    pub exception: XksException,
    pub message: String,
}

impl XksError {
    pub fn new(exception: XksException, message: impl Into<String>) -> XksError {
        XksError {
            exception,
            message: message.into(),
        }
    }

    pub fn validation(message: impl Into<String>) -> XksError {
        XksError::new(XksException::Validation, message)
    }

    /// A required field that is absent.
    pub fn required(field: &str) -> XksError {
        XksError::validation(format!("{field} is required"))
    }

    pub fn uri(message: impl Into<String>) -> XksError {
        XksError::new(XksException::InvalidUriPath, message)
    }

    pub fn status(&self) -> StatusCode {
        self.exception.status()
    }

    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "errorName": self.exception.name(),
            "errorMessage": self.message,
        }))
        .unwrap_or_default()
    }
}

/// keyorch's errors in the spec's words.
pub fn exception(err: ServiceError) -> XksError {
    use XksException::*;
    let message = err.to_string();
    let ex = match &err {
        ServiceError::Domain(d) => match d {
            DomainError::Invalid { .. } => Validation,
            DomainError::KeyNotFound(_) => KeyNotFound,
            // A key deactivated, not yet active, destroyed, or whose keystores are all
            // disconnected (the kill switch): "disabled, deactivated or blocked".
            DomainError::KeyState { .. }
            | DomainError::KeyUnavailableState { .. }
            | DomainError::KeyUnavailable { .. }
            | DomainError::KeystoreState { .. }
            | DomainError::LastInstance { .. }
            | DomainError::StrandedKeys { .. } => InvalidState,
            DomainError::KeyUsage { .. } | DomainError::SigningAlgorithm { .. } => InvalidKeyUsage,
            DomainError::VaultNotFound(_)
            | DomainError::KeystoreNotFound(_)
            | DomainError::VaultNameInUse(_)
            | DomainError::KeystoreNameInUse { .. }
            | DomainError::KeyNameInUse { .. }
            | DomainError::VaultNotEmpty { .. }
            | DomainError::KeystoreHasKeys { .. }
            | DomainError::ExternalKeyInUse { .. } => Internal,
            DomainError::ExternalKey { .. } => UnsupportedOperation,
        },
        ServiceError::PermissionDenied { .. } => AccessDenied,
        ServiceError::InvalidCiphertext { .. } => InvalidCiphertext,
        ServiceError::Unimplemented(_) => UnsupportedOperation,
        // keyorchd's proxy serves keys its HSM holds, never external keys of its own.
        ServiceError::ExternalKey { .. } => Internal,
        ServiceError::NotActivated { .. }
        | ServiceError::Target { .. }
        | ServiceError::Hsm(_)
        | ServiceError::Store(_)
        | ServiceError::Startup(_)
        | ServiceError::Internal(_) => Internal,
    };
    if ex == Internal {
        tracing::error!(error = %message, "XKS request failed");
        // The details are in keyorchd's log, not in the answer to the caller.
        return XksError::new(
            Internal,
            "keyorchd could not complete the request; see its log",
        );
    }
    XksError::new(ex, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_have_the_spec_names_statuses_and_body() {
        let e = XksError::new(XksException::InvalidCiphertext, "bad tag");
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["errorName"], "InvalidCiphertextException");
        assert_eq!(v["errorMessage"], "bad tag");
        for (ex, status) in [
            (XksException::Validation, 400),
            (XksException::InvalidState, 400),
            (XksException::InvalidCiphertext, 400),
            (XksException::InvalidKeyUsage, 400),
            (XksException::AuthenticationFailed, 401),
            (XksException::AccessDenied, 403),
            (XksException::KeyNotFound, 404),
            (XksException::InvalidUriPath, 404),
            (XksException::Throttling, 429),
            (XksException::UnsupportedOperation, 501),
            (XksException::DependencyTimeout, 503),
            (XksException::Internal, 500),
            (XksException::MethodNotAllowed, 405),
        ] {
            assert_eq!(ex.status().as_u16(), status, "{ex:?}");
        }
    }

    #[test]
    fn internal_failures_do_not_leak_details() {
        let e = exception(ServiceError::Internal("session handle 7 of slot 3".into()));
        assert_eq!(e.exception, XksException::Internal);
        assert!(!e.message.contains("slot"), "{}", e.message);
        let e = exception(ServiceError::Domain(DomainError::KeyNotFound(
            "key-1".into(),
        )));
        assert_eq!(e.exception, XksException::KeyNotFound);
    }
}
