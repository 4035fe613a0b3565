//! The blocking client of one Cloud KMS key ring: Google's own Rust client
//! (`google_cloud_kms_v1::client::KeyManagementService`, REST/JSON over HTTP/1.1) with the
//! service account credentials of `google_cloud_auth`, driven by a runtime of its own so that
//! the `google_cloud_kms` target can call it from its blocking threads.
//!
//! * Authentication: `google_cloud_auth::credentials::service_account` signs a **self-signed
//!   JWT** (RS256 with the key file's `private_key`, `kid` = `private_key_id`, `iss` = `sub` =
//!   `client_email`, `scope` = `https://www.googleapis.com/auth/cloud-platform`, one hour) and
//!   sends it as `authorization: Bearer`; no token endpoint (oauth2.googleapis.com) is ever
//!   called. The signature uses the process's default rustls `CryptoProvider`, which
//!   [`GcpKmsClient::new`] installs (ring; the crates are built without aws-lc).
//! * TLS: `google-cloud-gax-internal` builds its own `reqwest::Client` and takes no CA and no
//!   client of ours. That client verifies with `rustls-platform-verifier`, which on Linux
//!   trusts the roots of `rustls-native-certs`: the system's store, or **only** the PEM file
//!   named by `SSL_CERT_FILE` (and the directories of `SSL_CERT_DIR`) when either is set. They
//!   are read when the client is built (the first call of a [`GcpKmsClient`]). A private
//!   endpoint with its own CA is trusted by putting that CA into the system store or
//!   `SSL_CERT_FILE` of keyorchd. `http://` works for loopback endpoints (the domain refuses
//!   it for any other host).
//! * Retries: Google's AIP-194 policy (connect errors before the request is sent, and for
//!   idempotent calls I/O errors and UNAVAILABLE / 503), at most [`RETRY_ATTEMPTS`] attempts
//!   within [`GcpKmsSettings::retry_time`], exponential backoff from 100 ms to 1 s, each attempt
//!   at most [`GcpKmsSettings::attempt_timeout`], and the whole call cut at
//!   [`GcpKmsSettings::call_deadline`].
//!
//! Failures are classified into [`TargetError`]: 401 UNAUTHENTICATED and a key file that
//! cannot sign are `InvalidCredentials`; 403 PERMISSION_DENIED is `PermissionDenied` with the
//! IAM permission of the answer's `google.rpc.ErrorInfo` (`metadata.permission`) or else the
//! call's own (Google's names from "Permissions and roles" of the Cloud KMS docs); a missing
//! key ring is `TargetNotFound`; connect, DNS and TLS failures are `Network`; deadlines are
//! `TimedOut`; anything else is `Internal` with the RPC's name and the status. No message,
//! log line or `Debug` output holds the key file, its private key, a JWT or key material.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use google_cloud_gax::error::rpc::{Code, StatusDetails};
use google_cloud_gax::error::Error as GaxError;
use google_cloud_gax::exponential_backoff::ExponentialBackoffBuilder;
use google_cloud_gax::retry_policy::{Aip194Strict, RetryPolicyExt};
use google_cloud_kms_v1::client::KeyManagementService;
use google_cloud_kms_v1::model;
use google_cloud_kms_v1::model::crypto_key::CryptoKeyPurpose;
use google_cloud_kms_v1::model::crypto_key_version::{
    CryptoKeyVersionAlgorithm, CryptoKeyVersionState,
};
use google_cloud_kms_v1::model::import_job::{
    ImportJobState as GoogleJobState, ImportMethod as GoogleMethod,
};
use secrecy::{ExposeSecret, SecretString};
use tokio::runtime::Runtime;
use tokio::sync::OnceCell;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::SubjectPublicKeyInfoDer;
use zeroize::Zeroizing;

use crate::domain::parse_service_account_key;
use crate::targets::TargetError;

/// Longest time one attempt (one HTTP request) may take.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest time the retries of one call may take.
pub const RETRY_TIME: Duration = Duration::from_secs(30);
/// Longest time one call may take, its retries included.
pub const CALL_DEADLINE: Duration = Duration::from_secs(45);
/// Most attempts of one call.
pub const RETRY_ATTEMPTS: u32 = 3;
/// The label every crypto key keyorch creates carries, and its value.
pub const MANAGED_BY_LABEL: (&str, &str) = ("managed-by", "keyorch");
/// Longest piece of the service's own words repeated in a message.
const MAX_QUOTED: usize = 300;
/// Versions per page of a list, and most pages read.
const PAGE: i32 = 100;
const MAX_PAGES: usize = 100;
/// The RSA OID of an import job's wrapping key.
const RSA_ENCRYPTION: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// Where the key ring is, and how long calls may take.
#[derive(Debug, Clone)]
pub struct GcpKmsSettings {
    /// `https://host[:port]` (`http://` for a loopback fake), no path.
    pub endpoint: String,
    /// `projects/{project}/locations/{location}/keyRings/{key_ring}`.
    pub key_ring: String,
    pub attempt_timeout: Duration,
    pub retry_time: Duration,
    pub call_deadline: Duration,
}

impl GcpKmsSettings {
    /// The key ring at `endpoint` with the default limits.
    pub fn new(endpoint: impl Into<String>, key_ring: impl Into<String>) -> GcpKmsSettings {
        GcpKmsSettings {
            endpoint: endpoint.into(),
            key_ring: key_ring.into(),
            attempt_timeout: ATTEMPT_TIMEOUT,
            retry_time: RETRY_TIME,
            call_deadline: CALL_DEADLINE,
        }
    }

    /// Other limits (tests): each attempt, and the whole call.
    #[must_use]
    pub fn with_timeouts(mut self, attempt: Duration, deadline: Duration) -> GcpKmsSettings {
        self.attempt_timeout = attempt;
        self.retry_time = deadline;
        self.call_deadline = deadline;
        self
    }
}

/// The import methods keyorch wraps for: RSA-OAEP (SHA-1 or SHA-256, MGF1 with the same hash,
/// empty label) with a 3072-bit key of an ephemeral AES-256 key, then AES-KWP (RFC 5649) of
/// the key material — `CKM_RSA_AES_KEY_WRAP`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportMethod {
    RsaOaep3072Sha1Aes256,
    RsaOaep3072Sha256Aes256,
}

