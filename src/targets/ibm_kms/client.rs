//! The blocking client of IBM Key Protect's KMS API v2, which Hyper Protect Crypto Services
//! serves too, and of IBM Cloud IAM's API-key grant: what the `ibm_key_protect` and `ibm_hpcs`
//! targets call on their blocking threads.
//!
//! * IAM: `POST {iam_endpoint}/identity/token`, form
//!   `grant_type=urn:ibm:params:oauth:grant-type:apikey&apikey=…`; the access token is cached
//!   until a fifth of its lifetime (at least a minute) is left, as ibm-cloud-sdk-core renews at
//!   80 % of it. A cached token the API refuses (401) is renewed once and the call retried.
//! * KMS: `{api_endpoint}/api/v2/keys`, `/api/v2/keys/{id}/metadata`, `/api/v2/import_token`,
//!   with `authorization: Bearer`, `bluemix-instance`, `x-kms-key-ring`, `correlation-id` (one
//!   UUID per request, repeated in error messages for IBM support),
//!   `content-type: application/vnd.ibm.kms.key+json` and `prefer: return=representation` to
//!   create a key.
//! * Transport: hyper 1 HTTP/1.1, one connection per request, over rustls with the configured
//!   CA (for both endpoints) or the system's roots; `http://` only to a loopback host. DNS, TCP
//!   and the TLS handshake have [`CONNECT_TIMEOUT`] each, the whole request [`CALL_DEADLINE`].
//!   The client holds its own current-thread runtime and blocks in it.
//!
//! Failures are classified into [`TargetError`]: IAM refusing the key is `InvalidCredentials`,
//! a 401/403 from the KMS API is `PermissionDenied` with the IAM action the call needs (IBM's
//! names from "IAM roles and actions", ibm-cloud-docs/account iam-service-roles.md: Key
//! Protect's `kms.*`, HPCS's `hs-crypto.*`). No message, log line or `Debug` output ever holds
//! the API key, an access token, a payload or a nonce.

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use der::Decode as _;
use http::header::{HeaderName, HeaderValue};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tokio::runtime::Runtime;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, SubjectPublicKeyInfoDer};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use zeroize::{Zeroize, Zeroizing};

use crate::targets::TargetError;

/// Longest wait for DNS, for the TCP connection and for the TLS handshake, each.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest time one request may take, connecting included.
pub const CALL_DEADLINE: Duration = Duration::from_secs(30);
/// Largest answer read (a page of 200 keys is some 200 KB).
const MAX_ANSWER: usize = 4 << 20;
/// Longest piece of the service's own words repeated in a message.
const MAX_QUOTED: usize = 300;
/// Keys per page while [`IbmKmsClient::find_key_by_name`] pages (the API's default).
const PAGE: u32 = 200;
/// The API's largest `limit`.
const MAX_LIMIT: u32 = 5000;
/// Pages [`IbmKmsClient::find_key_by_name`] reads at most (a million keys).
const MAX_PAGES: u32 = 5000;
/// A token is renewed when less than this is left of it, or a fifth of its lifetime if longer.
const TOKEN_MARGIN: Duration = Duration::from_secs(60);
const KEY_TYPE: &str = "application/vnd.ibm.kms.key+json";
const APIKEY_GRANT: &str = "urn:ibm:params:oauth:grant-type:apikey";
const RSA_ENCRYPTION: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
/// The wraps the API takes: Key Protect's and HPCS's.
const ALGORITHMS: [&str; 2] = ["RSAES_OAEP_SHA_256", "RSAES_OAEP_SHA_1"];
const LOOPBACK_HOSTS: [&str; 3] = ["127.0.0.1", "::1", "localhost"];

/// Where one instance's key ring is, and what to trust on the way.
#[derive(Clone)]
pub struct IbmKmsSettings {
    /// `https://host[:port]` (`http://` only to a loopback host), no path.
    pub api_endpoint: String,
    /// `https://host[:port]`; the token URL is `{iam_endpoint}/identity/token`.
    pub iam_endpoint: String,
    /// The `bluemix-instance`: the instance's GUID.
    pub instance_id: String,
    /// The `x-kms-key-ring` (`default` for the instance's default ring).
    pub key_ring_id: String,
    /// PEM certificates trusted for both endpoints instead of the system's roots.
    pub ca_cert_pem: Option<String>,
}

impl fmt::Debug for IbmKmsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IbmKmsSettings")
            .field("api_endpoint", &self.api_endpoint)
            .field("iam_endpoint", &self.iam_endpoint)
            .field("instance_id", &self.instance_id)
            .field("key_ring_id", &self.key_ring_id)
            .field("ca_cert_pem", &self.ca_cert_pem.is_some())
            .finish()
    }
}

/// Which service's IAM actions a refusal names: Key Protect's (`kms.*`) or Hyper Protect
/// Crypto Services' (`hs-crypto.*`), whose KMS API is the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IamService {
    KeyProtect,
    Hpcs,
}

impl IamService {
    /// The IAM service name.
    pub fn name(self) -> &'static str {
        match self {
            IamService::KeyProtect => "kms",
            IamService::Hpcs => "hs-crypto",
        }
    }
}

/// The IAM action a call needs (ibm-cloud-docs/account iam-service-roles.md, the tables of
/// `kms` and `hs-crypto`). Importing a key is creating one with a payload: IBM documents no
/// action of its own for it (the roles table grants "Import a key" with "Create a key").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    List,
    ReadMetadata,
    Create,
    Delete,
    ImportTokenCreate,
    ImportTokenRead,
}

impl Action {
    fn suffix(self) -> &'static str {
        match self {
            Action::List => "secrets.list",
            Action::ReadMetadata => "secrets.readmetadata",
            Action::Create => "secrets.create",
            Action::Delete => "secrets.delete",
            Action::ImportTokenCreate => "importtoken.create",
            Action::ImportTokenRead => "importtoken.read",
        }
    }
}

