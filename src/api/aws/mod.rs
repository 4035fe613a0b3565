//! The AWS KMS-compatible endpoint (DESIGN §9): an HTTP/1.1 listener (HTTPS with rustls
//! when a certificate is configured) speaking AWS KMS JSON 1.1, so that the aws CLI, boto3
//! and the AWS SDKs manage keyorch's custom key stores and keys. Every request is SigV4
//! verified, then authorized and audited like a gRPC call (`guard::Call`).

mod custom_key_stores;
mod errors;
mod keys;
pub mod model;
pub mod sigv4;
pub mod wire;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::body::Incoming;
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;
use zeroize::Zeroizing;

use super::guard::Call;
use super::http1;
use super::{Limits, ServeError};
use crate::domain::{Action, Principal, Vault};
use crate::service::{Scope, ServiceError, Services};
pub use sigv4::Regions;
use wire::{AwsError, Exception};

/// One access key the endpoint accepts. Its roles come from `[[access.grant]]` entries
/// naming `aws_access_key_id`; its custom key stores and keys live in `vault`.
pub struct AccessKey {
    pub id: String,
    pub secret: SecretString,
    /// A vault id (`vault-…`) or a vault name.
    pub vault: String,
    /// Create the vault (by name) on the first CreateCustomKeyStore that needs it.
    pub create_vault: bool,
}

impl std::fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKey")
            .field("id", &self.id)
            .field("secret", &"[redacted]")
            .field("vault", &self.vault)
            .field("create_vault", &self.create_vault)
            .finish()
    }
}

/// What the daemon configured (`[aws]`, `--aws-listen`, or `--dev`).
#[derive(Debug)]
pub struct Settings {
    pub listen: SocketAddr,
    /// Server TLS (no client certificates: callers prove themselves with SigV4).
    pub tls: Option<Arc<ServerConfig>>,
    pub regions: Regions,
    pub access_keys: Vec<AccessKey>,
    /// PKCS#11 module of the tokens that AWS_CLOUDHSM key stores name.
    pub pkcs11_module: String,
}

/// The bound listener, ready to serve.
pub struct AwsListener {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    settings: Settings,
}

impl AwsListener {
    /// The address bound (port 0 picks a free port).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The URL clients pass as `--endpoint-url`.
    pub fn url(&self) -> std::io::Result<String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        Ok(format!("{scheme}://{}", self.local_addr()?))
    }
}

pub async fn bind(settings: Settings) -> Result<AwsListener, ServeError> {
    let addr = settings.listen;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Aws { addr, source })?;
    Ok(AwsListener {
        listener,
        tls: settings.tls.clone().map(TlsAcceptor::from),
        settings,
    })
}

/// Serves until `stop` turns true, then lets every open connection finish its request.
pub async fn serve(
    listener: AwsListener,
    services: Services,
    limits: &Limits,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), ServeError> {
    let AwsListener {
        listener,
        tls,
        settings,
    } = listener;
    let endpoint = Arc::new(Endpoint {
        services,
        keys: settings
            .access_keys
            .into_iter()
            .map(|k| (k.id.clone(), k))
            .collect(),
        regions: settings.regions,
        pkcs11_module: settings.pkcs11_module,
        max_body: limits.max_message_bytes,
        timeout: limits.request_timeout,
        vaults: Mutex::new(HashMap::new()),
    });
    let tls = tls.map(|acceptor| http1::Tls {
        acceptor,
        check: None,
    });
    http1::serve(
        "AWS endpoint",
        listener,
        tls,
        endpoint,
        limits.max_connections,
        stop,
    )
    .await;
    Ok(())
}

impl http1::Handler for Endpoint {
    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        Endpoint::handle(self, req).await
    }
}

/// The endpoint's state, shared by its connections.
pub(crate) struct Endpoint {
    services: Services,
    keys: HashMap<String, AccessKey>,
    regions: Regions,
    pkcs11_module: String,
    max_body: usize,
    timeout: Duration,
    /// Vault id each access key's `vault` resolved to.
    vaults: Mutex<HashMap<String, String>>,
}

