//! The loopback fake of Azure Key Vault's keys data plane and Microsoft Entra ID
//! (tests/azure_kv/fake.py) and the Python it runs on: the venv of scripts/azure-clients.sh
//! (Microsoft's azure-keyvault-keys and azure-identity, and `cryptography`), installed once per
//! test binary into target/azure-clients-venv (`KEYORCH_AZURE_CLIENTS_VENV` picks another).
//!
//! The fake serves Entra ID and the vault on one https port: its `url` is the vault URL, the
//! Entra ID authority host and the prefix of every key id. [`write_tls`] makes the CA and the
//! server certificate for 127.0.0.1 it needs (a CA-signed leaf: the Rust client does not
//! accept a self-signed one); [`Fake::call`] reaches its fake-only `/__fake__/` endpoints
//! (check values, drift, the denied permissions) through curl with that CA.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, OnceLock};
use std::time::Duration;

use super::tls;

/// How long a fake may take to print `LISTENING <port>`.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A tenant, application (client) id and client secret for tests; any others work too.
pub const TENANT_ID: &str = "5f2b9c41-7d3e-4a8b-9c1d-2e3f4a5b6c7d";
pub const CLIENT_ID: &str = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d";
pub const CLIENT_SECRET: &str = "keyorch-test-client-secret~Qx7.Lm2_Zp9";
/// What the fake names its vault and region in 403 messages (its defaults).
pub const VAULT_NAME: &str = "keyorch-fake-vault";
pub const LOCATION: &str = "westeurope";

