//! The benchmark's baseline: AES-256-GCM straight through cryptoki, in process, on the
//! token keyorchd uses, one session and one session-object AES-256 key per thread.

use std::path::Path;
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use secrecy::SecretString;

use super::bench_stats::{Summary, WorkerSample};
use super::CliError;

fn failure(context: &str, e: impl std::fmt::Display) -> CliError {
    CliError::Local(format!("raw PKCS#11 baseline: {context}: {e}"))
}

/// A logged-in PKCS#11 context on one token. The library is initialised once per process.
pub struct RawToken {
    pkcs11: Pkcs11,
    slot: Slot,
    /// Keeps the user login alive (login state is per application, not per session).
    login: Session,
}

impl RawToken {
    /// Loads `module`, finds the token labelled `label` and logs in as user.
    pub fn open(module: &Path, label: &str, pin: &SecretString) -> Result<RawToken, CliError> {
        let pkcs11 = Pkcs11::new(module)
            .map_err(|e| failure(&format!("cannot load {}", module.display()), e))?;
        pkcs11
            .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .map_err(|e| failure("C_Initialize", e))?;
        let slots = pkcs11
            .get_slots_with_token()
            .map_err(|e| failure("C_GetSlotList", e))?;
        let slot = slots
            .into_iter()
            .find(|s| {
                pkcs11
                    .get_token_info(*s)
                    .map(|t| t.label() == label)
                    .unwrap_or(false)
            })
            .ok_or_else(|| {
                CliError::Local(format!(
                    "raw PKCS#11 baseline: no token labelled {label:?} (is SOFTHSM2_CONF the \
                     daemon's? see --state-dir, --token-label)"
                ))
            })?;
        let login = pkcs11
            .open_ro_session(slot)
            .map_err(|e| failure("C_OpenSession", e))?;
        login
            .login(UserType::User, Some(pin))
            .map_err(|e| failure("C_Login as user", e))?;
        Ok(RawToken {
            pkcs11,
            slot,
            login,
        })
    }

    /// Runs `threads` threads, each encrypting `payload` with AES-256-GCM and a fresh random
    /// 12-byte IV per operation: `warmup` unmeasured, then `duration` measured.
    pub fn measure(
        &self,
        threads: usize,
        payload: &[u8],
        warmup: Duration,
        duration: Duration,
    ) -> Result<Summary, CliError> {
        let mut workers = Vec::with_capacity(threads);
        for _ in 0..threads {
            let session = self
                .pkcs11
                .open_ro_session(self.slot)
                .map_err(|e| failure("C_OpenSession", e))?;
            let key = session
                .generate_key(
                    &Mechanism::AesKeyGen,
                    &[
                        Attribute::Class(ObjectClass::SECRET_KEY),
                        Attribute::KeyType(KeyType::AES),
                        Attribute::ValueLen(32.into()),
                        Attribute::Token(false),
                        Attribute::Private(true),
                        Attribute::Sensitive(true),
                        Attribute::Extractable(false),
                        Attribute::Encrypt(true),
                    ],
                )
                .map_err(|e| failure("C_GenerateKey (AES-256 session object)", e))?;
            workers.push((session, key));
        }
        let start = Instant::now();
        let measure_from = start + warmup;
        let measure_until = measure_from + duration;
        let results: Vec<Result<WorkerSample, CliError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = workers
                .into_iter()
                .map(|(session, key)| {
                    scope.spawn(move || {
                        // The session closes, and its key vanishes, when the thread ends.
                        worker(&session, key, payload, measure_from, measure_until)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(CliError::Local("a bench thread panicked".into())))
                })
                .collect()
        });
        let samples = results.into_iter().collect::<Result<Vec<_>, _>>()?;
        Ok(Summary::from_workers(samples))
    }

    /// A new read-only session on the token (the login is shared).
    pub fn session(&self) -> Result<Session, CliError> {
        self.pkcs11
            .open_ro_session(self.slot)
            .map_err(|e| failure("C_OpenSession", e))
    }

    /// Logs out and finalises the library.
    pub fn close(self) {
        let _ = self.login.logout();
        drop(self.login);
        let _ = self.pkcs11.finalize();
    }
}

fn encrypt_once(session: &Session, key: ObjectHandle, payload: &[u8]) -> Result<(), CliError> {
    let mut iv = [0u8; 12];
    getrandom::fill(&mut iv).map_err(|e| failure("getrandom", e))?;
    let params = GcmParams::new(&mut iv, &[], 128.into()).map_err(|e| failure("GCM", e))?;
    let ciphertext = session
        .encrypt(&Mechanism::AesGcm(params), key, payload)
        .map_err(|e| failure("C_Encrypt (AES-GCM)", e))?;
    std::hint::black_box(ciphertext);
    Ok(())
}

fn worker(
    session: &Session,
    key: ObjectHandle,
    payload: &[u8],
    measure_from: Instant,
    measure_until: Instant,
) -> Result<WorkerSample, CliError> {
    while Instant::now() < measure_from {
        encrypt_once(session, key, payload)?;
    }
    let started = Instant::now();
    let mut latencies_ns = Vec::with_capacity(1 << 16);
    loop {
        let t0 = Instant::now();
        if t0 >= measure_until {
            break;
        }
        encrypt_once(session, key, payload)?;
        latencies_ns.push(t0.elapsed().as_nanos() as u64);
    }
    Ok(WorkerSample {
        latencies_ns,
        started,
        finished: Instant::now(),
    })
}
