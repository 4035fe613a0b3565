//! The XKS proxy's settings: from `[xks]` (listen address, TLS and mutual TLS, endpoints
//! with their SigV4 credentials, whose secrets are read into zeroizing memory), or in
//! `--dev` from generated credentials kept in `STATE_DIR/xks-credentials`.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use zeroize::Zeroizing;

use super::config::{field, warn_if_readable_by_others, ConfigError};
use super::dev::DevError;
use crate::api::xks::{Credential, EndpointSettings, ServedKey, Settings, MAX_IN_FLIGHT};
use crate::domain::xks::{check_uri_path, valid_external_key_id, XksUsage};

/// Where `[xks] listen` binds unless set: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:4600";
/// The dev credentials file in the state folder.
pub const CREDENTIALS_FILE: &str = "xks-credentials";
/// The dev endpoint's XksProxyUriPath.
pub const DEV_URI_PATH: &str = "/keyorch/kms/xks/v1";

/// `[xks]`: the XKS proxy (docs/configuration.md, docs/xks.md).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XksSection {
    /// `"IP:port"`; `--xks-listen` overrides it.
    pub listen: Option<String>,
    /// PEM server certificate chain and key: with them the listener speaks HTTPS only.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// PEM CA of client certificates: with it, mutual TLS is required.
    pub client_ca: Option<PathBuf>,
    /// With client_ca: the common name the client certificate must carry.
    pub client_common_name: Option<String>,
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    #[serde(default)]
    pub endpoint: Vec<XksEndpointEntry>,
}

fn default_max_in_flight() -> usize {
    MAX_IN_FLIGHT
}

/// One `[[xks.endpoint]]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XksEndpointEntry {
    /// `[/prefix]/kms/xks/v1` (AWS KMS's XksProxyUriPath).
    pub uri_path: String,
    /// Serve only this vault's keys (id or name); absent: any vault the credential's
    /// `[[access.grant]]` roles reach.
    pub vault: Option<String>,
    /// `[[xks.endpoint.credential]]`: at least one; two while rotating.
    #[serde(default)]
    pub credential: Vec<XksCredentialEntry>,
    /// `[xks.endpoint.keys]`: externalKeyId = "key-…", or = { key = "key-…", usage = [...] }
    /// (a key id is also its own name, with both usages).
    #[serde(default)]
    pub keys: BTreeMap<String, XksKeyEntry>,
}

/// One `[xks.endpoint.keys]` value.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(
    untagged,
    expecting = "a key id (\"key-…\") or a table { key = \"key-…\", usage = [\"ENCRYPT\", \"DECRYPT\"] }"
)]
pub enum XksKeyEntry {
    /// A keyorch key id, served for ENCRYPT and DECRYPT.
    Id(String),
    /// A key id served with the listed usages only.
    Restricted(XksRestrictedKey),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XksRestrictedKey {
    pub key: String,
    pub usage: Vec<String>,
}

impl XksKeyEntry {
    fn key_id(&self) -> &str {
        match self {
            XksKeyEntry::Id(k) | XksKeyEntry::Restricted(XksRestrictedKey { key: k, .. }) => k,
        }
    }

    fn served(&self) -> Result<ServedKey, String> {
        Ok(match self {
            XksKeyEntry::Id(k) => ServedKey {
                key_id: k.clone(),
                usage: XksUsage::BOTH,
            },
            XksKeyEntry::Restricted(r) => ServedKey {
                key_id: r.key.clone(),
                usage: XksUsage::parse(&r.usage)?,
            },
        })
    }
}

/// One SigV4 credential: its roles come from `[[access.grant]]` with `aws_access_key_id`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XksCredentialEntry {
    pub access_key_id: String,
    pub secret_file: PathBuf,
}

/// The spec's access key id: 20 to 30 of A-Z and 2-7.
pub fn check_access_key_id(id: &str) -> Result<(), String> {
    if (20..=30).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
    {
        Ok(())
    } else {
        Err("must be 20 to 30 of A-Z and 2-7 (the XKS proxy API's access key id)".into())
    }
}

