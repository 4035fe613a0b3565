//! The `aws_kms` keystore target: an AWS KMS account and region (or an emulator at an endpoint
//! URL) into which managed keys are installed as imported key material (BYOK).

mod client;
mod install;
mod permissions;

use std::fmt;

use aws_sdk_kms::types::{KeyMetadata, KeySpec, KeyState, KeyUsageType, OriginType};
use secrecy::SecretString;

use crate::hsm::{Hsm, KeyKind, KeyRef};

use super::{InstallError, ManagedKey, ProbeMode, RemoteCopy, Target, TargetError};
use crate::domain::{validate_aws_secret, DomainError};
use client::Kms;
use secrecy::ExposeSecret;
use zeroize::Zeroizing;

pub use permissions::REQUIRED_PERMISSIONS;

/// Installed keys carry this tag, valued with the managed key's id.
pub const KEY_ID_TAG: &str = "keyorch:key-id";

/// Days between uninstall and AWS deleting the key (AWS's shortest window).
pub const PENDING_WINDOW_DAYS: i32 = 7;

/// An aws_kms keystore's credential (the secret access key), checked, as the bytes to seal.
pub fn credential_bytes(
    field: &str,
    secret: &SecretString,
) -> Result<Zeroizing<Vec<u8>>, DomainError> {
    validate_aws_secret(field, secret.expose_secret())?;
    Ok(Zeroizing::new(secret.expose_secret().as_bytes().to_vec()))
}

/// How to reach AWS KMS.
#[derive(Clone)]
pub struct AwsKmsConfig {
    /// AWS region, e.g. `eu-central-1`.
    pub region: String,
    /// Another endpoint than `https://kms.<region>.amazonaws.com` (VPC endpoint, emulator).
    pub endpoint_url: Option<String>,
    pub access_key_id: String,
    pub secret_access_key: SecretString,
}

impl fmt::Debug for AwsKmsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsKmsConfig")
            .field("region", &self.region)
            .field("endpoint_url", &self.endpoint_url)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"[redacted]")
            .finish()
    }
}

/// A managed key's copy in AWS KMS, found by its alias.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteAwsKey {
    /// The key's ARN.
    pub arn: String,
    /// True in key state `Enabled` (material imported and usable).
    pub enabled: bool,
    /// True when the key's origin is `EXTERNAL` (imported material).
    pub origin_external: bool,
    /// AWS's key state: `Enabled`, `Disabled`, `PendingImport` (no material yet), ...
    pub key_state: String,
    /// True when keyorch made the key for this label (origin EXTERNAL, tagged with the
    /// managed key's id): only such keys are ever changed or removed.
    pub owned: bool,
}

/// An AWS KMS account and region. `Send + Sync`; every call blocks (the service calls it from
/// `spawn_blocking`) and each AWS request gives up after 10 s (3 s to connect), retries
/// included, with [`TargetError::Network`] or [`TargetError::TimedOut`].
pub struct AwsKmsTarget {
    kms: Kms,
    region: String,
    endpoint_url: Option<String>,
}

impl fmt::Debug for AwsKmsTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsKmsTarget")
            .field("region", &self.region)
            .field("endpoint_url", &self.endpoint_url)
            .finish_non_exhaustive()
    }
}

/// What AWS KMS creates for a managed key of `kind`, or why it cannot hold one.
pub fn key_spec(kind: KeyKind) -> Result<(KeySpec, KeyUsageType), TargetError> {
    match kind {
        KeyKind::Aes256 => Ok((KeySpec::SymmetricDefault, KeyUsageType::EncryptDecrypt)),
        KeyKind::HmacSha256 => Ok((KeySpec::Hmac256, KeyUsageType::GenerateVerifyMac)),
        KeyKind::Aes128 | KeyKind::Aes192 => Err(TargetError::NotSupported(format!(
            "an {} key cannot be installed in an aws_kms keystore: AWS KMS imports symmetric \
             encryption keys only as 256-bit AES (SYMMETRIC_DEFAULT)",
            kind_name(kind)
        ))),
        KeyKind::Rsa2048
        | KeyKind::Rsa3072
        | KeyKind::Rsa4096
        | KeyKind::EcP256
        | KeyKind::EcP384 => Err(TargetError::NotSupported(format!(
            "an {} key cannot be installed in an aws_kms keystore: AWS KMS imports RSA and EC \
             private keys only wrapped with RSA_AES_KEY_WRAP_SHA_256 or _SHA_1; keyorch's HSM \
             does RSA-OAEP with SHA-1 only (SoftHSM2), so not the SHA-256 variant, and keyorch \
             does not install keys there with the SHA-1 variant; AES-256 and HMAC-SHA256 keys \
             can be installed",
            kind_name(kind)
        ))),
    }
}

