//! Errors of the `keyorch` CLI, and how each becomes lines on stderr and an exit code:
//! 1 for server and local failures, 2 for usage errors, 3 when the socket is unreachable.

use std::path::PathBuf;

use tonic::Code;
use tonic_types::StatusExt;

/// Everything that makes a command fail.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// keyorchd could not be reached on its socket.
    #[error("cannot connect to keyorchd at {}", socket.display())]
    Connect {
        socket: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
    /// keyorchd answered with an error status.
    #[error("{}: {}", code_name(.0.code()), .0.message())]
    Status(Box<tonic::Status>),
    /// The command line was well-formed for clap but its content is not usable.
    #[error("{0}")]
    Usage(String),
    /// Reading an input file or writing the output failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// Any other local failure (the benchmark's PKCS#11 side, the runtime).
    #[error("{0}")]
    Local(String),
}

impl From<tonic::Status> for CliError {
    fn from(status: tonic::Status) -> Self {
        CliError::Status(Box::new(status))
    }
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Connect { .. } => 3,
            CliError::Usage(_) => 2,
            CliError::Status(_) | CliError::Io { .. } | CliError::Local(_) => 1,
        }
    }

    /// The full text for stderr, ending with a newline.
    pub fn report(&self) -> String {
        match self {
            CliError::Connect { socket, source } => format!(
                "error: cannot connect to keyorchd at {}: {}\n\
                 hint: is keyorchd running? Start it with `keyorchd --dev`, or point \
                 --socket / KEYORCH_SOCKET at its socket\n",
                socket.display(),
                root_cause(source)
            ),
            CliError::Status(status) => status_report(status),
            other => format!("error: {other}\n"),
        }
    }
}

/// `error: <CODE>: <message> (reason: <ErrorInfo reason>)`, then one indented line per
/// ErrorInfo metadata entry and per precondition violation.
fn status_report(status: &tonic::Status) -> String {
    let mut out = format!("error: {}: {}", code_name(status.code()), status.message());
    let details = status.get_error_details();
    if let Some(info) = status.get_details_error_info() {
        if !info.reason.is_empty() {
            out.push_str(&format!(" (reason: {})", info.reason));
        }
        out.push('\n');
        let mut metadata: Vec<_> = info.metadata.iter().collect();
        metadata.sort();
        for (k, v) in metadata {
            out.push_str(&format!("  {k}: {v}\n"));
        }
    } else {
        out.push('\n');
    }
    if let Some(pf) = details.precondition_failure() {
        for v in &pf.violations {
            out.push_str(&format!(
                "  {}: {}: {}\n",
                v.r#type, v.subject, v.description
            ));
        }
    }
    if let Some(br) = details.bad_request() {
        for v in &br.field_violations {
            out.push_str(&format!("  {}: {}\n", v.field, v.description));
        }
    }
    out
}

/// The deepest message in an error's source chain (the OS error behind "transport error").
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut current = err;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

/// The canonical gRPC name of a status code, as in the gRPC spec (`NOT_FOUND`).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::{ErrorDetails, StatusExt};

    #[test]
    fn status_with_error_info_names_code_message_and_reason() {
        let details = ErrorDetails::with_error_info(
            "CustomKeyStoreInvalidStateException",
            "keyorch",
            [("keystore_id".to_string(), "ks-1".to_string())],
        );
        let status = tonic::Status::with_error_details(
            Code::FailedPrecondition,
            "keystore ks-1 is CONNECTED",
            details,
        );
        let err = CliError::from(status);
        assert_eq!(err.exit_code(), 1);
        assert_eq!(
            err.report(),
            "error: FAILED_PRECONDITION: keystore ks-1 is CONNECTED \
             (reason: CustomKeyStoreInvalidStateException)\n  keystore_id: ks-1\n"
        );
    }

    #[test]
    fn status_without_details_has_no_reason() {
        let err = CliError::from(tonic::Status::not_found("no vault v-9"));
        assert_eq!(err.report(), "error: NOT_FOUND: no vault v-9\n");
    }

    #[test]
    fn usage_errors_exit_2() {
        assert_eq!(CliError::Usage("bad".into()).exit_code(), 2);
        assert_eq!(CliError::Local("x".into()).exit_code(), 1);
    }
}
