//! The `xks` keystore target: an AWS KMS external key store proxy
//! (aws-kms-xksproxy-api-spec v1.0.3), reached the way AWS KMS reaches one — HTTP/1.1 POST
//! `<uri_endpoint><uri_path>/health`, SigV4 by AWS's own signer (the `aws-sigv4` crate,
//! service `kms-xks-proxy`), over rustls with an optional CA of its own and an optional
//! client certificate. Connecting is GetHealthStatus; every failure is classified into
//! AWS's `XKS_PROXY_*` connection error codes. No message ever holds the secret.

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tokio::runtime::Runtime;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use zeroize::Zeroizing;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::{ExternalCall, InstallError, ManagedKey, ProbeMode, RemoteCopy, Target, TargetError};
use crate::domain::xks::{ExternalCiphertext, ExternalKeyMetadata};
use crate::domain::{
    validate_xks_access_key_id, validate_xks_secret, DomainError, KeystoreConfig, MAX_XKS_PEM,
};

/// The proxy's SigV4 service name.
pub const SERVICE: &str = "kms-xks-proxy";
/// Longest wait for DNS, TCP and the TLS handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest time one request may take, connection included (AWS KMS allows a proxy 250 ms
/// per request; a health check from keyorch is not that tight).
const CALL_DEADLINE: Duration = Duration::from_secs(5);
/// Largest answer read (the spec's answers are far smaller).
const MAX_ANSWER: usize = 64 * 1024;
/// Longest piece of the proxy's errorMessage repeated in our messages.
const MAX_QUOTED: usize = 300;

/// What is sealed for an xks keystore: the SigV4 secret and the client key (JSON, in
/// zeroizing memory on both sides of the seal).
#[derive(serde::Serialize, serde::Deserialize, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
pub struct XksSealedCredentials {
    pub secret_access_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_pem: Option<String>,
}

impl XksSealedCredentials {
    /// Reads the unsealed JSON back.
    pub fn parse(unsealed: &SecretString) -> Result<XksSealedCredentials, TargetError> {
        serde_json::from_str(unsealed.expose_secret()).map_err(|_| {
            TargetError::InvalidCredentials(
                "the stored xks credentials cannot be read; send xks_credentials again".into(),
            )
        })
    }
}

/// How to reach and authenticate to one proxy.
pub struct XksConfig {
    /// `https://host[:port]` (or `http://` to loopback), no path.
    pub uri_endpoint: String,
    /// `[/prefix]/kms/xks/v1`.
    pub uri_path: String,
    /// PEM certificates to trust for the proxy's certificate (None: the system's roots).
    pub ca_cert_pem: Option<String>,
    /// PEM client certificate chain for mutual TLS, with its key.
    pub client_cert_pem: Option<String>,
    pub client_key_pem: Option<SecretString>,
    pub access_key_id: String,
    pub secret_access_key: SecretString,
    /// The region requests are signed for (AWS KMS signs with its own; the spec leaves the
    /// check to the proxy's configuration).
    pub signing_region: String,
}

impl fmt::Debug for XksConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XksConfig")
            .field("uri_endpoint", &self.uri_endpoint)
            .field("uri_path", &self.uri_path)
            .field("ca_cert_pem", &self.ca_cert_pem.is_some())
            .field("client_cert_pem", &self.client_cert_pem.is_some())
            .field("access_key_id", &self.access_key_id)
            .field("signing_region", &self.signing_region)
            .finish_non_exhaustive()
    }
}

/// One external key manager of the proxy's fleet, as GetHealthStatus reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EkmMember {
    pub id: String,
    pub model: String,
    /// `ACTIVE`, `DEGRADED` or `UNAVAILABLE`.
    pub health_status: String,
}

/// A GetHealthStatus answer whose fleet can serve requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XksHealth {
    pub fleet_size: u64,
    pub vendor: String,
    pub model: String,
    pub ekm_vendor: String,
    pub members: Vec<EkmMember>,
}

/// A connected-to-nothing-yet proxy: configuration checked, TLS settings built.
pub struct XksTarget {
    /// `https` or `http`.
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    host: String,
    port: u16,
    /// The Host header: `host[:port]` as in uri_endpoint.
    authority: String,
    uri_endpoint: String,
    uri_path: String,
    access_key_id: String,
    secret: SecretString,
    signing_region: String,
}

impl fmt::Debug for XksTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XksTarget")
            .field("uri_endpoint", &self.uri_endpoint)
            .field("uri_path", &self.uri_path)
            .finish_non_exhaustive()
    }
}

fn runtime() -> Result<&'static Runtime, TargetError> {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("keyorch-xks")
        .enable_all()
        .build()
        .map_err(|e| TargetError::Internal(format!("cannot start the XKS client runtime: {e}")))?;
    Ok(RUNTIME.get_or_init(|| rt))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// An xks keystore's credential, checked against its configuration, as the bytes to seal