/// A key as the API lists or reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsKey {
    pub id: String,
    pub name: String,
    /// 0 pre-active, 1 active, 2 suspended, 3 deactivated, 5 destroyed.
    pub state: u32,
    /// true: a standard key; false: a root key.
    pub extractable: bool,
    /// The material was imported, not generated by the service.
    pub imported: bool,
}

/// The instance's import token, as read: the RSA public key to wrap the material with and
/// the nonce to encrypt under it.
pub struct ImportToken {
    /// DER SubjectPublicKeyInfo (the API gives base64 of its PEM), an RSA key.
    pub public_key_der: Vec<u8>,
    pub nonce: Vec<u8>,
}

impl fmt::Debug for ImportToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImportToken")
            .field(
                "public_key_der",
                &format_args!("{} bytes", self.public_key_der.len()),
            )
            .field("nonce", &format_args!("{} bytes", self.nonce.len()))
            .finish()
    }
}

impl Drop for ImportToken {
    fn drop(&mut self) {
        self.nonce.zeroize();
    }
}

/// One endpoint, split.
#[derive(Debug)]
struct Endpoint {
    /// As configured, without a trailing `/`.
    url: String,
    host: String,
    port: u16,
    /// The Host header: `host[:port]` as in the URL.
    authority: String,
    /// The name the certificate must show, for https.
    tls_name: Option<ServerName<'static>>,
}

struct CachedToken {
    access: SecretString,
    renew_at: Instant,
}

/// A status and the bytes of the answer (zeroized when dropped).
struct Answer {
    status: StatusCode,
    body: Zeroizing<Vec<u8>>,
    /// `{METHOD} {url}` and the correlation id, for messages.
    call: String,
}

/// The client of one instance's key ring. Calls block (the caller is on a blocking thread,
/// never in an async context); several threads may call at once.
pub struct IbmKmsClient {
    /// Dropped with `shutdown_background`, so that a client may be dropped anywhere.
    runtime: Option<Runtime>,
    tls: Option<Arc<ClientConfig>>,
    api: Endpoint,
    iam: Endpoint,
    instance_id: HeaderValue,
    key_ring_id: HeaderValue,
    service: IamService,
    api_key: SecretString,
    token: Mutex<Option<CachedToken>>,
    connect_timeout: Duration,
    call_deadline: Duration,
}