/// The algorithm's usual name, for messages.
fn kind_name(kind: KeyKind) -> &'static str {
    match kind {
        KeyKind::Aes128 => "AES-128",
        KeyKind::Aes192 => "AES-192",
        KeyKind::Aes256 => "AES-256",
        KeyKind::Rsa2048 => "RSA-2048",
        KeyKind::Rsa3072 => "RSA-3072",
        KeyKind::Rsa4096 => "RSA-4096",
        KeyKind::EcP256 => "EC P-256",
        KeyKind::EcP384 => "EC P-384",
        KeyKind::HmacSha256 => "HMAC-SHA256",
    }
}

/// `alias/<label>`, after checking that `label` is a valid alias name.
fn alias_name(label: &str) -> Result<String, TargetError> {
    let valid = !label.is_empty()
        && label.len() <= 250
        && !label.starts_with("aws/")
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'/'));
    if valid {
        Ok(format!("alias/{label}"))
    } else {
        Err(TargetError::InvalidConfiguration(format!(
            "{label:?} cannot be an AWS KMS alias name (1-250 of A-Z a-z 0-9 / _ -, not aws/...)"
        )))
    }
}

/// The managed key id a label names (`keyorch-<key id>` → `<key id>`), the value of
/// [`KEY_ID_TAG`].
fn key_id_of(label: &str) -> &str {
    label.strip_prefix("keyorch-").unwrap_or(label)
}

fn remote_key(meta: &KeyMetadata) -> RemoteAwsKey {
    RemoteAwsKey {
        arn: meta.arn().unwrap_or(meta.key_id()).to_string(),
        enabled: meta.key_state() == Some(&KeyState::Enabled),
        origin_external: meta.origin() == Some(&OriginType::External),
        key_state: meta
            .key_state()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default(),
        owned: false,
    }
}

/// The account id in an ARN (`arn:aws:kms:<region>:<account>:...`), if it is 12 digits.
fn arn_account(arn: &str) -> Option<String> {
    arn.split(':')
        .nth(4)
        .filter(|a| a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit()))
        .map(str::to_string)
}

impl AwsKmsTarget {
    /// Checks the configuration and builds the client. Sends nothing: [`AwsKmsTarget::check`]
    /// is the first call.
    pub fn open(cfg: AwsKmsConfig) -> Result<AwsKmsTarget, TargetError> {
        use secrecy::ExposeSecret;
        let region_ok = !cfg.region.is_empty()
            && cfg
                .region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !region_ok {
            return Err(TargetError::InvalidConfiguration(format!(
                "{:?} is not an AWS region name (e.g. eu-central-1)",
                cfg.region
            )));
        }
        if let Some(url) = &cfg.endpoint_url {
            let scheme_ok = url.starts_with("https://") || url.starts_with("http://");
            if !scheme_ok || url.chars().any(char::is_whitespace) {
                return Err(TargetError::InvalidConfiguration(format!(
                    "endpoint URL {url:?} is not an http:// or https:// URL"
                )));
            }
        }
        if cfg.access_key_id.trim().is_empty() || cfg.access_key_id.chars().any(char::is_whitespace)
        {
            return Err(TargetError::InvalidCredentials(
                "the access key id is empty or contains white space".into(),
            ));
        }
        if cfg.secret_access_key.expose_secret().is_empty() {
            return Err(TargetError::InvalidCredentials(
                "the secret access key is empty".into(),
            ));
        }
        let kms = Kms::new(&cfg)?;
        Ok(AwsKmsTarget {
            kms,
            region: cfg.region,
            endpoint_url: cfg.endpoint_url,
        })
    }

    /// One harmless call (ListKeys, limit 1): Ok, or `InvalidCredentials`, `Network`
    /// (unreachable, refused, TLS), `TimedOut`, `PermissionDenied(["ListKeys"])`.
    pub fn check(&self) -> Result<(), TargetError> {
        self.kms
            .call("ListKeys", |c| c.list_keys().limit(1).send())?;
        Ok(())
    }

    /// Which of [`REQUIRED_PERMISSIONS`] the credentials are denied, as far as calls that
    /// change nothing can tell: ListKeys and ListAliases (limit 1), and every action on one key
    /// aimed at a random key id or alias that cannot exist; a call answered
    /// `AccessDeniedException` is denied. `CreateKey` cannot be probed without creating a key
    /// and is never listed (install reports it as `PermissionDenied(["CreateKey"])`).
    pub fn denied_permissions(&self) -> Result<Vec<String>, TargetError> {
        permissions::denied(&self.kms)
    }

