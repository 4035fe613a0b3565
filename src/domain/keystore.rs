//! Keystores and their connection lifecycle, with AWS custom-key-store semantics (DESIGN §2).

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::{
    validate_description, validate_name, DomainError, InstanceState, Key, KeyState, KeystoreAction,
    Millis,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeystoreType {
    Internal,
    Pkcs11,
    AwsKms,
    AzureKeyVault,
    GoogleCloudKms,
    IbmKeyProtect,
    Kmip,
    Xks,
}

impl fmt::Display for KeystoreType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeystoreType::Internal => "internal",
            KeystoreType::Pkcs11 => "pkcs11",
            KeystoreType::AwsKms => "aws_kms",
            KeystoreType::AzureKeyVault => "azure_key_vault",
            KeystoreType::GoogleCloudKms => "google_cloud_kms",
            KeystoreType::IbmKeyProtect => "ibm_key_protect",
            KeystoreType::Kmip => "kmip",
            KeystoreType::Xks => "xks",
        })
    }
}

/// Non-secret, per-type configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum KeystoreConfig {
    /// keyorchd's own token: nothing to configure.
    Internal,
}

impl KeystoreConfig {
    pub fn keystore_type(&self) -> KeystoreType {
        match self {
            KeystoreConfig::Internal => KeystoreType::Internal,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConnectionState {
    Connected,
    Connecting,
    Disconnecting,
    Disconnected,
    Failed,
}

impl ConnectionState {
    pub const ALL: [ConnectionState; 5] = [
        ConnectionState::Connected,
        ConnectionState::Connecting,
        ConnectionState::Disconnecting,
        ConnectionState::Disconnected,
        ConnectionState::Failed,
    ];

    /// Whether `action` may start from this state (the table of DESIGN §2).
    pub fn allows(self, action: KeystoreAction) -> bool {
        use ConnectionState::*;
        match action {
            KeystoreAction::Connect => !matches!(self, Disconnecting | Failed),
            KeystoreAction::Disconnect => !matches!(self, Disconnecting | Disconnected),
            KeystoreAction::UpdateConnectionConfig | KeystoreAction::Delete => self == Disconnected,
            KeystoreAction::CreateKeyTargeting
            | KeystoreAction::Install
            | KeystoreAction::Uninstall => self == Connected,
        }
    }

    fn allowed_from(action: KeystoreAction) -> Vec<ConnectionState> {
        Self::ALL.into_iter().filter(|s| s.allows(action)).collect()
    }
}

impl fmt::Display for ConnectionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConnectionState::Connected => "CONNECTED",
            ConnectionState::Connecting => "CONNECTING",
            ConnectionState::Disconnecting => "DISCONNECTING",
            ConnectionState::Disconnected => "DISCONNECTED",
            ConnectionState::Failed => "FAILED",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConnectionErrorCode {
    InvalidCredentials,
    InsufficientPermissions,
    NetworkErrors,
    TimedOut,
    TargetNotFound,
    ImportKekMissing,
    InvalidConfiguration,
    InternalError,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionError {
    pub code: ConnectionErrorCode,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    Ok,
    NotResponding,
    ConfigurationError,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub status: HealthStatus,
    pub message: String,
    pub last_heartbeat: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keystore {
    pub id: String,
    pub vault_id: String,
    pub name: String,
    pub description: String,
    pub config: KeystoreConfig,
    pub state: ConnectionState,
    /// Set only while FAILED.
    pub error: Option<ConnectionError>,
    pub health: Option<Health>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// A validated create request.
pub struct NewKeystore {
    pub id: String,
    pub vault_id: String,
    pub name: String,
    pub description: String,
    pub config: KeystoreConfig,
}

/// What ConnectKeystore has to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectStart {
    /// Already CONNECTED: a no-op success.
    AlreadyConnected,
    /// Move to CONNECTING and run the connection checks.
    Begin,
}

impl Keystore {
    pub fn new(req: NewKeystore, now: Millis) -> Result<Keystore, DomainError> {
        validate_name("name", &req.name)?;
        validate_description("description", &req.description)?;
        Ok(Keystore {
            id: req.id,
            vault_id: req.vault_id,
            name: req.name,
            description: req.description,
            config: req.config,
            state: ConnectionState::Disconnected,
            error: None,
            health: None,
            created_at: now,
            updated_at: now,
        })
    }

    pub fn keystore_type(&self) -> KeystoreType {
        self.config.keystore_type()
    }

    /// Fails with the documented error when `action` is not allowed in the current state.
    pub fn require(&self, action: KeystoreAction) -> Result<(), DomainError> {
        if self.state.allows(action) {
            Ok(())
        } else {
            Err(DomainError::KeystoreState {
                id: self.id.clone(),
                state: self.state,
                action,
                allowed: ConnectionState::allowed_from(action),
            })
        }
    }

    pub fn begin_connect(&mut self, now: Millis) -> Result<ConnectStart, DomainError> {
        self.require(KeystoreAction::Connect)?;
        if self.state == ConnectionState::Connected {
            return Ok(ConnectStart::AlreadyConnected);
        }
        self.state = ConnectionState::Connecting;
        self.error = None;
        self.updated_at = now;
        Ok(ConnectStart::Begin)
    }

    /// Records the outcome of the connection checks begun by `begin_connect`.
    pub fn finish_connect(&mut self, outcome: Result<(), ConnectionError>, now: Millis) {
        match outcome {
            Ok(()) => {
                self.state = ConnectionState::Connected;
                self.error = None;
                self.health = Some(Health {
                    status: HealthStatus::Ok,
                    message: String::new(),
                    last_heartbeat: now,
                });
            }
            Err(e) => {
                self.state = ConnectionState::Failed;
                self.error = Some(e);
            }
        }
        self.updated_at = now;
    }

    pub fn begin_disconnect(&mut self, now: Millis) -> Result<(), DomainError> {
        self.require(KeystoreAction::Disconnect)?;
        self.state = ConnectionState::Disconnecting;
        self.updated_at = now;
        Ok(())
    }

    pub fn finish_disconnect(&mut self, now: Millis) {
        self.state = ConnectionState::Disconnected;
        self.error = None;
        self.health = None;
        self.updated_at = now;
    }

    /// Name and description may change in any state.
    pub fn update(
        &mut self,
        name: Option<String>,
        description: Option<String>,
        now: Millis,
    ) -> Result<(), DomainError> {
        if let Some(n) = &name {
            validate_name("name", n)?;
        }
        if let Some(d) = &description {
            validate_description("description", d)?;
        }
        if let Some(n) = name {
            self.name = n;
        }
        if let Some(d) = description {
            self.description = d;
        }
        self.updated_at = now;
        Ok(())
    }

    /// DeleteKeystore: only DISCONNECTED, and no live key may still target it.
    /// `live_targeting` are the ids of keys (not DESTROYED*) that list it as a target.
    pub fn check_delete(&self, live_targeting: &[String]) -> Result<(), DomainError> {
        self.require(KeystoreAction::Delete)?;
        if !live_targeting.is_empty() {
            return Err(DomainError::KeystoreHasKeys {
                id: self.id.clone(),
                keys: live_targeting.to_vec(),
            });
        }
        Ok(())
    }
}

/// ACTIVE keys that would be left with no INSTALLED instance in a CONNECTED keystore
/// if `keystore_id` were disconnected. `states` gives every keystore's state.
pub fn stranded_keys(
    keystore_id: &str,
    keys: &[Key],
    states: &HashMap<String, ConnectionState>,
) -> Vec<String> {
    keys.iter()
        .filter(|k| k.state == KeyState::Active)
        .filter(|k| {
            k.instances
                .iter()
                .any(|i| i.keystore_id == keystore_id && i.state == InstanceState::Installed)
        })
        .filter(|k| {
            !k.instances.iter().any(|i| {
                i.keystore_id != keystore_id
                    && i.state == InstanceState::Installed
                    && states.get(&i.keystore_id) == Some(&ConnectionState::Connected)
            })
        })
        .map(|k| k.id.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn keystore(state: ConnectionState) -> Keystore {
        let mut ks = Keystore::new(
            NewKeystore {
                id: "ks_1".into(),
                vault_id: "vault_1".into(),
                name: "main".into(),
                description: String::new(),
                config: KeystoreConfig::Internal,
            },
            0,
        )
        .unwrap();
        ks.state = state;
        ks
    }

    #[test]
    fn new_keystores_start_disconnected() {
        assert_eq!(
            keystore(ConnectionState::Disconnected).state,
            ConnectionState::Disconnected
        );
    }

    #[test]
    fn table_of_design_section_2() {
        use ConnectionState::*;
        // ConnectKeystore is rejected from DISCONNECTING and FAILED.
        for (s, ok) in [
            (Connected, true),
            (Connecting, true),
            (Disconnecting, false),
            (Disconnected, true),
            (Failed, false),
        ] {
            assert_eq!(s.allows(KeystoreAction::Connect), ok, "connect from {s}");
        }
        // DisconnectKeystore is rejected from DISCONNECTING and DISCONNECTED.
        for (s, ok) in [
            (Connected, true),
            (Connecting, true),
            (Disconnecting, false),
            (Disconnected, false),
            (Failed, true),
        ] {
            assert_eq!(
                s.allows(KeystoreAction::Disconnect),
                ok,
                "disconnect from {s}"
            );
        }
        for s in ConnectionState::ALL {
            assert_eq!(s.allows(KeystoreAction::Delete), s == Disconnected);
        }
    }

    #[test]
    fn connect_on_connected_is_a_no_op() {
        let mut ks = keystore(ConnectionState::Connected);
        assert_eq!(ks.begin_connect(1).unwrap(), ConnectStart::AlreadyConnected);
        assert_eq!(ks.state, ConnectionState::Connected);
    }

    #[test]
    fn failed_is_recovered_by_disconnect_then_connect() {
        let mut ks = keystore(ConnectionState::Failed);
        assert!(ks.begin_connect(1).is_err());
        ks.begin_disconnect(2).unwrap();
        ks.finish_disconnect(3);
        assert_eq!(ks.begin_connect(4).unwrap(), ConnectStart::Begin);
        ks.finish_connect(Ok(()), 5);
        assert_eq!(ks.state, ConnectionState::Connected);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Connect(bool),
        Disconnect,
        Delete,
        Rename,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            any::<bool>().prop_map(Op::Connect),
            Just(Op::Disconnect),
            Just(Op::Delete),
            Just(Op::Rename),
        ]
    }

    proptest! {
        /// Random operation sequences: only the transitions of DESIGN §2 happen, a
        /// rejected operation changes nothing, FAILED always carries an error code, and
        /// no operation ever leaves a keystore in a transient state.
        #[test]
        fn random_sequences_respect_the_table(ops in proptest::collection::vec(op(), 0..40)) {
            let mut ks = keystore(ConnectionState::Disconnected);
            for (t, op) in ops.into_iter().enumerate() {
                let before = ks.clone();
                let now = t as i64 + 1;
                match op {
                    Op::Connect(works) => match ks.begin_connect(now) {
                        Ok(ConnectStart::AlreadyConnected) => {
                            prop_assert_eq!(before.state, ConnectionState::Connected);
                            prop_assert_eq!(&ks, &before);
                        }
                        Ok(ConnectStart::Begin) => {
                            prop_assert!(matches!(before.state, ConnectionState::Disconnected | ConnectionState::Connecting));
                            let outcome = if works { Ok(()) } else {
                                Err(ConnectionError { code: ConnectionErrorCode::InternalError, message: "x".into() })
                            };
                            ks.finish_connect(outcome, now);
                            prop_assert_eq!(ks.state, if works { ConnectionState::Connected } else { ConnectionState::Failed });
                        }
                        Err(e) => {
                            prop_assert!(matches!(before.state, ConnectionState::Failed | ConnectionState::Disconnecting));
                            let is_state_error = matches!(e, DomainError::KeystoreState { .. });
                            prop_assert!(is_state_error);
                            prop_assert_eq!(&ks, &before);
                        }
                    },
                    Op::Disconnect => match ks.begin_disconnect(now) {
                        Ok(()) => {
                            ks.finish_disconnect(now);
                            prop_assert_eq!(ks.state, ConnectionState::Disconnected);
                            prop_assert!(ks.error.is_none());
                        }
                        Err(_) => {
                            prop_assert_eq!(before.state, ConnectionState::Disconnected);
                            prop_assert_eq!(&ks, &before);
                        }
                    },
                    Op::Delete => {
                        let r = ks.check_delete(&[]);
                        prop_assert_eq!(r.is_ok(), ks.state == ConnectionState::Disconnected);
                        prop_assert!(ks.check_delete(&["key_1".to_string()]).is_err());
                    }
                    Op::Rename => {
                        ks.update(Some(format!("n{t}")), None, now).unwrap();
                        prop_assert_eq!(ks.state, before.state);
                    }
                }
                prop_assert!(!matches!(ks.state, ConnectionState::Connecting | ConnectionState::Disconnecting));
                prop_assert_eq!(ks.error.is_some(), ks.state == ConnectionState::Failed);
            }
        }
    }
}
