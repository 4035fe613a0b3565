//! Pure rules of keyorch: resources, state machines and validation (DESIGN §1–§3).
//! No I/O, no async, no clock: callers pass `now` in. Property-tested.

mod access;
mod audit;
mod credentials;
mod error;
mod key;
mod keystore;
mod names;
mod paging;
mod serde_bytes;
mod signing;
mod usage;
mod vault;
pub mod xks;

pub use access::{Action, Policy, Principal, Requirement, Role, Subject, ANY_VAULT};
pub use audit::{verify_chain, AuditEntry, AuditEvent, ChainBreak, GENESIS_HASH};
pub use credentials::{
    AwsKmsPatch, AzureKeyVaultPatch, ConfigPatch, GoogleCloudKmsPatch, IbmKmsPatch, Pkcs11Patch,
    Secret, XksPatch,
};
pub use error::{DomainError, KeyAction, KeystoreAction};
pub use key::{
    remote_ref, ExternalRef, Family, Instance, InstanceState, Key, KeySpec, KeyState, Material,
    NewKey, TargetChange,
};
pub use keystore::{
    fails_after_checks, parse_service_account_key, stranded_keys, validate_aws_secret,
    validate_azure_client_secret, validate_ibm_api_key, validate_pem_certificates, validate_pin,
    validate_trust_anchor, validate_xks_access_key_id, validate_xks_secret, AzureEnvironment,
    AzureKeyVaultConfig, ConnectStart, ConnectionError, ConnectionErrorCode, ConnectionState,
    GoogleCloudKmsConfig, Health, HealthStatus, IbmKmsConfig, Keystore, KeystoreConfig,
    KeystoreType, NewKeystore, SealedCredentials, ServiceAccountKeyInfo, TokenRef,
    DEFAULT_GOOGLE_KMS_ENDPOINT, DEFAULT_IBM_IAM_ENDPOINT, DEFAULT_IBM_KEY_RING,
    DEFAULT_XKS_SIGNING_REGION, MAX_GOOGLE_KEY_FILE, MAX_TRUST_ANCHOR, MAX_XKS_PEM,
    XKS_HOLDS_REFERENCES,
};
pub use names::{validate_description, validate_name, validate_tags, MAX_DESCRIPTION, MAX_NAME};
pub use paging::{Page, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
pub use signing::SigningAlgorithm;
pub use usage::{check_payload, check_use, CryptoOp, PayloadKind, MAX_AAD, MAX_PAYLOAD};
pub use vault::Vault;

/// Milliseconds since the Unix epoch.
pub type Millis = i64;
