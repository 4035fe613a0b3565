//! The `pkcs11` keystore target: another token reached through a PKCS#11 module, its import
//! KEK `EKMF-BYOK-KEK-FOR-IMPORT`, and installing, checking and removing managed keys there.

mod import_kek;
mod install;
mod kcv;
mod objects;
mod session;

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};

use cryptoki::context::Pkcs11;
use cryptoki::session::Session;
use cryptoki::slot::Slot;
use secrecy::SecretString;

use crate::hsm::{self, KeyKind, OaepHash, TokenSelector};

use super::{InstallError, ManagedKey, ProbeMode, RemoteCopy, Target, TargetError};
use crate::domain::{validate_pin, DomainError};
use import_kek::KekHandles;
use secrecy::ExposeSecret;
use zeroize::Zeroizing;

/// `CKA_LABEL` of the RSA key pair the target imports keys with.
pub const IMPORT_KEK_LABEL: &str = "EKMF-BYOK-KEK-FOR-IMPORT";

/// Labels of the objects keyorch installs start with this (see [`Pkcs11Target::installed_labels`]).
pub const INSTALLED_LABEL_PREFIX: &str = "keyorch-";

/// What [`Pkcs11Target::key_check_value`] answers for an object that is under the label but is
/// not a usable key of the asked kind (wrong class, type or size, usage that forbids the check,
/// or a private and public object that are not one pair): never equal to a real check value.
pub const UNUSABLE_KCV: &str = "unusable";

/// A pkcs11 keystore's credential (the token's user PIN), checked, as the bytes to seal.
pub fn credential_bytes(
    field: &str,
    pin: &SecretString,
) -> Result<Zeroizing<Vec<u8>>, DomainError> {
    validate_pin(field, pin.expose_secret())?;
    Ok(Zeroizing::new(pin.expose_secret().as_bytes().to_vec()))
}

/// How to reach the target token.
#[derive(Clone)]
pub struct Pkcs11TargetConfig {
    /// Path of the PKCS#11 module (`.so`).
    pub module: PathBuf,
    /// Which token on that module (label or serial, never slot number).
    pub token: TokenSelector,
    /// The user PIN.
    pub pin: SecretString,
}

impl fmt::Debug for Pkcs11TargetConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11TargetConfig")
            .field("module", &self.module)
            .field("token", &self.token)
            .field("pin", &"[redacted]")
            .finish()
    }
}

/// A logged-in target token. `Send + Sync`; every call blocks on PKCS#11.
///
/// One long-lived *keeper* session holds the user login (PKCS#11 logs a token out when its last
/// session closes); each operation runs on a fresh session of its own (about a microsecond once
/// logged in), so operations run in parallel. A lost login is noticed at the start of an
/// operation, restored once, and the operation retried.
pub struct Pkcs11Target {
    ctx: Pkcs11,
    /// The canonical module path, the key of the process-wide module registry.
    module: PathBuf,
    slot: Slot,
    pin: SecretString,
    token_label: String,
    token_serial: String,
    keeper: Mutex<Option<Session>>,
    /// The import KEK's handles, found once and dropped when they stop working.
    kek: Mutex<Option<KekHandles>>,
    /// Cached answer of the OAEP-SHA-256 probe.
    oaep_sha256: OnceLock<bool>,
    /// Handles of installed objects by label, to spare searches.
    known: objects::KnownLabels,
    /// Shared by every target on this token: see [`session::StoreLock`].
    store: session::StoreLock,
}

impl fmt::Debug for Pkcs11Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Target")
            .field("module", &self.module)
            .field("token_label", &self.token_label)
            .field("token_serial", &self.token_serial)
            .finish_non_exhaustive()
    }
}

impl Pkcs11Target {
    /// Loads the module (once per process, shared with keyorch's own HSM and other targets),
    /// finds the token by label or serial and logs in as the user. When this process is already
    /// logged in to that token, the PIN is still compared (in constant time) with the one that
    /// logged it in, so a wrong PIN never rides on another login.
    pub fn open(cfg: Pkcs11TargetConfig) -> Result<Pkcs11Target, TargetError> {
        let (module, ctx) = hsm::load_module(&cfg.module)?;
        let token = hsm::find_token(&ctx, &cfg.token)?;
        let keeper = session::log_in(&ctx, &module, token.slot, &cfg.pin)?;
        tracing::info!(
            token_label = %token.label,
            token_serial = %token.serial,
            "PKCS#11 target token opened"
        );
        Ok(Pkcs11Target {
            store: session::StoreLock::for_token(&module, token.slot),
            ctx,
            module,
            slot: token.slot,
            pin: cfg.pin,
            token_label: token.label,
            token_serial: token.serial,
            keeper: Mutex::new(Some(keeper)),
            kek: Mutex::new(None),
            oaep_sha256: OnceLock::new(),
            known: objects::KnownLabels::default(),
        })
    }

