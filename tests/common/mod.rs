//! Test harness: runs the real `keyorchd --dev` binary on a private SoftHSM2 token in a
//! temporary folder, and gives request builders, error assertions and store snapshots.
//!
//! Every test starts its own daemon (own state folder, own token), so tests are independent
//! and run in parallel. After `restart()` the old channel is dead: take `clients()` again.
//! Set `KEYORCH_TEST_KEEP=1` to keep the temporary folders of the tests, and
//! `KEYORCH_TEST_START_SECS` to change the start-up bound (default 30 s).

#![allow(dead_code)]

pub mod aws;
pub mod azure;
pub mod fault_proxy;
pub mod gcp;
pub mod ibm;
pub mod tls;

use std::collections::HashMap;
use std::fmt::Debug;
use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use keyorch::client::Clients;
use keyorch::proto::v1::{
    create_keystore_request, ConnectionState, CreateKeyRequest, CreateKeystoreRequest,
    CreateVaultRequest, DecryptRequest, DescribeKeystoresRequest, EncryptRequest, GetKeyRequest,
    GetKeystoreRequest, GetVaultRequest, InstanceState, InternalKeystoreConfig, Key, KeyAlgorithm,
    KeyIdRequest, KeyState, Keystore, KeystoreType, ListKeysRequest, ListVaultsRequest,
    PageRequest, Vault,
};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Code, Response, Status};
use tonic_types::{ErrorInfo, StatusExt};
use tower::service_fn;

/// `google.rpc.ErrorInfo.domain` of every keyorch error.
pub const DOMAIN: &str = "keyorch.v1";

// `google.rpc.ErrorInfo.reason` values (DESIGN §2, §6).
pub const VALIDATION: &str = "ValidationException";
pub const NOT_FOUND: &str = "NotFoundException";
pub const KEYSTORE_NOT_FOUND: &str = "CustomKeyStoreNotFoundException";
pub const ALREADY_EXISTS: &str = "AlreadyExistsException";
pub const KEYSTORE_NAME_IN_USE: &str = "CustomKeyStoreNameInUseException";
pub const KEYSTORE_INVALID_STATE: &str = "CustomKeyStoreInvalidStateException";
pub const KEYSTORE_HAS_KEYS: &str = "CustomKeyStoreHasCMKsException";
pub const KEY_INVALID_STATE: &str = "KMSInvalidStateException";
pub const INVALID_KEY_USAGE: &str = "InvalidKeyUsageException";
pub const INVALID_CIPHERTEXT: &str = "InvalidCiphertextException";
pub const VAULT_NOT_EMPTY: &str = "VaultNotEmptyException";
pub const UNSUPPORTED: &str = "UnsupportedOperationException";

/// The SoftHSM2 module the daemon uses by default.
pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// The label of the dev token.
pub const DEV_TOKEN_LABEL: &str = "keyorch-dev";

/// Upper bound of one RPC, so that a hung daemon fails a test instead of hanging it.
const RPC_TIMEOUT: Duration = Duration::from_secs(120);

