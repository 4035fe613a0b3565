//! Use cases: the only layer that combines domain rules, the store and the HSM.
//! Every blocking call (sled, PKCS#11) runs off tokio's worker threads: the short symmetric
//! operations on the crypto lane (`lane`), everything else on tokio's blocking pool.

mod audit;
mod crypto;
mod error;
mod keys;
mod keystores;
mod lane;
mod remote;
mod startup;
mod vaults;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::domain::{ConnectionState, DomainError, Health, Key, Keystore, Millis, Policy, Vault};
use crate::hsm::Hsm;
use crate::store::{Store, Table};

pub use audit::{EventFilter, Resolved, Scope};
pub use crypto::{DataKey, PublicKey, XksCiphertext, XksKey, XksSealed};
pub use error::ServiceError;
pub use keys::{CreateKey, Filled, KeyFilter, KeyStatus, TargetStatus, UpdateKey};
pub use keystores::{
    AwsKmsPatch, ConfigPatch, CreateKeystore, DisconnectOptions, KeystoreFilter, Pkcs11Patch,
    Secret, TestOutcome, UpdateKeystore, XksPatch,
};
pub use remote::FAILPOINT_ENV;

/// One page of a list call.
#[derive(Debug, Clone)]
pub struct Listing<T> {
    pub items: Vec<T>,
    pub next_page_token: String,
}

/// Who keyorchd's token is, as CK_TOKEN_INFO says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HsmIdentity {
    pub label: String,
    pub serial: String,
    pub manufacturer: String,
    pub model: String,
}

/// The use cases, cheap to clone.
#[derive(Clone)]
pub struct Services {
    inner: Arc<Inner>,
    /// Threads for the short symmetric operations (see `lane`).
    lane: Arc<lane::Lane>,
}

struct Inner {
    store: Store,
    hsm: Hsm,
    /// Serialises mutations: read-check-write sequences never interleave.
    writes: Mutex<()>,
    /// Latest background health of CONNECTED keystores (not durable state).
    health: Mutex<HashMap<String, Health>>,
    /// Who may do what (replaced on SIGHUP).
    policy: RwLock<Policy>,
    /// Opened external targets, by keystore id.
    remotes: Mutex<HashMap<String, remote::Remote>>,
    /// Serialises audit appends (the chain is strictly ordered).
    audit_lock: Mutex<()>,
    /// Bumped by every commit: cached reads older than this are stale.
    generation: AtomicU64,
    /// Decoded key records and their keystores' states for the crypto hot path.
    usable: Mutex<HashMap<String, UsableEntry>>,
    /// The XKS health check's own AES-256 key, wrapped under the master KEK (made once).
    self_test_key: std::sync::OnceLock<Vec<u8>>,
}

/// A decoded key and its targets' connection states, valid for one store generation.
#[derive(Clone)]
pub(crate) struct UsableEntry {
    pub generation: u64,
    pub key: Arc<Key>,
    pub states: Arc<HashMap<String, ConnectionState>>,
}

/// Bound on the hot-path cache; beyond it the cache is simply cleared.
const USABLE_CACHE_MAX: usize = 4096;

pub(crate) fn now() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

