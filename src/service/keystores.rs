//! Keystore use cases: create, read, update, delete, connect, disconnect, test, health.

use std::collections::HashMap;

use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use super::remote::ProbeMode;
use super::vaults::listing;
use super::{new_id, now, Inner, Listing, ServiceError, Services};
use crate::domain::{
    fails_after_checks, stranded_keys, validate_aws_secret, validate_pin,
    validate_xks_access_key_id, validate_xks_secret, AuditEntry, ConnectStart, ConnectionError,
    ConnectionErrorCode, ConnectionState, DomainError, Health, HealthStatus, InstanceState, Key,
    Keystore, KeystoreConfig, KeystoreType, NewKeystore, Page, SealedCredentials, TokenRef,
    MAX_XKS_PEM,
};
use crate::store::{Batch, Table};
use crate::targets::xks::XksSealedCredentials;

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

/// The secret half of a keystore's credentials, as the API received it.
pub enum Secret {
    Pkcs11Pin(SecretString),
    AwsSecretAccessKey(SecretString),
    /// An XKS proxy's SigV4 credential (the access key id goes into the configuration,
    /// where it is shown back) and the client certificate's key, when there is one.
    Xks {
        access_key_id: String,
        secret_access_key: SecretString,
        client_key_pem: Option<SecretString>,
    },
}

impl Secret {
    /// The API field it came in.
    fn field(&self) -> &'static str {
        match self {
            Secret::Pkcs11Pin(_) => "pkcs11_credentials.pin",
            Secret::AwsSecretAccessKey(_) => "aws_kms_credentials.secret_access_key",
            Secret::Xks { .. } => "xks_credentials",
        }
    }

    fn keystore_type(&self) -> KeystoreType {
        match self {
            Secret::Pkcs11Pin(_) => KeystoreType::Pkcs11,
            Secret::AwsSecretAccessKey(_) => KeystoreType::AwsKms,
            Secret::Xks { .. } => KeystoreType::Xks,
        }
    }

    /// The API field the credentials of a keystore type come in.
    fn field_for(t: KeystoreType) -> &'static str {
        match t {
            KeystoreType::AwsKms => "aws_kms_credentials.secret_access_key",
            KeystoreType::Xks => "xks_credentials",
            _ => "pkcs11_credentials.pin",
        }
    }

    /// The access key id an xks credential carries.
    fn xks_access_key_id(&self) -> Option<&str> {
        match self {
            Secret::Xks { access_key_id, .. } => Some(access_key_id),
            _ => None,
        }
    }
}

/// The credential rules of an xks keystore against its (validated) configuration: the
/// access key id is the configuration's, the secret follows AWS's rule, and a client key
/// comes exactly with a client certificate and belongs to it (the TLS settings build).
fn check_xks_secret(config: &KeystoreConfig, secret: &Secret) -> Result<(), ServiceError> {
    let (
        KeystoreConfig::Xks {
            uri_endpoint,
            ca_cert_pem,
            client_cert_pem,
            access_key_id: configured,
            ..
        },
        Secret::Xks {
            access_key_id,
            secret_access_key,
            client_key_pem,
        },
    ) = (config, secret)
    else {
        return Ok(());
    };
    validate_xks_access_key_id("xks_credentials.access_key_id", access_key_id)?;
    if access_key_id != configured {
        return Err(DomainError::invalid(
            "xks.access_key_id",
            "is output only: it is xks_credentials.access_key_id; leave it empty",
        )
        .into());
    }
    validate_xks_secret(
        "xks_credentials.secret_access_key",
        secret_access_key.expose_secret(),
    )?;
    if let Some(key) = client_key_pem {
        if key.expose_secret().len() > MAX_XKS_PEM {
            return Err(DomainError::invalid(
                "xks_credentials.client_key_pem",
                format!("must be at most {MAX_XKS_PEM} bytes"),
            )
            .into());
        }
    }
    if uri_endpoint.starts_with("https://") || client_key_pem.is_some() {
        crate::targets::xks::tls_config(
            ca_cert_pem.as_deref(),
            client_cert_pem.as_deref(),
            client_key_pem.as_ref(),
        )
        .map_err(|(field, rule)| DomainError::invalid(field, rule))?;
    }
    Ok(())
}

/// UpdateKeystore: unset fields are left as they are.
#[derive(Default)]
pub struct UpdateKeystore {
    pub name: Option<String>,
    pub description: Option<String>,
    pub pkcs11: Option<Pkcs11Patch>,
    pub aws_kms: Option<AwsKmsPatch>,
    pub xks: Option<XksPatch>,
    pub secret: Option<Secret>,
}

/// Changes to an xks configuration; `None` keeps the stored value.
#[derive(Debug, Clone, Default)]
pub struct XksPatch {
    pub uri_endpoint: Option<String>,
    pub uri_path: Option<String>,
    /// `Some(None)` goes back to the system's roots.
    pub ca_cert_pem: Option<Option<String>>,
    /// `Some(None)` stops presenting a client certificate.
    pub client_cert_pem: Option<Option<String>>,
    pub signing_region: Option<String>,
    /// Output only: accepted when equal to the resulting value.
    pub access_key_id: Option<String>,
}

