//! The AWS KMS SDK client under the blocking target API: one private tokio runtime, static
//! credentials, per-call deadlines, rustls, and how a failed call is classified.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use aws_sdk_kms::config::retry::RetryConfig;
use aws_sdk_kms::config::timeout::TimeoutConfig;
use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::Client;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use secrecy::ExposeSecret;
use tokio::runtime::Runtime;

use super::AwsKmsConfig;
use crate::targets::TargetError;

/// Longest wait for a TCP (and TLS) connection.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest time one KMS call may take, retries included.
pub(super) const CALL_DEADLINE: Duration = Duration::from_secs(10);
/// Attempts per call (throttling, 5xx and connection failures are retried with backoff).
const MAX_ATTEMPTS: u32 = 3;
/// A last guard over the SDK's own deadline, should it ever not fire.
const GUARD: Duration = Duration::from_secs(12);

/// AWS exception names that mean "these credentials are not valid" (unknown access key id,
/// wrong secret, expired or malformed signature).
const CREDENTIAL_EXCEPTIONS: &[&str] = &[
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "IncompleteSignatureException",
    "MissingAuthenticationTokenException",
    "InvalidClientTokenId",
    "ExpiredTokenException",
    "SignatureDoesNotMatch",
    "InvalidAccessKeyId",
];

/// The runtime every AWS KMS target drives the SDK on: one worker thread for the connection
/// tasks, made on first use and kept for the life of the process (so a target can be dropped
/// anywhere, even inside another runtime). Callers block in [`Runtime::block_on`].
fn runtime() -> Result<&'static Runtime, TargetError> {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("keyorch-aws-kms")
        .enable_all()
        .build()
        .map_err(|e| TargetError::Internal(format!("cannot start the AWS KMS runtime: {e}")))?;
    // A racing caller's runtime is dropped here, outside any async context.
    Ok(RUNTIME.get_or_init(|| rt))
}

/// A KMS call that failed, before the caller decides what an exception means for it.
#[derive(Debug)]
pub(super) enum CallError {
    /// KMS answered with an exception (`NotFoundException`, `AccessDeniedException`, ...).
    Exception {
        op: &'static str,
        code: String,
        message: String,
    },
    /// No usable answer: already classified.
    Failed(TargetError),
}

impl CallError {
    /// True when KMS answered with exception `code`.
    pub(super) fn is(&self, code: &str) -> bool {
        matches!(self, CallError::Exception { code: c, .. } if c == code)
    }
}

impl From<CallError> for TargetError {
    fn from(e: CallError) -> TargetError {
        match e {
            CallError::Exception { op, code, message } => exception_error(op, &code, &message),
            CallError::Failed(e) => e,
        }
    }
}

/// Classifies an exception KMS answered `op` with.
pub(super) fn exception_error(op: &'static str, code: &str, message: &str) -> TargetError {
    let what = format!("AWS KMS {op}: {code}: {message}");
    match code {
        c if CREDENTIAL_EXCEPTIONS.contains(&c) => TargetError::InvalidCredentials(what),
        "AccessDeniedException" | "AccessDenied" => TargetError::PermissionDenied(vec![op.into()]),
        "DependencyTimeoutException" | "RequestTimeoutException" => TargetError::TimedOut(what),
        "UnsupportedOperationException" => TargetError::NotSupported(what),
        _ => TargetError::Internal(what),
    }
}

/// `error: source: source ...`, each message once (no Debug dumps).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let message = s.to_string();
        if !out.contains(&message) {
            out.push_str(": ");
            out.push_str(&message);
        }
        source = s.source();
    }
    out
}

