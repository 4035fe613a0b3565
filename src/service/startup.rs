//! Start-up: refuse a store this build cannot read, check the master KEK against the
//! store, and finish or roll back work a crash interrupted.

use super::{now, Inner, ServiceError};
use crate::domain::{
    AuditEvent, ConnectionState, InstanceState, Key, KeyState, Keystore, KeystoreConfig, Vault,
};
use crate::hsm::{HsmError, KekStatus};
use crate::store::{Batch, Table};

const KEK_CHECK_META: &str = "master_kek_check_value";

pub(super) fn check_and_reconcile(inner: &Inner) -> Result<(), ServiceError> {
    inner.store.check_decodes::<Vault>(Table::Vaults)?;
    inner.store.check_decodes::<Keystore>(Table::Keystores)?;
    // One streamed pass over the keys (there may be millions): each is decoded, and only
    // those a crash left unsettled are kept.
    let mut keys = 0;
    let mut unsettled = Vec::new();
    inner.store.scan::<Key>(Table::Keys, |key| {
        keys += 1;
        if needs_settling(&key) {
            unsettled.push(key);
        }
    })?;
    inner.store.check_decodes::<AuditEvent>(Table::Audit)?;
    check_master_kek(inner, keys)?;
    reconcile(inner, unsettled)
}

/// First start creates the KEK; later starts must find the same one. A missing KEK
/// while the store references one is a loud error, never a silent new KEK.
fn check_master_kek(inner: &Inner, keys: usize) -> Result<(), ServiceError> {
    let recorded = inner
        .store
        .meta(KEK_CHECK_META)?
        .map(|v| String::from_utf8_lossy(&v).into_owned());
    match recorded {
        Some(expected) => match inner.hsm.master_kek(false) {
            Ok(KekStatus::Found { kcv }) if kcv == expected => Ok(()),
            Ok(KekStatus::Found { kcv }) | Ok(KekStatus::Created { kcv }) => Err(ServiceError::Startup(format!(
                "the token's master KEK (check value {kcv}) is not the one this database was written with ({expected}); wrong token? refusing to start"
            ))),
            Err(HsmError::KekMissing) => Err(ServiceError::Startup(format!(
                "the master KEK (check value {expected}) is missing from the token, and the database holds {keys} key(s) wrapped under it; restore the token from backup. Refusing to start rather than create a new KEK"
            ))),
            Err(e) => Err(e.into()),
        },
        None if keys > 0 => Err(ServiceError::Startup(format!(
            "the database holds {keys} key(s) but records no master KEK; refusing to start"
        ))),
        None => {
            let kcv = match inner.hsm.master_kek(true)? {
                KekStatus::Created { kcv } => {
                    tracing::info!(check_value = %kcv, "master KEK created");
                    kcv
                }
                KekStatus::Found { kcv } => {
                    tracing::info!(check_value = %kcv, "master KEK found on the token; adopting it");
                    kcv
                }
            };
            let mut b = Batch::new();
            b.set_meta(KEK_CHECK_META, kcv.as_bytes());
            inner.commit(b)?;
            Ok(())
        }
    }
}

/// Finishes intents a crash left behind: a keystore caught CONNECTING is connected
/// again (or FAILED), one caught DISCONNECTING is disconnected; key instances caught
/// INSTALLING/UNINSTALLING are settled by asking the target what it holds.
fn reconcile(inner: &Inner, unsettled: Vec<Key>) -> Result<(), ServiceError> {
    let keystores: Vec<Keystore> = inner.store.all(Table::Keystores)?;
    for ks in keystores {
        match ks.state {
            ConnectionState::Connecting => {
                tracing::info!(keystore = %ks.id, "reconciler: finishing an interrupted connect");
                let mut ks = ks;
                ks.state = ConnectionState::Disconnected;
                let mut b = Batch::new();
                b.put(Table::Keystores, &ks.id, &ks)?;
                inner.commit(b)?;
                inner.connect_keystore(&ks.id)?;
            }
            ConnectionState::Disconnecting => {
                tracing::info!(keystore = %ks.id, "reconciler: finishing an interrupted disconnect");
                let mut ks = ks;
                ks.finish_disconnect(now());
                let mut b = Batch::new();
                b.put(Table::Keystores, &ks.id, &ks)?;
                inner.commit(b)?;
            }
            _ => {}
        }
    }
    // Re-read each: finishing a connect above may have changed nothing in keys, but the
    // record in the store is the one to settle.
    for stale in unsettled {
        if let Some(key) = inner.store.get::<Key>(Table::Keys, &stale.id)? {
            settle_key(inner, key)?;
        }
    }
    Ok(())
}

