//! Managed keys: algorithm/size, the lifecycle of NIST SP 800-57 as IBM UKO runs it
//! (DESIGN §3), and per-target instances.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::{validate_description, validate_name, validate_tags, DomainError, KeyAction, Millis};

/// Algorithm and size, validated together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum KeySpec {
    Aes128,
    Aes192,
    Aes256,
    Rsa2048,
    Rsa3072,
    Rsa4096,
    EcP256,
    EcP384,
    HmacSha256,
}

/// The family part of a [`KeySpec`], as the API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Aes,
    Rsa,
    Ec,
    HmacSha256,
}

impl KeySpec {
    pub const ALL: [KeySpec; 9] = [
        KeySpec::Aes128,
        KeySpec::Aes192,
        KeySpec::Aes256,
        KeySpec::Rsa2048,
        KeySpec::Rsa3072,
        KeySpec::Rsa4096,
        KeySpec::EcP256,
        KeySpec::EcP384,
        KeySpec::HmacSha256,
    ];

    pub fn from_parts(family: Family, bits: u32) -> Result<KeySpec, DomainError> {
        let spec = match (family, bits) {
            (Family::Aes, 128) => KeySpec::Aes128,
            (Family::Aes, 192) => KeySpec::Aes192,
            (Family::Aes, 256) => KeySpec::Aes256,
            (Family::Rsa, 2048) => KeySpec::Rsa2048,
            (Family::Rsa, 3072) => KeySpec::Rsa3072,
            (Family::Rsa, 4096) => KeySpec::Rsa4096,
            (Family::Ec, 256) => KeySpec::EcP256,
            (Family::Ec, 384) => KeySpec::EcP384,
            (Family::HmacSha256, 256) => KeySpec::HmacSha256,
            (family, bits) => {
                let allowed = match family {
                    Family::Aes => "128, 192 or 256",
                    Family::Rsa => "2048, 3072 or 4096",
                    Family::Ec => "256 (P-256) or 384 (P-384)",
                    Family::HmacSha256 => "256",
                };
                return Err(DomainError::invalid(
                    "key_size_bits",
                    format!("{family:?} keys must be {allowed} bits (got {bits})"),
                ));
            }
        };
        Ok(spec)
    }

    pub fn family(self) -> Family {
        match self {
            KeySpec::Aes128 | KeySpec::Aes192 | KeySpec::Aes256 => Family::Aes,
            KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => Family::Rsa,
            KeySpec::EcP256 | KeySpec::EcP384 => Family::Ec,
            KeySpec::HmacSha256 => Family::HmacSha256,
        }
    }

    pub fn bits(self) -> u32 {
        match self {
            KeySpec::Aes128 => 128,
            KeySpec::Aes192 => 192,
            KeySpec::Aes256 | KeySpec::EcP256 | KeySpec::HmacSha256 => 256,
            KeySpec::Rsa2048 => 2048,
            KeySpec::Rsa3072 => 3072,
            KeySpec::Rsa4096 => 4096,
            KeySpec::EcP384 => 384,
        }
    }

    pub fn is_asymmetric(self) -> bool {
        matches!(self.family(), Family::Rsa | Family::Ec)
    }
}

impl fmt::Display for KeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeySpec::Aes128 => "AES-128",
            KeySpec::Aes192 => "AES-192",
            KeySpec::Aes256 => "AES-256",
            KeySpec::Rsa2048 => "RSA-2048",
            KeySpec::Rsa3072 => "RSA-3072",
            KeySpec::Rsa4096 => "RSA-4096",
            KeySpec::EcP256 => "EC P-256",
            KeySpec::EcP384 => "EC P-384",
            KeySpec::HmacSha256 => "HMAC-SHA256",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum KeyState {
    PreActive,
    Active,
    Deactivated,
    Destroyed,
    Compromised,
    DestroyedCompromised,
}

