//! The blocking client of one Azure key vault's keys (Key Vault's data plane) with a service
//! principal's client secret: what the `azure_key_vault` target calls on its blocking threads.
//!
//! Built on Microsoft's crates, not on hand-written HTTP:
//!
//! * `azure_identity::ClientSecretCredential` gets Entra ID access tokens with the
//!   client-credentials grant (`POST {authority_host}/{tenant_id}/oauth2/v2.0/token`), and
//!   caches them;
//! * `azure_security_keyvault_keys::KeyClient` calls the vault (api-version 2025-07-01). It
//!   learns the token's scope from the vault itself: the first request of a client goes out
//!   without `Authorization` and without its body; the vault answers `401` with
//!   `WWW-Authenticate: Bearer authorization="…", resource="https://vault.azure.net"` (or
//!   `scope="…/.default"`); the client asks Entra ID for `{resource}/.default` (the challenge's
//!   `authorization`, the tenant, is not used: the credential's own tenant and authority are)
//!   and sends the request again with the token and the body. The SDK checks that the
//!   challenge's resource host is a parent domain of the vault's host
//!   (`verify_challenge_resource`), so that a vault URL that is not Azure's cannot obtain a
//!   token for Key Vault; keyorch keeps that check on except for a vault on a loopback
//!   address (127.0.0.0/8, ::1, localhost), where it cannot hold (an IP address has no parent
//!   domain) and where only a local relay or a fake can be;
//! * both on one transport built here: reqwest (HTTP/1.1) over rustls with the ring provider
//!   and the keystore's CA (`ca_cert_pem`, for both the vault and Entra ID) or the system's
//!   roots, no proxy, no redirects, connecting within [`CONNECT_TIMEOUT`]; the SDK's retry
//!   policy is bounded to [`SDK_RETRIES`] quick retries (connection failures, 408, 429, 5xx),
//!   and every call, retries and token included, has [`CALL_DEADLINE`].
//!
//! The crates are async: the client owns a one-worker tokio runtime (reqwest runs its
//! connections as tasks on it) and blocks in it (`Runtime::block_on`, as the IBM client does);
//! callers are on blocking threads, never in an async context.
//!
//! Soft delete is asynchronous in Azure: a purge may answer `409 Conflict` for a while after
//! the delete, an import or create right after a purge, and a recover right after a delete,
//! too. Those 409s are retried [`CONFLICT_ATTEMPTS`] times, [`CONFLICT_PAUSE`] apart.
//!
//! Failures are classified into [`TargetError`]: Entra ID refusing the client (400/401, e.g.
//! `AADSTS7000215` wrong secret, `AADSTS700016` unknown application, `AADSTS90002` unknown
//! tenant) is `InvalidCredentials` with Entra's code; the vault's `401` too; `403` is
//! `PermissionDenied` with the access-policy key permission the call needs (`get`, `list`,
//! `create`, `import`, `update`, `delete`, `recover`, `purge`, `backup`, `restore`: the names
//! of `az keyvault set-policy --key-permissions`; RBAC's data actions are
//! `Microsoft.KeyVault/vaults/keys/<name>/action` and friends); connection, DNS and TLS
//! failures are `Network` (TLS ones say so, and that it is the certificate or the CA); the
//! deadline is `TimedOut`; anything else is `Internal` with the operation and the status. No
//! message, log line or `Debug` output holds the client secret, an access token or key
//! material.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::Secret;
use azure_core::error::ErrorKind;
use azure_core::http::{ClientOptions, ExponentialRetryOptions, RetryOptions, Transport, Url};
use azure_identity::{ClientSecretCredential, ClientSecretCredentialOptions};
use azure_security_keyvault_keys::models::{
    CreateKeyParameters, CurveName, DeletedKey, ImportKeyParameters, JsonWebKey, Key,
    KeyAttributes, KeyClientListKeyPropertiesOptions, KeyOperation, KeyType, RestoreKeyParameters,
    UpdateKeyPropertiesParameters,
};
use azure_security_keyvault_keys::{KeyClient, KeyClientOptions};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::runtime::Runtime;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_stream::StreamExt as _;
use zeroize::Zeroizing;

use crate::hsm::{Curve, PublicKey};
use crate::targets::TargetError;

/// Longest wait for a connection (DNS, TCP and the TLS handshake).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest time one call may take: the SDK's retries and the token request included.
pub const CALL_DEADLINE: Duration = Duration::from_secs(30);
/// Retries of the SDK's own policy (connection failures, 408, 429, 500, 502, 503, 504), the
/// first 100 ms (and up to 255 ms of jitter) after the failure, then doubling.
pub const SDK_RETRIES: u32 = 2;
/// Tries of a call Azure answers `409 Conflict` while a soft delete, purge or recover is in
/// progress (and of a look for a deleted or recovered key that does not show yet): with
/// [`CONFLICT_PAUSE`], some 20 s.
pub const CONFLICT_ATTEMPTS: u32 = 40;
/// Pause between those tries.
pub const CONFLICT_PAUSE: Duration = Duration::from_millis(500);
/// The key name the permission probes use: keyorch never makes it, so every probe finds
/// nothing to change.
pub const PROBE_KEY: &str = "keyorch-permission-probe";
/// The seed's ten key permissions, in its order, by their access-policy names.
pub const PERMISSIONS: [&str; 10] = [
    "create", "import", "update", "list", "delete", "get", "recover", "purge", "backup", "restore",
];
/// Longest piece of the service's own words repeated in a message.
const MAX_QUOTED: usize = 300;
/// Largest page [`AzureKvClient::list_keys`] asks for (Key Vault's `maxresults` limit).
const MAX_PAGE: u32 = 25;
const LOOPBACK_HOSTS: [&str; 2] = ["localhost", "localhost."];

/// Where the vault and its principal's Entra ID are, and what to trust on the way.
#[derive(Clone)]
pub struct AzureKvSettings {
    /// `https://host[:port]` of the vault (no path).
    pub vault_url: String,
    /// `https://host[:port]` of Entra ID's login endpoint.
    pub authority_host: String,
    /// The directory (tenant) of the service principal.
    pub tenant_id: String,
    /// The application (client) id of the service principal.
    pub client_id: String,
    /// PEM certificates trusted for the vault and for Entra ID instead of the system's roots.
    pub ca_cert_pem: Option<String>,
}

impl fmt::Debug for AzureKvSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureKvSettings")
            .field("vault_url", &self.vault_url)
            .field("authority_host", &self.authority_host)
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("ca_cert_pem", &self.ca_cert_pem.is_some())
            .finish()
    }
}

/// The key permission a call needs, and the operation's name in Key Vault's REST API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Get,
    GetDeleted,
    List,
    Create,
    Import,
    Update,
    Delete,
    Recover,
    Purge,
    Backup,
    Restore,
}

