//! Google Cloud KMS keystores (`google_cloud_kms`): a key ring, reached with a service
//! account's JSON key file (the sealed credential) through Google's Rust client
//! ([`client`]). Managed keys are installed as imported versions of HSM crypto keys, the
//! material wrapped only inside keyorch's HSM:
//!
//! 1. an import job of the key ring (protection level HSM) gives a 3072-bit RSA wrapping key.
//!    Its method is `RSA_OAEP_3072_SHA256_AES_256` when keyorchd's HSM wraps with RSA-OAEP
//!    SHA-256, else `RSA_OAEP_3072_SHA1_AES_256` (SoftHSM2 does OAEP with SHA-1 only). One job
//!    per method and UTC day, named `keyorch-<method>-<yyyymmdd>` (import jobs cannot be
//!    deleted, their ids never come back, and they expire three days after creation: a job
//!    of the day has two days left at least); it is polled from PENDING_GENERATION to ACTIVE,
//!    kept in memory while it has an hour left, and found again by its name after a restart;
//! 2. keyorch's HSM wraps the managed key for it ([`Hsm::wrap_for_transport`]): RSA-OAEP of
//!    an ephemeral AES-256 key, then AES-KWP of the key — Google's `CKM_RSA_AES_KEY_WRAP`
//!    format, with the raw key bytes of AES and HMAC keys and PKCS#8 of private keys;
//! 3. the crypto key `keyorch-<key id>` (the label) is created if absent: the purpose and
//!    version template of the key's algorithm (AES-256 → `GOOGLE_SYMMETRIC_ENCRYPTION`,
//!    HMAC-SHA256 → `HMAC_SHA256`, RSA → `RSA_SIGN_PKCS1_<bits>_SHA256`, EC P-256/P-384 →
//!    `EC_SIGN_P256_SHA256` / `EC_SIGN_P384_SHA384`), protection level HSM, `importOnly`,
//!    `skipInitialVersionCreation` and the label `managed-by=keyorch`;
//! 4. a version is imported into it; its resource name is the copy's remote id. The
//!    confirmation waits for PENDING_IMPORT to become ENABLED, compares the public key's
//!    check value for key pairs (SHA-256 of the DER SubjectPublicKeyInfo, first 8 bytes:
//!    keyorch's own), and makes the version primary for ENCRYPT_DECRYPT keys.
//!
//! A crypto key under the label without `managed-by=keyorch` is not keyorch's: it is named in
//! an error and never touched. Cloud KMS cannot delete a crypto key with imported versions,
//! so uninstall destroys every live version (ENABLED, DISABLED, PENDING_IMPORT: they become
//! DESTROY_SCHEDULED) and the key stays; a later install imports a new version into it.
//!
//! Idempotency: Cloud KMS cannot tell whether a version holds given symmetric material, so an
//! install into a key that already has a live (ENABLED or PENDING_IMPORT) version takes that
//! version as the copy (keyorch's install is the only writer under its label, and the label
//! carries the key id), instead of importing a second one after a crash between the import and
//! its record; the confirmation and status then judge it (key pairs by the public key's check
//! value, secret keys by the recorded remote id).

pub mod client;

use std::sync::Mutex;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::SubjectPublicKeyInfoDer;
use zeroize::Zeroizing;

use super::{InstallError, ManagedKey, ProbeMode, RemoteCopy, Target, TargetError};
use crate::domain::{parse_service_account_key, DomainError, GoogleCloudKmsConfig};
use crate::hsm::{Hsm, KeyKind, KeyRef, OaepHash, PublicKey};
use client::{
    unix_now, Algorithm, CryptoKey, GcpKmsClient, GcpKmsSettings, ImportMethod, KeyVersion,
    VersionState,
};

