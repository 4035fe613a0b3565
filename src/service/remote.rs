//! Reaching a keystore's target: opening (and caching) the target for a keystore, the
//! connection checks per type, and the two-phase install and uninstall of a key's copy
//! with durable intents (DESIGN §5). Failpoints let tests kill the daemon between steps.

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};

use super::keystores::XksSealedCredentials;

use super::keys::{key_ref, kind};
use super::{now, Inner, ServiceError};
use crate::domain::{
    remote_ref, ConnectionError, ConnectionErrorCode, ConnectionState, DomainError, InstanceState,
    Key, KeySpec, Keystore, KeystoreAction, KeystoreConfig, TargetChange, TokenRef,
    XKS_KEYS_NOT_BUILT,
};
use crate::hsm::{HsmError, OaepHash, TokenSelector};
use crate::store::{Batch, Table};
use crate::targets::aws_kms::{AwsKmsConfig, AwsKmsTarget};
use crate::targets::pkcs11::{Pkcs11Target, Pkcs11TargetConfig};
use crate::targets::xks::{XksConfig, XksTarget};
use crate::targets::TargetError;

/// Environment variable naming a step at which keyorchd aborts (tests only; see docs).
pub const FAILPOINT_ENV: &str = "KEYORCH_FAILPOINT";

/// Aborts the process (no flush, no clean-up: like SIGKILL) when `KEYORCH_FAILPOINT`
/// names this step. Used by crash-safety tests.
pub(crate) fn failpoint(step: &str) {
    if std::env::var(FAILPOINT_ENV).as_deref() == Ok(step) {
        tracing::error!(step, "failpoint reached: aborting");
        std::process::abort();
    }
}

/// Classifies a target failure for the keystore's connection_error_code.
pub(crate) fn connection_error(e: &TargetError) -> ConnectionError {
    let code = match e {
        TargetError::InvalidCredentials(_) => ConnectionErrorCode::InvalidCredentials,
        TargetError::TargetNotFound(_) => ConnectionErrorCode::TargetNotFound,
        TargetError::InvalidConfiguration(_) | TargetError::NotSupported(_) => {
            ConnectionErrorCode::InvalidConfiguration
        }
        TargetError::ImportKekMissing => ConnectionErrorCode::ImportKekMissing,
        TargetError::Internal(_) => ConnectionErrorCode::InternalError,
        TargetError::Network(_) => ConnectionErrorCode::NetworkErrors,
        TargetError::TimedOut(_) => ConnectionErrorCode::TimedOut,
        TargetError::PermissionDenied(_) => ConnectionErrorCode::InsufficientPermissions,
        TargetError::XksAccessDenied(_) => ConnectionErrorCode::XksProxyAccessDenied,
        TargetError::XksInvalidConfiguration(_) => {
            ConnectionErrorCode::XksProxyInvalidConfiguration
        }
        TargetError::XksInvalidResponse(_) => ConnectionErrorCode::XksProxyInvalidResponse,
        TargetError::XksInvalidTls(_) => ConnectionErrorCode::XksProxyInvalidTlsConfiguration,
        TargetError::XksNotReachable(_) => ConnectionErrorCode::XksProxyNotReachable,
        TargetError::XksTimedOut(_) => ConnectionErrorCode::XksProxyTimedOut,
    };
    ConnectionError {
        code,
        message: e.to_string(),
    }
}

fn hsm_connection_error(e: &HsmError) -> ConnectionError {
    let code = match e {
        HsmError::PinIncorrect | HsmError::PinLocked => ConnectionErrorCode::InvalidCredentials,
        HsmError::TokenNotFound(_) => ConnectionErrorCode::TargetNotFound,
        HsmError::ModuleLoad { .. } => ConnectionErrorCode::InvalidConfiguration,
        _ => ConnectionErrorCode::InternalError,
    };
    ConnectionError {
        code,
        message: format!("keyorchd's HSM: {e}"),
    }
}

/// Whether a probe may change the target (ConnectKeystore creates the import KEK).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProbeMode {
    Connect,
    Check,
    /// The periodic health check: the one cheapest call that proves the target answers and
    /// takes the credentials (no permission probing, which costs AWS a dozen requests).
    Heartbeat,
}

