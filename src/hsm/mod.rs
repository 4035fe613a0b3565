//! The daemon's own HSM through PKCS#11 (cryptoki): token and login, session pool, master KEK,
//! key generation, wrapping and use. Blocking code; imports no other keyorch layer.

mod cache;
mod context;
mod ecdsa_sig;
mod error;
mod import_wrap;
mod kek;
mod keygen;
mod objects;
mod ops;
mod pool;
mod secrets;
mod spki;
mod transport;

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use cryptoki::object::ObjectHandle;
use secrecy::SecretString;

pub use context::pkcs11_context;
pub use error::HsmError;
pub use kek::KEK_LABEL;
pub use secrets::MAX_SECRET_LEN;
pub use transport::OaepHash;

// Shared with `crate::targets` (another token of a possibly shared module): the module
// registry, token lookup, login bookkeeping, error classification and SPKI codecs.
pub(crate) use context::{find_token, load as load_module, login as login_user};
pub(crate) use error::{ckr_name, classify};
pub(crate) use objects::Temporary;
pub(crate) use spki::{modulus_bits, Curve, PublicKey};
pub(crate) use transport::oaep_mechanism;

use cache::KeyCache;
use context::lock;
use error::OpError;
use pool::{PooledSession, SessionPool};

/// How to reach the HSM.
pub struct HsmConfig {
    /// Path of the PKCS#11 module (`.so`).
    pub module: PathBuf,
    /// Which token on that module.
    pub token: TokenSelector,
    /// The user PIN.
    pub pin: SecretString,
    /// Worker sessions in the pool (default 4).
    pub sessions: usize,
    /// Unwrapped key objects kept for reuse (default 1024; 0 turns caching off).
    pub key_cache: usize,
}

impl HsmConfig {
    /// A configuration with the default pool and cache sizes.
    pub fn new(module: impl Into<PathBuf>, token: TokenSelector, pin: SecretString) -> HsmConfig {
        HsmConfig {
            module: module.into(),
            token,
            pin,
            sessions: 4,
            key_cache: 1024,
        }
    }
}

impl fmt::Debug for HsmConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HsmConfig")
            .field("module", &self.module)
            .field("token", &self.token)
            .field("pin", &"[redacted]")
            .field("sessions", &self.sessions)
            .field("key_cache", &self.key_cache)
            .finish()
    }
}

/// A token is chosen by its label or its serial number, never by slot number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenSelector {
    Label(String),
    Serial(String),
}

impl fmt::Display for TokenSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSelector::Label(l) => write!(f, "label {l:?}"),
            TokenSelector::Serial(s) => write!(f, "serial {s:?}"),
        }
    }
}

/// The kinds of key keyorch manages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyKind {
    Aes128,
    Aes192,
    Aes256,
    Rsa2048,
    Rsa3072,
    Rsa4096,
    EcP256,
    EcP384,
    HmacSha256,
}

/// What a kind is, as the HSM sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Family {
    /// AES with a key of this many bytes.
    Aes(usize),
    /// HMAC-SHA256 on a generic secret of this many bytes.
    Hmac(usize),
    /// RSA with a modulus of this many bits.
    Rsa(usize),
    Ec(Curve),
}

impl KeyKind {
    /// Every kind, for iteration.
    pub const ALL: [KeyKind; 9] = [
        KeyKind::Aes128,
        KeyKind::Aes192,
        KeyKind::Aes256,
        KeyKind::Rsa2048,
        KeyKind::Rsa3072,
        KeyKind::Rsa4096,
        KeyKind::EcP256,
        KeyKind::EcP384,
        KeyKind::HmacSha256,
    ];

    /// True for AES and HMAC keys (no public half).
    pub fn is_symmetric(self) -> bool {
        matches!(self.family(), Family::Aes(_) | Family::Hmac(_))
    }

    pub(crate) fn family(self) -> Family {
        match self {
            KeyKind::Aes128 => Family::Aes(16),
            KeyKind::Aes192 => Family::Aes(24),
            KeyKind::Aes256 => Family::Aes(32),
            KeyKind::Rsa2048 => Family::Rsa(2048),
            KeyKind::Rsa3072 => Family::Rsa(3072),
            KeyKind::Rsa4096 => Family::Rsa(4096),
            KeyKind::EcP256 => Family::Ec(Curve::P256),
            KeyKind::EcP384 => Family::Ec(Curve::P384),
            KeyKind::HmacSha256 => Family::Hmac(32),
        }
    }
}

