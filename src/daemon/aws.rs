//! The AWS KMS-compatible endpoint's settings: from `[aws]` (listen address, TLS, regions,
//! the module of AWS_CLOUDHSM stores, access keys whose secrets are read into zeroizing
//! memory), or in `--dev` from generated credentials kept in `STATE_DIR/aws-credentials`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;

use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use super::config::{credential_path, field, warn_if_readable_by_others, AwsSection, ConfigError};
use super::dev::DevError;
use crate::api::aws::{AccessKey, Regions, Settings};
use crate::domain::validate_aws_secret;

/// Where `[aws] listen` binds unless set: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:4599";
/// The dev credentials file in the state folder (an AWS shared-credentials file).
pub const CREDENTIALS_FILE: &str = "aws-credentials";
/// Its profile.
pub const DEV_PROFILE: &str = "keyorch";
/// The vault of the dev access key's custom key stores (created on first use).
pub const DEV_VAULT: &str = "aws";
/// The region written into the dev profile (any region is accepted in --dev).
pub const DEV_REGION: &str = "us-east-1";

/// AWS's access key id rule: 16 to 128 word characters.
pub fn check_access_key_id(id: &str) -> Result<(), String> {
    if (16..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        Ok(())
    } else {
        Err("must be an AWS access key id: 16 to 128 of A-Z a-z 0-9 _".into())
    }
}

/// Plain HTTP only on loopback: Decrypt and GenerateDataKey answer plaintext.
fn check_listen(name: &str, addr: SocketAddr, tls: bool) -> Result<(), ConfigError> {
    if !tls && !addr.ip().is_loopback() {
        return Err(field(
            name,
            format!("{addr} is not a loopback address: set aws.tls_cert and aws.tls_key to serve HTTPS there (plain HTTP would carry plaintext keys)"),
        ));
    }
    Ok(())
}

/// The rules that need no file: addresses, regions, one secret source per key, unique ids.
pub fn check_section(s: &AwsSection) -> Result<(), ConfigError> {
    let tls = s.tls_cert.is_some();
    if let Some(l) = &s.listen {
        let addr: SocketAddr = l.parse().map_err(|_| {
            field(
                "aws.listen",
                format!("{l:?} is not an IP address and port such as \"127.0.0.1:4599\""),
            )
        })?;
        check_listen("aws.listen", addr, tls)?;
    }
    match (tls, s.tls_key.is_some(), s.tls_key_credential.is_some()) {
        (false, false, false) | (true, true, false) | (true, false, true) => {}
        (false, _, _) => return Err(field("aws.tls_key", "only meaningful with aws.tls_cert")),
        (true, _, _) => {
            return Err(field(
                "aws.tls_key",
                "with aws.tls_cert, set exactly one of tls_key and tls_key_credential",
            ))
        }
    }
    if s.regions.is_empty() {
        return Err(field(
            "aws.regions",
            "must name at least one region, or \"*\" for any",
        ));
    }
    for r in &s.regions {
        if r != "*" && !crate::api::aws::sigv4::valid_region(r) {
            return Err(field(
                "aws.regions",
                format!("{r:?} is not an AWS region name (e.g. \"eu-central-1\") or \"*\""),
            ));
        }
    }
    if !s.pkcs11_module.is_absolute() {
        return Err(field(
            "aws.pkcs11_module",
            "must be an absolute path (the PKCS#11 module of the tokens AWS_CLOUDHSM key stores name)",
        ));
    }
    if !s.pkcs11_module.is_file() {
        return Err(field(
            "aws.pkcs11_module",
            format!("{} is not a readable file", s.pkcs11_module.display()),
        ));
    }
    let mut seen = HashSet::new();
    for (i, k) in s.access_key.iter().enumerate() {
        let at = |key: &str| format!("aws.access_key[{i}].{key}");
        check_access_key_id(&k.access_key_id).map_err(|rule| field(at("access_key_id"), rule))?;
        if !seen.insert(k.access_key_id.as_str()) {
            return Err(field(
                at("access_key_id"),
                format!("{} is listed twice", k.access_key_id),
            ));
        }
        if k.secret_file.is_some() == k.secret_credential.is_some() {
            return Err(field(
                at("secret_file"),
                "set exactly one of secret_file and secret_credential",
            ));
        }
        if k.vault.starts_with("vault-") {
            if k.create_vault {
                return Err(field(
                    at("create_vault"),
                    "needs vault to be a vault name (an id cannot be created)",
                ));
            }
        } else {
            crate::domain::validate_name("vault", &k.vault).map_err(|e| {
                field(
                    at("vault"),
                    format!("must be a vault id (vault-…) or a vault name: {e}"),
                )
            })?;
        }
    }
    Ok(())
}