/// An opened external target, cached per keystore id.
#[derive(Clone)]
pub(crate) enum Remote {
    Pkcs11(Arc<Pkcs11Target>),
    AwsKms(Arc<AwsKmsTarget>),
    Xks(Arc<XksTarget>),
}

/// Keys in xks keystores are not built yet: every key operation on one answers this.
pub(super) fn xks_keys_unimplemented(ks: &Keystore) -> ServiceError {
    ServiceError::Unimplemented(format!("keystore {}: {XKS_KEYS_NOT_BUILT}", ks.id))
}

/// What a target holds under a key's label.
#[derive(Debug, Clone)]
pub(super) struct RemoteCopy {
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

fn to_service(ks: &Keystore, ce: ConnectionError) -> ServiceError {
    ServiceError::Target {
        keystore_id: ks.id.clone(),
        code: ce.code,
        message: ce.message,
    }
}

impl Inner {
    /// The keystore's stored secret, unsealed.
    fn unsealed_secret(&self, ks: &Keystore) -> Result<SecretString, ConnectionError> {
        let sealed = ks.credentials.as_ref().ok_or_else(|| ConnectionError {
            code: ConnectionErrorCode::InvalidCredentials,
            message: "no credentials are stored for this keystore".into(),
        })?;
        let secret = self
            .hsm
            .unseal_secret(&sealed.sealed)
            .map_err(|e| hsm_connection_error(&e))?;
        let secret = String::from_utf8(secret.to_vec()).map_err(|_| ConnectionError {
            code: ConnectionErrorCode::InvalidCredentials,
            message: "the stored secret is not UTF-8".into(),
        })?;
        Ok(SecretString::from(secret))
    }

    /// The opened target of an external keystore (cached per keystore id).
    fn remote(&self, ks: &Keystore) -> Result<Remote, ConnectionError> {
        if let Some(t) = self
            .remotes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&ks.id)
        {
            return Ok(t.clone());
        }
        let remote = match &ks.config {
            KeystoreConfig::Internal => {
                return Err(ConnectionError {
                    code: ConnectionErrorCode::InternalError,
                    message: format!("keystore {} is keyorchd's own token, not a target", ks.id),
                })
            }
            KeystoreConfig::Pkcs11 { module_path, token } => {
                let pin = self.unsealed_secret(ks)?;
                let target = Pkcs11Target::open(Pkcs11TargetConfig {
                    module: module_path.into(),
                    token: match token {
                        TokenRef::Label(l) => TokenSelector::Label(l.clone()),
                        TokenRef::Serial(s) => TokenSelector::Serial(s.clone()),
                    },
                    pin,
                })
                .map_err(|e| connection_error(&e))?;
                Remote::Pkcs11(Arc::new(target))
            }
            KeystoreConfig::AwsKms {
                region,
                endpoint_url,
                access_key_id,
                ..
            } => {
                let secret_access_key = self.unsealed_secret(ks)?;
                let target = AwsKmsTarget::open(AwsKmsConfig {
                    region: region.clone(),
                    endpoint_url: endpoint_url.clone(),
                    access_key_id: access_key_id.clone(),
                    secret_access_key,
                })
                .map_err(|e| connection_error(&e))?;
                Remote::AwsKms(Arc::new(target))
            }
            KeystoreConfig::Xks {
                uri_endpoint,
                uri_path,
                ca_cert_pem,
                client_cert_pem,
                access_key_id,
            } => {
                let sealed = self.unsealed_secret(ks)?;
                let creds: XksSealedCredentials = serde_json::from_str(sealed.expose_secret())
                    .map_err(|_| ConnectionError {
                        code: ConnectionErrorCode::InvalidCredentials,
                        message:
                            "the stored xks credentials cannot be read; send xks_credentials again"
                                .into(),
                    })?;
                let target = XksTarget::open(XksConfig {
                    uri_endpoint: uri_endpoint.clone(),
                    uri_path: uri_path.clone(),
                    ca_cert_pem: ca_cert_pem.clone(),
                    client_cert_pem: client_cert_pem.clone(),
                    client_key_pem: creds.client_key_pem.clone().map(SecretString::from),
                    access_key_id: access_key_id.clone(),
                    secret_access_key: SecretString::from(creds.secret_access_key.clone()),
                })
                .map_err(|e| connection_error(&e))?;
                Remote::Xks(Arc::new(target))
            }
        };
        self.remotes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(ks.id.clone(), remote.clone());
        Ok(remote)
    }

