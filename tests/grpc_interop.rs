//! keyorchd's gRPC API driven by real third-party clients (issue 13), over the Unix socket and
//! over the mutual-TLS TCP listener: Python grpcio (grpc-core's C HTTP/2 stack) from PyPI
//! and grpc-js (Node's pure-JavaScript one) from npm, pinned in
//! scripts/grpc-clients-requirements.lock and tests/grpc_interop/js/package-lock.json and
//! installed on first use into target/grpc-clients by scripts/grpc-clients.sh
//! (`KEYORCH_GRPC_CLIENTS_DIR` picks another folder).
//!
//! Neither client has keyorch's .proto files: tests/grpc_interop/client.py and client.js
//! build every message from server reflection, list the services with reflection v1 and
//! v1alpha, check grpc.health.v1, walk the README's tour (vault, internal keystore, AES-256
//! key, Encrypt and Decrypt with AAD) and check that three errors arrive with their
//! google.rpc.ErrorInfo. Each prints one `OK <client> <transport> …` line.
//!
//! Why: grpc-core 1.57 and later send the percent-encoded socket path as `:authority` on a
//! Unix socket, which h2 refused with RST_STREAM PROTOCOL_ERROR (every grpcio call failed
//! with INTERNAL); keyorch's own tonic client and grpc-js send a host name and never saw it.

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::tls::{ca, leaf};
use common::*;

/// Upper bound of one client run (each RPC of a client has its own 30 s deadline).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);
/// The errors every client provokes, as its summary line lists them.
const ERRORS: &str = "INVALID_ARGUMENT/ValidationException,\
                      INVALID_ARGUMENT/InvalidCiphertextException,\
                      FAILED_PRECONDITION/CustomKeyStoreInvalidStateException";
/// The subject of the TLS clients' certificate, and the grant that makes it an admin.
const CLIENT_CN: &str = "interop-client";
const CLIENT_ORG: &str = "keyorch-tests";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The folder scripts/grpc-clients.sh installed both clients into (once per test binary).
fn clients_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::var_os("KEYORCH_GRPC_CLIENTS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo().join("target/grpc-clients"));
        let t = Instant::now();
        let out = Command::new(repo().join("scripts/grpc-clients.sh"))
            .arg("install")
            .arg(&dir)
            .output()
            .expect("run scripts/grpc-clients.sh");
        assert!(
            out.status.success(),
            "scripts/grpc-clients.sh install failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("grpc clients ready in {:?}", t.elapsed());
        dir
    })
    .clone()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Client {
    Grpcio,
    GrpcJs,
}

impl Client {
    const ALL: [Client; 2] = [Client::Grpcio, Client::GrpcJs];

    fn name(self) -> &'static str {
        match self {
            Client::Grpcio => "grpcio",
            Client::GrpcJs => "grpc-js",
        }
    }

    /// The command running this client on `args`, with nothing from the caller's
    /// environment (no proxy variables, no GRPC_* settings).
    fn command(self, home: &Path, args: &[String]) -> Command {
        let dir = clients_dir();
        let interop = repo().join("tests/grpc_interop");
        let mut cmd = match self {
            Client::Grpcio => {
                let mut c = Command::new(dir.join("venv/bin/python"));
                c.arg(interop.join("client.py"));
                c
            }
            Client::GrpcJs => {
                let mut c = Command::new("node");
                c.arg(interop.join("client.js"));
                c
            }
        };
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home)
            .stdin(Stdio::null());
        if self == Client::GrpcJs {
            cmd.env("NODE_PATH", dir.join("js/node_modules"));
        }
        cmd
    }
}