impl KeyState {
    pub const ALL: [KeyState; 6] = [
        KeyState::PreActive,
        KeyState::Active,
        KeyState::Deactivated,
        KeyState::Destroyed,
        KeyState::Compromised,
        KeyState::DestroyedCompromised,
    ];

    /// The lifecycle table. `Ok(next)` for an allowed action; for `Delete` the next
    /// state is irrelevant (the record goes) and is reported as the current one.
    pub fn next(self, action: KeyAction) -> Option<KeyState> {
        use KeyState::*;
        match (action, self) {
            (KeyAction::Activate, PreActive | Deactivated) => Some(Active),
            (KeyAction::Deactivate, Active) => Some(Deactivated),
            (KeyAction::Destroy, PreActive | Deactivated) => Some(Destroyed),
            (KeyAction::Destroy, Compromised) => Some(DestroyedCompromised),
            (KeyAction::MarkCompromised, Active | Deactivated) => Some(Compromised),
            (KeyAction::Delete, Destroyed | DestroyedCompromised) => Some(self),
            (KeyAction::Install | KeyAction::Uninstall, Active) => Some(Active),
            (KeyAction::Update, s) if !s.is_destroyed() => Some(s),
            _ => None,
        }
    }

    pub fn is_destroyed(self) -> bool {
        matches!(self, KeyState::Destroyed | KeyState::DestroyedCompromised)
    }

    pub fn allowed_from(action: KeyAction) -> Vec<KeyState> {
        Self::ALL
            .into_iter()
            .filter(|s| s.next(action).is_some())
            .collect()
    }
}

impl fmt::Display for KeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyState::PreActive => "PRE_ACTIVE",
            KeyState::Active => "ACTIVE",
            KeyState::Deactivated => "DEACTIVATED",
            KeyState::Destroyed => "DESTROYED",
            KeyState::Compromised => "COMPROMISED",
            KeyState::DestroyedCompromised => "DESTROYED_COMPROMISED",
        })
    }
}

/// The stored state of a key's copy in one target keystore. `UNAVAILABLE` is not stored:
/// it is how an instance reads while its keystore is not CONNECTED.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InstanceState {
    NotInstalled,
    Installing,
    Installed,
    Uninstalling,
    Failed,
    Unavailable,
    /// The copy is in the target but disabled there (an aws_kms copy of a DEACTIVATED key):
    /// unusable, and reactivation enables the same remote key again.
    Disabled,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub keystore_id: String,
    pub state: InstanceState,
    pub remote_ref: String,
    /// The target's own id of the copy where it assigns one (aws_kms: the key ARN).
    #[serde(default)]
    pub remote_id: String,
    pub error: String,
    pub updated_at: Millis,
    /// The change to the key's target list that the call in flight on this instance makes
    /// (an intent, like INSTALLING/UNINSTALLING): the reconciler finishes or undoes it with
    /// the instance. Absent in records written before it existed (none).
    #[serde(default, skip_serializing_if = "TargetChange::is_none")]
    pub target_change: TargetChange,
}

/// What an InstallKey or UninstallKey in flight does to the key's target list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TargetChange {
    /// Nothing: the keystore was a target before the call and stays one.
    #[default]
    None,
    /// An InstallKey added the keystore to the targets: undoing the install removes it.
    Joining,
    /// An UninstallKey removes the keystore from the targets once its copy is gone.
    Leaving,
}

impl TargetChange {
    pub fn is_none(&self) -> bool {
        *self == TargetChange::None
    }
}

/// The key material as stored: only ever wrapped under the master KEK.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Material {
    #[serde(with = "super::serde_bytes")]
    pub wrapped: Vec<u8>,
    #[serde(with = "super::serde_bytes::option", default)]
    pub spki_der: Option<Vec<u8>>,
}

impl fmt::Debug for Material {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Material")
            .field(
                "wrapped",
                &format_args!("[{} bytes, wrapped]", self.wrapped.len()),
            )
            .field("spki_der", &self.spki_der.as_ref().map(Vec::len))
            .finish()
    }
}

