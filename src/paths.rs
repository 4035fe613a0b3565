//! Default locations shared by the daemon and the CLI.

use std::path::PathBuf;

/// Environment variable naming the daemon's socket for the CLI.
pub const SOCKET_ENV: &str = "KEYORCH_SOCKET";
/// Environment variable overriding the dev-mode state folder.
pub const STATE_DIR_ENV: &str = "KEYORCH_STATE_DIR";
/// Socket file name inside a state folder.
pub const SOCKET_FILE: &str = "keyorch.sock";

/// The dev-mode state folder: `$KEYORCH_STATE_DIR`, else `$XDG_STATE_HOME/keyorch`,
/// else `$HOME/.local/state/keyorch`, else `./.keyorch`.
pub fn default_state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(STATE_DIR_ENV).filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir).join("keyorch");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(home).join(".local/state/keyorch");
    }
    PathBuf::from(".keyorch")
}

/// The socket the CLI talks to when neither `--socket` nor `$KEYORCH_SOCKET` is given.
pub fn default_socket() -> PathBuf {
    default_state_dir().join(SOCKET_FILE)
}