    /// Drops a cached target (after disconnect, update or delete).
    pub(super) fn forget_remote(&self, keystore_id: &str) {
        self.remotes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(keystore_id);
    }

    /// The connection checks of a keystore. Connect may create the target's import KEK.
    /// For aws_kms: the credentials work, no required permission is denied, and the account
    /// (when the target shows one) is the keystore's; returns that account.
    pub(super) fn probe(
        &self,
        ks: &Keystore,
        mode: ProbeMode,
    ) -> Result<Option<String>, ConnectionError> {
        let remote = match &ks.config {
            KeystoreConfig::Internal => {
                return self
                    .hsm
                    .health()
                    .map(|()| None)
                    .map_err(|e| hsm_connection_error(&e))
            }
            _ => self.remote(ks)?,
        };
        let outcome = match &remote {
            Remote::Pkcs11(target) => match mode {
                ProbeMode::Connect => target.ensure_import_kek().map(|created| {
                    if created {
                        tracing::info!(keystore = %ks.id, "created EKMF-BYOK-KEK-FOR-IMPORT in the target");
                    }
                    None
                }),
                // Connect creates a missing import KEK; so a check predicts success
                // unless the keystore is CONNECTED (then the KEK was deleted under us).
                ProbeMode::Check | ProbeMode::Heartbeat => match target.check() {
                    Err(TargetError::ImportKekMissing)
                        if ks.state != ConnectionState::Connected =>
                    {
                        Ok(None)
                    }
                    other => other.map(|()| None),
                },
            },
            Remote::AwsKms(target) => (|| {
                target.check()?;
                if mode == ProbeMode::Heartbeat {
                    return Ok(None);
                }
                let denied = target.denied_permissions()?;
                if !denied.is_empty() {
                    return Err(TargetError::PermissionDenied(denied));
                }
                target.account_id()
            })(),
            Remote::Xks(target) => target.health().map(|h| {
                if mode != ProbeMode::Heartbeat {
                    tracing::info!(
                        keystore = %ks.id,
                        fleet_size = h.fleet_size,
                        vendor = %h.vendor,
                        model = %h.model,
                        ekm_vendor = %h.ekm_vendor,
                        members = ?h.members.iter().map(|m| format!("{} {}", m.id, m.health_status)).collect::<Vec<_>>(),
                        "XKS proxy health"
                    );
                }
                None
            }),
        };
        let account = outcome.map_err(|e| {
            if !matches!(e, TargetError::ImportKekMissing) {
                // A stale login or session: open afresh next time.
                self.forget_remote(&ks.id);
            }
            connection_error(&e)
        })?;
        if let Some(seen) = &account {
            // Credentials of another account are refused, on a check as on a connect.
            ks.clone().bind_account(seen)?;
        }
        Ok(account)
    }

    /// TestKeystoreConnection: the connection checks, and for aws_kms the denied permissions.
    pub(super) fn test_outcome(&self, ks: &Keystore) -> super::TestOutcome {
        let result = self.probe(ks, ProbeMode::Check).map(drop);
        let denied_permissions = match &result {
            Err(e) if e.code == ConnectionErrorCode::InsufficientPermissions => {
                match self.remote(ks) {
                    Ok(Remote::AwsKms(t)) => t.denied_permissions().unwrap_or_default(),
                    _ => Vec::new(),
                }
            }
            _ => Vec::new(),
        };
        super::TestOutcome {
            result,
            denied_permissions,
        }
    }

    fn target_error(&self, ks: &Keystore, e: TargetError) -> ServiceError {
        let ce = connection_error(&e);
        ServiceError::Target {
            keystore_id: ks.id.clone(),
            code: ce.code,
            message: ce.message,
        }
    }

    fn put_key_now(&self, key: &Key) -> Result<(), ServiceError> {
        let mut b = Batch::new();
        b.put(Table::Keys, &key.id, key)?;
        self.commit(b)
    }