/// The secret access key AWS KMS accepts: 43 to 64 of A-Z a-z 0-9 + / = (at least 256
/// bits of entropy as base64).
pub fn check_secret(secret: &str) -> Result<(), String> {
    if (43..=64).contains(&secret.len())
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
    {
        Ok(())
    } else {
        Err("must be 43 to 64 of A-Z a-z 0-9 + / = (e.g. `openssl rand -base64 32`)".into())
    }
}

fn check_listen(name: &str, addr: SocketAddr, tls: bool) -> Result<(), ConfigError> {
    if !tls && !addr.ip().is_loopback() {
        return Err(field(
            name,
            format!("{addr} is not a loopback address: set xks.tls_cert and xks.tls_key to serve HTTPS there (plain HTTP would carry plaintext)"),
        ));
    }
    Ok(())
}

/// The rules that need no file.
pub fn check_section(s: &XksSection) -> Result<(), ConfigError> {
    if s.tls_cert.is_some() != s.tls_key.is_some() {
        return Err(field(
            "xks.tls_key",
            "set both tls_cert and tls_key, or neither",
        ));
    }
    if s.client_ca.is_some() && s.tls_cert.is_none() {
        return Err(field(
            "xks.client_ca",
            "mutual TLS needs tls_cert and tls_key",
        ));
    }
    if s.client_common_name.is_some() && s.client_ca.is_none() {
        return Err(field(
            "xks.client_common_name",
            "only meaningful with xks.client_ca",
        ));
    }
    if s.max_in_flight == 0 {
        return Err(field("xks.max_in_flight", "must be at least 1"));
    }
    if let Some(l) = &s.listen {
        let addr: SocketAddr = l.parse().map_err(|_| {
            field(
                "xks.listen",
                format!("{l:?} is not an IP address and port such as \"127.0.0.1:4600\""),
            )
        })?;
        check_listen("xks.listen", addr, s.tls_cert.is_some())?;
    }
    if s.endpoint.is_empty() {
        return Err(field(
            "xks.endpoint",
            "needs at least one [[xks.endpoint]] with a uri_path and a credential",
        ));
    }
    let mut paths = HashSet::new();
    let mut ids = HashSet::new();
    for (i, e) in s.endpoint.iter().enumerate() {
        let at = |k: &str| format!("xks.endpoint[{i}].{k}");
        check_uri_path(&at("uri_path"), &e.uri_path).map_err(|e| match e {
            crate::domain::DomainError::Invalid { field: f, rule } => field(f, rule),
            other => field(at("uri_path"), other.to_string()),
        })?;
        if !paths.insert(e.uri_path.as_str()) {
            return Err(field(
                at("uri_path"),
                format!("{} is listed twice", e.uri_path),
            ));
        }
        if let Some(v) = &e.vault {
            if !v.starts_with("vault-") {
                crate::domain::validate_name("vault", v).map_err(|err| {
                    field(at("vault"), format!("must be a vault id or name: {err}"))
                })?;
            }
        }
        if e.credential.is_empty() {
            return Err(field(at("credential"), "needs at least one credential"));
        }
        for (j, c) in e.credential.iter().enumerate() {
            check_access_key_id(&c.access_key_id).map_err(|rule| {
                field(
                    format!("xks.endpoint[{i}].credential[{j}].access_key_id"),
                    rule,
                )
            })?;
            if !ids.insert(c.access_key_id.as_str()) {
                return Err(field(
                    format!("xks.endpoint[{i}].credential[{j}].access_key_id"),
                    format!("{} is listed twice", c.access_key_id),
                ));
            }
        }
        for (external, key) in &e.keys {
            if !valid_external_key_id(external) {
                return Err(field(
                    format!("xks.endpoint[{i}].keys.{external}"),
                    "an externalKeyId is 1 to 128 of A-Z a-z 0-9 - . _",
                ));
            }
            if !key.key_id().starts_with("key-") {
                return Err(field(
                    format!("xks.endpoint[{i}].keys.{external}"),
                    "must name a keyorch key id (key-…)",
                ));
            }
            key.served()
                .map_err(|rule| field(format!("xks.endpoint[{i}].keys.{external}.usage"), rule))?;
        }
    }
    Ok(())
}