impl ImportMethod {
    /// The API's name.
    pub fn api_name(self) -> &'static str {
        match self {
            ImportMethod::RsaOaep3072Sha1Aes256 => "RSA_OAEP_3072_SHA1_AES_256",
            ImportMethod::RsaOaep3072Sha256Aes256 => "RSA_OAEP_3072_SHA256_AES_256",
        }
    }

    /// The API's name in lower case with '-': part of keyorch's import job ids.
    pub fn slug(self) -> String {
        self.api_name().to_ascii_lowercase().replace('_', "-")
    }

    fn google(self) -> GoogleMethod {
        match self {
            ImportMethod::RsaOaep3072Sha1Aes256 => GoogleMethod::RsaOaep3072Sha1Aes256,
            ImportMethod::RsaOaep3072Sha256Aes256 => GoogleMethod::RsaOaep3072Sha256Aes256,
        }
    }

    fn from_google(m: &GoogleMethod) -> Option<ImportMethod> {
        match m {
            GoogleMethod::RsaOaep3072Sha1Aes256 => Some(ImportMethod::RsaOaep3072Sha1Aes256),
            GoogleMethod::RsaOaep3072Sha256Aes256 => Some(ImportMethod::RsaOaep3072Sha256Aes256),
            _ => None,
        }
    }
}

/// The crypto key version algorithms keyorch imports, each with its key purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// AES-256-GCM, purpose ENCRYPT_DECRYPT.
    GoogleSymmetricEncryption,
    /// Purpose MAC.
    HmacSha256,
    /// Purpose ASYMMETRIC_SIGN.
    RsaSignPkcs1_2048Sha256,
    RsaSignPkcs1_3072Sha256,
    RsaSignPkcs1_4096Sha256,
    EcSignP256Sha256,
    EcSignP384Sha384,
}

impl Algorithm {
    /// The API's name.
    pub fn api_name(self) -> &'static str {
        match self {
            Algorithm::GoogleSymmetricEncryption => "GOOGLE_SYMMETRIC_ENCRYPTION",
            Algorithm::HmacSha256 => "HMAC_SHA256",
            Algorithm::RsaSignPkcs1_2048Sha256 => "RSA_SIGN_PKCS1_2048_SHA256",
            Algorithm::RsaSignPkcs1_3072Sha256 => "RSA_SIGN_PKCS1_3072_SHA256",
            Algorithm::RsaSignPkcs1_4096Sha256 => "RSA_SIGN_PKCS1_4096_SHA256",
            Algorithm::EcSignP256Sha256 => "EC_SIGN_P256_SHA256",
            Algorithm::EcSignP384Sha384 => "EC_SIGN_P384_SHA384",
        }
    }

    /// The key purpose's API name.
    pub fn purpose(self) -> &'static str {
        match self {
            Algorithm::GoogleSymmetricEncryption => "ENCRYPT_DECRYPT",
            Algorithm::HmacSha256 => "MAC",
            _ => "ASYMMETRIC_SIGN",
        }
    }

    fn google(self) -> CryptoKeyVersionAlgorithm {
        match self {
            Algorithm::GoogleSymmetricEncryption => {
                CryptoKeyVersionAlgorithm::GoogleSymmetricEncryption
            }
            Algorithm::HmacSha256 => CryptoKeyVersionAlgorithm::HmacSha256,
            Algorithm::RsaSignPkcs1_2048Sha256 => CryptoKeyVersionAlgorithm::RsaSignPkcs12048Sha256,
            Algorithm::RsaSignPkcs1_3072Sha256 => CryptoKeyVersionAlgorithm::RsaSignPkcs13072Sha256,
            Algorithm::RsaSignPkcs1_4096Sha256 => CryptoKeyVersionAlgorithm::RsaSignPkcs14096Sha256,
            Algorithm::EcSignP256Sha256 => CryptoKeyVersionAlgorithm::EcSignP256Sha256,
            Algorithm::EcSignP384Sha384 => CryptoKeyVersionAlgorithm::EcSignP384Sha384,
        }
    }

    fn google_purpose(self) -> CryptoKeyPurpose {
        match self {
            Algorithm::GoogleSymmetricEncryption => CryptoKeyPurpose::EncryptDecrypt,
            Algorithm::HmacSha256 => CryptoKeyPurpose::Mac,
            _ => CryptoKeyPurpose::AsymmetricSign,
        }
    }
}

/// An import job's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    PendingGeneration,
    Active,
    Expired,
    /// Another value, by its API name.
    Other(String),
}

/// An import job as the API shows it.
#[derive(Debug, Clone)]
pub struct ImportJob {
    pub name: String,
    /// None for a method keyorch does not use.
    pub method: Option<ImportMethod>,
    pub method_name: String,
    /// Protection level HSM.
    pub hsm: bool,
    pub state: JobState,
    /// Unix seconds; None until the service says.
    pub expire_time: Option<i64>,
    /// The wrapping key's PEM (`-----BEGIN PUBLIC KEY-----`), once ACTIVE; "" before.
    pub public_key_pem: String,
}

impl ImportJob {
    /// The wrapping key as DER SubjectPublicKeyInfo: an RSA key.
    pub fn public_key_der(&self) -> Result<Vec<u8>, TargetError> {
        use der::Decode as _;
        let bad = |why: &str| {
            TargetError::Internal(format!("the public key of import job {} {why}", self.name))
        };
        if self.public_key_pem.is_empty() {
            return Err(bad("is not there yet"));
        }
        let der = SubjectPublicKeyInfoDer::from_pem_slice(self.public_key_pem.as_bytes())
            .map_err(|_| bad("is not a PEM public key"))?;
        let spki = spki::SubjectPublicKeyInfoRef::from_der(der.as_ref())
            .map_err(|_| bad("is not DER SubjectPublicKeyInfo"))?;
        if spki.algorithm.oid != RSA_ENCRYPTION {
            return Err(bad(&format!("is not RSA ({})", spki.algorithm.oid)));
        }
        Ok(der.as_ref().to_vec())
    }
}

/// A crypto key as the API shows it.
#[derive(Debug, Clone)]
pub struct CryptoKey {
    pub name: String,
    /// The purpose's API name (`ENCRYPT_DECRYPT`, `MAC`, `ASYMMETRIC_SIGN`, ...).
    pub purpose: String,
    /// The version template's algorithm and protection level, by their API names.
    pub algorithm: String,
    pub protection_level: String,
    pub import_only: bool,
    pub labels: BTreeMap<String, String>,
    /// The primary version's name (ENCRYPT_DECRYPT keys), if any.
    pub primary: Option<String>,
}

