//! keyorchd's TOML configuration (production mode). Every key is documented in
//! docs/configuration.md; unknown keys and wrong types stop start-up, naming the field.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;
use tokio_rustls::rustls::ServerConfig;
use zeroize::Zeroizing;

use crate::api::tls::{TlsError, TlsMaterial};
use crate::api::{Limits, MAX_MESSAGE_BYTES};
use crate::hsm::{HsmConfig, TokenSelector};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub hsm: HsmSection,
    pub store: StoreSection,
    pub listen: ListenSection,
    #[serde(default)]
    pub log: LogSection,
    #[serde(default)]
    pub limits: LimitsSection,
    #[serde(default)]
    pub security: SecuritySection,
    #[serde(default)]
    pub health: HealthSection,
    #[serde(default)]
    pub access: AccessSection,
    /// The AWS KMS-compatible endpoint (off when absent; see `super::aws`).
    pub aws: Option<AwsSection>,
    /// The XKS proxy (off when absent; see `super::xks`).
    pub xks: Option<super::xks::XksSection>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
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
    /// Threads of the crypto lane, which runs Encrypt, Decrypt, GenerateDataKey and the MAC
    /// calls (see docs/configuration.md).
    #[serde(default = "default_crypto_threads")]
    pub crypto_threads: usize,
}

fn default_sessions() -> usize {
    4
}
/// One thread: SoftHSM2 does not go faster with more, and on two cores a second lane
/// thread cost ≈ 8 µs of CPU per Encrypt in wake-ups (docs/benchmarks.md). An HSM that
/// works in parallel, or one across a network, wants more.
pub const DEFAULT_CRYPTO_THREADS: usize = 1;
fn default_crypto_threads() -> usize {
    DEFAULT_CRYPTO_THREADS
}
fn default_key_cache() -> usize {
    1024
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// Folder of the sled database.
    pub path: PathBuf,
    /// sled's page cache, in MiB.
    #[serde(default = "default_store_cache_mib")]
    pub cache_mib: u64,
}

/// sled's page cache unless `store.cache_mib` or `--store-cache-mib` says otherwise.
pub const DEFAULT_STORE_CACHE_MIB: u64 = crate::store::DEFAULT_CACHE_CAPACITY >> 20;

