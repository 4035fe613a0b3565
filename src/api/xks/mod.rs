//! The AWS KMS external key store (XKS) proxy API (DESIGN §8; aws-kms-xksproxy-api-spec
//! v1.0.3): an optional HTTP/1.1 listener (HTTPS with rustls, optionally mutual TLS; plain
//! HTTP only on loopback) where AWS KMS, or anything that signs like it, encrypts and
//! decrypts with keyorch's AES-256 keys. Each configured endpoint is a URI path
//! (`[/prefix]/kms/xks/v1`) with its SigV4 credentials (service `kms-xks-proxy`, two or
//! more for rotation) and, optionally, the one vault whose keys it serves.

mod ops;
mod wire;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use secrecy::SecretString;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use zeroize::Zeroizing;

use super::aws::sigv4::{self, Regions, SigError};
use super::http1;
use super::{Limits, ServeError};
use crate::domain::xks::{MAX_XKS_URI, XKS_URI_SUFFIX};
use crate::domain::Principal;
use crate::service::Services;
use wire::{XksError, XksException};

/// One SigV4 credential of an endpoint. Its roles come from `[[access.grant]]` entries
/// naming its `aws_access_key_id`.
pub struct Credential {
    pub access_key_id: String,
    pub secret: SecretString,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("access_key_id", &self.access_key_id)
            .field("secret", &"[redacted]")
            .finish()
    }
}

/// One XKS endpoint: what AWS KMS calls XksProxyUriPath, with its credentials.
#[derive(Debug)]
pub struct EndpointSettings {
    /// `[/prefix]/kms/xks/v1`.
    pub uri_path: String,
    /// A vault id (`vault-…`) or name: only its keys are served. None: any vault the
    /// credential's roles reach.
    pub vault: Option<String>,
    pub credentials: Vec<Credential>,
    /// externalKeyId → the key it names and the usages it offers; a key id is also its own
    /// external id, with both usages.
    pub keys: BTreeMap<String, ServedKey>,
}

/// What one externalKeyId of an endpoint names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedKey {
    pub key_id: String,
    pub usage: crate::domain::xks::XksUsage,
}

/// What the daemon configured (`[xks]` or `--dev --xks-listen`).
#[derive(Debug)]
pub struct Settings {
    pub listen: SocketAddr,
    /// Server TLS (with a client verifier when mutual TLS is configured).
    pub tls: Option<Arc<ServerConfig>>,
    /// With mutual TLS: the subject common name the client certificate must carry
    /// (AWS KMS presents `cks.kms.<region>.amazonaws.com`).
    pub client_common_name: Option<String>,
    pub endpoints: Vec<EndpointSettings>,
    /// Requests served at once; more are answered ThrottlingException (429).
    pub max_in_flight: usize,
}

/// Default of `[xks] max_in_flight`.
pub const MAX_IN_FLIGHT: usize = 512;

/// The endpoints in force. A reload (SIGHUP) replaces them whole; a request in progress
/// finishes with the set it started with.
#[derive(Clone)]
pub struct XksEndpoints(Arc<std::sync::RwLock<Arc<Vec<Endpoint>>>>);

impl XksEndpoints {
    fn new(settings: Vec<EndpointSettings>) -> XksEndpoints {
        XksEndpoints(Arc::new(std::sync::RwLock::new(Arc::new(endpoints(
            settings,
        )))))
    }

    fn current(&self) -> Arc<Vec<Endpoint>> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Puts `settings` in force for every request that starts from now on.
    pub fn replace(&self, settings: Vec<EndpointSettings>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(endpoints(settings));
    }
}

fn endpoints(settings: Vec<EndpointSettings>) -> Vec<Endpoint> {
    settings
        .into_iter()
        .map(|e| Endpoint {
            vault_id: Mutex::new(None),
            settings: e,
        })
        .collect()
}

/// The bound listener, ready to serve.
pub struct XksListener {
    listener: TcpListener,
    settings: Settings,
    endpoints: XksEndpoints,
}

impl XksListener {
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn url(&self) -> std::io::Result<String> {
        let scheme = if self.settings.tls.is_some() {
            "https"
        } else {
            "http"
        };
        Ok(format!("{scheme}://{}", self.local_addr()?))
    }

    /// The handle a reload replaces the endpoints through.
    pub fn endpoints(&self) -> XksEndpoints {
        self.endpoints.clone()
    }
}

pub async fn bind(mut settings: Settings) -> Result<XksListener, ServeError> {
    let addr = settings.listen;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Xks { addr, source })?;
    let endpoints = XksEndpoints::new(std::mem::take(&mut settings.endpoints));
    Ok(XksListener {
        listener,
        settings,
        endpoints,
    })
}

/// Largest request body read: the spec's largest fields in base64, with ARNs of 2,048
/// characters in requestMetadata, fit many times over.
const MAX_BODY: usize = 64 * 1024;
/// How long a deep health check's answer is reused (AWS KMS asks every few minutes).
const HEALTH_CACHE: Duration = Duration::from_secs(30);

