//! keyorchd as a hardened service, run as the real binary with `--config` files on a
//! SoftHSM2 token: config errors, mutual TLS, SIGHUP, limits, systemd notify, no leaks.

mod common;

use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::tls::{ca, leaf};
use common::*;
use hyper_util::rt::TokioIo;
use keyorch::client::Clients;
use keyorch::proto::v1::{GetVaultRequest, KeyAlgorithm};
use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevokedCertParams, SerialNumber};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::Code;
use tower::service_fn;

/// The log target of the per-request debug line.
const GATE: &str = "keyorch::api::gate";
const SERVING: i32 = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;

/// Whether grpc.health.v1 says SERVING on `ch`.
async fn serving(ch: Channel) -> bool {
    matches!(health_status(ch, "").await, Ok(s) if s == SERVING)
}

async fn assert_serving(ch: Channel) {
    match health_status(ch, "").await {
        Ok(s) => assert_eq!(s, SERVING, "health status"),
        Err(e) => panic!("health check failed: {}", describe(&e)),
    }
}

/// A grant of every role on every vault to the uid running the tests.
fn grant_me_everything() -> String {
    format!(
        "[[access.grant]]\nuid = {}\nvault = \"*\"\nroles = [\"admin\", \"operator\", \"user\", \"auditor\"]\n",
        nix::unistd::getuid().as_raw()
    )
}

// ---------------------------------------------------------------------------------------
// A keyorchd started with --config on the token of a stopped --dev daemon
// ---------------------------------------------------------------------------------------

/// A dev state folder (token, PINs, database) whose daemon was stopped, to run
/// `keyorchd --config` on.
struct Token {
    dev: TestDaemon,
}

impl Token {
    async fn new() -> Token {
        let mut dev = TestDaemon::start().await;
        let status = dev.stop().await;
        assert!(status.success(), "dev daemon exited with {status}");
        Token { dev }
    }

    fn root(&self) -> &Path {
        self.dev.root()
    }

    fn state(&self) -> PathBuf {
        self.dev.state_dir()
    }

    /// A config for this token: `[hsm]`, `[store]`, `[listen]` with `listen_extra` lines,
    /// then `rest` (more sections).
    fn config(&self, listen_extra: &str, rest: &str) -> String {
        let s = self.state();
        format!(
            "[hsm]\nmodule = {module:?}\ntoken_label = {DEV_TOKEN_LABEL:?}\npin_file = {pin:?}\nsofthsm2_conf = {conf:?}\n\n\
             [store]\npath = {db:?}\n\n[listen]\nsocket = {sock:?}\n{listen_extra}\n{rest}\n",
            module = SOFTHSM_MODULE,
            pin = s.join("user-pin"),
            conf = s.join("softhsm2.conf"),
            db = s.join("db"),
            sock = self.socket(),
        )
    }

    fn socket(&self) -> PathBuf {
        self.root().join("cfg.sock")
    }

    fn write_config(&self, text: &str) -> PathBuf {
        let path = self.root().join("keyorchd.toml");
        std::fs::write(&path, text).expect("write config");
        path
    }

    fn pin(&self) -> String {
        self.dev.user_pin()
    }
}

/// `keyorchd --config FILE` as a child, with its logs in files.
struct ConfigDaemon {
    child: Option<Child>,
    stdout: PathBuf,
    stderr: PathBuf,
    socket: PathBuf,
    channel: Option<Channel>,
}

fn daemon_command(config: &Path) -> Command {
    let mut cmd = Command::new(TestDaemon::daemon_binary());
    cmd.arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .env_remove("SOFTHSM2_CONF")
        .env_remove("RUST_LOG")
        .env_remove("KEYORCH_LOG")
        .env_remove("KEYORCH_STATE_DIR")
        .env_remove("KEYORCH_SOCKET")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("CREDENTIALS_DIRECTORY");
    cmd
}

impl ConfigDaemon {
    async fn start(token: &Token, config: &str) -> ConfigDaemon {
        Self::start_with(token, config, |_| {}).await
    }