/// Classifies a failed SDK call.
fn call_error<E>(op: &'static str, e: SdkError<E>) -> CallError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let detail = || format!("AWS KMS {op}: {}", error_chain(&e));
    let failed = match &e {
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            return match ctx.err().code() {
                Some(code) => CallError::Exception {
                    op,
                    code: code.to_string(),
                    message: ctx.err().message().unwrap_or_default().to_string(),
                },
                None if status >= 500 => CallError::Failed(TargetError::Internal(format!(
                    "AWS KMS {op}: the endpoint answered HTTP {status}"
                ))),
                None => CallError::Failed(TargetError::InvalidConfiguration(format!(
                    "AWS KMS {op}: the endpoint answered HTTP {status} without an AWS error; \
                     is the endpoint URL an AWS KMS endpoint?"
                ))),
            };
        }
        SdkError::TimeoutError(_) => TargetError::TimedOut(format!(
            "AWS KMS {op}: no answer within {} s",
            CALL_DEADLINE.as_secs()
        )),
        SdkError::DispatchFailure(d) if d.is_timeout() => TargetError::TimedOut(detail()),
        SdkError::DispatchFailure(d) if d.is_user() => TargetError::InvalidConfiguration(detail()),
        SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => TargetError::Network(detail()),
        SdkError::ConstructionFailure(_) => TargetError::InvalidConfiguration(detail()),
        _ => TargetError::Internal(detail()),
    };
    CallError::Failed(failed)
}

/// The SDK client and the runtime it runs on.
pub(super) struct Kms {
    client: Client,
    runtime: &'static Runtime,
}

impl Kms {
    /// Builds the client (no network traffic): static credentials, region, optional endpoint,
    /// rustls with ring over hyper, connect timeout [`CONNECT_TIMEOUT`], [`CALL_DEADLINE`] per
    /// call, standard retries.
    pub(super) fn new(cfg: &AwsKmsConfig) -> Result<Kms, TargetError> {
        let runtime = runtime()?;
        let credentials = Credentials::new(
            cfg.access_key_id.clone(),
            cfg.secret_access_key.expose_secret().to_string(),
            None,
            None,
            "keyorch",
        );
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .operation_timeout(CALL_DEADLINE)
            .build();
        let mut config = aws_sdk_kms::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(cfg.region.clone()))
            .credentials_provider(credentials)
            .http_client(http)
            .timeout_config(timeouts)
            .retry_config(RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS));
        if let Some(url) = &cfg.endpoint_url {
            config = config.endpoint_url(url.clone());
        }
        Ok(Kms {
            client: Client::from_conf(config.build()),
            runtime,
        })
    }

    /// Runs one KMS call to completion on the private runtime, blocking the calling thread
    /// (never call this on an async worker thread: the service calls targets from
    /// `spawn_blocking`).
    pub(super) fn call<T, E, F>(
        &self,
        op: &'static str,
        request: impl FnOnce(Client) -> F,
    ) -> Result<T, CallError>
    where
        F: Future<Output = Result<T, SdkError<E>>>,
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let future = request(self.client.clone());
        let outcome = self
            .runtime
            .block_on(async { tokio::time::timeout(GUARD, future).await });
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                let e = call_error(op, e);
                tracing::debug!(op, error = ?e, "AWS KMS call failed");
                Err(e)
            }
            Err(_) => Err(CallError::Failed(TargetError::TimedOut(format!(
                "AWS KMS {op}: no answer within {} s",
                GUARD.as_secs()
            )))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exceptions_map_to_connection_error_classes() {
        for code in ["UnrecognizedClientException", "InvalidSignatureException"] {
            assert!(
                matches!(
                    exception_error("ListKeys", code, "no"),
                    TargetError::InvalidCredentials(_)
                ),
                "{code}"
            );
        }
        match exception_error(
            "CreateKey",
            "AccessDeniedException",
            "User: x is not authorized",
        ) {
            TargetError::PermissionDenied(denied) => assert_eq!(denied, ["CreateKey"]),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            exception_error("DescribeKey", "DependencyTimeoutException", "slow"),
            TargetError::TimedOut(_)
        ));
        let e = exception_error(
            "DescribeKey",
            "KMSInvalidStateException",
            "pending deletion",
        );
        assert_eq!(
            e.to_string(),
            "target failure: AWS KMS DescribeKey: KMSInvalidStateException: pending deletion"
        );
    }
}