impl CryptoKey {
    /// Whether the key carries keyorch's `managed-by=keyorch` label.
    pub fn managed_by_keyorch(&self) -> bool {
        self.labels.get(MANAGED_BY_LABEL.0).map(String::as_str) == Some(MANAGED_BY_LABEL.1)
    }
}

/// A crypto key version's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionState {
    PendingImport,
    Enabled,
    Disabled,
    DestroyScheduled,
    Destroyed,
    ImportFailed,
    /// Another value, by its API name.
    Other(String),
}

impl VersionState {
    /// Material there or on its way, usable now or after an enable: ENABLED, DISABLED or
    /// PENDING_IMPORT.
    pub fn is_live(&self) -> bool {
        matches!(
            self,
            VersionState::Enabled | VersionState::Disabled | VersionState::PendingImport
        )
    }

    /// The API name.
    pub fn api_name(&self) -> &str {
        match self {
            VersionState::PendingImport => "PENDING_IMPORT",
            VersionState::Enabled => "ENABLED",
            VersionState::Disabled => "DISABLED",
            VersionState::DestroyScheduled => "DESTROY_SCHEDULED",
            VersionState::Destroyed => "DESTROYED",
            VersionState::ImportFailed => "IMPORT_FAILED",
            VersionState::Other(s) => s,
        }
    }
}

/// A crypto key version as the API shows it.
#[derive(Debug, Clone)]
pub struct KeyVersion {
    /// `…/cryptoKeys/{id}/cryptoKeyVersions/{n}`.
    pub name: String,
    pub state: VersionState,
    pub algorithm: String,
    /// The import job the material came with ("" for generated material).
    pub import_job: String,
    /// Why an import failed (IMPORT_FAILED).
    pub import_failure_reason: String,
}

impl KeyVersion {
    /// The version number (the last path segment), 0 when it is no number.
    pub fn number(&self) -> u64 {
        self.name
            .rsplit('/')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

/// The RPCs this client makes, with the IAM permission each needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rpc {
    GetKeyRing,
    TestIamPermissions,
    CreateImportJob,
    GetImportJob,
    GetCryptoKey,
    CreateCryptoKey,
    UpdateCryptoKeyPrimaryVersion,
    ImportCryptoKeyVersion,
    GetCryptoKeyVersion,
    ListCryptoKeyVersions,
    DestroyCryptoKeyVersion,
    GetPublicKey,
}

impl Rpc {
    fn name(self) -> &'static str {
        match self {
            Rpc::GetKeyRing => "GetKeyRing",
            Rpc::TestIamPermissions => "TestIamPermissions",
            Rpc::CreateImportJob => "CreateImportJob",
            Rpc::GetImportJob => "GetImportJob",
            Rpc::GetCryptoKey => "GetCryptoKey",
            Rpc::CreateCryptoKey => "CreateCryptoKey",
            Rpc::UpdateCryptoKeyPrimaryVersion => "UpdateCryptoKeyPrimaryVersion",
            Rpc::ImportCryptoKeyVersion => "ImportCryptoKeyVersion",
            Rpc::GetCryptoKeyVersion => "GetCryptoKeyVersion",
            Rpc::ListCryptoKeyVersions => "ListCryptoKeyVersions",
            Rpc::DestroyCryptoKeyVersion => "DestroyCryptoKeyVersion",
            Rpc::GetPublicKey => "GetPublicKey",
        }
    }

    /// The permissions the call needs (Cloud KMS "Permissions and roles"); named when a
    /// refusal does not say which one it lacked.
    fn permissions(self) -> &'static [&'static str] {
        match self {
            Rpc::GetKeyRing => &["cloudkms.keyRings.get"],
            // testIamPermissions needs none.
            Rpc::TestIamPermissions => &[],
            Rpc::CreateImportJob => &["cloudkms.importJobs.create"],
            Rpc::GetImportJob => &["cloudkms.importJobs.get"],
            Rpc::GetCryptoKey => &["cloudkms.cryptoKeys.get"],
            Rpc::CreateCryptoKey => &["cloudkms.cryptoKeys.create"],
            Rpc::UpdateCryptoKeyPrimaryVersion => &["cloudkms.cryptoKeys.update"],
            Rpc::ImportCryptoKeyVersion => &[
                "cloudkms.cryptoKeyVersions.create",
                "cloudkms.importJobs.useToImport",
            ],
            Rpc::GetCryptoKeyVersion => &["cloudkms.cryptoKeyVersions.get"],
            Rpc::ListCryptoKeyVersions => &["cloudkms.cryptoKeyVersions.list"],
            Rpc::DestroyCryptoKeyVersion => &["cloudkms.cryptoKeyVersions.destroy"],
            Rpc::GetPublicKey => &["cloudkms.cryptoKeyVersions.viewPublicKey"],
        }
    }
}

/// The client of one key ring. Calls block (the caller is on a blocking thread, never in an
/// async context); several threads may call at once.
pub struct GcpKmsClient {
    /// Dropped with `shutdown_background`, so that a client may be dropped anywhere.
    runtime: Option<Runtime>,
    /// Google's client, built by the first call (in the runtime: the credentials' token
    /// cache spawns a task, and the TLS roots are read then).
    kms: OnceCell<KeyManagementService>,
    settings: GcpKmsSettings,
    key_json: SecretString,
    client_email: String,
    private_key_id: String,
    /// The key file's `universe_domain`, when it names one.
    universe_domain: Option<String>,
    /// Pieces of the key file that no message may repeat (the private key's lines).
    needles: Zeroizing<Vec<String>>,
}

impl fmt::Debug for GcpKmsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcpKmsClient")
            .field("endpoint", &self.settings.endpoint)
            .field("key_ring", &self.settings.key_ring)
            .field("client_email", &self.client_email)
            .field("private_key_id", &self.private_key_id)
            .finish_non_exhaustive()
    }
}