fn read_file(name: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| field(name, format!("cannot read {}: {e}", path.display())))
}

/// The proxy's settings from `[xks]`; `listen` (from `--xks-listen`) wins over `xks.listen`.
pub fn settings(s: &XksSection, listen: Option<SocketAddr>) -> Result<Settings, ConfigError> {
    check_section(s)?;
    let (name, listen) = match listen {
        Some(a) => ("--xks-listen", a),
        None => (
            "xks.listen",
            s.listen
                .as_deref()
                .unwrap_or(DEFAULT_LISTEN)
                .parse()
                .map_err(|_| field("xks.listen", "not an IP address and port"))?,
        ),
    };
    let tls = match (&s.tls_cert, &s.tls_key) {
        (Some(cert), Some(key_path)) => {
            let chain = read_file("xks.tls_cert", cert)?;
            let key = Zeroizing::new(read_file("xks.tls_key", key_path)?);
            warn_if_readable_by_others("xks.tls_key", key_path);
            let config = match &s.client_ca {
                None => crate::api::tls::https_server_config(&chain, &key),
                Some(ca) => crate::api::tls::https_mtls_server_config(
                    &chain,
                    &key,
                    &read_file("xks.client_ca", ca)?,
                ),
            };
            Some(config.map_err(|e| match e {
                crate::api::tls::TlsError::Key(r) => field("xks.tls_key", r),
                crate::api::tls::TlsError::ClientCa(r) => field("xks.client_ca", r),
                other => field("xks.tls_cert", other.to_string()),
            })?)
        }
        _ => None,
    };
    check_listen(name, listen, tls.is_some())?;
    Ok(Settings {
        listen,
        tls,
        client_common_name: s.client_common_name.clone(),
        endpoints: endpoint_settings(s)?,
        max_in_flight: s.max_in_flight,
    })
}

/// The `[[xks.endpoint]]` entries with their secrets read: at start, and at each SIGHUP.
pub fn endpoint_settings(s: &XksSection) -> Result<Vec<EndpointSettings>, ConfigError> {
    check_section(s)?;
    let mut endpoints = Vec::with_capacity(s.endpoint.len());
    for (i, e) in s.endpoint.iter().enumerate() {
        let mut credentials = Vec::with_capacity(e.credential.len());
        for (j, c) in e.credential.iter().enumerate() {
            let at = format!("xks.endpoint[{i}].credential[{j}].secret_file");
            let text = Zeroizing::new(std::fs::read_to_string(&c.secret_file).map_err(|err| {
                field(
                    &at,
                    format!("cannot read {}: {err}", c.secret_file.display()),
                )
            })?);
            let secret = text.trim_end_matches(['\r', '\n']);
            check_secret(secret).map_err(|rule| field(&at, rule))?;
            warn_if_readable_by_others(&at, &c.secret_file);
            credentials.push(Credential {
                access_key_id: c.access_key_id.clone(),
                secret: SecretString::from(secret.to_string()),
            });
        }
        endpoints.push(EndpointSettings {
            uri_path: e.uri_path.clone(),
            vault: e.vault.clone(),
            credentials,
            keys: e
                .keys
                .iter()
                .map(|(external, k)| {
                    k.served()
                        .map(|s| (external.clone(), s))
                        .map_err(|rule| field(format!("xks.endpoint.keys.{external}.usage"), rule))
                })
                .collect::<Result<_, _>>()?,
        });
    }
    Ok(endpoints)
}