pub(crate) fn new_id(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

impl Services {
    /// Checks the store and the master KEK, reconciles interrupted work, and returns
    /// the running services, with `crypto_threads` threads on the crypto lane. See
    /// `startup` for the rules.
    pub fn start(store: Store, hsm: Hsm, crypto_threads: usize) -> Result<Services, ServiceError> {
        let inner = Inner {
            store,
            hsm,
            writes: Mutex::new(()),
            health: Mutex::new(HashMap::new()),
            policy: RwLock::new(Policy::default()),
            remotes: Mutex::new(HashMap::new()),
            audit_lock: Mutex::new(()),
            generation: AtomicU64::new(0),
            usable: Mutex::new(HashMap::new()),
            self_test_key: std::sync::OnceLock::new(),
        };
        startup::check_and_reconcile(&inner)?;
        let lane = lane::Lane::start(crypto_threads)
            .map_err(|e| ServiceError::Internal(format!("cannot start the crypto lane: {e}")))?;
        Ok(Services {
            inner: Arc::new(inner),
            lane: Arc::new(lane),
        })
    }

    /// Runs `f` on the crypto lane (short symmetric operations only: see `lane`).
    async fn on_lane<T, F>(&self, f: F) -> Result<T, ServiceError>
    where
        T: Send + 'static,
        F: FnOnce(&Arc<Inner>) -> Result<T, ServiceError> + Send + 'static,
    {
        let inner = self.inner.clone();
        self.lane
            .run(move || f(&inner))
            .await
            .map_err(|_| ServiceError::Internal("crypto lane task failed".into()))?
    }

    /// Runs `f` on the blocking pool.
    async fn blocking<T, F>(&self, f: F) -> Result<T, ServiceError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, ServiceError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| ServiceError::Internal(format!("worker task failed: {e}")))?
    }

    /// Replaces the access policy (at start and on SIGHUP).
    pub fn set_policy(&self, policy: Policy) {
        *self.inner.policy.write().unwrap_or_else(|p| p.into_inner()) = policy;
    }

    /// The access policy in force.
    pub fn policy(&self) -> Policy {
        self.inner
            .policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Stops the crypto lane once its queued calls are done (at shutdown, after the
    /// listeners have drained). False if a lane thread was still inside the HSM after `wait`.
    pub fn stop_crypto_lane(&self, wait: std::time::Duration) -> bool {
        self.lane.stop(wait)
    }

    /// Flushes the store (at shutdown).
    pub fn flush(&self) -> Result<(), ServiceError> {
        Ok(self.inner.store.flush()?)
    }

    /// Whether the HSM answers (for the gRPC health service).
    /// keyorchd's token: label, serial, manufacturer and model.
    pub fn hsm_identity(&self) -> HsmIdentity {
        let (label, serial) = self.inner.hsm.token_info();
        let (manufacturer, model) = self.inner.hsm.token_make();
        HsmIdentity {
            label,
            serial,
            manufacturer,
            model,
        }
    }

    pub async fn hsm_healthy(&self) -> bool {
        self.blocking(|inner| Ok(inner.hsm.health().is_ok()))
            .await
            .unwrap_or(false)
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, ()> {
        // A panic while holding the lock cannot leave a half-written batch (commits are
        // atomic), so a poisoned lock is safe to reuse.
        self.writes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Commits a batch durably and invalidates every cached read.
    fn commit(&self, mut batch: crate::store::Batch) -> Result<(), ServiceError> {
        startup::index_unsettled(&mut batch);
        let result = self.store.commit(batch);
        // Bump even on failure: the store's state is then unknown to the caches.
        self.generation.fetch_add(1, Ordering::SeqCst);
        Ok(result?)
    }

    /// The key `id` and its targets' states, from the cache while no commit intervened.
    fn key_for_use(&self, id: &str) -> Result<UsableEntry, ServiceError> {
        let generation = self.generation.load(Ordering::SeqCst);
        {
            let cache = self.usable.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(e) = cache.get(id) {
                if e.generation == generation {
                    return Ok(e.clone());
                }
            }
        }
        let key: Key = self
            .store
            .get(Table::Keys, id)?
            .ok_or_else(|| DomainError::KeyNotFound(id.to_string()))?;
        let states = self.keystore_states(key.targets.iter())?;
        let entry = UsableEntry {
            generation,
            key: Arc::new(key),
            states: Arc::new(states),
        };
        let mut cache = self.usable.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= USABLE_CACHE_MAX {
            cache.clear();
        }
        cache.insert(id.to_string(), entry.clone());
        Ok(entry)
    }

    fn vault(&self, id: &str) -> Result<Vault, ServiceError> {
        require_id("id", id)?;
        self.store
            .get(Table::Vaults, id)?
            .ok_or_else(|| DomainError::VaultNotFound(id.to_string()).into())
    }

    fn keystore(&self, id: &str) -> Result<Keystore, ServiceError> {
        require_id("id", id)?;
        self.store
            .get(Table::Keystores, id)?
            .ok_or_else(|| DomainError::KeystoreNotFound(id.to_string()).into())
    }

    fn key(&self, id: &str) -> Result<Key, ServiceError> {
        require_id("id", id)?;
        self.store
            .get(Table::Keys, id)?
            .ok_or_else(|| DomainError::KeyNotFound(id.to_string()).into())
    }

    /// Connection state of each of `ids` (missing keystores are left out).
    fn keystore_states<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a String>,
    ) -> Result<HashMap<String, ConnectionState>, ServiceError> {
        let mut out = HashMap::new();
        for id in ids {
            if let Some(ks) = self.store.get::<Keystore>(Table::Keystores, id)? {
                out.insert(id.clone(), ks.state);
            }
        }
        Ok(out)
    }
}

pub(crate) fn require_id(field: &str, id: &str) -> Result<(), DomainError> {
    if id.is_empty() {
        return Err(DomainError::invalid(field, "is required"));
    }
    Ok(())
}