impl Drop for GcpKmsClient {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl GcpKmsClient {
    /// Checks the key file and the settings and starts the runtime; sends nothing. Installs
    /// rustls's ring provider as the process default if none is (Google's crates sign the JWT
    /// and reqwest does TLS with the default provider).
    ///
    /// Errors: `InvalidCredentials` for a key file that is not a service account key,
    /// `InvalidConfiguration` for an unusable endpoint or key ring name, `Internal` when the
    /// runtime cannot start.
    pub fn new(settings: GcpKmsSettings, key_json: &SecretString) -> Result<Self, TargetError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let info = parse_service_account_key("service_account_key_json", key_json.expose_secret())
            .map_err(|e| TargetError::InvalidCredentials(e.to_string()))?;
        let v: serde_json::Value = serde_json::from_str(key_json.expose_secret())
            .map_err(|_| TargetError::InvalidCredentials("the key file is not JSON".into()))?;
        let universe_domain = v
            .get("universe_domain")
            .and_then(serde_json::Value::as_str)
            .filter(|u| !u.is_empty())
            .map(str::to_string);
        let mut needles = Zeroizing::new(Vec::new());
        if let Some(pem) = v.get("private_key").and_then(serde_json::Value::as_str) {
            needles.extend(
                pem.lines()
                    .map(str::trim)
                    .filter(|l| l.len() >= 16 && !l.starts_with("-----"))
                    .map(str::to_string),
            );
        }
        drop(v);
        check_endpoint(&settings.endpoint)?;
        check_key_ring(&settings.key_ring)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| {
                TargetError::Internal(format!("cannot start the Cloud KMS client runtime: {e}"))
            })?;
        Ok(GcpKmsClient {
            runtime: Some(runtime),
            kms: OnceCell::new(),
            settings,
            key_json: key_json.clone(),
            client_email: info.client_email,
            private_key_id: info.private_key_id,
            universe_domain,
            needles,
        })
    }

    /// The key ring's resource name.
    pub fn key_ring(&self) -> &str {
        &self.settings.key_ring
    }

    /// The service account the key file belongs to.
    pub fn client_email(&self) -> &str {
        &self.client_email
    }

    /// The resource name of the crypto key `id` in the key ring.
    pub fn crypto_key_name(&self, id: &str) -> String {
        format!("{}/cryptoKeys/{id}", self.settings.key_ring)
    }

    // ----- key ring -----------------------------------------------------------------------

    /// `GetKeyRing` of the configured ring: the probe. A ring that is not there is
    /// `TargetNotFound`.
    pub fn get_key_ring(&self) -> Result<(), TargetError> {
        let ring = self.settings.key_ring.clone();
        self.run(Rpc::GetKeyRing, &ring, |kms| {
            kms.get_key_ring().set_name(ring.clone()).send()
        })
        .map(drop)
        .map_err(|e| match e {
            Failure::NotFound(what) => self.ring_missing(&what),
            f => f.into_target(),
        })
    }

    /// `TestIamPermissions` on the key ring: the subset of `permissions` the credentials hold
    /// there (Cloud KMS answers for the ring and the keys, versions and import jobs in it).
    pub fn test_iam_permissions(&self, permissions: &[&str]) -> Result<Vec<String>, TargetError> {
        let ring = self.settings.key_ring.clone();
        let asked: Vec<String> = permissions.iter().map(|p| p.to_string()).collect();
        let answer = self
            .run(Rpc::TestIamPermissions, &ring, |kms| {
                kms.test_iam_permissions()
                    .set_resource(ring.clone())
                    .set_permissions(asked.clone())
                    .send()
            })
            .map_err(|e| match e {
                Failure::NotFound(what) => self.ring_missing(&what),
                f => f.into_target(),
            })?;
        Ok(answer
            .permissions
            .into_iter()
            .filter(|p| permissions.contains(&p.as_str()))
            .collect())
    }

    // ----- import jobs --------------------------------------------------------------------

    /// `CreateImportJob` `id` with `method` at protection level HSM. An import job of that
    /// id already there (ALREADY_EXISTS: another keyorchd made it) is read and returned as it
    /// is, for the caller to judge.
    pub fn create_import_job(
        &self,
        id: &str,
        method: ImportMethod,
    ) -> Result<ImportJob, TargetError> {
        check_id("import job id", id)?;
        let ring = self.settings.key_ring.clone();
        let name = format!("{ring}/importJobs/{id}");
        let created = self.run(Rpc::CreateImportJob, &name, |kms| {
            kms.create_import_job()
                .set_parent(ring.clone())
                .set_import_job_id(id.to_string())
                .set_import_job(
                    model::ImportJob::new()
                        .set_import_method(method.google())
                        .set_protection_level(model::ProtectionLevel::Hsm),
                )
                .send()
        });
        match created {
            Ok(job) => Ok(import_job(job)),
            Err(Failure::AlreadyExists(_)) => self.get_import_job(&name)?.ok_or_else(|| {
                TargetError::Internal(format!(
                    "CreateImportJob {name}: ALREADY_EXISTS, but it cannot be read"
                ))
            }),
            Err(Failure::NotFound(what)) => Err(self.ring_missing(&what)),
            Err(f) => Err(f.into_target()),
        }
    }

    /// `GetImportJob`; None when the key ring has no such job.
    pub fn get_import_job(&self, name: &str) -> Result<Option<ImportJob>, TargetError> {
        let name = name.to_string();
        match self.run(Rpc::GetImportJob, &name, |kms| {
            kms.get_import_job().set_name(name.clone()).send()
        }) {
            Ok(job) => Ok(Some(import_job(job))),
            Err(Failure::NotFound(_)) => Ok(None),
            Err(f) => Err(f.into_target()),
        }
    }

    /// Polls `GetImportJob` until the job is ACTIVE (its wrapping key generated), at most
    /// `deadline`: PENDING_GENERATION past it is `TimedOut`, EXPIRED or a missing job
    /// `Internal`.
    pub fn wait_import_job_active(
        &self,
        name: &str,
        deadline: Duration,
    ) -> Result<ImportJob, TargetError> {
        let until = Instant::now() + deadline;
        let mut pause = Duration::from_millis(200);
        loop {
            let job = self.get_import_job(name)?.ok_or_else(|| {
                TargetError::Internal(format!("import job {name} is not in the key ring"))
            })?;
            match &job.state {
                JobState::Active => {
                    job.public_key_der()?;
                    return Ok(job);
                }
                JobState::PendingGeneration => {}
                JobState::Expired => {
                    return Err(TargetError::Internal(format!(
                        "import job {name} is EXPIRED"
                    )))
                }
                JobState::Other(s) => {
                    return Err(TargetError::Internal(format!(
                        "import job {name} is in state {s}, not ACTIVE"
                    )))
                }
            }
            if Instant::now() + pause > until {
                return Err(TargetError::TimedOut(format!(
                    "import job {name} is still PENDING_GENERATION after {}",
                    secs(deadline)
                )));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }

    // ----- crypto keys --------------------------------------------------------------------

    /// `GetCryptoKey` `id` of the key ring; None when there is none.
    pub fn get_crypto_key(&self, id: &str) -> Result<Option<CryptoKey>, TargetError> {
        check_id("crypto key id", id)?;
        let name = self.crypto_key_name(id);
        match self.run(Rpc::GetCryptoKey, &name, |kms| {
            kms.get_crypto_key().set_name(name.clone()).send()
        }) {
            Ok(k) => Ok(Some(crypto_key(k))),
            Err(Failure::NotFound(_)) => Ok(None),
            Err(f) => Err(f.into_target()),
        }
    }

    /// `CreateCryptoKey` `id` for imports only: `algorithm`'s purpose, version template
    /// `algorithm` at protection level HSM, `importOnly`, `skipInitialVersionCreation`, the
    /// label `managed-by=keyorch`. A key of that id already there (ALREADY_EXISTS) is read and
    /// returned as it is, for the caller to judge.
    pub fn create_crypto_key(
        &self,
        id: &str,
        algorithm: Algorithm,
    ) -> Result<CryptoKey, TargetError> {
        check_id("crypto key id", id)?;
        let ring = self.settings.key_ring.clone();
        let name = self.crypto_key_name(id);
        let created = self.run(Rpc::CreateCryptoKey, &name, |kms| {
            kms.create_crypto_key()
                .set_parent(ring.clone())
                .set_crypto_key_id(id.to_string())
                .set_skip_initial_version_creation(true)
                .set_crypto_key(
                    model::CryptoKey::new()
                        .set_purpose(algorithm.google_purpose())
                        .set_import_only(true)
                        .set_version_template(
                            model::CryptoKeyVersionTemplate::new()
                                .set_protection_level(model::ProtectionLevel::Hsm)
                                .set_algorithm(algorithm.google()),
                        )
                        .set_labels([MANAGED_BY_LABEL]),
                )
                .send()
        });
        match created {
            Ok(k) => Ok(crypto_key(k)),
            Err(Failure::AlreadyExists(_)) => self.get_crypto_key(id)?.ok_or_else(|| {
                TargetError::Internal(format!(
                    "CreateCryptoKey {name}: ALREADY_EXISTS, but it cannot be read"
                ))
            }),
            Err(Failure::NotFound(what)) => Err(self.ring_missing(&what)),
            Err(f) => Err(f.into_target()),
        }
    }

    /// `UpdateCryptoKeyPrimaryVersion`: makes `version` (a version of `crypto_key`) the
    /// key's primary, the one Encrypt uses.
    pub fn set_primary_version(&self, crypto_key: &str, version: &str) -> Result<(), TargetError> {
        let number = version.rsplit('/').next().unwrap_or_default().to_string();
        let key = crypto_key.to_string();
        self.run(Rpc::UpdateCryptoKeyPrimaryVersion, crypto_key, |kms| {
            kms.update_crypto_key_primary_version()
                .set_name(key.clone())
                .set_crypto_key_version_id(number.clone())
                .send()
        })
        .map(drop)
        .map_err(Failure::into_target)
    }

    // ----- versions -----------------------------------------------------------------------

    /// `ImportCryptoKeyVersion`: a new version of `crypto_key` (its resource name) from
    /// `wrapped_key` (the `CKM_RSA_AES_KEY_WRAP` bytes for `import_job`'s method).
    pub fn import_version(
        &self,
        crypto_key: &str,
        algorithm: Algorithm,
        import_job: &str,
        wrapped_key: &[u8],
    ) -> Result<KeyVersion, TargetError> {
        let key = crypto_key.to_string();
        let job = import_job.to_string();
        let wrapped = wrapped_key.to_vec();
        self.run(Rpc::ImportCryptoKeyVersion, crypto_key, |kms| {
            kms.import_crypto_key_version()
                .set_parent(key.clone())
                .set_algorithm(algorithm.google())
                .set_import_job(job.clone())
                .set_wrapped_key(wrapped.clone())
                .send()
        })
        .map(key_version)
        .map_err(Failure::into_target)
    }

    /// `GetCryptoKeyVersion`; None when there is no such version.
    pub fn get_version(&self, name: &str) -> Result<Option<KeyVersion>, TargetError> {
        let n = name.to_string();
        match self.run(Rpc::GetCryptoKeyVersion, name, |kms| {
            kms.get_crypto_key_version().set_name(n.clone()).send()
        }) {
            Ok(v) => Ok(Some(key_version(v))),
            Err(Failure::NotFound(_)) => Ok(None),
            Err(f) => Err(f.into_target()),
        }
    }

    /// Polls `GetCryptoKeyVersion` while the version is PENDING_IMPORT, at most `deadline`
    /// (`TimedOut` past it); returns it in the state it reached.
    pub fn wait_version_imported(
        &self,
        name: &str,
        deadline: Duration,
    ) -> Result<KeyVersion, TargetError> {
        let until = Instant::now() + deadline;
        let mut pause = Duration::from_millis(200);
        loop {
            let v = self.get_version(name)?.ok_or_else(|| {
                TargetError::Internal(format!("crypto key version {name} is not there"))
            })?;
            if v.state != VersionState::PendingImport {
                return Ok(v);
            }
            if Instant::now() + pause > until {
                return Err(TargetError::TimedOut(format!(
                    "crypto key version {name} is still PENDING_IMPORT after {}",
                    secs(deadline)
                )));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }

    /// `ListCryptoKeyVersions` of `crypto_key` (its resource name), every page, in the
    /// service's order; empty when the key is not there.
    pub fn list_versions(&self, crypto_key: &str) -> Result<Vec<KeyVersion>, TargetError> {
        let mut out = Vec::new();
        let mut token = String::new();
        for _ in 0..MAX_PAGES {
            let key = crypto_key.to_string();
            let t = token.clone();
            let page = match self.run(Rpc::ListCryptoKeyVersions, crypto_key, |kms| {
                kms.list_crypto_key_versions()
                    .set_parent(key.clone())
                    .set_page_size(PAGE)
                    .set_page_token(t.clone())
                    .send()
            }) {
                Ok(p) => p,
                Err(Failure::NotFound(_)) => return Ok(out),
                Err(f) => return Err(f.into_target()),
            };
            out.extend(page.crypto_key_versions.into_iter().map(key_version));
            if page.next_page_token.is_empty() {
                return Ok(out);
            }
            token = page.next_page_token;
        }
        Err(TargetError::Internal(format!(
            "{crypto_key} has more than {} versions",
            MAX_PAGES * PAGE as usize
        )))
    }

    /// `DestroyCryptoKeyVersion`: schedules the version's destruction (DESTROY_SCHEDULED,
    /// then DESTROYED after the key's scheduled duration). Returns the version as it is then.
    pub fn destroy_version(&self, name: &str) -> Result<KeyVersion, TargetError> {
        let n = name.to_string();
        self.run(Rpc::DestroyCryptoKeyVersion, name, |kms| {
            kms.destroy_crypto_key_version().set_name(n.clone()).send()
        })
        .map(key_version)
        .map_err(Failure::into_target)
    }

    /// `GetPublicKey` of an ENABLED asymmetric version: its PEM SubjectPublicKeyInfo.
    pub fn get_public_key(&self, version: &str) -> Result<String, TargetError> {
        let n = version.to_string();
        let pk = self
            .run(Rpc::GetPublicKey, version, |kms| {
                kms.get_public_key().set_name(n.clone()).send()
            })
            .map_err(Failure::into_target)?;
        if pk.pem.is_empty() {
            return Err(TargetError::Internal(format!(
                "GetPublicKey {version}: the answer holds no PEM"
            )));
        }
        Ok(pk.pem)
    }

    // ----- calls --------------------------------------------------------------------------

    /// Google's client, built once in the runtime.
    async fn kms(&self) -> Result<&KeyManagementService, TargetError> {
        self.kms
            .get_or_try_init(|| async {
                let key: serde_json::Value =
                    serde_json::from_str(self.key_json.expose_secret()).map_err(|_| {
                        TargetError::InvalidCredentials("the key file is not JSON".into())
                    })?;
                let credentials =
                    google_cloud_auth::credentials::service_account::Builder::new(key)
                        .build()
                        .map_err(|e| {
                            TargetError::InvalidCredentials(format!(
                                "the service account key file is not usable: {}",
                                self.quoted(&chain(&e))
                            ))
                        })?;
                let backoff = ExponentialBackoffBuilder::new()
                    .with_initial_delay(Duration::from_millis(100))
                    .with_maximum_delay(Duration::from_secs(1))
                    .build()
                    .map_err(|e| TargetError::Internal(format!("Cloud KMS backoff: {e}")))?;
                let mut builder = KeyManagementService::builder()
                    .with_endpoint(self.settings.endpoint.clone())
                    .with_credentials(credentials)
                    .with_retry_policy(
                        Aip194Strict
                            .with_attempt_limit(RETRY_ATTEMPTS)
                            .with_time_limit(self.settings.retry_time),
                    )
                    .with_backoff_policy(backoff)
                    .with_attempt_timeout(self.settings.attempt_timeout);
                if let Some(u) = &self.universe_domain {
                    builder = builder.with_universe_domain(u.clone());
                }
                builder.build().await.map_err(|e| {
                    TargetError::InvalidConfiguration(format!(
                        "cannot build the Cloud KMS client for {} (TLS roots: the system's, or SSL_CERT_FILE): {}",
                        self.settings.endpoint,
                        self.quoted(&chain(&e))
                    ))
                })
            })
            .await
    }

    /// One RPC on `resource` within the call deadline, its error classified.
    fn run<T, F, Fut>(&self, rpc: Rpc, resource: &str, call: F) -> Result<T, Failure>
    where
        F: FnOnce(&KeyManagementService) -> Fut,
        Fut: Future<Output = Result<T, GaxError>>,
    {
        let rt = self.runtime.as_ref().ok_or_else(|| {
            Failure::Target(TargetError::Internal(
                "the Cloud KMS client's runtime is gone".into(),
            ))
        })?;
        let deadline = self.settings.call_deadline;
        rt.block_on(async {
            let attempt = async {
                let kms = self.kms().await.map_err(Failure::Target)?;
                call(kms)
                    .await
                    .map_err(|e| self.classify(rpc, resource, &e))
            };
            match tokio::time::timeout(deadline, attempt).await {
                Ok(r) => r,
                Err(_) => Err(Failure::Target(TargetError::TimedOut(format!(
                    "{} {resource}: no answer from {} within {}",
                    rpc.name(),
                    self.settings.endpoint,
                    secs(deadline)
                )))),
            }
        })
    }

    fn ring_missing(&self, what: &str) -> TargetError {
        TargetError::TargetNotFound(format!(
            "key ring {} does not exist in Cloud KMS at {} ({what})",
            self.settings.key_ring, self.settings.endpoint
        ))
    }

    /// The service's or the transport's words, shortened, without control characters, the
    /// key file's private key or anything that looks like a JWT.
    fn quoted(&self, text: &str) -> String {
        let mut t = text.to_string();
        for n in self.needles.iter() {
            if t.contains(n.as_str()) {
                t = t.replace(n.as_str(), "[private key]");
            }
        }
        let t = t.replace(self.key_json.expose_secret(), "[key file]");
        let words: Vec<String> = t
            .split(' ')
            .map(|w| {
                if w.contains("eyJ") && w.matches('.').count() >= 2 {
                    "[token]".to_string()
                } else {
                    w.to_string()
                }
            })
            .collect();
        words
            .join(" ")
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(MAX_QUOTED)
            .collect()
    }

    /// An error of `rpc` on `resource`, classified.
    fn classify(&self, rpc: Rpc, resource: &str, e: &GaxError) -> Failure {
        let call = format!("{} {resource}", rpc.name());
        // Retries given up: the last attempt's error says why.
        if e.is_exhausted() {
            if let Some(inner) =
                std::error::Error::source(e).and_then(|s| s.downcast_ref::<GaxError>())
            {
                return self.classify(rpc, resource, inner);
            }
            return Failure::Target(TargetError::TimedOut(format!(
                "{call}: retries exhausted: {}",
                self.quoted(&chain(e))
            )));
        }
        if e.is_authentication() {
            return Failure::Target(TargetError::InvalidCredentials(format!(
                "{call}: the service account key cannot sign the request: {}",
                self.quoted(&chain(e))
            )));
        }
        if e.is_timeout() {
            return Failure::Target(TargetError::TimedOut(format!(
                "{call}: no answer from {} in time ({})",
                self.settings.endpoint,
                self.quoted(&compact(e))
            )));
        }
        if e.is_connect() || e.is_io() || (e.is_transport() && e.http_status_code().is_none()) {
            let what = match tls_cause(e) {
                Some(t) => format!("TLS with {} failed: {t}", self.settings.endpoint),
                None => format!("cannot reach {}: {}", self.settings.endpoint, compact(e)),
            };
            return Failure::Target(TargetError::Network(format!(
                "{call}: {}",
                self.quoted(&what)
            )));
        }
        if e.is_deserialization() {
            return Failure::Target(TargetError::Internal(format!(
                "{call}: the answer of {} is not Cloud KMS's: {}",
                self.settings.endpoint,
                self.quoted(&chain(e))
            )));
        }
        if e.is_binding() || e.is_serialization() {
            return Failure::Target(TargetError::Internal(format!(
                "{call}: cannot make the request: {}",
                self.quoted(&chain(e))
            )));
        }
        let http = e.http_status_code();
        let Some(status) = e.status() else {
            // An error answer that is not Google's JSON (a proxy, another server).
            let what = format!(
                "{call}: {} answered HTTP {}{}",
                self.settings.endpoint,
                http.map_or_else(|| "?".to_string(), |c| c.to_string()),
                e.http_payload()
                    .map(|p| format!(": {}", self.quoted(&String::from_utf8_lossy(p))))
                    .unwrap_or_default()
            );
            return Failure::Target(match http {
                Some(401) => TargetError::InvalidCredentials(what),
                Some(403) => TargetError::PermissionDenied(
                    rpc.permissions().iter().map(|p| p.to_string()).collect(),
                ),
                Some(404) | Some(405) => TargetError::InvalidConfiguration(format!(
                    "{what} (is the endpoint Cloud KMS's, e.g. https://cloudkms.googleapis.com?)"
                )),
                Some(502) | Some(503) => TargetError::Network(what),
                Some(504) => TargetError::TimedOut(what),
                _ => TargetError::Internal(what),
            });
        };
        let mut reason = String::new();
        let mut permission = String::new();
        for d in &status.details {
            if let StatusDetails::ErrorInfo(info) = d {
                if reason.is_empty() {
                    reason = info.reason.clone();
                }
                if let Some(p) = info.metadata.get("permission") {
                    permission = p.clone();
                }
            }
        }
        if permission.is_empty() {
            permission = permission_in(&status.message).unwrap_or_default();
        }
        let code = match (&status.code, http) {
            (Code::Unknown, Some(401)) => Code::Unauthenticated,
            (Code::Unknown, Some(403)) => Code::PermissionDenied,
            (Code::Unknown, Some(404)) => Code::NotFound,
            (Code::Unknown, Some(409)) => Code::AlreadyExists,
            (Code::Unknown, Some(503)) => Code::Unavailable,
            (Code::Unknown, Some(504)) => Code::DeadlineExceeded,
            (c, _) => *c,
        };
        let what = format!(
            "{call}: {}{}{}: {}",
            code.name(),
            http.map(|h| format!(" (HTTP {h})")).unwrap_or_default(),
            if reason.is_empty() {
                String::new()
            } else {
                format!(" {}", self.quoted(&reason))
            },
            self.quoted(&status.message)
        );
        Failure::Target(match code {
            Code::Unauthenticated => TargetError::InvalidCredentials(format!(
                "Cloud KMS refused the service account {}'s key {}: {what}",
                self.client_email, self.private_key_id
            )),
            Code::PermissionDenied
                if matches!(reason.as_str(), "SERVICE_DISABLED" | "BILLING_DISABLED") =>
            {
                TargetError::InvalidConfiguration(format!(
                    "the Cloud KMS API cannot be used in the key ring's project: {what}"
                ))
            }
            Code::PermissionDenied => TargetError::PermissionDenied(if permission.is_empty() {
                rpc.permissions().iter().map(|p| p.to_string()).collect()
            } else {
                vec![permission]
            }),
            Code::NotFound => return Failure::NotFound(what),
            Code::AlreadyExists => return Failure::AlreadyExists(what),
            Code::Unavailable => TargetError::Network(what),
            Code::DeadlineExceeded => TargetError::TimedOut(what),
            _ => TargetError::Internal(what),
        })
    }
}

/// A classified failure, with NOT_FOUND and ALREADY_EXISTS kept apart for the calls that
/// expect them.
enum Failure {
    NotFound(String),
    AlreadyExists(String),
    Target(TargetError),
}

impl Failure {
    fn into_target(self) -> TargetError {
        match self {
            Failure::NotFound(what) | Failure::AlreadyExists(what) => TargetError::Internal(what),
            Failure::Target(t) => t,
        }
    }
}

// ----- conversions ---------------------------------------------------------------------------

fn import_job(j: model::ImportJob) -> ImportJob {
    ImportJob {
        method: ImportMethod::from_google(&j.import_method),
        method_name: j.import_method.name().unwrap_or("UNKNOWN").to_string(),
        hsm: j.protection_level == model::ProtectionLevel::Hsm,
        state: match &j.state {
            GoogleJobState::PendingGeneration => JobState::PendingGeneration,
            GoogleJobState::Active => JobState::Active,
            GoogleJobState::Expired => JobState::Expired,
            other => JobState::Other(other.name().unwrap_or("UNKNOWN").to_string()),
        },
        expire_time: j.expire_time.as_ref().map(|t| t.seconds()),
        public_key_pem: j.public_key.map(|k| k.pem).unwrap_or_default(),
        name: j.name,
    }
}

fn crypto_key(k: model::CryptoKey) -> CryptoKey {
    let (algorithm, protection_level) = match &k.version_template {
        Some(t) => (
            t.algorithm.name().unwrap_or("UNKNOWN").to_string(),
            t.protection_level.name().unwrap_or("UNKNOWN").to_string(),
        ),
        None => (String::new(), String::new()),
    };
    CryptoKey {
        purpose: k.purpose.name().unwrap_or("UNKNOWN").to_string(),
        algorithm,
        protection_level,
        import_only: k.import_only,
        labels: k.labels.into_iter().collect(),
        primary: k.primary.map(|p| p.name).filter(|n| !n.is_empty()),
        name: k.name,
    }
}

fn key_version(v: model::CryptoKeyVersion) -> KeyVersion {
    KeyVersion {
        state: match &v.state {
            CryptoKeyVersionState::PendingImport => VersionState::PendingImport,
            CryptoKeyVersionState::Enabled => VersionState::Enabled,
            CryptoKeyVersionState::Disabled => VersionState::Disabled,
            CryptoKeyVersionState::DestroyScheduled => VersionState::DestroyScheduled,
            CryptoKeyVersionState::Destroyed => VersionState::Destroyed,
            CryptoKeyVersionState::ImportFailed => VersionState::ImportFailed,
            other => VersionState::Other(other.name().unwrap_or("UNKNOWN").to_string()),
        },
        algorithm: v.algorithm.name().unwrap_or("UNKNOWN").to_string(),
        import_job: v.import_job,
        import_failure_reason: v.import_failure_reason,
        name: v.name,
    }
}

// ----- helpers -------------------------------------------------------------------------------

/// The permission a refusal's message names: `Permission 'cloudkms.x.y' denied on …`.
fn permission_in(message: &str) -> Option<String> {
    let rest = &message[message.find("Permission '")? + "Permission '".len()..];
    let p = &rest[..rest.find('\'')?];
    (p.starts_with("cloudkms.") && !p.contains(' ')).then(|| p.to_string())
}

/// A Cloud KMS resource id: 1 to 63 of A-Z a-z 0-9 _ -.
fn check_id(what: &str, id: &str) -> Result<(), TargetError> {
    if id.is_empty()
        || id.len() > 63
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(TargetError::Internal(format!(
            "{what} {id:?} is not 1 to 63 of A-Z a-z 0-9 _ -"
        )));
    }
    Ok(())
}

fn check_endpoint(url: &str) -> Result<(), TargetError> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| {
            TargetError::InvalidConfiguration(format!(
                "the Cloud KMS endpoint {url:?} is not https://host[:port]"
            ))
        })?;
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return Err(TargetError::InvalidConfiguration(format!(
            "the Cloud KMS endpoint {url:?} is not scheme://host[:port] without a path"
        )));
    }
    Ok(())
}

