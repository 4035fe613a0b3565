//! The process-wide PKCS#11 contexts: each module is loaded and `C_Initialize`d once per process,
//! tokens are found by label or serial, and the user login (which PKCS#11 holds per process) is tracked.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use super::error::{classify, HsmError};
use super::TokenSelector;

/// One loaded module and the PINs that logged its tokens in, by slot id.
struct Module {
    ctx: Pkcs11,
    logins: HashMap<u64, SecretString>,
}

fn modules() -> MutexGuard<'static, HashMap<PathBuf, Module>> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Module>>> = OnceLock::new();
    lock(MODULES.get_or_init(|| Mutex::new(HashMap::new())))
}

/// Locks a mutex, taking the data even if another thread panicked while holding it: every
/// structure guarded here stays consistent between statements.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The process's context for the PKCS#11 module at `module`, loaded and initialised on first use.
///
/// Every [`super::Hsm`] and any other user of the same module in this process (for example a
/// PKCS#11 keystore target) must go through here: `C_Initialize`/`C_Finalize` run more than once
/// per process crash some modules, and logins are per process anyway. The context is never
/// finalised.
pub fn pkcs11_context(module: &Path) -> Result<Pkcs11, HsmError> {
    load(module).map(|(_, ctx)| ctx)
}

/// [`pkcs11_context`], also returning the canonical module path that keys the registry.
pub(crate) fn load(module: &Path) -> Result<(PathBuf, Pkcs11), HsmError> {
    let load_err = |detail: String| HsmError::ModuleLoad {
        path: module.to_path_buf(),
        detail,
    };
    let canonical = std::fs::canonicalize(module).map_err(|e| load_err(e.to_string()))?;
    let mut modules = modules();
    if let Some(m) = modules.get(&canonical) {
        return Ok((canonical, m.ctx.clone()));
    }
    let ctx = Pkcs11::new(&canonical).map_err(|e| match e {
        CkError::MissingSymbol(sym) => load_err(format!("not a PKCS#11 module ({sym} missing)")),
        other => load_err(other.to_string()),
    })?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => {
            return Err(load_err(format!(
                "C_Initialize failed: {}",
                classify(e, false)
            )))
        }
    }
    modules.insert(
        canonical.clone(),
        Module {
            ctx: ctx.clone(),
            logins: HashMap::new(),
        },
    );
    Ok((canonical, ctx))
}

/// A token found on a module: its slot, label and serial (trimmed).
pub(crate) struct FoundToken {
    pub slot: Slot,
    pub label: String,
    pub serial: String,
    /// CK_TOKEN_INFO's manufacturerID and model, trimmed.
    pub manufacturer: String,
    pub model: String,
}

/// Finds the one initialised token that matches `selector`. Slot numbers are never used:
/// SoftHSM2 (and others) give tokens random slot ids.
pub(crate) fn find_token(ctx: &Pkcs11, selector: &TokenSelector) -> Result<FoundToken, HsmError> {
    let slots = ctx.get_slots_with_token().map_err(|e| classify(e, false))?;
    let mut found = Vec::new();
    // A slot whose token does not answer cannot be the one asked for (SoftHSM2 answers
    // CKR_GENERAL_ERROR for a token whose storage went away): skipped, and named when
    // nothing else matches.
    let mut silent = Vec::new();
    for slot in slots {
        let info = match ctx.get_token_info(slot) {
            Ok(info) => info,
            Err(e) => {
                silent.push(format!(
                    "slot {} answers C_GetTokenInfo with {e}",
                    slot.id()
                ));
                continue;
            }
        };
        if !info.token_initialized() {
            continue;
        }
        let label = info.label().trim().to_string();
        let serial = info.serial_number().trim().to_string();
        let hit = match selector {
            TokenSelector::Label(l) => l.trim() == label,
            TokenSelector::Serial(s) => s.trim() == serial,
        };
        if hit {
            found.push(FoundToken {
                slot,
                label,
                serial,
                manufacturer: info.manufacturer_id().trim().to_string(),
                model: info.model().trim().to_string(),
            });
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 if silent.is_empty() => Err(HsmError::TokenNotFound(selector.to_string())),
        0 => Err(HsmError::TokenNotFound(format!(
            "{selector} ({})",
            silent.join("; ")
        ))),
        n => Err(HsmError::TokenNotFound(format!(
            "{selector} (ambiguous: {n} tokens match; select by serial)"
        ))),
    }
}

/// Logs the user in on `session`'s token, once per process.
///
/// PKCS#11 keeps the login per application, so when the token is already logged in the module
/// answers `CKR_USER_ALREADY_LOGGED_IN` without looking at the PIN. To keep a second `Hsm` with
/// a wrong PIN from riding on the first one's login, the PIN of the first successful login is
/// kept (in zeroizing memory) and later PINs are compared with it in constant time.
pub(crate) fn login(
    module: &Path,
    session: &Session,
    slot: Slot,
    pin: &SecretString,
) -> Result<(), HsmError> {
    // Held across C_Login so that two concurrent first logins cannot both skip the comparison.
    let mut modules = modules();
    let result = session.login(UserType::User, Some(pin));
    let record = modules.get_mut(module).map(|m| &mut m.logins);
    match result {
        Ok(()) => {
            if let Some(logins) = record {
                logins.insert(slot.id(), pin.clone());
            }
            Ok(())
        }
        Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {
            match record.and_then(|logins| logins.get(&slot.id())) {
                Some(first) => {
                    let same: bool = first
                        .expose_secret()
                        .as_bytes()
                        .ct_eq(pin.expose_secret().as_bytes())
                        .into();
                    if same {
                        Ok(())
                    } else {
                        Err(HsmError::PinIncorrect)
                    }
                }
                // Logged in by another user of the module in this process: nothing to compare.
                None => Ok(()),
            }
        }
        Err(e) => Err(classify(e, false)),
    }
}
