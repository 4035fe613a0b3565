//! Real and fake AWS KMS endpoints for tests: LocalStack's KMS (a real third-party emulator,
//! installed on first use into `target/localstack-venv` by `scripts/localstack.sh`;
//! `KEYORCH_LOCALSTACK_VENV` picks another folder) on a free loopback port, stopped on drop;
//! and `Canned`, a loopback server replaying the answers AWS KMS documents for what LocalStack
//! does not emulate (LocalStack accepts any credentials and enforces no permissions): a wrong
//! secret, an unknown access key, denied actions, a server that never answers.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};

/// The region every test uses.
pub const REGION: &str = "us-east-1";

// ---------------------------------------------------------------- LocalStack

/// A LocalStack KMS on a free loopback port, stopped on drop.
pub struct LocalStack {
    venv: PathBuf,
    state: tempfile::TempDir,
    port: u16,
}

pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/localstack.sh")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl LocalStack {
    /// Installs LocalStack if needed, then starts it.
    pub fn start() -> LocalStack {
        let venv = std::env::var_os("KEYORCH_LOCALSTACK_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR")).join("target/localstack-venv")
            });
        let state = tempfile::Builder::new()
            .prefix("localstack-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        let ls = LocalStack {
            venv,
            state,
            port: free_port(),
        };
        ls.run_start();
        ls
    }

    pub fn run_start(&self) {
        let t = Instant::now();
        let out = Command::new(script())
            .arg("start")
            .arg(&self.venv)
            .arg(self.state.path())
            .arg(self.port.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "localstack.sh start: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("LocalStack on port {} in {:?}", self.port, t.elapsed());
    }

    pub fn stop(&self) {
        let out = Command::new(script())
            .arg("stop")
            .arg(self.state.path())
            .output();
        match out {
            Ok(out) if out.status.success() => {}
            other => eprintln!("localstack.sh stop: {other:?}"),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// An SDK client of its own, to check what the target did (and to set up situations).
    pub fn client(&self) -> aws_sdk_kms::Client {
        let config = aws_sdk_kms::Config::builder()
            .behavior_version(aws_sdk_kms::config::BehaviorVersion::latest())
            .region(aws_sdk_kms::config::Region::new(REGION))
            .endpoint_url(self.endpoint())
            .credentials_provider(aws_sdk_kms::config::Credentials::new(
                "test", "test", None, None, "test",
            ))
            .http_client(
                aws_smithy_http_client::Builder::new()
                    .tls_provider(Provider::Rustls(CryptoMode::Ring))
                    .build_https(),
            )
            .build();
        aws_sdk_kms::Client::from_conf(config)
    }
}

impl Drop for LocalStack {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------- canned AWS answers

/// A loopback HTTP/1.1 server answering every KMS request with `answer(operation)` (status,
/// JSON body), or never answering when `answer` gives None. Counts requests.
pub struct Canned {
    port: u16,
    requests: Arc<AtomicUsize>,
}

pub type Answer = fn(&str) -> Option<(u16, String)>;

impl Canned {
    pub fn start(answer: Answer) -> Canned {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let counter = counter.clone();
                std::thread::spawn(move || serve(stream, answer, &counter));
            }
        });
        Canned { port, requests }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

fn serve(stream: TcpStream, answer: Answer, counter: &AtomicUsize) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut target = String::new();
        let mut length = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                match name.trim().to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap_or(0),
                    "x-amz-target" => target = value.trim().to_string(),
                    _ => {}
                }
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        counter.fetch_add(1, Ordering::SeqCst);
        let op = target.strip_prefix("TrentService.").unwrap_or(&target);
        let Some((status, json)) = answer(op) else {
            // Hold the connection open without answering.
            std::thread::sleep(Duration::from_secs(60));
            return;
        };
        let reply = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/x-amz-json-1.1\r\n\
             x-amzn-RequestId: 00000000-0000-0000-0000-000000000000\r\n\
             Content-Length: {}\r\n\r\n{json}",
            json.len()
        );
        if writer.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// AWS's answer to a wrong secret access key.
pub fn wrong_secret(_: &str) -> Option<(u16, String)> {
    Some((
        400,
        r#"{"__type":"InvalidSignatureException","message":"The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details."}"#.into(),
    ))
}

/// AWS's answer to an access key id it does not know.
pub fn unknown_access_key(_: &str) -> Option<(u16, String)> {
    Some((
        400,
        r#"{"__type":"UnrecognizedClientException","message":"The security token included in the request is invalid."}"#.into(),
    ))
}

/// A principal allowed the list and read actions only: every other action is denied, and the
/// allowed actions on the probe's made-up key find nothing.
pub fn read_only(op: &str) -> Option<(u16, String)> {
    Some(match op {
        "ListKeys" => (200, r#"{"Keys":[],"Truncated":false}"#.into()),
        "ListAliases" => (200, r#"{"Aliases":[],"Truncated":false}"#.into()),
        "DescribeKey" | "ListResourceTags" => (
            400,
            r#"{"__type":"NotFoundException","message":"Key does not exist"}"#.into(),
        ),
        _ => (
            400,
            format!(
                r#"{{"__type":"AccessDeniedException","message":"User: arn:aws:iam::111122223333:user/keyorch is not authorized to perform: kms:{op} because no identity-based policy allows the kms:{op} action"}}"#
            ),
        ),
    })
}

/// A principal with no KMS permission at all.
pub fn nothing_allowed(op: &str) -> Option<(u16, String)> {
    Some((
        400,
        format!(
            r#"{{"__type":"AccessDeniedException","message":"User: arn:aws:iam::111122223333:user/keyorch is not authorized to perform: kms:{op}"}}"#
        ),
    ))
}

/// A server that takes the request and never answers.
pub fn silent(_: &str) -> Option<(u16, String)> {
    None
}