impl Op {
    /// The access-policy key permission (Key Vault's REST reference: "This operation requires
    /// the keys/get permission", …; getDeletedKey needs keys/get).
    fn permission(self) -> &'static str {
        match self {
            Op::Get | Op::GetDeleted => "get",
            Op::List => "list",
            Op::Create => "create",
            Op::Import => "import",
            Op::Update => "update",
            Op::Delete => "delete",
            Op::Recover => "recover",
            Op::Purge => "purge",
            Op::Backup => "backup",
            Op::Restore => "restore",
        }
    }

    /// The REST operation's name.
    fn name(self) -> &'static str {
        match self {
            Op::Get => "getKey",
            Op::GetDeleted => "getDeletedKey",
            Op::List => "getKeys",
            Op::Create => "createKey",
            Op::Import => "importKey",
            Op::Update => "updateKey",
            Op::Delete => "deleteKey",
            Op::Recover => "recoverDeletedKey",
            Op::Purge => "purgeDeletedKey",
            Op::Backup => "backupKey",
            Op::Restore => "restoreKey",
        }
    }
}

/// A key (its latest version) as the vault shows it: identity, public JWK, attributes, tags.
#[derive(Clone, PartialEq, Eq)]
pub struct AzureKey {
    /// The versioned key identifier, `https://{vault}/keys/{name}/{version}`.
    pub kid: String,
    pub name: String,
    pub version: String,
    /// `RSA-HSM`, `EC-HSM`, `RSA`, `EC`, `oct`, `oct-HSM`.
    pub kty: String,
    /// `P-256`, `P-384`, … for EC keys.
    pub crv: Option<String>,
    /// RSA modulus and public exponent, big-endian.
    pub n: Vec<u8>,
    pub e: Vec<u8>,
    /// EC point coordinates, big-endian.
    pub x: Vec<u8>,
    pub y: Vec<u8>,
    pub enabled: bool,
    pub key_ops: Vec<String>,
    pub tags: BTreeMap<String, String>,
    /// The vault manages the key's lifetime (a certificate's key).
    pub managed: bool,
}

impl fmt::Debug for AzureKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureKey")
            .field("kid", &self.kid)
            .field("kty", &self.kty)
            .field("crv", &self.crv)
            .field("bits", &self.rsa_bits())
            .field("enabled", &self.enabled)
            .field("key_ops", &self.key_ops)
            .field("tags", &self.tags)
            .field("managed", &self.managed)
            .finish_non_exhaustive()
    }
}

impl AzureKey {
    pub fn is_rsa(&self) -> bool {
        matches!(self.kty.as_str(), "RSA" | "RSA-HSM")
    }

    pub fn is_ec(&self) -> bool {
        matches!(self.kty.as_str(), "EC" | "EC-HSM")
    }

    /// Bits of the RSA modulus; 0 for other keys.
    pub fn rsa_bits(&self) -> usize {
        if self.is_rsa() && !self.n.is_empty() {
            crate::hsm::modulus_bits(&self.n)
        } else {
            0
        }
    }

    /// The public key, for RSA keys and EC keys on P-256 or P-384.
    pub(crate) fn public_key(&self) -> Result<PublicKey, String> {
        if self.is_rsa() {
            if self.n.is_empty() || self.e.is_empty() {
                return Err(format!("the RSA key {} has no n or e", self.kid));
            }
            return Ok(PublicKey::rsa(&self.n, &self.e));
        }
        if self.is_ec() {
            let curve = match self.crv.as_deref() {
                Some("P-256") => Curve::P256,
                Some("P-384") => Curve::P384,
                other => {
                    return Err(format!(
                        "the EC key {} is on curve {}, not P-256 or P-384",
                        self.kid,
                        other.unwrap_or("(none)")
                    ))
                }
            };
            let len = curve.field_len();
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(0x04);
            for coordinate in [&self.x, &self.y] {
                let c = strip_zeros(coordinate);
                if c.len() > len || coordinate.is_empty() {
                    return Err(format!(
                        "the EC key {} has a coordinate that is not on {}",
                        self.kid,
                        self.crv.as_deref().unwrap_or("")
                    ));
                }
                point.extend(std::iter::repeat_n(0, len - c.len()));
                point.extend_from_slice(c);
            }
            return Ok(PublicKey::Ec { curve, point });
        }
        Err(format!(
            "the key {} is a {} key, which has no public key",
            self.kid, self.kty
        ))
    }

    /// The DER SubjectPublicKeyInfo of the key's public JWK (RSA, EC P-256/P-384).
    pub fn spki_der(&self) -> Result<Vec<u8>, TargetError> {
        self.public_key()
            .map_err(TargetError::Internal)?
            .to_spki_der()
            .map_err(|e| TargetError::Internal(format!("{}: {e}", self.kid)))
    }

    /// keyorch's check value of the key: the first 8 bytes of SHA-256 over its DER SPKI,
    /// lowercase hex (what keyorch's HSM computes for its RSA and EC keys).
    pub fn check_value(&self) -> Result<String, TargetError> {
        let spki = self.spki_der()?;
        Ok(hex::encode(&Sha256::digest(&spki)[..8]))
    }

    /// The tag `name`'s value.
    pub fn tag(&self, name: &str) -> Option<&str> {
        self.tags.get(name).map(String::as_str)
    }
}

/// A soft-deleted key: the key as it was, and how it may be recovered or purged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeletedAzureKey {
    pub key: AzureKey,
    /// `https://{vault}/deletedkeys/{name}`.
    pub recovery_id: Option<String>,
    /// The vault's deletion recovery level (`Recoverable+Purgeable`, `Recoverable`, …; empty
    /// when not given).
    pub recovery_level: String,
}

impl DeletedAzureKey {
    /// Whether a purge may remove it: the recovery level has `Purgeable` (not so with purge
    /// protection), or is unknown.
    pub fn purgeable(&self) -> bool {
        self.recovery_level.is_empty() || self.recovery_level.contains("Purgeable")
    }
}

/// One key of a listing (no JWK there).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyItem {
    /// The key's identifier without version.
    pub kid: String,
    pub name: String,
    pub enabled: bool,
    pub managed: bool,
    pub tags: BTreeMap<String, String>,
}

/// A failed call: its classification, and the vault's status and error code where it
/// answered.
struct Failure {
    status: Option<u16>,
    code: String,
    /// The failure was Entra ID's (the token request), not the vault's.
    entra: bool,
    error: TargetError,
}

impl From<Failure> for TargetError {
    fn from(f: Failure) -> TargetError {
        f.error
    }
}

/// What an SDK error's chain tells about the failure.
#[derive(Default)]
struct Traits {
    /// The credential failed (Entra ID, not the vault).
    credential: bool,
    /// The first HTTP answer in the chain: status, error code, message, inner error code.
    http: Option<(u16, String, String, String)>,
    connection: bool,
    io: bool,
    timeout: bool,
    tls: Option<String>,
}