/// What one client run printed, and how it ended.
struct Run {
    client: Client,
    transport: &'static str,
    status: Option<ExitStatus>,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Run {
    /// The `OK …` summary line, if the client succeeded and printed it.
    fn summary(&self) -> Option<&str> {
        if !self.status.is_some_and(|s| s.success()) {
            return None;
        }
        let prefix = format!("OK {} {} ", self.client.name(), self.transport);
        self.stdout.lines().find(|l| l.starts_with(&prefix))
    }

    /// Why this run does not pass, if it does not.
    fn problem(&self) -> Option<String> {
        let what = format!("{} over {}", self.client.name(), self.transport);
        let Some(line) = self.summary() else {
            let how = match self.status {
                Some(s) => format!("exited with {s}"),
                None => format!("did not finish within {CLIENT_TIMEOUT:?}"),
            };
            return Some(format!(
                "{what} {how}; no OK line.\n--- stdout\n{}\n--- stderr\n{}",
                self.stdout.trim_end(),
                tail_lines(&self.stderr, 40)
            ));
        };
        let field = |name: &str| {
            line.split(' ')
                .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
                .unwrap_or_default()
        };
        let bad = if field("health") != "SERVING" {
            Some("health")
        } else if field("errors") != ERRORS {
            Some("errors")
        } else if field("roundtrip").parse::<usize>().unwrap_or(0) == 0 {
            Some("roundtrip")
        } else if field("services").parse::<usize>().unwrap_or(0) < 8 {
            Some("services")
        } else {
            None
        };
        bad.map(|f| format!("{what}: wrong {f} in its summary: {line}"))
    }
}

fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs `client` (bounded by CLIENT_TIMEOUT) with its output in files under `dir`.
fn run_client(client: Client, transport: &'static str, dir: &Path, args: &[String]) -> Run {
    let base = dir.join(format!("{}-{transport}", client.name()));
    let (out_path, err_path) = (base.with_extension("stdout"), base.with_extension("stderr"));
    let t = Instant::now();
    let mut child = client
        .command(dir, args)
        .stdout(File::create(&out_path).expect("client stdout file"))
        .stderr(File::create(&err_path).expect("client stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the {} client: {e}", client.name()));
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if t.elapsed() > CLIENT_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let read =
        |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
    let run = Run {
        client,
        transport,
        status,
        stdout: read(&out_path),
        stderr: read(&err_path),
        took: t.elapsed(),
    };
    eprintln!(
        "{} over {transport}: {} in {:?}: {}",
        client.name(),
        run.status
            .map_or("timed out".to_string(), |s| s.to_string()),
        run.took,
        run.summary().unwrap_or("(no OK line)")
    );
    run
}

/// Runs every client on `args`, then fails naming each one that did not pass.
fn run_all(transport: &'static str, dir: &Path, args: &[String]) -> Vec<Run> {
    let runs: Vec<Run> = Client::ALL
        .iter()
        .map(|&c| run_client(c, transport, dir, args))
        .collect();
    let problems: Vec<String> = runs.iter().filter_map(Run::problem).collect();
    assert!(
        problems.is_empty(),
        "{} of {} clients failed over {transport}:\n\n{}",
        problems.len(),
        runs.len(),
        problems.join("\n\n")
    );
    runs
}

#[tokio::test]
async fn grpcio_and_grpc_js_over_the_unix_socket() {
    let dir = clients_dir();
    assert!(dir.join("venv/bin/python").exists());
    let d = TestDaemon::start().await;
    let socket = d.socket().to_string_lossy().into_owned();
    run_all("unix", d.root(), &["unix".to_string(), socket]);
    // The daemon served them as the uid running the tests, and is still serving.
    health_status(d.channel(), "")
        .await
        .expect("health after the clients");
}

#[tokio::test]
async fn grpcio_and_grpc_js_over_mutual_tls() {
    clients_dir();
    let mut d = TestDaemon::start().await;
    let tls = d.root().join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    let write = |name: &str, text: &str| {
        use std::os::unix::fs::PermissionsExt;
        let p = tls.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    };
    let authority = ca("keyorch interop CA");
    let (server_cert, server_key) = leaf(&authority, "keyorchd", CLIENT_ORG, true, 1);
    let (client_cert, client_key) = leaf(&authority, CLIENT_CN, CLIENT_ORG, false, 2);
    let ca_file = write("ca.crt", &authority.pem);
    let listen = format!(
        "tcp = \"127.0.0.1:0\"\ntls_cert = {:?}\ntls_key = {:?}\nclient_ca = {ca_file:?}",
        write("server.crt", &server_cert),
        write("server.key", &server_key),
    );
    let grant = format!(
        "[[access.grant]]\ncertificate = \"CN={CLIENT_CN},O={CLIENT_ORG}\"\nvault = \"*\"\n\
         roles = [\"admin\", \"operator\", \"user\", \"auditor\"]\n"
    );
    d.restart_with_config_listening(&listen, &grant).await;
    let prefix = "  tcp (mutual TLS): ";
    let stdout = d.wait_for_stdout_line(prefix).await;
    let addr = stdout
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .expect("tcp line")
        .trim()
        .to_string();
    let args = [
        "tls".to_string(),
        addr,
        ca_file.to_string_lossy().into_owned(),
        write("client.crt", &client_cert)
            .to_string_lossy()
            .into_owned(),
        write("client.key", &client_key)
            .to_string_lossy()
            .into_owned(),
    ];
    run_all("tls", d.root(), &args);
    // Both came in through TLS, as the certificate's subject (the gate's debug line).
    let principal = format!("principal=cert:CN={CLIENT_CN},O={CLIENT_ORG}");
    assert!(
        d.logs().matches(principal.as_str()).count() >= 2 * 10,
        "fewer calls than expected by {principal} in the logs"
    );
}
