//! Managed-key use cases: create (material generated in the HSM), lifecycle transitions,
//! install/uninstall into target keystores, metadata updates and listing.

use std::collections::{BTreeMap, HashMap};

use super::vaults::listing;
use super::{new_id, now, require_id, Inner, Listing, ServiceError, Services};
use crate::domain::{
    ConnectionState, DomainError, Family, InstanceState, Key, KeyAction, KeySpec, KeyState,
    Keystore, KeystoreAction, KeystoreConfig, KeystoreType, Material, NewKey, Page, TargetChange,
};
use crate::hsm::{KeyKind, KeyRef};

/// What one target holds for a key (UKO's key status in keystores).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetStatus {
    Active,
    NotActive,
    NotPresent,
    WrongKey,
    Error,
}

#[derive(Debug, Clone)]
pub struct KeyStatus {
    pub keystore_id: String,
    pub status: TargetStatus,
    pub in_sync: bool,
    pub target_kcv: String,
    pub message: String,
}
use crate::store::{Batch, Table};

pub struct CreateKey {
    pub vault_id: String,
    pub name: String,
    pub description: String,
    pub spec: KeySpec,
    pub targets: Vec<String>,
    pub activate: bool,
    pub tags: BTreeMap<String, String>,
    /// A reference to this key of the one target, an xks keystore, instead of material
    /// generated in keyorch's HSM.
    pub external_key_id: Option<String>,
}

#[derive(Default)]
pub struct KeyFilter {
    pub vault_id: Option<String>,
    pub state: Option<KeyState>,
    pub family: Option<Family>,
    pub keystore_id: Option<String>,
    pub name: Option<String>,
}

impl KeyFilter {
    fn keeps(&self, k: &Key) -> bool {
        self.vault_id.as_ref().is_none_or(|v| &k.vault_id == v)
            && self.state.is_none_or(|s| k.state == s)
            && self.family.is_none_or(|f| k.spec.family() == f)
            && self
                .keystore_id
                .as_ref()
                .is_none_or(|ks| k.targets.contains(ks))
            && self.name.as_ref().is_none_or(|n| &k.name == n)
    }
}

pub struct UpdateKey {
    pub name: Option<String>,
    pub description: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub replace_tags: bool,
}

pub(crate) fn kind(spec: KeySpec) -> KeyKind {
    match spec {
        KeySpec::Aes128 => KeyKind::Aes128,
        KeySpec::Aes192 => KeyKind::Aes192,
        KeySpec::Aes256 => KeyKind::Aes256,
        KeySpec::Rsa2048 => KeyKind::Rsa2048,
        KeySpec::Rsa3072 => KeyKind::Rsa3072,
        KeySpec::Rsa4096 => KeyKind::Rsa4096,
        KeySpec::EcP256 => KeyKind::EcP256,
        KeySpec::EcP384 => KeyKind::EcP384,
        KeySpec::HmacSha256 => KeyKind::HmacSha256,
    }
}

/// The HSM's view of a stored key. Destroyed keys have no material.
pub(crate) fn key_ref(key: &Key) -> Result<KeyRef<'_>, ServiceError> {
    let m = key.material.as_ref().ok_or_else(|| DomainError::KeyState {
        id: key.id.clone(),
        state: key.state,
        action: KeyAction::Install,
        allowed: KeyState::allowed_from(KeyAction::Install),
    })?;
    Ok(KeyRef {
        id: &key.id,
        kind: kind(key.spec),
        wrapped: &m.wrapped,
        spki_der: m.spki_der.as_deref(),
    })
}

