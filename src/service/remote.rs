//! Reaching a keystore's target: opening (and caching) the target for a keystore, the
//! connection checks per type, and the two-phase install and uninstall of a key's copy
//! with durable intents (DESIGN §5). Failpoints let tests kill the daemon between steps.

use std::sync::Arc;

use secrecy::SecretString;

use super::keys::{key_ref, kind};
use super::{now, Inner, ServiceError};
use crate::domain::{
    ConnectionError, ConnectionErrorCode, ConnectionState, InstanceState, Key, Keystore,
    KeystoreAction, KeystoreConfig, TokenRef,
};
use crate::hsm::{HsmError, OaepHash, TokenSelector};
use crate::store::{Batch, Table};
use crate::targets::pkcs11::{Pkcs11Target, Pkcs11TargetConfig};
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
}

impl Inner {
    /// The opened target of a PKCS#11 keystore (cached per keystore id).
    fn pkcs11_target(&self, ks: &Keystore) -> Result<Arc<Pkcs11Target>, ConnectionError> {
        if let Some(t) = self
            .remotes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&ks.id)
        {
            return Ok(t.clone());
        }
        let KeystoreConfig::Pkcs11 { module_path, token } = &ks.config else {
            return Err(ConnectionError {
                code: ConnectionErrorCode::InternalError,
                message: format!("keystore {} is not a pkcs11 keystore", ks.id),
            });
        };
        let sealed = ks.credentials.as_ref().ok_or_else(|| ConnectionError {
            code: ConnectionErrorCode::InvalidCredentials,
            message: "no credentials are stored for this keystore".into(),
        })?;
        let pin = self
            .hsm
            .unseal_secret(&sealed.sealed)
            .map_err(|e| hsm_connection_error(&e))?;
        let pin = String::from_utf8(pin.to_vec()).map_err(|_| ConnectionError {
            code: ConnectionErrorCode::InvalidCredentials,
            message: "the stored PIN is not UTF-8".into(),
        })?;
        let target = Pkcs11Target::open(Pkcs11TargetConfig {
            module: module_path.into(),
            token: match token {
                TokenRef::Label(l) => TokenSelector::Label(l.clone()),
                TokenRef::Serial(s) => TokenSelector::Serial(s.clone()),
            },
            pin: SecretString::from(pin),
        })
        .map_err(|e| connection_error(&e))?;
        let target = Arc::new(target);
        self.remotes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(ks.id.clone(), target.clone());
        Ok(target)
    }

    /// Drops a cached target (after disconnect, update or delete).
    pub(super) fn forget_remote(&self, keystore_id: &str) {
        self.remotes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(keystore_id);
    }

    /// The connection checks of a keystore. Connect may create the target's import KEK.
    pub(super) fn probe(&self, ks: &Keystore, mode: ProbeMode) -> Result<(), ConnectionError> {
        match &ks.config {
            KeystoreConfig::Internal => self.hsm.health().map_err(|e| hsm_connection_error(&e)),
            KeystoreConfig::Pkcs11 { .. } => {
                let target = self.pkcs11_target(ks)?;
                let outcome = match mode {
                    ProbeMode::Connect => target.ensure_import_kek().map(|created| {
                        if created {
                            tracing::info!(keystore = %ks.id, "created EKMF-BYOK-KEK-FOR-IMPORT in the target");
                        }
                    }),
                    // Connect creates a missing import KEK; so a check predicts success
                    // unless the keystore is CONNECTED (then the KEK was deleted under us).
                    ProbeMode::Check => match target.check() {
                        Err(TargetError::ImportKekMissing) if ks.state != ConnectionState::Connected => Ok(()),
                        other => other,
                    },
                };
                outcome.map_err(|e| {
                    if !matches!(e, TargetError::ImportKekMissing) {
                        // A stale login or session: open afresh next time.
                        self.forget_remote(&ks.id);
                    }
                    connection_error(&e)
                })
            }
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
    /// holds the key with the right check value.
    pub(super) fn install_into(&self, key: &mut Key, ks: &Keystore) -> Result<(), ServiceError> {
        ks.require(KeystoreAction::Install)?;
        match &ks.config {
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
                Ok(())
            }
            KeystoreConfig::Pkcs11 { .. } => {
                let target = self.pkcs11_target(ks).map_err(|ce| ServiceError::Target {
                    keystore_id: ks.id.clone(),
                    code: ce.code,
                    message: ce.message,
                })?;
                key.set_instance(&ks.id, InstanceState::Installing, String::new(), now());
                self.put_key_now(key)?;
                failpoint("install.intent_recorded");
                let label = crate::domain::remote_ref(&key.id);
                let result = (|| -> Result<(), ServiceError> {
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
                        .install(&label, kind(key.spec), &blob, hash, kr.spki_der)
                        .map_err(|e| self.target_error(ks, e))?;
                    failpoint("install.target_done");
                    let kcv = target
                        .key_check_value(&label, kind(key.spec))
                        .map_err(|e| self.target_error(ks, e))?;
                    if kcv.as_deref() != Some(key.kcv.as_str()) {
                        return Err(ServiceError::Internal(format!(
                            "keystore {} holds other material under {label} (check value {}, expected {}); run SyncKey",
                            ks.id,
                            kcv.unwrap_or_else(|| "none".into()),
                            key.kcv
                        )));
                    }
                    Ok(())
                })();
                match result {
                    Ok(()) => {
                        key.set_instance(&ks.id, InstanceState::Installed, String::new(), now());
                        self.put_key_now(key)?;
                        failpoint("install.outcome_recorded");
                        Ok(())
                    }
                    Err(e) => {
                        // Leave no copy behind a failed install (the target may hold a
                        // wrong or half-made object): best effort, the reconciler retries.
                        if let Err(undo) = target.uninstall(&label) {
                            tracing::warn!(key = %key.id, keystore = %ks.id, "could not remove a failed install: {undo}");
                        }
                        key.set_instance(&ks.id, InstanceState::Failed, e.to_string(), now());
                        self.put_key_now(key)?;
                        Err(e)
                    }
                }
            }
        }
    }

    /// Removes `key`'s copy from `ks` and records NOT_INSTALLED. External targets must be
    /// CONNECTED and are two-phase (UNINSTALLING, then NOT_INSTALLED).
    pub(super) fn uninstall_from(&self, key: &mut Key, ks: &Keystore) -> Result<(), ServiceError> {
        match &ks.config {
            KeystoreConfig::Internal => {
                key.set_instance(&ks.id, InstanceState::NotInstalled, String::new(), now());
                Ok(())
            }
            KeystoreConfig::Pkcs11 { .. } => {
                ks.require(KeystoreAction::Uninstall)?;
                let target = self.pkcs11_target(ks).map_err(|ce| ServiceError::Target {
                    keystore_id: ks.id.clone(),
                    code: ce.code,
                    message: ce.message,
                })?;
                key.set_instance(&ks.id, InstanceState::Uninstalling, String::new(), now());
                self.put_key_now(key)?;
                failpoint("uninstall.intent_recorded");
                target
                    .uninstall(&crate::domain::remote_ref(&key.id))
                    .map_err(|e| self.target_error(ks, e))?;
                failpoint("uninstall.target_done");
                key.set_instance(&ks.id, InstanceState::NotInstalled, String::new(), now());
                self.put_key_now(key)?;
                failpoint("uninstall.outcome_recorded");
                Ok(())
            }
        }
    }

    /// What the target holds for `key`: its check value, or None when absent.
    pub(super) fn remote_kcv(
        &self,
        key: &Key,
        ks: &Keystore,
    ) -> Result<Option<String>, ServiceError> {
        match &ks.config {
            KeystoreConfig::Internal => Ok(match key.material {
                Some(_) => Some(self.hsm.check_key(&key_ref(key)?)?),
                None => None,
            }),
            KeystoreConfig::Pkcs11 { .. } => {
                ks.require(KeystoreAction::Install)
                    .map_err(ServiceError::from)?;
                let target = self.pkcs11_target(ks).map_err(|ce| ServiceError::Target {
                    keystore_id: ks.id.clone(),
                    code: ce.code,
                    message: ce.message,
                })?;
                target
                    .key_check_value(&crate::domain::remote_ref(&key.id), kind(key.spec))
                    .map_err(|e| self.target_error(ks, e))
            }
        }
    }

    /// Removes a stray copy (SyncKey, reconciler), without touching the key record.
    pub(super) fn remove_remote(&self, key: &Key, ks: &Keystore) -> Result<(), ServiceError> {
        if let KeystoreConfig::Pkcs11 { .. } = &ks.config {
            let target = self.pkcs11_target(ks).map_err(|ce| ServiceError::Target {
                keystore_id: ks.id.clone(),
                code: ce.code,
                message: ce.message,
            })?;
            target
                .uninstall(&crate::domain::remote_ref(&key.id))
                .map_err(|e| self.target_error(ks, e))?;
        }
        Ok(())
    }
}
