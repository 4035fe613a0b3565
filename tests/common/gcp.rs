//! The loopback fake of Google Cloud KMS's REST API and OAuth token endpoint
//! (tests/gcp_kms/fake.py), the Python it runs on (the venv of scripts/gcp-clients.sh: Google's
//! google-cloud-kms client and `cryptography`, installed once per test binary into
//! target/gcp-clients-venv; `KEYORCH_GCP_CLIENTS_VENV` picks another folder), and service
//! account JSON key files for it to trust.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, OnceLock};
use std::time::Duration;

/// How long a fake may take to print `LISTENING <port>`.
const START_TIMEOUT: Duration = Duration::from_secs(30);

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The venv scripts/gcp-clients.sh installed Google's client and cryptography into (once per
/// binary).
pub fn venv() -> PathBuf {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let venv = std::env::var_os("KEYORCH_GCP_CLIENTS_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo().join("target/gcp-clients-venv"));
        let out = Command::new(repo().join("scripts/gcp-clients.sh"))
            .arg("install")
            .arg(&venv)
            .output()
            .expect("run scripts/gcp-clients.sh");
        assert!(
            out.status.success(),
            "scripts/gcp-clients.sh install failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        venv
    })
    .clone()
}

/// The venv's python, with nothing from the caller's environment (no proxies, no
/// REQUESTS_CA_BUNDLE, no GOOGLE_APPLICATION_CREDENTIALS).
pub fn python(home: &Path) -> Command {
    let mut cmd = Command::new(venv().join("bin/python"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .stdin(Stdio::null());
    cmd
}

/// Writes a service account JSON key file: a new RSA-2048 key, PKCS#8 PEM.
const MAKE_KEY: &str = r#"
import json, secrets, sys
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
path, project, email, kid = sys.argv[1:5]
key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                        serialization.NoEncryption()).decode()
info = {
    "type": "service_account",
    "project_id": project,
    "private_key_id": kid or secrets.token_hex(20),
    "private_key": pem,
    "client_email": email,
    "client_id": str(10**20 + secrets.randbelow(9 * 10**20)),
    "auth_uri": "https://accounts.google.com/o/oauth2/auth",
    "token_uri": "https://oauth2.googleapis.com/token",
    "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
    "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/"
                            + email.replace("@", "%40"),
    "universe_domain": "googleapis.com",
}
with open(path, "w", encoding="utf-8") as f:
    json.dump(info, f, indent=2)
    f.write("\n")
"#;

/// A service account JSON key file in Google's format (what "Create key" in the console
/// downloads): type, project_id, private_key_id, private_key, client_email, client_id,
/// auth_uri, token_uri, ..., universe_domain.
#[derive(Debug, Clone)]
pub struct ServiceAccountKey {
    pub path: PathBuf,
    pub project: String,
    pub email: String,
    /// `private_key_id`: 40 hex digits, the JWT header's `kid`.
    pub key_id: String,
}

impl ServiceAccountKey {
    /// A new key file `dir/file` for `email` in `project`: a fresh RSA-2048 key (made with the
    /// venv's `cryptography`), under `key_id` or a random one. Giving the `key_id` of another
    /// file makes a key the fake does not trust under a name it knows.
    pub fn new(
        dir: &Path,
        file: &str,
        project: &str,
        email: &str,
        key_id: Option<&str>,
    ) -> ServiceAccountKey {
        let path = dir.join(file);
        let out = python(dir)
            .args(["-c", MAKE_KEY])
            .arg(&path)
            .args([project, email, key_id.unwrap_or("")])
            .output()
            .expect("run python");
        assert!(
            out.status.success(),
            "making {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let key = ServiceAccountKey {
            path,
            project: project.to_string(),
            email: email.to_string(),
            key_id: String::new(),
        };
        let key_id = key.value()["private_key_id"].as_str().unwrap().to_string();
        ServiceAccountKey { key_id, ..key }
    }

    /// The file's text.
    pub fn json(&self) -> String {
        std::fs::read_to_string(&self.path).expect("read the key file")
    }

    fn value(&self) -> serde_json::Value {
        serde_json::from_str(&self.json()).expect("a JSON key file")
    }

    /// Points the file's `token_uri` at `uri` (a fake's `<url>/token`).
    pub fn set_token_uri(&self, uri: &str) {
        let mut v = self.value();
        v["token_uri"] = serde_json::Value::String(uri.to_string());
        std::fs::write(&self.path, serde_json::to_string_pretty(&v).unwrap() + "\n")
            .expect("write the key file");
    }
}

/// A running fake.py; killed when dropped.
pub struct Fake {
    child: Child,
    pub url: String,
    /// Its stderr: one line per request, `fake gcp: METHOD path -> status`.
    pub log: PathBuf,
    /// The CA of its https certificate (`dir/ca.pem`), if it speaks https.
    ca: Option<PathBuf>,
}

impl Fake {
    /// A fake trusting `keys`, with `key_rings` (`projects/P/locations/L/keyRings/K`) made
    /// from the start, over https with `server.pem` and `server-key.pem` in `dir` (signed by
    /// `dir/ca.pem`), or over http; `extra` arguments such as `--deny P1,P2` or
    /// `--import-job-delay 1`. Each key file's `token_uri` is pointed at the fake's /token.
    pub fn start(
        dir: &Path,
        keys: &[&ServiceAccountKey],
        key_rings: &[&str],
        extra: &[&str],
        https: bool,
    ) -> Fake {
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let name = format!("fake-gcp-{}", STARTED.fetch_add(1, Ordering::Relaxed));
        let log = dir.join(format!("{name}.stderr"));
        let stderr = File::create(&log).expect("fake stderr file");
        let mut cmd = python(dir);
        cmd.arg(repo().join("tests/gcp_kms/fake.py"))
            .args(["--port", "0"]);
        for key in keys {
            cmd.arg("--service-account-key").arg(&key.path);
        }
        for ring in key_rings {
            cmd.args(["--key-ring", ring]);
        }
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
        let port = match rx.recv_timeout(START_TIMEOUT) {
            Ok(line) => line
                .strip_prefix("LISTENING ")
                .and_then(|p| p.trim().parse::<u16>().ok())
                .unwrap_or_else(|| panic!("{name} printed {line:?}, not LISTENING <port>")),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let err = std::fs::read_to_string(&log);
                panic!("{name} did not start within {START_TIMEOUT:?}:\n{err:?}");
            }
        };
        let url = format!(
            "{}://127.0.0.1:{port}",
            if https { "https" } else { "http" }
        );
        for key in keys {
            key.set_token_uri(&format!("{url}/token"));
        }
        Fake {
            child,
            url,
            log,
            ca: https.then(|| dir.join("ca.pem")),
        }
    }

    /// What the fake logged so far.
    pub fn logged(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A fake-only `/__fake__/` endpoint (or any other path), through curl with the fake's CA:
    /// (HTTP status, body). E.g. `("GET", "/__fake__/versions/<name>/check", None)`.
    pub fn admin(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", method]);
        if let Some(ca) = &self.ca {
            cmd.arg("--cacert").arg(ca);
        }
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

    /// keyorch's check value of the material the version `name` holds, as the fake unwrapped
    /// it (`GET /__fake__/versions/{name}/check`).
    pub fn kcv(&self, version: &str) -> String {
        let (code, body) = self.admin(
            "GET",
            &format!("/__fake__/versions/{}/check", encode(version)),
            None,
        );
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["keyorch_kcv"].as_str().unwrap().to_string()
    }

    /// Forces the version's state behind the client's back (`ENABLED`, `DISABLED`,
    /// `DESTROY_SCHEDULED` as a console user's destroy, `DESTROYED`).
    pub fn set_state(&self, version: &str, state: &str) {
        let (code, body) = self.admin(
            "POST",
            &format!("/__fake__/versions/{}/state", encode(version)),
            Some(&format!(r#"{{"state":"{state}"}}"#)),
        );
        assert_eq!(code, 200, "{body}");
    }

    /// Replaces the IAM permissions the service account lacks.
    pub fn deny(&self, permissions: &[&str]) {
        let body = serde_json::json!({ "permissions": permissions }).to_string();
        let (code, text) = self.admin("POST", "/__fake__/deny", Some(&body));
        assert_eq!(code, 200, "{text}");
    }
}

/// `name` with `/` percent-encoded, for a `/__fake__/versions/{name}/...` path.
pub fn encode(name: &str) -> String {
    name.replace('%', "%25").replace('/', "%2F")
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