/// The IAM permissions keyorch's calls need on the key ring and what is in it (Cloud KMS
/// "Permissions and roles"; Cloud KMS Admin gives all but `viewPublicKey`, which Cloud KMS
/// Crypto Operator gives).
pub const REQUIRED_PERMISSIONS: [&str; 12] = [
    "cloudkms.keyRings.get",
    "cloudkms.cryptoKeys.get",
    "cloudkms.cryptoKeys.create",
    "cloudkms.cryptoKeys.update",
    "cloudkms.cryptoKeyVersions.create",
    "cloudkms.cryptoKeyVersions.get",
    "cloudkms.cryptoKeyVersions.list",
    "cloudkms.cryptoKeyVersions.destroy",
    "cloudkms.cryptoKeyVersions.viewPublicKey",
    "cloudkms.importJobs.create",
    "cloudkms.importJobs.get",
    "cloudkms.importJobs.useToImport",
];

/// Longest wait for an import job's wrapping key (PENDING_GENERATION → ACTIVE).
const IMPORT_JOB_WAIT: Duration = Duration::from_secs(60);
/// Longest wait for an imported version (PENDING_IMPORT → ENABLED or IMPORT_FAILED).
const IMPORT_WAIT: Duration = Duration::from_secs(60);
/// An import job is used while it has at least this long (seconds) before it expires.
const JOB_MARGIN: i64 = 3600;
/// How long (seconds) a job without an expire time is used: Google's three days, less a day.
const JOB_ASSUMED_LIFE: i64 = 2 * 86_400;

// Every key file the domain takes can be sealed.
const _: () = assert!(crate::domain::MAX_GOOGLE_KEY_FILE <= crate::hsm::MAX_SECRET_LEN);

/// A google_cloud_kms keystore's credential (a service account JSON key file), checked, as
/// the bytes to seal.
pub fn credential_bytes(
    field: &str,
    key_json: &SecretString,
) -> Result<Zeroizing<Vec<u8>>, DomainError> {
    parse_service_account_key(field, key_json.expose_secret())?;
    Ok(Zeroizing::new(key_json.expose_secret().as_bytes().to_vec()))
}

/// The algorithm a managed key of `kind` is imported as.
pub fn algorithm_for(kind: KeyKind) -> Result<Algorithm, TargetError> {
    Ok(match kind {
        KeyKind::Aes256 => Algorithm::GoogleSymmetricEncryption,
        KeyKind::HmacSha256 => Algorithm::HmacSha256,
        KeyKind::Rsa2048 => Algorithm::RsaSignPkcs1_2048Sha256,
        KeyKind::Rsa3072 => Algorithm::RsaSignPkcs1_3072Sha256,
        KeyKind::Rsa4096 => Algorithm::RsaSignPkcs1_4096Sha256,
        KeyKind::EcP256 => Algorithm::EcSignP256Sha256,
        KeyKind::EcP384 => Algorithm::EcSignP384Sha384,
        KeyKind::Aes128 | KeyKind::Aes192 => {
            return Err(TargetError::NotSupported(format!(
                "Cloud KMS imports AES keys as GOOGLE_SYMMETRIC_ENCRYPTION, which takes 256-bit keys only; this key is {kind:?}"
            )))
        }
    })
}

/// The check value of a public key as keyorch computes it: SHA-256 over the DER
/// SubjectPublicKeyInfo in keyorch's encoding, first 8 bytes, lowercase hex.
pub fn public_key_kcv(pem: &str) -> Result<String, TargetError> {
    let bad = || TargetError::Internal("Cloud KMS gave a public key that does not parse".into());
    let der = SubjectPublicKeyInfoDer::from_pem_slice(pem.as_bytes()).map_err(|_| bad())?;
    let spki = PublicKey::from_spki_der(der.as_ref())
        .and_then(|k| k.to_spki_der())
        .map_err(|_| bad())?;
    Ok(hex::encode(&Sha256::digest(&spki)[..8]))
}