/// The ten key permissions of a Key Vault access policy that `--deny` takes.
pub const PERMISSIONS: [&str; 10] = [
    "create", "import", "update", "list", "delete", "get", "recover", "purge", "backup", "restore",
];

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The venv scripts/azure-clients.sh installed the SDKs and cryptography into (once per
/// binary).
pub fn venv() -> PathBuf {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let venv = std::env::var_os("KEYORCH_AZURE_CLIENTS_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo().join("target/azure-clients-venv"));
        let out = Command::new(repo().join("scripts/azure-clients.sh"))
            .arg("install")
            .arg(&venv)
            .output()
            .expect("run scripts/azure-clients.sh");
        assert!(
            out.status.success(),
            "scripts/azure-clients.sh install failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        venv
    })
    .clone()
}

/// The venv's python, with nothing from the caller's environment (no proxies, no
/// REQUESTS_CA_BUNDLE, no AZURE_* variables that azure-identity would read).
pub fn python(home: &Path) -> Command {
    let mut cmd = Command::new(venv().join("bin/python"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .stdin(Stdio::null());
    cmd
}

/// Writes `ca.pem`, `server.pem` and `server-key.pem` (a leaf for 127.0.0.1 and localhost
/// issued by a new CA) into `dir`, what [`Fake::start`] serves https with; returns the CA's
/// PEM (for a keystore's `ca_cert_pem`).
pub fn write_tls(dir: &Path) -> String {
    let ca = tls::ca("keyorch test CA for the Azure Key Vault fake");
    let (cert, key) = tls::leaf(&ca, "127.0.0.1", "keyorch-tests", true, 1);
    std::fs::write(dir.join("ca.pem"), &ca.pem).unwrap();
    std::fs::write(dir.join("server.pem"), cert).unwrap();
    std::fs::write(dir.join("server-key.pem"), key).unwrap();
    ca.pem
}

/// A running fake.py; killed when dropped.
pub struct Fake {
    child: Child,
    /// `https://127.0.0.1:<port>` (http with `https: false`): vault URL and authority host.
    pub url: String,
    /// Its stderr: one line per request, `fake azure_kv: METHOD path -> status`.
    pub log: PathBuf,
    /// The CA of its certificate (`dir/ca.pem`), for [`Fake::call`].
    pub ca: PathBuf,
    /// (tenant, client id, client secret) it accepts.
    creds: (String, String, String),
}

impl Fake {
    /// A fake accepting `client_id` with `secret` in `tenant`, over https with `server.pem`
    /// and `server-key.pem` in `dir` (see [`write_tls`]) or over http; `extra` arguments such
    /// as `--deny get,list` or `--token-ttl 5`.
    pub fn start(
        dir: &Path,
        (tenant, client_id, secret): (&str, &str, &str),
        extra: &[&str],
        https: bool,
    ) -> Fake {
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, Ordering::Relaxed);
        let name = format!("fake-azure-{n}{}", extra.join("").replace([',', ' '], "-"));
        let log = dir.join(format!("{name}.stderr"));
        let stderr = File::create(&log).expect("fake stderr file");
        let mut cmd = python(dir);
        cmd.arg(repo().join("tests/azure_kv/fake.py"))
            .args([
                "--port",
                "0",
                "--tenant-id",
                tenant,
                "--client-id",
                client_id,
            ])
            .args(["--client-secret", secret]);
        if https {
            cmd.arg("--cert")
                .arg(dir.join("server.pem"))
                .arg("--key")
                .arg(dir.join("server-key.pem"));
        }
        let mut child = cmd
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start fake.py");
        let stdout = child.stdout.take().expect("fake stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = rx.recv_timeout(START_TIMEOUT);
        let port = line.as_deref().ok().and_then(|l| {
            l.strip_prefix("LISTENING ")
                .and_then(|p| p.trim().parse::<u16>().ok())
        });
        let Some(port) = port else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{name} did not start within {START_TIMEOUT:?} (stdout {line:?}):\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        let scheme = if https { "https" } else { "http" };
        Fake {
            child,
            url: format!("{scheme}://127.0.0.1:{port}"),
            log,
            ca: dir.join("ca.pem"),
            creds: (tenant.into(), client_id.into(), secret.into()),
        }
    }

    /// What the fake logged so far.
    pub fn logged(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// (HTTP status, body) of `method path` with an optional JSON body: for the fake-only
    /// endpoints (`/__fake__/keys/{name}/check`, `…/delete`, `…/purge`, `/__fake__/deny`,
    /// `/__fake__/tokens/revoke`, `/__fake__/requests`), through curl with the fake's CA.
    pub fn call(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        self.curl(method, path, body, &[])
    }

    /// An access token for the vault from the fake's Entra ID (the client-credentials grant
    /// with the tenant, client and secret the fake was started with).
    pub fn access_token(&self) -> String {
        let (tenant, client, secret) = &self.creds;
        let form = format!(
            "grant_type=client_credentials&client_id={client}&client_secret={}\
             &scope=https%3A%2F%2Fvault.azure.net%2F.default",
            secret.replace('~', "%7E")
        );
        let (code, body) = self.curl(
            "POST",
            &format!("/{tenant}/oauth2/v2.0/token"),
            None,
            &["--data-binary", &form],
        );
        assert_eq!(code, 200, "token: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["access_token"]
            .as_str()
            .expect("access_token")
            .to_string()
    }

    /// (HTTP status, body) of a raw Key Vault request (`path` without the api-version, which
    /// is added: 7.5) with a fresh access token, e.g. `("GET", "/keys/name/", None)`.
    pub fn kv(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let sep = if path.contains('?') { '&' } else { '?' };
        let auth = format!("Authorization: Bearer {}", self.access_token());
        self.curl(
            method,
            &format!("{path}{sep}api-version=7.5"),
            body,
            &["-H", &auth],
        )
    }

    fn curl(&self, method: &str, path: &str, body: Option<&str>, args: &[&str]) -> (u16, String) {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", method])
            .arg("--cacert")
            .arg(&self.ca)
            .args(args);
        if let Some(body) = body {
            cmd.args([
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                body,
            ]);
        }
        let out = cmd
            .arg(format!("{}{path}", self.url))
            .output()
            .expect("run curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// keyorch's check value (SHA-256 of the DER SubjectPublicKeyInfo, 8 bytes hex) of the
    /// latest version of the key `name`, deleted or not, from the key the fake holds.
    pub fn kcv(&self, name: &str) -> String {
        let (code, body) = self.call("GET", &format!("/__fake__/keys/{name}/check"), None);
        assert_eq!(code, 200, "check of {name}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["keyorch_kcv"].as_str().expect("keyorch_kcv").to_string()
    }

    /// From now on the fake denies the application these key permissions (none: `&[]`).
    pub fn deny(&self, permissions: &[&str]) {
        let body = serde_json::json!({ "deny": permissions }).to_string();
        let (code, answer) = self.call("POST", "/__fake__/deny", Some(&body));
        assert_eq!(code, 200, "/__fake__/deny {permissions:?}: {answer}");
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
