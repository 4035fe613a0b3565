//! keyorchd's TOML configuration (production mode). Every key is documented in
//! docs/configuration.md; unknown keys and wrong types stop start-up, naming the field.

use std::path::{Path, PathBuf};

use secrecy::SecretString;
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::hsm::{HsmConfig, TokenSelector};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub hsm: HsmSection,
    pub store: StoreSection,
    pub listen: ListenSection,
    #[serde(default)]
    pub log: LogSection,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HsmSection {
    /// Path of the PKCS#11 module.
    pub module: PathBuf,
    /// Token label (exactly one of token_label / token_serial).
    pub token_label: Option<String>,
    pub token_serial: Option<String>,
    /// User PIN source: exactly one of pin_file, pin_env, pin_credential.
    pub pin_file: Option<PathBuf>,
    pub pin_env: Option<String>,
    /// Name of a systemd credential (read from $CREDENTIALS_DIRECTORY/NAME).
    pub pin_credential: Option<String>,
    /// For SoftHSM2: its configuration file (exported as SOFTHSM2_CONF before the module loads).
    pub softhsm2_conf: Option<PathBuf>,
    #[serde(default = "default_sessions")]
    pub sessions: usize,
    #[serde(default = "default_key_cache")]
    pub key_cache: usize,
}

fn default_sessions() -> usize {
    4
}
fn default_key_cache() -> usize {
    1024
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// Folder of the sled database.
    pub path: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenSection {
    /// Unix domain socket path (created with mode 0660).
    pub socket: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// trace, debug, info, warn or error.
    #[serde(default = "default_level")]
    pub level: String,
    /// text or json.
    #[serde(default = "default_format")]
    pub format: String,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            level: default_level(),
            format: default_format(),
        }
    }
}

fn default_level() -> String {
    "info".into()
}
fn default_format() -> String {
    "text".into()
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}: {detail}")]
    Parse { path: PathBuf, detail: String },
    #[error("config field {field}: {rule}")]
    Field { field: &'static str, rule: String },
}

fn field(field: &'static str, rule: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        field,
        rule: rule.into(),
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let h = &self.hsm;
        if !h.module.is_file() {
            return Err(field(
                "hsm.module",
                format!("{} is not a readable file", h.module.display()),
            ));
        }
        match (&h.token_label, &h.token_serial) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(field(
                    "hsm.token_label",
                    "set exactly one of token_label and token_serial",
                ))
            }
            _ => {}
        }
        let sources = [
            h.pin_file.is_some(),
            h.pin_env.is_some(),
            h.pin_credential.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() != 1 {
            return Err(field(
                "hsm.pin_file",
                "set exactly one of pin_file, pin_env and pin_credential",
            ));
        }
        if h.sessions == 0 || h.sessions > 64 {
            return Err(field("hsm.sessions", "must be 1 to 64"));
        }
        if h.key_cache == 0 {
            return Err(field("hsm.key_cache", "must be at least 1"));
        }
        if !["trace", "debug", "info", "warn", "error"].contains(&self.log.level.as_str()) {
            return Err(field(
                "log.level",
                "must be trace, debug, info, warn or error",
            ));
        }
        if !["text", "json"].contains(&self.log.format.as_str()) {
            return Err(field("log.format", "must be text or json"));
        }
        Ok(())
    }

    /// Reads the PIN from its source. The PIN is never logged.
    pub fn hsm_config(&self) -> Result<HsmConfig, ConfigError> {
        let h = &self.hsm;
        let pin = if let Some(p) = &h.pin_file {
            read_pin_file("hsm.pin_file", p)?
        } else if let Some(var) = &h.pin_env {
            let v = Zeroizing::new(std::env::var(var).map_err(|_| {
                field(
                    "hsm.pin_env",
                    format!("environment variable {var} is not set"),
                )
            })?);
            SecretString::from(v.trim_end_matches(['\r', '\n']).to_string())
        } else if let Some(name) = &h.pin_credential {
            let dir = std::env::var_os("CREDENTIALS_DIRECTORY")
                .ok_or_else(|| field("hsm.pin_credential", "$CREDENTIALS_DIRECTORY is not set (not started by systemd with LoadCredential?)"))?;
            read_pin_file("hsm.pin_credential", &PathBuf::from(dir).join(name))?
        } else {
            return Err(field("hsm.pin_file", "no PIN source"));
        };
        Ok(HsmConfig {
            module: h.module.clone(),
            token: match (&h.token_label, &h.token_serial) {
                (Some(l), _) => TokenSelector::Label(l.clone()),
                (None, Some(s)) => TokenSelector::Serial(s.clone()),
                (None, None) => return Err(field("hsm.token_label", "no token selector")),
            },
            pin,
            sessions: h.sessions,
            key_cache: h.key_cache,
        })
    }
}

/// Reads a PIN file: its content less a trailing newline, held only in zeroizing memory.
pub fn read_pin_file(name: &'static str, path: &Path) -> Result<SecretString, ConfigError> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| field(name, format!("cannot read {}: {e}", path.display())))?,
    );
    let pin = text.trim_end_matches(['\r', '\n']);
    if pin.is_empty() {
        return Err(field(name, format!("{} is empty", path.display())));
    }
    Ok(SecretString::from(pin.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[hsm]\nmodule='/bin/sh'\ntoken_label='x'\npin_env='P'\nbogus=1\n[store]\npath='/tmp'\n[listen]\nsocket='/tmp/s'\n").unwrap();
        let e = Config::load(&p).unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
        std::fs::write(&p, "[hsm]\nmodule='/nonexistent.so'\ntoken_label='x'\npin_env='P'\n[store]\npath='/tmp'\n[listen]\nsocket='/tmp/s'\n").unwrap();
        let e = Config::load(&p).unwrap_err().to_string();
        assert!(e.contains("hsm.module"), "{e}");
        std::fs::write(&p, "[hsm]\nmodule='/bin/sh'\ntoken_label='x'\n[store]\npath='/tmp'\n[listen]\nsocket='/tmp/s'\n").unwrap();
        let e = Config::load(&p).unwrap_err().to_string();
        assert!(e.contains("pin"), "{e}");
        std::fs::write(&p, "[hsm]\nmodule='/bin/sh'\ntoken_label='x'\npin_env='P'\nsessions='four'\n[store]\npath='/tmp'\n[listen]\nsocket='/tmp/s'\n").unwrap();
        let e = Config::load(&p).unwrap_err().to_string();
        assert!(e.contains("sessions"), "{e}");
    }
}
