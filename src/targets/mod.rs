//! External keystore targets: the places outside keyorch's own token where managed keys are
//! installed, one module per keystore type behind one [`Target`] trait, the error every
//! target reports, and [`open`], the one place that knows which type a configuration names.
//!
//! The service reaches every target through `Arc<dyn Target>`: a new keystore type is a module
//! here (its target, `impl Target` and its credential check), its configuration, credential
//! and patch types in the domain, its proto messages, one arm each in [`open`] and
//! [`credential_bytes`], and its entry in [`BUILT_TYPES`] (docs/keystores.md).

pub mod aws_kms;
pub mod azure_kv;
pub mod gcp_kms;
pub mod ibm_kms;
pub mod pkcs11;
pub mod xks;

use std::sync::Arc;

use secrecy::SecretString;
use zeroize::Zeroizing;

use crate::domain::xks::{ExternalCiphertext, ExternalKeyMetadata};
use crate::domain::{DomainError, KeystoreConfig, KeystoreType, Secret, TokenRef};
use crate::hsm::{Hsm, HsmError, KeyKind, KeyRef, TokenSelector};

/// Whether a probe may change the target (ConnectKeystore creates the import KEK).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeMode {
    Connect,
    Check,
    /// The periodic health check: the one cheapest call that proves the target answers and
    /// takes the credentials (no permission probing, which costs AWS a dozen requests).
    Heartbeat,
}

/// What a target holds under a key's label.
#[derive(Debug, Clone)]
pub struct RemoteCopy {
    /// The copy is the managed key (same check value; for AWS KMS: keyorch's own key for
    /// this label, with the ARN recorded at install where there is one).
    pub same: bool,
    /// The copy is usable in the target (AWS KMS: key state Enabled).
    pub enabled: bool,
    /// The check value the target computed, where it can compute one (not AWS KMS).
    pub kcv: String,
    /// The target's own id of the copy (AWS KMS: the key ARN).
    pub remote_id: String,
    /// Why the copy is not the managed key, for reports.
    pub detail: String,
}

impl RemoteCopy {
    /// A copy known by the check value `kcv` the target computed, against the managed key's
    /// `expected` one.
    pub fn by_check_value(kcv: String, expected: &str) -> RemoteCopy {
        let same = kcv == expected;
        RemoteCopy {
            same,
            enabled: true,
            detail: if same {
                String::new()
            } else {
                "check value differs".into()
            },
            kcv,
            remote_id: String::new(),
        }
    }
}

/// Why an install failed: in the target, in keyorch's HSM (wrapping for transport), or because
/// the target holds other material under the label than the managed key.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Hsm(#[from] HsmError),
    #[error("{0}")]
    Mismatch(String),
}

/// The managed key a confirmation or a status check is about.
pub struct ManagedKey<'a> {
    pub kind: KeyKind,
    /// keyorch's check value of the key.
    pub kcv: &'a str,
    /// The target's own id of the copy recorded at install ("" when none was).
    pub recorded_remote_id: &'a str,
}

/// One external keystore's target, opened with its configuration and credentials.
///
/// Calls block (PKCS#11, or an HTTP client with its own runtime); the service runs them on
/// blocking threads. `label` is keyorch's reference of a managed key in the target
/// (`keyorch-<key id>`). Errors are classified for the keystore's `connection_error_code`.
pub trait Target: Send + Sync {
    /// The connection checks. `Connect` may change the target (create the import KEK);
    /// `connected` says whether the keystore is CONNECTED. Returns the provider account the
    /// credentials belong to, where the target shows one.
    fn probe(
        &self,
        keystore_id: &str,
        mode: ProbeMode,
        connected: bool,
    ) -> Result<Option<String>, TargetError>;

    /// The provider permissions the credentials lack, by the provider's names; empty where
    /// the provider has none to name.
    fn denied_permissions(&self) -> Result<Vec<String>, TargetError> {
        Ok(Vec::new())
    }

    /// Puts the managed key (`material`, as keyorch's HSM holds it) under `label`, wrapped in
    /// keyorch's HSM for the target's import flow; idempotent (a copy already there is left
    /// for [`Target::confirm_install`] to judge). Returns the target's own id of the copy
    /// ("" when the label is the reference).
    fn install(
        &self,
        hsm: &Hsm,
        material: &KeyRef<'_>,
        label: &str,
    ) -> Result<String, InstallError>;