/// Reads a secret access key file: its content less a trailing newline, checked.
fn read_secret(name: &str, path: &Path) -> Result<SecretString, ConfigError> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| field(name, format!("cannot read {}: {e}", path.display())))?,
    );
    let secret = text.trim_end_matches(['\r', '\n']);
    validate_aws_secret(name, secret).map_err(|e| field(name, e.to_string()))?;
    warn_if_readable_by_others(name, path);
    Ok(SecretString::from(secret.to_string()))
}

/// The endpoint's settings from `[aws]`; `listen` (from `--aws-listen`) wins over
/// `aws.listen`. Reads the secrets and the TLS files.
pub fn settings(s: &AwsSection, listen: Option<SocketAddr>) -> Result<Settings, ConfigError> {
    check_section(s)?;
    let (name, listen) = match listen {
        Some(a) => ("--aws-listen", a),
        None => (
            "aws.listen",
            s.listen
                .as_deref()
                .unwrap_or(DEFAULT_LISTEN)
                .parse()
                .map_err(|_| field("aws.listen", "not an IP address and port"))?,
        ),
    };
    let tls = match &s.tls_cert {
        None => None,
        Some(cert) => {
            let (key_field, key_path) = match (&s.tls_key, &s.tls_key_credential) {
                (Some(p), None) => ("aws.tls_key", p.clone()),
                (None, Some(n)) => (
                    "aws.tls_key_credential",
                    credential_path("aws.tls_key_credential", n)?,
                ),
                _ => {
                    return Err(field(
                        "aws.tls_key",
                        "set exactly one of tls_key and tls_key_credential",
                    ))
                }
            };
            let chain = std::fs::read(cert).map_err(|e| {
                field(
                    "aws.tls_cert",
                    format!("cannot read {}: {e}", cert.display()),
                )
            })?;
            let key = Zeroizing::new(std::fs::read(&key_path).map_err(|e| {
                field(
                    key_field,
                    format!("cannot read {}: {e}", key_path.display()),
                )
            })?);
            warn_if_readable_by_others(key_field, &key_path);
            Some(
                crate::api::tls::https_server_config(&chain, &key).map_err(|e| match e {
                    crate::api::tls::TlsError::Key(r) => field(key_field, r),
                    other => field("aws.tls_cert", other.to_string()),
                })?,
            )
        }
    };
    check_listen(name, listen, tls.is_some())?;
    let regions = if s.regions.iter().any(|r| r == "*") {
        Regions::Any
    } else {
        Regions::Only(s.regions.clone())
    };
    let mut access_keys = Vec::with_capacity(s.access_key.len());
    for (i, k) in s.access_key.iter().enumerate() {
        let secret = match (&k.secret_file, &k.secret_credential) {
            (Some(p), None) => read_secret(&format!("aws.access_key[{i}].secret_file"), p)?,
            (None, Some(n)) => {
                let at = format!("aws.access_key[{i}].secret_credential");
                read_secret(&at, &credential_path(&at, n)?)?
            }
            _ => {
                return Err(field(
                    format!("aws.access_key[{i}].secret_file"),
                    "no secret source",
                ))
            }
        };
        access_keys.push(AccessKey {
            id: k.access_key_id.clone(),
            secret,
            vault: k.vault.clone(),
            create_vault: k.create_vault,
        });
    }
    if access_keys.is_empty() {
        tracing::warn!("[aws] has no [[aws.access_key]]: every request to the AWS endpoint is refused (UnrecognizedClientException)");
    }
    Ok(Settings {
        listen,
        tls,
        regions,
        access_keys,
        pkcs11_module: s.pkcs11_module.display().to_string(),
    })
}

/// `--dev --aws-listen ADDR:PORT`: the endpoint with one access key, generated on first
/// start and kept in `STATE_DIR/aws-credentials` (profile `keyorch`, mode 0600), whose
/// custom key stores live in the vault `aws` (created on first use). The caller grants
/// it every role. Any region is accepted.
pub fn dev_settings(
    state_dir: &Path,
    listen: SocketAddr,
    module: &Path,
) -> Result<Settings, DevError> {
    check_listen("--aws-listen", listen, false)?;
    let path = state_dir.join(CREDENTIALS_FILE);
    let (id, secret) = if path.exists() {
        read_credentials(&path)?
    } else {
        let made = generate_credentials()?;
        write_credentials(&path, &made.0, &made.1)?;
        tracing::info!(file = %path.display(), "--dev: AWS endpoint credentials created");
        made
    };
    Ok(Settings {
        listen,
        tls: None,
        regions: Regions::Any,
        access_keys: vec![AccessKey {
            id,
            secret,
            vault: DEV_VAULT.into(),
            create_vault: true,
        }],
        pkcs11_module: module.display().to_string(),
    })
}

