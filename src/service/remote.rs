//! Reaching a keystore's target: opening (and caching) the target for a keystore, the
//! connection checks per type, and the two-phase install and uninstall of a key's copy
//! with durable intents (DESIGN §5). Failpoints let tests kill the daemon between steps.

use std::sync::Arc;

use secrecy::SecretString;

use super::keys::{key_ref, kind};
use super::{now, Inner, ServiceError};
use crate::domain::{
    remote_ref, ConnectionError, ConnectionErrorCode, ConnectionState, DomainError, InstanceState,
    Key, KeySpec, Keystore, KeystoreAction, KeystoreConfig, TargetChange,
};
use crate::hsm::HsmError;
use crate::store::{Batch, Table};
pub(crate) use crate::targets::ProbeMode;
use crate::targets::{ExternalCall, InstallError, ManagedKey, RemoteCopy, Target, TargetError};

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
        // Errors of one external key, not of the connection: named as a missing or
        // misconfigured target object where a connection code is asked for.
        TargetError::XksKeyNotFound(_) => ConnectionErrorCode::TargetNotFound,
        TargetError::XksKeyInvalid(_) => ConnectionErrorCode::InvalidConfiguration,
        TargetError::InvalidCiphertext(_) => ConnectionErrorCode::InternalError,
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