impl Inner {
    /// Target keystores of a new key: each exists, is in the key's vault and is CONNECTED.
    /// The provider of each must be able to hold a key of `spec`.
    fn check_targets(
        &self,
        vault_id: &str,
        spec: KeySpec,
        targets: &[String],
    ) -> Result<Vec<Keystore>, ServiceError> {
        let mut out = Vec::with_capacity(targets.len());
        for t in targets {
            let ks: Keystore = self
                .store
                .get(Table::Keystores, t)?
                .ok_or_else(|| DomainError::KeystoreNotFound(t.clone()))?;
            if ks.vault_id != vault_id {
                return Err(DomainError::invalid(
                    "target_keystore_ids",
                    format!(
                        "keystore {t} belongs to vault {}, not to the key's vault {vault_id}",
                        ks.vault_id
                    ),
                )
                .into());
            }
            // What the keystore can hold is checked before its state: a key it can never
            // hold is bad input whatever the state (not "connect it first").
            if let Err(limit) = ks.config.accepts(spec) {
                return Err(DomainError::invalid(
                    "target_keystore_ids",
                    format!(
                        "keystore {t} ({}) cannot hold this key: {limit}",
                        ks.keystore_type()
                    ),
                )
                .into());
            }
            ks.require(KeystoreAction::CreateKeyTargeting)?;
            out.push(ks);
        }
        Ok(out)
    }

    /// Installs `key` into every target (activation). All targets must be CONNECTED
    /// before anything is installed; if one install fails, the copies already made are
    /// removed again, so a key that did not become ACTIVE is installed nowhere.
    fn install_everywhere(&self, key: &mut Key) -> Result<(), ServiceError> {
        let keystores = key
            .targets
            .iter()
            .map(|t| self.keystore(t))
            .collect::<Result<Vec<_>, _>>()?;
        for ks in &keystores {
            ks.require(KeystoreAction::Install)?;
        }
        for (n, ks) in keystores.iter().enumerate() {
            if let Err(e) = self.install_into(key, ks) {
                for done in &keystores[..n] {
                    if let Err(undo) = self.uninstall_from(key, done) {
                        tracing::error!(key = %key.id, keystore = %done.id, "rolling back an activation failed: {undo}; the reconciler retries at start-up");
                    }
                }
                self.put_key(key)?;
                return Err(e);
            }
        }
        Ok(())
    }

    /// Uninstalls every copy of `key` that is not NOT_INSTALLED (destroy), or for a
    /// deactivation disables the aws_kms copies and uninstalls the others. External
    /// keystores must be CONNECTED for this; internal copies need nothing remote.
    fn uninstall_everywhere(&self, key: &mut Key, deactivate: bool) -> Result<(), ServiceError> {
        let pending: Vec<String> = key
            .instances
            .iter()
            .filter(|i| i.state != InstanceState::NotInstalled)
            .map(|i| i.keystore_id.clone())
            .collect();
        let mut keystores = pending
            .iter()
            .map(|id| self.keystore(id))
            .collect::<Result<Vec<_>, _>>()?;
        // Internal copies first (they need nothing remote and are recorded with the first
        // external step): a crash once an external intent is recorded then leaves every
        // copy NOT_INSTALLED or on its way there, and the reconciler finishes the
        // deactivation instead of leaving the key ACTIVE with some copies gone.
        keystores.sort_by_key(|ks| !matches!(ks.config, KeystoreConfig::Internal));
        // Check every external keystore that holds a copy first, so nothing is half done by
        // a refusal (an xks keystore's external key is left where it is: nothing remote).
        for ks in &keystores {
            if !matches!(ks.config, KeystoreConfig::Internal) && ks.config.holds_key_copies() {
                ks.require(KeystoreAction::Uninstall)?;
            }
        }
        for ks in &keystores {
            if deactivate {
                self.deactivate_in(key, ks)?;
            } else {
                self.uninstall_from(key, ks)?;
            }
        }
        Ok(())
    }