fn check_key_ring(name: &str) -> Result<(), TargetError> {
    let parts: Vec<&str> = name.split('/').collect();
    let ok = parts.len() == 6
        && parts[0] == "projects"
        && parts[2] == "locations"
        && parts[4] == "keyRings"
        && [parts[1], parts[3], parts[5]]
            .iter()
            .all(|p| !p.is_empty() && !p.contains(['?', '#', ' ', ':']));
    if ok {
        Ok(())
    } else {
        Err(TargetError::InvalidConfiguration(format!(
            "{name:?} is not a key ring name (projects/P/locations/L/keyRings/R)"
        )))
    }
}

fn secs(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// `error: source: ...`, each message once.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let m = s.to_string();
        if !out.contains(&m) {
            out.push_str(": ");
            out.push_str(&m);
        }
        source = s.source();
    }
    out
}

/// [`chain`] without the request URLs reqwest repeats (`error sending request for url (…)`)
/// and gax's prefixes, so that the cause fits a message.
fn compact(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = chain(e);
    while let Some(start) = text.find("error sending request for url (") {
        let end = text[start..]
            .find("): ")
            .map_or(text.len(), |i| start + i + 3);
        text.replace_range(start..end, "");
    }
    for prefix in [
        "cannot connect to endpoint: ",
        "the request exceeded the request deadline ",
    ] {
        text = text.replace(prefix, "");
    }
    text
}

