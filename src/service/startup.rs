//! Start-up: refuse a store this build cannot read, check the master KEK against the
//! store, and finish or roll back work a crash interrupted.

use super::{now, Inner, ServiceError};
use crate::domain::{
    ConnectionState, InstanceState, Key, KeyState, Keystore, KeystoreConfig, Vault,
};
use crate::hsm::{HsmError, KekStatus};
use crate::store::{Batch, Table};

const KEK_CHECK_META: &str = "master_kek_check_value";

/// Meta keys `UNSETTLED_PREFIX<key id>` list the keys a crash could leave unsettled: every
/// commit through the service keeps them in step with the key records it writes
/// (`index_unsettled`), in the same atomic batch.
const UNSETTLED_PREFIX: &str = "unsettled_key/";
/// Present once the list above is complete (made by the first start of a build that keeps it).
const UNSETTLED_INDEX_META: &str = "unsettled_index_v1";

pub(super) fn check_and_reconcile(inner: &Inner) -> Result<(), ServiceError> {
    inner.store.check_decodes::<Vault>(Table::Vaults)?;
    inner.store.check_decodes::<Keystore>(Table::Keystores)?;
    // Keys (there may be millions) and audit events are not all read at start: a record that
    // does not decode is reported, with its id, by the call that reads it, and
    // `keyorch audit verify` reads the whole chain. Only the keys a crash may have left
    // unsettled are read, from their index; a database without the index is scanned once,
    // reading each key as a `KeyPeek`, and the index written.
    let unsettled = match inner.store.meta(UNSETTLED_INDEX_META)? {
        Some(_) => inner.store.meta_keys(UNSETTLED_PREFIX)?,
        None => {
            let mut ids = Vec::new();
            inner.store.scan::<KeyPeek>(Table::Keys, |key| {
                if key.needs_settling() {
                    ids.push(key.id);
                }
            })?;
            let mut b = Batch::new();
            for id in &ids {
                b.set_meta(&format!("{UNSETTLED_PREFIX}{id}"), b"");
            }
            b.set_meta(UNSETTLED_INDEX_META, b"1");
            inner.store.commit(b)?;
            tracing::info!(
                unsettled = ids.len(),
                "start-up: index of unsettled keys built"
            );
            ids
        }
    };
    check_master_kek(inner)?;
    reconcile(inner, unsettled)
}

/// Keeps the unsettled-key index in step with the key records `batch` writes (called on
/// every service commit). A record that does not decode is listed, so start-up reads it.
pub(super) fn index_unsettled(batch: &mut Batch) {
    for (id, record) in batch.writes::<KeyPeek>(Table::Keys) {
        let key = format!("{UNSETTLED_PREFIX}{id}");
        match record {
            Some(Ok(peek)) if !peek.needs_settling() => batch.delete_meta(&key),
            Some(_) => batch.set_meta(&key, b""),
            None => batch.delete_meta(&key),
        };
    }
}

/// First start creates the KEK; later starts must find the same one. A missing KEK
/// while the store references one is a loud error, never a silent new KEK.
fn check_master_kek(inner: &Inner) -> Result<(), ServiceError> {
    // Counting reads every key: only on the way to refusing.
    let keys = || inner.store.len(Table::Keys);
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
                "the master KEK (check value {expected}) is missing from the token, and the database holds {} key(s) wrapped under it; restore the token from backup. Refusing to start rather than create a new KEK",
                keys()
            ))),
            Err(e) => Err(e.into()),
        },
        None if inner.store.has_records(Table::Keys)? => Err(ServiceError::Startup(format!(
            "the database holds {} key(s) but records no master KEK; refusing to start",
            keys()
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
fn reconcile(inner: &Inner, unsettled: Vec<String>) -> Result<(), ServiceError> {
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
    for id in unsettled {
        if let Some(key) = inner.store.get::<Key>(Table::Keys, &id)? {
            settle_key(inner, key)?;
        }
    }
    Ok(())
}

/// Whether an instance in `state` of a key in `key` was left in flight by a crash (see
/// `settle_key` for the rules).
fn instance_pending(key: KeyState, state: InstanceState) -> bool {
    match state {
        InstanceState::Installing | InstanceState::Uninstalling | InstanceState::Failed => true,
        // Only an activation that never committed leaves copies of a PRE_ACTIVE key, and
        // only a reactivation that never committed leaves INSTALLED copies of a
        // DEACTIVATED one (deactivation uninstalls, or disables aws_kms copies);
        // COMPROMISED keys keep theirs (MarkCompromised does not uninstall).
        InstanceState::Installed => matches!(key, KeyState::PreActive | KeyState::Deactivated),
        InstanceState::NotInstalled | InstanceState::Unavailable | InstanceState::Disabled => false,
    }
}

/// The instances a crash left in flight.
fn pending_instances(key: &Key) -> Vec<(String, InstanceState)> {
    key.instances
        .iter()
        .filter(|i| instance_pending(key.state, i.state))
        .map(|i| (i.keystore_id.clone(), i.state))
        .collect()
}

/// An ACTIVE key always keeps an INSTALLED copy (UninstallKey refuses the last one); one
/// whose every copy is NOT_INSTALLED (or DISABLED) was cut short while being deactivated.
fn deactivation_cut_short(key: KeyState, states: &[InstanceState]) -> bool {
    key == KeyState::Active
        && !states.is_empty()
        && states
            .iter()
            .all(|s| matches!(s, InstanceState::NotInstalled | InstanceState::Disabled))
}

/// The fields of a stored key that say whether start-up must settle it. Start-up reads every
/// key as this (the rest of the record is skipped, not built): at a million keys a full
/// decode is most of the restart time. A key whose other fields do not decode is reported,
/// with its id, by the first call that reads it.
#[derive(serde::Deserialize)]
struct KeyPeek {
    id: String,
    state: KeyState,
    instances: Vec<InstancePeek>,
}

#[derive(serde::Deserialize)]
struct InstancePeek {
    state: InstanceState,
}

impl KeyPeek {
    fn needs_settling(&self) -> bool {
        let states: Vec<InstanceState> = self.instances.iter().map(|i| i.state).collect();
        deactivation_cut_short(self.state, &states)
            || states.iter().any(|s| instance_pending(self.state, *s))
    }
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
            key.settle_instance(&ks_id, InstanceState::NotInstalled, now());
            continue;
        };
        // The copy of a DEACTIVATED key in a target that disables on deactivation (aws_kms)
        // is its disabled remote key, which removing would schedule for deletion: not
        // touched here.
        if state == InstanceState::Installed
            && key.state == KeyState::Deactivated
            && inner.disables_on_deactivation(&ks)
        {
            tracing::warn!(key = %key.id, keystore = %ks_id, "reconciler: a DEACTIVATED key's copy in a target that disables on deactivation is INSTALLED (a reactivation cut short?); left as it is");
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
        // Restores the target list as the intent recorded: a keystore that joined with an
        // install rolled back, or that an UninstallKey was removing, is no longer a target.
        key.settle_instance(&ks_id, settled, now());
    }
    let states: Vec<InstanceState> = key.instances.iter().map(|i| i.state).collect();
    let interrupted_deactivation = deactivation_cut_short(key.state, &states);
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