/// Serves until `stop` turns true, then lets every open connection finish its request.
pub async fn serve(
    listener: XksListener,
    services: Services,
    limits: &Limits,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), ServeError> {
    let XksListener {
        listener,
        settings,
        endpoints,
    } = listener;
    let tls = settings.tls.clone().map(|config| http1::Tls {
        acceptor: TlsAcceptor::from(config),
        check: settings
            .client_common_name
            .clone()
            .map(|cn| -> http1::PeerCheck { Arc::new(move |s| check_common_name(s, &cn)) }),
    });
    let proxy = Arc::new(Proxy {
        services,
        endpoints,
        timeout: limits.request_timeout,
        health: Mutex::new(None),
        in_flight: Arc::new(tokio::sync::Semaphore::new(settings.max_in_flight)),
    });
    http1::serve(
        "XKS proxy",
        listener,
        tls,
        proxy,
        limits.max_connections,
        stop,
    )
    .await;
    Ok(())
}

/// The client certificate's subject must hold `cn` as its common name.
fn check_common_name(s: &TlsStream<TcpStream>, cn: &str) -> Result<(), String> {
    use x509_parser::prelude::FromDer;
    let (_, conn) = s.get_ref();
    let der = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or("no client certificate")?;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der.as_ref())
        .map_err(|e| format!("unreadable client certificate: {e}"))?;
    let names: Vec<&str> = cert
        .subject()
        .iter_common_name()
        .filter_map(|a| a.as_str().ok())
        .collect();
    if names.contains(&cn) {
        Ok(())
    } else {
        Err(format!(
            "subject common name {names:?} is not the configured {cn:?}"
        ))
    }
}

pub(crate) struct Endpoint {
    settings: EndpointSettings,
    /// `settings.vault` resolved to its id, once found.
    vault_id: Mutex<Option<String>>,
}

pub(crate) struct Proxy {
    services: Services,
    endpoints: XksEndpoints,
    timeout: Duration,
    /// The last deep health check: when, and whether the HSM answered.
    health: Mutex<Option<(Instant, bool)>>,
    /// Permits of the requests being served (`max_in_flight`).
    in_flight: Arc<tokio::sync::Semaphore>,
}

/// The operation a URI names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Operation {
    Health,
    Metadata(String),
    Encrypt(String),
    Decrypt(String),
}

impl Operation {
    fn name(&self) -> &'static str {
        match self {
            Operation::Health => "GetHealthStatus",
            Operation::Metadata(_) => "GetKeyMetadata",
            Operation::Encrypt(_) => "Encrypt",
            Operation::Decrypt(_) => "Decrypt",
        }
    }
}