    /// Token label and serial, for logs.
    pub fn token_info(&self) -> (String, String) {
        (self.token_label.clone(), self.token_serial.clone())
    }

    /// Makes sure the token holds the RSA-3072 key pair `EKMF-BYOK-KEK-FOR-IMPORT` (private
    /// half: token object, private, sensitive, never extractable, not modifiable, `CKA_UNWRAP`
    /// only; public half: token object, `CKA_WRAP` and `CKA_ENCRYPT`), creating it when the
    /// private half is missing. A missing public half is rebuilt from the private half.
    /// Returns whether the pair was created.
    pub fn ensure_import_kek(&self) -> Result<bool, TargetError> {
        // Serialised with every other creation on this token in this process.
        let _creating = self.lock_label(IMPORT_KEK_LABEL);
        let (created, handles) = self.run_locked(import_kek::ensure)?;
        *lock(&self.kek) = Some(handles);
        Ok(created)
    }

    /// The checks of a connect, changing nothing: the login holds and the import KEK is
    /// present and locked down ([`TargetError::ImportKekMissing`] when it is not there).
    pub fn check(&self) -> Result<(), TargetError> {
        let handles = self.find_import_kek()?;
        *lock(&self.kek) = Some(handles);
        Ok(())
    }

    /// The import KEK's handles, looked up and checked.
    fn find_import_kek(&self) -> Result<KekHandles, TargetError> {
        match self.run_locked(import_kek::find_checked) {
            Err(TargetError::ImportKekMissing) => Err(self.kek_missing()),
            other => other,
        }
    }

    /// IMPORT_KEK_MISSING, unless the token itself went away: a token whose storage is gone
    /// shows no objects (SoftHSM2), which is not a deleted KEK.
    fn kek_missing(&self) -> TargetError {
        match self.token_still_there() {
            Ok(()) => TargetError::ImportKekMissing,
            Err(gone) => gone,
        }
    }

    /// TARGET_NOT_FOUND unless the slot still holds this very token (label and serial).
    fn token_still_there(&self) -> Result<(), TargetError> {
        let gone = |why: String| {
            TargetError::TargetNotFound(format!(
                "token \"{}\" (serial {}) no longer answers: {why}",
                self.token_label, self.token_serial
            ))
        };
        let info = self
            .ctx
            .get_token_info(self.slot)
            .map_err(|e| gone(format!("C_GetTokenInfo failed: {e}")))?;
        if info.label().trim() != self.token_label
            || info.serial_number().trim() != self.token_serial
        {
            return Err(gone(format!(
                "its slot now holds token \"{}\" (serial {})",
                info.label().trim(),
                info.serial_number().trim()
            )));
        }
        Ok(())
    }

    /// The DER SubjectPublicKeyInfo of the import KEK's public half. Answered from the handles
    /// found before when both halves still answer to them (two attribute reads), else looked up.
    pub fn import_kek_spki(&self) -> Result<Vec<u8>, TargetError> {
        // Bound first: a guard in an `if let` scrutinee would live through the block.
        let cached = lock(&self.kek).clone();
        if let Some(kek) = cached {
            if self.run_locked(|session| import_kek::still_there(session, &kek))? {
                return Ok(kek.spki);
            }
            *lock(&self.kek) = None;
        }
        Ok(self.kek_handles()?.spki)
    }