/// (the JSON [`XksSealedCredentials::parse`] reads). The configuration takes its access key
/// id from the credential (an empty one is filled for the check) and is validated first;
/// then the access key id must be the configuration's, the secret follows AWS's rule, and a
/// client key comes exactly with a client certificate and belongs to it (the TLS settings
/// build).
pub fn credential_bytes(
    config: &KeystoreConfig,
    access_key_id: &str,
    secret_access_key: &SecretString,
    client_key_pem: Option<&SecretString>,
) -> Result<Zeroizing<Vec<u8>>, DomainError> {
    let mut config = config.clone();
    let KeystoreConfig::Xks {
        uri_endpoint,
        ca_cert_pem,
        client_cert_pem,
        access_key_id: configured,
        ..
    } = &mut config
    else {
        return Err(DomainError::invalid(
            "xks_credentials",
            "fit an xks keystore only",
        ));
    };
    if configured.is_empty() {
        configured.push_str(access_key_id);
    }
    let (uri_endpoint, ca_cert_pem, client_cert_pem, configured) = (
        uri_endpoint.clone(),
        ca_cert_pem.clone(),
        client_cert_pem.clone(),
        configured.clone(),
    );
    config.validate()?;
    validate_xks_access_key_id("xks_credentials.access_key_id", access_key_id)?;
    if access_key_id != configured {
        return Err(DomainError::invalid(
            "xks.access_key_id",
            "is output only: it is xks_credentials.access_key_id; leave it empty",
        ));
    }
    validate_xks_secret(
        "xks_credentials.secret_access_key",
        secret_access_key.expose_secret(),
    )?;
    if let Some(key) = client_key_pem {
        if key.expose_secret().len() > MAX_XKS_PEM {
            return Err(DomainError::invalid(
                "xks_credentials.client_key_pem",
                format!("must be at most {MAX_XKS_PEM} bytes"),
            ));
        }
    }
    if uri_endpoint.starts_with("https://") || client_key_pem.is_some() {
        tls_config(
            ca_cert_pem.as_deref(),
            client_cert_pem.as_deref(),
            client_key_pem,
        )
        .map_err(|(field, rule)| DomainError::invalid(field, rule))?;
    }
    let sealed = XksSealedCredentials {
        secret_access_key: secret_access_key.expose_secret().to_string(),
        client_key_pem: client_key_pem.map(|k| k.expose_secret().to_string()),
    };
    // Two strings into JSON: serde_json cannot fail here, but a failure is still an error.
    serde_json::to_vec(&sealed)
        .map(Zeroizing::new)
        .map_err(|e| DomainError::invalid("xks_credentials", format!("cannot be encoded: {e}")))
}

/// The rustls client settings of a proxy: its CA (or the system's roots) and the client
/// certificate with its key, which must belong together. The error names the field at
/// fault (`xks.ca_cert_pem`, `xks.client_cert_pem`, `xks_credentials.client_key_pem`).
pub fn tls_config(
    ca_cert_pem: Option<&str>,
    client_cert_pem: Option<&str>,
    client_key_pem: Option<&SecretString>,
) -> Result<Arc<ClientConfig>, (&'static str, String)> {
    let mut roots = RootCertStore::empty();
    match ca_cert_pem {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|e| ("xks.ca_cert_pem", format!("is not PEM: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| ("xks.ca_cert_pem", format!("cannot be trusted: {e}")))?;
            }
            if roots.is_empty() {
                return Err(("xks.ca_cert_pem", "holds no certificate".into()));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
        }
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ("xks.uri_endpoint", format!("TLS settings: {e}")))?
        .with_root_certificates(roots);
    let mut config = match (client_cert_pem, client_key_pem) {
        (None, None) => builder.with_no_client_auth(),
        (Some(_), None) => {
            return Err((
                "xks_credentials.client_key_pem",
                "is required with xks.client_cert_pem (the certificate's private key)".into(),
            ))
        }
        (None, Some(_)) => {
            return Err((
                "xks_credentials.client_key_pem",
                "is only taken together with xks.client_cert_pem".into(),
            ))
        }
        (Some(cert), Some(key)) => {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .collect::<Result<_, _>>()
                    .map_err(|e| ("xks.client_cert_pem", format!("is not PEM: {e}")))?;
            if chain.is_empty() {
                return Err(("xks.client_cert_pem", "holds no certificate".into()));
            }
            let key =
                PrivateKeyDer::from_pem_slice(key.expose_secret().as_bytes()).map_err(|_| {
                    (
                        "xks_credentials.client_key_pem",
                        "is not a PEM private key (PKCS#8, PKCS#1 or SEC1)".to_string(),
                    )
                })?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                (
                    "xks_credentials.client_key_pem",
                    format!("does not fit xks.client_cert_pem: {e}"),
                )
            })?
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// `(https, host, port, authority)` of a checked `uri_endpoint`.
fn endpoint_parts(url: &str) -> Result<(bool, String, u16, String), TargetError> {
    let bad =
        || TargetError::XksInvalidConfiguration(format!("{url:?} is not https://host[:port]"));
    let (https, authority) = if let Some(a) = url.strip_prefix("https://") {
        (true, a)
    } else if let Some(a) = url.strip_prefix("http://") {
        (false, a)
    } else {
        return Err(bad());
    };
    let (host, port) = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => (
            &authority[..i],
            authority[i + 1..].parse::<u16>().map_err(|_| bad())?,
        ),
        _ => (authority, if https { 443 } else { 80 }),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad());
    }
    Ok((https, host.to_string(), port, authority.to_string()))
}