/// The words of a TLS (rustls) error among `e`'s sources.
fn tls_cause(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<rustls::Error>() {
            return Some(t.to_string());
        }
        // io::Error's source() skips the error it wraps (which may be another io::Error).
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                let inner: &(dyn std::error::Error + 'static) = inner;
                if let Some(t) = tls_cause(inner) {
                    return Some(t);
                }
            }
        }
        cur = err.source();
    }
    None
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_are_read_from_messages() {
        assert_eq!(
            permission_in("Permission 'cloudkms.cryptoKeys.create' denied on resource 'projects/p/locations/l/keyRings/r' (or it may not exist).").as_deref(),
            Some("cloudkms.cryptoKeys.create")
        );
        assert_eq!(permission_in("Permission denied"), None);
        assert_eq!(permission_in("Permission 'x y' denied"), None);
    }

    #[test]
    fn ids_endpoints_and_rings_are_checked() {
        assert!(check_id("k", "keyorch-2f8c7a52-4b1e-4d0a-9c3e-5a6b7c8d9e0f").is_ok());
        assert!(check_id("k", "").is_err() && check_id("k", "a/b").is_err());
        assert!(check_id("k", &"a".repeat(64)).is_err());
        assert!(check_endpoint("https://cloudkms.googleapis.com").is_ok());
        assert!(check_endpoint("http://127.0.0.1:8080").is_ok());
        assert!(check_endpoint("https://h/v1").is_err() && check_endpoint("ftp://h").is_err());
        assert!(check_key_ring("projects/p/locations/global/keyRings/r").is_ok());
        assert!(check_key_ring("projects/p/locations/global/keyRings/").is_err());
        assert!(check_key_ring("projects/p/keyRings/r").is_err());
    }

    #[test]
    fn methods_and_algorithms_have_the_apis_names() {
        assert_eq!(
            ImportMethod::RsaOaep3072Sha1Aes256.slug(),
            "rsa-oaep-3072-sha1-aes-256"
        );
        assert_eq!(
            GoogleMethod::from(ImportMethod::RsaOaep3072Sha256Aes256.api_name()),
            ImportMethod::RsaOaep3072Sha256Aes256.google()
        );
        for a in [
            Algorithm::GoogleSymmetricEncryption,
            Algorithm::HmacSha256,
            Algorithm::RsaSignPkcs1_2048Sha256,
            Algorithm::RsaSignPkcs1_3072Sha256,
            Algorithm::RsaSignPkcs1_4096Sha256,
            Algorithm::EcSignP256Sha256,
            Algorithm::EcSignP384Sha384,
        ] {
            assert_eq!(a.google().name(), Some(a.api_name()));
            assert_eq!(a.google_purpose().name(), Some(a.purpose()));
        }
    }
}