    fn status_in(&self, key: &Key, keystore_id: &str) -> KeyStatus {
        let expected = key.state == KeyState::Active
            && key.instance(keystore_id).map(|i| i.state) == Some(InstanceState::Installed);
        let outcome = self
            .keystore(keystore_id)
            .and_then(|ks| self.remote_copy(key, &ks));
        let (status, target_kcv, message) = match outcome {
            Ok(None) => (TargetStatus::NotPresent, String::new(), String::new()),
            Ok(Some(c)) if !c.same => (TargetStatus::WrongKey, c.kcv, c.detail),
            Ok(Some(c)) if expected && c.enabled => (TargetStatus::Active, c.kcv, String::new()),
            Ok(Some(c)) if expected => (
                TargetStatus::NotActive,
                c.kcv,
                if c.detail.is_empty() {
                    format!("the copy {} is disabled in the target", c.remote_id)
                } else {
                    format!("{} in the target: {}", c.remote_id, c.detail)
                },
            ),
            Ok(Some(c)) => (TargetStatus::NotActive, c.kcv, String::new()),
            Err(e) => (TargetStatus::Error, String::new(), e.to_string()),
        };
        let instance = key.instance(keystore_id).map(|i| i.state);
        let in_sync = match status {
            TargetStatus::Active => true,
            TargetStatus::NotPresent => !expected,
            TargetStatus::NotActive => {
                !expected
                    && (
                        // Internal keystores hold the key whenever keyorch does: not a copy
                        // to remove; a DISABLED aws_kms copy is what deactivation leaves; an
                        // xks keystore's external key stays its external key manager's.
                        instance == Some(InstanceState::Disabled)
                            || self
                                .keystore(keystore_id)
                                .map(|ks| {
                                    matches!(ks.config, KeystoreConfig::Internal)
                                        || !ks.config.holds_key_copies()
                                })
                                .unwrap_or(false)
                    )
            }
            TargetStatus::WrongKey | TargetStatus::Error => false,
        };
        KeyStatus {
            keystore_id: keystore_id.to_string(),
            status,
            in_sync,
            target_kcv,
            message,
        }
    }

    /// The xks keystore an external key is created in: the key's one target, in its vault,
    /// CONNECTED, of a type that holds references.
    fn external_keystore(&self, key: &Key) -> Result<Keystore, ServiceError> {
        let (keystore_id, _) = key
            .external_ref()
            .ok_or_else(|| ServiceError::Internal(format!("key {} has no external key", key.id)))?;
        let ks: Keystore = self
            .store
            .get(Table::Keystores, keystore_id)?
            .ok_or_else(|| DomainError::KeystoreNotFound(keystore_id.to_string()))?;
        if ks.vault_id != key.vault_id {
            return Err(DomainError::invalid(
                "target_keystore_ids",
                format!(
                    "keystore {keystore_id} belongs to vault {}, not to the key's vault {}",
                    ks.vault_id, key.vault_id
                ),
            )
            .into());
        }
        if ks.config.holds_key_copies() {
            return Err(DomainError::invalid(
                "external_key_id",
                format!(
                    "only keys of xks keystores reference external keys; keystore {keystore_id} is {}",
                    ks.keystore_type()
                ),
            )
            .into());
        }
        ks.require(KeystoreAction::CreateKeyTargeting)?;
        Ok(ks)
    }

    /// CreateKey with external_key_id: a key that references `external_key_id` of its one
    /// target, an xks keystore, once that proxy's GetKeyMetadata shows an enabled AES-256
    /// key for Encrypt and Decrypt (AWS KMS's CreateKey with Origin EXTERNAL_KEY_STORE).
    /// Nothing changes in the target; one external key is referenced by one key at most.
    fn create_external_key(
        &self,
        new: NewKey,
        external_key_id: &str,
        activate: bool,
    ) -> Result<Key, ServiceError> {
        let mut key = Key::new_external(new, external_key_id, now())?;
        require_id("vault_id", &key.vault_id)?;
        self.vault(&key.vault_id)?;
        let ks = self.external_keystore(&key)?;
        // The proxy is asked before the write lock is taken (a network call).
        let mut probe = key.clone();
        self.install_into(&mut probe, &ks)?;
        let _w = self.lock();
        self.vault(&key.vault_id)?;
        self.require_key_name_free(&key.vault_id, &key.name)?;
        // External key ids are claimed per keystore in the names index (keystore ids and
        // vault ids, the scopes of key names, never coincide: "ks-…" and "vault-…").
        if let Some(owner) = self
            .store
            .name_owner(Table::Keys, &ks.id, external_key_id)?
        {
            return Err(DomainError::ExternalKeyInUse {
                keystore_id: ks.id.clone(),
                external_key_id: external_key_id.to_string(),
                key_id: owner,
            }
            .into());
        }
        let ks = self.external_keystore(&key)?;
        // With activate, the metadata check above is the activation's: the key is stored
        // ACTIVE with its instance INSTALLED in one commit (nothing changes in the target,
        // so there is no intent to record between).
        if activate {
            let next = probe.require(KeyAction::Activate)?;
            probe.enter(next, now());
            key = probe;
        }
        let mut b = Batch::new();
        b.put(Table::Keys, &key.id, &key)?;
        b.claim_name(Table::Keys, &key.vault_id, &key.name, &key.id);
        b.claim_name(Table::Keys, &ks.id, external_key_id, &key.id);
        self.commit(b)?;
        tracing::info!(key = %key.id, keystore = %ks.id, external_key_id, state = %key.state, "external key created");
        self.seen(key)
    }