/// The import job in use, as last seen ACTIVE.
struct CachedJob {
    name: String,
    method: ImportMethod,
    spki_der: Vec<u8>,
    /// Unix seconds after which it is not used.
    use_until: i64,
}

pub struct GcpKmsTarget {
    client: GcpKmsClient,
    /// One install at a time: the check for a live version and the import are one step.
    importing: Mutex<()>,
    job: Mutex<Option<CachedJob>>,
}

impl GcpKmsTarget {
    /// Opens the key ring of `config` with the service account key file `key_json`; sends
    /// nothing (the first call builds Google's client). Installs rustls's ring provider as the
    /// process default if none is.
    pub fn open(
        config: &GoogleCloudKmsConfig,
        key_json: SecretString,
    ) -> Result<GcpKmsTarget, TargetError> {
        let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
        GcpKmsTarget::with_settings(
            GcpKmsSettings::new(config.endpoint(), config.key_ring_name()),
            key_json,
        )
    }

    /// A target on a client with other settings (tests: short timeouts).
    pub fn with_settings(
        settings: GcpKmsSettings,
        key_json: SecretString,
    ) -> Result<GcpKmsTarget, TargetError> {
        Ok(GcpKmsTarget {
            client: GcpKmsClient::new(settings, &key_json)?,
            importing: Mutex::new(()),
            job: Mutex::new(None),
        })
    }

    /// The client (tests, diagnostics).
    pub fn client(&self) -> &GcpKmsClient {
        &self.client
    }

    /// The crypto key under `label`, if any.
    fn crypto_key(&self, label: &str) -> Result<Option<CryptoKey>, TargetError> {
        self.client.get_crypto_key(label)
    }

    /// Refuses a crypto key under `label` that keyorch did not make for a key of `algorithm`.
    fn check_ours(&self, key: &CryptoKey, algorithm: Option<Algorithm>) -> Result<(), TargetError> {
        let refuse = |why: String| {
            Err(TargetError::Internal(format!(
                "crypto key {} is not keyorch's copy of this key ({why}); it is left alone: remove it from keyorch's use in Cloud KMS or use another key ring",
                key.name
            )))
        };
        if !key.managed_by_keyorch() {
            return refuse(format!(
                "it lacks the label {}={}",
                client::MANAGED_BY_LABEL.0,
                client::MANAGED_BY_LABEL.1
            ));
        }
        if let Some(a) = algorithm {
            if key.purpose != a.purpose() || key.algorithm != a.api_name() {
                return refuse(format!(
                    "purpose {} / algorithm {}, not {} / {}",
                    key.purpose,
                    key.algorithm,
                    a.purpose(),
                    a.api_name()
                ));
            }
        }
        if !key.import_only || key.protection_level != "HSM" {
            return refuse(format!(
                "import only {}, protection level {}: keyorch makes import-only HSM keys",
                key.import_only, key.protection_level
            ));
        }
        Ok(())
    }

    /// The versions of `key` that hold material or will: newest first.
    fn live_versions(&self, key: &CryptoKey) -> Result<Vec<KeyVersion>, TargetError> {
        let mut live: Vec<KeyVersion> = self
            .client
            .list_versions(&key.name)?
            .into_iter()
            .filter(|v| v.state.is_live())
            .collect();
        live.sort_by_key(|v| std::cmp::Reverse(v.number()));
        Ok(live)
    }