    /// Installs a managed key as `label` (`keyorch-<key id>`: alias `alias/keyorch-<key id>`,
    /// tag `keyorch:key-id`) and returns the key's ARN. Reuses the key under the alias if there
    /// is one (a half-done install; a key that already holds material is left as it is), else
    /// CreateKey (origin EXTERNAL) + CreateAlias; then GetParametersForImport (RSA-2048
    /// wrapping key, RSAES_OAEP_SHA_256 if the HSM can, else RSAES_OAEP_SHA_1), the wrap in
    /// `hsm` ([`Hsm::wrap_oaep`]) and ImportKeyMaterial (does not expire). Kinds AWS cannot
    /// import fail with `NotSupported` before anything is sent; a key under the alias that
    /// keyorch did not make for this label (origin, spec or tag differ) is left alone (`Internal`).
    pub fn install(&self, hsm: &Hsm, key: &KeyRef<'_>, label: &str) -> Result<String, TargetError> {
        install::install(&self.kms, hsm, key, label)
    }

    /// DeleteImportedKeyMaterial, ScheduleKeyDeletion (7 days) and DeleteAlias. Ok(false) when
    /// there was nothing to uninstall (no such alias, or its key already pending deletion).
    pub fn uninstall(&self, label: &str) -> Result<bool, TargetError> {
        install::uninstall(&self.kms, label)
    }

    /// The key under `label`'s alias; None when there is none or it is pending deletion.
    pub fn describe(&self, label: &str) -> Result<Option<RemoteAwsKey>, TargetError> {
        let alias = alias_name(label)?;
        let Some(meta) = install::find(&self.kms, &alias)?
            .filter(|meta| meta.key_state() != Some(&KeyState::PendingDeletion))
        else {
            return Ok(None);
        };
        let mut key = remote_key(&meta);
        key.owned = install::is_owned(&self.kms, &alias, label, &meta)?;
        Ok(Some(key))
    }

    /// The AWS account the credentials act in, read from the ARN of the first alias (AWS
    /// lists its predefined aliases in every account and region) or else of the first key.
    /// None when the account shows neither (an empty emulator).
    pub fn account_id(&self) -> Result<Option<String>, TargetError> {
        let aliases = self
            .kms
            .call("ListAliases", |c| c.list_aliases().limit(1).send())?;
        if let Some(a) = aliases
            .aliases()
            .iter()
            .find_map(|a| a.alias_arn().and_then(arn_account))
        {
            return Ok(Some(a));
        }
        let keys = self
            .kms
            .call("ListKeys", |c| c.list_keys().limit(1).send())?;
        Ok(keys
            .keys()
            .iter()
            .find_map(|k| k.key_arn().and_then(arn_account)))
    }

    /// EnableKey or DisableKey on the key under `label`'s alias (disabled keeps the material
    /// but blocks every use). `TargetNotFound` when there is no such key.
    pub fn set_enabled(&self, label: &str, enabled: bool) -> Result<(), TargetError> {
        let alias = alias_name(label)?;
        let meta = install::find(&self.kms, &alias)?
            .filter(|meta| meta.key_state() != Some(&KeyState::PendingDeletion))
            .ok_or_else(|| {
                TargetError::TargetNotFound(format!("AWS KMS has no key under {alias}"))
            })?;
        let arn = remote_key(&meta).arn;
        if enabled {
            self.kms
                .call("EnableKey", |c| c.enable_key().key_id(arn).send())?;
        } else {
            self.kms
                .call("DisableKey", |c| c.disable_key().key_id(arn).send())?;
        }
        Ok(())
    }
}

/// AWS KMS's import flow (CreateKey with origin EXTERNAL, GetParametersForImport,
/// ImportKeyMaterial); a deactivation disables the copy, so a reactivation brings back the same
/// AWS key.
impl Target for AwsKmsTarget {
    fn probe(
        &self,
        _keystore_id: &str,
        mode: ProbeMode,
        _connected: bool,
    ) -> Result<Option<String>, TargetError> {
        self.check()?;
        if mode == ProbeMode::Heartbeat {
            return Ok(None);
        }
        let denied = AwsKmsTarget::denied_permissions(self)?;
        if !denied.is_empty() {
            return Err(TargetError::PermissionDenied(denied));
        }
        self.account_id()
    }

    fn denied_permissions(&self) -> Result<Vec<String>, TargetError> {
        AwsKmsTarget::denied_permissions(self)
    }

    fn install(
        &self,
        hsm: &Hsm,
        material: &KeyRef<'_>,
        label: &str,
    ) -> Result<String, InstallError> {
        Ok(AwsKmsTarget::install(self, hsm, material, label)?)
    }

    fn confirm_install(
        &self,
        _key: &ManagedKey<'_>,
        label: &str,
        remote_id: &str,
    ) -> Result<(), InstallError> {
        match self.describe(label)? {
            Some(c) if c.arn == remote_id && c.owned && c.origin_external => {
                if !c.enabled {
                    AwsKmsTarget::set_enabled(self, label, true)?;
                }
                Ok(())
            }
            other => Err(InstallError::Mismatch(format!(
                "after the import, alias/{label} names {}, not the key {remote_id} keyorch imported into",
                other.map_or_else(|| "nothing".to_string(), |c| c.arn)
            ))),
        }
    }