/// The client of one vault's keys. Calls block (the caller is on a blocking thread, never in
/// an async context); several threads may call at once.
pub struct AzureKvClient {
    /// Dropped with `shutdown_background`, so that a client may be dropped anywhere.
    runtime: Option<Runtime>,
    /// The vault client; made anew (with a new credential, so a new token) when the vault
    /// refuses a token the credential still holds.
    keys: Mutex<Arc<KeyClient>>,
    /// The one transport of every credential and vault client.
    transport: Transport,
    settings: AzureKvSettings,
    secret: SecretString,
    connect_timeout: Duration,
    call_deadline: Duration,
    conflict_attempts: u32,
    conflict_pause: Duration,
}

impl fmt::Debug for AzureKvClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureKvClient")
            .field("vault_url", &self.settings.vault_url)
            .field("authority_host", &self.settings.authority_host)
            .field("tenant_id", &self.settings.tenant_id)
            .field("client_id", &self.settings.client_id)
            .field("connect_timeout", &self.connect_timeout)
            .field("call_deadline", &self.call_deadline)
            .finish_non_exhaustive()
    }
}

impl Drop for AzureKvClient {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl AzureKvClient {
    /// Checks the settings and builds the transport, the credential, the vault client and
    /// the runtime. Sends nothing: the first call meets the vault's challenge and logs in.
    ///
    /// Errors: `InvalidCredentials` for an empty secret, `InvalidConfiguration` for a vault
    /// URL, authority, tenant, client or CA that cannot be used, `Internal` when the runtime
    /// or the HTTP client cannot start.
    pub fn new(settings: AzureKvSettings, secret: SecretString) -> Result<Self, TargetError> {
        Self::build(settings, secret, CONNECT_TIMEOUT, CALL_DEADLINE)
    }

    /// Other limits than [`CONNECT_TIMEOUT`] and [`CALL_DEADLINE`] (tests): builds the
    /// transport again.
    pub fn with_timeouts(self, connect: Duration, deadline: Duration) -> Result<Self, TargetError> {
        let mut c = Self::build(
            self.settings.clone(),
            self.secret.clone(),
            connect,
            deadline,
        )?;
        c.conflict_attempts = self.conflict_attempts;
        c.conflict_pause = self.conflict_pause;
        Ok(c)
    }

    /// Other bounds than [`CONFLICT_ATTEMPTS`] and [`CONFLICT_PAUSE`] for 409s (tests).
    #[must_use]
    pub fn with_conflict_retries(mut self, attempts: u32, pause: Duration) -> Self {
        self.conflict_attempts = attempts.max(1);
        self.conflict_pause = pause;
        self
    }

    fn build(
        settings: AzureKvSettings,
        secret: SecretString,
        connect: Duration,
        deadline: Duration,
    ) -> Result<Self, TargetError> {
        let bad =
            |field: &str, why: String| TargetError::InvalidConfiguration(format!("{field} {why}"));
        if secret.expose_secret().is_empty() {
            return Err(TargetError::InvalidCredentials(
                "the client secret is empty".into(),
            ));
        }
        let vault = https_url("vault_url", &settings.vault_url)?;
        https_url("authority_host", &settings.authority_host)?;
        for (field, value) in [
            ("tenant_id", &settings.tenant_id),
            ("client_id", &settings.client_id),
        ] {
            if value.is_empty()
                || value.len() > 128
                || !value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            {
                return Err(bad(
                    field,
                    format!("{value:?} is not a GUID or a domain name"),
                ));
            }
        }
        let tls = tls_config(settings.ca_cert_pem.as_deref())?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(connect)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .https_only(true)
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| TargetError::Internal(format!("cannot build the HTTP client: {e}")))?;
        let transport = Transport::new(Arc::new(http));
        let keys = make_keys(&settings, &secret, &transport, is_loopback(&vault))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("keyorch-azure-kv")
            .enable_all()
            .build()
            .map_err(|e| {
                TargetError::Internal(format!(
                    "cannot start the Azure Key Vault client runtime: {e}"
                ))
            })?;
        Ok(AzureKvClient {
            runtime: Some(runtime),
            keys: Mutex::new(Arc::new(keys)),
            transport,
            settings,
            secret,
            connect_timeout: connect,
            call_deadline: deadline,
            conflict_attempts: CONFLICT_ATTEMPTS,
            conflict_pause: CONFLICT_PAUSE,
        })
    }

    /// The vault's URL, as configured.
    pub fn vault_url(&self) -> &str {
        &self.settings.vault_url
    }

    // ----- keys -------------------------------------------------------------------------

    /// The latest version of the key `name` (`GET /keys/{name}`); None when the vault has no
    /// live key of that name (404 KeyNotFound).
    pub fn get_key(&self, name: &str) -> Result<Option<AzureKey>, TargetError> {
        key_name(name)?;
        let got = self.run(Op::Get, name, |keys| async move {
            keys.get_key(name, None).await?.into_model()
        });
        match got {
            Ok(k) => Ok(Some(self.key_from(Op::Get, name, k)?)),
            Err(f) if not_found(&f) => Ok(None),
            Err(f) => Err(f.error),
        }
    }

    /// Creates the RSA-HSM 3072 key `name` that may only import (`key_ops` `["import"]`,
    /// tag `keyorch=import-kek`): the key-exchange key of Azure's BYOK
    /// (`POST /keys/{name}/create`).
    pub fn create_import_kek(&self, name: &str) -> Result<AzureKey, TargetError> {
        key_name(name)?;
        let made = self.retrying_conflicts(|| {
            let params = CreateKeyParameters {
                kty: Some(KeyType::RsaHsm),
                key_size: Some(3072),
                key_ops: Some(vec![KeyOperation::Import]),
                key_attributes: Some(KeyAttributes {
                    enabled: Some(true),
                    ..Default::default()
                }),
                tags: Some(
                    [("keyorch".to_string(), "import-kek".to_string())]
                        .into_iter()
                        .collect(),
                ),
                ..Default::default()
            };
            self.run(Op::Create, name, |keys| {
                let params = params.clone();
                async move {
                    let body = params.try_into()?;
                    keys.create_key(name, body, None).await?.into_model()
                }
            })
        })?;
        self.key_from(Op::Create, name, made)
    }