/// What a key of an xks keystore references: a key of the external key manager behind the
/// keystore's proxy. keyorch holds no material of it; Encrypt and Decrypt go through the
/// proxy. Kept on the key itself, not only on its instance, so that nothing that edits the
/// instances (a target removed, an intent settled) can lose it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ExternalRef {
    pub keystore_id: String,
    pub external_key_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Key {
    pub id: String,
    pub vault_id: String,
    pub name: String,
    pub description: String,
    pub spec: KeySpec,
    pub state: KeyState,
    /// Target keystore ids, in the order given; one instance each.
    pub targets: Vec<String>,
    pub instances: Vec<Instance>,
    pub kcv: String,
    /// `None` once destroyed.
    pub material: Option<Material>,
    pub tags: BTreeMap<String, String>,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub activated_at: Option<Millis>,
    pub deactivated_at: Option<Millis>,
    pub destroyed_at: Option<Millis>,
    pub compromised_at: Option<Millis>,
    /// Set for a key of an xks keystore; absent for keyorch's own keys (and in records
    /// written before external keys existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalRef>,
}

/// A validated create request, before the material exists.
pub struct NewKey {
    pub id: String,
    pub vault_id: String,
    pub name: String,
    pub description: String,
    pub spec: KeySpec,
    pub targets: Vec<String>,
    pub tags: BTreeMap<String, String>,
}