    /// Whether the target can unwrap with RSA-OAEP and SHA-256 (SoftHSM2: no). Probed with the
    /// import KEK itself (a wrap and an unwrap of a throw-away AES key); the answer is cached.
    /// Before the import KEK exists the answer is `false` and not cached.
    pub fn supports_oaep_sha256(&self) -> bool {
        if let Some(known) = self.oaep_sha256.get() {
            return *known;
        }
        match self.run_locked(import_kek::probe_oaep_sha256) {
            Ok(Some(answer)) => *self.oaep_sha256.get_or_init(|| answer),
            Ok(None) => false,
            Err(e) => {
                tracing::debug!(error = %e, "OAEP-SHA-256 probe of the target failed");
                false
            }
        }
    }

    /// Unwraps a transport blob from [`crate::hsm::Hsm::wrap_for_transport`] in the target:
    /// `C_UnwrapKey` with RSA-OAEP(`hash`) under the import KEK's private half gives an
    /// ephemeral AES session key, then `C_UnwrapKey` with `CKM_AES_KEY_WRAP_PAD` under that key
    /// gives the key as a token object labelled `label` (also its `CKA_ID`), sensitive, never
    /// extractable, with the usage its kind needs (AES: encrypt, decrypt, sign and verify for
    /// CMAC; HMAC: a generic secret that signs and verifies; RSA and EC: a private key that signs,
    /// plus the public key built from `spki` under the same label and id, which verifies).
    ///
    /// Idempotent: when an object with that label exists it is left alone and the answer is
    /// `Ok(false)` (the caller compares check values), except that a key pair missing its
    /// public half (an install cut short) gets it, `Ok(true)`. `Ok(true)` when it created the
    /// key. [`TargetError::ImportKekMissing`] when the import KEK is gone.
    pub fn install(
        &self,
        label: &str,
        kind: KeyKind,
        blob: &[u8],
        hash: OaepHash,
        spki: Option<&[u8]>,
    ) -> Result<bool, TargetError> {
        objects::check_label(label)?;
        let public = objects::parse_spki(kind, spki)?;
        let request = install::Request {
            label,
            kind,
            blob,
            hash,
            public: public.as_ref(),
        };
        let _busy = self.lock_label(label);
        let mut retried_kek = false;
        loop {
            let kek = self.kek_handles()?;
            let outcome = self.run(|session| {
                install::install(session, &kek, &request, &self.known, &self.store)
            })?;
            match outcome {
                install::Installed::KekStale if !retried_kek => {
                    // The cached handle stopped working (deleted, or recreated): look again.
                    retried_kek = true;
                    *lock(&self.kek) = None;
                }
                install::Installed::KekStale => return Err(self.kek_missing()),
                install::Installed::Done(created) => {
                    if created {
                        tracing::info!(label, ?kind, "installed a key in the PKCS#11 target");
                    }
                    return Ok(created);
                }
            }
        }
    }

    /// Destroys every token object labelled `label` (secret or private key and public key).
    /// `Ok(false)` when there was none. The import KEK's label is refused.
    pub fn uninstall(&self, label: &str) -> Result<bool, TargetError> {
        objects::check_label(label)?;
        let _busy = self.lock_label(label);
        let removed = self.run_locked(|session| install::uninstall(session, label, &self.known))?;
        if removed {
            tracing::info!(label, "uninstalled a key from the PKCS#11 target");
        }
        Ok(removed)
    }

    /// The check value the target computes for the key labelled `label`, by keyorch's
    /// definition (AES: first 8 bytes of AES-CMAC of 16 zero bytes; HMAC: of HMAC-SHA256 of 32
    /// zero bytes; RSA and EC: of SHA-256 of the DER SPKI built from the public object, after
    /// proving that the private object is its pair), lowercase hex. `None` when no such key is
    /// there (for a key pair: when either half is missing). [`UNUSABLE_KCV`] when an object
    /// under that label is not a usable key of `kind`.
    pub fn key_check_value(
        &self,
        label: &str,
        kind: KeyKind,
    ) -> Result<Option<String>, TargetError> {
        objects::check_label(label)?;
        self.run_locked(|session| kcv::key_check_value(session, label, kind, &self.known))
    }

    /// The labels of every object keyorch installed here (labels starting with
    /// [`INSTALLED_LABEL_PREFIX`]), sorted, each once.
    pub fn installed_labels(&self) -> Result<Vec<String>, TargetError> {
        self.run_locked(objects::installed_labels)
    }