    async fn start_with(
        token: &Token,
        config: &str,
        adjust: impl FnOnce(&mut Command),
    ) -> ConfigDaemon {
        let path = token.write_config(config);
        let stdout = token.root().join("cfg.stdout");
        let stderr = token.root().join("cfg.stderr");
        let mut cmd = daemon_command(&path);
        cmd.stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap());
        adjust(&mut cmd);
        let child = cmd.spawn().expect("spawn keyorchd");
        let mut d = ConfigDaemon {
            child: Some(child),
            stdout,
            stderr,
            socket: token.socket(),
            channel: None,
        };
        d.wait_ready().await;
        d
    }

    fn logs(&self) -> String {
        let mut all = String::new();
        for p in [&self.stdout, &self.stderr] {
            all.push_str(&String::from_utf8_lossy(
                &std::fs::read(p).unwrap_or_default(),
            ));
        }
        all
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!("keyorchd --config exited with {status}:\n{}", self.logs());
            }
            if self.socket.exists() {
                if let Ok(Ok(ch)) =
                    tokio::time::timeout(Duration::from_secs(5), open_channel(&self.socket)).await
                {
                    if serving(ch.clone()).await {
                        self.channel = Some(ch);
                        return;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "keyorchd --config not serving after 30 s:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn channel(&self) -> Channel {
        self.channel.clone().expect("serving")
    }

    /// Waits (bounded) for a log line containing `needle`.
    async fn wait_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let logs = self.logs();
            if logs.contains(needle) {
                return logs;
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needle:?}:\n{logs}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (bounded) until `needle` occurs `n` times in the logs.
    async fn wait_count(&self, needle: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.logs().matches(needle).count() < n {
            assert!(
                Instant::now() < deadline,
                "fewer than {n} log lines with {needle:?}:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(&mut self) {
        self.channel = None;
        let mut child = self.child.take().expect("running");
        send_signal(child.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "keyorchd exited with {status} on SIGTERM");
                return;
            }
            assert!(Instant::now() < deadline, "no exit 30 s after SIGTERM");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ConfigDaemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- keyorchd --config logs ----\n{}", self.logs());
        }
    }
}

/// Runs `keyorchd --config` on `text` expecting a start-up failure; returns stderr.
fn start_fails(token: &Token, text: &str) -> String {
    let path = token.write_config(text);
    let mut child = daemon_command(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn keyorchd");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "keyorchd started on a bad config:\n{text}\nstderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        !out.status.success(),
        "keyorchd exited 0 on a bad config:\n{text}"
    );
    assert!(
        !token.socket().exists(),
        "a socket was left behind by a failed start"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

// ---------------------------------------------------------------------------------------
// Config robustness
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn invalid_configs_stop_startup_naming_the_field() {
    let t = Token::new().await;
    let good = t.config("", "");
    let pin_line = format!("pin_file = {:?}", t.state().join("user-pin"));
    let cases: Vec<(String, &str)> = vec![
        (good.replace("[store]", "bogus = 1\n[store]"), "bogus"),
        (good.replace("[store]", "sessions = \"four\"\n[store]"), "hsm.sessions"),
        (good.replace("[store]", "crypto_threads = 0\n[store]"), "hsm.crypto_threads"),
        (good.replace("[store]", "crypto_threads = 65\n[store]"), "hsm.crypto_threads"),
        (
            good.replace(&pin_line, "pin_file = \"/nonexistent/pin\""),
            "hsm.pin_file",
        ),
        (
            // A folder is not a readable PIN file (root reads any mode).
            good.replace(&pin_line, &format!("pin_file = {:?}", t.state())),
            "hsm.pin_file",
        ),
        (
            good.replace(SOFTHSM_MODULE, "/nonexistent/libpkcs11.so"),
            "hsm.module",
        ),
        (
            t.config("", "[[access.grant]]\nuid = 1\nvault = \"*\"\nroles = [\"root\"]\n"),
            "access.grant[0].roles",
        ),
        (
            t.config("", "[[access.grant]]\nuid = 1\ngid = 2\nvault = \"*\"\nroles = [\"user\"]\n"),
            "access.grant[0]",
        ),
        (
            t.config("", "[[access.grant]]\nuser = \"no-such-user-keyorch\"\nvault = \"*\"\nroles = [\"user\"]\n"),
            "access.grant[0].user",
        ),
        (
            t.config("", "[[access.grant]]\nuid = 1\nvault = \"*\"\nroles = \"admin\"\n"),
            "access.grant[0].roles",
        ),
        (
            t.config("socket_group = \"no-such-group-keyorch\"", ""),
            "listen.socket_group",
        ),
        (t.config("tcp = \"127.0.0.1:0\"", ""), "listen.tls_cert"),
        (
            t.config(
                "tcp = \"127.0.0.1:0\"\ntls_cert = \"/nonexistent/c\"\ntls_key = \"/nonexistent/k\"\nclient_ca = \"/nonexistent/ca\"",
                "",
            ),
            "listen.tls_cert",
        ),
        (t.config("", "[limits]\nmax_message_bytes = 1\n"), "limits.max_message_bytes"),
        (t.config("", "[security]\nlock_memory = \"yes\"\n"), "security.lock_memory"),
        (t.config("", "[log]\nlevel = \"loud\"\n"), "log.level"),
        (t.config("", "[health]\ninterval_secs = 0\n"), "health.interval_secs"),
        (t.config("", "[health]\ninterval = 5\n"), "interval"),
    ];
    for (text, field) in cases {
        let stderr = start_fails(&t, &text);
        assert!(
            stderr.contains(field),
            "the error does not name {field}:\n{stderr}\nconfig:\n{text}"
        );
    }
    // And the good one starts.
    let mut d = ConfigDaemon::start(&t, &good).await;
    d.stop().await;
}

#[tokio::test]
async fn no_grants_is_a_loud_warning() {
    let t = Token::new().await;
    let mut d = ConfigDaemon::start(&t, &t.config("", "")).await;
    let logs = d.wait_log("nobody is authorised").await;
    assert!(logs.contains("WARN"), "{logs}");
    d.stop().await;
}

// ---------------------------------------------------------------------------------------
// Socket group, hardening, secrets
// ---------------------------------------------------------------------------------------

/// A group that exists on Debian and is not root's.
fn some_group() -> (String, u32) {
    for name in ["daemon", "adm", "nogroup", "users"] {
        if let Ok(Some(g)) = nix::unistd::Group::from_name(name) {
            if g.gid.as_raw() != 0 {
                return (name.to_string(), g.gid.as_raw());
            }
        }
    }
    panic!("no non-root group on this machine");
}

#[tokio::test]
async fn the_socket_gets_the_configured_group_and_mode() {
    let t = Token::new().await;
    let (name, gid) = some_group();
    let mut d = ConfigDaemon::start(&t, &t.config(&format!("socket_group = {name:?}"), "")).await;
    let meta = std::fs::metadata(t.socket()).unwrap();
    assert_eq!(meta.gid(), gid, "socket group");
    assert_eq!(mode(&t.socket()), 0o660, "socket mode");
    d.stop().await;
    // By number too.
    let mut d = ConfigDaemon::start(&t, &t.config(&format!("socket_group = \"{gid}\""), "")).await;
    assert_eq!(std::fs::metadata(t.socket()).unwrap().gid(), gid);
    d.stop().await;
}

#[tokio::test]
async fn the_process_is_hardened() {
    let t = Token::new().await;
    let mut d = ConfigDaemon::start(&t, &t.config("", "")).await;
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", d.pid())).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    let fields: Vec<&str> = core.split_whitespace().collect();
    assert_eq!(&fields[4..6], ["0", "0"], "{core}");
    let logs = d.wait_log("process hardening").await;
    assert!(logs.contains("core dumps off"), "{logs}");
    if nix::unistd::geteuid().is_root() {
        // Root has CAP_IPC_LOCK: everything is locked.
        assert!(logs.contains("memory locked (mlockall)"), "{logs}");
        let status = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap();
        let locked: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmLck:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap();
        assert!(locked > 0, "VmLck is 0:\n{status}");
        // MCL_ONFAULT: every writable mapping is locked page by page as it is touched
        // (VmFlags `lo lf`), so thread stacks and malloc arenas are not made resident whole.
        let smaps = std::fs::read_to_string(format!("/proc/{}/smaps", d.pid())).unwrap();
        let flags: Vec<&str> = smaps
            .lines()
            .filter_map(|l| l.strip_prefix("VmFlags:"))
            .filter(|f| f.split_whitespace().any(|x| x == "wr"))
            .collect();
        assert!(!flags.is_empty(), "no writable mapping in smaps");
        for f in &flags {
            let f: Vec<&str> = f.split_whitespace().collect();
            assert!(
                f.contains(&"lo") && f.contains(&"lf"),
                "not locked on fault: {f:?}"
            );
        }
    }
    d.stop().await;
    let mut d = ConfigDaemon::start(&t, &t.config("", "[security]\nlock_memory = false\n")).await;
    let logs = d.wait_log("process hardening").await;
    assert!(logs.contains("memory not locked"), "{logs}");
    d.stop().await;
}

#[tokio::test]
async fn the_pin_of_a_config_daemon_never_leaks() {
    let t = Token::new().await;
    let pin = t.pin();
    let mut d = ConfigDaemon::start(
        &t,
        &t.config(
            "",
            &format!("[log]\nlevel = \"trace\"\n{}", grant_me_everything()),
        ),
    )
    .await;
    let pid = d.pid();
    let mut c = Clients::new(d.channel());
    let fx = Fixture::new(&mut c).await;
    for (alg, bits) in [
        (KeyAlgorithm::Aes, 256),
        (KeyAlgorithm::Rsa, 2048),
        (KeyAlgorithm::Ec, 256),
    ] {
        let key = fx
            .key(&mut c, &format!("k-{alg:?}-{bits}"), alg, bits, true)
            .await;
        if alg == KeyAlgorithm::Aes {
            let ct = encrypt(&mut c, &key.id, b"canary plaintext", b"").await;
            assert_eq!(
                decrypt(&mut c, &key.id, &ct, b"").await,
                b"canary plaintext"
            );
        }
    }
    let _ = fails(c.vaults.get_vault(GetVaultRequest { id: unknown_id() })).await;
    for what in ["cmdline", "environ"] {
        let bytes = std::fs::read(format!("/proc/{pid}/{what}")).unwrap_or_default();
        assert!(
            !contains_bytes(&bytes, pin.as_bytes()),
            "PIN in /proc/{pid}/{what}"
        );
    }
    d.stop().await;
    let logs = d.logs();
    assert!(
        logs.contains("TRACE") || logs.contains("DEBUG"),
        "not verbose:\n{logs}"
    );
    for form in [pin.clone(), pin.to_uppercase(), pin.to_lowercase()] {
        assert!(!logs.contains(&form), "the PIN is in the logs");
        for f in walk_files(t.root()) {
            if f == t.state().join("user-pin") {
                continue;
            }
            let bytes = std::fs::read(&f).unwrap();
            assert!(
                !contains_bytes(&bytes, form.as_bytes()),
                "the PIN is in {}",
                f.display()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// SIGHUP
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn sighup_reloads_the_log_level_and_grants_without_dropping_connections() {
    let t = Token::new().await;
    let me = nix::unistd::getuid().as_raw();
    let auditor = format!("[[access.grant]]\nuid = {me}\nvault = \"*\"\nroles = [\"auditor\"]\n");
    let admin = format!("[[access.grant]]\nuid = {me}\nvault = \"*\"\nroles = [\"admin\"]\n");
    let mut d = ConfigDaemon::start(
        &t,
        &t.config("", &format!("[log]\nlevel = \"info\"\n{auditor}")),
    )
    .await;
    let channel = d.channel();
    let mut c = Clients::new(channel.clone());
    // An auditor may not create a vault; at info, requests are not logged.
    let status = fails(c.vaults.create_vault(vault_req("after-reload"))).await;
    assert_eq!(
        status.code(),
        Code::PermissionDenied,
        "{}",
        describe(&status)
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !d.logs().contains(GATE),
        "request logged at info:\n{}",
        d.logs()
    );

    // SIGHUP with admin and debug: the same connection now creates, and is logged.
    t.write_config(&t.config("", &format!("[log]\nlevel = \"debug\"\n{admin}")));
    send_signal(d.pid(), libc::SIGHUP);
    let logs = d.wait_log("configuration reloaded").await;
    assert!(logs.contains("grants=1"), "{logs}");
    let vault = ok(c.vaults.create_vault(vault_req("after-reload"))).await;
    d.wait_log("method=\"/keyorch.v1.VaultService/CreateVault\"")
        .await;
    assert_serving(channel.clone()).await;

    // A broken file is refused and the old settings stay (admin, debug).
    t.write_config("[hsm\nbroken");
    send_signal(d.pid(), libc::SIGHUP);
    d.wait_log("reload failed, the previous settings stay in force")
        .await;
    let before = d.logs().matches(GATE).count();
    get_vault(&mut c, &vault.id).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while d.logs().matches(GATE).count() == before {
        assert!(
            Instant::now() < deadline,
            "debug level lost after a failed reload"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // So is a file whose grant names an unknown user.
    t.write_config(&t.config(
        "",
        "[[access.grant]]\nuser = \"no-such-user-keyorch\"\nvault = \"*\"\nroles = [\"admin\"]\n",
    ));
    send_signal(d.pid(), libc::SIGHUP);
    d.wait_count("reload failed", 2).await;
    assert!(d.logs().contains("access.grant[0].user"), "{}", d.logs());
    ok(c.vaults.create_vault(vault_req("still-admin"))).await;

    // A change that needs a restart is named; a grant taken away is gone at once.
    t.write_config(&t.config(
        "",
        &format!("[log]\nlevel = \"debug\"\n[limits]\nrequest_timeout_secs = 30\n{auditor}"),
    ));
    send_signal(d.pid(), libc::SIGHUP);
    d.wait_log("[limits] changed: it takes effect at the next restart")
        .await;
    d.wait_count("configuration reloaded", 2).await;
    let status = fails(c.vaults.create_vault(vault_req("too-late"))).await;
    assert_eq!(
        status.code(),
        Code::PermissionDenied,
        "{}",
        describe(&status)
    );
    d.stop().await;
}

// ---------------------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn the_configured_message_limit_applies() {
    let t = Token::new().await;
    let mut d = ConfigDaemon::start(
        &t,
        &t.config(
            "",
            &format!(
                "[limits]\nmax_message_bytes = 4096\n{}",
                grant_me_everything()
            ),
        ),
    )
    .await;
    let mut c = Clients::new(d.channel());
    let status = fails(c.vaults.get_vault(GetVaultRequest {
        id: "v".repeat(8000),
    }))
    .await;
    assert_eq!(
        status.code(),
        Code::ResourceExhausted,
        "{}",
        describe(&status)
    );
    assert!(
        status.message().contains("max_message_bytes"),
        "{}",
        describe(&status)
    );
    // A small request on the same connection is served.
    let status = fails(c.vaults.get_vault(GetVaultRequest { id: unknown_id() })).await;
    assert_eq!(status.code(), Code::NotFound, "{}", describe(&status));
    d.stop().await;
}

#[tokio::test]
async fn a_flood_from_one_client_does_not_starve_another() {
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let fx = Fixture::new(&mut c).await;
    let key = fx.key(&mut c, "flood", KeyAlgorithm::Aes, 256, true).await;

    // The flood: 8 connections × 64 concurrent callers, bounded in time and count.
    const CONNECTIONS: usize = 8;
    const CALLERS: usize = 64;
    const MAX_CALLS: usize = 300;
    let flood_for = Duration::from_secs(8);
    let started = Instant::now();
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let ch = open_channel(&d.socket()).await.unwrap();
        for i in 0..CALLERS {
            let mut fc = Clients::new(ch.clone());
            let key_id = key.id.clone();
            let vault_id = fx.vault.id.clone();
            let done = done.clone();
            tasks.push(tokio::spawn(async move {
                for n in 0..MAX_CALLS {
                    if started.elapsed() > flood_for {
                        break;
                    }
                    let ok = if (i + n) % 2 == 0 {
                        fc.crypto
                            .encrypt(encrypt_req(&key_id, &[7u8; 1024], b""))
                            .await
                            .is_ok()
                    } else {
                        fc.vaults
                            .get_vault(GetVaultRequest {
                                id: vault_id.clone(),
                            })
                            .await
                            .is_ok()
                    };
                    if ok {
                        done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }));
        }
    }
    // Let the flood build up, then another client asks, one call at a time.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let other = Clients::new(open_channel(&d.socket()).await.unwrap());
    let mut worst = Duration::ZERO;
    for n in 0..5 {
        let mut o = other.clone();
        let t0 = Instant::now();
        let call = async {
            if n % 2 == 0 {
                o.vaults
                    .get_vault(GetVaultRequest {
                        id: fx.vault.id.clone(),
                    })
                    .await
                    .map(|_| ())
            } else {
                o.crypto
                    .encrypt(encrypt_req(&key.id, b"other client", b""))
                    .await
                    .map(|_| ())
            }
        };
        let res = tokio::time::timeout(Duration::from_secs(5), call).await;
        let took = t0.elapsed();
        assert!(
            matches!(res, Ok(Ok(()))),
            "the other client was not served within 5 s during the flood: {res:?}"
        );
        worst = worst.max(took);
        assert!(
            started.elapsed() < flood_for,
            "the flood ended before the check"
        );
    }
    for t in tasks {
        t.await.unwrap();
    }
    let flooded = done.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("flood: {flooded} calls served; the other client's slowest call took {worst:?}");
    assert!(flooded > 100, "the flood did not run: {flooded} calls");
    assert!(
        worst < Duration::from_secs(3),
        "the other client waited {worst:?}"
    );
    assert_serving(d.channel()).await;
}

// ---------------------------------------------------------------------------------------
// systemd notifications
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn systemd_gets_ready_watchdog_and_stopping() {
    let t = Token::new().await;
    let notify = t.root().join("notify.sock");
    let sock = UnixDatagram::bind(&notify).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut d = ConfigDaemon::start_with(&t, &t.config("", ""), |cmd| {
        cmd.env("NOTIFY_SOCKET", &notify)
            .env("WATCHDOG_USEC", "1000000");
    })
    .await;
    let mut seen: Vec<String> = Vec::new();
    wait_notification(&sock, &mut seen, "READY=1", 1);
    // Pings every 0.5 s for WATCHDOG_USEC = 1 s.
    wait_notification(&sock, &mut seen, "WATCHDOG=1", 3);
    d.stop().await;
    wait_notification(&sock, &mut seen, "STOPPING=1", 1);
    let ready = seen.iter().position(|m| m.lines().any(|l| l == "READY=1"));
    let stopping = seen
        .iter()
        .position(|m| m.lines().any(|l| l == "STOPPING=1"));
    assert!(ready < stopping, "STOPPING before READY: {seen:?}");
}

/// Reads datagrams until `count` of them hold the line `want` (bounded: 10 s).
fn wait_notification(sock: &UnixDatagram, seen: &mut Vec<String>, want: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 4096];
    while seen.iter().filter(|m| m.lines().any(|l| l == want)).count() < count {
        assert!(
            Instant::now() < deadline,
            "fewer than {count} {want} notifications; got {seen:?}"
        );
        if let Ok(n) = sock.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
}

// ---------------------------------------------------------------------------------------
// Mutual TLS
// ---------------------------------------------------------------------------------------

/// A gRPC channel over TLS to `addr`, trusting `ca_pem`, with an optional client identity.
async fn tls_channel(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    client: Option<&(String, String)>,
    tls12_only: bool,
) -> Result<Channel, tonic::transport::Error> {
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let versions: &[&tokio_rustls::rustls::SupportedProtocolVersion] = if tls12_only {
        &[&tokio_rustls::rustls::version::TLS12]
    } else {
        tokio_rustls::rustls::ALL_VERSIONS
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .map(|c| c.unwrap())
                    .collect(),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    Endpoint::from_static("http://localhost")
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(10))
        .connect_with_connector(service_fn(move |_: Uri| {
            let connector = connector.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                let tls = connector
                    .connect(ServerName::try_from("localhost").unwrap(), tcp)
                    .await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await
}

/// The TCP address the daemon printed on stdout.
async fn tcp_addr(d: &ConfigDaemon) -> std::net::SocketAddr {
    let logs = d.wait_log("tcp (mutual TLS): ").await;
    let line = logs
        .lines()
        .find_map(|l| l.trim().strip_prefix("tcp (mutual TLS): "))
        .unwrap();
    line.trim().parse().unwrap()
}

#[tokio::test]
async fn mutual_tls_serves_clients_of_the_ca_and_refuses_the_rest() {
    let t = Token::new().await;
    let dir = t.root().join("tls");
    std::fs::create_dir_all(&dir).unwrap();
    let ours = ca("keyorch test clients CA");
    let theirs = ca("some other CA");
    let server = leaf(&ours, "keyorchd", "example", true, 1);
    let client = leaf(&ours, "ops", "example", false, 2);
    let revoked = leaf(&ours, "fired", "example", false, 3);
    let stranger = leaf(&theirs, "ops", "example", false, 2);
    let crl = CertificateRevocationListParams {
        this_update: rcgen::date_time_ymd(2024, 1, 1),
        next_update: rcgen::date_time_ymd(2099, 1, 1),
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: vec![RevokedCertParams {
            serial_number: SerialNumber::from(3u64),
            revocation_time: rcgen::date_time_ymd(2024, 1, 1),
            reason_code: None,
            invalidity_date: None,
        }],
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&ours.issuer)
    .unwrap();
    let write = |name: &str, text: &str| {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    };
    let cert = write("server.crt", &server.0);
    let key = write("server.key", &server.1);
    let client_ca = write("clients-ca.crt", &ours.pem);
    let client_crl = write("clients.crl", &crl.pem().unwrap());
    let listen = format!(
        "tcp = \"127.0.0.1:0\"\ntls_cert = {cert:?}\ntls_key = {key:?}\nclient_ca = {client_ca:?}\nclient_crl = {client_crl:?}"
    );
    let admin = leaf(&ours, "admin", "example", false, 4);
    let grant = "[[access.grant]]\ncertificate = \"CN=ops, O=example\"\nvault = \"*\"\nroles = [\"user\"]\n\n\
                 [[access.grant]]\ncertificate = \"cn=admin,o=example\"\nvault = \"*\"\nroles = [\"admin\"]\n";
    let mut d = ConfigDaemon::start(
        &t,
        &t.config(&listen, &format!("[log]\nlevel = \"debug\"\n{grant}")),
    )
    .await;
    let addr = tcp_addr(&d).await;

    // A client with a certificate from the CA is served, as its subject.
    let ch = tls_channel(addr, &ours.pem, Some(&client), false)
        .await
        .unwrap();
    assert_serving(ch.clone()).await;
    d.wait_log("principal=cert:CN=ops,O=example").await;
    // Its roles are those granted to its subject: a user, not an admin.
    let mut c = Clients::new(ch.clone());
    ok(c.vaults
        .list_vaults(keyorch::proto::v1::ListVaultsRequest { page: None }))
    .await;
    let status = fails(c.vaults.create_vault(vault_req("by-ops"))).await;
    assert_eq!(
        status.code(),
        Code::PermissionDenied,
        "{}",
        describe(&status)
    );
    let mut a = Clients::new(
        tls_channel(addr, &ours.pem, Some(&admin), false)
            .await
            .unwrap(),
    );
    let v = ok(a.vaults.create_vault(vault_req("by-admin"))).await;
    assert_eq!(get_vault(&mut c, &v.id).await.name, "by-admin");
    // So is a TLS 1.2 client (ECDHE + AEAD suites).
    let ch12 = tls_channel(addr, &ours.pem, Some(&client), true)
        .await
        .unwrap();
    assert_serving(ch12).await;
    // And the Unix socket still serves alongside.
    assert_serving(d.channel()).await;

    // No certificate, a certificate of another CA, a revoked certificate: refused.
    for (what, id) in [
        ("no client certificate", None),
        ("a certificate of another CA", Some(&stranger)),
        ("a revoked certificate", Some(&revoked)),
    ] {
        let refused = match tls_channel(addr, &ours.pem, id, false).await {
            Err(_) => true,
            Ok(ch) => health_status(ch, "").await.is_err(),
        };
        assert!(refused, "a client with {what} was served");
    }
    // One refusal per client above; each is logged when its handshake ends.
    d.wait_count("TLS handshake refused", 3).await;

    // Weak TLS 1.2 suites (RSA key exchange, CBC) and old versions are not offered.
    if Command::new("openssl").arg("version").output().is_ok() {
        let client_cert = write("client.crt", &client.0);
        let client_key = write("client.key", &client.1);
        let s_client = |args: &[&str]| {
            let out = Command::new("timeout")
                .arg("10")
                .arg("openssl")
                .arg("s_client")
                .arg("-connect")
                .arg(addr.to_string())
                .args(args)
                .arg("-cert")
                .arg(&client_cert)
                .arg("-key")
                .arg(&client_key)
                .stdin(Stdio::null())
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            (
                out.status.success() && !text.contains("Cipher is (NONE)"),
                text,
            )
        };
        // The control: a strong TLS 1.2 suite is negotiated.
        let (ok, text) = s_client(&["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"]);
        assert!(
            ok,
            "openssl could not negotiate ECDHE-ECDSA-AES128-GCM-SHA256:\n{text}"
        );
        for args in [
            &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA"][..],
            &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-SHA384"][..],
            &["-tls1_2", "-cipher", "AES128-GCM-SHA256"][..],
            &["-tls1_1"][..],
        ] {
            let (ok, text) = s_client(args);
            assert!(!ok, "openssl s_client {args:?} negotiated:\n{text}");
        }
    }
    d.stop().await;
}

// ---------------------------------------------------------------------------------------
// The shipped unit, sysusers file and example config agree with each other and the daemon
// ---------------------------------------------------------------------------------------

#[test]
fn the_systemd_files_agree_with_the_daemon() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    let unit = std::fs::read_to_string(dir.join("keyorchd.service")).unwrap();
    let sysusers = std::fs::read_to_string(dir.join("keyorchd.sysusers")).unwrap();
    let example = std::fs::read_to_string(dir.join("keyorchd.toml")).unwrap();
    let directive = |name: &str| -> Vec<String> {
        unit.lines()
            .filter_map(|l| l.strip_prefix(&format!("{name}=")))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(directive("Type"), ["notify"]);
    assert!(!directive("WatchdogSec").is_empty());
    // The config the unit starts with is the example's place.
    assert_eq!(directive("ConfigurationDirectory"), ["keyorch"]);
    assert_eq!(
        directive("ExecStart"),
        ["/usr/bin/keyorchd --config %E/keyorch/keyorchd.toml"]
    );
    assert_eq!(directive("ExecReload"), ["/bin/kill -HUP $MAINPID"]);
    // The PIN credential the unit loads is the one the example reads.
    assert!(directive("LoadCredential")
        .iter()
        .any(|c| c.starts_with("hsm-pin:")));
    assert!(example.contains("pin_credential = \"hsm-pin\""));
    // The socket group exists (sysusers), the daemon is in it, and the example uses it.
    assert!(sysusers.lines().any(|l| l.starts_with("g keyorch-clients")));
    assert!(sysusers.lines().any(|l| l.starts_with("u keyorch ")));
    assert_eq!(directive("User"), ["keyorch"]);
    assert_eq!(directive("SupplementaryGroups"), ["keyorch-clients"]);
    assert!(example.contains("socket_group = \"keyorch-clients\""));
    assert!(example.contains("socket = \"/run/keyorch/keyorch.sock\""));
    assert_eq!(directive("RuntimeDirectory"), ["keyorch"]);
    assert!(example.contains("path = \"/var/lib/keyorch/db\""));
    assert_eq!(directive("StateDirectory"), ["keyorch"]);
    // SO_PEERCRED needs real ids; mlockall needs the memlock limit; no core dumps.
    assert_eq!(directive("PrivateUsers"), ["no"]);
    assert_eq!(directive("LimitMEMLOCK"), ["infinity"]);
    assert_eq!(directive("LimitCORE"), ["0"]);
    // mlockall must stay allowed by the system call filter (@memlock is in @system-service).
    for filter in directive("SystemCallFilter") {
        assert!(
            !filter.contains("@memlock") && !filter.contains("mlock"),
            "{filter}"
        );
    }
}