/// The proxy's own words, shortened and without control characters or the secret.
fn quoted(text: &str, secret: &str) -> String {
    // Redacted before it is shortened, so that a secret cut in two by the limit is not
    // left half in the text.
    let redacted = if secret.is_empty() {
        text.to_string()
    } else {
        text.replace(secret, "[secret]")
    };
    redacted
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_QUOTED)
        .collect()
}

/// Whether `e` or one of its sources is a TLS (rustls) error, and its words.
fn tls_cause(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<rustls::Error>() {
            return Some(t.to_string());
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                if let Some(t) = inner.downcast_ref::<rustls::Error>() {
                    return Some(t.to_string());
                }
            }
        }
        cur = err.source();
    }
    None
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

/// Either stream the request goes over.
enum Stream {
    Plain(tokio::net::TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>),
}

impl XksTarget {
    /// Checks the configuration and builds the TLS settings. Sends nothing:
    /// [`XksTarget::health`] is the first request.
    pub fn open(cfg: XksConfig) -> Result<XksTarget, TargetError> {
        let (https, host, port, authority) = endpoint_parts(&cfg.uri_endpoint)?;
        if cfg.access_key_id.is_empty() || cfg.secret_access_key.expose_secret().is_empty() {
            return Err(TargetError::InvalidCredentials(
                "the access key id or the secret access key is empty".into(),
            ));
        }
        let tls = if https {
            let config = tls_config(
                cfg.ca_cert_pem.as_deref(),
                cfg.client_cert_pem.as_deref(),
                cfg.client_key_pem.as_ref(),
            )
            .map_err(|(field, why)| TargetError::XksInvalidTls(format!("{field} {why}")))?;
            let name = ServerName::try_from(host.clone()).map_err(|e| {
                TargetError::XksInvalidConfiguration(format!(
                    "{host:?} is not a TLS server name: {e}"
                ))
            })?;
            Some((config, name))
        } else {
            if cfg.client_cert_pem.is_some() {
                return Err(TargetError::XksInvalidTls(
                    "a client certificate needs an https:// uri_endpoint".into(),
                ));
            }
            None
        };
        Ok(XksTarget {
            tls,
            host,
            port,
            authority,
            uri_endpoint: cfg.uri_endpoint,
            uri_path: cfg.uri_path,
            access_key_id: cfg.access_key_id,
            secret: cfg.secret_access_key,
            signing_region: cfg.signing_region,
        })
    }

    /// The URL of one operation, e.g. `health`.
    fn url(&self, op: &str) -> String {
        format!("{}{}/{op}", self.uri_endpoint, self.uri_path)
    }

    /// GetHealthStatus: Ok when at least one external key manager is ACTIVE or DEGRADED.
    /// Errors: `InvalidCredentials` (401), `XksAccessDenied` (403),
    /// `XksInvalidConfiguration` (404), `XksInvalidResponse`, `XksInvalidTls`,
    /// `XksNotReachable` (refused, DNS, or every manager UNAVAILABLE), `XksTimedOut`.
    pub fn health(&self) -> Result<XksHealth, TargetError> {
        let body = serde_json::json!({
            "requestMetadata": {
                "kmsRequestId": uuid::Uuid::new_v4().to_string(),
                "kmsOperation": "KmsHealthCheck",
            }
        });
        let (url, status, answer) = self.call("health", &body)?;
        self.health_answer(&url, status, &answer)
    }

    /// One operation (`health`, `keys/{id}/encrypt`, ...) within [`CALL_DEADLINE`]: its URL,
    /// status and answer (zeroized when dropped: a Decrypt's answer is plaintext).
    fn call(
        &self,
        op: &str,
        body: &Value,
    ) -> Result<(String, http::StatusCode, Zeroizing<Vec<u8>>), TargetError> {
        let url = self.url(op);
        let body = body.to_string();
        let rt = runtime()?;
        let (status, answer) = rt.block_on(async {
            match tokio::time::timeout(CALL_DEADLINE, self.post(&url, body)).await {
                Ok(r) => r,
                Err(_) => Err(TargetError::XksTimedOut(format!(
                    "POST {url}: no answer within {} s",
                    CALL_DEADLINE.as_secs()
                ))),
            }
        })?;
        Ok((url, status, Zeroizing::new(answer)))
    }