    /// Installs `key` into `ks` (CONNECTED) and records INSTALLED. External targets are
    /// two-phase: INSTALLING is durable before the target is touched, INSTALLED after it
    /// holds the key (with the right check value where the target computes one).
    pub(super) fn install_into(&self, key: &mut Key, ks: &Keystore) -> Result<(), ServiceError> {
        if matches!(ks.config, KeystoreConfig::Xks { .. }) {
            return Err(xks_keys_unimplemented(ks));
        }
        ks.require(KeystoreAction::Install)?;
        check_accepts(ks, key.spec)?;
        let remote = match &ks.config {
            // keyorchd's own token: installing proves the stored blob unwraps under the
            // master KEK to the very key (same check value). Nothing remote to record.
            KeystoreConfig::Internal => {
                let kcv = self.hsm.check_key(&key_ref(key)?)?;
                if kcv != key.kcv {
                    return Err(ServiceError::Internal(format!(
                        "key {} unwrapped with check value {kcv}, expected {}",
                        key.id, key.kcv
                    )));
                }
                key.set_instance(&ks.id, InstanceState::Installed, String::new(), now());
                return Ok(());
            }
            _ => self.remote(ks).map_err(|ce| to_service(ks, ce))?,
        };
        key.begin_install(&ks.id, now());
        self.put_key_now(key)?;
        failpoint("install.intent_recorded");
        let label = remote_ref(&key.id);
        let result = match &remote {
            Remote::Pkcs11(target) => self.install_pkcs11(target, key, ks, &label),
            Remote::AwsKms(target) => self.install_aws(target, key, ks, &label),
            Remote::Xks(_) => Err(xks_keys_unimplemented(ks)),
        };
        match result {
            Ok(remote_id) => {
                key.settle_instance(&ks.id, InstanceState::Installed, now());
                key.set_remote_id(&ks.id, &remote_id);
                self.put_key_now(key)?;
                failpoint("install.outcome_recorded");
                Ok(())
            }
            Err(e) => {
                // Leave no copy behind a failed install (the target may hold a wrong or
                // half-made object): best effort, the reconciler retries.
                let undo = match &remote {
                    Remote::Pkcs11(t) => t.uninstall(&label).map(drop),
                    Remote::AwsKms(t) => t.uninstall(&label).map(drop),
                    Remote::Xks(_) => Ok(()),
                };
                let joining = key
                    .instance(&ks.id)
                    .is_some_and(|i| i.target_change == TargetChange::Joining);
                match undo {
                    // An install into a keystore the key did not target leaves the record
                    // as it was before the call once nothing is left in the target.
                    Ok(()) if joining => {
                        key.settle_instance(&ks.id, InstanceState::NotInstalled, now())
                    }
                    // A copy that may remain stays FAILED (with the target change, when
                    // there is one) for the reconciler or SyncKey to finish.
                    Err(undo) => {
                        tracing::warn!(key = %key.id, keystore = %ks.id, "could not remove a failed install: {undo}");
                        key.set_instance(&ks.id, InstanceState::Failed, e.to_string(), now());
                    }
                    Ok(()) => key.set_instance(&ks.id, InstanceState::Failed, e.to_string(), now()),
                }
                self.put_key_now(key)?;
                Err(e)
            }
        }
    }

    /// Wrap in keyorch's HSM under the target's import KEK, unwrap in the target, compare
    /// check values. Returns no remote id (the label is the reference).
    fn install_pkcs11(
        &self,
        target: &Pkcs11Target,
        key: &Key,
        ks: &Keystore,
        label: &str,
    ) -> Result<String, ServiceError> {
        let spki = target
            .import_kek_spki()
            .map_err(|e| self.target_error(ks, e))?;
        let hash = if self.hsm.supports_oaep_sha256() && target.supports_oaep_sha256() {
            OaepHash::Sha256
        } else {
            OaepHash::Sha1
        };
        let kr = key_ref(key)?;
        let blob = self.hsm.wrap_for_transport(&kr, &spki, hash)?;
        target
            .install(label, kind(key.spec), &blob, hash, kr.spki_der)
            .map_err(|e| self.target_error(ks, e))?;
        failpoint("install.target_done");
        let kcv = target
            .key_check_value(label, kind(key.spec))
            .map_err(|e| self.target_error(ks, e))?;
        if kcv.as_deref() != Some(key.kcv.as_str()) {
            return Err(ServiceError::Internal(format!(
                "keystore {} holds other material under {label} (check value {}, expected {}); run SyncKey",
                ks.id,
                kcv.unwrap_or_else(|| "none".into()),
                key.kcv
            )));
        }
        Ok(String::new())
    }