/// The part of the path after an endpoint's URI path, as an operation.
fn operation(rest: &str) -> Option<Operation> {
    if rest == "/health" {
        return Some(Operation::Health);
    }
    let (id, op) = rest.strip_prefix("/keys/")?.split_once('/')?;
    if id.is_empty() {
        return None;
    }
    let id = id.to_string();
    match op {
        "metadata" => Some(Operation::Metadata(id)),
        "encrypt" => Some(Operation::Encrypt(id)),
        "decrypt" => Some(Operation::Decrypt(id)),
        _ => None,
    }
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl http1::Handler for Proxy {
    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let started = Instant::now();
        let Ok(_permit) = self.in_flight.clone().try_acquire_owned() else {
            let e = XksError::new(
                XksException::Throttling,
                "keyorchd is serving its limit of XKS requests at once (xks.max_in_flight); retry",
            );
            let mut resp = Response::new(Full::new(Bytes::from(e.body())));
            *resp.status_mut() = e.status();
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            return resp;
        };
        let outcome = match tokio::time::timeout(self.timeout, self.answer(req)).await {
            Ok(r) => r,
            Err(_) => Err((
                None,
                XksError::new(
                    XksException::DependencyTimeout,
                    format!(
                        "the request did not finish within {} s",
                        self.timeout.as_secs()
                    ),
                ),
            )),
        };
        let (status, body) = match outcome {
            Ok(body) => (StatusCode::OK, body),
            Err((op, e)) => {
                tracing::debug!(
                    operation = op.unwrap_or("-"),
                    error = e.exception.name(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "XKS request refused: {}",
                    e.message
                );
                (e.status(), e.body())
            }
        };
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if status == StatusCode::METHOD_NOT_ALLOWED {
            h.insert(http::header::ALLOW, HeaderValue::from_static("POST"));
        }
        resp
    }
}

type Refusal = (Option<&'static str>, XksError);

impl Proxy {
    async fn answer(&self, req: Request<Incoming>) -> Result<Vec<u8>, Refusal> {
        let (parts, body) = req.into_parts();
        let target = parts.uri.path_and_query().map_or(0, |p| p.as_str().len());
        if target > MAX_XKS_URI {
            return Err((
                None,
                XksError::uri(format!(
                    "the request URI is {target} characters; at most {MAX_XKS_URI} are allowed"
                )),
            ));
        }
        let path = parts.uri.path();
        let endpoints = self.endpoints.current();
        let (endpoint, op) = route(&endpoints, path).map_err(|e| (None, e))?;
        let name = op.name();
        if parts.method != Method::POST {
            return Err((
                Some(name),
                XksError::new(
                    XksException::MethodNotAllowed,
                    format!("{} {path}: XKS proxy APIs take POST only", parts.method),
                ),
            ));
        }
        // The body may hold plaintext: it is kept in zeroizing memory only.
        let body = match Limited::new(body, MAX_BODY).collect().await {
            Ok(c) => {
                let mut buf = Zeroizing::new(Vec::new());
                buf.extend_from_slice(&c.to_bytes());
                buf
            }
            Err(e) => {
                let message = if e
                    .downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    format!("the request body is larger than {MAX_BODY} bytes")
                } else {
                    format!("the request body could not be read: {e}")
                };
                return Err((Some(name), XksError::validation(message)));
            }
        };
        let principal = authenticate(endpoint, &parts, &body).map_err(|e| (Some(name), e))?;
        let answer = match &op {
            Operation::Health => self.health(&body).await,
            Operation::Metadata(id) => self.metadata(endpoint, &principal, id, &body).await,
            Operation::Encrypt(id) => self.encrypt(endpoint, &principal, id, &body).await,
            Operation::Decrypt(id) => self.decrypt(endpoint, &principal, id, &body).await,
        };
        answer.map_err(|e| (Some(name), e))
    }
}

/// The endpoint whose URI path starts `path`, and the operation after it.
fn route<'e>(endpoints: &'e [Endpoint], path: &str) -> Result<(&'e Endpoint, Operation), XksError> {
    for e in endpoints {
        if let Some(rest) = path.strip_prefix(e.settings.uri_path.as_str()) {
            return operation(rest).map(|op| (e, op)).ok_or_else(|| {
                    XksError::uri(format!(
                        "{path}: expected {}/health or {}/keys/{{externalKeyId}}/metadata|encrypt|decrypt",
                        e.settings.uri_path, e.settings.uri_path
                    ))
                });
        }
    }
    Err(XksError::uri(format!(
            "{path}: no XKS endpoint is configured at this path (an XksProxyUriPath ends in {XKS_URI_SUFFIX})"
        )))
}

/// SigV4 with service `kms-xks-proxy` under one of the endpoint's credentials.
fn authenticate(
    endpoint: &Endpoint,
    parts: &http::request::Parts,
    body: &[u8],
) -> Result<Principal, XksError> {
    let fail = |e: SigError| {
        let m = match e {
            SigError::Missing => "the request has no SigV4 Authorization header".to_string(),
            SigError::Incomplete(m) | SigError::Invalid(m) => m,
            SigError::SessionToken => "session tokens are not accepted".to_string(),
        };
        XksError::new(XksException::AuthenticationFailed, m)
    };
    let query = parts.uri.query().unwrap_or("");
    let auth = sigv4::parse(&parts.headers, query).map_err(fail)?;
    auth.check_scope(sigv4::XKS_SERVICE, &Regions::Any, now_secs())
        .map_err(fail)?;
    let credential = endpoint
        .settings
        .credentials
        .iter()
        .find(|c| c.access_key_id == auth.access_key_id)
        .ok_or_else(|| {
            tracing::warn!(access_key_id = %auth.access_key_id, uri_path = %endpoint.settings.uri_path, "XKS proxy: unknown access key id");
            XksError::new(
                XksException::AuthenticationFailed,
                "the access key id is not one of this XKS endpoint's credentials",
            )
        })?;
    auth.verify(
        &credential.secret,
        &sigv4::Received {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query,
            headers: &parts.headers,
            body,
        },
    )
    .map_err(|e| {
        tracing::warn!(access_key_id = %credential.access_key_id, "XKS proxy: signature refused");
        fail(e)
    })?;
    Ok(Principal::AwsAccessKey {
        access_key_id: credential.access_key_id.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_name_the_four_operations() {
        assert_eq!(operation("/health"), Some(Operation::Health));
        assert_eq!(
            operation("/keys/key-1/metadata"),
            Some(Operation::Metadata("key-1".into()))
        );
        assert_eq!(
            operation("/keys/a.b_c/encrypt"),
            Some(Operation::Encrypt("a.b_c".into()))
        );
        assert_eq!(
            operation("/keys/k/decrypt"),
            Some(Operation::Decrypt("k".into()))
        );
        for bad in [
            "",
            "/",
            "/health/",
            "/keys//encrypt",
            "/keys/k/sign",
            "/keys/k",
            "/x/health",
        ] {
            assert_eq!(operation(bad), None, "{bad}");
        }
    }
}