/// Whether `old` and `new` differ in what only a restart applies: everything but the
/// endpoints (the listener, its TLS, the client name, the request limit).
pub fn listener_changed(old: &XksSection, new: &XksSection) -> bool {
    let strip = |s: &XksSection| XksSection {
        endpoint: Vec::new(),
        ..s.clone()
    };
    strip(old) != strip(new)
}

/// `--dev --xks-listen ADDR:PORT`: one endpoint at [`DEV_URI_PATH`] serving every vault,
/// with one credential generated on first start and kept in `STATE_DIR/xks-credentials`
/// (mode 0600). The caller grants it every role.
pub fn dev_settings(state_dir: &Path, listen: SocketAddr) -> Result<Settings, DevError> {
    check_listen("--xks-listen", listen, false)?;
    let path = state_dir.join(CREDENTIALS_FILE);
    let (id, secret) = if path.exists() {
        read_credentials(&path)?
    } else {
        let made = generate_credentials()?;
        write_credentials(&path, &made.0, &made.1)?;
        tracing::info!(file = %path.display(), "--dev: XKS proxy credentials created");
        made
    };
    Ok(Settings {
        listen,
        tls: None,
        client_common_name: None,
        endpoints: vec![EndpointSettings {
            uri_path: DEV_URI_PATH.into(),
            vault: None,
            credentials: vec![Credential {
                access_key_id: id,
                secret,
            }],
            keys: BTreeMap::new(),
        }],
        max_in_flight: MAX_IN_FLIGHT,
    })
}

fn generate_credentials() -> Result<(String, SecretString), DevError> {
    const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut raw = Zeroizing::new([0u8; 58]);
    getrandom::fill(raw.as_mut())
        .map_err(|e| DevError::Provision(format!("no randomness: {e}")))?;
    let id: String = raw[..26]
        .iter()
        .map(|b| BASE32[usize::from(b % 32)] as char)
        .collect();
    use base64::Engine as _;
    let secret = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&raw[26..58]));
    Ok((id, SecretString::from(secret.to_string())))
}

fn write_credentials(path: &Path, id: &str, secret: &SecretString) -> Result<(), DevError> {
    let text = Zeroizing::new(format!(
        "# keyorchd --dev: the XKS proxy's endpoint and SigV4 credential (service kms-xks-proxy).\n\
         uri_path = {DEV_URI_PATH}\naccess_key_id = {id}\nsecret_access_key = {}\n",
        secret.expose_secret()
    ));
    super::dev::write_private_file(path, text.as_bytes())
}