    /// CreateKey (EXTERNAL) or the key already under the alias, import of the material
    /// wrapped in keyorch's HSM, and EnableKey when a deactivation had disabled it. Returns
    /// the key's ARN.
    fn install_aws(
        &self,
        target: &AwsKmsTarget,
        key: &Key,
        ks: &Keystore,
        label: &str,
    ) -> Result<String, ServiceError> {
        let kr = key_ref(key)?;
        let arn = target
            .install(&self.hsm, &kr, label)
            .map_err(|e| self.target_error(ks, e))?;
        failpoint("install.target_done");
        let copy = target
            .describe(label)
            .map_err(|e| self.target_error(ks, e))?;
        match copy {
            Some(c) if c.arn == arn && c.owned && c.origin_external => {
                if !c.enabled {
                    target
                        .set_enabled(label, true)
                        .map_err(|e| self.target_error(ks, e))?;
                }
                Ok(arn)
            }
            other => Err(ServiceError::Internal(format!(
                "keystore {}: after the import, alias/{label} names {}, not the key {arn} keyorch imported into",
                ks.id,
                other.map_or_else(|| "nothing".to_string(), |c| c.arn)
            ))),
        }
    }

    /// Removes `key`'s copy from `ks` and records NOT_INSTALLED. External targets must be
    /// CONNECTED and are two-phase (UNINSTALLING, then NOT_INSTALLED).
    pub(super) fn uninstall_from(&self, key: &mut Key, ks: &Keystore) -> Result<(), ServiceError> {
        if matches!(ks.config, KeystoreConfig::Internal) {
            key.set_instance(&ks.id, InstanceState::NotInstalled, String::new(), now());
            return Ok(());
        }
        if matches!(ks.config, KeystoreConfig::Xks { .. }) {
            return Err(xks_keys_unimplemented(ks));
        }
        ks.require(KeystoreAction::Uninstall)?;
        let remote = self.remote(ks).map_err(|ce| to_service(ks, ce))?;
        key.set_instance(&ks.id, InstanceState::Uninstalling, String::new(), now());
        self.put_key_now(key)?;
        failpoint("uninstall.intent_recorded");
        let label = remote_ref(&key.id);
        match &remote {
            Remote::Pkcs11(t) => t.uninstall(&label).map(drop),
            Remote::AwsKms(t) => t.uninstall(&label).map(drop),
            Remote::Xks(_) => return Err(xks_keys_unimplemented(ks)),
        }
        .map_err(|e| self.target_error(ks, e))?;
        failpoint("uninstall.target_done");
        key.set_remote_id(&ks.id, "");
        // An UninstallKey (target change LEAVING) also drops the keystore from the targets.
        key.settle_instance(&ks.id, InstanceState::NotInstalled, now());
        self.put_key_now(key)?;
        failpoint("uninstall.outcome_recorded");
        Ok(())
    }

    /// Deactivation of `key`'s copy in `ks`: an aws_kms copy is disabled (DisableKey: the
    /// material stays, so reactivation brings back the same AWS key); other copies are
    /// uninstalled.
    pub(super) fn deactivate_in(&self, key: &mut Key, ks: &Keystore) -> Result<(), ServiceError> {
        let installed = key.instance(&ks.id).map(|i| i.state) == Some(InstanceState::Installed);
        if !(installed && matches!(ks.config, KeystoreConfig::AwsKms { .. })) {
            return self.uninstall_from(key, ks);
        }
        ks.require(KeystoreAction::Uninstall)?;
        let Remote::AwsKms(target) = self.remote(ks).map_err(|ce| to_service(ks, ce))? else {
            return Err(ServiceError::Internal(format!(
                "keystore {} is aws_kms but its opened target is not",
                ks.id
            )));
        };
        target
            .set_enabled(&remote_ref(&key.id), false)
            .map_err(|e| self.target_error(ks, e))?;
        failpoint("deactivate.target_done");
        key.set_instance(&ks.id, InstanceState::Disabled, String::new(), now());
        self.put_key_now(key)?;
        Ok(())
    }

