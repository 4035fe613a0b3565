//! The loopback fake of IBM Key Protect and of Hyper Protect Crypto Services' KMS API
//! (tests/ibm_kms/fake.py, issue 14), proven honest with IBM's official Python SDK.
//!
//! IBM ships no emulator of either service, so keyorch's `ibm_key_protect` and `ibm_hpcs`
//! keystores are tested against this fake. It follows IBM's published API (Key Protect API v2
//! and IBM Cloud IAM's token endpoint; its doc comment names the documents and files): IAM's
//! API-key grant with RS256 JWT access tokens, the Bluemix-Instance, X-Kms-Key-Ring, Prefer and
//! Correlation-Id headers, Key Protect's collection and error bodies, import tokens with a
//! 4096-bit RSA key and a 12-byte nonce, and the real crypto of an import with the token: it
//! RSA-OAEP-unwraps the payload (SHA-256 for Key Protect, SHA-1 for HPCS) and decrypts the
//! encrypted nonce under the unwrapped material (AES-GCM with a 12-byte IV and the tag
//! appended for Key Protect, AES-CBC with PKCS#7 for HPCS), so a wrong wrap, nonce, IV or
//! algorithm, an expired token or a missing IAM permission (`--deny`) is refused with the
//! API's status and reason code.
//!
//! tests/ibm_kms/sdk_proof.py drives the fake, per flavor, with PyPI `keyprotect`
//! (IBM/keyprotect-python-client) on ibm-cloud-sdk-core, pinned in
//! scripts/ibm-clients-requirements.lock and installed on first use into
//! target/ibm-clients-venv by scripts/ibm-clients.sh (`KEYORCH_IBM_CLIENTS_VENV` picks another
//! folder), over https with a CA made here, and checks through the fake-only
//! `/__fake__/keys/{id}/check` that imported material arrived intact.

#[path = "common/tls.rs"]
mod tls;

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

/// Upper bound of one SDK proof run (a few 4096-bit RSA key pairs are made on the way).
const PROOF_TIMEOUT: Duration = Duration::from_secs(180);
/// How long a fake may take to print `LISTENING <port>`.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The one service-ID API key the fake's IAM accepts, and the instance it serves.
const API_KEY: &str = "keyorch-test-serviceid-apikey-7d41f0c2";
const INSTANCE: &str = "2f8c7a52-4b1e-4d0a-9c3e-5a6b7c8d9e0f";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The venv scripts/ibm-clients.sh installed the SDK and cryptography into (once per binary).
fn venv() -> PathBuf {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let venv = std::env::var_os("KEYORCH_IBM_CLIENTS_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo().join("target/ibm-clients-venv"));
        let t = Instant::now();
        let out = Command::new(repo().join("scripts/ibm-clients.sh"))
            .arg("install")
            .arg(&venv)
            .output()
            .expect("run scripts/ibm-clients.sh");
        assert!(
            out.status.success(),
            "scripts/ibm-clients.sh install failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("ibm clients ready in {:?}", t.elapsed());
        venv
    })
    .clone()
}

/// The venv's python on a script of tests/ibm_kms, with nothing from the caller's environment
/// (no proxies, no REQUESTS_CA_BUNDLE, no IBM_CREDENTIALS_FILE).
fn python(script: &str, home: &Path) -> Command {
    let mut cmd = Command::new(venv().join("bin/python"));
    cmd.arg(repo().join("tests/ibm_kms").join(script))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .stdin(Stdio::null());
    cmd
}

/// A running fake.py; killed when dropped.
struct Fake {
    child: Child,
    url: String,
}

impl Fake {
    fn start(dir: &Path, flavor: &str, extra: &[&str]) -> Fake {
        let name = format!("fake-{flavor}{}", extra.join("").replace(',', "-"));
        let stderr = File::create(dir.join(format!("{name}.stderr"))).expect("fake stderr file");
        let mut child = python("fake.py", dir)
            .args(["--port", "0", "--flavor", flavor])
            .args(["--api-key", API_KEY, "--instance-id", INSTANCE])
            .arg("--cert")
            .arg(dir.join("server.pem"))
            .arg("--key")
            .arg(dir.join("server-key.pem"))
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start fake.py");
        let stdout = child.stdout.take().expect("fake stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
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
                let err = std::fs::read_to_string(dir.join(format!("{name}.stderr")));
                panic!("{name} did not start within {START_TIMEOUT:?}:\n{err:?}");
            }
        };
        Fake {
            child,
            url: format!("https://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a fake of `flavor` and one with `--deny import`, runs sdk_proof.py against them
/// (bounded by PROOF_TIMEOUT) and asserts it passed, printing its output if not.
fn prove(flavor: &str) {
    let dir = tempfile::tempdir().unwrap();
    let ca = tls::ca("keyorch test CA for the IBM KMS fake");
    let (cert, key) = tls::leaf(&ca, "127.0.0.1", "keyorch-tests", true, 1);
    std::fs::write(dir.path().join("ca.pem"), &ca.pem).unwrap();
    std::fs::write(dir.path().join("server.pem"), cert).unwrap();
    std::fs::write(dir.path().join("server-key.pem"), key).unwrap();

    let fake = Fake::start(dir.path(), flavor, &[]);
    let denying = Fake::start(dir.path(), flavor, &["--deny", "import"]);

    let (out_path, err_path) = (
        dir.path().join("proof.stdout"),
        dir.path().join("proof.stderr"),
    );
    let t = Instant::now();
    let mut child = python("sdk_proof.py", dir.path())
        .args([
            "--flavor",
            flavor,
            "--url",
            &fake.url,
            "--deny-url",
            &denying.url,
        ])
        .args(["--api-key", API_KEY, "--instance-id", INSTANCE])
        .arg("--ca")
        .arg(dir.path().join("ca.pem"))
        .stdout(File::create(&out_path).unwrap())
        .stderr(File::create(&err_path).unwrap())
        .spawn()
        .expect("start sdk_proof.py");
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if t.elapsed() > PROOF_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let read =
        |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
    let (stdout, stderr) = (read(&out_path), read(&err_path));
    drop((fake, denying));
    let fakes_log = ["", "--denyimport"]
        .map(|s| read(&dir.path().join(format!("fake-{flavor}{s}.stderr"))))
        .join("");
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("PROOF OK "))
        .map(str::to_string);
    assert!(
        status.is_some_and(|s| s.success()) && summary.is_some(),
        "sdk_proof.py for {flavor} {}:\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- fakes\n{fakes_log}",
        status.map_or(format!("did not finish within {PROOF_TIMEOUT:?}"), |s| s.to_string()),
    );
    eprintln!("{} in {:?}", summary.unwrap(), t.elapsed());
}

#[test]
fn key_protect_fake_passes_the_official_sdk() {
    prove("key_protect");
}

#[test]
fn hpcs_fake_passes_the_official_sdk() {
    prove("hpcs");
}