    /// The import KEK's handles: cached, else looked up.
    fn kek_handles(&self) -> Result<KekHandles, TargetError> {
        let cached = lock(&self.kek).clone();
        if let Some(handles) = cached {
            return Ok(handles);
        }
        let handles = self.find_import_kek()?;
        *lock(&self.kek) = Some(handles.clone());
        Ok(handles)
    }

    /// Waits until no other change to the objects labelled `label` on this token runs in this
    /// process (through this target or another one on the same token), and marks it busy.
    fn lock_label(&self, label: &str) -> LabelGuard {
        let key = (self.module.clone(), self.slot.id(), label.to_string());
        let labels = busy_labels();
        let mut held = lock(&labels.held);
        while held.contains(&key) {
            held = labels
                .freed
                .wait(held)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        held.insert(key.clone());
        LabelGuard { key }
    }
}

/// A token object's label on a token: module, slot id, label.
type LabelKey = (PathBuf, u64, String);

/// Labels being installed, uninstalled or created right now, process-wide: one change per
/// label and token at a time, so that no two calls create the same object twice.
struct BusyLabels {
    held: Mutex<HashSet<LabelKey>>,
    freed: Condvar,
}

fn busy_labels() -> &'static BusyLabels {
    static BUSY: OnceLock<BusyLabels> = OnceLock::new();
    BUSY.get_or_init(|| BusyLabels {
        held: Mutex::new(HashSet::new()),
        freed: Condvar::new(),
    })
}

/// Marks a label busy until dropped.
struct LabelGuard {
    key: LabelKey,
}

impl Drop for LabelGuard {
    fn drop(&mut self) {
        let labels = busy_labels();
        lock(&labels.held).remove(&self.key);
        labels.freed.notify_all();
    }
}

/// Locks a mutex, taking the data even after a panic elsewhere (every structure guarded here
/// stays consistent between statements).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The BYOK flow of DESIGN §6: the key wrapped in keyorch's HSM under this token's import KEK
/// (RSA-OAEP, SHA-256 where both tokens can, else SHA-1, around AES-KWP), unwrapped here, and
/// proved by its check value.
impl Target for Pkcs11Target {
    fn probe(
        &self,
        keystore_id: &str,
        mode: ProbeMode,
        connected: bool,
    ) -> Result<Option<String>, TargetError> {
        match mode {
            ProbeMode::Connect => {
                if self.ensure_import_kek()? {
                    tracing::info!(keystore = %keystore_id, "created EKMF-BYOK-KEK-FOR-IMPORT in the target");
                }
                Ok(None)
            }
            // Connect creates a missing import KEK; so a check predicts success unless the
            // keystore is CONNECTED (then the KEK was deleted under us).
            ProbeMode::Check | ProbeMode::Heartbeat => match self.check() {
                Err(TargetError::ImportKekMissing) if !connected => Ok(None),
                other => other.map(|()| None),
            },
        }
    }

    fn install(
        &self,
        hsm: &hsm::Hsm,
        material: &hsm::KeyRef<'_>,
        label: &str,
    ) -> Result<String, InstallError> {
        let spki = self.import_kek_spki()?;
        let hash = if hsm.supports_oaep_sha256() && self.supports_oaep_sha256() {
            OaepHash::Sha256
        } else {
            OaepHash::Sha1
        };
        let blob = hsm.wrap_for_transport(material, &spki, hash)?;
        Pkcs11Target::install(self, label, material.kind, &blob, hash, material.spki_der)?;
        Ok(String::new())
    }

    fn confirm_install(
        &self,
        key: &ManagedKey<'_>,
        label: &str,
        _remote_id: &str,
    ) -> Result<(), InstallError> {
        let kcv = self.key_check_value(label, key.kind)?;
        if kcv.as_deref() != Some(key.kcv) {
            return Err(InstallError::Mismatch(format!(
                "the target holds other material under {label} (check value {}, expected {}); run SyncKey",
                kcv.unwrap_or_else(|| "none".into()),
                key.kcv
            )));
        }
        Ok(())
    }

    fn uninstall(&self, label: &str) -> Result<bool, TargetError> {
        Pkcs11Target::uninstall(self, label)
    }

    fn copy(&self, key: &ManagedKey<'_>, label: &str) -> Result<Option<RemoteCopy>, TargetError> {
        Ok(self
            .key_check_value(label, key.kind)?
            .map(|kcv| RemoteCopy::by_check_value(kcv, key.kcv)))
    }
}