/// An authenticated caller.
pub(crate) struct Caller<'a> {
    pub principal: Principal,
    pub key: &'a AccessKey,
    /// The region of the request's credential scope (used in ARNs).
    pub region: String,
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Endpoint {
    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let request_id = uuid::Uuid::new_v4().to_string();
        let started = std::time::Instant::now();
        let outcome = match tokio::time::timeout(self.timeout, self.answer(req)).await {
            Ok(r) => r,
            Err(_) => Err((
                None,
                AwsError::internal(format!(
                    "the request did not finish within {} s",
                    self.timeout.as_secs()
                )),
            )),
        };
        let (status, body, op, err) = match outcome {
            Ok((op, body)) => (StatusCode::OK, body, Some(op), None),
            Err((op, e)) => (
                StatusCode::from_u16(e.exception.status())
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                e.body(),
                op,
                Some(e),
            ),
        };
        match &err {
            None => tracing::debug!(
                operation = op.as_deref().unwrap_or("-"),
                request_id,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "AWS endpoint request ok"
            ),
            Some(e) => tracing::debug!(
                operation = op.as_deref().unwrap_or("-"),
                request_id,
                exception = e.exception.name(),
                "AWS endpoint request failed: {}",
                e.message
            ),
        }
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(wire::CONTENT_TYPE),
        );
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            h.insert("x-amzn-requestid", v);
        }
        resp
    }

    /// Authenticates, decodes the operation and runs it: the JSON answer, or the error with
    /// the operation's name when known.
    async fn answer(
        &self,
        req: Request<Incoming>,
    ) -> Result<(String, Vec<u8>), (Option<String>, AwsError)> {
        let (parts, body) = req.into_parts();
        if parts.method != Method::POST || parts.uri.path() != "/" {
            return Err((
                None,
                AwsError::unsupported(format!(
                    "{} {} is not served: AWS KMS JSON 1.1 is POST / with X-Amz-Target",
                    parts.method,
                    parts.uri.path()
                )),
            ));
        }
        // The body may hold a password: it is kept in zeroizing memory only.
        let body = match Limited::new(body, self.max_body).collect().await {
            Ok(collected) => {
                let mut buf = Zeroizing::new(Vec::new());
                let bytes = collected.to_bytes();
                buf.extend_from_slice(&bytes);
                buf
            }
            Err(e) => {
                let message = if e
                    .downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    format!(
                        "the request body is larger than {} bytes (limits.max_message_bytes)",
                        self.max_body
                    )
                } else {
                    format!("the request body could not be read: {e}")
                };
                return Err((None, AwsError::new(Exception::Serialization, message)));
            }
        };
        let caller = self.authenticate(&parts, &body).map_err(|e| (None, e))?;
        let op = operation(&parts.headers).map_err(|e| (None, e))?;
        let content_type = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let media = content_type.split(';').next().unwrap_or("").trim();
        if media != wire::CONTENT_TYPE && media != "application/json" {
            return Err((
                Some(op.clone()),
                AwsError::new(
                    Exception::Serialization,
                    format!(
                        "Content-Type must be {}, not '{content_type}'",
                        wire::CONTENT_TYPE
                    ),
                ),
            ));
        }
        let result = self.dispatch(&op, &caller, &body).await;
        match result {
            Ok(v) => Ok((
                op,
                serde_json::to_vec(&v).unwrap_or_else(|_| b"{}".to_vec()),
            )),
            Err(e) => Err((Some(op), e)),
        }
    }

    /// SigV4: the signature, its scope and clock, and the access key it names.
    fn authenticate(
        &self,
        parts: &http::request::Parts,
        body: &[u8],
    ) -> Result<Caller<'_>, AwsError> {
        use sigv4::SigError;
        let map = |e: SigError| {
            match e {
            SigError::Missing => AwsError::new(
                Exception::MissingAuthenticationToken,
                "Request is missing Authentication Token",
            ),
            SigError::Incomplete(m) => AwsError::new(Exception::IncompleteSignature, m),
            SigError::Invalid(m) => AwsError::new(Exception::InvalidSignature, m),
            SigError::SessionToken => AwsError::new(
                Exception::UnrecognizedClient,
                "The security token included in the request is invalid: keyorch issues no session tokens",
            ),
        }
        };
        let query = parts.uri.query().unwrap_or("");
        let auth = sigv4::parse(&parts.headers, query).map_err(map)?;
        auth.check_scope(sigv4::SERVICE, &self.regions, now_secs())
            .map_err(map)?;
        if parts.headers.contains_key("x-amz-security-token") {
            return Err(map(SigError::SessionToken));
        }
        let key = self.keys.get(&auth.access_key_id).ok_or_else(|| {
            tracing::warn!(access_key_id = %auth.access_key_id, "AWS endpoint: unknown access key");
            AwsError::new(
                Exception::UnrecognizedClient,
                "The security token included in the request is invalid.",
            )
        })?;
        auth.verify(
            &key.secret,
            &sigv4::Received {
                method: parts.method.as_str(),
                path: parts.uri.path(),
                query,
                headers: &parts.headers,
                body,
            },
        )
        .map_err(|e| {
            tracing::warn!(access_key_id = %key.id, "AWS endpoint: signature refused");
            map(e)
        })?;
        Ok(Caller {
            principal: Principal::AwsAccessKey {
                access_key_id: key.id.clone(),
            },
            key,
            region: auth.region,
        })
    }

    async fn dispatch(
        &self,
        op: &str,
        caller: &Caller<'_>,
        body: &[u8],
    ) -> Result<serde_json::Value, AwsError> {
        match op {
            "CreateCustomKeyStore" => self.create_custom_key_store(caller, body).await,
            "ConnectCustomKeyStore" => self.connect_custom_key_store(caller, body).await,
            "DisconnectCustomKeyStore" => self.disconnect_custom_key_store(caller, body).await,
            "DescribeCustomKeyStores" => self.describe_custom_key_stores(caller, body).await,
            "UpdateCustomKeyStore" => self.update_custom_key_store(caller, body).await,
            "DeleteCustomKeyStore" => self.delete_custom_key_store(caller, body).await,
            "CreateKey" => self.create_key(caller, body).await,
            "DescribeKey" => self.describe_key(caller, body).await,
            "ListKeys" => self.list_keys(caller, body).await,
            "Encrypt" => self.encrypt(caller, body).await,
            "Decrypt" => self.decrypt(caller, body).await,
            "GenerateDataKey" => self.generate_data_key(caller, body).await,
            "ScheduleKeyDeletion" => self.schedule_key_deletion(caller, body).await,
            other => Err(AwsError::unsupported(format!(
                "keyorch's AWS endpoint does not implement {other}; it serves {}",
                OPERATIONS.join(", ")
            ))),
        }
    }

    /// The vault id of the caller's `vault`, or None when it does not exist (and `create`
    /// is false or the config does not allow it). Creating it is CreateVault, authorized
    /// and audited as the caller.
    async fn caller_vault(
        &self,
        caller: &Caller<'_>,
        create: bool,
    ) -> Result<Option<String>, AwsError> {
        let key = caller.key;
        if let Some(id) = self
            .vaults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key.id)
        {
            return Ok(Some(id.clone()));
        }
        let mgmt = |e| errors::exception(e, errors::Context::Management);
        let found = self.find_vault(&key.vault).await.map_err(mgmt)?;
        let id = match found {
            Some(v) => v.id,
            None if create && key.create_vault && !key.vault.starts_with("vault-") => {
                let call = Call::authorize(
                    &self.services,
                    caller.principal.clone(),
                    Action::CreateVault,
                    Scope::Global,
                )
                .await
                .map_err(mgmt)?;
                let made = self
                    .services
                    .create_vault(
                        key.vault.clone(),
                        format!("custom key stores of AWS access key {}", key.id),
                    )
                    .await;
                let made = match made {
                    // Another request created it meanwhile.
                    Err(ServiceError::Domain(crate::domain::DomainError::VaultNameInUse(_))) => {
                        let again = self.find_vault(&key.vault).await.map_err(mgmt)?;
                        again.ok_or_else(|| AwsError::internal("the vault vanished while it was created"))?
                    }
                    other => call
                        .conclude(&self.services, other, |v: &Vault| {
                            Some((v.id.clone(), v.id.clone()))
                        })
                        .await
                        .map_err(mgmt)?,
                };
                tracing::info!(vault = %made.id, access_key_id = %key.id, "AWS endpoint: vault created");
                made.id
            }
            None if create => {
                return Err(AwsError::internal(format!(
                    "the vault {:?} configured for access key {} does not exist; create it, or set create_vault = true in its [[aws.access_key]]",
                    key.vault, key.id
                )))
            }
            None => return Ok(None),
        };
        self.vaults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.id.clone(), id.clone());
        Ok(Some(id))
    }

    /// Drops the caller's resolved vault (it no longer exists).
    fn forget_vault(&self, caller: &Caller<'_>) {
        self.vaults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&caller.key.id);
    }

    /// A vault by id (`vault-…`) or by name.
    async fn find_vault(&self, wanted: &str) -> Result<Option<Vault>, ServiceError> {
        if wanted.starts_with("vault-") {
            return match self.services.get_vault(wanted.to_string()).await {
                Ok(v) => Ok(Some(v)),
                Err(ServiceError::Domain(crate::domain::DomainError::VaultNotFound(_))) => Ok(None),
                Err(e) => Err(e),
            };
        }
        let mut page = crate::domain::Page::parse(crate::domain::MAX_PAGE_SIZE as u32, "")?;
        loop {
            let l = self.services.list_vaults(page.clone()).await?;
            if let Some(v) = l.items.into_iter().find(|v| v.name == wanted) {
                return Ok(Some(v));
            }
            if l.next_page_token.is_empty() {
                return Ok(None);
            }
            page = crate::domain::Page::parse(
                crate::domain::MAX_PAGE_SIZE as u32,
                &l.next_page_token,
            )?;
        }
    }
}

/// The operations served.
pub const OPERATIONS: [&str; 13] = [
    "CreateCustomKeyStore",
    "ConnectCustomKeyStore",
    "DisconnectCustomKeyStore",
    "DescribeCustomKeyStores",
    "UpdateCustomKeyStore",
    "DeleteCustomKeyStore",
    "CreateKey",
    "DescribeKey",
    "ListKeys",
    "Encrypt",
    "Decrypt",
    "GenerateDataKey",
    "ScheduleKeyDeletion",
];

/// The operation of `X-Amz-Target: TrentService.<Operation>`.
fn operation(headers: &http::HeaderMap) -> Result<String, AwsError> {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            AwsError::unsupported("the X-Amz-Target header (TrentService.<Operation>) is missing")
        })?;
    match target.strip_prefix("TrentService.") {
        Some(op) if !op.is_empty() => Ok(op.to_string()),
        _ => Err(AwsError::unsupported(format!(
            "X-Amz-Target {target:?} is not an AWS KMS operation (TrentService.<Operation>)"
        ))),
    }
}