/// Changes to an aws_kms configuration; `None` keeps the stored value.
#[derive(Debug, Clone, Default)]
pub struct AwsKmsPatch {
    pub region: Option<String>,
    /// `Some(None)` goes back to AWS's public endpoint.
    pub endpoint_url: Option<Option<String>>,
    pub access_key_id: Option<String>,
    /// Output only: accepted when equal to the stored value.
    pub account_id: Option<String>,
}

/// Changes to a pkcs11 configuration; `None` keeps the stored value.
#[derive(Debug, Clone, Default)]
pub struct Pkcs11Patch {
    pub module_path: Option<String>,
    pub token: Option<TokenRef>,
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
    match (t, given) {
        (KeystoreType::Internal, None | Some(KeystoreConfig::Internal)) => Ok(KeystoreConfig::Internal),
        (KeystoreType::Pkcs11, Some(c @ KeystoreConfig::Pkcs11 { .. })) => Ok(c),
        (KeystoreType::Pkcs11, _) => Err(DomainError::invalid("pkcs11", "is required for a pkcs11 keystore").into()),
        (KeystoreType::AwsKms, Some(c @ KeystoreConfig::AwsKms { .. })) => Ok(c),
        (KeystoreType::AwsKms, _) => Err(DomainError::invalid("aws_kms", "is required for an aws_kms keystore").into()),
        (KeystoreType::Xks, Some(c @ KeystoreConfig::Xks { .. })) => Ok(c),
        (KeystoreType::Xks, _) => Err(DomainError::invalid("xks", "is required for an xks keystore").into()),
        (KeystoreType::Internal, Some(_)) => Err(DomainError::invalid("config", "does not match type internal").into()),
        (other, _) => Err(ServiceError::Unimplemented(format!(
            "keystore type {other} is not implemented yet; internal, pkcs11, aws_kms and xks keystores are available"
        ))),
    }
}

impl Inner {
    /// Checks that `secret` fits a keystore of type `t`, validates it and seals it under the
    /// master KEK.
    fn seal_secret(
        &self,
        t: KeystoreType,
        secret: &Secret,
    ) -> Result<SealedCredentials, ServiceError> {
        if secret.keystore_type() != t {
            return Err(DomainError::invalid(
                secret.field(),
                format!("does not fit a {t} keystore; send {}", Secret::field_for(t)),
            )
            .into());
        }
        let plain: Zeroizing<Vec<u8>> = match secret {
            Secret::Pkcs11Pin(s) => {
                validate_pin(secret.field(), s.expose_secret())?;
                Zeroizing::new(s.expose_secret().as_bytes().to_vec())
            }
            Secret::AwsSecretAccessKey(s) => {
                validate_aws_secret(secret.field(), s.expose_secret())?;
                Zeroizing::new(s.expose_secret().as_bytes().to_vec())
            }
            Secret::Xks {
                secret_access_key,
                client_key_pem,
                ..
            } => {
                // The rules were checked against the configuration (check_xks_secret).
                let sealed = XksSealedCredentials {
                    secret_access_key: secret_access_key.expose_secret().to_string(),
                    client_key_pem: client_key_pem
                        .as_ref()
                        .map(|k| k.expose_secret().to_string()),
                };
                Zeroizing::new(serde_json::to_vec(&sealed).map_err(|e| {
                    ServiceError::Internal(format!("encoding xks credentials: {e}"))
                })?)
            }
        };
        Ok(SealedCredentials {
            sealed: self.hsm.seal_secret(&plain)?,
        })
    }
}

/// Before sealing: an xks credential is checked against its configuration (which is
/// validated first, so that a bad configuration field is named before the credential).
fn check_secret_against(config: &KeystoreConfig, secret: &Secret) -> Result<(), ServiceError> {
    if let (KeystoreConfig::Xks { .. }, Secret::Xks { access_key_id, .. }) = (config, secret) {
        // The configuration's access key id comes from the credential: check the rest of
        // the configuration with it.
        let mut c = config.clone();
        if let KeystoreConfig::Xks {
            access_key_id: a, ..
        } = &mut c
        {
            if a.is_empty() {
                a.clone_from(access_key_id);
            }
        }
        c.validate()?;
        check_xks_secret(&c, secret)?;
    }
    Ok(())
}

/// Merges an aws_kms patch into the stored configuration.
fn merged_aws(config: &KeystoreConfig, patch: AwsKmsPatch) -> Result<KeystoreConfig, ServiceError> {
    let KeystoreConfig::AwsKms {
        region,
        endpoint_url,
        access_key_id,
        account_id,
    } = config
    else {
        return Err(
            DomainError::invalid("aws_kms", "this keystore is not an aws_kms keystore").into(),
        );
    };
    if patch.account_id.is_some() && patch.account_id != *account_id {
        return Err(DomainError::invalid(
            "aws_kms.account_id",
            "is output only: it is learnt at connect and never changes",
        )
        .into());
    }
    Ok(KeystoreConfig::AwsKms {
        region: patch.region.unwrap_or_else(|| region.clone()),
        endpoint_url: patch.endpoint_url.unwrap_or_else(|| endpoint_url.clone()),
        access_key_id: patch.access_key_id.unwrap_or_else(|| access_key_id.clone()),
        account_id: account_id.clone(),
    })
}

