//! Keystore use cases: create, read, update, delete, connect, disconnect, test, health.

use std::collections::HashMap;

use super::remote::ProbeMode;
use super::vaults::listing;
use super::{new_id, now, Inner, Listing, ServiceError, Services};
use crate::domain::{
    fails_after_checks, stranded_keys, AuditEntry, ConnectStart, ConnectionError,
    ConnectionErrorCode, ConnectionState, DomainError, Health, HealthStatus, InstanceState, Key,
    Keystore, KeystoreConfig, KeystoreType, NewKeystore, Page, SealedCredentials,
};
pub use crate::domain::{AwsKmsPatch, ConfigPatch, Pkcs11Patch, Secret, XksPatch};
use crate::store::{Batch, Table};
use crate::targets::{credential_bytes, BUILT_TYPES};

/// The audit principal of keyorchd's own health checks.
pub const HEALTH_CHECK_PRINCIPAL: &str = "keyorchd health check";

pub struct CreateKeystore {
    pub vault_id: String,
    pub name: String,
    pub description: String,
    pub keystore_type: KeystoreType,
    /// None: the type's default (internal needs none).
    pub config: Option<KeystoreConfig>,
    /// The credential's secret, sealed under the master KEK before it is stored.
    pub secret: Option<Secret>,
    /// pkcs11 keystores made through the AWS endpoint: the PEM certificate to keep
    /// (AWS CloudHSM's TrustAnchorCertificate).
    pub trust_anchor_certificate: Option<String>,
    pub connect: bool,
}

/// UpdateKeystore: unset fields are left as they are.
#[derive(Default)]
pub struct UpdateKeystore {
    pub name: Option<String>,
    pub description: Option<String>,
    /// Configuration changes, in the order given; one of another type than the keystore's
    /// is refused by its field.
    pub config: Vec<ConfigPatch>,
    pub secret: Option<Secret>,
}

#[derive(Default)]
pub struct KeystoreFilter {
    pub vault_id: Option<String>,
    pub name: Option<String>,
    pub keystore_type: Option<KeystoreType>,
    pub state: Option<ConnectionState>,
}