impl fmt::Debug for IbmKmsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IbmKmsClient")
            .field("api_endpoint", &self.api.url)
            .field("iam_endpoint", &self.iam.url)
            .field("instance_id", &self.instance_id)
            .field("key_ring_id", &self.key_ring_id)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl Drop for IbmKmsClient {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Either stream a request goes over.
enum Stream {
    Plain(tokio::net::TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>),
}

impl IbmKmsClient {
    /// Checks the settings and builds the TLS settings and the runtime. Sends nothing: the
    /// first call logs in to IAM.
    ///
    /// Errors: `InvalidCredentials` for an empty API key, `InvalidConfiguration` for an
    /// endpoint, instance, key ring or CA that cannot be used, `Internal` when the runtime
    /// cannot start.
    pub fn new(settings: IbmKmsSettings, api_key: SecretString) -> Result<Self, TargetError> {
        if api_key.expose_secret().is_empty() {
            return Err(TargetError::InvalidCredentials(
                "the API key is empty".into(),
            ));
        }
        let api = parse_endpoint("api_endpoint", &settings.api_endpoint)?;
        let iam = parse_endpoint("iam_endpoint", &settings.iam_endpoint)?;
        let instance_id = header_id("instance_id", &settings.instance_id)?;
        let key_ring_id = header_id("key_ring_id", &settings.key_ring_id)?;
        let tls = if api.tls_name.is_some() || iam.tls_name.is_some() {
            Some(tls_config(settings.ca_cert_pem.as_deref())?)
        } else {
            None
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| {
                TargetError::Internal(format!("cannot start the IBM KMS client runtime: {e}"))
            })?;
        // HPCS's KMS endpoints are api.<region>.hs-crypto.cloud.ibm.com.
        let service = if api.host.contains(".hs-crypto.") {
            IamService::Hpcs
        } else {
            IamService::KeyProtect
        };
        Ok(IbmKmsClient {
            runtime: Some(runtime),
            tls,
            api,
            iam,
            instance_id,
            key_ring_id,
            service,
            api_key,
            token: Mutex::new(None),
            connect_timeout: CONNECT_TIMEOUT,
            call_deadline: CALL_DEADLINE,
        })
    }

    /// The service whose IAM action names refusals carry (by default HPCS when the API
    /// endpoint's host is one of `hs-crypto`, else Key Protect).
    #[must_use]
    pub fn with_iam_service(mut self, service: IamService) -> Self {
        self.service = service;
        self
    }

    /// Other limits than [`CONNECT_TIMEOUT`] and [`CALL_DEADLINE`] (tests).
    #[must_use]
    pub fn with_timeouts(mut self, connect: Duration, deadline: Duration) -> Self {
        self.connect_timeout = connect;
        self.call_deadline = deadline;
        self
    }

    /// The IAM action name of `action` in this client's service.
    fn action(&self, action: Action) -> String {
        format!("{}.{}", self.service.name(), action.suffix())
    }

    /// One page of the key ring's keys that are not destroyed (`GET /api/v2/keys`), `limit`
    /// 1 to 5000 from `offset`.
    pub fn list_keys(&self, limit: u32, offset: u32) -> Result<Vec<KmsKey>, TargetError> {
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(TargetError::Internal(format!(
                "list_keys: limit {limit} is not 1 to {MAX_LIMIT}"
            )));
        }
        let path = format!("/api/v2/keys?limit={limit}&offset={offset}");
        let a = self.kms(Method::GET, &path, None)?;
        if a.status != StatusCode::OK {
            return Err(self.kms_error(&a, Action::List));
        }
        let v = json(&a)?;
        resources(&v, &a)?.iter().map(|k| key_from(k, &a)).collect()
    }

    /// The first key of the key ring named `name` that is not destroyed, paging through the
    /// list.
    pub fn find_key_by_name(&self, name: &str) -> Result<Option<KmsKey>, TargetError> {
        for page in 0..MAX_PAGES {
            let keys = self.list_keys(PAGE, page * PAGE)?;
            let full = keys.len() == PAGE as usize;
            if let Some(k) = keys.into_iter().find(|k| k.name == name) {
                return Ok(Some(k));
            }
            if !full {
                return Ok(None);
            }
        }
        Err(TargetError::Internal(format!(
            "the key ring holds more than {} keys; {name:?} was not among them",
            MAX_PAGES * PAGE
        )))
    }

    /// A key's metadata (`GET /api/v2/keys/{id}/metadata`): None when the key ring has no
    /// such key; a destroyed key comes back with state 5.
    pub fn get_key(&self, id: &str) -> Result<Option<KmsKey>, TargetError> {
        let path = format!("/api/v2/keys/{}/metadata", key_segment(id)?);
        let a = self.kms(Method::GET, &path, None)?;
        match a.status {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND | StatusCode::GONE if !self.ring_or_route_error(&a) => {
                return Ok(None)
            }
            _ => return Err(self.kms_error(&a, Action::ReadMetadata)),
        }
        let v = json(&a)?;
        let list = resources(&v, &a)?;
        let key = list
            .first()
            .ok_or_else(|| invalid_answer(&a, "without the key"))?;
        key_from(key, &a).map(Some)
    }

    /// Creates the instance's import token (`POST /api/v2/import_token`), replacing the one
    /// there was: it can import keys for `expiration_secs` (300 to 86400) and be read
    /// `max_retrievals` times (1 to 500).
    pub fn create_import_token(
        &self,
        expiration_secs: u32,
        max_retrievals: u32,
    ) -> Result<(), TargetError> {
        let body = serde_json::json!({
            "expiration": expiration_secs,
            "maxAllowedRetrievals": max_retrievals,
        });
        let body = Bytes::from(body.to_string());
        let a = self.kms(
            Method::POST,
            "/api/v2/import_token",
            Some(("application/json", body)),
        )?;
        if !a.status.is_success() {
            return Err(self.kms_error(&a, Action::ImportTokenCreate));
        }
        Ok(())
    }

    /// Reads the import token (`GET /api/v2/import_token`): its RSA public key as DER
    /// SubjectPublicKeyInfo and its nonce.
    pub fn get_import_token(&self) -> Result<ImportToken, TargetError> {
        let a = self.kms(Method::GET, "/api/v2/import_token", None)?;
        if a.status != StatusCode::OK {
            return Err(self.kms_error(&a, Action::ImportTokenRead));
        }
        let v = json(&a)?;
        let field = |name: &str| -> Result<Zeroizing<Vec<u8>>, TargetError> {
            let text = v[name]
                .as_str()
                .ok_or_else(|| invalid_answer(&a, &format!("without {name}")))?;
            STANDARD
                .decode(text)
                .map(Zeroizing::new)
                .map_err(|_| invalid_answer(&a, &format!("with a {name} that is not base64")))
        };
        let pem = field("payload")?;
        let nonce = field("nonce")?;
        let der = SubjectPublicKeyInfoDer::from_pem_slice(&pem)
            .map_err(|_| invalid_answer(&a, "with a payload that is not a PEM public key"))?;
        let spki = spki::SubjectPublicKeyInfoRef::from_der(der.as_ref())
            .map_err(|_| invalid_answer(&a, "with a public key that is not DER"))?;
        if spki.algorithm.oid != RSA_ENCRYPTION {
            return Err(invalid_answer(
                &a,
                &format!("with a public key that is not RSA ({})", spki.algorithm.oid),
            ));
        }
        if nonce.is_empty() {
            return Err(invalid_answer(&a, "with an empty nonce"));
        }
        Ok(ImportToken {
            public_key_der: der.as_ref().to_vec(),
            nonce: nonce.to_vec(),
        })
    }

    /// Creates a root key named `name` from material wrapped to the import token
    /// (`POST /api/v2/keys`): `payload` the RSA-OAEP wrap, `encrypted_nonce` and `iv` the
    /// token's nonce encrypted under the material, `algorithm` `RSAES_OAEP_SHA_256` (Key
    /// Protect) or `RSAES_OAEP_SHA_1` (HPCS). Returns the new key.
    pub fn import_root_key(
        &self,
        name: &str,
        description: &str,
        payload: &[u8],
        encrypted_nonce: &[u8],
        iv: &[u8],
        algorithm: &str,
    ) -> Result<KmsKey, TargetError> {
        if !ALGORITHMS.contains(&algorithm) {
            return Err(TargetError::Internal(format!(
                "import_root_key: {algorithm:?} is not one of {}",
                ALGORITHMS.join(", ")
            )));
        }
        let mut resource = serde_json::json!({
            "type": KEY_TYPE,
            "name": name,
            "extractable": false,
            "payload": STANDARD.encode(payload),
            "encryptedNonce": STANDARD.encode(encrypted_nonce),
            "iv": STANDARD.encode(iv),
            "encryptionAlgorithm": algorithm,
        });
        if !description.is_empty() {
            resource["description"] = Value::from(description);
        }
        let body = serde_json::json!({
            "metadata": {"collectionType": KEY_TYPE, "collectionTotal": 1},
            "resources": [resource],
        });
        let body = Bytes::from_owner(Zeroizing::new(body.to_string().into_bytes()));
        let a = self.kms(Method::POST, "/api/v2/keys", Some((KEY_TYPE, body)))?;
        if !a.status.is_success() {
            return Err(self.kms_error(&a, Action::Create));
        }
        let v = json(&a)?;
        let list = resources(&v, &a)?;
        let key = list
            .first()
            .ok_or_else(|| invalid_answer(&a, "without the key"))?;
        key_from(key, &a)
    }

    /// Deletes (destroys) a key (`DELETE /api/v2/keys/{id}`); a key already deleted (410) is
    /// no error.
    pub fn delete_key(&self, id: &str) -> Result<(), TargetError> {
        let path = format!("/api/v2/keys/{}", key_segment(id)?);
        let a = self.kms(Method::DELETE, &path, None)?;
        if a.status.is_success() || a.status == StatusCode::GONE {
            return Ok(());
        }
        Err(self.kms_error(&a, Action::Delete))
    }

    // ----- requests ---------------------------------------------------------------------

    /// One KMS API request with the access token; a cached token the API refuses is
    /// renewed once.
    fn kms(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<(&'static str, Bytes)>,
    ) -> Result<Answer, TargetError> {
        let mut renewed = false;
        loop {
            let (token, fresh) = self.access_token()?;
            let mut auth = HeaderValue::from_str(&format!("Bearer {}", token.expose_secret()))
                .map_err(|_| {
                    TargetError::Internal("IAM gave an access token that is no header".into())
                })?;
            auth.set_sensitive(true);
            let mut headers = vec![
                (http::header::AUTHORIZATION, auth),
                (
                    HeaderName::from_static("bluemix-instance"),
                    self.instance_id.clone(),
                ),
                (
                    HeaderName::from_static("x-kms-key-ring"),
                    self.key_ring_id.clone(),
                ),
                (
                    http::header::ACCEPT,
                    HeaderValue::from_static("application/json"),
                ),
            ];
            if body.is_some() {
                headers.push((
                    HeaderName::from_static("prefer"),
                    HeaderValue::from_static("return=representation"),
                ));
            }
            let a = self.send(
                &self.api,
                method.clone(),
                path_and_query,
                headers,
                body.clone(),
            )?;
            if a.status == StatusCode::UNAUTHORIZED && !fresh && !renewed {
                renewed = true;
                self.forget_token();
                continue;
            }
            return Ok(a);
        }
    }

    /// The access token, from the cache or from IAM; true when it was just issued.
    fn access_token(&self) -> Result<(SecretString, bool), TargetError> {
        let mut cached = self.token.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = cached.as_ref() {
            if Instant::now() < t.renew_at {
                return Ok((t.access.clone(), false));
            }
        }
        *cached = None;
        let (access, lifetime) = self.login()?;
        let margin = TOKEN_MARGIN.max(lifetime / 5);
        if let Some(valid) = lifetime.checked_sub(margin) {
            *cached = Some(CachedToken {
                access: access.clone(),
                renew_at: Instant::now() + valid,
            });
        }
        Ok((access, true))
    }

    fn forget_token(&self) {
        *self.token.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// IAM's API-key grant: the access token and how long it lives.
    fn login(&self) -> Result<(SecretString, Duration), TargetError> {
        let mut form = Zeroizing::new(Vec::with_capacity(128));
        form.extend_from_slice(b"grant_type=");
        form_encode(&mut form, APIKEY_GRANT.as_bytes());
        form.extend_from_slice(b"&apikey=");
        form_encode(&mut form, self.api_key.expose_secret().as_bytes());
        let body = Bytes::from_owner(form);
        let headers = vec![(
            http::header::ACCEPT,
            HeaderValue::from_static("application/json"),
        )];
        let a = self.send(
            &self.iam,
            Method::POST,
            "/identity/token",
            headers,
            Some(("application/x-www-form-urlencoded", body)),
        )?;
        if a.status != StatusCode::OK {
            return Err(self.iam_error(&a));
        }
        #[derive(serde::Deserialize, Zeroize, zeroize::ZeroizeOnDrop)]
        struct Granted {
            #[serde(default)]
            access_token: String,
            #[serde(default)]
            refresh_token: String,
            #[serde(default)]
            token_type: String,
            #[serde(default)]
            expires_in: Option<u64>,
            #[serde(default)]
            expiration: Option<u64>,
        }
        let mut granted: Granted = serde_json::from_slice(&a.body)
            .map_err(|_| invalid_answer(&a, "with no IAM token JSON"))?;
        if granted.access_token.is_empty() || !granted.token_type.eq_ignore_ascii_case("bearer") {
            return Err(invalid_answer(&a, "without a Bearer access_token"));
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let lifetime = granted
            .expires_in
            .or_else(|| granted.expiration.map(|e| e.saturating_sub(now)))
            .unwrap_or(0);
        let access = SecretString::from(std::mem::take(&mut granted.access_token));
        Ok((access, Duration::from_secs(lifetime)))
    }

    /// One request to `ep` within the call deadline.
    fn send(
        &self,
        ep: &Endpoint,
        method: Method,
        path_and_query: &str,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: Option<(&'static str, Bytes)>,
    ) -> Result<Answer, TargetError> {
        let correlation = uuid::Uuid::new_v4().to_string();
        let call = format!(
            "{method} {}{}",
            ep.url,
            path_and_query.split('?').next().unwrap_or("")
        );
        let mut req = http::Request::builder()
            .method(method)
            .uri(path_and_query)
            .header(http::header::HOST, &ep.authority)
            .header("correlation-id", &correlation)
            .header(http::header::USER_AGENT, "keyorch");
        for (name, value) in headers {
            req = req.header(name, value);
        }
        let bytes = match body {
            Some((content_type, bytes)) => {
                req = req.header(http::header::CONTENT_TYPE, content_type);
                bytes
            }
            None => Bytes::new(),
        };
        let req = req
            .body(Full::new(bytes))
            .map_err(|e| TargetError::Internal(format!("{call}: cannot build the request: {e}")))?;
        let rt = self
            .runtime
            .as_ref()
            .ok_or_else(|| TargetError::Internal("the client's runtime is gone".into()))?;
        let deadline = self.call_deadline;
        let (status, body) = rt.block_on(async {
            match tokio::time::timeout(deadline, self.roundtrip(ep, req, &call)).await {
                Ok(r) => r,
                Err(_) => Err(TargetError::TimedOut(format!(
                    "{call}: no answer within {}",
                    secs(deadline)
                ))),
            }
        })?;
        Ok(Answer {
            status,
            body,
            call: format!("{call} (correlation-id {correlation})"),
        })
    }

    /// Connects and exchanges one request.
    async fn roundtrip(
        &self,
        ep: &Endpoint,
        req: http::Request<Full<Bytes>>,
        call: &str,
    ) -> Result<(StatusCode, Zeroizing<Vec<u8>>), TargetError> {
        let stream = self.connect(ep, call).await?;
        let sent = match stream {
            Stream::Plain(s) => exchange(TokioIo::new(s), req).await,
            Stream::Tls(s) => exchange(TokioIo::new(*s), req).await,
        };
        sent.map_err(|e| {
            if let Some(t) = tls_cause(e.as_ref()) {
                return TargetError::Network(format!("{call}: TLS: {t}"));
            }
            if has_source::<http_body_util::LengthLimitError>(e.as_ref()) {
                return TargetError::Internal(format!(
                    "{call}: the answer is larger than {MAX_ANSWER} bytes"
                ));
            }
            TargetError::Network(format!("{call}: {}", chain(e.as_ref())))
        })
    }

    /// Resolves, connects and completes the TLS handshake for https.
    async fn connect(&self, ep: &Endpoint, call: &str) -> Result<Stream, TargetError> {
        let limit = self.connect_timeout;
        let addrs: Vec<SocketAddr> =
            tokio::time::timeout(limit, tokio::net::lookup_host((ep.host.as_str(), ep.port)))
                .await
                .map_err(|_| {
                    TargetError::TimedOut(format!(
                        "{call}: resolving {}: no answer within {}",
                        ep.host,
                        secs(limit)
                    ))
                })?
                .map_err(|e| TargetError::Network(format!("{call}: resolving {}: {e}", ep.host)))?
                .collect();
        let mut last = None;
        let mut tcp = None;
        for addr in addrs {
            match tokio::time::timeout(limit, tokio::net::TcpStream::connect(addr)).await {
                Ok(Ok(s)) => {
                    tcp = Some(s);
                    break;
                }
                Ok(Err(e)) => {
                    last = Some(TargetError::Network(format!(
                        "{call}: connecting to {addr}: {e}"
                    )))
                }
                Err(_) => {
                    last = Some(TargetError::TimedOut(format!(
                        "{call}: connecting to {addr}: no answer within {}",
                        secs(limit)
                    )))
                }
            }
        }
        let tcp = tcp.ok_or_else(|| {
            last.unwrap_or_else(|| {
                TargetError::Network(format!("{call}: {} has no address", ep.host))
            })
        })?;
        let _ = tcp.set_nodelay(true);
        let (Some(name), Some(config)) = (&ep.tls_name, &self.tls) else {
            return Ok(Stream::Plain(tcp));
        };
        let connector = tokio_rustls::TlsConnector::from(config.clone());
        match tokio::time::timeout(limit, connector.connect(name.clone(), tcp)).await {
            Ok(Ok(s)) => Ok(Stream::Tls(Box::new(s))),
            Ok(Err(e)) => Err(TargetError::Network(format!(
                "{call}: TLS handshake with {} failed: {}",
                ep.authority,
                tls_cause(&e).unwrap_or_else(|| chain(&e))
            ))),
            Err(_) => Err(TargetError::TimedOut(format!(
                "{call}: TLS handshake with {}: no answer within {}",
                ep.authority,
                secs(limit)
            ))),
        }
    }

    // ----- error answers ----------------------------------------------------------------

    /// The service's words, shortened, without control characters or the API key.
    fn quoted(&self, text: &str) -> String {
        let key = self.api_key.expose_secret();
        let redacted = if key.is_empty() {
            text.to_string()
        } else {
            text.replace(key, "[api key]")
        };
        redacted
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(MAX_QUOTED)
            .collect()
    }

    /// An IAM refusal: the API key is refused (400 BXNIM0415E and the other 400s of the
    /// grant, 401, 403), or the endpoint is not IAM's.
    fn iam_error(&self, a: &Answer) -> TargetError {
        let v: Value = serde_json::from_slice(&a.body).unwrap_or(Value::Null);
        let code = v["errorCode"].as_str().unwrap_or("");
        let message = v["errorMessage"].as_str().unwrap_or("");
        let what = format!(
            "{} answered {}{}{}",
            a.call,
            a.status,
            if code.is_empty() {
                String::new()
            } else {
                format!(" {}", self.quoted(code))
            },
            if message.is_empty() {
                String::new()
            } else {
                format!(": {}", self.quoted(message))
            },
        );
        match a.status.as_u16() {
            400 | 401 | 403 => TargetError::InvalidCredentials(format!(
                "IBM Cloud IAM refused the API key: {what}"
            )),
            404 | 405 => TargetError::InvalidConfiguration(format!(
                "{what} (is iam_endpoint IBM Cloud IAM, e.g. https://iam.cloud.ibm.com?)"
            )),
            502 | 503 => TargetError::Network(what),
            504 => TargetError::TimedOut(what),
            _ => TargetError::Internal(what),
        }
    }

    /// The reason codes and field of a KMS error answer.
    fn kms_reasons(a: &Answer) -> (String, Vec<(String, String)>, String) {
        let v: Value = serde_json::from_slice(&a.body).unwrap_or(Value::Null);
        let res = &v["resources"][0];
        let error_msg = res["errorMsg"].as_str().unwrap_or("").to_string();
        let mut reasons = Vec::new();
        let mut target = String::new();
        if let Some(list) = res["reasons"].as_array() {
            for r in list {
                reasons.push((
                    r["code"].as_str().unwrap_or("").to_string(),
                    r["message"].as_str().unwrap_or("").to_string(),
                ));
                if target.is_empty() {
                    target = r["target"]["name"].as_str().unwrap_or("").to_string();
                }
            }
        }
        (error_msg, reasons, target)
    }

    /// Whether a 404 or 410 is about the key ring or the route, not the key.
    fn ring_or_route_error(&self, a: &Answer) -> bool {
        let (_, reasons, target) = Self::kms_reasons(a);
        reasons.is_empty()
            || target.eq_ignore_ascii_case("x-kms-key-ring")
            || reasons
                .iter()
                .any(|(code, _)| code == "KEY_RING_NOT_FOUND_ERR")
    }

    /// A KMS API error answer to a call that needs `action`, classified. The message has the
    /// call, status, errorMsg, reason codes and correlation id: never a request's body.
    fn kms_error(&self, a: &Answer, action: Action) -> TargetError {
        let (error_msg, reasons, target) = Self::kms_reasons(a);
        let mut what = format!("{} answered {}", a.call, a.status.as_u16());
        if !error_msg.trim().is_empty() {
            what.push_str(": ");
            what.push_str(&self.quoted(error_msg.trim()));
        } else if reasons.is_empty() && !a.body.is_empty() && !a.body.starts_with(b"{") {
            what.push_str(": ");
            what.push_str(&self.quoted(&String::from_utf8_lossy(&a.body)));
        }
        for (code, message) in &reasons {
            what.push_str(&format!(
                " [{}: {}]",
                self.quoted(code),
                self.quoted(message)
            ));
        }
        let has = |c: &str| reasons.iter().any(|(code, _)| code == c);
        let ring = self.key_ring_id.to_str().unwrap_or("");
        let instance = self.instance_id.to_str().unwrap_or("");
        match a.status.as_u16() {
            401 | 403 => TargetError::PermissionDenied(vec![self.action(action)]),
            _ if has("KEY_RING_NOT_FOUND_ERR") || target.eq_ignore_ascii_case("x-kms-key-ring") => {
                TargetError::InvalidConfiguration(format!(
                    "key ring {ring:?} is not in instance {instance}: {what}"
                ))
            }
            _ if target.eq_ignore_ascii_case("bluemix-instance")
                || has("BAD_HEADER_ERR")
                || has("INVALID_HEADER_ERR") =>
            {
                TargetError::InvalidConfiguration(format!(
                    "instance {instance:?} was refused: {what}"
                ))
            }
            404 | 405 if reasons.is_empty() => TargetError::InvalidConfiguration(format!(
                "{what} (is api_endpoint a Key Protect or Hyper Protect Crypto Services KMS endpoint?)"
            )),
            409 if has("KEY_CREATE_IMPORT_ACCESS_ERR") => TargetError::NotSupported(format!(
                "the instance's keyCreateImportAccess policy does not allow this: {what}"
            )),
            502 | 503 => TargetError::Network(what),
            504 => TargetError::TimedOut(what),
            _ => TargetError::Internal(what),
        }
    }
}

// ----- helpers ------------------------------------------------------------------------------

fn secs(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// `https://host[:port]` (or `http://` to a loopback host), split; a trailing `/` is taken.
fn parse_endpoint(field: &str, url: &str) -> Result<Endpoint, TargetError> {
    let bad = |why: &str| TargetError::InvalidConfiguration(format!("{field} {url:?} {why}"));
    let trimmed = url.strip_suffix('/').unwrap_or(url);
    let (https, authority) = if let Some(a) = trimmed.strip_prefix("https://") {
        (true, a)
    } else if let Some(a) = trimmed.strip_prefix("http://") {
        (false, a)
    } else {
        return Err(bad("is not https://host[:port]"));
    };
    if authority.is_empty()
        || authority.contains(['/', '?', '#', '@'])
        || authority
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(bad("is not https://host[:port] (no path, no user)"));
    }
    let (host, port) = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => (
            &authority[..i],
            authority[i + 1..]
                .parse::<u16>()
                .map_err(|_| bad("has no valid port"))?,
        ),
        _ => (authority, if https { 443 } else { 80 }),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad("names no host"));
    }
    if !https && !LOOPBACK_HOSTS.contains(&host) {
        return Err(bad(
            "is http:// to a host that is not loopback: the API key and key material never cross a network in plaintext",
        ));
    }
    let tls_name = if https {
        Some(
            ServerName::try_from(host.to_string())
                .map_err(|_| bad("names a host that is no TLS server name"))?,
        )
    } else {
        None
    };
    Ok(Endpoint {
        url: trimmed.to_string(),
        host: host.to_string(),
        port,
        authority: authority.to_string(),
        tls_name,
    })
}

/// An instance or key ring id as a header value: 1 to 100 of A-Z a-z 0-9 - _.
fn header_id(field: &str, id: &str) -> Result<HeaderValue, TargetError> {
    if id.is_empty()
        || id.len() > 100
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(TargetError::InvalidConfiguration(format!(
            "{field} {id:?} is not 1 to 100 letters, digits, '-' or '_'"
        )));
    }
    HeaderValue::from_str(id)
        .map_err(|_| TargetError::InvalidConfiguration(format!("{field} {id:?} is no header")))
}

/// A key id (a UUID, or an alias) as a path segment; anything else is refused before a
/// request is made.
fn key_segment(id: &str) -> Result<&str, TargetError> {
    if id.is_empty()
        || id.len() > 128
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(TargetError::Internal(format!(
            "{id:?} is not a key id (1 to 128 of A-Z a-z 0-9 - _)"
        )));
    }
    Ok(id)
}