    /// KeyNameInUse unless no key of `vault_id` is named `name`.
    fn require_key_name_free(&self, vault_id: &str, name: &str) -> Result<(), ServiceError> {
        if self
            .store
            .name_owner(Table::Keys, vault_id, name)?
            .is_some()
        {
            return Err(DomainError::KeyNameInUse {
                vault_id: vault_id.to_string(),
                name: name.to_string(),
            }
            .into());
        }
        Ok(())
    }

    fn seen(&self, key: Key) -> Result<Key, ServiceError> {
        let states = self.keystore_states(key.targets.iter())?;
        Ok(key.as_seen(&states))
    }

    fn put_key(&self, key: &Key) -> Result<(), ServiceError> {
        let mut b = Batch::new();
        b.put(Table::Keys, &key.id, key)?;
        self.commit(b)?;
        Ok(())
    }

    fn transition(&self, id: &str, action: KeyAction) -> Result<Key, ServiceError> {
        let _w = self.lock();
        let mut key = self.key(id)?;
        let next = key.require(action)?;
        match action {
            KeyAction::Activate => {
                if key.targets.is_empty() {
                    return Err(DomainError::KeyUnavailable {
                        id: key.id.clone(),
                        reason: "it has no target keystore to activate in".into(),
                    }
                    .into());
                }
                self.install_everywhere(&mut key)?;
            }
            KeyAction::Deactivate => self.uninstall_everywhere(&mut key, true)?,
            KeyAction::Destroy => self.uninstall_everywhere(&mut key, false)?,
            _ => {}
        }
        key.enter(next, now());
        self.put_key(&key)?;
        if next.is_destroyed() {
            self.hsm.forget(&key.id);
        }
        tracing::info!(key = %key.id, state = %key.state, "{action}");
        self.seen(key)
    }
}

impl Services {
    pub async fn create_key(&self, req: CreateKey) -> Result<Key, ServiceError> {
        self.blocking(move |inner| {
            let new = NewKey {
                id: new_id("key"),
                vault_id: req.vault_id,
                name: req.name,
                description: req.description,
                spec: req.spec,
                targets: req.targets,
                tags: req.tags,
            };
            if let Some(external_key_id) = req.external_key_id {
                return inner.create_external_key(new, &external_key_id, req.activate);
            }
            new.validate()?;
            require_id("vault_id", &new.vault_id)?;
            inner.vault(&new.vault_id)?;
            inner.check_targets(&new.vault_id, new.spec, &new.targets)?;
            // Generation can take seconds (RSA): do it before taking the write lock.
            let generated = inner.hsm.generate(kind(new.spec))?;
            let material = Material {
                wrapped: generated.wrapped,
                spki_der: generated.spki_der,
            };
            let _w = inner.lock();
            inner.vault(&new.vault_id)?;
            inner.require_key_name_free(&new.vault_id, &new.name)?;
            inner.check_targets(&new.vault_id, new.spec, &new.targets)?;
            let mut key = Key::new(new, material, generated.kcv, now())?;
            // The key exists (PRE_ACTIVE) before any target is touched, so every install
            // intent refers to a stored key.
            let mut b = Batch::new();
            b.put(Table::Keys, &key.id, &key)?;
            b.claim_name(Table::Keys, &key.vault_id, &key.name, &key.id);
            inner.commit(b)?;
            tracing::info!(key = %key.id, spec = %key.spec, "key created");
            if req.activate {
                let next = key.require(KeyAction::Activate)?;
                inner
                    .install_everywhere(&mut key)
                    .map_err(|e| ServiceError::NotActivated {
                        key_id: key.id.clone(),
                        cause: Box::new(e),
                    })?;
                key.enter(next, now());
                inner.put_key(&key)?;
                tracing::info!(key = %key.id, "key activated");
            }
            inner.seen(key)
        })
        .await
    }