    /// What the target holds for `key`, or None when it holds nothing under its label.
    pub(super) fn remote_copy(
        &self,
        key: &Key,
        ks: &Keystore,
    ) -> Result<Option<RemoteCopy>, ServiceError> {
        let same_kcv = |kcv: String| RemoteCopy {
            same: kcv == key.kcv,
            enabled: true,
            detail: if kcv == key.kcv {
                String::new()
            } else {
                "check value differs".into()
            },
            kcv,
            remote_id: String::new(),
        };
        if matches!(ks.config, KeystoreConfig::Internal) {
            return Ok(match key.material {
                Some(_) => Some(same_kcv(self.hsm.check_key(&key_ref(key)?)?)),
                None => None,
            });
        }
        ks.require(KeystoreAction::Install)
            .map_err(ServiceError::from)?;
        let label = remote_ref(&key.id);
        match self.remote(ks).map_err(|ce| to_service(ks, ce))? {
            Remote::Xks(_) => Err(xks_keys_unimplemented(ks)),
            Remote::Pkcs11(target) => Ok(target
                .key_check_value(&label, kind(key.spec))
                .map_err(|e| self.target_error(ks, e))?
                .map(same_kcv)),
            Remote::AwsKms(target) => {
                let Some(c) = target
                    .describe(&label)
                    .map_err(|e| self.target_error(ks, e))?
                else {
                    return Ok(None);
                };
                // A key made but never given material holds nothing yet.
                if c.key_state == "PendingImport" && c.owned {
                    return Ok(None);
                }
                let recorded = key
                    .instance(&ks.id)
                    .map(|i| i.remote_id.clone())
                    .unwrap_or_default();
                let detail = if !c.owned {
                    format!(
                        "alias/{label} names {}, a key keyorch did not make for this key",
                        c.arn
                    )
                } else if !recorded.is_empty() && recorded != c.arn {
                    format!(
                        "alias/{label} names {}, not the installed copy {recorded}",
                        c.arn
                    )
                } else {
                    String::new()
                };
                Ok(Some(RemoteCopy {
                    same: detail.is_empty(),
                    enabled: c.enabled,
                    kcv: String::new(),
                    remote_id: c.arn,
                    detail,
                }))
            }
        }
    }

    /// Removes a stray copy (SyncKey, reconciler), without touching the key record. A key
    /// under the label that keyorch did not make is never touched (the target refuses).
    pub(super) fn remove_remote(&self, key: &Key, ks: &Keystore) -> Result<(), ServiceError> {
        if matches!(ks.config, KeystoreConfig::Internal) {
            return Ok(());
        }
        let label = remote_ref(&key.id);
        match self.remote(ks).map_err(|ce| to_service(ks, ce))? {
            Remote::Pkcs11(t) => t.uninstall(&label).map(drop),
            Remote::AwsKms(t) => t.uninstall(&label).map(drop),
            Remote::Xks(_) => return Err(xks_keys_unimplemented(ks)),
        }
        .map_err(|e| self.target_error(ks, e))
    }

    /// EnableKey on an aws_kms copy that should be usable (SyncKey).
    pub(super) fn enable_remote(&self, key: &Key, ks: &Keystore) -> Result<(), ServiceError> {
        if let Remote::AwsKms(t) = self.remote(ks).map_err(|ce| to_service(ks, ce))? {
            t.set_enabled(&remote_ref(&key.id), true)
                .map_err(|e| self.target_error(ks, e))?;
        }
        Ok(())
    }
}

/// Refuses, before anything is sent, a key the keystore's provider cannot hold.
pub(super) fn check_accepts(ks: &Keystore, spec: KeySpec) -> Result<(), ServiceError> {
    ks.config.accepts(spec).map_err(|limit| {
        DomainError::invalid(
            "keystore_id",
            format!(
                "keystore {} ({}) cannot hold this key: {limit}",
                ks.id,
                ks.keystore_type()
            ),
        )
        .into()
    })
}