    /// A proxy's error answer, classified: the spec's error names where they say more than
    /// the status (a missing key, a disabled key, a ciphertext it cannot open).
    fn error_answer(&self, url: &str, status: http::StatusCode, answer: &[u8]) -> TargetError {
        let secret = self.secret.expose_secret();
        let json: Option<Value> = serde_json::from_slice(answer).ok();
        let (name, message) = match &json {
            Some(v) => (
                v["errorName"].as_str().unwrap_or("").to_string(),
                v["errorMessage"].as_str().unwrap_or("").to_string(),
            ),
            None => (String::new(), String::from_utf8_lossy(answer).to_string()),
        };
        let what = format!(
            "POST {url} answered {status}{}{}",
            if name.is_empty() {
                String::new()
            } else {
                format!(" {}", quoted(&name, secret))
            },
            if message.trim().is_empty() {
                String::new()
            } else {
                format!(": {}", quoted(message.trim(), secret))
            }
        );
        match (status.as_u16(), name.as_str()) {
            (401, _) => TargetError::InvalidCredentials(format!(
                "{what} (access key id {}; check the secret access key and the proxy's clock)",
                self.access_key_id
            )),
            (403, _) => TargetError::XksAccessDenied(what),
            (404, "KeyNotFoundException") => TargetError::XksKeyNotFound(what),
            (404, _) => TargetError::XksInvalidConfiguration(format!(
                "{what} (check xks.uri_path {:?})",
                self.uri_path
            )),
            (400, "InvalidCiphertextException") => TargetError::InvalidCiphertext(what),
            (400, "InvalidStateException" | "InvalidKeyUsageException") => {
                TargetError::XksKeyInvalid(what)
            }
            (503, "DependencyTimeoutException") => TargetError::XksTimedOut(what),
            _ => TargetError::XksInvalidResponse(what),
        }
    }