    fn uninstall(&self, label: &str) -> Result<bool, TargetError> {
        AwsKmsTarget::uninstall(self, label)
    }

    fn copy(&self, key: &ManagedKey<'_>, label: &str) -> Result<Option<RemoteCopy>, TargetError> {
        let Some(c) = self.describe(label)? else {
            return Ok(None);
        };
        // A key made but never given material holds nothing yet.
        if c.key_state == "PendingImport" && c.owned {
            return Ok(None);
        }
        let recorded = key.recorded_remote_id;
        let detail = if !c.owned {
            format!(
                "alias/{label} names {}, a key keyorch did not make for this key",
                c.arn
            )
        } else if !recorded.is_empty() && recorded != c.arn {
            format!(
                "alias/{label} names {}, not the installed copy {recorded}",
                c.arn
            )
        } else {
            String::new()
        };
        Ok(Some(RemoteCopy {
            same: detail.is_empty(),
            enabled: c.enabled,
            kcv: String::new(),
            remote_id: c.arn,
            detail,
        }))
    }

    fn disables_on_deactivation(&self) -> bool {
        true
    }

    fn set_enabled(&self, label: &str, enabled: bool) -> Result<(), TargetError> {
        AwsKmsTarget::set_enabled(self, label, enabled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_aes256_and_hmac_map_to_aws_key_specs() {
        for kind in KeyKind::ALL {
            let supported = matches!(kind, KeyKind::Aes256 | KeyKind::HmacSha256);
            assert_eq!(key_spec(kind).is_ok(), supported, "{kind:?}");
        }
        let Err(TargetError::NotSupported(msg)) = key_spec(KeyKind::Aes128) else {
            panic!("AES-128 must be refused");
        };
        assert!(msg.contains("256-bit AES"), "{msg}");
        let Err(TargetError::NotSupported(msg)) = key_spec(KeyKind::Rsa2048) else {
            panic!("RSA must be refused");
        };
        assert!(
            msg.contains("RSA_AES_KEY_WRAP_SHA_256") && msg.contains("RSA-2048"),
            "{msg}"
        );
    }

    #[test]
    fn labels_become_alias_names() {
        assert_eq!(
            alias_name("keyorch-6f1c0e0a-1b2c").unwrap(),
            "alias/keyorch-6f1c0e0a-1b2c"
        );
        for bad in ["", "aws/x", "key orch", "keyorch-ä", &"k".repeat(251)] {
            assert!(alias_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(key_id_of("keyorch-abc"), "abc");
    }

    #[test]
    fn accounts_come_from_arns() {
        assert_eq!(
            arn_account("arn:aws:kms:us-east-1:000000000000:alias/aws/ebs").as_deref(),
            Some("000000000000")
        );
        assert_eq!(
            arn_account("arn:aws:kms:eu-central-1:123456789012:key/1234abcd").as_deref(),
            Some("123456789012")
        );
        assert_eq!(arn_account("arn:aws:kms:us-east-1::key/x"), None);
        assert_eq!(arn_account("1234abcd"), None);
    }

    #[test]
    fn open_refuses_bad_configuration_before_sending() {
        let cfg = |region: &str, url: Option<&str>, ak: &str, sk: &str| AwsKmsConfig {
            region: region.into(),
            endpoint_url: url.map(str::to_string),
            access_key_id: ak.into(),
            secret_access_key: SecretString::from(sk),
        };
        assert!(matches!(
            AwsKmsTarget::open(cfg("EU central", None, "AKIA1", "s")),
            Err(TargetError::InvalidConfiguration(_))
        ));
        assert!(matches!(
            AwsKmsTarget::open(cfg("us-east-1", Some("ftp://x"), "AKIA1", "s")),
            Err(TargetError::InvalidConfiguration(_))
        ));
        assert!(matches!(
            AwsKmsTarget::open(cfg("us-east-1", None, "", "s")),
            Err(TargetError::InvalidCredentials(_))
        ));
        assert!(matches!(
            AwsKmsTarget::open(cfg("us-east-1", None, "AKIA1", "")),
            Err(TargetError::InvalidCredentials(_))
        ));
        let target = AwsKmsTarget::open(cfg("us-east-1", None, "AKIA1", "very-secret")).unwrap();
        assert!(!format!("{target:?}").contains("very-secret"));
        let c = cfg("us-east-1", None, "AKIA1", "very-secret");
        assert!(!format!("{c:?}").contains("very-secret"));
    }
}