    /// An ACTIVE import job of `method` with at least [`JOB_MARGIN`] left: the cached one,
    /// the day's one, or a new one.
    fn import_job(&self, method: ImportMethod) -> Result<CachedJob, TargetError> {
        let now = unix_now();
        let mut cached = self.job.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(j) = cached.as_ref() {
            if j.method == method && now < j.use_until {
                return Ok(CachedJob {
                    name: j.name.clone(),
                    method,
                    spki_der: j.spki_der.clone(),
                    use_until: j.use_until,
                });
            }
        }
        *cached = None;
        let (y, m, d) = civil_date(now);
        let day_id = format!("keyorch-{}-{y:04}{m:02}{d:02}", method.slug());
        let day_name = format!("{}/importJobs/{day_id}", self.client.key_ring());
        let usable = |j: &client::ImportJob| {
            j.method == Some(method)
                && j.hsm
                && !matches!(
                    j.state,
                    client::JobState::Expired | client::JobState::Other(_)
                )
                && j.expire_time.is_none_or(|e| e - now > JOB_MARGIN)
        };
        let job = match self.client.get_import_job(&day_name)? {
            Some(j) if usable(&j) => j,
            Some(_) => {
                // The day's job is of another kind or about to expire (made by someone else):
                // one of this second.
                let (hh, mm, ss) = ((now / 3600) % 24, (now / 60) % 60, now % 60);
                let id = format!("{day_id}-{hh:02}{mm:02}{ss:02}");
                let j = self.client.create_import_job(&id, method)?;
                if !usable(&j) {
                    return Err(TargetError::Internal(format!(
                        "import job {} is {} / {:?}, not a usable {} HSM job",
                        j.name,
                        j.method_name,
                        j.state,
                        method.api_name()
                    )));
                }
                j
            }
            None => {
                let j = self.client.create_import_job(&day_id, method)?;
                if !usable(&j) {
                    return Err(TargetError::Internal(format!(
                        "import job {} is {} / {:?}, not a usable {} HSM job",
                        j.name,
                        j.method_name,
                        j.state,
                        method.api_name()
                    )));
                }
                j
            }
        };
        let job = self
            .client
            .wait_import_job_active(&job.name, IMPORT_JOB_WAIT)?;
        let spki_der = job.public_key_der()?;
        let use_until = job
            .expire_time
            .map_or(now + JOB_ASSUMED_LIFE, |e| e - JOB_MARGIN);
        *cached = Some(CachedJob {
            name: job.name.clone(),
            method,
            spki_der: spki_der.clone(),
            use_until,
        });
        Ok(CachedJob {
            name: job.name,
            method,
            spki_der,
            use_until,
        })
    }

    fn forget_job(&self) {
        *self.job.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The check value of `version`'s public key.
    fn version_kcv(&self, version: &str) -> Result<String, TargetError> {
        public_key_kcv(&self.client.get_public_key(version)?)
    }

    fn import(
        &self,
        hsm: &Hsm,
        material: &KeyRef<'_>,
        label: &str,
    ) -> Result<String, InstallError> {
        let algorithm = algorithm_for(material.kind)?;
        let _one = self.importing.lock().unwrap_or_else(|p| p.into_inner());
        let existing = self.crypto_key(label)?;
        if let Some(k) = &existing {
            self.check_ours(k, Some(algorithm))?;
            if let Some(v) = self
                .live_versions(k)?
                .into_iter()
                .find(|v| matches!(v.state, VersionState::Enabled | VersionState::PendingImport))
            {
                return Ok(v.name);
            }
        }
        let (method, hash) = if hsm.supports_oaep_sha256() {
            (ImportMethod::RsaOaep3072Sha256Aes256, OaepHash::Sha256)
        } else {
            (ImportMethod::RsaOaep3072Sha1Aes256, OaepHash::Sha1)
        };
        let job = self.import_job(method)?;
        let wrapped = hsm.wrap_for_transport(material, &job.spki_der, hash)?;
        let key = match existing {
            Some(k) => k,
            None => {
                let k = self.client.create_crypto_key(label, algorithm)?;
                self.check_ours(&k, Some(algorithm))?;
                k
            }
        };
        match self
            .client
            .import_version(&key.name, algorithm, &job.name, &wrapped)
        {
            Ok(v) => Ok(v.name),
            Err(e) => {
                // The job may have expired or been refused: the next install looks again.
                self.forget_job();
                Err(e.into())
            }
        }
    }

    /// Whether `name` is a version of the crypto key `label`.
    fn is_version_of(&self, name: &str, label: &str) -> bool {
        name.strip_prefix(&format!(
            "{}/cryptoKeyVersions/",
            self.client.crypto_key_name(label)
        ))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    }
}

impl Target for GcpKmsTarget {
    fn probe(
        &self,
        _keystore_id: &str,
        mode: ProbeMode,
        _connected: bool,
    ) -> Result<Option<String>, TargetError> {
        self.client.get_key_ring()?;
        if mode == ProbeMode::Heartbeat {
            return Ok(None);
        }
        let denied = self.denied_permissions()?;
        if !denied.is_empty() {
            return Err(TargetError::PermissionDenied(denied));
        }
        Ok(None)
    }