impl NewKey {
    /// Field rules of CreateKey that need no other record.
    pub fn validate(&self) -> Result<(), DomainError> {
        validate_name("name", &self.name)?;
        validate_description("description", &self.description)?;
        validate_tags("tags", &self.tags)?;
        if self.targets.is_empty() {
            return Err(DomainError::invalid(
                "target_keystore_ids",
                "at least one target keystore is required",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for t in &self.targets {
            if t.is_empty() {
                return Err(DomainError::invalid(
                    "target_keystore_ids",
                    "ids must not be empty",
                ));
            }
            if !seen.insert(t) {
                return Err(DomainError::invalid(
                    "target_keystore_ids",
                    format!("keystore {t} is listed twice"),
                ));
            }
        }
        Ok(())
    }
}

/// The deterministic label of a key's copy in a target, derived from the key id.
pub fn remote_ref(key_id: &str) -> String {
    format!("keyorch-{key_id}")
}

impl Key {
    /// A PRE_ACTIVE key with its material, installed nowhere.
    pub fn new(
        req: NewKey,
        material: Material,
        kcv: String,
        now: Millis,
    ) -> Result<Key, DomainError> {
        req.validate()?;
        Ok(Key::pre_active(req, kcv, Some(material), now))
    }

    /// A PRE_ACTIVE key of a validated request, one NOT_INSTALLED instance per target.
    fn pre_active(req: NewKey, kcv: String, material: Option<Material>, now: Millis) -> Key {
        let instances = req
            .targets
            .iter()
            .map(|ks| Instance {
                keystore_id: ks.clone(),
                state: InstanceState::NotInstalled,
                remote_ref: remote_ref(&req.id),
                remote_id: String::new(),
                error: String::new(),
                updated_at: now,
                target_change: TargetChange::None,
            })
            .collect();
        Key {
            id: req.id,
            vault_id: req.vault_id,
            name: req.name,
            description: req.description,
            spec: req.spec,
            state: KeyState::PreActive,
            targets: req.targets,
            instances,
            kcv,
            material,
            tags: req.tags,
            created_at: now,
            updated_at: now,
            activated_at: None,
            deactivated_at: None,
            destroyed_at: None,
            compromised_at: None,
            external: None,
        }
    }

    /// A PRE_ACTIVE reference to the key `external_key_id` of the xks keystore that is the
    /// request's one target. It has no material and no check value; its one instance names
    /// the external key (remote_ref and remote_id) and is INSTALLED while the key is ACTIVE
    /// and the proxy's metadata allows Encrypt and Decrypt.
    pub fn new_external(
        req: NewKey,
        external_key_id: &str,
        now: Millis,
    ) -> Result<Key, DomainError> {
        req.validate()?;
        if req.targets.len() != 1 {
            return Err(DomainError::invalid(
                "target_keystore_ids",
                "a key that references an external key has exactly one target: the xks keystore that holds it",
            ));
        }
        if req.spec != KeySpec::Aes256 {
            return Err(DomainError::invalid(
                "algorithm",
                format!("a key of an xks keystore is AES with key_size_bits 256 (XKS serves AES_256 keys only), not {}", req.spec),
            ));
        }
        if !super::xks::valid_external_key_id(external_key_id) {
            return Err(DomainError::invalid(
                "external_key_id",
                format!(
                    "must be 1 to {} of A-Z a-z 0-9 - . _",
                    super::xks::MAX_XKS_KEY_ID
                ),
            ));
        }
        let keystore_id = req.targets[0].clone();
        let mut key = Key::pre_active(req, String::new(), None, now);
        for i in &mut key.instances {
            i.remote_ref = external_key_id.to_string();
            i.remote_id = external_key_id.to_string();
        }
        key.external = Some(ExternalRef {
            keystore_id,
            external_key_id: external_key_id.to_string(),
        });
        Ok(key)
    }

    pub fn is_external(&self) -> bool {
        self.external.is_some()
    }

    /// The xks keystore and the external key id of an external key.
    pub fn external_ref(&self) -> Option<(&str, &str)> {
        self.external
            .as_ref()
            .map(|e| (e.keystore_id.as_str(), e.external_key_id.as_str()))
    }

    /// InstallKey and UninstallKey move copies of keyorch's own keys; an external key stays
    /// where its external key manager holds it.
    pub fn require_movable(&self, action: KeyAction) -> Result<(), DomainError> {
        match self.external_ref() {
            Some((keystore_id, external_key_id)) => Err(DomainError::ExternalKey {
                id: self.id.clone(),
                keystore_id: keystore_id.to_string(),
                external_key_id: external_key_id.to_string(),
                action,
            }),
            None => Ok(()),
        }
    }

    /// The state `action` leads to, or the documented rejection.
    pub fn require(&self, action: KeyAction) -> Result<KeyState, DomainError> {
        self.state
            .next(action)
            .ok_or_else(|| DomainError::KeyState {
                id: self.id.clone(),
                state: self.state,
                action,
                allowed: KeyState::allowed_from(action),
            })
    }

    pub fn instance(&self, keystore_id: &str) -> Option<&Instance> {
        self.instances.iter().find(|i| i.keystore_id == keystore_id)
    }

    pub fn set_instance(
        &mut self,
        keystore_id: &str,
        state: InstanceState,
        error: String,
        now: Millis,
    ) {
        if let Some(i) = self
            .instances
            .iter_mut()
            .find(|i| i.keystore_id == keystore_id)
        {
            i.state = state;
            i.error = error;
            i.updated_at = now;
        } else {
            if !self.targets.iter().any(|t| t == keystore_id) {
                self.targets.push(keystore_id.to_string());
            }
            self.instances.push(Instance {
                keystore_id: keystore_id.to_string(),
                state,
                remote_ref: remote_ref(&self.id),
                remote_id: String::new(),
                error,
                updated_at: now,
                target_change: TargetChange::None,
            });
        }
        self.updated_at = now;
    }

    /// Starts an install into `keystore_id` (INSTALLING), adding it to the targets when it
    /// is not one yet; that addition is recorded with the intent so that a rollback of the
    /// install also rolls back the target list.
    pub fn begin_install(&mut self, keystore_id: &str, now: Millis) {
        let change = if self.targets.iter().any(|t| t == keystore_id) {
            TargetChange::None
        } else {
            TargetChange::Joining
        };
        self.set_instance(keystore_id, InstanceState::Installing, String::new(), now);
        self.set_target_change(keystore_id, change);
    }

    /// Records what the call in flight on `keystore_id`'s instance does to the targets.
    pub fn set_target_change(&mut self, keystore_id: &str, change: TargetChange) {
        if let Some(i) = self
            .instances
            .iter_mut()
            .find(|i| i.keystore_id == keystore_id)
        {
            i.target_change = change;
        }
    }

    /// Settles `keystore_id`'s instance at `state` (INSTALLED or NOT_INSTALLED) and applies
    /// the target-list change recorded with the intent: a keystore that joined with an
    /// install that did not happen, or that is leaving, is no longer a target.
    pub fn settle_instance(&mut self, keystore_id: &str, state: InstanceState, now: Millis) {
        let change = self
            .instance(keystore_id)
            .map_or(TargetChange::None, |i| i.target_change);
        let drop_target = match change {
            TargetChange::None => false,
            TargetChange::Joining => state != InstanceState::Installed,
            TargetChange::Leaving => state == InstanceState::NotInstalled,
        };
        if drop_target {
            self.remove_target(keystore_id, now);
        } else {
            self.set_instance(keystore_id, state, String::new(), now);
            self.set_target_change(keystore_id, TargetChange::None);
        }
    }

    /// Records the target's own id of the copy in `keystore_id` (aws_kms: the key ARN).
    pub fn set_remote_id(&mut self, keystore_id: &str, remote_id: &str) {
        if let Some(i) = self
            .instances
            .iter_mut()
            .find(|i| i.keystore_id == keystore_id)
        {
            i.remote_id = remote_id.to_string();
        }
    }

    /// Removes a target and its instance.
    pub fn remove_target(&mut self, keystore_id: &str, now: Millis) {
        self.targets.retain(|t| t != keystore_id);
        self.instances.retain(|i| i.keystore_id != keystore_id);
        self.updated_at = now;
    }

    pub fn installed_in(&self) -> impl Iterator<Item = &str> {
        self.instances
            .iter()
            .filter(|i| i.state == InstanceState::Installed)
            .map(|i| i.keystore_id.as_str())
    }

    /// The key as a reader sees it: instances of keystores that are not CONNECTED read
    /// UNAVAILABLE (AWS's key state for keys in a disconnected store). Not stored.
    pub fn as_seen(
        &self,
        states: &std::collections::HashMap<String, super::ConnectionState>,
    ) -> Key {
        let mut seen = self.clone();
        for i in &mut seen.instances {
            if states.get(&i.keystore_id) != Some(&super::ConnectionState::Connected) {
                i.state = InstanceState::Unavailable;
            }
        }
        seen
    }

    /// UninstallKey of an ACTIVE key may not remove its last installed instance.
    pub fn check_uninstall(&self, keystore_id: &str) -> Result<(), DomainError> {
        self.require(KeyAction::Uninstall)?;
        if !self.installed_in().any(|k| k != keystore_id) {
            return Err(DomainError::LastInstance {
                key_id: self.id.clone(),
                keystore_id: keystore_id.to_string(),
            });
        }
        Ok(())
    }

    /// Moves to `state` (already checked with [`Key::require`]), stamping the time.
    pub fn enter(&mut self, state: KeyState, now: Millis) {
        match state {
            KeyState::Active => self.activated_at = Some(now),
            KeyState::Deactivated => self.deactivated_at = Some(now),
            KeyState::Destroyed | KeyState::DestroyedCompromised => {
                self.destroyed_at = Some(now);
                self.material = None;
            }
            KeyState::Compromised => self.compromised_at = Some(now),
            KeyState::PreActive => {}
        }
        self.state = state;
        self.updated_at = now;
    }

    /// UpdateKey: name, description, tags (merged, or replaced when `replace_tags`).
    pub fn update(
        &mut self,
        name: Option<String>,
        description: Option<String>,
        tags: BTreeMap<String, String>,
        replace_tags: bool,
        now: Millis,
    ) -> Result<(), DomainError> {
        self.require(KeyAction::Update)?;
        if let Some(n) = &name {
            validate_name("name", n)?;
        }
        if let Some(d) = &description {
            validate_description("description", d)?;
        }
        let mut new_tags = if replace_tags {
            BTreeMap::new()
        } else {
            self.tags.clone()
        };
        new_tags.extend(tags);
        validate_tags("tags", &new_tags)?;
        if let Some(n) = name {
            self.name = n;
        }
        if let Some(d) = description {
            self.description = d;
        }
        self.tags = new_tags;
        self.updated_at = now;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn key(targets: &[&str]) -> Key {
        Key::new(
            NewKey {
                id: "key_1".into(),
                vault_id: "vault_1".into(),
                name: "k".into(),
                description: String::new(),
                spec: KeySpec::Aes256,
                targets: targets.iter().map(|s| s.to_string()).collect(),
                tags: BTreeMap::new(),
            },
            Material {
                wrapped: vec![1; 40],
                spki_der: None,
            },
            "00".into(),
            0,
        )
        .unwrap()
    }

    #[test]
    fn sizes() {
        assert_eq!(
            KeySpec::from_parts(Family::Aes, 256).unwrap(),
            KeySpec::Aes256
        );
        assert!(KeySpec::from_parts(Family::Aes, 512).is_err());
        assert!(KeySpec::from_parts(Family::Rsa, 1024).is_err());
        assert!(KeySpec::from_parts(Family::Ec, 521).is_err());
        assert!(KeySpec::from_parts(Family::HmacSha256, 128).is_err());
        for s in KeySpec::ALL {
            assert_eq!(KeySpec::from_parts(s.family(), s.bits()).unwrap(), s);
        }
    }

    #[test]
    fn lifecycle_table() {
        use KeyState::*;
        let allowed = |a| KeyState::allowed_from(a);
        assert_eq!(allowed(KeyAction::Activate), vec![PreActive, Deactivated]);
        assert_eq!(allowed(KeyAction::Deactivate), vec![Active]);
        assert_eq!(
            allowed(KeyAction::Destroy),
            vec![PreActive, Deactivated, Compromised]
        );
        assert_eq!(
            allowed(KeyAction::MarkCompromised),
            vec![Active, Deactivated]
        );
        assert_eq!(
            allowed(KeyAction::Delete),
            vec![Destroyed, DestroyedCompromised]
        );
        assert_eq!(
            Compromised.next(KeyAction::Destroy),
            Some(DestroyedCompromised)
        );
    }

    #[test]
    fn creation_rules() {
        let mut k = key(&["ks_1"]);
        assert_eq!(k.state, KeyState::PreActive);
        assert!(k
            .instances
            .iter()
            .all(|i| i.state == InstanceState::NotInstalled));
        assert!(Key::new(
            NewKey {
                id: "key_2".into(),
                vault_id: "v".into(),
                name: "k".into(),
                description: String::new(),
                spec: KeySpec::Aes256,
                targets: vec![],
                tags: BTreeMap::new(),
            },
            Material {
                wrapped: vec![],
                spki_der: None
            },
            String::new(),
            0
        )
        .is_err());
        k.enter(KeyState::Destroyed, 5);
        assert!(k.material.is_none());
    }

    #[test]
    fn last_instance_cannot_be_uninstalled() {
        let mut k = key(&["a", "b"]);
        k.enter(KeyState::Active, 1);
        k.set_instance("a", InstanceState::Installed, String::new(), 1);
        assert!(matches!(
            k.check_uninstall("a"),
            Err(DomainError::LastInstance { .. })
        ));
        k.set_instance("b", InstanceState::Installed, String::new(), 1);
        assert!(k.check_uninstall("a").is_ok());
    }

    /// The targets and instance states of `k`, comparable across calls (times left out).
    fn shape(k: &Key) -> (Vec<String>, Vec<(String, InstanceState)>) {
        (
            k.targets.clone(),
            k.instances
                .iter()
                .map(|i| (i.keystore_id.clone(), i.state))
                .collect(),
        )
    }

    proptest! {
        /// An InstallKey or UninstallKey begun on any keystore (a target or not), settled
        /// either way as the reconciler would, leaves the targets exactly as before the call
        /// (rolled back) or exactly as after it (rolled forward): never a keystore among the
        /// targets that neither state has.
        #[test]
        fn a_settled_intent_leaves_the_targets_as_before_or_as_after(
            targets in proptest::sample::subsequence(vec!["a", "b", "c"], 1..=3),
            on in proptest::sample::select(vec!["a", "b", "c", "d"]),
            uninstall in any::<bool>(),
            roll_forward in any::<bool>(),
        ) {
            let mut k = key(&targets);
            k.enter(KeyState::Active, 1);
            for t in &targets {
                k.set_instance(t, InstanceState::Installed, String::new(), 1);
            }
            let before = k.clone();
            let mut done = k.clone();
            let mut cut = k.clone();
            if uninstall {
                prop_assume!(targets.contains(&on));
                done.remove_target(on, 2);
                cut.set_target_change(on, TargetChange::Leaving);
                cut.set_instance(on, InstanceState::Uninstalling, String::new(), 2);
            } else {
                done.set_instance(on, InstanceState::Installed, String::new(), 2);
                cut.begin_install(on, 2);
            }
            prop_assert!(cut.targets.iter().any(|t| t == on));
            let settled = match (uninstall, roll_forward) {
                (false, true) => InstanceState::Installed,
                _ => InstanceState::NotInstalled,
            };
            // Round-trips through the store's encoding, as a crash would.
            let mut cut: Key = serde_json::from_slice(&serde_json::to_vec(&cut).unwrap()).unwrap();
            cut.settle_instance(on, settled, 3);
            let expected = if uninstall || roll_forward { &done } else { &before };
            // An install rolled back into a keystore that already was a target leaves it
            // NOT_INSTALLED there (it was INSTALLED before: what the target holds decides).
            if !uninstall && !roll_forward && targets.contains(&on) {
                prop_assert_eq!(&cut.targets, &before.targets);
                prop_assert_eq!(cut.instance(on).map(|i| i.state), Some(InstanceState::NotInstalled));
            } else {
                prop_assert_eq!(shape(&cut), shape(expected));
            }
            prop_assert!(cut.instances.iter().all(|i| i.target_change.is_none()));
        }
    }

    #[test]
    fn records_without_a_target_change_still_decode() {
        let mut k = key(&["a"]);
        let mut v = serde_json::to_value(&k).unwrap();
        assert!(v["instances"][0].get("target_change").is_none());
        v["instances"][0]
            .as_object_mut()
            .unwrap()
            .remove("target_change");
        let back: Key = serde_json::from_value(v).unwrap();
        assert_eq!(back, k);
        k.begin_install("b", 1);
        let v = serde_json::to_value(&k).unwrap();
        assert_eq!(v["instances"][1]["target_change"], "JOINING");
    }

    fn external() -> Key {
        Key::new_external(
            NewKey {
                id: "key_x".into(),
                vault_id: "vault_1".into(),
                name: "x".into(),
                description: String::new(),
                spec: KeySpec::Aes256,
                targets: vec!["ks_xks".into()],
                tags: BTreeMap::new(),
            },
            "ext-key.1",
            0,
        )
        .unwrap()
    }

    #[test]
    fn external_keys_reference_one_key_of_one_xks_keystore() {
        let k = external();
        assert_eq!(k.external_ref(), Some(("ks_xks", "ext-key.1")));
        assert!(k.material.is_none() && k.kcv.is_empty());
        assert_eq!(k.state, KeyState::PreActive);
        let decoded: Key = serde_json::from_slice(&serde_json::to_vec(&k).unwrap()).unwrap();
        assert_eq!(decoded, k);
        // Records of keyorch's own keys carry no external field.
        let own = key(&["a"]);
        assert!(serde_json::to_value(&own)
            .unwrap()
            .get("external")
            .is_none());
        assert_eq!(own.external_ref(), None);
        assert!(own.require_movable(KeyAction::Install).is_ok());
        let with = |f: &dyn Fn(&mut NewKey)| {
            let mut n = NewKey {
                id: "key_y".into(),
                vault_id: "v".into(),
                name: "y".into(),
                description: String::new(),
                spec: KeySpec::Aes256,
                targets: vec!["ks".into()],
                tags: BTreeMap::new(),
            };
            f(&mut n);
            n
        };
        let field = |r: Result<Key, DomainError>| r.unwrap_err().field().map(str::to_string);
        assert_eq!(
            field(Key::new_external(
                with(&|n| n.spec = KeySpec::Aes128),
                "e",
                0
            ))
            .as_deref(),
            Some("algorithm")
        );
        assert_eq!(
            field(Key::new_external(
                with(&|n| n.targets.push("b".into())),
                "e",
                0
            ))
            .as_deref(),
            Some("target_keystore_ids")
        );
        assert_eq!(
            field(Key::new_external(with(&|_| {}), "a/b", 0)).as_deref(),
            Some("external_key_id")
        );
    }

    proptest! {
        /// An external key follows the same lifecycle table, and whatever happens to it or
        /// to its instance (an uninstall that removes the target, a cleared remote id, a
        /// settled intent) it keeps naming the same external key, never holds material, and
        /// never moves.
        #[test]
        fn external_keys_keep_their_reference(
            steps in proptest::collection::vec((action(), 0u8..4), 0..40)
        ) {
            let mut k = external();
            for (t, (action, edit)) in steps.into_iter().enumerate() {
                let now = t as i64 + 1;
                if let Ok(next) = k.require(action) {
                    if action != KeyAction::Delete { k.enter(next, now); }
                }
                match edit {
                    0 => k.remove_target("ks_xks", now),
                    1 => k.set_remote_id("ks_xks", ""),
                    2 => k.settle_instance("ks_xks", InstanceState::NotInstalled, now),
                    _ => k.set_instance("ks_xks", InstanceState::Installed, String::new(), now),
                }
                prop_assert_eq!(k.external_ref(), Some(("ks_xks", "ext-key.1")));
                prop_assert!(k.material.is_none());
                let refused = matches!(
                    k.require_movable(KeyAction::Install),
                    Err(DomainError::ExternalKey { .. })
                );
                prop_assert!(refused);
                prop_assert!(k.require_movable(KeyAction::Uninstall).is_err());
            }
        }
    }

    fn action() -> impl Strategy<Value = KeyAction> {
        proptest::sample::select(KeyAction::ALL.to_vec())
    }

    proptest! {
        /// Random action sequences only follow the lifecycle table: destroyed keys never
        /// come back and never hold material, a rejected action changes nothing and
        /// names the states it would have needed.
        #[test]
        fn random_sequences_follow_the_lifecycle(actions in proptest::collection::vec(action(), 0..60)) {
            let mut k = key(&["ks_1"]);
            let mut was_destroyed = false;
            for (t, action) in actions.into_iter().enumerate() {
                let before = k.clone();
                match k.require(action) {
                    Ok(next) => {
                        prop_assert!(KeyState::allowed_from(action).contains(&before.state));
                        if action != KeyAction::Delete { k.enter(next, t as i64 + 1); }
                        if before.state.is_destroyed() {
                            prop_assert_eq!(action, KeyAction::Delete);
                        }
                    }
                    Err(DomainError::KeyState { state, allowed, .. }) => {
                        prop_assert_eq!(state, before.state);
                        prop_assert!(!allowed.contains(&before.state));
                        prop_assert_eq!(&k, &before);
                    }
                    Err(other) => prop_assert!(false, "unexpected error {other:?}"),
                }
                if k.state.is_destroyed() { was_destroyed = true; }
                prop_assert_eq!(k.material.is_none(), k.state.is_destroyed());
                if was_destroyed { prop_assert!(k.state.is_destroyed()); }
                if k.state == KeyState::DestroyedCompromised {
                    prop_assert!(k.compromised_at.is_some());
                }
            }
        }
    }
}