/// application/x-www-form-urlencoded bytes, without temporary strings.
fn form_encode(out: &mut Vec<u8>, text: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in text {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
}

/// The rustls settings: the given CA, or the system's roots.
fn tls_config(ca_cert_pem: Option<&str>) -> Result<Arc<ClientConfig>, TargetError> {
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
    Ok(Arc::new(config))
}

/// HTTP/1.1 over `io`: one request, its status and at most [`MAX_ANSWER`] bytes of answer.
/// The connection is driven here, beside the request (no task is spawned).
async fn exchange<I>(
    io: I,
    req: http::Request<Full<Bytes>>,
) -> Result<(StatusCode, Zeroizing<Vec<u8>>), BoxError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    let answer = async move {
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await?
            .to_bytes();
        Ok::<_, BoxError>((status, Zeroizing::new(body.to_vec())))
    };
    tokio::pin!(conn);
    tokio::pin!(answer);
    let mut conn_done = false;
    let mut conn_error: Option<hyper::Error> = None;
    loop {
        tokio::select! {
            r = &mut answer => {
                // The connection's own error says more (a TLS alert) than "connection closed".
                return r.map_err(|e| match conn_error.take() {
                    Some(c) if tls_cause(&c).is_some() => Box::new(c) as BoxError,
                    _ => e,
                });
            }
            c = &mut conn, if !conn_done => {
                conn_done = true;
                if let Err(e) = c {
                    conn_error = Some(e);
                }
            }
        }
    }
}