    /// Reads a GetHealthStatus answer.
    fn health_answer(
        &self,
        url: &str,
        status: http::StatusCode,
        answer: &[u8],
    ) -> Result<XksHealth, TargetError> {
        let secret = self.secret.expose_secret();
        if status != http::StatusCode::OK {
            // A key-level error name has no business in a health answer.
            return Err(match self.error_answer(url, status, answer) {
                TargetError::XksKeyNotFound(m)
                | TargetError::XksKeyInvalid(m)
                | TargetError::InvalidCiphertext(m) => TargetError::XksInvalidResponse(m),
                other => other,
            });
        }
        let json: Option<Value> = serde_json::from_slice(answer).ok();
        let invalid = |why: &str| {
            TargetError::XksInvalidResponse(format!(
                "POST {url} answered 200 but {why} (GetHealthStatus of aws-kms-xksproxy-api-spec v1.0.3)"
            ))
        };
        let v = json.ok_or_else(|| invalid("not with JSON"))?;
        let fleet_size = v["xksProxyFleetSize"]
            .as_u64()
            .ok_or_else(|| invalid("without a numeric xksProxyFleetSize"))?;
        let details = v["ekmFleetDetails"]
            .as_array()
            .ok_or_else(|| invalid("without an ekmFleetDetails list"))?;
        if details.is_empty() {
            return Err(invalid("with an empty ekmFleetDetails list"));
        }
        let mut members = Vec::with_capacity(details.len());
        for m in details {
            let health_status = m["healthStatus"]
                .as_str()
                .filter(|s| matches!(*s, "ACTIVE" | "DEGRADED" | "UNAVAILABLE"))
                .ok_or_else(|| {
                    invalid("with an ekmFleetDetails entry whose healthStatus is not ACTIVE, DEGRADED or UNAVAILABLE")
                })?;
            members.push(EkmMember {
                id: quoted(m["id"].as_str().unwrap_or(""), secret),
                model: quoted(m["model"].as_str().unwrap_or(""), secret),
                health_status: health_status.to_string(),
            });
        }
        let text = |k: &str| quoted(v[k].as_str().unwrap_or(""), secret);
        let health = XksHealth {
            fleet_size,
            vendor: text("xksProxyVendor"),
            model: text("xksProxyModel"),
            ekm_vendor: text("ekmVendor"),
            members,
        };
        if health
            .members
            .iter()
            .all(|m| m.health_status == "UNAVAILABLE")
        {
            return Err(TargetError::XksNotReachable(format!(
                "POST {url}: every external key manager of the proxy is UNAVAILABLE ({})",
                health
                    .members
                    .iter()
                    .map(|m| if m.id.is_empty() {
                        "?".to_string()
                    } else {
                        m.id.clone()
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Ok(health)
    }

    /// Resolves, connects (TLS when https) and completes the handshakes.
    async fn connect(&self, url: &str) -> Result<Stream, TargetError> {
        let addrs: Vec<SocketAddr> = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::lookup_host((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| {
            TargetError::XksTimedOut(format!("resolving {}: no answer in time", self.host))
        })?
        .map_err(|e| TargetError::XksNotReachable(format!("resolving {}: {e}", self.host)))?
        .collect();
        let mut last = None;
        let mut tcp = None;
        for addr in addrs {
            match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr)).await
            {
                Ok(Ok(s)) => {
                    tcp = Some(s);
                    break;
                }
                Ok(Err(e)) => {
                    last = Some(TargetError::XksNotReachable(format!("{url}: {addr}: {e}")))
                }
                Err(_) => {
                    last = Some(TargetError::XksTimedOut(format!(
                        "{url}: connecting to {addr}: no answer within {} s",
                        CONNECT_TIMEOUT.as_secs()
                    )))
                }
            }
        }
        let tcp = tcp.ok_or_else(|| {
            last.unwrap_or_else(|| {
                TargetError::XksNotReachable(format!("{url}: {} has no address", self.host))
            })
        })?;
        let _ = tcp.set_nodelay(true);
        let Some((config, name)) = &self.tls else {
            return Ok(Stream::Plain(tcp));
        };
        let connector = tokio_rustls::TlsConnector::from(config.clone());
        match tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name.clone(), tcp)).await {
            Ok(Ok(s)) => Ok(Stream::Tls(Box::new(s))),
            Ok(Err(e)) => Err(TargetError::XksInvalidTls(format!(
                "TLS handshake with {}: {}",
                self.authority,
                tls_cause(&e).unwrap_or_else(|| chain(&e))
            ))),
            Err(_) => Err(TargetError::XksTimedOut(format!(
                "TLS handshake with {}: no answer within {} s",
                self.authority,
                CONNECT_TIMEOUT.as_secs()
            ))),
        }
    }

    /// One signed POST; the status and the answer's bytes.
    async fn post(
        &self,
        url: &str,
        body: String,
    ) -> Result<(http::StatusCode, Vec<u8>), TargetError> {
        let req = self.signed(url, body)?;
        let stream = self.connect(url).await?;
        let tls = matches!(stream, Stream::Tls(_));
        let sent = match stream {
            Stream::Plain(s) => exchange(TokioIo::new(s), req).await,
            Stream::Tls(s) => exchange(TokioIo::new(*s), req).await,
        };
        sent.map_err(|e| {
            if let Some(t) = tls_cause(e.as_ref()) {
                return TargetError::XksInvalidTls(format!(
                    "POST {url}: TLS: {t} (the proxy may have refused the client certificate)"
                ));
            }
            let words = chain(e.as_ref());
            if tls && closed_early(e.as_ref()) {
                TargetError::XksInvalidTls(format!(
                    "POST {url}: the proxy closed the TLS connection before answering ({words}); it may require or refuse the client certificate"
                ))
            } else {
                TargetError::XksInvalidResponse(format!("POST {url}: {words}"))
            }
        })
    }

    /// The request for `url`, signed now with SigV4 (host, x-amz-date, content-type).
    fn signed(&self, url: &str, body: String) -> Result<http::Request<Full<Bytes>>, TargetError> {
        let internal = |e: &dyn fmt::Display| TargetError::Internal(format!("SigV4 signing: {e}"));
        let path = url
            .strip_prefix(&self.uri_endpoint)
            .unwrap_or(url)
            .to_string();
        let mut req = http::Request::builder()
            .method("POST")
            .uri(&path)
            .header("host", &self.authority)
            .header("content-type", "application/json")
            .body(body.into_bytes())
            .map_err(|e| internal(&e))?;
        let identity = Credentials::new(
            &self.access_key_id,
            self.secret.expose_secret(),
            None,
            None,
            "keyorch-xks-keystore",
        )
        .into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.signing_region)
            .name(SERVICE)
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| internal(&e))?
            .into();
        let headers: Vec<(String, String)> = req
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let signable = SignableRequest::new(
            "POST",
            url,
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            SignableBody::Bytes(req.body()),
        )
        .map_err(|e| internal(&e))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| internal(&e))?
            .into_parts();
        instructions.apply_to_request_http1x(&mut req);
        Ok(req.map(|b| Full::new(Bytes::from(b))))
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// HTTP/1.1 over `io`: one request, its status and at most [`MAX_ANSWER`] bytes of answer.
async fn exchange<I>(
    io: I,
    req: http::Request<Full<Bytes>>,
) -> Result<(http::StatusCode, Vec<u8>), BoxError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    let driver = tokio::spawn(conn);
    let result = async {
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await?
            .to_bytes()
            .to_vec();
        Ok::<_, BoxError>((status, body))
    }
    .await;
    match result {
        Ok(answer) => {
            driver.abort();
            Ok(answer)
        }
        // The connection's own error says more (e.g. the TLS alert of a proxy that refused
        // the client certificate after a TLS 1.3 handshake) than "connection closed".
        Err(e) => match tokio::time::timeout(Duration::from_secs(1), driver).await {
            Ok(Ok(Err(conn_error))) if tls_cause(&conn_error).is_some() => {
                Err(Box::new(conn_error))
            }
            _ => Err(e),
        },
    }
}

/// Whether a request failed because the connection went away before any answer.
fn closed_early(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            if h.is_canceled() || h.is_closed() || h.is_incomplete_message() {
                return true;
            }
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            ) {
                return true;
            }
        }
        cur = err.source();
    }
    false
}