/// Merges an xks patch (and the access key id of new credentials) into the stored
/// configuration.
fn merged_xks(
    config: &KeystoreConfig,
    patch: XksPatch,
    secret: Option<&Secret>,
) -> Result<KeystoreConfig, ServiceError> {
    let KeystoreConfig::Xks {
        uri_endpoint,
        uri_path,
        ca_cert_pem,
        client_cert_pem,
        access_key_id,
        signing_region,
    } = config
    else {
        return Err(DomainError::invalid("xks", "this keystore is not an xks keystore").into());
    };
    let new_key_id = secret
        .and_then(Secret::xks_access_key_id)
        .unwrap_or(access_key_id)
        .to_string();
    if patch
        .access_key_id
        .as_ref()
        .is_some_and(|a| *a != new_key_id)
    {
        return Err(DomainError::invalid(
            "xks.access_key_id",
            "is output only: it changes with xks_credentials.access_key_id; leave it empty",
        )
        .into());
    }
    let new_client_cert = patch
        .client_cert_pem
        .unwrap_or_else(|| client_cert_pem.clone());
    if new_client_cert != *client_cert_pem && secret.is_none() {
        return Err(DomainError::invalid(
            "xks.client_cert_pem",
            "changes only together with xks_credentials (its private key is xks_credentials.client_key_pem)",
        )
        .into());
    }
    Ok(KeystoreConfig::Xks {
        uri_endpoint: patch.uri_endpoint.unwrap_or_else(|| uri_endpoint.clone()),
        uri_path: patch.uri_path.unwrap_or_else(|| uri_path.clone()),
        ca_cert_pem: patch.ca_cert_pem.unwrap_or_else(|| ca_cert_pem.clone()),
        client_cert_pem: new_client_cert,
        access_key_id: new_key_id,
        signing_region: patch.signing_region.or_else(|| signing_region.clone()),
    })
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
                (Some(secret), true) => {
                    check_secret_against(&config, secret)?;
                    Some(inner.seal_secret(t, secret)?)
                }
                (None, true) => {
                    return Err(DomainError::invalid(
                        Secret::field_for(t),
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
            if let Some(patch) = req.pkcs11 {
                let KeystoreConfig::Pkcs11 { module_path, token } = &ks.config else {
                    return Err(DomainError::invalid(
                        "pkcs11",
                        "this keystore is not a pkcs11 keystore",
                    )
                    .into());
                };
                let merged = KeystoreConfig::Pkcs11 {
                    module_path: patch.module_path.unwrap_or_else(|| module_path.clone()),
                    token: patch.token.unwrap_or_else(|| token.clone()),
                };
                ks.update_config(merged, now())?;
            }
            if let Some(patch) = req.aws_kms {
                let merged = merged_aws(&ks.config, patch)?;
                let key_id = |c: &KeystoreConfig| match c {
                    KeystoreConfig::AwsKms { access_key_id, .. } => Some(access_key_id.clone()),
                    _ => None,
                };
                if key_id(&ks.config) != key_id(&merged) && req.secret.is_none() {
                    return Err(DomainError::invalid(
                        "aws_kms.access_key_id",
                        "changes only together with aws_kms_credentials.secret_access_key (both halves of the credential pair)",
                    )
                    .into());
                }
                ks.update_config(merged, now())?;
            }
            let xks_patch = match (&ks.config, req.xks, &req.secret) {
                (KeystoreConfig::Xks { .. }, patch, Some(Secret::Xks { .. })) => {
                    Some(patch.unwrap_or_default())
                }
                (_, patch, _) => patch,
            };
            if let Some(patch) = xks_patch {
                let merged = merged_xks(&ks.config, patch, req.secret.as_ref())?;
                merged.validate()?;
                match &req.secret {
                    Some(secret) => check_xks_secret(&merged, secret)?,
                    None => {
                        // The stored client key stays: it must still fit (same certificate;
                        // a changed certificate needs new credentials, checked above).
                    }
                }
                ks.update_config(merged, now())?;
            }
            if let Some(secret) = &req.secret {
                if !ks.config.needs_credentials() {
                    return Err(DomainError::invalid(
                        "credentials",
                        "an internal keystore takes no credentials",
                    )
                    .into());
                }
                let sealed = inner.seal_secret(ks.keystore_type(), secret)?;
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
                None if t == KeystoreType::Xks => {
                    return Err(DomainError::invalid(
                        Secret::field_for(t),
                        format!("is required for a {t} keystore"),
                    )
                    .into())
                }
                Some(secret) => {
                    check_secret_against(&config, secret)?;
                    Some(inner.seal_secret(config.keystore_type(), secret)?)
                }
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