fn default_store_cache_mib() -> u64 {
    DEFAULT_STORE_CACHE_MIB
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenSection {
    /// Unix domain socket path (created with mode 0660).
    pub socket: PathBuf,
    /// Group of the socket (name or number); unset: keyorchd's own group.
    pub socket_group: Option<String>,
    /// TCP address of the mutual-TLS listener ("127.0.0.1:7443"); unset: no TCP.
    pub tcp: Option<String>,
    /// PEM server certificate (and intermediates) for `tcp`.
    pub tls_cert: Option<PathBuf>,
    /// PEM server private key: a file, or a systemd credential (exactly one with `tcp`).
    pub tls_key: Option<PathBuf>,
    pub tls_key_credential: Option<String>,
    /// PEM CA certificate(s) that client certificates must chain to.
    pub client_ca: Option<PathBuf>,
    /// Optional PEM CRL(s) of that CA.
    pub client_crl: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
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

/// The log levels keyorchd accepts.
pub const LOG_LEVELS: [&str; 5] = ["trace", "debug", "info", "warn", "error"];

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    #[serde(default = "default_per_connection_concurrency")]
    pub per_connection_concurrency: usize,
    #[serde(default = "default_request_timeout_secs")]
    pub request_timeout_secs: u64,
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

fn default_max_message_bytes() -> usize {
    MAX_MESSAGE_BYTES
}
fn default_per_connection_concurrency() -> usize {
    crate::api::PER_CONNECTION_CONCURRENCY
}
fn default_request_timeout_secs() -> u64 {
    crate::api::REQUEST_TIMEOUT.as_secs()
}
fn default_max_connections() -> usize {
    crate::api::MAX_CONNECTIONS
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            max_message_bytes: default_max_message_bytes(),
            per_connection_concurrency: default_per_connection_concurrency(),
            request_timeout_secs: default_request_timeout_secs(),
            max_connections: default_max_connections(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecuritySection {
    /// mlockall(MCL_CURRENT|MCL_FUTURE|MCL_ONFAULT) at start, where the OS allows.
    #[serde(default = "default_true")]
    pub lock_memory: bool,
}

fn default_true() -> bool {
    true
}

impl Default for SecuritySection {
    fn default() -> Self {
        SecuritySection { lock_memory: true }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSection {
    /// Seconds between two health checks of every CONNECTED keystore.
    #[serde(default = "default_health_interval_secs")]
    pub interval_secs: u64,
    /// Failed checks in a row after which a CONNECTED keystore goes FAILED (0: never).
    #[serde(default = "default_health_failed_after")]
    pub failed_after: u32,
}

/// `health.failed_after` unless set (and always in `--dev` mode).
pub const DEFAULT_HEALTH_FAILED_AFTER: u32 = 3;

fn default_health_failed_after() -> u32 {
    DEFAULT_HEALTH_FAILED_AFTER
}

/// How often keyorchd checks its CONNECTED keystores unless `health.interval_secs` says
/// otherwise (and always in `--dev` mode).
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(30);

fn default_health_interval_secs() -> u64 {
    DEFAULT_HEALTH_INTERVAL.as_secs()
}

impl Default for HealthSection {
    fn default() -> Self {
        HealthSection {
            interval_secs: default_health_interval_secs(),
            failed_after: default_health_failed_after(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessSection {
    /// `[[access.grant]]` entries (see `super::access`).
    #[serde(default)]
    pub grant: Vec<GrantEntry>,
}

/// One `[[access.grant]]`: exactly one subject, a vault scope and roles.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantEntry {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub certificate: Option<String>,
    /// An access key id of `[[aws.access_key]]` (a caller of the AWS endpoint).
    pub aws_access_key_id: Option<String>,
    /// A vault id, or "*" for every vault.
    pub vault: String,
    pub roles: Vec<String>,
}

/// `[aws]`: the AWS KMS-compatible endpoint (docs/configuration.md, docs/aws-compatibility.md).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsSection {
    /// `"IP:port"` of the HTTP listener; `--aws-listen` overrides it.
    pub listen: Option<String>,
    /// PEM server certificate (and intermediates): with it the listener speaks HTTPS only.
    pub tls_cert: Option<PathBuf>,
    /// PEM server private key, a file or a systemd credential (exactly one with tls_cert).
    pub tls_key: Option<PathBuf>,
    pub tls_key_credential: Option<String>,
    /// Regions a request's SigV4 credential scope may name; `"*"` admits any region name.
    #[serde(default = "default_aws_regions")]
    pub regions: Vec<String>,
    /// PKCS#11 module of the tokens AWS_CLOUDHSM custom key stores name.
    pub pkcs11_module: PathBuf,
    /// `[[aws.access_key]]`: the SigV4 credentials the endpoint accepts.
    #[serde(default)]
    pub access_key: Vec<AwsAccessKeyEntry>,
}

fn default_aws_regions() -> Vec<String> {
    vec!["us-east-1".to_string()]
}

/// One `[[aws.access_key]]`: an access key id, where its secret is, and the vault its
/// custom key stores and keys live in. Its roles come from `[[access.grant]]` entries with
/// `aws_access_key_id`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsAccessKeyEntry {
    pub access_key_id: String,
    /// The secret access key: a file, or a systemd credential (exactly one).
    pub secret_file: Option<PathBuf>,
    pub secret_credential: Option<String>,
    /// The vault (id or name) of this key's custom key stores and keys.
    pub vault: String,
    /// Create `vault` (by name) on the first call that needs it when it does not exist.
    #[serde(default)]
    pub create_vault: bool,
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
    Field { field: String, rule: String },
}

pub(crate) fn field(field: impl Into<String>, rule: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        field: field.into(),
        rule: rule.into(),
    }
}

impl Config {
    /// Reads, parses and checks the file. Names (users, groups) and TLS files are checked
    /// by [`Config::policy`], [`Config::socket_gid`] and [`Config::tls`].
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let parse_error = |detail| ConfigError::Parse {
            path: path.to_path_buf(),
            detail,
        };
        let de = toml::Deserializer::parse(&text)
            .map_err(|e| parse_error(parse_detail(&text, None, &e)))?;
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let at = e.path().to_string();
            parse_error(parse_detail(&text, Some(at), e.inner()))
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
        if h.crypto_threads == 0 || h.crypto_threads > 64 {
            return Err(field("hsm.crypto_threads", "must be 1 to 64"));
        }
        if h.crypto_threads > h.sessions {
            return Err(field(
                "hsm.crypto_threads",
                format!(
                    "must be at most hsm.sessions ({}): each lane thread holds a session",
                    h.sessions
                ),
            ));
        }
        if let Some(conf) = &h.softhsm2_conf {
            if !conf.is_file() {
                return Err(field(
                    "hsm.softhsm2_conf",
                    format!("{} is not a readable file", conf.display()),
                ));
            }
        }
        if !LOG_LEVELS.contains(&self.log.level.as_str()) {
            return Err(field(
                "log.level",
                "must be trace, debug, info, warn or error",
            ));
        }
        if !["text", "json"].contains(&self.log.format.as_str()) {
            return Err(field("log.format", "must be text or json"));
        }
        self.validate_listen()?;
        self.validate_limits()?;
        if !(1..=4096).contains(&self.store.cache_mib) {
            return Err(field("store.cache_mib", "must be 1 to 4096"));
        }
        if !(1..=3600).contains(&self.health.interval_secs) {
            return Err(field("health.interval_secs", "must be 1 to 3600"));
        }
        if self.health.failed_after > 100 {
            return Err(field("health.failed_after", "must be 0 (never) to 100"));
        }
        super::access::check_entries(&self.access.grant)?;
        if let Some(xks) = &self.xks {
            super::xks::check_section(xks)?;
        }
        if let Some(aws) = &self.aws {
            super::aws::check_section(aws)?;
        }
        Ok(())
    }

    fn validate_listen(&self) -> Result<(), ConfigError> {
        let l = &self.listen;
        if l.socket.as_os_str().is_empty() {
            return Err(field("listen.socket", "must not be empty"));
        }
        if let Some(g) = &l.socket_group {
            if g.trim().is_empty() {
                return Err(field("listen.socket_group", "must not be empty"));
            }
        }
        let Some(tcp) = &l.tcp else {
            for (name, set) in [
                ("listen.tls_cert", l.tls_cert.is_some()),
                ("listen.tls_key", l.tls_key.is_some()),
                ("listen.tls_key_credential", l.tls_key_credential.is_some()),
                ("listen.client_ca", l.client_ca.is_some()),
                ("listen.client_crl", l.client_crl.is_some()),
            ] {
                if set {
                    return Err(field(name, "only meaningful with listen.tcp"));
                }
            }
            return Ok(());
        };
        tcp.parse::<SocketAddr>().map_err(|_| {
            field(
                "listen.tcp",
                format!("{tcp:?} is not an IP address and port such as \"127.0.0.1:7443\""),
            )
        })?;
        if l.tls_cert.is_none() {
            return Err(field(
                "listen.tls_cert",
                "required with listen.tcp (there is no plaintext TCP)",
            ));
        }
        if l.tls_key.is_some() == l.tls_key_credential.is_some() {
            return Err(field(
                "listen.tls_key",
                "with listen.tcp, set exactly one of tls_key and tls_key_credential",
            ));
        }
        if l.client_ca.is_none() {
            return Err(field(
                "listen.client_ca",
                "required with listen.tcp (client certificates are mandatory)",
            ));
        }
        Ok(())
    }

    fn validate_limits(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        if !(4096..=MAX_MESSAGE_BYTES).contains(&l.max_message_bytes) {
            return Err(field(
                "limits.max_message_bytes",
                format!("must be 4096 to {MAX_MESSAGE_BYTES}"),
            ));
        }
        if !(1..=1024).contains(&l.per_connection_concurrency) {
            return Err(field(
                "limits.per_connection_concurrency",
                "must be 1 to 1024",
            ));
        }
        if !(1..=3600).contains(&l.request_timeout_secs) {
            return Err(field("limits.request_timeout_secs", "must be 1 to 3600"));
        }
        if !(1..=65536).contains(&l.max_connections) {
            return Err(field("limits.max_connections", "must be 1 to 65536"));
        }
        Ok(())
    }

    /// The `[limits]` section as the listeners take it.
    pub fn limits(&self) -> Limits {
        Limits {
            max_message_bytes: self.limits.max_message_bytes,
            per_connection_concurrency: self.limits.per_connection_concurrency,
            request_timeout: Duration::from_secs(self.limits.request_timeout_secs),
            max_connections: self.limits.max_connections,
        }
    }

    /// Time between two health checks of the CONNECTED keystores (`health.interval_secs`).
    pub fn health_interval(&self) -> Duration {
        Duration::from_secs(self.health.interval_secs)
    }

    /// The gid of `listen.socket_group` (a group name or number), if set.
    pub fn socket_gid(&self) -> Result<Option<u32>, ConfigError> {
        let Some(g) = &self.listen.socket_group else {
            return Ok(None);
        };
        super::access::resolve_group("listen.socket_group", g).map(|(gid, _)| Some(gid))
    }

    /// The TCP address and its TLS configuration, if `listen.tcp` is set. Reads the
    /// certificate, key and CA files (the key only into zeroizing memory).
    pub fn tls(&self) -> Result<Option<(SocketAddr, Arc<ServerConfig>)>, ConfigError> {
        let l = &self.listen;
        let Some(tcp) = &l.tcp else {
            return Ok(None);
        };
        let addr: SocketAddr = tcp
            .parse()
            .map_err(|_| field("listen.tcp", "not an IP address and port"))?;
        let (Some(cert), Some(ca)) = (&l.tls_cert, &l.client_ca) else {
            return Err(field("listen.tls_cert", "required with listen.tcp"));
        };
        let (key_field, key_path) = match (&l.tls_key, &l.tls_key_credential) {
            (Some(p), None) => ("listen.tls_key", p.clone()),
            (None, Some(name)) => (
                "listen.tls_key_credential",
                credential_path("listen.tls_key_credential", name)?,
            ),
            _ => {
                return Err(field(
                    "listen.tls_key",
                    "set exactly one of tls_key and tls_key_credential",
                ))
            }
        };
        let read = |name: &'static str, path: &Path| {
            std::fs::read(path)
                .map_err(|e| field(name, format!("cannot read {}: {e}", path.display())))
        };
        let material = TlsMaterial {
            cert_chain: read("listen.tls_cert", cert)?,
            key: Zeroizing::new(read(key_field, &key_path)?),
            client_ca: read("listen.client_ca", ca)?,
            client_crl: match &l.client_crl {
                Some(p) => Some(read("listen.client_crl", p)?),
                None => None,
            },
        };
        warn_if_readable_by_others(key_field, &key_path);
        let config = crate::api::tls::server_config(&material).map_err(|e| match e {
            TlsError::Cert(r) => field("listen.tls_cert", r),
            TlsError::Key(r) => field(key_field, r),
            TlsError::ClientCa(r) => field("listen.client_ca", r),
            TlsError::ClientCrl(r) => field("listen.client_crl", r),
        })?;
        Ok(Some((addr, config)))
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
            let pin = v.trim_end_matches(['\r', '\n']);
            if pin.is_empty() {
                return Err(field(
                    "hsm.pin_env",
                    format!("environment variable {var} is empty"),
                ));
            }
            SecretString::from(pin.to_string())
        } else if let Some(name) = &h.pin_credential {
            read_pin_file(
                "hsm.pin_credential",
                &credential_path("hsm.pin_credential", name)?,
            )?
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

/// `$CREDENTIALS_DIRECTORY/NAME`: a credential systemd passed with `LoadCredential=`.
pub(super) fn credential_path(name_field: &str, name: &str) -> Result<PathBuf, ConfigError> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(field(name_field, "must be a credential name (no '/')"));
    }
    let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
        field(
            name_field,
            "$CREDENTIALS_DIRECTORY is not set (not started by systemd with LoadCredential?)",
        )
    })?;
    Ok(PathBuf::from(dir).join(name))
}

/// A secret file anyone but its owner may read is worth a warning (not an error: a
/// systemd credential is readable by the service's group on some versions).
pub(super) fn warn_if_readable_by_others(name: &str, path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o004 != 0 {
            tracing::warn!(field = name, path = %path.display(), "secret file is world-readable; make it 0600 or 0400");
        }
    }
}

/// toml's message on one line: the field it is about (`hsm.sessions`; `.` for the top
/// level), the message, and the line of the file.
fn parse_detail(text: &str, at: Option<String>, e: &toml::de::Error) -> String {
    let message = e.message().trim();
    let line = e
        .span()
        .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
    let mut out = String::new();
    if let Some(at) = at.filter(|a| a != ".") {
        out.push_str(&format!("field {at}: "));
    }
    out.push_str(message);
    if let Some(line) = line {
        out.push_str(&format!(" (line {line})"));
    }
    out
}

/// Reads a PIN file: its content less a trailing newline, held only in zeroizing memory.
pub fn read_pin_file(name: &str, path: &Path) -> Result<SecretString, ConfigError> {
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

    fn load(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, text).unwrap();
        Config::load(&p)
    }

    const BASE: &str = "[hsm]\nmodule='/bin/sh'\ntoken_label='x'\npin_env='P'\n[store]\npath='/tmp'\n[listen]\nsocket='/tmp/s'\n";

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let e = load("[hsm]\nmodule='/bin/sh'\ntoken_label='x'\npin_env='P'\nbogus=1\n[store]\npath='/tmp'\n[listen]\nsocket='/tmp/s'\n").unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
        let e = load("[hsm]\nmodule='/nonexistent.so'\ntoken_label='x'\npin_env='P'\n[store]\npath='/tmp'\n[listen]\nsocket='/tmp/s'\n").unwrap_err().to_string();
        assert!(e.contains("hsm.module"), "{e}");
        let e = load("[hsm]\nmodule='/bin/sh'\ntoken_label='x'\n[store]\npath='/tmp'\n[listen]\nsocket='/tmp/s'\n").unwrap_err().to_string();
        assert!(e.contains("pin"), "{e}");
        let e = load("[hsm]\nmodule='/bin/sh'\ntoken_label='x'\npin_env='P'\nsessions='four'\n[store]\npath='/tmp'\n[listen]\nsocket='/tmp/s'\n").unwrap_err().to_string();
        assert!(e.contains("sessions"), "{e}");
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = load(BASE).unwrap();
        assert_eq!(c.limits(), Limits::default());
        assert!(c.security.lock_memory);
        assert_eq!(c.health_interval(), Duration::from_secs(30));
        assert!(c.access.grant.is_empty());
        assert_eq!(c.socket_gid().unwrap(), None);
        assert!(c.tls().unwrap().is_none());
    }

    #[test]
    fn tcp_requires_every_tls_file_and_tls_requires_tcp() {
        let e = load(&format!("{BASE}tcp='127.0.0.1:7443'\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen.tls_cert"), "{e}");
        let e = load(&format!(
            "{BASE}tcp='127.0.0.1:7443'\ntls_cert='/c'\nclient_ca='/ca'\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("listen.tls_key"), "{e}");
        let e = load(&format!(
            "{BASE}tcp='127.0.0.1:7443'\ntls_cert='/c'\ntls_key='/k'\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("listen.client_ca"), "{e}");
        let e = load(&format!("{BASE}tls_cert='/c'\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen.tls_cert"), "{e}");
        let e = load(&format!("{BASE}tcp='localhost'\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen.tcp"), "{e}");
        let c = load(&format!(
            "{BASE}tcp='127.0.0.1:0'\ntls_cert='/nonexistent/c'\ntls_key='/k'\nclient_ca='/ca'\n"
        ))
        .unwrap();
        let e = c.tls().unwrap_err().to_string();
        assert!(e.contains("listen.tls_cert"), "{e}");
    }

    #[test]
    fn limits_are_checked() {
        for (key, bad) in [
            ("max_message_bytes", "10"),
            ("max_message_bytes", "2000000"),
            ("per_connection_concurrency", "0"),
            ("request_timeout_secs", "0"),
            ("max_connections", "0"),
        ] {
            let e = load(&format!("{BASE}[limits]\n{key}={bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("limits.{key}")), "{e}");
        }
        let e = load(&format!("{BASE}[limits]\nrequest_timeout_secs='soon'\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("request_timeout_secs"), "{e}");
        let c = load(&format!(
            "{BASE}[limits]\nmax_message_bytes=65536\nrequest_timeout_secs=5\n[security]\nlock_memory=false\n"
        ))
        .unwrap();
        assert_eq!(c.limits().max_message_bytes, 65536);
        assert_eq!(c.limits().request_timeout, Duration::from_secs(5));
        assert!(!c.security.lock_memory);
    }

    #[test]
    fn store_cache_is_checked() {
        assert_eq!(load(BASE).unwrap().store.cache_mib, DEFAULT_STORE_CACHE_MIB);
        let with =
            |v: &str| BASE.replace("path='/tmp'\n", &format!("path='/tmp'\ncache_mib={v}\n"));
        for bad in ["0", "4097", "-1", "'big'"] {
            let e = load(&with(bad)).unwrap_err().to_string();
            assert!(e.contains("cache_mib"), "{bad}: {e}");
        }
        assert_eq!(load(&with("16")).unwrap().store.cache_mib, 16);
    }

    #[test]
    fn health_failed_after_is_checked() {
        assert_eq!(
            load(BASE).unwrap().health.failed_after,
            DEFAULT_HEALTH_FAILED_AFTER
        );
        for bad in ["101", "-1", "'often'"] {
            let e = load(&format!("{BASE}[health]\nfailed_after={bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("failed_after"), "{bad}: {e}");
        }
        for good in [0, 1, 100] {
            let c = load(&format!("{BASE}[health]\nfailed_after={good}\n")).unwrap();
            assert_eq!(c.health.failed_after, good);
        }
    }

    #[test]
    fn health_interval_is_checked() {
        for bad in ["0", "3601", "-1"] {
            let e = load(&format!("{BASE}[health]\ninterval_secs={bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("health.interval_secs"), "{bad}: {e}");
        }
        let e = load(&format!("{BASE}[health]\ninterval_secs='often'\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("health.interval_secs"), "{e}");
        let e = load(&format!("{BASE}[health]\nintervall_secs=5\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("intervall_secs"), "{e}");
        for (good, secs) in [("1", 1), ("3600", 3600), ("45", 45)] {
            let c = load(&format!("{BASE}[health]\ninterval_secs={good}\n")).unwrap();
            assert_eq!(c.health_interval(), Duration::from_secs(secs));
        }
        let c = load(&format!("{BASE}[health]\n")).unwrap();
        assert_eq!(c.health_interval(), DEFAULT_HEALTH_INTERVAL);
    }

    #[test]
    fn crypto_threads_default_to_one_and_stay_within_1_to_64_and_the_sessions() {
        assert_eq!(load(BASE).unwrap().hsm.crypto_threads, 1);
        let with = |n: &str| BASE.replace("[store]", &format!("crypto_threads={n}\n[store]"));
        assert_eq!(load(&with("4")).unwrap().hsm.crypto_threads, 4);
        for bad in ["0", "65"] {
            let e = load(&with(bad)).unwrap_err().to_string();
            assert!(
                e.contains("hsm.crypto_threads") && e.contains("1 to 64"),
                "{e}"
            );
        }
        // No more lane threads than sessions (4 by default).
        let e = load(&with("5")).unwrap_err().to_string();
        assert!(
            e.contains("hsm.crypto_threads") && e.contains("hsm.sessions (4)"),
            "{e}"
        );
        let more = BASE.replace("[store]", "sessions=64\ncrypto_threads=64\n[store]");
        assert_eq!(load(&more).unwrap().hsm.crypto_threads, 64);
    }

    #[test]
    fn the_shipped_example_parses_and_its_grants_are_valid() {
        let text = include_str!("../../systemd/keyorchd.toml");
        let c: Config = toml::from_str(text).unwrap();
        assert_eq!(c.hsm.crypto_threads, DEFAULT_CRYPTO_THREADS);
        c.validate_listen().unwrap();
        c.validate_limits().unwrap();
        assert_eq!(c.limits(), Limits::default());
        assert_eq!(c.listen.socket_group.as_deref(), Some("keyorch-clients"));
        // Its commented grants, uncommented, are valid entries too.
        let uncommented: String = text
            .lines()
            .skip_while(|l| !l.starts_with("#[[access.grant]]"))
            .map(|l| l.strip_prefix('#').unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n");
        let grants: Config = toml::from_str(&format!(
            "{}\n{uncommented}",
            text.split("# Who may do what").next().unwrap()
        ))
        .unwrap();
        assert_eq!(grants.access.grant.len(), 3);
        super::super::access::check_entries(&grants.access.grant).unwrap();
    }

    #[test]
    fn aws_section_rules_name_their_field() {
        let aws = "[aws]\npkcs11_module='/bin/sh'\n";
        let c = load(&format!("{BASE}{aws}")).unwrap();
        let s = c.aws.as_ref().unwrap();
        assert_eq!(s.regions, vec!["us-east-1".to_string()]);
        assert!(s.listen.is_none() && s.access_key.is_empty());
        for (extra, named) in [
            ("listen='0.0.0.0:4599'\n", "aws.listen"),
            ("listen='localhost'\n", "aws.listen"),
            ("tls_key='/k'\n", "aws.tls_key"),
            ("tls_cert='/c'\n", "aws.tls_key"),
            ("regions=[]\n", "aws.regions"),
            ("regions=['EU']\n", "aws.regions"),
            ("bogus=1\n", "bogus"),
        ] {
            let e = load(&format!("{BASE}{aws}{extra}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(named), "{extra}: {e}");
        }
        let e = load(&format!("{BASE}[aws]\npkcs11_module='/nonexistent.so'\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("aws.pkcs11_module"), "{e}");
        let e = load(&format!("{BASE}[aws]\n")).unwrap_err().to_string();
        assert!(e.contains("pkcs11_module"), "{e}");
        let key = |body: &str| format!("{BASE}{aws}[[aws.access_key]]\n{body}");
        for (body, named) in [
            ("access_key_id='short'\nsecret_file='/s'\nvault='v'\n", "aws.access_key[0].access_key_id"),
            ("access_key_id='AKIAKEYORCHTEST00001'\nvault='v'\n", "aws.access_key[0].secret_file"),
            ("access_key_id='AKIAKEYORCHTEST00001'\nsecret_file='/s'\nsecret_credential='c'\nvault='v'\n", "aws.access_key[0].secret_file"),
            ("access_key_id='AKIAKEYORCHTEST00001'\nsecret_file='/s'\nvault='bad/name'\n", "aws.access_key[0].vault"),
            ("access_key_id='AKIAKEYORCHTEST00001'\nsecret_file='/s'\nvault='vault-0123'\ncreate_vault=true\n", "aws.access_key[0].create_vault"),
            ("access_key_id='AKIAKEYORCHTEST00001'\nsecret_file='/s'\n", "vault"),
        ] {
            let e = load(&key(body)).unwrap_err().to_string();
            assert!(e.contains(named), "{body}: {e}");
        }
        let twice = "access_key_id='AKIAKEYORCHTEST00001'\nsecret_file='/s'\nvault='v'\n";
        let e = load(&key(&format!("{twice}[[aws.access_key]]\n{twice}")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("aws.access_key[1].access_key_id"), "{e}");
        // The secret file is read (and checked) when the settings are built.
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("s");
        std::fs::write(&secret, "has white space\n").unwrap();
        let c = load(&key(&format!(
            "access_key_id='AKIAKEYORCHTEST00001'\nsecret_file={secret:?}\nvault='v'\n"
        )))
        .unwrap();
        let e = super::super::aws::settings(c.aws.as_ref().unwrap(), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("aws.access_key[0].secret_file"), "{e}");
        assert!(!e.contains("white space\n"), "{e}");
        std::fs::write(&secret, "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n").unwrap();
        let settings = super::super::aws::settings(c.aws.as_ref().unwrap(), None).unwrap();
        assert_eq!(
            settings.listen.to_string(),
            super::super::aws::DEFAULT_LISTEN
        );
        assert_eq!(settings.access_keys[0].id, "AKIAKEYORCHTEST00001");
        assert!(!format!("{settings:?}").contains("wJalrXUtnFEMI"));
        // A grant naming an access key.
        let g = load(&format!(
            "{BASE}[[access.grant]]\naws_access_key_id='AKIAKEYORCHTEST00001'\nvault='*'\nroles=['user']\n"
        ))
        .unwrap();
        let p = g.policy().unwrap();
        let who = crate::domain::Principal::AwsAccessKey {
            access_key_id: "AKIAKEYORCHTEST00001".into(),
        };
        assert!(p.allows(&who, Some("vault-x"), crate::domain::Role::User));
        let e = load(&format!(
            "{BASE}[[access.grant]]\naws_access_key_id='x'\nvault='*'\nroles=['user']\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("access.grant[0].aws_access_key_id"), "{e}");
    }

    #[test]
    fn socket_group_resolves_names_and_numbers() {
        let c = load(&format!("{BASE}socket_group='0'\n")).unwrap();
        assert_eq!(c.socket_gid().unwrap(), Some(0));
        let c = load(&format!("{BASE}socket_group='root'\n")).unwrap();
        assert_eq!(c.socket_gid().unwrap(), Some(0));
        let c = load(&format!("{BASE}socket_group='no-such-group-keyorch'\n")).unwrap();
        let e = c.socket_gid().unwrap_err().to_string();
        assert!(e.contains("listen.socket_group"), "{e}");
    }
}