    /// [`REQUIRED_PERMISSIONS`] the credentials lack on the key ring (`testIamPermissions`).
    fn denied_permissions(&self) -> Result<Vec<String>, TargetError> {
        let granted = self.client.test_iam_permissions(&REQUIRED_PERMISSIONS)?;
        Ok(REQUIRED_PERMISSIONS
            .iter()
            .filter(|p| !granted.iter().any(|g| g == *p))
            .map(|p| p.to_string())
            .collect())
    }

    fn install(
        &self,
        hsm: &Hsm,
        material: &KeyRef<'_>,
        label: &str,
    ) -> Result<String, InstallError> {
        self.import(hsm, material, label)
    }

    fn confirm_install(
        &self,
        key: &ManagedKey<'_>,
        label: &str,
        remote_id: &str,
    ) -> Result<(), InstallError> {
        let algorithm = algorithm_for(key.kind)?;
        let Some(crypto_key) = self.crypto_key(label)? else {
            return Err(InstallError::Mismatch(format!(
                "after the import, the crypto key {} is not there",
                self.client.crypto_key_name(label)
            )));
        };
        self.check_ours(&crypto_key, Some(algorithm))?;
        let name = if remote_id.is_empty() {
            match self.live_versions(&crypto_key)?.into_iter().next() {
                Some(v) => v.name,
                None => {
                    return Err(InstallError::Mismatch(format!(
                        "after the import, {} has no live version",
                        crypto_key.name
                    )))
                }
            }
        } else {
            remote_id.to_string()
        };
        if !self.is_version_of(&name, label) {
            return Err(InstallError::Mismatch(format!(
                "{name} is not a version of keyorch's crypto key {}",
                crypto_key.name
            )));
        }
        let v = self.client.wait_version_imported(&name, IMPORT_WAIT)?;
        match &v.state {
            VersionState::Enabled => {}
            VersionState::ImportFailed => {
                return Err(InstallError::Mismatch(format!(
                    "Cloud KMS could not import {name}: {}",
                    if v.import_failure_reason.is_empty() {
                        "no reason given"
                    } else {
                        &v.import_failure_reason
                    }
                )))
            }
            other => {
                return Err(InstallError::Mismatch(format!(
                    "after the import, {name} is {}, not ENABLED",
                    other.api_name()
                )))
            }
        }
        if !key.kind.is_symmetric() {
            let kcv = self.version_kcv(&name)?;
            if kcv != key.kcv {
                return Err(InstallError::Mismatch(format!(
                    "{name} holds a public key with check value {kcv}, not the managed key's {}",
                    key.kcv
                )));
            }
        }
        if algorithm.purpose() == "ENCRYPT_DECRYPT" && crypto_key.primary.as_deref() != Some(&name)
        {
            self.client.set_primary_version(&crypto_key.name, &name)?;
        }
        Ok(())
    }