fn start_timeout() -> Duration {
    let secs = std::env::var("KEYORCH_TEST_START_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    Duration::from_secs(secs)
}

/// A running `keyorchd --dev` with its own state folder.
pub struct TestDaemon {
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    child: Option<Child>,
    channel: Option<Channel>,
    /// How many times the daemon was started; each run has its own log files.
    runs: u32,
    extra_args: Vec<String>,
    /// `Some(file)`: the daemon runs `--config file` (see `restart_with_config`), not `--dev`.
    config: Option<PathBuf>,
}

impl TestDaemon {
    /// Starts a daemon on a fresh state folder and waits until it serves.
    pub async fn start() -> TestDaemon {
        Self::start_with_args(&[]).await
    }

    /// Like `start`, with extra command-line arguments for keyorchd.
    pub async fn start_with_args(extra: &[&str]) -> TestDaemon {
        let dir = tempfile::Builder::new()
            .prefix("keyorch-test-")
            .tempdir()
            .expect("create a temporary folder");
        let root = dir.path().to_path_buf();
        let mut daemon = TestDaemon {
            dir: Some(dir),
            root,
            child: None,
            channel: None,
            runs: 0,
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
            config: None,
        };
        daemon.launch().await;
        daemon
    }

    /// Path of the keyorchd binary under test.
    pub fn daemon_binary() -> &'static str {
        env!("CARGO_BIN_EXE_keyorchd")
    }

    /// Path of the keyorch CLI binary under test.
    pub fn cli_binary() -> &'static str {
        env!("CARGO_BIN_EXE_keyorch")
    }

    /// The temporary folder holding the state folder and the log files.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The daemon's `--state-dir`.
    pub fn state_dir(&self) -> PathBuf {
        self.root.join("state")
    }

    /// The daemon's Unix socket.
    pub fn socket(&self) -> PathBuf {
        self.state_dir().join("keyorch.sock")
    }

    /// The SoftHSM2 configuration the daemon made for its token.
    pub fn softhsm_conf(&self) -> PathBuf {
        self.state_dir().join("softhsm2.conf")
    }

    /// The token user PIN, as stored in `DIR/user-pin`.
    pub fn user_pin(&self) -> String {
        read_pin(&self.state_dir().join("user-pin"))
    }

    /// The token SO PIN, as stored in `DIR/so-pin`.
    pub fn so_pin(&self) -> String {
        read_pin(&self.state_dir().join("so-pin"))
    }

    /// The operating-system process id of the running daemon.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon is running").id()
    }

    /// The channel to the running daemon.
    pub fn channel(&self) -> Channel {
        self.channel.clone().expect("daemon is running")
    }

    /// keyorch.v1 clients on the running daemon's channel.
    pub fn clients(&self) -> Clients {
        Clients::new(self.channel())
    }

    fn log_path(&self, run: u32, stream: &str) -> PathBuf {
        self.root.join(format!("keyorchd.{run}.{stream}"))
    }

    /// Everything the daemon wrote to stdout and stderr, all runs, in order.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        for run in 1..=self.runs {
            for stream in ["stdout", "stderr"] {
                let bytes = std::fs::read(self.log_path(run, stream)).unwrap_or_default();
                all.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
        all
    }

    /// Raw bytes of every log file of every run.
    pub fn log_bytes(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for run in 1..=self.runs {
            for stream in ["stdout", "stderr"] {
                out.push(std::fs::read(self.log_path(run, stream)).unwrap_or_default());
            }
        }
        out
    }

    /// What the current (latest) run printed on stdout.
    pub fn stdout(&self) -> String {
        let bytes = std::fs::read(self.log_path(self.runs, "stdout")).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Waits (bounded) until the current run printed a stdout line starting with `prefix`;
    /// returns stdout. Panics with stdout if the line never comes.
    pub async fn wait_for_stdout_line(&self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = self.stdout();
            if out.lines().any(|l| l.starts_with(prefix)) {
                return out;
            }
            if Instant::now() > deadline {
                panic!("no stdout line starting with {prefix:?}; stdout:\n{out}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn launch(&mut self) {
        assert!(self.child.is_none(), "daemon already running");
        self.runs += 1;
        let stdout = File::create(self.log_path(self.runs, "stdout")).expect("stdout log");
        let stderr = File::create(self.log_path(self.runs, "stderr")).expect("stderr log");
        let mut cmd = Command::new(Self::daemon_binary());
        self.mode_args(&mut cmd);
        cmd.args(["--log-level", "trace"])
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            // Hermetic: nothing from the caller's environment may steer the daemon.
            .env_remove("SOFTHSM2_CONF")
            .env_remove("RUST_LOG")
            .env_remove("KEYORCH_STATE_DIR")
            .env_remove("KEYORCH_SOCKET");
        let child = cmd.spawn().expect("spawn keyorchd");
        self.child = Some(child);
        self.wait_ready().await;
    }

    /// `--dev --state-dir DIR`, or `--config FILE` after `restart_with_config`.
    fn mode_args(&self, cmd: &mut Command) {
        match &self.config {
            Some(file) => cmd.arg("--config").arg(file),
            None => cmd.arg("--dev").arg("--state-dir").arg(self.state_dir()),
        };
    }

    /// Starts the daemon again (stopping it first with SIGTERM if it still runs) with
    /// `--config FILE` instead of `--dev`, on the same token, PIN file, database and socket,
    /// granting every role on every vault to the uid running the tests; `extra` is appended
    /// to the file (more sections, e.g. `"[health]\ninterval_secs = 1\n"`). Later restarts
    /// keep this file. Take `clients()` again afterwards.
    pub async fn restart_with_config(&mut self, extra: &str) {
        self.restart_with_config_listening("", extra).await;
    }

    /// Like `restart_with_config`, with `listen` lines added to the `[listen]` section (e.g.
    /// `tcp`, `tls_cert`, `tls_key`, `client_ca` for the mutual-TLS listener).
    pub async fn restart_with_config_listening(&mut self, listen: &str, extra: &str) {
        let s = self.state_dir();
        let text = format!(
            "[hsm]\nmodule = {module:?}\ntoken_label = {DEV_TOKEN_LABEL:?}\npin_file = {pin:?}\n\
             softhsm2_conf = {conf:?}\n\n[store]\npath = {db:?}\n\n[listen]\nsocket = {sock:?}\n{listen}\n\n\
             [[access.grant]]\nuid = {uid}\nvault = \"*\"\n\
             roles = [\"admin\", \"operator\", \"user\", \"auditor\"]\n\n{extra}\n",
            module = SOFTHSM_MODULE,
            pin = s.join("user-pin"),
            conf = self.softhsm_conf(),
            db = s.join("db"),
            sock = self.socket(),
            uid = nix::unistd::getuid().as_raw(),
        );
        let file = self.root.join("keyorchd.toml");
        std::fs::write(&file, text).expect("write the keyorchd config");
        if self.child.is_some() {
            let status = self.stop().await;
            assert!(status.success(), "keyorchd exited with {status} on SIGTERM");
        }
        self.config = Some(file);
        self.launch().await;
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + start_timeout();
        let socket = self.socket();
        let mut last_err = String::from("socket not created yet");
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .expect("child")
                .try_wait()
                .expect("try_wait")
            {
                self.child = None;
                panic!(
                    "keyorchd exited during start-up with {status}; logs:\n{}",
                    tail(&self.logs(), 80)
                );
            }
            if socket.exists() {
                match tokio::time::timeout(Duration::from_secs(5), open_channel(&socket)).await {
                    Ok(Ok(channel)) => match health_status(channel.clone(), "").await {
                        Ok(status)
                            if status
                                == tonic_health::pb::health_check_response::ServingStatus::Serving
                                    as i32 =>
                        {
                            self.channel = Some(channel);
                            return;
                        }
                        Ok(status) => last_err = format!("health status {status}"),
                        Err(e) => last_err = format!("health check: {e}"),
                    },
                    Ok(Err(e)) => last_err = format!("connect: {e}"),
                    Err(_) => last_err = "connect timed out".into(),
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "keyorchd not serving after {:?} ({last_err}); logs:\n{}",
                    start_timeout(),
                    tail(&self.logs(), 80)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL, then reap. Nothing acknowledged before may be lost.
    pub async fn kill9(&mut self) {
        self.channel = None;
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL keyorchd");
            child.wait().expect("reap keyorchd");
        }
    }

    /// SIGTERM, then wait (bounded) for a clean exit. Returns the exit status.
    pub async fn stop(&mut self) -> ExitStatus {
        self.channel = None;
        let mut child = self.child.take().expect("daemon is running");
        signal(child.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "keyorchd did not stop within 30 s of SIGTERM; logs:\n{}",
                    tail(&self.logs(), 80)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts the daemon again on the same state folder (stopping it first with SIGTERM if
    /// it still runs). Take `clients()` again afterwards.
    pub async fn restart(&mut self) {
        if self.child.is_some() {
            let status = self.stop().await;
            assert!(status.success(), "keyorchd exited with {status} on SIGTERM");
        }
        self.launch().await;
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- keyorchd logs ({}; last lines) ----\n{}",
                self.root.display(),
                tail(&self.logs(), 60)
            );
        }
        if std::env::var_os("KEYORCH_TEST_KEEP").is_some() {
            if let Some(dir) = self.dir.take() {
                let kept = dir.keep();
                eprintln!("kept {}", kept.display());
            }
        }
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    let pid = libc::pid_t::try_from(pid).expect("pid fits pid_t");
    // SAFETY: kill(2) has no memory-safety preconditions; pid is our own child.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
}

/// Sends `sig` to `pid` (a daemon the test started), e.g. SIGHUP to reload.
pub fn send_signal(pid: u32, sig: libc::c_int) {
    signal(pid, sig);
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    all[start..].join("\n")
}

fn read_pin(path: &Path) -> String {
    let raw =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let pin = raw.trim().to_string();
    assert!(!pin.is_empty(), "{} is empty", path.display());
    pin
}

/// A channel over the Unix socket, with a per-call time-out.
pub async fn open_channel(socket: &Path) -> Result<Channel, tonic::transport::Error> {
    let path = socket.to_path_buf();
    Endpoint::from_static("http://keyorchd.local")
        .timeout(RPC_TIMEOUT)
        .connect_with_connector(service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
}

/// `grpc.health.v1.Health/Check` for `service`; the raw serving status.
pub async fn health_status(channel: Channel, service: &str) -> Result<i32, Status> {
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let resp = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.to_string(),
        })
        .await?;
    Ok(resp.into_inner().status)
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// Awaits an RPC that must fail, and returns its status.
#[track_caller]
pub fn fails<T: Debug, F>(call: F) -> impl Future<Output = Status>
where
    F: Future<Output = Result<Response<T>, Status>>,
{
    let caller = std::panic::Location::caller();
    async move {
        match call.await {
            Ok(resp) => panic!(
                "{caller}: expected an error, got success: {:?}",
                resp.into_inner()
            ),
            Err(status) => status,
        }
    }
}

/// Awaits an RPC that must succeed, and returns its message.
#[track_caller]
pub fn ok<T, F>(call: F) -> impl Future<Output = T>
where
    F: Future<Output = Result<Response<T>, Status>>,
{
    let caller = std::panic::Location::caller();
    async move {
        match call.await {
            Ok(resp) => resp.into_inner(),
            Err(status) => panic!("{caller}: unexpected error: {}", describe(&status)),
        }
    }
}

/// The `google.rpc.ErrorInfo` of a status (panics if absent).
#[track_caller]
pub fn error_info(status: &Status) -> ErrorInfo {
    status
        .get_error_details()
        .error_info()
        .cloned()
        .unwrap_or_else(|| panic!("no google.rpc.ErrorInfo in {}", describe(status)))
}

/// A one-line description of a status with its ErrorInfo, for assertion messages.
pub fn describe(status: &Status) -> String {
    let info = status.get_error_details().error_info().cloned();
    match info {
        Some(i) => format!(
            "{:?} {:?} [reason {} domain {} metadata {:?}]",
            status.code(),
            status.message(),
            i.reason,
            i.domain,
            i.metadata
        ),
        None => format!("{:?} {:?} [no ErrorInfo]", status.code(), status.message()),
    }
}

/// Asserts the gRPC code, the ErrorInfo domain and reason, and a non-empty message.
#[track_caller]
pub fn assert_status(status: &Status, code: Code, reason: &str) -> ErrorInfo {
    assert_eq!(status.code(), code, "wrong code: {}", describe(status));
    let info = error_info(status);
    assert_eq!(info.reason, reason, "wrong reason: {}", describe(status));
    assert_eq!(info.domain, DOMAIN, "wrong domain: {}", describe(status));
    assert!(
        !status.message().trim().is_empty(),
        "empty message: {}",
        describe(status)
    );
    info
}

/// Asserts INVALID_ARGUMENT / ValidationException naming `field` (metadata `field`, a
/// `rule`, and the field in the message).
#[track_caller]
pub fn assert_invalid(status: &Status, field: &str) -> ErrorInfo {
    let info = assert_status(status, Code::InvalidArgument, VALIDATION);
    assert_eq!(
        info.metadata.get("field").map(String::as_str),
        Some(field),
        "wrong field: {}",
        describe(status)
    );
    assert!(
        info.metadata.get("rule").is_some_and(|r| !r.is_empty()),
        "no rule in metadata: {}",
        describe(status)
    );
    assert!(
        status.message().contains(field),
        "message does not name the field {field:?}: {}",
        describe(status)
    );
    info
}

/// Like `assert_invalid`, for a field reported with a path or index (`tags`, `tags[k]`,
/// `page.page_size`…): the reported field must contain `fragment`.
#[track_caller]
pub fn assert_invalid_like(status: &Status, fragment: &str) -> ErrorInfo {
    let info = assert_status(status, Code::InvalidArgument, VALIDATION);
    let field = info.metadata.get("field").cloned().unwrap_or_default();
    assert!(
        field.contains(fragment),
        "field {field:?} does not contain {fragment:?}: {}",
        describe(status)
    );
    info
}

/// Names every resource rule rejects (DESIGN §1).
pub fn bad_names() -> Vec<String> {
    vec![
        String::new(),
        "x".repeat(101),
        "-leading-dash".into(),
        "bad/char".into(),
        " leading-space".into(),
        ".leading-dot".into(),
        "semi;colon".into(),
        "new\nline".into(),
    ]
}

/// Names every resource rule accepts, including the edges.
pub fn good_names() -> Vec<String> {
    vec![
        "a".into(),
        "7".into(),
        "x".repeat(100),
        "Prod keys.eu-west_1".into(),
        "9 lives".into(),
    ]
}

/// A description one character over the limit.
pub fn long_description() -> String {
    "d".repeat(201)
}

// ---------------------------------------------------------------------------------------
// Snapshots
// ---------------------------------------------------------------------------------------

/// Everything in the store, as the API lists it, sorted by id. Keystore health (refreshed
/// in the background) is left out so that two snapshots compare only stored state.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub vaults: Vec<Vault>,
    pub keystores: Vec<Keystore>,
    pub keys: Vec<Key>,
}

const MAX_PAGES: usize = 10_000;

/// Lists every vault (all pages).
pub async fn list_all_vaults(c: &mut Clients, page_size: u32) -> Vec<Vault> {
    let mut out = Vec::new();
    let mut token = String::new();
    for _ in 0..MAX_PAGES {
        let resp = ok(c.vaults.list_vaults(ListVaultsRequest {
            page: Some(PageRequest {
                page_size,
                page_token: token.clone(),
            }),
        }))
        .await;
        out.extend(resp.vaults);
        if resp.next_page_token.is_empty() {
            return out;
        }
        assert_ne!(resp.next_page_token, token, "page token did not advance");
        token = resp.next_page_token;
    }
    panic!("ListVaults never ended");
}

/// Describes every keystore matching `filter` (all pages; `filter.page` is overwritten).
pub async fn list_all_keystores(
    c: &mut Clients,
    filter: DescribeKeystoresRequest,
    page_size: u32,
) -> Vec<Keystore> {
    let mut out = Vec::new();
    let mut token = String::new();
    for _ in 0..MAX_PAGES {
        let mut req = filter.clone();
        req.page = Some(PageRequest {
            page_size,
            page_token: token.clone(),
        });
        let resp = ok(c.keystores.describe_keystores(req)).await;
        out.extend(resp.keystores);
        if resp.next_page_token.is_empty() {
            return out;
        }
        assert_ne!(resp.next_page_token, token, "page token did not advance");
        token = resp.next_page_token;
    }
    panic!("DescribeKeystores never ended");
}

/// Lists every key matching `filter` (all pages; `filter.page` is overwritten).
pub async fn list_all_keys(c: &mut Clients, filter: ListKeysRequest, page_size: u32) -> Vec<Key> {
    let mut out = Vec::new();
    let mut token = String::new();
    for _ in 0..MAX_PAGES {
        let mut req = filter.clone();
        req.page = Some(PageRequest {
            page_size,
            page_token: token.clone(),
        });
        let resp = ok(c.keys.list_keys(req)).await;
        out.extend(resp.keys);
        if resp.next_page_token.is_empty() {
            return out;
        }
        assert_ne!(resp.next_page_token, token, "page token did not advance");
        token = resp.next_page_token;
    }
    panic!("ListKeys never ended");
}

/// Everything in the store through the API.
pub async fn snapshot(c: &Clients) -> Snapshot {
    let mut c = c.clone();
    let mut vaults = list_all_vaults(&mut c, 1000).await;
    let mut keystores = list_all_keystores(&mut c, DescribeKeystoresRequest::default(), 1000).await;
    let mut keys = list_all_keys(&mut c, ListKeysRequest::default(), 1000).await;
    vaults.sort_by(|a, b| a.id.cmp(&b.id));
    for ks in &mut keystores {
        ks.health = None;
    }
    keystores.sort_by(|a, b| a.id.cmp(&b.id));
    keys.sort_by(|a, b| a.id.cmp(&b.id));
    Snapshot {
        vaults,
        keystores,
        keys,
    }
}

/// Asserts that the store is exactly `before` (a rejected request changed nothing).
#[track_caller]
pub fn assert_unchanged(before: &Snapshot, after: &Snapshot, what: &str) {
    assert_eq!(
        before, after,
        "the store changed after the rejected request: {what}"
    );
}

/// A keystore without its background-refreshed health, for comparisons.
pub fn without_health(mut ks: Keystore) -> Keystore {
    ks.health = None;
    ks
}

// ---------------------------------------------------------------------------------------
// Request builders and shortcuts
// ---------------------------------------------------------------------------------------

pub fn vault_req(name: &str) -> CreateVaultRequest {
    CreateVaultRequest {
        name: name.to_string(),
        description: String::new(),
    }
}

pub async fn create_vault(c: &mut Clients, name: &str) -> Vault {
    ok(c.vaults.create_vault(vault_req(name))).await
}

pub async fn get_vault(c: &mut Clients, id: &str) -> Vault {
    ok(c.vaults.get_vault(GetVaultRequest { id: id.into() })).await
}

/// An internal keystore create request.
pub fn keystore_req(vault_id: &str, name: &str, connect: bool) -> CreateKeystoreRequest {
    CreateKeystoreRequest {
        vault_id: vault_id.to_string(),
        name: name.to_string(),
        description: String::new(),
        r#type: KeystoreType::Internal as i32,
        connect,
        config: Some(create_keystore_request::Config::Internal(
            InternalKeystoreConfig {},
        )),
        credentials: None,
    }
}

pub async fn create_keystore(
    c: &mut Clients,
    vault_id: &str,
    name: &str,
    connect: bool,
) -> Keystore {
    ok(c.keystores
        .create_keystore(keystore_req(vault_id, name, connect)))
    .await
}

pub async fn get_keystore(c: &mut Clients, id: &str) -> Keystore {
    ok(c.keystores
        .get_keystore(GetKeystoreRequest { id: id.into() }))
    .await
}

/// Polls GetKeystore every 100 ms, at most `within`, until `pred` holds; returns that keystore.
pub async fn wait_keystore(
    c: &mut Clients,
    id: &str,
    within: std::time::Duration,
    what: &str,
    pred: impl Fn(&Keystore) -> bool,
) -> Keystore {
    let deadline = std::time::Instant::now() + within;
    loop {
        let ks = get_keystore(c, id).await;
        if pred(&ks) {
            return ks;
        }
        assert!(
            Instant::now() < deadline,
            "not {what} within {within:?}: {ks:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

pub fn key_req(
    vault_id: &str,
    name: &str,
    algorithm: KeyAlgorithm,
    bits: u32,
    targets: &[&str],
    activate: bool,
) -> CreateKeyRequest {
    CreateKeyRequest {
        vault_id: vault_id.to_string(),
        name: name.to_string(),
        description: String::new(),
        algorithm: algorithm as i32,
        key_size_bits: bits,
        target_keystore_ids: targets.iter().map(|s| s.to_string()).collect(),
        activate,
        tags: HashMap::new(),
        external_key_id: String::new(),
    }
}

pub async fn create_key(
    c: &mut Clients,
    vault_id: &str,
    name: &str,
    algorithm: KeyAlgorithm,
    bits: u32,
    targets: &[&str],
    activate: bool,
) -> Key {
    ok(c.keys
        .create_key(key_req(vault_id, name, algorithm, bits, targets, activate)))
    .await
}

pub async fn get_key(c: &mut Clients, id: &str) -> Key {
    ok(c.keys.get_key(GetKeyRequest { id: id.into() })).await
}

pub fn key_id(id: &str) -> KeyIdRequest {
    KeyIdRequest { id: id.to_string() }
}

/// A vault with one CONNECTED internal keystore.
#[derive(Debug, Clone)]
pub struct Fixture {
    pub vault: Vault,
    pub keystore: Keystore,
}

impl Fixture {
    pub async fn new(c: &mut Clients) -> Fixture {
        let vault = create_vault(c, "vault-1").await;
        let keystore = create_keystore(c, &vault.id, "internal-1", true).await;
        assert_eq!(
            keystore.connection_state,
            ConnectionState::Connected as i32,
            "keystore created with connect: true is not CONNECTED: {keystore:?}"
        );
        Fixture { vault, keystore }
    }

    /// A key of this vault targeting the fixture's keystore.
    pub async fn key(
        &self,
        c: &mut Clients,
        name: &str,
        algorithm: KeyAlgorithm,
        bits: u32,
        activate: bool,
    ) -> Key {
        create_key(
            c,
            &self.vault.id,
            name,
            algorithm,
            bits,
            &[&self.keystore.id],
            activate,
        )
        .await
    }
}

pub fn key_state(key: &Key) -> KeyState {
    KeyState::try_from(key.state).unwrap_or_else(|_| panic!("unknown key state {}", key.state))
}

pub fn connection_state(ks: &Keystore) -> ConnectionState {
    ConnectionState::try_from(ks.connection_state)
        .unwrap_or_else(|_| panic!("unknown connection state {}", ks.connection_state))
}

/// The state of `key`'s instance in `keystore_id`, if it has one.
pub fn instance_state(key: &Key, keystore_id: &str) -> Option<InstanceState> {
    key.instances
        .iter()
        .find(|i| i.keystore_id == keystore_id)
        .map(|i| InstanceState::try_from(i.state).expect("known instance state"))
}

#[track_caller]
pub fn assert_key_state(key: &Key, state: KeyState) {
    assert_eq!(key_state(key), state, "key in the wrong state: {key:?}");
}

#[track_caller]
pub fn assert_connection(ks: &Keystore, state: ConnectionState) {
    assert_eq!(
        connection_state(ks),
        state,
        "keystore in the wrong state: {ks:?}"
    );
}

pub async fn encrypt(c: &mut Clients, key_id: &str, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
    ok(c.crypto.encrypt(encrypt_req(key_id, plaintext, aad)))
        .await
        .ciphertext
}

pub async fn decrypt(c: &mut Clients, key_id: &str, ciphertext: &[u8], aad: &[u8]) -> Vec<u8> {
    ok(c.crypto.decrypt(decrypt_req(key_id, ciphertext, aad)))
        .await
        .plaintext
}

pub fn encrypt_req(key_id: &str, plaintext: &[u8], aad: &[u8]) -> EncryptRequest {
    EncryptRequest {
        key_id: key_id.to_string(),
        plaintext: plaintext.to_vec(),
        aad: aad.to_vec(),
    }
}

pub fn decrypt_req(key_id: &str, ciphertext: &[u8], aad: &[u8]) -> DecryptRequest {
    DecryptRequest {
        key_id: key_id.to_string(),
        ciphertext: ciphertext.to_vec(),
        aad: aad.to_vec(),
    }
}

/// An id that no resource has (well-formed as a UUID).
pub fn unknown_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

// ---------------------------------------------------------------------------------------
// External tools
// ---------------------------------------------------------------------------------------

/// Runs a command to completion; panics with its output if it cannot start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs a command that must succeed; returns its stdout.
#[track_caller]
pub fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}:\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Does `haystack` contain `needle`?
pub fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every regular file under `dir`, recursively (symlinks are not followed).
pub fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries =
            std::fs::read_dir(&d).unwrap_or_else(|e| panic!("read_dir {}: {e}", d.display()));
        for entry in entries {
            let entry = entry.expect("dir entry");
            let ft = entry.file_type().expect("file type");
            if ft.is_dir() {
                stack.push(entry.path());
            } else if ft.is_file() {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    out
}

/// Unix permission bits of a path.
pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

// ---------------------------------------------------------------------------------------
// PKCS#11 target tokens, pkcs11 keystores and crash runs
// (tests/pkcs11_keystores.rs, tests/crash.rs)
// ---------------------------------------------------------------------------------------

/// SO PIN of the target tokens the tests initialise (test-only tokens: PINs on argv are fine).
pub const TARGET_SO_PIN: &str = "target-so-2290";

/// `CKA_LABEL` of the RSA key pair keyorch keeps in every connected pkcs11 target.
pub const IMPORT_KEK: &str = "EKMF-BYOK-KEK-FOR-IMPORT";

/// The label (and CKA_ID) of a managed key's copy in a pkcs11 target.
pub fn target_label(key_id: &str) -> String {
    format!("keyorch-{key_id}")
}

/// One object as `pkcs11-tool --list-objects` prints it.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct TokenObject {
    /// The heading line, e.g. `Private Key Object; RSA` or `Secret Key Object; AES length 32`.
    pub heading: String,
    pub label: String,
    /// Hex, as printed.
    pub id: String,
    pub usage: String,
    pub access: String,
}

impl TokenObject {
    pub fn is_private_key(&self) -> bool {
        self.heading.starts_with("Private Key Object")
    }
    pub fn is_public_key(&self) -> bool {
        self.heading.starts_with("Public Key Object")
    }
    pub fn is_secret_key(&self) -> bool {
        self.heading.starts_with("Secret Key Object")
    }
    /// The comma-separated flags of the `Access:` line.
    pub fn access_flags(&self) -> Vec<String> {
        split_flags(&self.access)
    }
    /// The comma-separated flags of the `Usage:` line.
    pub fn usage_flags(&self) -> Vec<String> {
        split_flags(&self.usage)
    }
}

fn split_flags(s: &str) -> Vec<String> {
    s.split(',')
        .map(|f| f.trim().to_string())
        .filter(|f| !f.is_empty() && f != "none")
        .collect()
}

/// Whether `line` of a `pkcs11-tool --list-objects` listing starts an object. OpenSC 0.23
/// prints `Private Key Object; …`, `Public Key Object; …`, `Secret Key Object; …`,
/// `Certificate Object; …`, `Data object <n>`, `Profile object <n>` and `Object <n>, type <n>`
/// unindented, and the attributes indented. `Data object` matters here: SoftHSM2 shows an
/// object whose file a kill cut short (no readable `CKA_CLASS`) as one, and a parser that
/// missed that heading gave its `label: <empty>` to the object listed before it.
pub fn is_token_object_heading(line: &str) -> bool {
    !line.is_empty()
        && !line.starts_with(char::is_whitespace)
        && line.to_ascii_lowercase().contains("object")
}

/// Parses the output of `pkcs11-tool --list-objects`.
pub fn parse_token_objects(listing: &str) -> Vec<TokenObject> {
    let mut out: Vec<TokenObject> = Vec::new();
    for line in listing.lines() {
        if line.is_empty() {
            continue;
        }
        if is_token_object_heading(line) {
            out.push(TokenObject {
                heading: line.trim().to_string(),
                ..TokenObject::default()
            });
            continue;
        }
        let Some(obj) = out.last_mut() else { continue };
        let Some((name, value)) = line.trim().split_once(':') else {
            continue;
        };
        let value = value.trim().to_string();
        match name.trim() {
            "label" => obj.label = value,
            "ID" => obj.id = value,
            "Usage" => obj.usage = value,
            "Access" => obj.access = value,
            _ => {}
        }
    }
    out
}

/// A pkcs11 keystore create request (module, token label, PIN).
pub fn pkcs11_keystore_req(
    vault_id: &str,
    name: &str,
    module: &str,
    token_label: &str,
    pin: &str,
    connect: bool,
) -> CreateKeystoreRequest {
    CreateKeystoreRequest {
        vault_id: vault_id.to_string(),
        name: name.to_string(),
        description: String::new(),
        r#type: KeystoreType::Pkcs11 as i32,
        connect,
        config: Some(create_keystore_request::Config::Pkcs11(
            keyorch::proto::v1::Pkcs11KeystoreConfig {
                module_path: module.to_string(),
                token_label: token_label.to_string(),
                token_serial: String::new(),
            },
        )),
        credentials: Some(create_keystore_request::Credentials::Pkcs11Credentials(
            keyorch::proto::v1::Pkcs11Credentials {
                pin: pin.to_string(),
            },
        )),
    }
}

impl TestDaemon {
    /// Starts a daemon whose token folder also holds a second token `label` (user PIN
    /// `pin`) to use as a pkcs11 keystore's target. SoftHSM2 2.6.1 does not see a token
    /// initialised after `C_Initialize` in the same process, so: start (dev mode makes
    /// `softhsm2.conf`, `tokens/` and the dev token), stop, initialise the target token in
    /// the same token folder, start again.
    pub async fn start_with_target(label: &str, pin: &str) -> TestDaemon {
        Self::start_with_targets(&[(label, pin)]).await
    }

    /// Like `start_with_target`, with several target tokens.
    pub async fn start_with_targets(tokens: &[(&str, &str)]) -> TestDaemon {
        Self::start_with_targets_and_args(tokens, &[]).await
    }

    /// Like `start_with_targets`, with extra command-line arguments for keyorchd.
    pub async fn start_with_targets_and_args(
        tokens: &[(&str, &str)],
        extra: &[&str],
    ) -> TestDaemon {
        let mut daemon = Self::start_with_args(extra).await;
        let status = daemon.stop().await;
        assert!(status.success(), "keyorchd exited with {status} on SIGTERM");
        for (label, pin) in tokens {
            daemon.init_token(label, pin);
        }
        daemon.launch().await;
        daemon
    }

    /// Initialises a token `label` in a free slot of the daemon's token folder. keyorchd
    /// sees it only from its next start.
    pub fn init_token(&self, label: &str, pin: &str) {
        run_ok(
            Command::new("softhsm2-util")
                .env("SOFTHSM2_CONF", self.softhsm_conf())
                .args(["--init-token", "--free", "--label", label])
                .args(["--so-pin", TARGET_SO_PIN, "--pin", pin]),
        );
    }

    /// Runs `pkcs11-tool` on the daemon's SoftHSM2 module and token folder, logged in to
    /// the token `token` with `pin`.
    pub fn pkcs11_tool(&self, token: &str, pin: &str, args: &[&str]) -> Output {
        run(Command::new("pkcs11-tool")
            .env("SOFTHSM2_CONF", self.softhsm_conf())
            .args(["--module", SOFTHSM_MODULE, "--token-label", token])
            .args(["--login", "--pin", pin])
            .args(args))
    }

    /// Like `pkcs11_tool`, and it must succeed; returns stdout.
    #[track_caller]
    pub fn pkcs11_tool_ok(&self, token: &str, pin: &str, args: &[&str]) -> String {
        let out = self.pkcs11_tool(token, pin, args);
        assert!(
            out.status.success(),
            "pkcs11-tool {args:?} failed with {}:\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Every object of the token, as `pkcs11-tool --list-objects` sees it (logged in),
    /// sorted (the token's own order is not stable).
    #[track_caller]
    pub fn token_objects(&self, token: &str, pin: &str) -> Vec<TokenObject> {
        let mut objects =
            parse_token_objects(&self.pkcs11_tool_ok(token, pin, &["--list-objects"]));
        objects.sort();
        objects
    }

    /// The objects of the token labelled `label`.
    #[track_caller]
    pub fn token_objects_labelled(&self, token: &str, pin: &str, label: &str) -> Vec<TokenObject> {
        self.token_objects(token, pin)
            .into_iter()
            .filter(|o| o.label == label)
            .collect()
    }

    /// Starts the daemon again on the same state folder with extra environment variables
    /// for this run only (e.g. `KEYORCH_FAILPOINT`), stopping it first with SIGTERM if it
    /// still runs. Take `clients()` again afterwards.
    pub async fn restart_with_env(&mut self, env: &[(&str, &str)]) {
        if self.child.is_some() {
            let status = self.stop().await;
            assert!(status.success(), "keyorchd exited with {status} on SIGTERM");
        }
        self.launch_with_env(env).await;
    }

    /// `launch` with extra environment variables.
    async fn launch_with_env(&mut self, env: &[(&str, &str)]) {
        assert!(self.child.is_none(), "daemon already running");
        self.runs += 1;
        let stdout = File::create(self.log_path(self.runs, "stdout")).expect("stdout log");
        let stderr = File::create(self.log_path(self.runs, "stderr")).expect("stderr log");
        let mut cmd = Command::new(Self::daemon_binary());
        self.mode_args(&mut cmd);
        cmd.args(["--log-level", "trace"])
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .env_remove("SOFTHSM2_CONF")
            .env_remove("RUST_LOG")
            .env_remove("KEYORCH_STATE_DIR")
            .env_remove("KEYORCH_SOCKET")
            .env_remove("KEYORCH_FAILPOINT")
            .envs(env.iter().copied());
        let child = cmd.spawn().expect("spawn keyorchd");
        self.child = Some(child);
        self.wait_ready().await;
    }

    /// Starts the daemon again on the same state folder and SIGKILLs it `after` later,
    /// serving or not (e.g. while the start-up reconciler settles the intents a crash left).
    /// The daemon is not running afterwards: `restart()` starts it.
    pub async fn start_and_kill9_after(&mut self, after: Duration) {
        assert!(self.child.is_none(), "daemon already running");
        self.channel = None;
        self.runs += 1;
        let stdout = File::create(self.log_path(self.runs, "stdout")).expect("stdout log");
        let stderr = File::create(self.log_path(self.runs, "stderr")).expect("stderr log");
        let mut cmd = Command::new(Self::daemon_binary());
        self.mode_args(&mut cmd);
        cmd.args(["--log-level", "trace"])
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .env_remove("SOFTHSM2_CONF")
            .env_remove("RUST_LOG")
            .env_remove("KEYORCH_STATE_DIR")
            .env_remove("KEYORCH_SOCKET")
            .env_remove("KEYORCH_FAILPOINT");
        let mut child = cmd.spawn().expect("spawn keyorchd");
        tokio::time::sleep(after).await;
        // It may have exited by itself already (then kill fails with ESRCH): reap either way.
        let _ = child.kill();
        child.wait().expect("reap keyorchd");
    }

    /// Waits (bounded) until the daemon exits by itself (e.g. aborted at a failpoint),
    /// reaps it and returns its exit status. Panics if it is still running after `within`.
    pub async fn wait_for_exit(&mut self, within: Duration) -> ExitStatus {
        self.channel = None;
        let mut child = self.child.take().expect("daemon is running");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "keyorchd still running {within:?} after it should have aborted; logs:\n{}",
                    tail(&self.logs(), 80)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A private SoftHSM2 token folder under `CARGO_TARGET_TMPDIR` (kept after the run) holding
/// a token for each of `labels` (SO PIN `so_pin`, user PIN `pin`), with `SOFTHSM2_CONF`
/// pointing at it for this process and the tools it runs. Call it once, before anything
/// loads the module: SoftHSM2 sees only the tokens that exist at `C_Initialize`.
pub fn softhsm_tokens(prefix: &str, labels: &[&str], so_pin: &str, pin: &str) -> PathBuf {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("create a temporary folder")
        .keep();
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).expect("create the token folder");
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .expect("write softhsm2.conf");
    // Edition 2021: set_var is safe. Set before anything loads the module.
    std::env::set_var("SOFTHSM2_CONF", &conf);
    for label in labels {
        let out = Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", label])
            .args(["--so-pin", so_pin, "--pin", pin])
            .output()
            .expect("run softhsm2-util");
        assert!(
            out.status.success(),
            "softhsm2-util: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    dir
}

/// `secret` appears in no log line, no file of the state folder, no audit event and nothing
/// the clients printed.
pub async fn assert_secret_nowhere(d: &TestDaemon, secret: &str, printed: &[&str]) {
    assert!(!d.logs().contains(secret), "a secret is in keyorchd's logs");
    for p in printed {
        assert!(!p.contains(secret), "a secret came back to a client");
    }
    for file in walk_files(&d.state_dir()) {
        let bytes = std::fs::read(&file).unwrap_or_default();
        assert!(
            !contains_bytes(&bytes, secret.as_bytes()),
            "a secret is in {}",
            file.display()
        );
    }
    let mut c = d.clients();
    let events = ok(c.audit.list_events(keyorch::proto::v1::ListEventsRequest {
        page: Some(keyorch::proto::v1::PageRequest {
            page_size: 1000,
            page_token: String::new(),
        }),
        ..Default::default()
    }))
    .await;
    assert!(!format!("{events:?}").contains(secret));
}

/// The instance of `key` in `keystore_id`.
pub fn instance(key: &Key, keystore_id: &str) -> keyorch::proto::v1::KeyInstance {
    key.instances
        .iter()
        .find(|i| i.keystore_id == keystore_id)
        .cloned()
        .unwrap_or_else(|| panic!("key {} has no instance in {keystore_id}", key.id))
}

pub async fn status_in(
    c: &mut Clients,
    id: &str,
    keystore_id: &str,
) -> keyorch::proto::v1::KeyStatusInKeystore {
    // What GetKeyStatusInKeystores says of `id` in `keystore_id`.
    ok(c.keys.get_key_status_in_keystores(key_id(id)))
        .await
        .keystores
        .into_iter()
        .find(|s| s.keystore_id == keystore_id)
        .expect("a status for the keystore")
}

pub fn assert_status_is(
    s: &keyorch::proto::v1::KeyStatusInKeystore,
    status: keyorch::proto::v1::TargetKeyStatus,
    sync: keyorch::proto::v1::SyncStatus,
) {
    assert_eq!(
        (s.status, s.sync),
        (status as i32, sync as i32),
        "status {:?}/{:?}: {s:?}",
        keyorch::proto::v1::TargetKeyStatus::try_from(s.status),
        keyorch::proto::v1::SyncStatus::try_from(s.sync)
    );
}

/// `ks` is FAILED with `code`.
pub fn assert_failed_with(ks: &Keystore, code: keyorch::proto::v1::ConnectionErrorCode) {
    assert_eq!(
        (ks.connection_state, ks.connection_error_code),
        (ConnectionState::Failed as i32, code as i32),
        "{ks:?}"
    );
}
