//! The bounded pool of PKCS#11 sessions, and the long-lived holder session that owns every
//! cached key object. A generation number changes whenever the sessions are thrown away.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

use cryptoki::context::Pkcs11;
use cryptoki::session::Session;
use cryptoki::slot::Slot;
use secrecy::SecretString;

use super::context::{self, lock};
use super::error::{HsmError, OpError};

/// Sessions on one token, all logged in through the process-wide user login.
///
/// Worker sessions run operations; at most `max` exist, and callers wait for a free one.
/// Session objects die with the session that created them, so cached key objects are all made
/// in one separate *holder* session that is closed only by [`SessionPool::reset`]; objects made
/// there are usable from every worker session.
pub(crate) struct SessionPool {
    ctx: Pkcs11,
    module: PathBuf,
    slot: Slot,
    pin: SecretString,
    max: usize,
    generation: AtomicU64,
    idle: Mutex<Idle>,
    returned: Condvar,
    holder: Mutex<Holder>,
}

struct Idle {
    sessions: Vec<(Session, u64)>,
    /// Worker sessions open, idle or lent out.
    open: usize,
}

/// The session that owns cached key objects, with the generation it was opened in.
pub(crate) struct Holder {
    session: Option<Session>,
    generation: u64,
}

impl Holder {
    /// The holder session, if it is open.
    pub(crate) fn session(&self) -> Option<&Session> {
        self.session.as_ref()
    }

    /// The generation of the objects this session creates.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }
}

impl SessionPool {
    /// Opens the holder session and logs the user in.
    pub(crate) fn new(
        ctx: Pkcs11,
        module: PathBuf,
        slot: Slot,
        pin: SecretString,
        max: usize,
    ) -> Result<SessionPool, HsmError> {
        let pool = SessionPool {
            ctx,
            module,
            slot,
            pin,
            max: max.max(1),
            generation: AtomicU64::new(0),
            idle: Mutex::new(Idle {
                sessions: Vec::new(),
                open: 0,
            }),
            returned: Condvar::new(),
            holder: Mutex::new(Holder {
                session: None,
                generation: 0,
            }),
        };
        {
            let mut holder = lock(&pool.holder);
            pool.open_holder(&mut holder)
                .map_err(|e| e.classify(false))?;
        }
        Ok(pool)
    }

    /// The current generation: objects and sessions of older generations are gone.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Takes a worker session, opening one if fewer than `max` exist, else waiting for one.
    pub(crate) fn acquire(&self) -> Result<PooledSession<'_>, OpError> {
        let mut idle = lock(&self.idle);
        loop {
            let current = self.generation();
            if let Some((session, generation)) = idle.sessions.pop() {
                if generation == current {
                    return Ok(PooledSession {
                        pool: self,
                        session: Some(session),
                        generation,
                        discard: false,
                    });
                }
                idle.open = idle.open.saturating_sub(1);
                continue;
            }
            if idle.open < self.max {
                idle.open += 1;
                drop(idle);
                return match self.ctx.open_rw_session(self.slot) {
                    Ok(session) => Ok(PooledSession {
                        pool: self,
                        session: Some(session),
                        generation: current,
                        discard: false,
                    }),
                    Err(e) => {
                        {
                            let mut idle = lock(&self.idle);
                            idle.open = idle.open.saturating_sub(1);
                        }
                        self.returned.notify_one();
                        Err(e.into())
                    }
                };
            }
            idle = self
                .returned
                .wait(idle)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    /// Locks the holder session, reopening it (and logging in) if a reset left it closed.
    pub(crate) fn holder(&self) -> Result<MutexGuard<'_, Holder>, OpError> {
        let mut holder = lock(&self.holder);
        if holder.session.is_none() {
            self.open_holder(&mut holder)?;
        }
        Ok(holder)
    }

    /// Locks the holder session only if it is open.
    pub(crate) fn holder_if_open(&self) -> Option<MutexGuard<'_, Holder>> {
        let holder = lock(&self.holder);
        holder.session.is_some().then_some(holder)
    }

    fn open_holder(&self, holder: &mut Holder) -> Result<(), OpError> {
        let session = self.ctx.open_rw_session(self.slot)?;
        context::login(&self.module, &session, self.slot, &self.pin)?;
        holder.session = Some(session);
        holder.generation = self.generation();
        Ok(())
    }

    /// Throws away every session of generation `observed` (closing the holder destroys all
    /// cached objects), starts a new generation, then reopens the holder and logs in again.
    /// Returns false, doing nothing, when another thread already reset that generation.
    pub(crate) fn reset(&self, observed: u64) -> Result<bool, HsmError> {
        let mut holder = lock(&self.holder);
        if self.generation() != observed {
            return Ok(false);
        }
        let old_holder = holder.session.take();
        self.generation.fetch_add(1, Ordering::AcqRel);
        let old_idle = {
            let mut idle = lock(&self.idle);
            let old = std::mem::take(&mut idle.sessions);
            idle.open = idle.open.saturating_sub(old.len());
            old
        };
        self.returned.notify_all();
        // Closing a session the module already dropped fails; that is expected here.
        drop(old_idle);
        drop(old_holder);
        self.open_holder(&mut holder)
            .map_err(|e| e.classify(true))?;
        Ok(true)
    }
}

/// A worker session lent out by the pool; goes back on drop unless discarded or outdated.
pub(crate) struct PooledSession<'p> {
    pool: &'p SessionPool,
    session: Option<Session>,
    generation: u64,
    discard: bool,
}

impl PooledSession<'_> {
    /// The generation this session belongs to.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Closes the session instead of returning it to the pool.
    pub(crate) fn discard(&mut self) {
        self.discard = true;
    }
}

impl std::ops::Deref for PooledSession<'_> {
    type Target = Session;

    fn deref(&self) -> &Session {
        // Invariant: `session` is Some from construction until `drop` takes it.
        self.session
            .as_ref()
            .expect("a pooled session is present until dropped")
    }
}

impl Drop for PooledSession<'_> {
    fn drop(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        let keep = !self.discard && self.generation == self.pool.generation();
        let closing = {
            let mut idle = lock(&self.pool.idle);
            if keep {
                idle.sessions.push((session, self.generation));
                None
            } else {
                idle.open = idle.open.saturating_sub(1);
                Some(session)
            }
        };
        self.pool.returned.notify_one();
        drop(closing);
    }
}