/// Signature algorithms. RSA-PSS uses a salt as long as the hash and MGF1 with the same hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SignAlg {
    RsaPssSha256,
    RsaPssSha384,
    RsaPssSha512,
    RsaPkcs1Sha256,
    RsaPkcs1Sha384,
    RsaPkcs1Sha512,
    EcdsaSha256,
    EcdsaSha384,
}

impl SignAlg {
    /// Every algorithm, for iteration.
    pub const ALL: [SignAlg; 8] = [
        SignAlg::RsaPssSha256,
        SignAlg::RsaPssSha384,
        SignAlg::RsaPssSha512,
        SignAlg::RsaPkcs1Sha256,
        SignAlg::RsaPkcs1Sha384,
        SignAlg::RsaPkcs1Sha512,
        SignAlg::EcdsaSha256,
        SignAlg::EcdsaSha384,
    ];

    /// True when a key of `kind` can make this signature: RSA algorithms with RSA keys, ECDSA
    /// with EC keys (either hash on either curve).
    pub fn fits(self, kind: KeyKind) -> bool {
        matches!(
            (self.is_ecdsa(), kind.family()),
            (false, Family::Rsa(_)) | (true, Family::Ec(_))
        )
    }

    fn is_ecdsa(self) -> bool {
        matches!(self, SignAlg::EcdsaSha256 | SignAlg::EcdsaSha384)
    }
}

/// The state of the master KEK after [`Hsm::master_kek`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KekStatus {
    Found { kcv: String },
    Created { kcv: String },
}

impl KekStatus {
    /// The KEK's check value, whichever way it was obtained.
    pub fn kcv(&self) -> &str {
        match self {
            KekStatus::Found { kcv } | KekStatus::Created { kcv } => kcv,
        }
    }
}

/// A freshly generated key, as the caller stores it.
#[derive(Clone, Debug)]
pub struct GeneratedKey {
    /// The key wrapped under the master KEK with `CKM_AES_KEY_WRAP_PAD` (RFC 5649); private
    /// keys as PKCS#8 inside that wrap.
    pub wrapped: Vec<u8>,
    /// DER SubjectPublicKeyInfo for RSA and EC keys; None for symmetric keys.
    pub spki_der: Option<Vec<u8>>,
    /// Key check value, lowercase hex of 8 bytes, computed in the HSM.
    pub kcv: String,
}

/// What the service hands in to use a stored key.
#[derive(Clone, Copy, Debug)]
pub struct KeyRef<'a> {
    pub id: &'a str,
    pub kind: KeyKind,
    pub wrapped: &'a [u8],
    pub spki_der: Option<&'a [u8]>,
}

/// A logged-in token. Cheap to clone; all clones share sessions and the key cache.
///
/// Key material never leaves the HSM in the clear. A managed key is generated as a session
/// object, wrapped under the master KEK with `CKM_AES_KEY_WRAP_PAD` (RFC 5649), and only that
/// blob is stored by the caller. To use a key, the blob is unwrapped into a sensitive,
/// non-extractable session object, cached (bounded, least recently used out) under the key's
/// id. The only token object keyorch ever creates is the master KEK.
///
/// Files: `context` (process-wide module and login), `pool` (sessions), `cache` (unwrapped
/// objects), `objects` (templates, unwrapping), `kek`, `keygen`, `ops` (crypto operations),
/// `spki` and `ecdsa_sig` (DER), `error`.
#[derive(Clone)]
pub struct Hsm {
    inner: Arc<Inner>,
}

impl fmt::Debug for Hsm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hsm")
            .field("token_label", &self.inner.token_label)
            .field("token_serial", &self.inner.token_serial)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    pool: SessionPool,
    cache: KeyCache,
    /// The master KEK's handle and the session generation it was found in.
    kek: Mutex<Option<(ObjectHandle, u64)>>,
    /// Serialises KEK creation so two callers cannot make two KEKs.
    kek_creation: Mutex<()>,
    token_label: String,
    token_serial: String,
    token_manufacturer: String,
    token_model: String,
    /// Whether C_WrapKey does RSA-OAEP with SHA-256, probed at open.
    oaep_sha256: bool,
    /// GCM IVs from the token's RNG, drawn in blocks.
    ivs: ops::IvSource,
}