/// An xks keystore holds references to external keys, not installed copies: the service
/// never installs into one (`KeystoreConfig::holds_key_copies`), and these refuse in case
/// it ever does.
fn no_copies() -> TargetError {
    TargetError::NotSupported(
        "an xks keystore holds references to external keys, not installed copies".into(),
    )
}

/// The request metadata of a call on an external key (the spec's `requestMetadata`):
/// keyorch's caller as awsPrincipalArn and keyorch's key id as kmsKeyArn, for the proxy's
/// log and its own authorization; keyorch is no AWS account and sends no ARN of one.
fn request_metadata(call: &ExternalCall<'_>, with_key: bool) -> Value {
    let mut m = serde_json::json!({
        "awsPrincipalArn": call.principal,
        "kmsOperation": call.operation,
        "kmsRequestId": uuid::Uuid::new_v4().to_string(),
    });
    if with_key {
        m["kmsKeyArn"] = Value::from(call.key_id);
    }
    m
}

/// A path segment of the external key id (its syntax, A-Z a-z 0-9 - . _, needs no escaping;
/// anything else is refused before a request is made).
fn key_path(external_key_id: &str, op: &str) -> Result<String, TargetError> {
    if !crate::domain::xks::valid_external_key_id(external_key_id) {
        return Err(TargetError::XksKeyInvalid(format!(
            "{external_key_id:?} is not an external key id (1 to 128 of A-Z a-z 0-9 - . _)"
        )));
    }
    Ok(format!("keys/{external_key_id}/{op}"))
}

/// A base64 field of a 200 answer.
fn b64_field(v: &Value, name: &str, url: &str) -> Result<Vec<u8>, TargetError> {
    let text = v[name].as_str().ok_or_else(|| {
        TargetError::XksInvalidResponse(format!("POST {url} answered 200 without {name}"))
    })?;
    STANDARD.decode(text).map_err(|_| {
        TargetError::XksInvalidResponse(format!(
            "POST {url} answered 200 with {name} that is not base64"
        ))
    })
}

impl XksTarget {
    fn ok_json(
        &self,
        url: &str,
        status: http::StatusCode,
        answer: &[u8],
    ) -> Result<Value, TargetError> {
        if status != http::StatusCode::OK {
            return Err(self.error_answer(url, status, answer));
        }
        serde_json::from_slice(answer).map_err(|_| {
            TargetError::XksInvalidResponse(format!("POST {url} answered 200 but not with JSON"))
        })
    }
}

impl Target for XksTarget {
    fn probe(
        &self,
        keystore_id: &str,
        mode: ProbeMode,
        _connected: bool,
    ) -> Result<Option<String>, TargetError> {
        let h = self.health()?;
        if mode != ProbeMode::Heartbeat {
            tracing::info!(
                keystore = %keystore_id,
                fleet_size = h.fleet_size,
                vendor = %h.vendor,
                model = %h.model,
                ekm_vendor = %h.ekm_vendor,
                members = ?h.members.iter().map(|m| format!("{} {}", m.id, m.health_status)).collect::<Vec<_>>(),
                "XKS proxy health"
            );
        }
        Ok(None)
    }

    fn install(
        &self,
        _hsm: &crate::hsm::Hsm,
        _material: &crate::hsm::KeyRef<'_>,
        _label: &str,
    ) -> Result<String, InstallError> {
        Err(no_copies().into())
    }

    fn confirm_install(
        &self,
        _key: &ManagedKey<'_>,
        _label: &str,
        _remote_id: &str,
    ) -> Result<(), InstallError> {
        Err(no_copies().into())
    }

    fn uninstall(&self, _label: &str) -> Result<bool, TargetError> {
        Err(no_copies())
    }