impl KeystoreFilter {
    fn keeps(&self, k: &Keystore) -> bool {
        self.vault_id.as_ref().is_none_or(|v| &k.vault_id == v)
            && self.name.as_ref().is_none_or(|n| &k.name == n)
            && self.keystore_type.is_none_or(|t| k.keystore_type() == t)
            && self.state.is_none_or(|s| k.state == s)
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct DisconnectOptions {
    pub uninstall_keys: bool,
    pub force: bool,
}

#[derive(Debug, Clone)]
pub struct TestOutcome {
    pub result: Result<(), ConnectionError>,
    /// aws_kms: the required permissions the credentials are denied (as far as probing can
    /// tell without changing anything); empty for other types.
    pub denied_permissions: Vec<String>,
}

/// The configuration of a new keystore, or UNIMPLEMENTED for types not built yet.
fn config_for(
    t: KeystoreType,
    given: Option<KeystoreConfig>,
) -> Result<KeystoreConfig, ServiceError> {
    if !BUILT_TYPES.contains(&t) {
        let built: Vec<String> = BUILT_TYPES.iter().map(ToString::to_string).collect();
        return Err(ServiceError::Unimplemented(format!(
            "keystore type {t} is not implemented yet; {} keystores are available",
            built.join(", ")
        )));
    }
    Ok(KeystoreConfig::for_new(t, given)?)
}

impl Inner {
    /// Checks `secret` against the keystore's configuration (its target's rules) and seals
    /// it under the master KEK.
    fn seal_secret(
        &self,
        config: &KeystoreConfig,
        secret: &Secret,
    ) -> Result<SealedCredentials, ServiceError> {
        let plain = credential_bytes(config, secret)?;
        Ok(SealedCredentials {
            sealed: self.hsm.seal_secret(&plain)?,
        })
    }
}

impl Inner {
    fn keystore_view(&self, mut ks: Keystore) -> Keystore {
        if ks.state == ConnectionState::Connected {
            if let Some(h) = self
                .health
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&ks.id)
            {
                ks.health = Some(h.clone());
            }
        } else {
            ks.health = None;
        }
        ks
    }

    /// Ids of keys that are not destroyed and list `keystore_id` as a target.
    fn live_keys_targeting(&self, keystore_id: &str) -> Result<Vec<Key>, ServiceError> {
        Ok(self
            .store
            .list(Table::Keys, None, usize::MAX, |k: &Key| {
                !k.state.is_destroyed() && k.targets.iter().any(|t| t == keystore_id)
            })?
            .0)
    }

    /// CONNECTED → FAILED after `failures` failed health checks in a row, unless a call
    /// changed the keystore since the check read it. Audited as `KeystoreFailed` by the
    /// principal `keyorchd health check`, outcome `error:<connection_error_code>`.
    fn fail_keystore(
        &self,
        checked: &Keystore,
        e: ConnectionError,
        failures: u32,
    ) -> Result<(), ServiceError> {
        let _w = self.lock();
        let Some(mut ks) = self.store.get::<Keystore>(Table::Keystores, &checked.id)? else {
            return Ok(());
        };
        if ks.updated_at != checked.updated_at {
            return Ok(());
        }
        let code = e.code;
        let message = e.message.clone();
        if !ks.fail_connected(e, now()) {
            return Ok(());
        }
        let mut b = Batch::new();
        b.put(Table::Keystores, &ks.id, &ks)?;
        self.commit(b)?;
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&ks.id);
        self.forget_remote(&ks.id);
        tracing::error!(keystore = %ks.id, code = code.as_str(), failed_checks = failures, "keystore FAILED: its target failed {failures} health check(s) in a row; disconnect and connect it once the cause is fixed: {message}");
        self.append_audit(AuditEntry {
            time: now(),
            principal: HEALTH_CHECK_PRINCIPAL.into(),
            action: "KeystoreFailed".into(),
            resource: ks.id.clone(),
            vault_id: ks.vault_id.clone(),
            outcome: format!("error:{}", code.as_str()),
        })?;
        Ok(())
    }

    pub(super) fn connect_keystore(&self, id: &str) -> Result<Keystore, ServiceError> {
        let mut ks = self.keystore(id)?;
        if ks.begin_connect(now())? == ConnectStart::AlreadyConnected {
            return Ok(self.keystore_view(ks));
        }
        // Durable intent: a crash from here on is finished by the start-up reconciler.
        let mut b = Batch::new();
        b.put(Table::Keystores, &ks.id, &ks)?;
        self.commit(b)?;
        let outcome = self
            .probe(&ks, ProbeMode::Connect)
            .and_then(|account| match account {
                Some(account) => ks.bind_account(&account),
                None => Ok(()),
            });
        match &outcome {
            Ok(()) => tracing::info!(keystore = %ks.id, "keystore connected"),
            Err(e) => {
                tracing::warn!(keystore = %ks.id, code = ?e.code, "keystore connection failed: {}", e.message)
            }
        }
        ks.finish_connect(outcome, now());
        let mut b = Batch::new();
        b.put(Table::Keystores, &ks.id, &ks)?;
        self.commit(b)?;
        if let Some(h) = &ks.health {
            self.health
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(ks.id.clone(), h.clone());
        }
        Ok(self.keystore_view(ks))
    }
}