/// The instances a crash left in flight (see `settle_key` for the rules).
fn pending_instances(key: &Key) -> Vec<(String, InstanceState)> {
    key.instances
        .iter()
        .filter(|i| match i.state {
            InstanceState::Installing | InstanceState::Uninstalling | InstanceState::Failed => true,
            // Only an activation that never committed leaves copies of a PRE_ACTIVE key, and
            // only a reactivation that never committed leaves INSTALLED copies of a
            // DEACTIVATED one (deactivation uninstalls, or disables aws_kms copies);
            // COMPROMISED keys keep theirs (MarkCompromised does not uninstall).
            InstanceState::Installed => {
                matches!(key.state, KeyState::PreActive | KeyState::Deactivated)
            }
            InstanceState::NotInstalled | InstanceState::Unavailable | InstanceState::Disabled => {
                false
            }
        })
        .map(|i| (i.keystore_id.clone(), i.state))
        .collect()
}

/// An ACTIVE key always keeps an INSTALLED copy (UninstallKey refuses the last one); one
/// whose every copy is NOT_INSTALLED (or DISABLED) was cut short while being deactivated.
fn interrupted_deactivation(key: &Key) -> bool {
    key.state == KeyState::Active
        && !key.instances.is_empty()
        && key.instances.iter().all(|i| {
            matches!(
                i.state,
                InstanceState::NotInstalled | InstanceState::Disabled
            )
        })
}

/// Whether `settle_key` has anything to do for `key`: start-up streams every key through
/// this and keeps only those in memory.
fn needs_settling(key: &Key) -> bool {
    interrupted_deactivation(key) || !pending_instances(key).is_empty()
}

/// Settles one key's instances after a crash. Rules: an INSTALLING copy of an ACTIVE key
/// is kept when the target holds it with the right check value (roll forward), else
/// removed (roll back); any copy of a PRE_ACTIVE key, and any INSTALLED copy of a
/// DEACTIVATED key outside aws_kms, is removed (an activation or reactivation that never
/// committed); UNINSTALLING and FAILED are finished by removing the copy.
/// Afterwards an instance is INSTALLED exactly when the target holds the key.
fn settle_key(inner: &Inner, mut key: Key) -> Result<(), ServiceError> {
    let active = key.state == KeyState::Active;
    let pending = pending_instances(&key);
    let was_pending = !pending.is_empty();
    for (ks_id, state) in pending {
        let Some(ks) = inner.store.get::<Keystore>(Table::Keystores, &ks_id)? else {
            key.set_instance(&ks_id, InstanceState::NotInstalled, String::new(), now());
            continue;
        };
        // The aws_kms copy of a DEACTIVATED key is its disabled remote key, which removing
        // would schedule for deletion: not touched here.
        if state == InstanceState::Installed
            && key.state == KeyState::Deactivated
            && matches!(ks.config, KeystoreConfig::AwsKms { .. })
        {
            tracing::warn!(key = %key.id, keystore = %ks_id, "reconciler: a DEACTIVATED key's aws_kms copy is INSTALLED (a reactivation cut short?); left as it is");
            continue;
        }
        let remote = if matches!(ks.config, KeystoreConfig::Internal) {
            // keyorchd's own token: no copy elsewhere to look at.
            None
        } else {
            match inner.remote_copy(&key, &ks) {
                Ok(copy) => Some(copy),
                Err(e) => {
                    tracing::warn!(key = %key.id, keystore = %ks_id, ?state, "reconciler: target unreachable, intent left pending: {e}");
                    continue;
                }
            }
        };
        let kept = if active && state == InstanceState::Installing {
            remote.as_ref().and_then(|c| c.as_ref()).filter(|c| c.same)
        } else {
            None
        };
        let settled = if let Some(copy) = kept {
            key.set_remote_id(&ks_id, &copy.remote_id);
            InstanceState::Installed
        } else {
            // Whatever is under the label goes, also when it is not a whole copy: an install
            // cut short between the halves of a key pair leaves one half, which remote_copy
            // reports as no copy. Removing from a target that holds nothing is a no-op.
            if remote.is_some() {
                inner.remove_remote(&key, &ks)?;
            }
            key.set_remote_id(&ks_id, "");
            InstanceState::NotInstalled
        };
        tracing::info!(key = %key.id, keystore = %ks_id, ?state, ?settled, "reconciler: settled an interrupted install/uninstall");
        key.set_instance(&ks_id, settled, String::new(), now());
    }
    let interrupted_deactivation = interrupted_deactivation(&key);
    if interrupted_deactivation {
        tracing::info!(key = %key.id, "reconciler: finishing an interrupted deactivation");
        key.enter(KeyState::Deactivated, now());
    }
    if was_pending || interrupted_deactivation {
        let mut b = Batch::new();
        b.put(Table::Keys, &key.id, &key)?;
        inner.commit(b)?;
    }
    Ok(())
}