    fn uninstall(&self, label: &str) -> Result<bool, TargetError> {
        let Some(key) = self.crypto_key(label)? else {
            return Ok(false);
        };
        self.check_ours(&key, None)?;
        let mut destroyed = false;
        for v in self.live_versions(&key)? {
            // An import in flight cannot be destroyed yet: let it finish first.
            let v = if v.state == VersionState::PendingImport {
                self.client.wait_version_imported(&v.name, IMPORT_WAIT)?
            } else {
                v
            };
            if matches!(v.state, VersionState::Enabled | VersionState::Disabled) {
                self.client.destroy_version(&v.name)?;
                destroyed = true;
            }
        }
        Ok(destroyed)
    }

    fn copy(&self, key: &ManagedKey<'_>, label: &str) -> Result<Option<RemoteCopy>, TargetError> {
        let Some(crypto_key) = self.crypto_key(label)? else {
            return Ok(None);
        };
        if let Err(e) = self.check_ours(&crypto_key, algorithm_for(key.kind).ok()) {
            return Ok(Some(RemoteCopy {
                same: false,
                enabled: false,
                kcv: String::new(),
                remote_id: crypto_key.name,
                detail: e.to_string(),
            }));
        }
        let live = self.live_versions(&crypto_key)?;
        let recorded = key.recorded_remote_id;
        let Some(v) = live
            .iter()
            .find(|v| !recorded.is_empty() && v.name == recorded)
            .or_else(|| live.first())
            .cloned()
        else {
            return Ok(None);
        };
        let enabled = v.state == VersionState::Enabled;
        let mut kcv = String::new();
        let detail = if live.len() > 1 {
            format!(
                "{} has {} live versions ({}); keyorch installs one",
                crypto_key.name,
                live.len(),
                live.iter()
                    .map(|v| format!("{} {}", v.number(), v.state.api_name()))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else if !key.kind.is_symmetric() && enabled {
            kcv = self.version_kcv(&v.name)?;
            if kcv == key.kcv {
                String::new()
            } else {
                format!(
                    "{} holds a public key with check value {kcv}, not the managed key's {}",
                    v.name, key.kcv
                )
            }
        } else if !recorded.is_empty() && recorded != v.name {
            format!(
                "{label} holds {}, not the installed copy {recorded}",
                v.name
            )
        } else {
            String::new()
        };
        Ok(Some(RemoteCopy {
            same: detail.is_empty(),
            enabled,
            kcv,
            remote_id: v.name,
            detail,
        }))
    }

    fn disables_on_deactivation(&self) -> bool {
        false
    }
}

/// The UTC calendar date of Unix time `t` (seconds): (year, month, day).
fn civil_date(t: i64) -> (i64, u32, u32) {
    // Howard Hinnant's days_from_civil, inverted.
    let z = t.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_calendar_days() {
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(951_782_400), (2000, 2, 29));
        assert_eq!(civil_date(1_709_251_199), (2024, 2, 29));
        assert_eq!(civil_date(1_735_689_600), (2025, 1, 1));
    }

    #[test]
    fn kinds_map_to_google_algorithms() {
        assert_eq!(
            algorithm_for(KeyKind::Aes256).unwrap().api_name(),
            "GOOGLE_SYMMETRIC_ENCRYPTION"
        );
        assert_eq!(algorithm_for(KeyKind::HmacSha256).unwrap().purpose(), "MAC");
        assert_eq!(
            algorithm_for(KeyKind::Rsa3072).unwrap().api_name(),
            "RSA_SIGN_PKCS1_3072_SHA256"
        );
        assert_eq!(
            algorithm_for(KeyKind::EcP384).unwrap().api_name(),
            "EC_SIGN_P384_SHA384"
        );
        assert!(matches!(
            algorithm_for(KeyKind::Aes128),
            Err(TargetError::NotSupported(m)) if m.contains("256")
        ));
    }

    #[test]
    fn credential_bytes_are_the_checked_key_file() {
        let bad = SecretString::from(r#"{"type":"authorized_user"}"#.to_string());
        assert!(credential_bytes("f", &bad).is_err());
    }
}