impl Services {
    pub async fn create_keystore(&self, req: CreateKeystore) -> Result<Keystore, ServiceError> {
        self.blocking(move |inner| {
            let config = config_for(req.keystore_type, req.config)?;
            let t = config.keystore_type();
            let credentials = match (&req.secret, config.needs_credentials()) {
                (Some(secret), true) => Some(inner.seal_secret(&config, secret)?),
                (None, true) => {
                    return Err(DomainError::invalid(
                        t.credential_field().unwrap_or("credentials"),
                        format!("is required for a {t} keystore"),
                    )
                    .into())
                }
                (Some(_), false) => {
                    return Err(DomainError::invalid(
                        "credentials",
                        "an internal keystore takes no credentials",
                    )
                    .into())
                }
                (None, false) => None,
            };
            let mut ks = Keystore::new(
                NewKeystore {
                    id: new_id("ks"),
                    vault_id: req.vault_id,
                    name: req.name,
                    description: req.description,
                    config,
                    credentials,
                },
                now(),
            )?;
            if let Some(pem) = req.trust_anchor_certificate {
                ks.set_trust_anchor("trust_anchor_certificate", pem)?;
            }
            let _w = inner.lock();
            inner.vault(&ks.vault_id).map_err(|e| match e {
                ServiceError::Domain(DomainError::Invalid { rule, .. }) => {
                    DomainError::invalid("vault_id", rule).into()
                }
                other => other,
            })?;
            if inner
                .store
                .name_owner(Table::Keystores, &ks.vault_id, &ks.name)?
                .is_some()
            {
                return Err(DomainError::KeystoreNameInUse {
                    vault_id: ks.vault_id,
                    name: ks.name,
                }
                .into());
            }
            let mut b = Batch::new();
            b.put(Table::Keystores, &ks.id, &ks)?;
            b.claim_name(Table::Keystores, &ks.vault_id, &ks.name, &ks.id);
            inner.commit(b)?;
            tracing::info!(keystore = %ks.id, vault = %ks.vault_id, "keystore created");
            if req.connect {
                return inner.connect_keystore(&ks.id);
            }
            Ok(ks)
        })
        .await
    }

    pub async fn get_keystore(&self, id: String) -> Result<Keystore, ServiceError> {
        self.blocking(move |inner| Ok(inner.keystore_view(inner.keystore(&id)?)))
            .await
    }

    pub async fn describe_keystores(
        &self,
        filter: KeystoreFilter,
        page: Page,
    ) -> Result<Listing<Keystore>, ServiceError> {
        self.blocking(move |inner| {
            let (items, more) = inner.store.list(
                Table::Keystores,
                page.after.as_deref(),
                page.size,
                |k: &Keystore| filter.keeps(k),
            )?;
            let items = items.into_iter().map(|k| inner.keystore_view(k)).collect();
            Ok(listing(items, more, |k: &Keystore| &k.id))
        })
        .await
    }

    pub async fn update_keystore(
        &self,
        id: String,
        req: UpdateKeystore,
    ) -> Result<Keystore, ServiceError> {
        self.blocking(move |inner| {
            let _w = inner.lock();
            let mut ks = inner.keystore(&id)?;
            let old_name = ks.name.clone();
            ks.update(req.name, req.description, now())?;
            let mut patches = req.config.into_iter().map(Some).collect::<Vec<_>>();
            if patches.is_empty() {
                // New credentials alone may carry a public half the configuration shows.
                patches.push(None);
            }
            for patch in patches {
                let merged = ks.config.patched(patch, req.secret.as_ref())?;
                if merged != ks.config {
                    ks.update_config(merged, now())?;
                }
            }
            if let Some(secret) = &req.secret {
                if !ks.config.needs_credentials() {
                    return Err(DomainError::invalid(
                        "credentials",
                        "an internal keystore takes no credentials",
                    )
                    .into());
                }
                let sealed = inner.seal_secret(&ks.config, secret)?;
                ks.set_credentials(sealed, now());
            }
            // New settings take effect on the next connection.
            inner.forget_remote(&id);
            let mut b = Batch::new();
            if ks.name != old_name {
                if inner
                    .store
                    .name_owner(Table::Keystores, &ks.vault_id, &ks.name)?
                    .is_some()
                {
                    return Err(DomainError::KeystoreNameInUse {
                        vault_id: ks.vault_id,
                        name: ks.name,
                    }
                    .into());
                }
                b.release_name(Table::Keystores, &ks.vault_id, &old_name);
                b.claim_name(Table::Keystores, &ks.vault_id, &ks.name, &ks.id);
            }
            b.put(Table::Keystores, &ks.id, &ks)?;
            inner.commit(b)?;
            Ok(inner.keystore_view(ks))
        })
        .await
    }