fn generate_credentials() -> Result<(String, SecretString), DevError> {
    const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut raw = Zeroizing::new([0u8; 46]);
    getrandom::fill(raw.as_mut())
        .map_err(|e| DevError::Provision(format!("no randomness: {e}")))?;
    // AKIA + 16 characters, like AWS's long-term keys; 40 characters of secret.
    let id: String = "AKIA"
        .chars()
        .chain(
            raw[..16]
                .iter()
                .map(|b| BASE32[usize::from(b % 32)] as char),
        )
        .collect();
    use base64::Engine as _;
    let secret = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&raw[16..46]));
    Ok((id, SecretString::from(secret.to_string())))
}

fn write_credentials(path: &Path, id: &str, secret: &SecretString) -> Result<(), DevError> {
    let text = Zeroizing::new(format!(
        "# keyorchd --dev: credentials of its AWS KMS-compatible endpoint. Use with\n\
         #   AWS_SHARED_CREDENTIALS_FILE={} aws --profile {DEV_PROFILE} kms ... --endpoint-url http://ADDR:PORT\n\
         [{DEV_PROFILE}]\naws_access_key_id = {id}\naws_secret_access_key = {}\nregion = {DEV_REGION}\n",
        path.display(),
        secret.expose_secret()
    ));
    super::dev::write_private_file(path, text.as_bytes())
}

/// The `keyorch` profile's access key id and secret from an existing credentials file.
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
    let mut in_profile = false;
    let (mut id, mut secret) = (None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_profile = line == format!("[{DEV_PROFILE}]");
            continue;
        }
        if !in_profile || line.starts_with('#') {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            match k.trim() {
                "aws_access_key_id" => id = Some(v.trim().to_string()),
                "aws_secret_access_key" => secret = Some(SecretString::from(v.trim().to_string())),
                _ => {}
            }
        }
    }
    let id = id.ok_or_else(|| bad("no aws_access_key_id in profile [keyorch]"))?;
    check_access_key_id(&id).map_err(|e| bad(&format!("aws_access_key_id {e}")))?;
    let secret = secret.ok_or_else(|| bad("no aws_secret_access_key in profile [keyorch]"))?;
    validate_aws_secret("aws_secret_access_key", secret.expose_secret())
        .map_err(|e| bad(&e.to_string()))?;
    Ok((id, secret))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn dev_credentials_are_made_once_0600_and_reread() {
        let dir = tempfile::tempdir().unwrap();
        let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let a = dev_settings(dir.path(), listen, Path::new("/m.so")).unwrap();
        let file = dir.path().join(CREDENTIALS_FILE);
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let b = dev_settings(dir.path(), listen, Path::new("/m.so")).unwrap();
        assert_eq!(a.access_keys[0].id, b.access_keys[0].id);
        assert_eq!(
            a.access_keys[0].secret.expose_secret(),
            b.access_keys[0].secret.expose_secret()
        );
        assert!(a.access_keys[0].id.starts_with("AKIA") && a.access_keys[0].id.len() == 20);
        assert_eq!(a.access_keys[0].secret.expose_secret().len(), 40);
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            text.contains("[keyorch]\naws_access_key_id = AKIA"),
            "{text}"
        );
        // Plain HTTP off loopback is refused.
        let open: SocketAddr = "0.0.0.0:4599".parse().unwrap();
        assert!(dev_settings(dir.path(), open, Path::new("/m.so")).is_err());
        // A damaged file is not silently replaced.
        std::fs::write(&file, "[keyorch]\naws_access_key_id = short\n").unwrap();
        assert!(dev_settings(dir.path(), listen, Path::new("/m.so")).is_err());
    }

    #[test]
    fn access_key_ids_follow_aws() {
        assert!(check_access_key_id("AKIAIOSFODNN7EXAMPLE").is_ok());
        assert!(check_access_key_id("AKIA").is_err());
        assert!(check_access_key_id("AKIA IOSFODNN7EXAMPLE").is_err());
    }
}