fn read_credentials(path: &Path) -> Result<(String, SecretString), DevError> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path).map_err(|source| DevError::Io {
            path: path.to_path_buf(),
            source,
        })?,
    );
    let bad = |what: &str| {
        DevError::Provision(format!(
            "{}: {what}; remove the file to have new credentials generated",
            path.display()
        ))
    };
    let (mut id, mut secret) = (None, None);
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        if let Some((k, v)) = line.split_once('=') {
            match k.trim() {
                "access_key_id" => id = Some(v.trim().to_string()),
                "secret_access_key" => secret = Some(SecretString::from(v.trim().to_string())),
                _ => {}
            }
        }
    }
    let id = id.ok_or_else(|| bad("no access_key_id"))?;
    check_access_key_id(&id).map_err(|e| bad(&format!("access_key_id {e}")))?;
    let secret = secret.ok_or_else(|| bad("no secret_access_key"))?;
    check_secret(secret.expose_secret()).map_err(|e| bad(&format!("secret_access_key {e}")))?;
    Ok((id, secret))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn dev_credentials_are_made_once_0600_and_follow_the_spec() {
        let dir = tempfile::tempdir().unwrap();
        let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let a = dev_settings(dir.path(), listen).unwrap();
        let file = dir.path().join(CREDENTIALS_FILE);
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let b = dev_settings(dir.path(), listen).unwrap();
        let (ca, cb) = (
            &a.endpoints[0].credentials[0],
            &b.endpoints[0].credentials[0],
        );
        assert_eq!(ca.access_key_id, cb.access_key_id);
        assert_eq!(ca.secret.expose_secret(), cb.secret.expose_secret());
        assert!(check_access_key_id(&ca.access_key_id).is_ok());
        assert!(check_secret(ca.secret.expose_secret()).is_ok());
        let open: SocketAddr = "0.0.0.0:4600".parse().unwrap();
        assert!(dev_settings(dir.path(), open).is_err());
    }

    #[test]
    fn credentials_follow_the_spec() {
        assert!(check_access_key_id("MUBSXM6K3KMXHN6RRCXI7TWQH4").is_ok());
        assert!(check_access_key_id("AKIAIOSFODNN8EXAMPL10").is_err()); // 8, 1 and 0 are not base32
        assert!(check_access_key_id("ABCDEFGHIJKLMNOPQRS").is_err()); // 19
        assert!(check_secret("VU6W2byoiBrhDqNGbx703oL0syCAmhlQgwNUT1234567").is_ok());
        assert!(check_secret("short").is_err());
        assert!(check_secret(&"a".repeat(43).replace('a', "-")).is_err());
    }

    fn section(extra: &str) -> Result<XksSection, String> {
        toml::from_str(&format!(
            "[[endpoint]]\nuri_path = '/k/kms/xks/v1'\n[[endpoint.credential]]\naccess_key_id = 'ABCDEFGHIJKLMNOPQRSTUVWX'\nsecret_file = '/s'\n{extra}"
        ))
        .map_err(|e| e.to_string())
    }

    #[test]
    fn section_rules_name_their_field() {
        assert!(check_section(&section("").unwrap()).is_ok());
        let mut s = section("").unwrap();
        s.listen = Some("0.0.0.0:4600".into());
        let e = check_section(&s).unwrap_err().to_string();
        assert!(e.contains("xks.listen"), "{e}");
        let mut s = section("").unwrap();
        s.endpoint[0].uri_path = "/k/kms/xks/v2".into();
        let e = check_section(&s).unwrap_err().to_string();
        assert!(e.contains("xks.endpoint[0].uri_path"), "{e}");
        let mut s = section("").unwrap();
        s.endpoint[0].credential[0].access_key_id = "lower".into();
        let e = check_section(&s).unwrap_err().to_string();
        assert!(e.contains("credential[0].access_key_id"), "{e}");
        let s = section("[endpoint.keys]\n'bad/id' = 'key-1'\n").unwrap();
        let e = check_section(&s).unwrap_err().to_string();
        assert!(e.contains("keys"), "{e}");
        let s = section("[endpoint.keys]\nenc = { key = 'key-1', usage = ['ENCRYPT'] }\nnone = { key = 'key-1', usage = [] }\n").unwrap();
        check_section(&s).unwrap();
        let s = section("[endpoint.keys]\nenc = { key = 'key-1', usage = ['SIGN'] }\n").unwrap();
        let e = check_section(&s).unwrap_err().to_string();
        assert!(
            e.contains("xks.endpoint[0].keys.enc.usage") && e.contains("SIGN"),
            "{e}"
        );
        let e = section("[endpoint.keys]\nenc = { key = 'key-1', usages = ['ENCRYPT'] }\n")
            .unwrap_err();
        assert!(e.contains("usage = ["), "{e}");
        let mut s = section("").unwrap();
        s.client_common_name = Some("cks.kms.eu-west-1.amazonaws.com".into());
        let e = check_section(&s).unwrap_err().to_string();
        assert!(e.contains("xks.client_common_name"), "{e}");
        let mut s = section("").unwrap();
        s.endpoint[0].credential.clear();
        let e = check_section(&s).unwrap_err().to_string();
        assert!(e.contains("xks.endpoint[0].credential"), "{e}");
    }
}