    pub async fn delete_keystore(&self, id: String) -> Result<(), ServiceError> {
        self.blocking(move |inner| {
            let _w = inner.lock();
            let ks = inner.keystore(&id)?;
            let live: Vec<String> = inner
                .live_keys_targeting(&id)?
                .into_iter()
                .map(|k| k.id)
                .collect();
            ks.check_delete(&live)?;
            let mut b = Batch::new();
            // Destroyed keys keep their record; drop the dangling target from them.
            let destroyed = inner
                .store
                .list(Table::Keys, None, usize::MAX, |k: &Key| {
                    k.targets.iter().any(|t| t == &id)
                })?
                .0;
            for mut k in destroyed {
                k.remove_target(&id, now());
                b.put(Table::Keys, &k.id, &k)?;
            }
            b.delete(Table::Keystores, &ks.id);
            b.release_name(Table::Keystores, &ks.vault_id, &ks.name);
            inner.commit(b)?;
            inner
                .health
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            tracing::info!(keystore = %id, "keystore deleted");
            Ok(())
        })
        .await
    }

    pub async fn connect_keystore(&self, id: String) -> Result<Keystore, ServiceError> {
        self.blocking(move |inner| {
            let _w = inner.lock();
            inner.connect_keystore(&id)
        })
        .await
    }

    pub async fn disconnect_keystore(
        &self,
        id: String,
        opts: DisconnectOptions,
    ) -> Result<Keystore, ServiceError> {
        self.blocking(move |inner| {
            let _w = inner.lock();
            let mut ks = inner.keystore(&id)?;
            ks.require(crate::domain::KeystoreAction::Disconnect)?;
            let keys = inner.live_keys_targeting(&id)?;
            let all_targets: Vec<String> = keys.iter().flat_map(|k| k.targets.iter().cloned()).collect();
            let states: HashMap<_, _> = inner.keystore_states(all_targets.iter())?;
            let stranded = stranded_keys(&id, &keys, &states);
            if !stranded.is_empty() && !opts.force && !opts.uninstall_keys {
                return Err(DomainError::StrandedKeys { id, keys: stranded }.into());
            }
            if opts.uninstall_keys {
                // UKO's permanent form: every key leaves this keystore. Its copy there is
                // uninstalled first, while the keystore is still reachable (internal copies
                // are keyorch's own wrapped blob: nothing remote to remove).
                for mut k in keys {
                    // An external key cannot leave the xks keystore that holds it: it stays,
                    // UNAVAILABLE while the keystore is disconnected.
                    if k.is_external() {
                        continue;
                    }
                    if k.instance(&id).is_some_and(|i| i.state != InstanceState::NotInstalled) {
                        inner.uninstall_from(&mut k, &ks)?;
                    }
                    k.remove_target(&id, now());
                    let mut b = Batch::new();
                    b.put(Table::Keys, &k.id, &k)?;
                    inner.commit(b)?;
                }
            }
            ks.begin_disconnect(now())?;
            let mut b = Batch::new();
            b.put(Table::Keystores, &ks.id, &ks)?;
            inner.commit(b)?;
            ks.finish_disconnect(now());
            let mut b = Batch::new();
            b.put(Table::Keystores, &ks.id, &ks)?;
            inner.commit(b)?;
            inner.health.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
            inner.forget_remote(&id);
            tracing::info!(keystore = %id, uninstall_keys = opts.uninstall_keys, force = opts.force, "keystore disconnected");
            Ok(inner.keystore_view(ks))
        })
        .await
    }

    /// Runs the connection checks of a stored keystore without changing it.
    pub async fn test_keystore(&self, id: String) -> Result<TestOutcome, ServiceError> {
        self.blocking(move |inner| {
            let ks = inner.keystore(&id)?;
            Ok(inner.test_outcome(&ks))
        })
        .await
    }