    /// Imports a key wrapped with Azure's BYOK (`PUT /keys/{name}`): `kty` `RSA-HSM` or
    /// `EC-HSM` (with `crv`), `byok` the bytes of the `.byok` JSON (the SDK base64url-encodes
    /// them as the JWK's `key_hsm`), enabled, with `key_ops` and `tags`. A key of that name
    /// gets a new version (callers look first).
    pub fn import_key(
        &self,
        name: &str,
        kty: &str,
        crv: Option<&str>,
        byok: &[u8],
        key_ops: &[&str],
        tags: &[(&str, &str)],
    ) -> Result<AzureKey, TargetError> {
        key_name(name)?;
        let (kty, crv) = match (kty, crv) {
            ("RSA-HSM", None) => (KeyType::RsaHsm, None),
            ("EC-HSM", Some(c @ ("P-256" | "P-384" | "P-521"))) => {
                (KeyType::EcHsm, Some(c.parse::<CurveName>().unwrap_or(CurveName::P256)))
            }
            _ => {
                return Err(TargetError::Internal(format!(
                    "import_key: kty {kty:?} with crv {crv:?} is not RSA-HSM, or EC-HSM on P-256, P-384 or P-521"
                )))
            }
        };
        let made = self.retrying_conflicts(|| {
            let params = ImportKeyParameters {
                key: Some(JsonWebKey {
                    kty: Some(kty.clone()),
                    crv: crv.clone(),
                    key_ops: Some(key_ops.iter().map(|o| o.to_string()).collect()),
                    t: Some(byok.to_vec()),
                    ..Default::default()
                }),
                key_attributes: Some(KeyAttributes {
                    enabled: Some(true),
                    ..Default::default()
                }),
                tags: Some(
                    tags.iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            };
            self.run(Op::Import, name, |keys| {
                let params = params.clone();
                async move {
                    let body = params.try_into()?;
                    keys.import_key(name, body, None).await?.into_model()
                }
            })
        })?;
        self.key_from(Op::Import, name, made)
    }

    /// Enables or disables the key `name`'s latest version (`PATCH /keys/{name}`); None when
    /// there is no such key.
    pub fn set_enabled(&self, name: &str, enabled: bool) -> Result<Option<AzureKey>, TargetError> {
        key_name(name)?;
        let params = UpdateKeyPropertiesParameters {
            key_attributes: Some(KeyAttributes {
                enabled: Some(enabled),
                ..Default::default()
            }),
            ..Default::default()
        };
        let got = self.run(Op::Update, name, |keys| {
            let params = params.clone();
            async move {
                let body = params.try_into()?;
                keys.update_key_properties(name, body, None)
                    .await?
                    .into_model()
            }
        });
        match got {
            Ok(k) => Ok(Some(self.key_from(Op::Update, name, k)?)),
            Err(f) if not_found(&f) => Ok(None),
            Err(f) => Err(f.error),
        }
    }

    /// Deletes the key `name`, every version (`DELETE /keys/{name}`): soft-deleted where the
    /// vault has soft delete. None when there was no live key of that name.
    pub fn delete_key(&self, name: &str) -> Result<Option<DeletedAzureKey>, TargetError> {
        key_name(name)?;
        let got = self.run(Op::Delete, name, |keys| async move {
            keys.delete_key(name, None).await?.into_model()
        });
        match got {
            Ok(d) => Ok(Some(self.deleted_from(Op::Delete, name, d)?)),
            Err(f) if not_found(&f) => Ok(None),
            Err(f) => Err(f.error),
        }
    }

    /// The soft-deleted key `name` (`GET /deletedkeys/{name}`); None when there is none.
    pub fn get_deleted_key(&self, name: &str) -> Result<Option<DeletedAzureKey>, TargetError> {
        key_name(name)?;
        let got = self.run(Op::GetDeleted, name, |keys| async move {
            keys.get_deleted_key(name, None).await?.into_model()
        });
        match got {
            Ok(d) => Ok(Some(self.deleted_from(Op::GetDeleted, name, d)?)),
            Err(f) if not_found(&f) => Ok(None),
            Err(f) => Err(f.error),
        }
    }

    /// Purges the soft-deleted key `name` for good (`DELETE /deletedkeys/{name}`); false when
    /// there is no deleted key of that name. A 409 (the delete still in progress) is retried.
    pub fn purge_deleted_key(&self, name: &str) -> Result<bool, TargetError> {
        key_name(name)?;
        let got = self.retrying_conflicts(|| {
            self.run(Op::Purge, name, |keys| async move {
                keys.purge_deleted_key(name, None).await.map(drop)
            })
        });
        match got {
            Ok(()) => Ok(true),
            Err(f) if not_found(&f) => Ok(false),
            Err(f) => Err(f.error),
        }
    }

    /// [`AzureKvClient::purge_deleted_key`] right after a delete: the deleted key may not be
    /// listed yet (404) for a moment, so a 404 is retried too, as long as a 409 would be;
    /// false when it never shows.
    pub fn purge_after_delete(&self, name: &str) -> Result<bool, TargetError> {
        for attempt in 1..=self.conflict_attempts {
            if self.purge_deleted_key(name)? {
                return Ok(true);
            }
            if attempt < self.conflict_attempts {
                std::thread::sleep(self.conflict_pause);
            }
        }
        Ok(false)
    }

    /// Recovers the soft-deleted key `name` (`POST /deletedkeys/{name}/recover`); None when
    /// there is no deleted key of that name. A 409 is retried. The recovered key may take a
    /// moment to show in [`AzureKvClient::get_key`]: see [`AzureKvClient::wait_for_key`].
    pub fn recover_deleted_key(&self, name: &str) -> Result<Option<AzureKey>, TargetError> {
        key_name(name)?;
        let got = self.retrying_conflicts(|| {
            self.run(Op::Recover, name, |keys| async move {
                keys.recover_deleted_key(name, None).await?.into_model()
            })
        });
        match got {
            Ok(k) => Ok(Some(self.key_from(Op::Recover, name, k)?)),
            Err(f) if not_found(&f) => Ok(None),
            Err(f) => Err(f.error),
        }
    }

    /// The key `name`, waiting (as long as for a 409) until it shows after a recover.
    pub fn wait_for_key(&self, name: &str) -> Result<Option<AzureKey>, TargetError> {
        for attempt in 1..=self.conflict_attempts {
            if let Some(k) = self.get_key(name)? {
                return Ok(Some(k));
            }
            if attempt < self.conflict_attempts {
                std::thread::sleep(self.conflict_pause);
            }
        }
        Ok(None)
    }

    /// The first page of the vault's keys (`GET /keys?maxresults=`), at most `max` (1 to
    /// 25) of them.
    pub fn list_keys(&self, max: u32) -> Result<Vec<KeyItem>, TargetError> {
        if !(1..=MAX_PAGE).contains(&max) {
            return Err(TargetError::Internal(format!(
                "list_keys: max {max} is not 1 to {MAX_PAGE}"
            )));
        }
        let page = self
            .run(Op::List, "", |keys| async move {
                let pager = keys.list_key_properties(Some(KeyClientListKeyPropertiesOptions {
                    maxresults: Some(max as i32),
                    ..Default::default()
                }))?;
                let mut pages = Box::pin(pager.into_pages());
                match pages.next().await {
                    Some(page) => Ok(Some(page?.into_model()?)),
                    None => Ok(None),
                }
            })
            .map_err(|f| f.error)?;
        let Some(page) = page else {
            return Ok(Vec::new());
        };
        page.value
            .into_iter()
            .take(max as usize)
            .map(|p| {
                let kid = p.kid.unwrap_or_default();
                let name = split_kid(&kid).map(|(n, _)| n).unwrap_or_default();
                let attributes = p.attributes.unwrap_or_default();
                Ok(KeyItem {
                    name,
                    kid,
                    enabled: attributes.enabled.unwrap_or(true),
                    managed: p.managed.unwrap_or(false),
                    tags: p.tags.unwrap_or_default().into_iter().collect(),
                })
            })
            .collect()
    }

    /// Which of the ten key permissions ([`PERMISSIONS`]) the principal lacks, changing
    /// nothing: each operation is called on [`PROBE_KEY`], which never exists, or with a body
    /// the vault refuses. Key Vault authorizes a call before it looks for the key or checks
    /// the body, so 403 means denied and 404 or 400 (or success, for a listing) allowed.
    pub fn denied_permissions(&self) -> Result<Vec<String>, TargetError> {
        let mut denied = Vec::new();
        for permission in PERMISSIONS {
            let probe = self.probe(permission);
            match probe {
                Ok(()) => {}
                Err(f) if matches!(f.status, Some(400 | 404 | 409)) => {}
                Err(Failure {
                    error: TargetError::PermissionDenied(_),
                    ..
                }) => denied.push(permission.to_string()),
                Err(f) => return Err(f.error),
            }
        }
        Ok(denied)
    }

    /// One permission's probe.
    fn probe(&self, permission: &str) -> Result<(), Failure> {
        let name = PROBE_KEY;
        match permission {
            "list" => self.list_keys(1).map(drop).map_err(|error| Failure {
                status: None,
                code: String::new(),
                entra: false,
                error,
            }),
            "get" => self.run(Op::Get, name, |keys| async move {
                keys.get_key(name, None).await.map(drop)
            }),
            // A key type that does not exist: nothing can be created.
            "create" => self.run(Op::Create, name, |keys| async move {
                let params = CreateKeyParameters {
                    kty: Some(KeyType::UnknownValue(PROBE_KEY.to_string())),
                    ..Default::default()
                };
                keys.create_key(name, params.try_into()?, None)
                    .await
                    .map(drop)
            }),
            // No key at all: nothing can be imported.
            "import" => self.run(Op::Import, name, |keys| async move {
                let params = ImportKeyParameters::default();
                keys.import_key(name, params.try_into()?, None)
                    .await
                    .map(drop)
            }),
            "update" => self.run(Op::Update, name, |keys| async move {
                let params = UpdateKeyPropertiesParameters::default();
                keys.update_key_properties(name, params.try_into()?, None)
                    .await
                    .map(drop)
            }),
            "delete" => self.run(Op::Delete, name, |keys| async move {
                keys.delete_key(name, None).await.map(drop)
            }),
            "recover" => self.run(Op::Recover, name, |keys| async move {
                keys.recover_deleted_key(name, None).await.map(drop)
            }),
            "purge" => self.run(Op::Purge, name, |keys| async move {
                keys.purge_deleted_key(name, None).await.map(drop)
            }),
            "backup" => self.run(Op::Backup, name, |keys| async move {
                keys.backup_key(name, None).await.map(drop)
            }),
            // A backup blob that is none.
            "restore" => self.run(Op::Restore, name, |keys| async move {
                let params = RestoreKeyParameters {
                    key_backup: Some(PROBE_KEY.as_bytes().to_vec()),
                };
                keys.restore_key(params.try_into()?, None).await.map(drop)
            }),
            other => Err(Failure {
                status: None,
                code: String::new(),
                entra: false,
                error: TargetError::Internal(format!("no probe for permission {other:?}")),
            }),
        }
    }

    // ----- calls ------------------------------------------------------------------------

    /// Runs `call` while Azure answers 409, a bounded number of times.
    fn retrying_conflicts<T>(
        &self,
        mut call: impl FnMut() -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        let mut attempt = 1;
        loop {
            match call() {
                Err(f) if f.status == Some(409) && attempt < self.conflict_attempts => {
                    tracing::debug!(attempt, code = %f.code, "Key Vault answered 409 Conflict; retrying");
                    attempt += 1;
                    std::thread::sleep(self.conflict_pause);
                }
                other => return other,
            }
        }
    }

    /// One SDK call of `op` on the key `name` (`call` makes it on a vault client), within the
    /// call deadline. When the vault refuses the token (401) that the credential had cached,
    /// the call is made once more on a new vault client and credential, hence with a new
    /// token (the SDK's credential keeps a token until five minutes before it expires, even
    /// one the vault refused).
    fn run<T, F, Fut>(&self, op: Op, name: &str, call: F) -> Result<T, Failure>
    where
        F: Fn(Arc<KeyClient>) -> Fut,
        Fut: Future<Output = azure_core::Result<T>>,
    {
        match self.once(op, name, call(self.keys())) {
            Err(f) if f.status == Some(401) && !f.entra => {
                tracing::debug!(code = %f.code, "the vault refused the access token; logging in again");
                let vault =
                    https_url("vault_url", &self.settings.vault_url).map_err(|error| Failure {
                        status: None,
                        code: String::new(),
                        entra: false,
                        error,
                    })?;
                let fresh = make_keys(
                    &self.settings,
                    &self.secret,
                    &self.transport,
                    is_loopback(&vault),
                )
                .map_err(|error| Failure {
                    status: None,
                    code: String::new(),
                    entra: false,
                    error,
                })?;
                *self.keys.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(fresh);
                self.once(op, name, call(self.keys()))
            }
            other => other,
        }
    }

    /// The current vault client.
    fn keys(&self) -> Arc<KeyClient> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// One try of a call, within the call deadline.
    fn once<T>(
        &self,
        op: Op,
        name: &str,
        call: impl Future<Output = azure_core::Result<T>>,
    ) -> Result<T, Failure> {
        let what = self.what(op, name);
        let Some(rt) = self.runtime.as_ref() else {
            return Err(Failure {
                status: None,
                code: String::new(),
                entra: false,
                error: TargetError::Internal("the client's runtime is gone".into()),
            });
        };
        let deadline = self.call_deadline;
        match rt.block_on(async { tokio::time::timeout(deadline, call).await }) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.classify(op, &what, &e)),
            Err(_) => Err(Failure {
                status: None,
                code: String::new(),
                entra: false,
                error: TargetError::TimedOut(format!(
                    "{what}: no answer within {}",
                    secs(deadline)
                )),
            }),
        }
    }

    /// `Key Vault {operation} {name} at {vault}`, for messages.
    fn what(&self, op: Op, name: &str) -> String {
        if name.is_empty() {
            format!("Key Vault {} at {}", op.name(), self.settings.vault_url)
        } else {
            format!(
                "Key Vault {} {name} at {}",
                op.name(),
                self.settings.vault_url
            )
        }
    }

    fn key_from(&self, op: Op, name: &str, k: Key) -> Result<AzureKey, TargetError> {
        key_from_parts(k.key, k.attributes, k.tags, k.managed)
            .map_err(|why| TargetError::Internal(format!("{} answered {why}", self.what(op, name))))
    }

    fn deleted_from(
        &self,
        op: Op,
        name: &str,
        d: DeletedKey,
    ) -> Result<DeletedAzureKey, TargetError> {
        let recovery_level = d
            .attributes
            .as_ref()
            .and_then(|a| a.recovery_level.as_ref())
            .map(|l| l.as_ref().to_string())
            .unwrap_or_default();
        let key = key_from_parts(d.key, d.attributes, d.tags, d.managed).map_err(|why| {
            TargetError::Internal(format!("{} answered {why}", self.what(op, name)))
        })?;
        Ok(DeletedAzureKey {
            key,
            recovery_id: d.recovery_id,
            recovery_level,
        })
    }

    // ----- errors -----------------------------------------------------------------------

    /// Service words, shortened, without control characters or the client secret.
    fn quoted(&self, text: &str) -> String {
        quote(&self.secret, text)
    }

    /// An SDK error of `op`, classified.
    fn classify(&self, op: Op, what: &str, e: &azure_core::Error) -> Failure {
        let t = traits(e);
        let chain = self.quoted(&chain(e));
        let (status, code) = match &t.http {
            Some((s, c, _, _)) => (Some(*s), c.clone()),
            None => (None, String::new()),
        };
        let fail = |error: TargetError| Failure {
            status,
            code: code.clone(),
            entra: t.credential,
            error,
        };
        let authority = &self.settings.authority_host;
        let tenant = &self.settings.tenant_id;
        let client = &self.settings.client_id;
        if t.credential {
            // The token request to Entra ID failed.
            let entra =
                format!("Microsoft Entra ID at {authority} (tenant {tenant}, client {client})");
            if let Some((s, c, message, _)) = &t.http {
                let codes = if c.is_empty() {
                    String::new()
                } else {
                    c.split(',')
                        .map(|n| format!(" AADSTS{}", self.quoted(n.trim())))
                        .collect::<String>()
                };
                let said = format!(
                    "{what}: {entra} answered {s}{codes}: {}",
                    self.quoted(message)
                );
                return fail(match s {
                    400 | 401 | 403 => TargetError::InvalidCredentials(said),
                    404 | 405 => TargetError::InvalidConfiguration(format!(
                        "{said} (is authority_host Entra ID's login endpoint, e.g. https://login.microsoftonline.com?)"
                    )),
                    429 | 500 | 502 | 503 => TargetError::Network(said),
                    504 => TargetError::TimedOut(said),
                    _ => TargetError::Internal(said),
                });
            }
            if t.timeout {
                return fail(TargetError::TimedOut(format!(
                    "{what}: {entra} did not answer in time: {chain}"
                )));
            }
            if let Some(tls) = &t.tls {
                return fail(TargetError::Network(format!(
                    "{what}: TLS with {entra} failed (its certificate or the CA, ca_cert_pem): {}",
                    self.quoted(tls)
                )));
            }
            if t.connection || t.io {
                return fail(TargetError::Network(format!(
                    "{what}: cannot reach {entra}: {chain}"
                )));
            }
            return fail(TargetError::Internal(format!(
                "{what}: {entra} gave no token (is authority_host Entra ID's login endpoint?): {chain}"
            )));
        }
        if let Some((s, c, message, inner)) = &t.http {
            let mut said = format!("{what}: the vault answered {s}");
            if !c.is_empty() {
                said.push(' ');
                said.push_str(&self.quoted(c));
            }
            if !inner.is_empty() {
                said.push_str(&format!(" ({})", self.quoted(inner)));
            }
            if !message.is_empty() {
                said.push_str(": ");
                said.push_str(&self.quoted(message));
            }
            return fail(match s {
                401 => TargetError::InvalidCredentials(format!(
                    "{said} (the vault refused the access token of client {client} in tenant {tenant})"
                )),
                403 if inner == "ForbiddenByFirewall" => TargetError::Network(said),
                403 => TargetError::PermissionDenied(vec![op.permission().to_string()]),
                404 | 405 if c.is_empty() => TargetError::InvalidConfiguration(format!(
                    "{said} (is vault_url a key vault, e.g. https://<name>.vault.azure.net?)"
                )),
                429 | 502 | 503 => TargetError::Network(said),
                504 => TargetError::TimedOut(said),
                _ => TargetError::Internal(said),
            });
        }
        if chain.contains("challenge") {
            return fail(TargetError::InvalidConfiguration(format!(
                "{what}: the vault's authentication challenge is not Key Vault's for this URL (is vault_url a key vault?): {chain}"
            )));
        }
        if t.timeout {
            return fail(TargetError::TimedOut(format!(
                "{what}: no answer in time: {chain}"
            )));
        }
        if let Some(tls) = &t.tls {
            return fail(TargetError::Network(format!(
                "{what}: TLS with the vault failed (its certificate or the CA, ca_cert_pem): {}",
                self.quoted(tls)
            )));
        }
        if t.connection || t.io {
            return fail(TargetError::Network(format!("{what}: {chain}")));
        }
        fail(TargetError::Internal(format!("{what}: {chain}")))
    }
}