    /// The external key recorded for the key (`recorded_remote_id`), by its metadata: None
    /// when the proxy does not know it, not `enabled` when its metadata does not allow
    /// Encrypt and Decrypt (the reason in `detail`).
    fn copy(&self, key: &ManagedKey<'_>, _label: &str) -> Result<Option<RemoteCopy>, TargetError> {
        let call = ExternalCall {
            external_key_id: key.recorded_remote_id,
            key_id: "",
            principal: "keyorchd",
            operation: "DescribeKey",
        };
        match self.external_key_metadata(&call) {
            Ok(m) => {
                let problem = m.problem();
                Ok(Some(RemoteCopy {
                    same: true,
                    enabled: problem.is_none(),
                    kcv: String::new(),
                    remote_id: key.recorded_remote_id.to_string(),
                    detail: problem.unwrap_or_default(),
                }))
            }
            Err(TargetError::XksKeyNotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn external_key(&self, external_key_id: &str) -> Result<ExternalKeyMetadata, TargetError> {
        self.external_key_metadata(&ExternalCall {
            external_key_id,
            key_id: "",
            principal: "keyorchd",
            operation: "CreateKey",
        })
    }

    fn external_encrypt(
        &self,
        call: &ExternalCall<'_>,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<ExternalCiphertext, TargetError> {
        let mut body = serde_json::json!({
            "requestMetadata": request_metadata(call, true),
            "plaintext": STANDARD.encode(plaintext),
            "encryptionAlgorithm": "AES_GCM",
            "ciphertextDataIntegrityValueAlgorithm": "SHA_256",
        });
        if !aad.is_empty() {
            body["additionalAuthenticatedData"] = Value::from(STANDARD.encode(aad));
        }
        let sent = self.call(&key_path(call.external_key_id, "encrypt")?, &body);
        // The request held the plaintext (base64): wipe it.
        if let Some(Value::String(p)) = body.get_mut("plaintext") {
            zeroize::Zeroize::zeroize(p);
        }
        let (url, status, answer) = sent?;
        let v = self.ok_json(&url, status, &answer)?;
        let sealed = ExternalCiphertext {
            iv: b64_field(&v, "initializationVector", &url)?,
            metadata: match v.get("ciphertextMetadata") {
                None | Some(Value::Null) => Vec::new(),
                Some(_) => b64_field(&v, "ciphertextMetadata", &url)?,
            },
            ciphertext: b64_field(&v, "ciphertext", &url)?,
            tag: b64_field(&v, "authenticationTag", &url)?,
        };
        sealed.check().map_err(|why| {
            TargetError::XksInvalidResponse(format!("POST {url} answered 200 but its {why}"))
        })?;
        // Asked for: the proxy's integrity value must be the one of what it returned (the
        // spec's Appendix C), or the answer was corrupted on its way.
        let cdiv = b64_field(&v, "ciphertextDataIntegrityValue", &url)?;
        let expected = crate::domain::xks::cdiv(
            aad,
            &sealed.metadata,
            &sealed.iv,
            &sealed.ciphertext,
            &sealed.tag,
        );
        if cdiv != expected {
            return Err(TargetError::XksInvalidResponse(format!(
                "POST {url} answered 200 with a ciphertextDataIntegrityValue that is not SHA-256 of what it returned"
            )));
        }
        Ok(sealed)
    }

    fn external_decrypt(
        &self,
        call: &ExternalCall<'_>,
        sealed: &ExternalCiphertext,
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, TargetError> {
        let mut body = serde_json::json!({
            "requestMetadata": request_metadata(call, true),
            "ciphertext": STANDARD.encode(&sealed.ciphertext),
            "encryptionAlgorithm": "AES_GCM",
            "initializationVector": STANDARD.encode(&sealed.iv),
            "authenticationTag": STANDARD.encode(&sealed.tag),
        });
        if !aad.is_empty() {
            body["additionalAuthenticatedData"] = Value::from(STANDARD.encode(aad));
        }
        if !sealed.metadata.is_empty() {
            body["ciphertextMetadata"] = Value::from(STANDARD.encode(&sealed.metadata));
        }
        let (url, status, answer) =
            self.call(&key_path(call.external_key_id, "decrypt")?, &body)?;
        let mut v = self.ok_json(&url, status, &answer)?;
        let plaintext = b64_field(&v, "plaintext", &url).map(Zeroizing::new);
        if let Some(Value::String(p)) = v.get_mut("plaintext") {
            zeroize::Zeroize::zeroize(p);
        }
        plaintext
    }
}

impl XksTarget {
    /// GetKeyMetadata.
    fn external_key_metadata(
        &self,
        call: &ExternalCall<'_>,
    ) -> Result<ExternalKeyMetadata, TargetError> {
        let body = serde_json::json!({ "requestMetadata": request_metadata(call, false) });
        let (url, status, answer) =
            self.call(&key_path(call.external_key_id, "metadata")?, &body)?;
        let v = self.ok_json(&url, status, &answer)?;
        let secret = self.secret.expose_secret();
        let text = |name: &str| {
            v[name].as_str().map(|t| quoted(t, secret)).ok_or_else(|| {
                TargetError::XksInvalidResponse(format!(
                    "POST {url} answered 200 without {name} (GetKeyMetadata of aws-kms-xksproxy-api-spec v1.0.3)"
                ))
            })
        };
        let key_spec = text("keySpec")?;
        let key_status = text("keyStatus")?;
        let key_usage = v["keyUsage"]
            .as_array()
            .ok_or_else(|| {
                TargetError::XksInvalidResponse(format!(
                    "POST {url} answered 200 without a keyUsage list"
                ))
            })?
            .iter()
            .filter_map(|u| u.as_str().map(|t| quoted(t, secret)))
            .collect();
        Ok(ExternalKeyMetadata {
            key_spec,
            key_usage,
            key_status,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> XksTarget {
        XksTarget::open(XksConfig {
            uri_endpoint: "http://127.0.0.1:1".into(),
            uri_path: "/keyorch/kms/xks/v1".into(),
            ca_cert_pem: None,
            client_cert_pem: None,
            client_key_pem: None,
            access_key_id: "AAAAAAAAAAAAAAAAAAAA".into(),
            secret_access_key: SecretString::from(
                "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2U=".to_string(),
            ),
            signing_region: "us-east-1".into(),
        })
        .unwrap()
    }

    fn answer(status: u16, body: &str) -> Result<XksHealth, TargetError> {
        target().health_answer(
            "http://127.0.0.1:1/keyorch/kms/xks/v1/health",
            http::StatusCode::from_u16(status).unwrap(),
            body.as_bytes(),
        )
    }

    #[test]
    fn health_answers_are_classified_as_aws_kms_does() {
        let ok = r#"{"xksProxyFleetSize":2,"xksProxyVendor":"v","xksProxyModel":"m","ekmVendor":"e",
            "ekmFleetDetails":[{"id":"a","model":"x","healthStatus":"UNAVAILABLE"},{"id":"b","model":"y","healthStatus":"DEGRADED"}]}"#;
        let h = answer(200, ok).unwrap();
        assert_eq!(h.fleet_size, 2);
        assert_eq!(h.members[1].health_status, "DEGRADED");
        let down = r#"{"xksProxyFleetSize":1,"ekmFleetDetails":[{"id":"a","healthStatus":"UNAVAILABLE"}]}"#;
        assert!(
            matches!(answer(200, down), Err(TargetError::XksNotReachable(m)) if m.contains("UNAVAILABLE"))
        );
        for bad in [
            "not json",
            r#"{"ekmFleetDetails":[]}"#,
            r#"{"xksProxyFleetSize":1}"#,
            r#"{"xksProxyFleetSize":1,"ekmFleetDetails":[]}"#,
            r#"{"xksProxyFleetSize":1,"ekmFleetDetails":[{"healthStatus":"FINE"}]}"#,
        ] {
            assert!(
                matches!(answer(200, bad), Err(TargetError::XksInvalidResponse(_))),
                "{bad}"
            );
        }
        let e = |name: &str| format!(r#"{{"errorName":"{name}","errorMessage":"why"}}"#);
        let r = answer(401, &e("AuthenticationFailedException"));
        assert!(
            matches!(&r, Err(TargetError::InvalidCredentials(m)) if m.contains("401") && m.contains("AuthenticationFailedException") && m.contains("why")),
            "{r:?}"
        );
        assert!(matches!(
            answer(403, &e("AccessDeniedException")),
            Err(TargetError::XksAccessDenied(_))
        ));
        assert!(matches!(
            answer(404, &e("InvalidUriPathException")),
            Err(TargetError::XksInvalidConfiguration(_))
        ));
        assert!(matches!(
            answer(503, &e("DependencyTimeoutException")),
            Err(TargetError::XksTimedOut(_))
        ));
        assert!(matches!(
            answer(500, &e("InternalException")),
            Err(TargetError::XksInvalidResponse(_))
        ));
        assert!(matches!(
            answer(302, ""),
            Err(TargetError::XksInvalidResponse(_))
        ));
    }

    #[test]
    fn the_secret_is_never_repeated() {
        let secret = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2U=";
        let body = format!(
            r#"{{"errorName":"AuthenticationFailedException","errorMessage":"bad {secret}"}}"#
        );
        let e = answer(401, &body).unwrap_err().to_string();
        assert!(!e.contains(secret), "{e}");
        assert!(!format!("{:?}", target()).contains(secret));
    }

    #[test]
    fn endpoints_split_into_host_and_port() {
        assert_eq!(
            endpoint_parts("https://xks.example.com").unwrap(),
            (
                true,
                "xks.example.com".into(),
                443,
                "xks.example.com".into()
            )
        );
        assert_eq!(
            endpoint_parts("http://[::1]:4600").unwrap(),
            (false, "::1".into(), 4600, "[::1]:4600".into())
        );
        assert!(endpoint_parts("ftp://x").is_err());
    }
}
