//! Start-up: refuse a store this build cannot read, check the master KEK against the
//! store, and finish or roll back work a crash interrupted.

use super::{now, Inner, ServiceError};
use crate::domain::{AuditEvent, ConnectionState, InstanceState, Key, Keystore, Vault};
use crate::hsm::{HsmError, KekStatus};
use crate::store::{Batch, Table};

const KEK_CHECK_META: &str = "master_kek_check_value";

pub(super) fn check_and_reconcile(inner: &Inner) -> Result<(), ServiceError> {
    inner.store.check_decodes::<Vault>(Table::Vaults)?;
    inner.store.check_decodes::<Keystore>(Table::Keystores)?;
    let keys = inner.store.check_decodes::<Key>(Table::Keys)?;
    inner.store.check_decodes::<AuditEvent>(Table::Audit)?;
    check_master_kek(inner, keys)?;
    reconcile(inner)
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
fn reconcile(inner: &Inner) -> Result<(), ServiceError> {
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
    let keys: Vec<Key> = inner.store.all(Table::Keys)?;
    for mut key in keys {
        let pending: Vec<(String, InstanceState)> = key
            .instances
            .iter()
            .filter(|i| {
                matches!(
                    i.state,
                    InstanceState::Installing | InstanceState::Uninstalling
                )
            })
            .map(|i| (i.keystore_id.clone(), i.state))
            .collect();
        if pending.is_empty() {
            continue;
        }
        for (ks_id, state) in pending {
            // Internal copies are keyorchd's own wrapped blob: an interrupted install
            // is rolled back (the key's state was never committed as installed) and an
            // interrupted uninstall is completed.
            let settled = match state {
                InstanceState::Installing | InstanceState::Uninstalling => {
                    InstanceState::NotInstalled
                }
                other => other,
            };
            tracing::info!(key = %key.id, keystore = %ks_id, ?state, ?settled, "reconciler: settling an interrupted install/uninstall");
            key.set_instance(&ks_id, settled, String::new(), now());
        }
        let mut b = Batch::new();
        b.put(Table::Keys, &key.id, &key)?;
        inner.commit(b)?;
    }
    Ok(())
}