// ----- helpers ------------------------------------------------------------------------------

/// The SDK's retry policy: [`SDK_RETRIES`] quick retries.
fn retry_options() -> RetryOptions {
    RetryOptions::exponential(ExponentialRetryOptions {
        initial_delay: azure_core::time::Duration::milliseconds(100),
        max_retries: SDK_RETRIES,
        max_total_elapsed: azure_core::time::Duration::seconds(10),
        max_delay: azure_core::time::Duration::seconds(2),
    })
}

/// A credential (Entra ID, client secret) and the vault client on it, on `transport`; the
/// challenge resource is checked unless the vault is on a loopback address.
fn make_keys(
    settings: &AzureKvSettings,
    secret: &SecretString,
    transport: &Transport,
    loopback: bool,
) -> Result<KeyClient, TargetError> {
    let mut cloud = CustomConfiguration::default();
    cloud.authority_host = settings.authority_host.trim_end_matches('/').to_string();
    let credential = ClientSecretCredential::new(
        &settings.tenant_id,
        settings.client_id.clone(),
        Secret::new(secret.expose_secret().to_string()),
        Some(ClientSecretCredentialOptions {
            client_options: ClientOptions {
                transport: Some(transport.clone()),
                retry: retry_options(),
                cloud: Some(Arc::new(CloudConfiguration::from(cloud))),
                ..Default::default()
            },
        }),
    )
    .map_err(|e| {
        TargetError::InvalidConfiguration(format!(
            "the Entra ID credential cannot be made: {}",
            quote(secret, &e.to_string())
        ))
    })?;
    KeyClient::new(
        &settings.vault_url,
        credential,
        Some(KeyClientOptions {
            client_options: ClientOptions {
                transport: Some(transport.clone()),
                retry: retry_options(),
                ..Default::default()
            },
            verify_challenge_resource: Some(!loopback),
            ..Default::default()
        }),
    )
    .map_err(|e| TargetError::InvalidConfiguration(format!("vault_url cannot be used: {e}")))
}