/// Whether `e` or one of its sources is a TLS (rustls) error, and its words.
fn tls_cause(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<rustls::Error>() {
            return Some(t.to_string());
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(t) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                return Some(t.to_string());
            }
        }
        cur = err.source();
    }
    None
}

fn has_source<T: std::error::Error + 'static>(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<T>() {
            return true;
        }
        cur = err.source();
    }
    false
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

fn invalid_answer(a: &Answer, why: &str) -> TargetError {
    TargetError::Internal(format!("{} answered {} {why}", a.call, a.status.as_u16()))
}

fn json(a: &Answer) -> Result<Value, TargetError> {
    serde_json::from_slice(&a.body).map_err(|_| invalid_answer(a, "but not with JSON"))
}

/// The `resources` of a collection (none when the collection is empty).
fn resources<'v>(v: &'v Value, a: &Answer) -> Result<&'v [Value], TargetError> {
    match v.get("resources") {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(list)) => Ok(list),
        Some(_) => Err(invalid_answer(a, "with resources that are not a list")),
    }
}

fn key_from(v: &Value, a: &Answer) -> Result<KmsKey, TargetError> {
    let text = |name: &str| {
        v[name]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| invalid_answer(a, &format!("with a key without {name}")))
    };
    let state = v["state"]
        .as_u64()
        .and_then(|s| u32::try_from(s).ok())
        .ok_or_else(|| invalid_answer(a, "with a key without a numeric state"))?;
    Ok(KmsKey {
        id: text("id")?,
        name: text("name")?,
        state,
        extractable: v["extractable"].as_bool().unwrap_or(false),
        imported: v["imported"].as_bool().unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "unit-test-apikey-0123456789+/=&";

    fn client() -> IbmKmsClient {
        IbmKmsClient::new(
            IbmKmsSettings {
                api_endpoint: "https://us-south.kms.cloud.ibm.com".into(),
                iam_endpoint: "https://iam.cloud.ibm.com/".into(),
                instance_id: "2f8c7a52-4b1e-4d0a-9c3e-5a6b7c8d9e0f".into(),
                key_ring_id: "default".into(),
                ca_cert_pem: None,
            },
            SecretString::from(KEY.to_string()),
        )
        .unwrap()
    }

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            body: Zeroizing::new(body.as_bytes().to_vec()),
            call: "GET https://x/api/v2/keys (correlation-id c)".into(),
        }
    }

    fn kms_body(msg: &str, code: &str, target: &str) -> String {
        serde_json::json!({"metadata": {"collectionType": "application/vnd.ibm.kms.error+json",
            "collectionTotal": 1}, "resources": [{"errorMsg": msg, "reasons": [{"code": code,
            "message": "why", "status": 400, "target": {"type": "field", "name": target}}]}]})
        .to_string()
    }

    #[test]
    fn endpoints_split_and_plaintext_stays_on_loopback() {
        let e = parse_endpoint(
            "api_endpoint",
            "https://api.us-south.hs-crypto.cloud.ibm.com:9730",
        )
        .unwrap();
        assert_eq!(
            (e.host.as_str(), e.port),
            ("api.us-south.hs-crypto.cloud.ibm.com", 9730)
        );
        let e = parse_endpoint("iam_endpoint", "http://[::1]:8080/").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.authority.as_str()),
            ("::1", 8080, "[::1]:8080")
        );
        assert!(e.tls_name.is_none());
        for bad in [
            "http://iam.cloud.ibm.com",
            "ftp://x",
            "https://",
            "https://h/path",
            "https://u@h",
        ] {
            assert!(
                matches!(
                    parse_endpoint("f", bad),
                    Err(TargetError::InvalidConfiguration(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_api_key_is_form_encoded() {
        let mut out = Vec::new();
        form_encode(&mut out, b"a-Z_9.~ +/=&%");
        assert_eq!(out, b"a-Z_9.~%20%2B%2F%3D%26%25");
    }

    #[test]
    fn hpcs_endpoints_name_hs_crypto_actions() {
        let c = client();
        assert_eq!(c.action(Action::Create), "kms.secrets.create");
        let hpcs = IbmKmsClient::new(
            IbmKmsSettings {
                api_endpoint: "https://api.eu-de.hs-crypto.cloud.ibm.com:8989".into(),
                ..c_settings()
            },
            SecretString::from(KEY.to_string()),
        )
        .unwrap();
        assert_eq!(hpcs.action(Action::List), "hs-crypto.secrets.list");
        let c = c.with_iam_service(IamService::Hpcs);
        assert_eq!(
            c.action(Action::ImportTokenRead),
            "hs-crypto.importtoken.read"
        );
    }

    fn c_settings() -> IbmKmsSettings {
        IbmKmsSettings {
            api_endpoint: "https://us-south.kms.cloud.ibm.com".into(),
            iam_endpoint: "https://iam.cloud.ibm.com".into(),
            instance_id: "i".into(),
            key_ring_id: "default".into(),
            ca_cert_pem: None,
        }
    }

    #[test]
    fn kms_errors_are_classified() {
        let c = client();
        let e = c.kms_error(
            &answer(401, r#"{"resources":[{"errorMsg":"Unauthorized"}]}"#),
            Action::List,
        );
        assert!(
            matches!(&e, TargetError::PermissionDenied(n) if n == &["kms.secrets.list"]),
            "{e:?}"
        );
        let e = c.kms_error(
            &answer(
                404,
                &kms_body(
                    "Not Found: Key ring could not be found",
                    "KEY_RING_NOT_FOUND_ERR",
                    "x-kms-key-ring",
                ),
            ),
            Action::List,
        );
        assert!(
            matches!(&e, TargetError::InvalidConfiguration(m) if m.contains("\"default\"") && m.contains("KEY_RING_NOT_FOUND_ERR")),
            "{e:?}"
        );
        let e = c.kms_error(
            &answer(
                400,
                &kms_body("Bad Request", "BAD_HEADER_ERR", "bluemix-instance"),
            ),
            Action::List,
        );
        assert!(matches!(e, TargetError::InvalidConfiguration(_)), "{e:?}");
        let e = c.kms_error(
            &answer(404, r#"{"resources":[{"errorMsg":"Not Found"}]}"#),
            Action::List,
        );
        assert!(
            matches!(&e, TargetError::InvalidConfiguration(m) if m.contains("api_endpoint")),
            "{e:?}"
        );
        let e = c.kms_error(
            &answer(
                400,
                &kms_body(
                    "Bad Request: Key could not be created",
                    "INCORRECT_NONCE_ERR",
                    "",
                ),
            ),
            Action::Create,
        );
        assert!(
            matches!(&e, TargetError::Internal(m) if m.contains("400") && m.contains("INCORRECT_NONCE_ERR") && m.contains("correlation-id c")),
            "{e:?}"
        );
        let e = c.kms_error(
            &answer(
                409,
                &kms_body("Conflict", "KEY_CREATE_IMPORT_ACCESS_ERR", ""),
            ),
            Action::Create,
        );
        assert!(matches!(e, TargetError::NotSupported(_)), "{e:?}");
        assert!(
            matches!(c.kms_error(&answer(503, "busy"), Action::List), TargetError::Network(m) if m.contains("busy"))
        );
        assert!(matches!(
            c.kms_error(&answer(504, ""), Action::List),
            TargetError::TimedOut(_)
        ));
        // A 404 about the key, not the ring or route, is "no such key" for get_key.
        assert!(!c.ring_or_route_error(&answer(
            404,
            &kms_body("Not Found", "KEY_NOT_FOUND_ERR", "")
        )));
        assert!(c.ring_or_route_error(&answer(404, r#"{"resources":[{"errorMsg":"Not Found"}]}"#)));
    }

    #[test]
    fn iam_errors_are_credentials_and_never_repeat_the_key() {
        let c = client();
        let body = format!(
            r#"{{"errorCode":"BXNIM0415E","errorMessage":"Provided API key could not be found: {KEY}"}}"#
        );
        let mut a = answer(400, &body);
        a.call = "POST https://iam.cloud.ibm.com/identity/token".into();
        let e = c.iam_error(&a);
        let text = e.to_string();
        assert!(matches!(e, TargetError::InvalidCredentials(_)), "{text}");
        assert!(text.contains("BXNIM0415E") && !text.contains(KEY), "{text}");
        assert!(matches!(
            c.iam_error(&answer(404, "")),
            TargetError::InvalidConfiguration(_)
        ));
        assert!(!format!("{c:?}").contains(KEY));
    }

    #[test]
    fn keys_and_collections_are_read() {
        let a = answer(200, "");
        let v: Value = serde_json::from_str(
            r#"{"resources":[{"id":"k1","name":"n","state":5,"extractable":false,"imported":true}]}"#,
        )
        .unwrap();
        let k = key_from(&resources(&v, &a).unwrap()[0], &a).unwrap();
        assert_eq!(
            k,
            KmsKey {
                id: "k1".into(),
                name: "n".into(),
                state: 5,
                extractable: false,
                imported: true
            }
        );
        let empty: Value = serde_json::from_str(r#"{"metadata":{"collectionTotal":0}}"#).unwrap();
        assert!(resources(&empty, &a).unwrap().is_empty());
        assert!(key_from(&serde_json::json!({"id": "k", "name": "n"}), &a).is_err());
        assert!(key_segment("../x").is_err() && key_segment("").is_err());
        assert!(key_segment("2f8c7a52-4b1e-4d0a-9c3e-5a6b7c8d9e0f").is_ok());
    }
}