    pub async fn get_key(&self, id: String) -> Result<Key, ServiceError> {
        self.blocking(move |inner| inner.seen(inner.key(&id)?))
            .await
    }

    pub async fn list_keys(
        &self,
        filter: KeyFilter,
        page: Page,
    ) -> Result<Listing<Key>, ServiceError> {
        self.blocking(move |inner| {
            let (items, more) =
                inner
                    .store
                    .list(Table::Keys, page.after.as_deref(), page.size, |k: &Key| {
                        filter.keeps(k)
                    })?;
            let states: HashMap<String, ConnectionState> = inner
                .store
                .all::<Keystore>(Table::Keystores)?
                .into_iter()
                .map(|k| (k.id, k.state))
                .collect();
            let items = items.into_iter().map(|k| k.as_seen(&states)).collect();
            Ok(listing(items, more, |k: &Key| &k.id))
        })
        .await
    }

    pub async fn update_key(&self, id: String, req: UpdateKey) -> Result<Key, ServiceError> {
        self.blocking(move |inner| {
            let _w = inner.lock();
            let mut key = inner.key(&id)?;
            let old_name = key.name.clone();
            key.update(req.name, req.description, req.tags, req.replace_tags, now())?;
            let mut b = Batch::new();
            if key.name != old_name {
                inner.require_key_name_free(&key.vault_id, &key.name)?;
                b.release_name(Table::Keys, &key.vault_id, &old_name);
                b.claim_name(Table::Keys, &key.vault_id, &key.name, &key.id);
            }
            b.put(Table::Keys, &key.id, &key)?;
            inner.commit(b)?;
            inner.seen(key)
        })
        .await
    }

    pub async fn activate_key(&self, id: String) -> Result<Key, ServiceError> {
        self.blocking(move |inner| inner.transition(&id, KeyAction::Activate))
            .await
    }

    pub async fn deactivate_key(&self, id: String) -> Result<Key, ServiceError> {
        self.blocking(move |inner| inner.transition(&id, KeyAction::Deactivate))
            .await
    }

    pub async fn destroy_key(&self, id: String) -> Result<Key, ServiceError> {
        self.blocking(move |inner| inner.transition(&id, KeyAction::Destroy))
            .await
    }

    pub async fn mark_compromised(&self, id: String) -> Result<Key, ServiceError> {
        self.blocking(move |inner| inner.transition(&id, KeyAction::MarkCompromised))
            .await
    }

    pub async fn delete_key(&self, id: String) -> Result<(), ServiceError> {
        self.blocking(move |inner| {
            let _w = inner.lock();
            let key = inner.key(&id)?;
            key.require(KeyAction::Delete)?;
            let mut b = Batch::new();
            b.delete(Table::Keys, &key.id);
            b.release_name(Table::Keys, &key.vault_id, &key.name);
            if let Some((keystore_id, external_key_id)) = key.external_ref() {
                b.release_name(Table::Keys, keystore_id, external_key_id);
            }
            inner.commit(b)?;
            tracing::info!(key = %id, "key deleted");
            Ok(())
        })
        .await
    }