    /// Runs the connection checks of a configuration that is not stored (dry run):
    /// the same field rules as CreateKeystore apply, nothing is written.
    pub async fn test_keystore_candidate(
        &self,
        req: CreateKeystore,
    ) -> Result<TestOutcome, ServiceError> {
        self.blocking(move |inner| {
            let config = config_for(req.keystore_type, req.config)?;
            let t = config.keystore_type();
            let credentials = match &req.secret {
                None if t.test_needs_credentials() => {
                    return Err(DomainError::invalid(
                        t.credential_field().unwrap_or("credentials"),
                        format!("is required for a {t} keystore"),
                    )
                    .into())
                }
                Some(secret) => Some(inner.seal_secret(&config, secret)?),
                None => None,
            };
            let candidate = Keystore::new(
                NewKeystore {
                    id: new_id("ks-candidate"),
                    vault_id: req.vault_id.clone(),
                    name: req.name,
                    description: req.description,
                    config,
                    credentials,
                },
                now(),
            )?;
            inner.vault(&req.vault_id)?;
            // A dry run: checks only, and the opened target is not kept.
            let outcome = inner.test_outcome(&candidate);
            inner.forget_remote(&candidate.id);
            Ok(outcome)
        })
        .await
    }

    /// Refreshes the health of every CONNECTED keystore (run periodically). A keystore whose
    /// checks failed `failed_after` times in a row goes FAILED with the last check's error
    /// (0: never), with an audit event; disconnect + connect recovers it.
    pub async fn refresh_health(&self, failed_after: u32) -> Result<(), ServiceError> {
        self.blocking(move |inner| {
            let connected = inner.store.list(Table::Keystores, None, usize::MAX, |k: &Keystore| {
                k.state == ConnectionState::Connected
            })?;
            for ks in connected.0 {
                let outcome = inner.probe(&ks, ProbeMode::Heartbeat).map(drop);
                let (status, message) = match &outcome {
                    Ok(()) => (HealthStatus::Ok, String::new()),
                    Err(e)
                        if matches!(
                            e.code,
                            ConnectionErrorCode::InvalidConfiguration
                                | ConnectionErrorCode::ImportKekMissing
                                | ConnectionErrorCode::XksProxyInvalidConfiguration
                                | ConnectionErrorCode::XksProxyInvalidTlsConfiguration
                        ) =>
                    {
                        (HealthStatus::ConfigurationError, e.message.clone())
                    }
                    Err(e) => (HealthStatus::NotResponding, e.message.clone()),
                };
                if status != HealthStatus::Ok {
                    tracing::warn!(keystore = %ks.id, ?status, "keystore health check failed: {message}");
                }
                // The check ran without the service's lock: a connect or disconnect may have
                // happened meanwhile, and its health is newer than this result. Those write
                // the store first and the health map second, so re-reading the record under
                // the map's lock tells.
                let fail = {
                    let mut health = inner.health.lock().unwrap_or_else(|p| p.into_inner());
                    let current: Option<Keystore> = inner.store.get(Table::Keystores, &ks.id)?;
                    let unchanged = current.is_some_and(|c| {
                        c.state == ConnectionState::Connected && c.updated_at == ks.updated_at
                    });
                    if unchanged {
                        let failures = match (&outcome, health.get(&ks.id)) {
                            (Ok(()), _) => 0,
                            (Err(_), Some(h)) => h.failed_checks.saturating_add(1),
                            (Err(_), None) => 1,
                        };
                        health.insert(
                            ks.id.clone(),
                            Health { status, message, last_heartbeat: now(), failed_checks: failures },
                        );
                        match outcome {
                            Err(e) if fails_after_checks(failures, failed_after) => Some((e, failures)),
                            _ => None,
                        }
                    } else {
                        None
                    }
                };
                if let Some((e, failures)) = fail {
                    inner.fail_keystore(&ks, e, failures)?;
                }
            }
            Ok(())
        })
        .await
    }
}
