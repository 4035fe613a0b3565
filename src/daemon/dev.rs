//! The embedded default (`keyorchd --dev`): a private SoftHSM2 token, the sled database
//! and the socket under one state folder, created on first start and reused after.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;

use super::config::read_pin_file;
use crate::hsm::{HsmConfig, TokenSelector};
use crate::paths::SOCKET_FILE;

/// Label of the dev token.
pub const DEV_TOKEN_LABEL: &str = "keyorch-dev";
/// Where Debian's softhsm2 package puts the module.
pub const DEFAULT_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const TEMPLATE: &str = include_str!("../../softhsm-config/softhsm2.conf.template");

/// The files of a dev state folder (documented in the README).
pub struct DevLayout {
    pub dir: PathBuf,
    pub softhsm2_conf: PathBuf,
    pub tokens: PathBuf,
    pub user_pin: PathBuf,
    pub so_pin: PathBuf,
    pub db: PathBuf,
    pub socket: PathBuf,
    pub module: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the PKCS#11 module {0} is missing: install SoftHSM2 (apt-get install softhsm2) or pass --module")]
    NoModule(PathBuf),
    #[error("provisioning the dev token failed: {0}")]
    Provision(String),
    #[error(transparent)]
    Config(#[from] super::config::ConfigError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DevError + '_ {
    move |source| DevError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl DevLayout {
    pub fn new(dir: &Path, module: &Path) -> DevLayout {
        DevLayout {
            dir: dir.to_path_buf(),
            softhsm2_conf: dir.join("softhsm2.conf"),
            tokens: dir.join("tokens"),
            user_pin: dir.join("user-pin"),
            so_pin: dir.join("so-pin"),
            db: dir.join("db"),
            socket: dir.join(SOCKET_FILE),
            module: module.to_path_buf(),
        }
    }

    /// Creates whatever is missing: folder (0700), SoftHSM2 config, PIN files (0600) and
    /// the token. Call before anything in this process initialises PKCS#11.
    pub fn prepare(&self) -> Result<(), DevError> {
        if !self.module.is_file() {
            return Err(DevError::NoModule(self.module.clone()));
        }
        for d in [&self.dir, &self.tokens] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(d)
                .map_err(io(d))?;
            fs::set_permissions(d, fs::Permissions::from_mode(0o700)).map_err(io(d))?;
        }
        if !self.softhsm2_conf.exists() {
            let text = TEMPLATE.replace("@TOKENDIR@", &self.tokens.display().to_string());
            fs::write(&self.softhsm2_conf, text).map_err(io(&self.softhsm2_conf))?;
        }
        for pin in [&self.user_pin, &self.so_pin] {
            if !pin.exists() {
                write_new_pin(pin)?;
            }
        }
        let has_token = fs::read_dir(&self.tokens)
            .map_err(io(&self.tokens))?
            .next()
            .is_some();
        if !has_token {
            self.provision_in_child()?;
        }
        Ok(())
    }

    /// Token initialisation runs in a child process (`keyorchd --provision-dev-token`):
    /// PKCS#11 is initialised once per process, and the daemon's own initialisation
    /// must see the finished token. PINs travel in their 0600 files, never in argv.
    fn provision_in_child(&self) -> Result<(), DevError> {
        let exe = std::env::current_exe()
            .map_err(|e| DevError::Provision(format!("cannot find keyorchd: {e}")))?;
        let out = Command::new(exe)
            .arg("--provision-dev-token")
            .arg("--state-dir")
            .arg(&self.dir)
            .arg("--module")
            .arg(&self.module)
            .env("SOFTHSM2_CONF", &self.softhsm2_conf)
            .output()
            .map_err(|e| DevError::Provision(e.to_string()))?;
        if !out.status.success() {
            return Err(DevError::Provision(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        tracing::info!(label = DEV_TOKEN_LABEL, dir = %self.tokens.display(), "dev token created");
        Ok(())
    }

    /// Runs in the child: initialises a free slot's token and its user PIN.
    pub fn provision(&self) -> Result<(), DevError> {
        let so_pin: AuthPin = read_pin_file("so-pin", &self.so_pin)?;
        let user_pin: AuthPin = read_pin_file("user-pin", &self.user_pin)?;
        let fail =
            |what: &str, e: cryptoki::error::Error| DevError::Provision(format!("{what}: {e}"));
        let p11 = Pkcs11::new(&self.module).map_err(|e| fail("loading the module", e))?;
        p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .map_err(|e| fail("C_Initialize", e))?;
        let mut free = None;
        for slot in p11
            .get_slots_with_token()
            .map_err(|e| fail("C_GetSlotList", e))?
        {
            let info = p11
                .get_token_info(slot)
                .map_err(|e| fail("C_GetTokenInfo", e))?;
            if info.label() == DEV_TOKEN_LABEL && info.token_initialized() {
                return Ok(());
            }
            if !info.token_initialized() && free.is_none() {
                free = Some(slot);
            }
        }
        let slot = free.ok_or_else(|| DevError::Provision("no free SoftHSM2 slot".into()))?;
        p11.init_token(slot, &so_pin, DEV_TOKEN_LABEL)
            .map_err(|e| fail("C_InitToken", e))?;
        let session = p11
            .open_rw_session(slot)
            .map_err(|e| fail("C_OpenSession", e))?;
        session
            .login(UserType::So, Some(&so_pin))
            .map_err(|e| fail("C_Login (SO)", e))?;
        session
            .init_pin(&user_pin)
            .map_err(|e| fail("C_InitPIN", e))?;
        session.logout().map_err(|e| fail("C_Logout", e))?;
        drop(session);
        p11.finalize().map_err(|e| fail("C_Finalize", e))?;
        Ok(())
    }

    pub fn hsm_config(&self) -> Result<HsmConfig, DevError> {
        Ok(HsmConfig {
            module: self.module.clone(),
            token: TokenSelector::Label(DEV_TOKEN_LABEL.to_string()),
            pin: read_pin_file("user-pin", &self.user_pin)?,
            sessions: 4,
            key_cache: 1024,
        })
    }
}

/// A random 32-hex-digit PIN in a new 0600 file.
fn write_new_pin(path: &Path) -> Result<(), DevError> {
    let mut raw = zeroize::Zeroizing::new([0u8; 16]);
    getrandom::fill(raw.as_mut())
        .map_err(|e| DevError::Provision(format!("no randomness: {e}")))?;
    let pin = zeroize::Zeroizing::new(hex::encode(raw.as_ref()));
    write_private_file(path, pin.as_bytes())
}

/// Writes `bytes` to a new file of mode 0600 (never over an existing one) and syncs it:
/// the dev PINs and the dev endpoints' credential files.
pub(crate) fn write_private_file(path: &Path, bytes: &[u8]) -> Result<(), DevError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_all().map_err(io(path))?;
    Ok(())
}