    pub async fn install_key(&self, id: String, keystore_id: String) -> Result<Key, ServiceError> {
        self.blocking(move |inner| {
            let _w = inner.lock();
            let mut key = inner.key(&id)?;
            key.require(KeyAction::Install)?;
            key.require_movable(KeyAction::Install)?;
            require_id("keystore_id", &keystore_id)?;
            let ks = inner.keystore(&keystore_id)?;
            if ks.vault_id != key.vault_id {
                return Err(DomainError::invalid(
                    "keystore_id",
                    format!(
                        "keystore {keystore_id} belongs to vault {}, not to the key's vault {}",
                        ks.vault_id, key.vault_id
                    ),
                )
                .into());
            }
            super::remote::check_accepts(&ks, key.spec)?;
            // Also a repeated install is refused while the keystore is not CONNECTED.
            ks.require(KeystoreAction::Install)?;
            if key.instance(&keystore_id).map(|i| i.state) == Some(InstanceState::Installed) {
                return inner.seen(key);
            }
            inner.install_into(&mut key, &ks)?;
            inner.put_key(&key)?;
            tracing::info!(key = %id, keystore = %keystore_id, "key installed");
            inner.seen(key)
        })
        .await
    }

    /// Asks every target what it holds for the key and compares with what should be there.
    pub async fn key_status(&self, id: String) -> Result<Vec<KeyStatus>, ServiceError> {
        self.blocking(move |inner| {
            let key = inner.key(&id)?;
            Ok(key
                .targets
                .iter()
                .map(|t| inner.status_in(&key, t))
                .collect())
        })
        .await
    }

    /// Repairs drift: re-installs a missing or wrong copy where the key should be
    /// installed, removes a copy where it should not be. Returns the status afterwards.
    pub async fn sync_key(&self, id: String) -> Result<Vec<KeyStatus>, ServiceError> {
        self.blocking(move |inner| {
            let _w = inner.lock();
            let mut key = inner.key(&id)?;
            for t in key.targets.clone() {
                let st = inner.status_in(&key, &t);
                // An external key is its external key manager's: SyncKey reports its drift
                // (missing, disabled) but has no copy to put back.
                if st.in_sync || st.status == TargetStatus::Error || key.is_external() {
                    continue;
                }
                let ks = inner.keystore(&t)?;
                let expected = key.state == KeyState::Active
                    && key.instance(&t).map(|i| i.state) == Some(InstanceState::Installed);
                if expected && st.status == TargetStatus::NotActive {
                    // The right copy, disabled behind keyorch's back (AWS KMS): enable it.
                    tracing::info!(key = %id, keystore = %t, "SyncKey: enabling a disabled copy");
                    inner.enable_remote(&key, &ks)?;
                    continue;
                }
                // Clear whatever is left under the label first (a wrong key, or one half
                // of a key pair), then re-install where the key belongs.
                inner.remove_remote(&key, &ks)?;
                if expected {
                    tracing::info!(key = %id, keystore = %t, status = ?st.status, "SyncKey: re-installing");
                    inner.install_into(&mut key, &ks)?;
                } else {
                    tracing::info!(key = %id, keystore = %t, "SyncKey: removed a copy that should not be there");
                }
            }
            Ok(key.targets.iter().map(|t| inner.status_in(&key, t)).collect())
        })
        .await
    }

    pub async fn uninstall_key(
        &self,
        id: String,
        keystore_id: String,
    ) -> Result<Key, ServiceError> {
        self.blocking(move |inner| {
            let _w = inner.lock();
            let mut key = inner.key(&id)?;
            key.require(KeyAction::Uninstall)?;
            key.require_movable(KeyAction::Uninstall)?;
            require_id("keystore_id", &keystore_id)?;
            if key.instance(&keystore_id).is_none() {
                return Err(DomainError::invalid(
                    "keystore_id",
                    format!("key {id} has no instance in keystore {keystore_id}"),
                )
                .into());
            }
            key.check_uninstall(&keystore_id)?;
            let ks = inner.keystore(&keystore_id)?;
            ks.require(KeystoreAction::Uninstall)?;
            // Recorded with the UNINSTALLING intent: a crash before the outcome is recorded
            // is finished by the reconciler, target list included.
            key.set_target_change(&keystore_id, TargetChange::Leaving);
            inner.uninstall_from(&mut key, &ks)?;
            key.remove_target(&keystore_id, now());
            inner.put_key(&key)?;
            tracing::info!(key = %id, keystore = %keystore_id, "key uninstalled");
            inner.seen(key)
        })
        .await
    }
}

