//! The HSM layer's error type, and how PKCS#11 return values map onto it.
//! Messages name the failing call and the `CKR_` value; they never carry a PIN or key bytes.

use std::path::PathBuf;

use cryptoki::context::Function;
use cryptoki::error::{Error as CkError, RvError};

use super::KeyKind;

/// Everything that can go wrong in [`super::Hsm`].
#[derive(Debug, thiserror::Error)]
pub enum HsmError {
    /// The module file is missing, cannot be loaded, or is not a PKCS#11 library.
    #[error("cannot load PKCS#11 module {}: {detail}", path.display())]
    ModuleLoad { path: PathBuf, detail: String },
    /// No initialised token matches the configured label or serial.
    #[error("no PKCS#11 token matches {0}")]
    TokenNotFound(String),
    /// The token rejected the user PIN (`CKR_PIN_INCORRECT`, `CKR_PIN_LEN_RANGE`).
    #[error("the token rejected the user PIN")]
    PinIncorrect,
    /// The user PIN is locked on the token (`CKR_PIN_LOCKED`).
    #[error("the user PIN is locked on the token")]
    PinLocked,
    /// The master KEK (`keyorch-master-kek`) is not on the token.
    #[error("the master key-encryption key is not on the token")]
    KekMissing,
    /// The object labelled `keyorch-master-kek` is unusable: several of them, wrong type or
    /// unsafe attributes (for example extractable).
    #[error("the master key-encryption key is unusable: {0}")]
    KekInvalid(&'static str),
    /// An AES-GCM blob is too short or its tag does not verify.
    #[error("ciphertext is malformed or not authentic")]
    InvalidCiphertext,
    /// A stored key blob or public key does not unwrap, does not parse, or does not match its
    /// kind or its other half.
    #[error("stored key is unusable: {0}")]
    KeyBlobInvalid(&'static str),
    /// The key's kind does not do this operation (for example `encrypt` with an RSA key).
    #[error("a {kind:?} key cannot be used for {op}")]
    KeyKindMismatch { op: &'static str, kind: KeyKind },
    /// The token lacks a mechanism or function we need.
    #[error("not supported by the token: {0}")]
    Unsupported(String),
    /// The device or the session failed, and failed again after reopening sessions.
    #[error("HSM device failure in {op}: {rv}")]
    Device { op: &'static str, rv: String },
    /// Any other PKCS#11 failure, with the `CKR_` name.
    #[error("PKCS#11 {op} failed: {rv}")]
    Pkcs11 { op: &'static str, rv: String },
}

/// An operation's failure before it is classified: a raw cryptoki error keeps its return value
/// so that the retry logic can tell a lost session from everything else.
#[derive(Debug)]
pub(crate) enum OpError {
    Ck(CkError),
    Hsm(HsmError),
    /// The sessions were reset while the call ran: the object handles it used may have
    /// died and been given to other objects, so its outcome is not trusted (a lost session).
    Stale,
}

impl From<CkError> for OpError {
    fn from(e: CkError) -> Self {
        OpError::Ck(e)
    }
}

impl From<HsmError> for OpError {
    fn from(e: HsmError) -> Self {
        OpError::Hsm(e)
    }
}

impl OpError {
    /// The return value, when this is a PKCS#11 error.
    pub(crate) fn rv(&self) -> Option<RvError> {
        match self {
            OpError::Ck(CkError::Pkcs11(rv, _)) => Some(*rv),
            _ => None,
        }
    }

    /// True when sessions or session objects are gone and reopening them may help.
    pub(crate) fn is_session_loss(&self) -> bool {
        matches!(self, OpError::Stale) || self.rv().is_some_and(is_session_loss)
    }

    /// Classifies the error. `after_retry` marks a session loss that survived a reopen.
    pub(crate) fn classify(self, after_retry: bool) -> HsmError {
        match self {
            OpError::Hsm(e) => e,
            OpError::Ck(e) => classify(e, after_retry),
            OpError::Stale => HsmError::Device {
                op: "the session pool",
                rv: "the sessions were reset during the call, twice".into(),
            },
        }
    }
}

/// Return values after which the sessions (and the session objects they own) are discarded,
/// the user logged in again, and the operation retried once.
pub(crate) fn is_session_loss(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::SessionHandleInvalid
            | RvError::SessionClosed
            | RvError::DeviceError
            | RvError::DeviceRemoved
            | RvError::TokenNotPresent
            | RvError::UserNotLoggedIn
            | RvError::ObjectHandleInvalid
            | RvError::KeyHandleInvalid
    )
}

/// Maps a cryptoki error to an [`HsmError`].
pub(crate) fn classify(e: CkError, after_retry: bool) -> HsmError {
    match e {
        CkError::Pkcs11(rv, function) => {
            let op = function_name(function);
            match rv {
                RvError::PinIncorrect | RvError::PinLenRange => HsmError::PinIncorrect,
                RvError::PinLocked => HsmError::PinLocked,
                RvError::MechanismInvalid | RvError::FunctionNotSupported => {
                    HsmError::Unsupported(format!("{op}: {}", ckr_name(rv)))
                }
                rv if is_session_loss(rv) && after_retry => HsmError::Device {
                    op,
                    rv: ckr_name(rv),
                },
                RvError::DeviceError
                | RvError::DeviceRemoved
                | RvError::DeviceMemory
                | RvError::TokenNotPresent
                | RvError::TokenNotRecognized => HsmError::Device {
                    op,
                    rv: ckr_name(rv),
                },
                rv => HsmError::Pkcs11 {
                    op,
                    rv: ckr_name(rv),
                },
            }
        }
        CkError::NullFunctionPointer | CkError::NotSupported => HsmError::Unsupported(format!(
            "the module does not implement a call we need ({e})"
        )),
        other => HsmError::Pkcs11 {
            op: "cryptoki",
            rv: other.to_string(),
        },
    }
}

/// `PinIncorrect` → `CKR_PIN_INCORRECT`: the spec name of a return value.
pub(crate) fn ckr_name(rv: RvError) -> String {
    match rv {
        RvError::VendorDefined(code) => format!("CKR_VENDOR_DEFINED({code:#x})"),
        RvError::UnknownErrorCode(code) => format!("CKR_UNKNOWN({code:#x})"),
        rv => {
            let camel = format!("{rv:?}");
            let mut out = String::with_capacity(camel.len() + 8);
            out.push_str("CKR");
            for c in camel.chars() {
                if c.is_ascii_uppercase() {
                    out.push('_');
                }
                out.push(c.to_ascii_uppercase());
            }
            out
        }
    }
}

/// The C name of a PKCS#11 function, for error messages.
fn function_name(f: Function) -> &'static str {
    match f {
        Function::Initialize => "C_Initialize",
        Function::GetSlotList => "C_GetSlotList",
        Function::GetTokenInfo => "C_GetTokenInfo",
        Function::OpenSession => "C_OpenSession",
        Function::CloseSession => "C_CloseSession",
        Function::Login => "C_Login",
        Function::Logout => "C_Logout",
        Function::CreateObject => "C_CreateObject",
        Function::DestroyObject => "C_DestroyObject",
        Function::GetAttributeValue => "C_GetAttributeValue",
        Function::FindObjectsInit => "C_FindObjectsInit",
        Function::FindObjects => "C_FindObjects",
        Function::FindObjectsFinal => "C_FindObjectsFinal",
        Function::EncryptInit => "C_EncryptInit",
        Function::Encrypt => "C_Encrypt",
        Function::DecryptInit => "C_DecryptInit",
        Function::Decrypt => "C_Decrypt",
        Function::DigestInit => "C_DigestInit",
        Function::Digest => "C_Digest",
        Function::SignInit => "C_SignInit",
        Function::Sign => "C_Sign",
        Function::VerifyInit => "C_VerifyInit",
        Function::Verify => "C_Verify",
        Function::GenerateKey => "C_GenerateKey",
        Function::GenerateKeyPair => "C_GenerateKeyPair",
        Function::WrapKey => "C_WrapKey",
        Function::UnwrapKey => "C_UnwrapKey",
        Function::GenerateRandom => "C_GenerateRandom",
        _ => "a PKCS#11 call",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ckr_names_follow_the_spec() {
        assert_eq!(ckr_name(RvError::PinIncorrect), "CKR_PIN_INCORRECT");
        assert_eq!(
            ckr_name(RvError::SessionHandleInvalid),
            "CKR_SESSION_HANDLE_INVALID"
        );
        assert_eq!(ckr_name(RvError::DataLenRange), "CKR_DATA_LEN_RANGE");
        assert_eq!(
            ckr_name(RvError::VendorDefined(0x8000_0001)),
            "CKR_VENDOR_DEFINED(0x80000001)"
        );
    }

    #[test]
    fn pin_errors_are_classified() {
        let e = CkError::Pkcs11(RvError::PinLenRange, Function::Login);
        assert!(matches!(classify(e, false), HsmError::PinIncorrect));
        let e = CkError::Pkcs11(RvError::KeyHandleInvalid, Function::EncryptInit);
        assert!(matches!(
            classify(e, true),
            HsmError::Device {
                op: "C_EncryptInit",
                ..
            }
        ));
    }
}
