//! Sessions on the target token: the login, a fresh session per operation, one retry after a
//! lost login, and how PKCS#11 failures become [`TargetError`]s.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use cryptoki::context::{Function, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::{Session, SessionState};
use cryptoki::slot::Slot;
use secrecy::SecretString;

use crate::hsm;

use super::{lock, Pkcs11Target, TargetError};

/// An operation's failure before classification: a raw cryptoki error keeps its return value
/// so that a lost login can be told from everything else.
#[derive(Debug)]
pub(super) enum Failure {
    Ck(CkError),
    Target(TargetError),
}

impl From<CkError> for Failure {
    fn from(e: CkError) -> Self {
        Failure::Ck(e)
    }
}

impl From<TargetError> for Failure {
    fn from(e: TargetError) -> Self {
        Failure::Target(e)
    }
}

impl From<crate::hsm::HsmError> for Failure {
    fn from(e: crate::hsm::HsmError) -> Self {
        Failure::Target(e.into())
    }
}

impl Failure {
    pub(super) fn rv(&self) -> Option<RvError> {
        match self {
            Failure::Ck(CkError::Pkcs11(rv, _)) => Some(*rv),
            _ => None,
        }
    }

    /// True when the session or the login is gone and logging in again may help.
    fn is_login_loss(&self) -> bool {
        matches!(
            self.rv(),
            Some(
                RvError::UserNotLoggedIn
                    | RvError::SessionHandleInvalid
                    | RvError::SessionClosed
                    | RvError::DeviceError
            )
        )
    }

    fn classify(self) -> TargetError {
        match self {
            Failure::Target(e) => e,
            Failure::Ck(e) => classify(e),
        }
    }
}

/// Maps a cryptoki error to a [`TargetError`].
pub(super) fn classify(e: CkError) -> TargetError {
    match &e {
        CkError::Pkcs11(
            rv @ (RvError::TokenNotPresent
            | RvError::TokenNotRecognized
            | RvError::DeviceRemoved
            | RvError::SlotIdInvalid),
            _,
        ) => TargetError::TargetNotFound(format!("the token went away ({})", hsm::ckr_name(*rv))),
        CkError::Pkcs11(rv @ (RvError::PinExpired | RvError::PinInvalid), _) => {
            TargetError::InvalidCredentials(hsm::ckr_name(*rv))
        }
        CkError::Pkcs11(rv @ RvError::MechanismParamInvalid, function) => {
            TargetError::NotSupported(format!("{function:?}: {}", hsm::ckr_name(*rv)))
        }
        _ => TargetError::from(hsm::classify(e, false)),
    }
}

/// One token's object store, as far as this process is concerned: the calls that search,
/// create or destroy its token objects take turns.
///
/// SoftHSM2 2.6.1's file store races when one thread searches (`C_FindObjects` re-reads the
/// token directory) while another creates a token object: the creating call fails now and then
/// with `CKR_GENERAL_ERROR` (seen with plain cryptoki: about 1 in 200 `C_UnwrapKey` calls with 4
/// threads). Every `Pkcs11Target` on the same token shares one lock; the RSA-OAEP unwrap, which
/// makes only a session object and is the slow part of an install, runs outside it.
#[derive(Clone)]
pub(super) struct StoreLock(Arc<Mutex<()>>);

impl StoreLock {
    /// The lock of the token in `slot` of `module`.
    pub(super) fn for_token(module: &Path, slot: Slot) -> StoreLock {
        static LOCKS: OnceLock<Mutex<HashMap<(PathBuf, u64), StoreLock>>> = OnceLock::new();
        let mut locks = lock(LOCKS.get_or_init(|| Mutex::new(HashMap::new())));
        locks
            .entry((module.to_path_buf(), slot.id()))
            .or_insert_with(|| StoreLock(Arc::new(Mutex::new(()))))
            .clone()
    }

    pub(super) fn hold(&self) -> MutexGuard<'_, ()> {
        lock(&self.0)
    }
}

/// Opens the keeper session on `slot` and logs the user in (or checks the PIN against the
/// login this process already holds).
pub(super) fn log_in(
    ctx: &Pkcs11,
    module: &Path,
    slot: Slot,
    pin: &SecretString,
) -> Result<Session, TargetError> {
    let session = ctx.open_rw_session(slot).map_err(classify)?;
    hsm::login_user(module, &session, slot, pin)?;
    Ok(session)
}

/// Fails with `CKR_USER_NOT_LOGGED_IN` unless `session` sees the user's objects: without the
/// login, private objects are invisible and "not found" would be a lie.
fn require_user(session: &Session) -> Result<(), Failure> {
    let state = session.get_session_info()?.session_state();
    if matches!(state, SessionState::RwUser | SessionState::RoUser) {
        Ok(())
    } else {
        Err(CkError::Pkcs11(RvError::UserNotLoggedIn, Function::Login).into())
    }
}

impl Pkcs11Target {
    /// Runs `op` on a fresh session. When the login or the session turns out to be lost, logs
    /// in again (dropping the cached import-KEK handles) and runs `op` once more.
    pub(super) fn run<T>(
        &self,
        mut op: impl FnMut(&Session) -> Result<T, Failure>,
    ) -> Result<T, TargetError> {
        let mut retried = false;
        loop {
            let result = self.session().and_then(|session| {
                require_user(&session)?;
                op(&session)
            });
            match result {
                Ok(value) => return Ok(value),
                Err(e) if e.is_login_loss() && !retried => {
                    retried = true;
                    tracing::warn!(
                        token_label = %self.token_label,
                        rv = %e.rv().map(hsm::ckr_name).unwrap_or_default(),
                        "PKCS#11 target login lost; logging in again and retrying once"
                    );
                    self.relogin()?;
                }
                Err(e) => return Err(e.classify()),
            }
        }
    }

    /// [`Pkcs11Target::run`] holding the token's [`StoreLock`] during `op`.
    pub(super) fn run_locked<T>(
        &self,
        mut op: impl FnMut(&Session) -> Result<T, Failure>,
    ) -> Result<T, TargetError> {
        self.run(|session| {
            let _store = self.store.hold();
            op(session)
        })
    }

    /// A new read-write session, logging in first when the keeper session is gone.
    fn session(&self) -> Result<Session, Failure> {
        if lock(&self.keeper).is_none() {
            self.relogin()?;
        }
        Ok(self.ctx.open_rw_session(self.slot)?)
    }

    /// Replaces the keeper session and logs in again.
    fn relogin(&self) -> Result<(), TargetError> {
        let mut keeper = lock(&self.keeper);
        // Closing a session the module already dropped fails; that is expected here.
        drop(keeper.take());
        *lock(&self.kek) = None;
        self.known.clear();
        *keeper = Some(log_in(&self.ctx, &self.module, self.slot, &self.pin)?);
        Ok(())
    }
}