    /// After [`Target::install`]: proves that the target holds the managed key under `label`
    /// (as `remote_id`) and makes it usable; [`InstallError::Mismatch`] when it holds other
    /// material.
    fn confirm_install(
        &self,
        key: &ManagedKey<'_>,
        label: &str,
        remote_id: &str,
    ) -> Result<(), InstallError>;

    /// Removes whatever keyorch installed under `label`; false when nothing was there. A key
    /// under the label that keyorch did not make is never touched.
    fn uninstall(&self, label: &str) -> Result<bool, TargetError>;

    /// What the target holds under `label`, or None when it holds nothing.
    fn copy(&self, key: &ManagedKey<'_>, label: &str) -> Result<Option<RemoteCopy>, TargetError>;

    /// Whether a deactivation disables an installed copy (it stays, and a reactivation
    /// enables the same copy) rather than uninstalling it.
    fn disables_on_deactivation(&self) -> bool {
        false
    }

    /// Keystores whose keys are references to keys of their own (xks): the external key's
    /// metadata, as the target reports it.
    fn external_key(&self, external_key_id: &str) -> Result<ExternalKeyMetadata, TargetError> {
        Err(references_only(external_key_id))
    }

    /// AES-GCM with the external key, in the external key manager; `call` names the caller
    /// and keyorch's key for the target's own log. The answer has
    /// been checked (its integrity value, where the target gives one).
    fn external_encrypt(
        &self,
        call: &ExternalCall<'_>,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<ExternalCiphertext, TargetError> {
        let _ = (plaintext, aad);
        Err(references_only(call.external_key_id))
    }

    /// The reverse of [`Target::external_encrypt`].
    fn external_decrypt(
        &self,
        call: &ExternalCall<'_>,
        sealed: &ExternalCiphertext,
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, TargetError> {
        let _ = (sealed, aad);
        Err(references_only(call.external_key_id))
    }

    /// Makes the copy under `label` usable or not. Targets whose copies are always usable
    /// (they are uninstalled on deactivation) accept `true` and refuse `false`.
    fn set_enabled(&self, label: &str, enabled: bool) -> Result<(), TargetError> {
        if enabled {
            Ok(())
        } else {
            Err(TargetError::NotSupported(format!(
                "copies in this target cannot be disabled (under {label}); they are uninstalled"
            )))
        }
    }
}

/// Who asks an external key manager for what: the request metadata of a call on an
/// external key.
pub struct ExternalCall<'a> {
    pub external_key_id: &'a str,
    /// keyorch's key id.
    pub key_id: &'a str,
    /// The caller, as keyorch names it.
    pub principal: &'a str,
    /// keyorch's operation: Encrypt, Decrypt or GenerateDataKey.
    pub operation: &'a str,
}

fn references_only(external_key_id: &str) -> TargetError {
    TargetError::NotSupported(format!(
        "this target holds copies of keyorch's keys, not external keys (asked for {external_key_id:?})"
    ))
}

/// Checks new credentials for a keystore of `config` (a credential of another type is
/// refused by its field) and returns the bytes to seal under the master KEK: the PIN, the
/// secret access key, or the xks credential JSON that [`open`] reads back. The configuration
/// is validated first where the credential depends on it (xks), so that a bad configuration
/// field is named before the credential.
pub fn credential_bytes(
    config: &KeystoreConfig,
    secret: &Secret,
) -> Result<Zeroizing<Vec<u8>>, DomainError> {
    secret.require_type(config.keystore_type())?;
    match secret {
        Secret::Pkcs11Pin(pin) => pkcs11::credential_bytes(secret.field(), pin),
        Secret::AwsSecretAccessKey(key) => aws_kms::credential_bytes(secret.field(), key),
        Secret::Xks {
            access_key_id,
            secret_access_key,
            client_key_pem,
        } => xks::credential_bytes(
            config,
            access_key_id,
            secret_access_key,
            client_key_pem.as_ref(),
        ),
        Secret::IbmApiKey(key) => ibm_kms::credential_bytes(secret.field(), key),
        Secret::AzureClientSecret(key) => azure_kv::credential_bytes(secret.field(), key),
        Secret::GoogleServiceAccountKey(json) => gcp_kms::credential_bytes(secret.field(), json),
    }
}

/// The keystore types with a target (and internal, which needs none); the others answer
/// UNIMPLEMENTED.
pub const BUILT_TYPES: [KeystoreType; 8] = [
    KeystoreType::Internal,
    KeystoreType::Pkcs11,
    KeystoreType::AwsKms,
    KeystoreType::Xks,
    KeystoreType::IbmKeyProtect,
    KeystoreType::IbmHpcs,
    KeystoreType::AzureKeyVault,
    KeystoreType::GoogleCloudKms,
];

/// Opens the target an external keystore's configuration names, with its unsealed secret
/// (the PIN, the secret access key, or the xks credential JSON). `None` for keyorchd's own
/// token, which is no target.
pub fn open(
    config: &KeystoreConfig,
    secret: SecretString,
) -> Result<Option<Arc<dyn Target>>, TargetError> {
    Ok(Some(match config {
        KeystoreConfig::Internal => return Ok(None),
        KeystoreConfig::IbmKeyProtect(c) => Arc::new(ibm_kms::IbmKmsTarget::open(
            c,
            ibm_kms::Flavor::KeyProtect,
            secret,
        )?),
        KeystoreConfig::IbmHpcs(c) => Arc::new(ibm_kms::IbmKmsTarget::open(
            c,
            ibm_kms::Flavor::Hpcs,
            secret,
        )?),
        KeystoreConfig::AzureKeyVault(c) => Arc::new(azure_kv::AzureKvTarget::open(c, secret)?),
        KeystoreConfig::GoogleCloudKms(c) => Arc::new(gcp_kms::GcpKmsTarget::open(c, secret)?),
        KeystoreConfig::Pkcs11 { module_path, token } => {
            Arc::new(pkcs11::Pkcs11Target::open(pkcs11::Pkcs11TargetConfig {
                module: module_path.into(),
                token: match token {
                    TokenRef::Label(l) => TokenSelector::Label(l.clone()),
                    TokenRef::Serial(s) => TokenSelector::Serial(s.clone()),
                },
                pin: secret,
            })?)
        }
        KeystoreConfig::AwsKms {
            region,
            endpoint_url,
            access_key_id,
            ..
        } => Arc::new(aws_kms::AwsKmsTarget::open(aws_kms::AwsKmsConfig {
            region: region.clone(),
            endpoint_url: endpoint_url.clone(),
            access_key_id: access_key_id.clone(),
            secret_access_key: secret,
        })?),
        KeystoreConfig::Xks {
            uri_endpoint,
            uri_path,
            ca_cert_pem,
            client_cert_pem,
            access_key_id,
            signing_region,
        } => {
            let creds = xks::XksSealedCredentials::parse(&secret)?;
            Arc::new(xks::XksTarget::open(xks::XksConfig {
                uri_endpoint: uri_endpoint.clone(),
                uri_path: uri_path.clone(),
                ca_cert_pem: ca_cert_pem.clone(),
                client_cert_pem: client_cert_pem.clone(),
                client_key_pem: creds.client_key_pem.clone().map(SecretString::from),
                access_key_id: access_key_id.clone(),
                secret_access_key: SecretString::from(creds.secret_access_key.clone()),
                signing_region: signing_region
                    .clone()
                    .unwrap_or_else(|| crate::domain::DEFAULT_XKS_SIGNING_REGION.to_string()),
            })?)
        }
    }))
}

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
    /// XKS proxy: 404 KeyNotFoundException for an external key.
    #[error("the XKS proxy has no such external key: {0}")]
    XksKeyNotFound(String),
    /// XKS proxy: the external key cannot serve the request (400 InvalidStateException or
    /// InvalidKeyUsageException), or its metadata does not allow Encrypt and Decrypt.
    #[error("the external key cannot be used: {0}")]
    XksKeyInvalid(String),
    /// The target could not open the ciphertext (XKS: 400 InvalidCiphertextException).
    #[error("the target refused the ciphertext: {0}")]
    InvalidCiphertext(String),
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
