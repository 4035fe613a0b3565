//! Every rule violation the domain can report. The API layer alone maps these to gRPC
//! codes and `ErrorInfo` reasons (one exhaustive match in `api::status`).

use std::fmt;

use super::{ConnectionState, CryptoOp, KeySpec, KeyState, SigningAlgorithm};

/// A keystore operation, for messages and the transition table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeystoreAction {
    Connect,
    Disconnect,
    UpdateConnectionConfig,
    Delete,
    CreateKeyTargeting,
    Install,
    Uninstall,
}

impl fmt::Display for KeystoreAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeystoreAction::Connect => "ConnectKeystore",
            KeystoreAction::Disconnect => "DisconnectKeystore",
            KeystoreAction::UpdateConnectionConfig => "UpdateKeystore (connection config)",
            KeystoreAction::Delete => "DeleteKeystore",
            KeystoreAction::CreateKeyTargeting => "CreateKey targeting it",
            KeystoreAction::Install => "InstallKey",
            KeystoreAction::Uninstall => "UninstallKey",
        })
    }
}

/// A key lifecycle operation, for messages and the transition table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyAction {
    Activate,
    Deactivate,
    Destroy,
    MarkCompromised,
    Delete,
    Install,
    Uninstall,
    Update,
}

impl KeyAction {
    pub const ALL: [KeyAction; 8] = [
        KeyAction::Activate,
        KeyAction::Deactivate,
        KeyAction::Destroy,
        KeyAction::MarkCompromised,
        KeyAction::Delete,
        KeyAction::Install,
        KeyAction::Uninstall,
        KeyAction::Update,
    ];
}

impl fmt::Display for KeyAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyAction::Activate => "ActivateKey",
            KeyAction::Deactivate => "DeactivateKey",
            KeyAction::Destroy => "DestroyKey",
            KeyAction::MarkCompromised => "MarkCompromised",
            KeyAction::Delete => "DeleteKey",
            KeyAction::Install => "InstallKey",
            KeyAction::Uninstall => "UninstallKey",
            KeyAction::Update => "UpdateKey",
        })
    }
}

fn list(items: &[String]) -> String {
    items.join(", ")
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// A field breaks a rule.
    #[error("{field}: {rule}")]
    Invalid { field: String, rule: String },
    #[error("vault {0} not found")]
    VaultNotFound(String),
    #[error("keystore {0} not found")]
    KeystoreNotFound(String),
    #[error("key {0} not found")]
    KeyNotFound(String),
    #[error("name: a vault named {0:?} already exists")]
    VaultNameInUse(String),
    #[error("name: a keystore named {name:?} already exists in vault {vault_id}")]
    KeystoreNameInUse { vault_id: String, name: String },
    #[error("name: a key named {name:?} already exists in vault {vault_id}")]
    KeyNameInUse { vault_id: String, name: String },
    #[error("vault {id} still holds {keystores} keystore(s) and {keys} key(s); delete them first")]
    VaultNotEmpty {
        id: String,
        keystores: usize,
        keys: usize,
    },
    #[error("keystore {id} is {state}; {action} is not allowed in that state{}", allowed_hint(.allowed))]
    KeystoreState {
        id: String,
        state: ConnectionState,
        action: KeystoreAction,
        allowed: Vec<ConnectionState>,
    },
    #[error("keystore {id} is still a target of key(s) {}; destroy those keys or uninstall them from it first", list(.keys))]
    KeystoreHasKeys { id: String, keys: Vec<String> },
    #[error("disconnecting keystore {id} would leave ACTIVE key(s) {} with no connected target; pass force to disconnect anyway, or uninstall_keys to uninstall them first", list(.keys))]
    StrandedKeys { id: String, keys: Vec<String> },
    #[error("key {id} is {state}; {action} requires {}", states(.allowed))]
    KeyState {
        id: String,
        state: KeyState,
        action: KeyAction,
        allowed: Vec<KeyState>,
    },
    #[error("key {id} is an {spec} key; {op} is not a valid use of it")]
    KeyUsage {
        id: String,
        spec: KeySpec,
        op: CryptoOp,
    },
    #[error("key {id} is {state}; {op} requires {}", states(.op.allowed_states()))]
    KeyUnavailableState {
        id: String,
        state: KeyState,
        op: CryptoOp,
    },
    /// AWS KMS: InvalidKeyUsageException covers a signing algorithm that does not fit the key spec.
    #[error("algorithm: {algorithm} cannot be used with key {id} ({spec}); allowed: {}", algorithms(.allowed))]
    SigningAlgorithm {
        id: String,
        spec: KeySpec,
        algorithm: SigningAlgorithm,
        allowed: Vec<SigningAlgorithm>,
    },
    #[error("key {id} cannot be used: {reason}")]
    KeyUnavailable { id: String, reason: String },
    #[error("key {key_id} is installed only in keystore {keystore_id}; UninstallKey would leave the ACTIVE key installed nowhere (deactivate it instead)")]
    LastInstance { key_id: String, keystore_id: String },
    /// AWS KMS: UnsupportedOperationException (e.g. ImportKeyMaterial on a key of an
    /// external key store).
    #[error("key {id} references the external key {external_key_id} of xks keystore {keystore_id}; {action} does not apply to it (its material never leaves the external key manager)")]
    ExternalKey {
        id: String,
        keystore_id: String,
        external_key_id: String,
        action: KeyAction,
    },
    /// AWS KMS: XksKeyAlreadyInUseException.
    #[error("external_key_id: the external key {external_key_id} of keystore {keystore_id} is already referenced by key {key_id}")]
    ExternalKeyInUse {
        keystore_id: String,
        external_key_id: String,
        key_id: String,
    },
}

fn allowed_hint(allowed: &[ConnectionState]) -> String {
    if allowed.is_empty() {
        String::new()
    } else {
        let names: Vec<String> = allowed.iter().map(|s| s.to_string()).collect();
        format!(" (allowed from: {})", names.join(", "))
    }
}

fn algorithms(allowed: &[SigningAlgorithm]) -> String {
    if allowed.is_empty() {
        return "none (this key does not sign)".to_string();
    }
    let names: Vec<String> = allowed.iter().map(|a| a.to_string()).collect();
    names.join(", ")
}

fn states(allowed: &[KeyState]) -> String {
    if allowed.is_empty() {
        return "a state it can never reach".to_string();
    }
    let names: Vec<String> = allowed.iter().map(|s| s.to_string()).collect();
    names.join(" or ")
}

impl DomainError {
    pub fn invalid(field: impl Into<String>, rule: impl Into<String>) -> Self {
        DomainError::Invalid {
            field: field.into(),
            rule: rule.into(),
        }
    }

    /// The request field at fault, when there is one.
    pub fn field(&self) -> Option<&str> {
        match self {
            DomainError::Invalid { field, .. } => Some(field),
            DomainError::VaultNameInUse(_)
            | DomainError::KeystoreNameInUse { .. }
            | DomainError::KeyNameInUse { .. } => Some("name"),
            DomainError::SigningAlgorithm { .. } => Some("algorithm"),
            DomainError::ExternalKeyInUse { .. } => Some("external_key_id"),
            _ => None,
        }
    }
}