impl Hsm {
    /// Loads the module (once per process), finds the token by label or serial, logs in as the
    /// user (once per process and token) and prepares the session pool.
    pub fn open(cfg: HsmConfig) -> Result<Hsm, HsmError> {
        let (module, ctx) = context::load(&cfg.module)?;
        let token = context::find_token(&ctx, &cfg.token)?;
        let pool = SessionPool::new(ctx, module, token.slot, cfg.pin, cfg.sessions)?;
        let oaep_sha256 = match pool.acquire() {
            Ok(session) => transport::probe_oaep_sha256(&session),
            Err(e) => return Err(e.classify(false)),
        };
        tracing::info!(
            token_label = %token.label,
            token_serial = %token.serial,
            sessions = cfg.sessions,
            key_cache = cfg.key_cache,
            oaep_sha256,
            "HSM token opened"
        );
        Ok(Hsm {
            inner: Arc::new(Inner {
                pool,
                cache: KeyCache::new(cfg.key_cache),
                kek: Mutex::new(None),
                kek_creation: Mutex::new(()),
                token_label: token.label,
                token_serial: token.serial,
                token_manufacturer: token.manufacturer,
                token_model: token.model,
                oaep_sha256,
                ivs: ops::IvSource::default(),
            }),
        })
    }

    /// The token's manufacturer and model (CK_TOKEN_INFO), for health reports.
    pub fn token_make(&self) -> (String, String) {
        (
            self.inner.token_manufacturer.clone(),
            self.inner.token_model.clone(),
        )
    }

    /// Token label and serial, for logs.
    pub fn token_info(&self) -> (String, String) {
        (
            self.inner.token_label.clone(),
            self.inner.token_serial.clone(),
        )
    }

    /// Drops any cached object of this key id (call when the key is destroyed).
    pub fn forget(&self, key_id: &str) {
        self.inner.cache.forget(key_id);
        self.inner.bury_if_open();
    }

    /// Number of unwrapped key objects currently cached.
    pub fn cached_keys(&self) -> usize {
        self.inner.cache.len()
    }
}

impl Inner {
    /// Runs `op` on a pooled session. If the session or its objects turn out to be lost (see
    /// [`error::is_session_loss`]), throws away all sessions and cached objects, logs in again,
    /// and runs `op` once more on a fresh session. A session on which a PKCS#11 call failed is
    /// closed rather than returned to the pool.
    pub(crate) fn run<T>(
        &self,
        mut op: impl FnMut(&Inner, &PooledSession<'_>) -> Result<T, OpError>,
    ) -> Result<T, HsmError> {
        let mut retried = false;
        loop {
            let (result, generation) = match self.pool.acquire() {
                Ok(mut session) => {
                    let generation = session.generation();
                    let mut result = op(self, &session);
                    // Object handles die with their generation, and PKCS#11 does not promise
                    // that a dead handle never names a new object: a call that ran while the
                    // sessions were reset may have used a handle that names another object by
                    // then. Whatever it answered (a "bad blob" from unwrapping under a stale
                    // KEK handle included), it runs again on the new generation.
                    if self.pool.generation() != generation {
                        result = Err(OpError::Stale);
                    }
                    // A session whose call failed may be left with an operation active
                    // (SoftHSM2 leaves C_EncryptInit's state behind when C_Encrypt fails on a
                    // lost login): it is closed, never lent out again. Errors are rare, and a
                    // session is cheap to open; a poisoned one failed every later call on it.
                    if matches!(result, Err(OpError::Ck(_) | OpError::Stale)) {
                        session.discard();
                    }
                    (result, generation)
                }
                Err(e) => (Err(e), self.pool.generation()),
            };
            match result {
                Ok(value) => return Ok(value),
                Err(e) if e.is_session_loss() && !retried => {
                    retried = true;
                    tracing::warn!(
                        token_label = %self.token_label,
                        rv = %e.rv().map(error::ckr_name).unwrap_or_default(),
                        "HSM sessions lost; reopening sessions, dropping cached keys, retrying once"
                    );
                    self.reset(generation)?;
                }
                Err(e) => return Err(e.classify(retried)),
            }
        }
    }

    /// Discards the sessions of `generation` and everything made in them.
    fn reset(&self, generation: u64) -> Result<(), HsmError> {
        if self.pool.reset(generation)? {
            self.cache.clear();
            *lock(&self.kek) = None;
            // Objects of the old generation died with its holder session.
            let _ = self.cache.take_graveyard();
        }
        Ok(())
    }
}