/// An opened external target, cached per keystore id.
pub(crate) type Remote = Arc<dyn Target>;

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
        let not_a_target = || ConnectionError {
            code: ConnectionErrorCode::InternalError,
            message: format!("keystore {} is keyorchd's own token, not a target", ks.id),
        };
        if matches!(ks.config, KeystoreConfig::Internal) {
            return Err(not_a_target());
        }
        let secret = self.unsealed_secret(ks)?;
        let remote = crate::targets::open(&ks.config, secret)
            .map_err(|e| connection_error(&e))?
            .ok_or_else(not_a_target)?;
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
        let outcome = remote.probe(&ks.id, mode, ks.state == ConnectionState::Connected);
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
                    Ok(t) => t.denied_permissions().unwrap_or_default(),
                    Err(_) => Vec::new(),
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
        ks.require(KeystoreAction::Install)?;
        if key.is_external() {
            return self.verify_external(key, ks);
        }
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
        let result = self.install_remote(remote.as_ref(), key, ks, &label);
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
                let undo = remote.uninstall(&label).map(drop);
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

    /// "Installing" an external key: its own xks keystore's proxy still knows it as an enabled
    /// AES-256 key for Encrypt and Decrypt. Nothing in the target changes, so no intent is
    /// recorded; a refusal leaves the instance as it was.
    fn verify_external(&self, key: &mut Key, ks: &Keystore) -> Result<(), ServiceError> {
        let external_key_id = match key.external_ref() {
            Some((own, id)) if own == ks.id => id.to_string(),
            // Another keystore: an external key stays in its own.
            _ => {
                key.require_movable(crate::domain::KeyAction::Install)?;
                return Err(ServiceError::Internal(format!(
                    "key {} has no external key",
                    key.id
                )));
            }
        };
        let remote = self.remote(ks).map_err(|ce| to_service(ks, ce))?;
        let metadata = remote
            .external_key(&external_key_id)
            .map_err(|e| self.external_error(&key.id, ks, e))?;
        if let Some(problem) = metadata.problem() {
            return Err(ServiceError::ExternalKey {
                key_id: key.id.clone(),
                keystore_id: ks.id.clone(),
                missing: false,
                message: format!("the external key {external_key_id} cannot be used: {problem}"),
            });
        }
        key.set_instance(&ks.id, InstanceState::Installed, String::new(), now());
        Ok(())
    }

    /// A failure of a call on an external key, in the words of AWS KMS for keys of external
    /// key stores: the key is missing or unusable in the external key manager, the
    /// ciphertext is not one it can open, or the connection failed.
    pub(super) fn external_error(
        &self,
        key_id: &str,
        ks: &Keystore,
        e: TargetError,
    ) -> ServiceError {
        match e {
            TargetError::XksKeyNotFound(_) | TargetError::XksKeyInvalid(_) => {
                ServiceError::ExternalKey {
                    key_id: key_id.to_string(),
                    keystore_id: ks.id.clone(),
                    missing: matches!(e, TargetError::XksKeyNotFound(_)),
                    message: e.to_string(),
                }
            }
            TargetError::InvalidCiphertext(_) => ServiceError::InvalidCiphertext {
                key_id: key_id.to_string(),
            },
            other => self.target_error(ks, other),
        }
    }

    /// The xks keystore of an external key, its target and the call's request metadata.
    fn external_target(&self, key: &Key) -> Result<(Keystore, Remote, String), ServiceError> {
        let (keystore_id, external_key_id) = key
            .external_ref()
            .ok_or_else(|| ServiceError::Internal(format!("key {} has no external key", key.id)))?;
        let ks = self.keystore(keystore_id)?;
        // Disconnected since the use was checked: nothing goes to the proxy.
        ks.require(KeystoreAction::Install)?;
        let remote = self.remote(&ks).map_err(|ce| to_service(&ks, ce))?;
        Ok((ks, remote, external_key_id.to_string()))
    }

    /// Encrypt (or GenerateDataKey, named by `operation`) with an external key, through its
    /// keystore's proxy: the ciphertext keyorch hands out (`ExternalCiphertext`).
    pub(super) fn external_encrypt(
        &self,
        principal: &str,
        key: &Key,
        operation: &str,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>, ServiceError> {
        crate::domain::xks::check_data("plaintext", plaintext)?;
        let (ks, remote, external_key_id) = self.external_target(key)?;
        let call = ExternalCall {
            external_key_id: &external_key_id,
            key_id: &key.id,
            principal,
            operation,
        };
        remote
            .external_encrypt(&call, plaintext, aad)
            .map(|sealed| sealed.encode())
            .map_err(|e| self.external_error(&key.id, &ks, e))
    }

    /// Decrypt with an external key: the reverse of [`Inner::external_encrypt`].
    pub(super) fn external_decrypt(
        &self,
        principal: &str,
        key: &Key,
        ciphertext: &[u8],
        aad: &[u8],
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, ServiceError> {
        let sealed =
            crate::domain::xks::ExternalCiphertext::decode(ciphertext).ok_or_else(|| {
                ServiceError::InvalidCiphertext {
                    key_id: key.id.clone(),
                }
            })?;
        let (ks, remote, external_key_id) = self.external_target(key)?;
        let call = ExternalCall {
            external_key_id: &external_key_id,
            key_id: &key.id,
            principal,
            operation: "Decrypt",
        };
        remote
            .external_decrypt(&call, &sealed, aad)
            .map_err(|e| self.external_error(&key.id, &ks, e))
    }

    /// The target's install, then (after the `install.target_done` failpoint) its proof that
    /// it holds the very key. Returns the target's id of the copy.
    fn install_remote(
        &self,
        remote: &dyn Target,
        key: &Key,
        ks: &Keystore,
        label: &str,
    ) -> Result<String, ServiceError> {
        let material = key_ref(key)?;
        let remote_id = remote
            .install(&self.hsm, &material, label)
            .map_err(|e| self.install_error(ks, e))?;
        failpoint("install.target_done");
        remote
            .confirm_install(&managed(key, ks), label, &remote_id)
            .map_err(|e| self.install_error(ks, e))?;
        Ok(remote_id)
    }

    fn install_error(&self, ks: &Keystore, e: InstallError) -> ServiceError {
        match e {
            InstallError::Target(e) => self.target_error(ks, e),
            InstallError::Hsm(e) => e.into(),
            InstallError::Mismatch(m) => ServiceError::Internal(format!("keystore {}: {m}", ks.id)),
        }
    }

    /// Removes `key`'s copy from `ks` and records NOT_INSTALLED. External targets must be
    /// CONNECTED and are two-phase (UNINSTALLING, then NOT_INSTALLED).
    pub(super) fn uninstall_from(&self, key: &mut Key, ks: &Keystore) -> Result<(), ServiceError> {
        // keyorchd's own token holds nothing to remove; an xks keystore holds the external
        // key, which is its external key manager's and stays there.
        if matches!(ks.config, KeystoreConfig::Internal) || !ks.config.holds_key_copies() {
            key.set_instance(&ks.id, InstanceState::NotInstalled, String::new(), now());
            return Ok(());
        }
        ks.require(KeystoreAction::Uninstall)?;
        let remote = self.remote(ks).map_err(|ce| to_service(ks, ce))?;
        key.set_instance(&ks.id, InstanceState::Uninstalling, String::new(), now());
        self.put_key_now(key)?;
        failpoint("uninstall.intent_recorded");
        let label = remote_ref(&key.id);
        remote
            .uninstall(&label)
            .map_err(|e| self.target_error(ks, e))?;
        failpoint("uninstall.target_done");
        key.set_remote_id(&ks.id, "");
        // An UninstallKey (target change LEAVING) also drops the keystore from the targets.
        key.settle_instance(&ks.id, InstanceState::NotInstalled, now());
        self.put_key_now(key)?;
        failpoint("uninstall.outcome_recorded");
        Ok(())
    }

    /// Whether `ks`'s target disables a copy on deactivation rather than removing it. A
    /// target that cannot be opened is taken to: the answer keeps a copy, never removes one.
    pub(super) fn disables_on_deactivation(&self, ks: &Keystore) -> bool {
        if matches!(ks.config, KeystoreConfig::Internal) || !ks.config.holds_key_copies() {
            return false;
        }
        self.remote(ks)
            .map(|remote| remote.disables_on_deactivation())
            .unwrap_or(true)
    }

    /// Deactivation of `key`'s copy in `ks`: a copy in a target that disables on deactivation
    /// (aws_kms: DisableKey; the material stays, so reactivation brings back the same AWS
    /// key) is disabled; other copies are uninstalled.
    pub(super) fn deactivate_in(&self, key: &mut Key, ks: &Keystore) -> Result<(), ServiceError> {
        let installed = key.instance(&ks.id).map(|i| i.state) == Some(InstanceState::Installed);
        if !installed
            || matches!(ks.config, KeystoreConfig::Internal)
            || !ks.config.holds_key_copies()
        {
            return self.uninstall_from(key, ks);
        }
        ks.require(KeystoreAction::Uninstall)?;
        let remote = self.remote(ks).map_err(|ce| to_service(ks, ce))?;
        if !remote.disables_on_deactivation() {
            return self.uninstall_from(key, ks);
        }
        remote
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
        if matches!(ks.config, KeystoreConfig::Internal) {
            return Ok(match key.material {
                Some(_) => Some(RemoteCopy::by_check_value(
                    self.hsm.check_key(&key_ref(key)?)?,
                    &key.kcv,
                )),
                None => None,
            });
        }
        ks.require(KeystoreAction::Install)
            .map_err(ServiceError::from)?;
        let remote = self.remote(ks).map_err(|ce| to_service(ks, ce))?;
        remote
            .copy(&managed(key, ks), &remote_ref(&key.id))
            .map_err(|e| self.target_error(ks, e))
    }

    /// Removes a stray copy (SyncKey, reconciler), without touching the key record. A key
    /// under the label that keyorch did not make is never touched (the target refuses).
    pub(super) fn remove_remote(&self, key: &Key, ks: &Keystore) -> Result<(), ServiceError> {
        if matches!(ks.config, KeystoreConfig::Internal) || !ks.config.holds_key_copies() {
            return Ok(());
        }
        let remote = self.remote(ks).map_err(|ce| to_service(ks, ce))?;
        remote
            .uninstall(&remote_ref(&key.id))
            .map(drop)
            .map_err(|e| self.target_error(ks, e))
    }

    /// Makes a copy that should be usable usable again (SyncKey; aws_kms: EnableKey).
    pub(super) fn enable_remote(&self, key: &Key, ks: &Keystore) -> Result<(), ServiceError> {
        self.remote(ks)
            .map_err(|ce| to_service(ks, ce))?
            .set_enabled(&remote_ref(&key.id), true)
            .map_err(|e| self.target_error(ks, e))
    }
}

/// What a target needs to know of `key` to judge its copy in `ks`.
fn managed<'a>(key: &'a Key, ks: &Keystore) -> ManagedKey<'a> {
    ManagedKey {
        kind: kind(key.spec),
        kcv: &key.kcv,
        recorded_remote_id: key.instance(&ks.id).map_or("", |i| i.remote_id.as_str()),
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