/// Whether a failure is the vault's "no such key": 404 with a code ending in `NotFound`
/// (`KeyNotFound`), or none.
fn not_found(f: &Failure) -> bool {
    f.status == Some(404) && (f.code.is_empty() || f.code.ends_with("NotFound"))
}

/// A Key Vault object name: 1 to 127 of a-z A-Z 0-9 -.
fn key_name(name: &str) -> Result<(), TargetError> {
    if name.is_empty()
        || name.len() > 127
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(TargetError::Internal(format!(
            "{name:?} is not a key vault key name (1 to 127 of a-z A-Z 0-9 -)"
        )));
    }
    Ok(())
}

/// `https://host[:port]` with no path, query or user.
fn https_url(field: &str, url: &str) -> Result<Url, TargetError> {
    let bad = |why: &str| TargetError::InvalidConfiguration(format!("{field} {url:?} {why}"));
    let parsed = Url::parse(url).map_err(|_| bad("is not a URL"))?;
    if parsed.scheme() != "https" {
        return Err(bad(
            "is not https:// (the client secret, tokens and key material never cross a network in plaintext)",
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty)
        || !parsed.username().is_empty()
        || parsed.password().is_some()
        || parsed.query().is_some()
        || parsed.fragment().is_some()
        || !matches!(parsed.path(), "" | "/")
    {
        return Err(bad("is not https://host[:port] (no path, no user)"));
    }
    Ok(parsed)
}

/// Whether the URL's host is a loopback address or `localhost`.
fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => LOOPBACK_HOSTS.contains(&bare.to_ascii_lowercase().as_str()),
    }
}