/// What `Services::fill_keys` made.
#[derive(Debug, Clone)]
pub struct Filled {
    pub vault_id: String,
    pub created: usize,
    pub first_id: String,
}

impl Services {
    /// Benchmark fixture behind `keyorchd --fill-keys` (docs/benchmarks.md, "Scale"): creates
    /// `count` ACTIVE AES-256 keys in the vault named `vault_name`, each targeting that vault's
    /// connected internal keystore `<vault_name>-internal` (both made if absent). Each key is
    /// generated in the HSM, wrapped under the master KEK and activated exactly as CreateKey
    /// with `activate` does; they are committed `per_commit` to a durable batch, and one audit
    /// event records the whole fill. `progress` is called after each batch with the running total.
    pub async fn fill_keys(
        &self,
        vault_name: String,
        count: usize,
        per_commit: usize,
        progress: impl Fn(usize) + Send + 'static,
    ) -> Result<Filled, ServiceError> {
        let keystore_name = format!("{vault_name}-internal");
        let vault_id = {
            let found = self
                .blocking({
                    let name = vault_name.clone();
                    move |inner| Ok(inner.store.name_owner(Table::Vaults, "", &name)?)
                })
                .await?;
            match found {
                Some(id) => id,
                None => {
                    self.create_vault(vault_name, "keyorchd --fill-keys".into())
                        .await?
                        .id
                }
            }
        };
        let found = self
            .blocking({
                let (vault_id, name) = (vault_id.clone(), keystore_name.clone());
                move |inner| Ok(inner.store.name_owner(Table::Keystores, &vault_id, &name)?)
            })
            .await?;
        let keystore_id = match found {
            Some(id) => id,
            None => {
                self.create_keystore(super::CreateKeystore {
                    vault_id: vault_id.clone(),
                    name: keystore_name,
                    description: "keyorchd --fill-keys".into(),
                    keystore_type: KeystoreType::Internal,
                    config: None,
                    secret: None,
                    trust_anchor_certificate: None,
                    connect: true,
                })
                .await?
                .id
            }
        };
        self.blocking(move |inner| {
            let per_commit = per_commit.max(1);
            let mut created = 0;
            let mut first_id = String::new();
            while created < count {
                let n = per_commit.min(count - created);
                let mut keys = Vec::with_capacity(n);
                for _ in 0..n {
                    let generated = inner.hsm.generate(KeyKind::Aes256)?;
                    let id = new_id("key");
                    let new = NewKey {
                        name: format!("fill-{}", &id[4..]),
                        id,
                        vault_id: vault_id.clone(),
                        description: String::new(),
                        spec: KeySpec::Aes256,
                        targets: vec![keystore_id.clone()],
                        tags: BTreeMap::new(),
                    };
                    let material = Material {
                        wrapped: generated.wrapped,
                        spki_der: None,
                    };
                    let mut key = Key::new(new, material, generated.kcv, now())?;
                    let next = key.require(KeyAction::Activate)?;
                    inner.install_everywhere(&mut key)?;
                    key.enter(next, now());
                    keys.push(key);
                }
                let _w = inner.lock();
                inner.vault(&vault_id)?;
                let mut b = Batch::new();
                for key in &keys {
                    b.put(Table::Keys, &key.id, key)?;
                    b.claim_name(Table::Keys, &key.vault_id, &key.name, &key.id);
                }
                inner.commit(b)?;
                if first_id.is_empty() {
                    first_id = keys[0].id.clone();
                }
                created += n;
                progress(created);
            }
            inner.append_audit(crate::domain::AuditEntry {
                time: now(),
                principal: "keyorchd --fill-keys".into(),
                action: crate::domain::Action::CreateKey.name(),
                resource: vault_id.clone(),
                vault_id: vault_id.clone(),
                outcome: "ok".into(),
            })?;
            Ok(Filled {
                vault_id,
                created,
                first_id,
            })
        })
        .await
    }
}