/// The rustls settings: the given CA, or the system's roots; HTTP/1.1.
fn tls_config(ca_cert_pem: Option<&str>) -> Result<ClientConfig, TargetError> {
    let bad = |why: String| TargetError::InvalidConfiguration(format!("ca_cert_pem {why}"));
    let mut roots = RootCertStore::empty();
    match ca_cert_pem {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|e| bad(format!("is not PEM: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| bad(format!("cannot be trusted: {e}")))?;
            }
            if roots.is_empty() {
                return Err(bad("holds no certificate".into()));
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| TargetError::Internal(format!("TLS settings: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// `name` and `version` of `https://{vault}/keys/{name}[/{version}]`.
fn split_kid(kid: &str) -> Option<(String, String)> {
    let url = Url::parse(kid).ok()?;
    let mut segments = url.path_segments()?.filter(|s| !s.is_empty());
    if !matches!(segments.next(), Some("keys" | "deletedkeys")) {
        return None;
    }
    let name = segments.next()?.to_string();
    let version = segments.next().unwrap_or("").to_string();
    Some((name, version))
}

fn key_from_parts(
    jwk: Option<JsonWebKey>,
    attributes: Option<KeyAttributes>,
    tags: Option<std::collections::HashMap<String, String>>,
    managed: Option<bool>,
) -> Result<AzureKey, String> {
    let jwk = jwk.ok_or("without the key (JWK)")?;
    let kid = jwk.kid.clone().ok_or("with a key without kid")?;
    let (name, version) =
        split_kid(&kid).ok_or_else(|| format!("with kid {kid:?}, which is no key identifier"))?;
    let attributes = attributes.unwrap_or_default();
    Ok(AzureKey {
        name,
        version,
        kty: jwk
            .kty
            .as_ref()
            .map(|k| k.as_ref().to_string())
            .unwrap_or_default(),
        crv: jwk.crv.as_ref().map(|c| c.as_ref().to_string()),
        n: jwk.n.unwrap_or_default(),
        e: jwk.e.unwrap_or_default(),
        x: jwk.x.unwrap_or_default(),
        y: jwk.y.unwrap_or_default(),
        enabled: attributes.enabled.unwrap_or(true),
        key_ops: jwk.key_ops.unwrap_or_default(),
        tags: tags.unwrap_or_default().into_iter().collect(),
        managed: managed.unwrap_or(false),
        kid,
    })
}

/// What `e`'s chain says: the SDK's kinds, the first HTTP answer, reqwest's and rustls'.
fn traits(e: &azure_core::Error) -> Traits {
    let mut t = Traits::default();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(az) = err.downcast_ref::<azure_core::Error>() {
            match az.kind() {
                ErrorKind::Credential => t.credential = true,
                ErrorKind::HttpResponse {
                    status,
                    error_code,
                    raw_response,
                } if t.http.is_none() => {
                    let inner = raw_response
                        .as_ref()
                        .and_then(|r| serde_json::from_slice::<Value>(r.body().as_ref()).ok())
                        .and_then(|v| {
                            v["error"]["innererror"]["code"]
                                .as_str()
                                .map(str::to_string)
                        })
                        .unwrap_or_default();
                    // The HTTP error's own words: the service's message (check_success), or
                    // Entra ID's error_description.
                    let message = match az.get_ref() {
                        Some(inner) => inner.to_string(),
                        None => az.to_string(),
                    };
                    t.http = Some((
                        u16::from(*status),
                        error_code.clone().unwrap_or_default(),
                        message,
                        inner,
                    ));
                }
                ErrorKind::Connection => t.connection = true,
                ErrorKind::Io => t.io = true,
                _ => {}
            }
        }
        if let Some(r) = err.downcast_ref::<reqwest::Error>() {
            t.timeout |= r.is_timeout();
            t.connection |= r.is_connect();
        }
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            t.tls.get_or_insert_with(|| r.to_string());
        }
        cur = match err.downcast_ref::<std::io::Error>() {
            Some(io) => {
                t.timeout |= io.kind() == std::io::ErrorKind::TimedOut;
                // An io::Error's source() skips the error it wraps (rustls' alert, or
                // another io::Error around it): walk into it instead.
                match io.get_ref() {
                    Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
                    None => err.source(),
                }
            }
            None => err.source(),
        };
    }
    t
}

/// `error: source: ...`, each message once; the SDK's own bookkeeping left out.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    const NOISE: [&str; 3] = [
        "retry policy expired and the request will no longer be retried",
        "non-transport error occurred which will not be retried",
        "failed to execute `reqwest` request",
    ];
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let m = err.to_string();
        if !m.is_empty() && !NOISE.contains(&m.as_str()) && !parts.iter().any(|p| p.contains(&m)) {
            parts.push(m);
        }
        cur = err.source();
    }
    parts.join(": ")
}

/// `text` shortened, without control characters and with the secret replaced.
fn quote(secret: &SecretString, text: &str) -> String {
    let s = secret.expose_secret();
    let redacted = if s.is_empty() {
        text.to_string()
    } else {
        text.replace(s, "[client secret]")
    };
    let mut out: String = redacted
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_QUOTED)
        .collect();
    if redacted.chars().count() > MAX_QUOTED {
        out.push('…');
    }
    out
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

fn secs(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// The `.byok` file of Azure's BYOK for a key wrapped with `CKM_RSA_AES_KEY_WRAP` under the
/// key-exchange key `kek_kid` (its versioned identifier): its JSON bytes.
pub fn byok_json(kek_kid: &str, ciphertext: &[u8]) -> Zeroizing<Vec<u8>> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let body = serde_json::json!({
        "schema_version": "1.0.0",
        "header": {
            "kid": kek_kid,
            "alg": "dir",
            "enc": "CKM_RSA_AES_KEY_WRAP",
        },
        "ciphertext": URL_SAFE_NO_PAD.encode(ciphertext),
        "generator": "keyorch",
    });
    Zeroizing::new(body.to_string().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "unit~test.secret_0123456789abcdefghijklm";

    fn settings(vault: &str) -> AzureKvSettings {
        AzureKvSettings {
            vault_url: vault.into(),
            authority_host: "https://login.microsoftonline.com".into(),
            tenant_id: "72f988bf-86f1-41af-91ab-2d7cd011db47".into(),
            client_id: "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0".into(),
            ca_cert_pem: None,
        }
    }

    fn client() -> AzureKvClient {
        AzureKvClient::new(
            settings("https://keyorch-test.vault.azure.net"),
            SecretString::from(SECRET),
        )
        .unwrap()
    }

    #[test]
    fn urls_are_https_without_paths_and_loopback_is_known() {
        for bad in [
            "http://keyorch.vault.azure.net",
            "https://keyorch.vault.azure.net/keys",
            "https://u@keyorch.vault.azure.net",
            "https://keyorch.vault.azure.net?x=1",
            "keyorch.vault.azure.net",
        ] {
            assert!(
                matches!(
                    AzureKvClient::new(settings(bad), SecretString::from(SECRET)),
                    Err(TargetError::InvalidConfiguration(_))
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            AzureKvClient::new(
                settings("https://v.vault.azure.net"),
                SecretString::from("")
            ),
            Err(TargetError::InvalidCredentials(_))
        ));
        let loopback = |u: &str| is_loopback(&Url::parse(u).unwrap());
        assert!(loopback("https://127.0.0.1:8443"));
        assert!(loopback("https://127.8.9.10"));
        assert!(loopback("https://[::1]:1"));
        assert!(loopback("https://LOCALHOST:1"));
        assert!(!loopback("https://keyorch.vault.azure.net"));
        assert!(!loopback("https://10.0.0.1"));
    }

    #[test]
    fn names_kids_and_byok() {
        assert!(key_name("keyorch-0f3c").is_ok());
        assert!(key_name("EKMF-BYOK-KEK-FOR-IMPORT").is_ok());
        for bad in ["", "a/b", "a_b", "../x", &"k".repeat(128)] {
            assert!(key_name(bad).is_err(), "{bad}");
        }
        assert_eq!(
            split_kid("https://v.vault.azure.net/keys/k1/0123abcd"),
            Some(("k1".into(), "0123abcd".into()))
        );
        assert_eq!(
            split_kid("https://127.0.0.1:9/keys/k1"),
            Some(("k1".into(), String::new()))
        );
        assert_eq!(split_kid("https://v/secrets/k1/1"), None);
        let byok = byok_json("https://v/keys/EKMF-BYOK-KEK-FOR-IMPORT/abc", &[0xfb, 0xff]);
        let v: Value = serde_json::from_slice(&byok).unwrap();
        assert_eq!(v["schema_version"], "1.0.0");
        assert_eq!(
            v["header"]["kid"],
            "https://v/keys/EKMF-BYOK-KEK-FOR-IMPORT/abc"
        );
        assert_eq!(v["header"]["alg"], "dir");
        assert_eq!(v["header"]["enc"], "CKM_RSA_AES_KEY_WRAP");
        assert_eq!(v["ciphertext"], "-_8");
        assert_eq!(v["generator"], "keyorch");
    }

    #[test]
    fn public_keys_and_check_values() {
        let mut k = AzureKey {
            kid: "https://v/keys/k/1".into(),
            name: "k".into(),
            version: "1".into(),
            kty: "EC-HSM".into(),
            crv: Some("P-256".into()),
            n: vec![],
            e: vec![],
            x: vec![1; 31],
            y: vec![2; 32],
            enabled: true,
            key_ops: vec![],
            tags: BTreeMap::new(),
            managed: false,
        };
        let PublicKey::Ec { point, .. } = k.public_key().unwrap() else {
            panic!("not EC");
        };
        assert_eq!(point.len(), 65);
        assert_eq!((point[0], point[1], point[2]), (4, 0, 1));
        let spki = k.spki_der().unwrap();
        assert_eq!(
            k.check_value().unwrap(),
            hex::encode(&Sha256::digest(&spki)[..8])
        );
        k.crv = Some("P-521".into());
        assert!(k.public_key().is_err());
        k.kty = "RSA-HSM".into();
        k.n = vec![0, 0xc1, 2, 3];
        k.e = vec![1, 0, 1];
        assert_eq!(k.rsa_bits(), 24);
        assert_eq!(
            k.public_key().unwrap(),
            PublicKey::Rsa {
                modulus: vec![0xc1, 2, 3],
                exponent: vec![1, 0, 1]
            }
        );
        k.kty = "oct-HSM".into();
        assert!(k.check_value().is_err());
    }

    #[test]
    fn secrets_are_redacted_and_debug_is_safe() {
        let c = client();
        let q = c.quoted(&format!("bad secret {SECRET}\r\nTrace ID: 1"));
        assert!(!q.contains(SECRET) && q.contains("[client secret]") && !q.contains('\n'));
        assert!(!format!("{c:?}").contains(SECRET));
        assert!(
            quote(&SecretString::from("s"), &"x".repeat(400))
                .chars()
                .count()
                <= 301
        );
    }
}
